//! A synthetic call-record source for the sync fault tests and the benchmark
//! (`callgate-appliance sync-load`). Record `i` of appliance `a` is fully determined by
//! `(a, i)` — see [`call_record`] — so a test can check every stored record by content.
//!
//! Progress (`load_generated` in `sync_state`) is committed in the same transaction as each
//! record's outbox row, so a `kill -9` and restart neither skips nor repeats a record.

use super::outbox_store::{read_state, write_state, UplinkOutbox};
use super::SyncError;
use callgate_common::ids::{ApplianceId, CallId, CampaignId, TrunkId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, CallRecord, Direction, Uplink};
use sqlx::SqlitePool;
use std::time::Duration;

/// `sync_state` key counting records generated so far.
pub const LOAD_GENERATED: &str = "load_generated";

/// The `i`-th synthetic record of `appliance`:
/// call id `(fnv1a64(appliance), i)` as a UUID's two halves, started at
/// `1_700_000_000_000 + i * 1000` ms, ended 60 s + `i` ms later, outcome by `i % 4`
/// (answered-human, busy, no-answer, answered-machine), disposition `load-{i}`.
pub fn call_record(appliance: &ApplianceId, i: u64) -> CallRecord {
    let started = 1_700_000_000_000 + i as i64 * 1000;
    CallRecord {
        call: CallId(uuid::Uuid::from_u64_pair(fnv1a64(appliance.as_str()), i)),
        attempt: None,
        campaign: Some(CampaignId(1)),
        contact: None,
        direction: Direction::Outbound,
        trunk: Some(TrunkId::new("load").expect("valid trunk name")),
        remote: None,
        agent: None,
        started_at: UnixMillis(started),
        answered_at: None,
        ended_at: UnixMillis(started + 60_000 + i as i64),
        outcome: match i % 4 {
            0 => CallOutcome::AnsweredHuman,
            1 => CallOutcome::Busy,
            2 => CallOutcome::NoAnswer,
            _ => CallOutcome::AnsweredMachine,
        },
        sip_status: None,
        disposition: Some(format!("load-{i}")),
        recording_segments: 0,
        quality: None,
    }
}

/// FNV-1a, 64 bit: a stable hash for deriving ids from names.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Generates records `[already generated, total)` into the outbox, at most `per_second`
/// per second (0: as fast as the disk commits). Returns how many this call generated.
pub async fn generate(
    pool: &SqlitePool,
    outbox: &UplinkOutbox,
    appliance: &ApplianceId,
    total: u64,
    per_second: u32,
) -> Result<u64, SyncError> {
    let start = read_state(pool, LOAD_GENERATED).await?;
    let pause = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
    for i in start..total {
        outbox
            .send_with(
                &Uplink::CallRecord(call_record(appliance, i)),
                Box::new(move |conn| Box::pin(write_state(conn, LOAD_GENERATED, i + 1))),
            )
            .await?;
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    Ok(total.saturating_sub(start))
}
