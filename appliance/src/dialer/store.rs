//! The dialer's holdings in the box's SQLite (`dialer_*` tables, migration 0005): what the
//! coordinator gave this box to dial, and where each leased contact stands.
//!
//! Downlink messages are applied by [`apply_downlink`] inside the sync link's transaction
//! that records the downlink sequence number, so a replay changes nothing. Dial-state changes
//! are committed with the uplink message that reports them (through the outbox's
//! `send_with`), so the table and the outbox never disagree:
//! - [`mark_dialling`] before the INVITE leaves (a contact leaves `pending` once, ever);
//! - [`record_call`] then [`record_attempt`] before the call's resources are released; for a
//!   call whose agent is still wrapping up, [`record_attempt_in_wrap_up`] (the record kept in
//!   `dialer_wrap_ups`) at the hang-up, then [`record_wrapped_up`] with the disposition;
//! - [`hand_back`] for refused and returned contacts (`Uplink::LeaseReturn`).
//!
//! Must not: decide anything (the executor does), or touch other rooms' tables.

use super::executor::{DialState, HeldContact, HeldLease, Holdings};
use super::DialerError;
use crate::sync::outbox_store::UplinkOutbox;
use callgate_common::compliance::DncEntry;
use callgate_common::ids::{AttemptId, CampaignId, ContactId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AttemptResult, CallOutcome, CallRecord, CampaignBrief, Downlink, LeasedContact, PacingGrant,
    Uplink,
};
use sqlx::{SqliteConnection, SqlitePool};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Bumped after a transaction applied dialer holdings; every running dialer watches it and
/// re-reads the store (a watch never loses a change, and wakes every subscriber).
static HOLDINGS_CHANGED: OnceLock<watch::Sender<u64>> = OnceLock::new();

fn holdings_changed() -> &'static watch::Sender<u64> {
    HOLDINGS_CHANGED.get_or_init(|| watch::channel(0).0)
}

/// Tells the dialer that holdings changed (call after the applying transaction committed).
pub fn notify_changed() {
    holdings_changed().send_modify(|generation| *generation += 1);
}

/// A receiver that sees every later [`notify_changed`].
pub fn watch_changes() -> watch::Receiver<u64> {
    holdings_changed().subscribe()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("wire types serialize to JSON")
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, DialerError> {
    serde_json::from_str(text).map_err(|e| DialerError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

fn outcome_name(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::AnsweredHuman => "answered_human",
        CallOutcome::AnsweredMachine => "answered_machine",
        CallOutcome::Busy => "busy",
        CallOutcome::NoAnswer => "no_answer",
        CallOutcome::Rejected => "rejected",
        CallOutcome::Failed => "failed",
        CallOutcome::Abandoned => "abandoned",
    }
}

/// Applies one downlink message's effect on the dialer's holdings inside `conn`'s
/// transaction. Returns whether the message was a dialer kind. Idempotent: a replay of an
/// applied message changes nothing; an older campaign brief never replaces a newer one.
pub async fn apply_downlink(
    conn: &mut SqliteConnection,
    body: &Downlink,
) -> Result<bool, sqlx::Error> {
    match body {
        Downlink::Campaign(brief) => {
            sqlx::query(
                "INSERT INTO dialer_campaigns (campaign, version, brief) VALUES ($1, $2, $3) \
                 ON CONFLICT (campaign) DO UPDATE SET version = excluded.version, \
                 brief = excluded.brief WHERE excluded.version > dialer_campaigns.version",
            )
            .bind(brief.campaign.0 as i64)
            .bind(brief.version as i64)
            .bind(json(brief))
            .execute(&mut *conn)
            .await?;
        }
        Downlink::ContactLease(lease) => {
            let inserted = sqlx::query(
                "INSERT OR IGNORE INTO dialer_leases (lease, campaign, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(lease.lease.0 as i64)
            .bind(lease.campaign.0 as i64)
            .bind(lease.issued_at.0)
            .bind(lease.expires_at.0)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                for (i, c) in lease.contacts.iter().enumerate() {
                    sqlx::query(
                        "INSERT OR IGNORE INTO dialer_contacts \
                         (lease, contact, position, campaign, number, body) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(lease.lease.0 as i64)
                    .bind(c.contact.0 as i64)
                    .bind(i as i64)
                    .bind(lease.campaign.0 as i64)
                    .bind(c.number.e164())
                    .bind(json(c))
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Downlink::LeaseRevoked { lease, reason } => {
            sqlx::query(
                "UPDATE dialer_leases SET revoked = $2 WHERE lease = $1 AND revoked IS NULL",
            )
            .bind(lease.0 as i64)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
        }
        Downlink::PacingGrant(g) => {
            sqlx::query(
                "INSERT INTO dialer_grants \
                 (campaign, max_concurrent, max_attempts_per_minute, abandon_budget, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (campaign) DO UPDATE SET \
                 max_concurrent = excluded.max_concurrent, \
                 max_attempts_per_minute = excluded.max_attempts_per_minute, \
                 abandon_budget = excluded.abandon_budget, expires_at = excluded.expires_at",
            )
            .bind(g.campaign.0 as i64)
            .bind(i64::from(g.max_concurrent))
            .bind(i64::from(g.max_attempts_per_minute))
            .bind(g.abandon_budget as i64)
            .bind(g.expires_at.0)
            .execute(&mut *conn)
            .await?;
        }
        Downlink::DncDelta(delta) => {
            for number in &delta.cleared {
                sqlx::query("DELETE FROM dialer_dnc WHERE number = $1")
                    .bind(number.e164())
                    .execute(&mut *conn)
                    .await?;
            }
            for (number, entry) in &delta.added {
                sqlx::query("INSERT OR IGNORE INTO dialer_dnc (number, entry) VALUES ($1, $2)")
                    .bind(number.e164())
                    .bind(json(entry))
                    .execute(&mut *conn)
                    .await?;
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Applies `body` in its own transaction (tests, and tools that feed holdings without the
/// coordinator), then wakes the dialer.
pub async fn apply_now(pool: &SqlitePool, body: &Downlink) -> Result<bool, sqlx::Error> {
    let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
    let applied = apply_downlink(&mut tx, body).await?;
    tx.commit().await?;
    if applied {
        notify_changed();
    }
    Ok(applied)
}

type ContactRow = (i64, String, String, Option<i64>);
/// lease, contact, campaign, attempt, started_at, kept result.
type InterruptedRow = (i64, i64, i64, Option<String>, Option<i64>, Option<String>);

/// Reads everything the box holds. Live answers are read back `abandon_window_ms`.
pub async fn load(
    pool: &SqlitePool,
    now: UnixMillis,
    abandon_window_ms: i64,
) -> Result<Holdings, DialerError> {
    let mut h = Holdings::default();
    let briefs: Vec<(String,)> = sqlx::query_as("SELECT brief FROM dialer_campaigns")
        .fetch_all(pool)
        .await?;
    for (b,) in briefs {
        h.campaigns
            .push(from_json::<CampaignBrief>("campaign brief", &b)?);
    }
    let grants: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT campaign, max_concurrent, max_attempts_per_minute, abandon_budget, expires_at \
         FROM dialer_grants",
    )
    .fetch_all(pool)
    .await?;
    for (c, mc, pm, ab, exp) in grants {
        h.grants.push(PacingGrant {
            campaign: CampaignId(c as u64),
            max_concurrent: mc as u32,
            max_attempts_per_minute: pm as u32,
            abandon_budget: ab as u64,
            expires_at: UnixMillis(exp),
        });
    }
    let leases: Vec<(i64, i64, i64, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT lease, campaign, issued_at, expires_at, revoked, closed FROM dialer_leases \
         ORDER BY lease",
    )
    .fetch_all(pool)
    .await?;
    for (lease, campaign, issued, expires, revoked, closed) in leases {
        let rows: Vec<ContactRow> = sqlx::query_as(
            "SELECT contact, body, state, started_at FROM dialer_contacts WHERE lease = $1 \
             ORDER BY position",
        )
        .bind(lease)
        .fetch_all(pool)
        .await?;
        let mut contacts = Vec::with_capacity(rows.len());
        for (_, body, state, started) in rows {
            contacts.push(HeldContact {
                contact: from_json::<LeasedContact>("leased contact", &body)?,
                state: DialState::parse(&state).ok_or_else(|| DialerError::Corrupt {
                    what: "dial state",
                    reason: state.clone(),
                })?,
                started_at: started.map(UnixMillis),
            });
        }
        h.leases.push(HeldLease {
            lease: LeaseId(lease as u64),
            campaign: CampaignId(campaign as u64),
            issued_at: UnixMillis(issued),
            expires_at: UnixMillis(expires),
            revoked,
            closed: closed != 0,
            contacts,
        });
    }
    let dnc: Vec<(String, String)> = sqlx::query_as("SELECT number, entry FROM dialer_dnc")
        .fetch_all(pool)
        .await?;
    for (number, entry) in dnc {
        h.dnc
            .push((number, from_json::<DncEntry>("do-not-call entry", &entry)?));
    }
    let live: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT campaign, at, abandoned FROM dialer_live_answers WHERE at > $1 ORDER BY at",
    )
    .bind(now.0.saturating_sub(abandon_window_ms))
    .fetch_all(pool)
    .await?;
    h.live_answers = live
        .into_iter()
        .map(|(c, at, a)| (CampaignId(c as u64), UnixMillis(at), a != 0))
        .collect();
    Ok(h)
}

/// Commits that `contact` is being dialled by `attempt`, before the INVITE leaves. Refused
/// with [`DialerError::NotPending`] when the contact is not pending any more: it is then
/// never dialled.
pub async fn mark_dialling(
    pool: &SqlitePool,
    lease: LeaseId,
    contact: ContactId,
    attempt: AttemptId,
    at: UnixMillis,
) -> Result<(), DialerError> {
    let changed = sqlx::query(
        "UPDATE dialer_contacts SET state = 'dialling', attempt = $3, started_at = $4 \
         WHERE lease = $1 AND contact = $2 AND state = 'pending'",
    )
    .bind(lease.0 as i64)
    .bind(contact.0 as i64)
    .bind(attempt.to_string())
    .bind(at.0)
    .execute(pool)
    .await?
    .rows_affected();
    if changed != 1 {
        return Err(DialerError::NotPending {
            lease: lease.0,
            contact: contact.0,
        });
    }
    Ok(())
}

/// Undoes [`mark_dialling`] for an attempt that never left the box (no trunk had room):
/// the contact is pending again. Only that attempt's mark is undone.
pub async fn release_dialling(
    pool: &SqlitePool,
    lease: LeaseId,
    contact: ContactId,
    attempt: AttemptId,
) -> Result<(), DialerError> {
    let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
    let changed = sqlx::query(
        "UPDATE dialer_contacts SET state = 'pending', attempt = NULL, started_at = NULL \
         WHERE lease = $1 AND contact = $2 AND state = 'dialling' AND attempt = $3",
    )
    .bind(lease.0 as i64)
    .bind(contact.0 as i64)
    .bind(attempt.to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if changed != 1 {
        return Err(DialerError::NotDialling {
            lease: lease.0,
            contact: contact.0,
        });
    }
    Ok(())
}

/// Puts the call record in the outbox, keeping the attempt result beside the contact in
/// the same transaction so that a restart before [`record_attempt`] reports it.
pub async fn record_call(
    outbox: &UplinkOutbox,
    record: &CallRecord,
    result: &AttemptResult,
) -> Result<(), DialerError> {
    let (lease, contact, text) = (result.lease.0 as i64, result.contact.0 as i64, json(result));
    outbox
        .send_with(
            &Uplink::CallRecord(record.clone()),
            Box::new(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE dialer_contacts SET result = $3 WHERE lease = $1 AND contact = $2",
                    )
                    .bind(lease)
                    .bind(contact)
                    .bind(text)
                    .execute(conn)
                    .await
                    .map(|_| ())
                })
            }),
        )
        .await?;
    Ok(())
}

/// Puts the attempt result in the outbox and marks the contact done in the same
/// transaction (with the live answer for the abandon tally, when a person answered).
pub async fn record_attempt(
    outbox: &UplinkOutbox,
    result: &AttemptResult,
) -> Result<(), DialerError> {
    record_attempt_keeping(outbox, result, None).await
}

/// A call record kept while its agent wraps up: the record as at the hang-up and when the
/// wrap-up ends (`None`: not known).
#[derive(Debug, Clone, PartialEq)]
pub struct KeptRecord {
    /// The record as at the hang-up.
    pub record: CallRecord,
    /// When the agent's wrap-up ends.
    pub wrap_up_until: Option<UnixMillis>,
}

/// [`record_attempt`] for a call whose agent is still wrapping up: the call record (as at
/// the hang-up) is kept in `dialer_wrap_ups` in the same transaction, so it is durable
/// before the call is released; [`record_wrapped_up`] sends it later.
pub async fn record_attempt_in_wrap_up(
    outbox: &UplinkOutbox,
    result: &AttemptResult,
    kept: &KeptRecord,
) -> Result<(), DialerError> {
    record_attempt_keeping(outbox, result, Some(kept)).await
}

async fn record_attempt_keeping(
    outbox: &UplinkOutbox,
    result: &AttemptResult,
    kept: Option<&KeptRecord>,
) -> Result<(), DialerError> {
    let kept = kept.map(|k| {
        (
            k.record.call.to_string(),
            json(&k.record),
            k.wrap_up_until.map(|u| u.0),
        )
    });
    let (lease, contact) = (result.lease.0 as i64, result.contact.0 as i64);
    let outcome = outcome_name(result.outcome);
    let live = match result.outcome {
        CallOutcome::AnsweredHuman => Some(0i64),
        CallOutcome::Abandoned => Some(1),
        _ => None,
    };
    let (campaign, ended) = (result.campaign.0 as i64, result.ended_at.0);
    outbox
        .send_with(
            &Uplink::AttemptResult(result.clone()),
            Box::new(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE dialer_contacts SET state = 'done', outcome = $3, result = NULL \
                         WHERE lease = $1 AND contact = $2",
                    )
                    .bind(lease)
                    .bind(contact)
                    .bind(outcome)
                    .execute(&mut *conn)
                    .await?;
                    if let Some(abandoned) = live {
                        sqlx::query(
                            "INSERT INTO dialer_live_answers (campaign, at, abandoned) \
                             VALUES ($1, $2, $3)",
                        )
                        .bind(campaign)
                        .bind(ended)
                        .bind(abandoned)
                        .execute(&mut *conn)
                        .await?;
                    }
                    if let Some((call, record, until)) = kept {
                        sqlx::query(
                            "INSERT OR REPLACE INTO dialer_wrap_ups (call_id, record, wrap_up_until_ms) \
                             VALUES ($1, $2, $3)",
                        )
                        .bind(call)
                        .bind(record)
                        .bind(until)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            }),
        )
        .await?;
    Ok(())
}

/// Keeps the record of a call without an attempt (an inbound call) in `dialer_wrap_ups`
/// while its agent wraps up: durable before the call is released; [`record_wrapped_up`]
/// sends it later (or the next start, [`settle_wrap_ups`]).
pub async fn keep_for_wrap_up(pool: &SqlitePool, kept: &KeptRecord) -> Result<(), DialerError> {
    let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
    sqlx::query(
        "INSERT OR REPLACE INTO dialer_wrap_ups (call_id, record, wrap_up_until_ms) \
         VALUES ($1, $2, $3)",
    )
    .bind(kept.record.call.to_string())
    .bind(json(&kept.record))
    .bind(kept.wrap_up_until.map(|u| u.0))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Sends a call record kept by [`record_attempt_in_wrap_up`] (with the disposition the
/// wrap-up ended with) and deletes it from `dialer_wrap_ups`, in one transaction. Returns
/// `false`, sending nothing, when the record is no longer kept (already sent): a record is
/// never sent twice.
pub async fn record_wrapped_up(
    outbox: &UplinkOutbox,
    record: &CallRecord,
) -> Result<bool, DialerError> {
    let call = record.call.to_string();
    let sent = outbox
        .send_with(
            &Uplink::CallRecord(record.clone()),
            Box::new(move |conn| {
                Box::pin(async move {
                    let gone = sqlx::query("DELETE FROM dialer_wrap_ups WHERE call_id = $1")
                        .bind(call)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if gone == 0 {
                        // Rolls the transaction back: the record was sent already.
                        return Err(sqlx::Error::RowNotFound);
                    }
                    Ok(())
                })
            }),
        )
        .await;
    match sent {
        Ok(_) => Ok(true),
        Err(crate::sync::SyncError::Store(sqlx::Error::RowNotFound)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The call records kept for a wrap-up, with when each wrap-up ends.
pub async fn kept_records(pool: &SqlitePool) -> Result<Vec<KeptRecord>, DialerError> {
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT record, wrap_up_until_ms FROM dialer_wrap_ups ORDER BY call_id")
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(text, until)| {
            Ok(KeptRecord {
                record: from_json::<CallRecord>("kept call record", &text)?,
                wrap_up_until: until.map(UnixMillis),
            })
        })
        .collect()
}

/// The code the agent desk saved for `call` (`agent_disposition`), if any.
pub async fn saved_disposition(
    pool: &SqlitePool,
    call: callgate_common::ids::CallId,
) -> Result<Option<String>, DialerError> {
    let saved: Option<(String,)> =
        sqlx::query_as("SELECT code FROM agent_disposition WHERE call_id = $1")
            .bind(call.to_string())
            .fetch_optional(pool)
            .await?;
    Ok(saved.map(|(code,)| code))
}

/// Completes the call records a previous run left waiting for a wrap-up (records
/// `waited_here` says this process waits for are left alone): each is sent with the code
/// the desk saved for it, or without one when its wrap-up has ended by `now` (its end plus
/// [`super::wrap_up::WRAP_UP_GRACE`]; an unknown end counts as ended). Returns how many were
/// sent and the records whose wrap-up still runs (the caller waits for them:
/// [`complete_wrap_up`]).
pub async fn settle_wrap_ups(
    pool: &SqlitePool,
    outbox: &UplinkOutbox,
    now: UnixMillis,
    waited_here: impl Fn(callgate_common::ids::CallId) -> bool,
) -> Result<(usize, Vec<KeptRecord>), DialerError> {
    let mut sent = 0;
    let mut running = Vec::new();
    for mut kept in kept_records(pool).await? {
        if waited_here(kept.record.call) {
            continue;
        }
        match saved_disposition(pool, kept.record.call).await? {
            Some(code) => kept.record.disposition = Some(code),
            None if wrap_up_runs(&kept, now) => {
                running.push(kept);
                continue;
            }
            None => {}
        }
        tracing::warn!(call = %kept.record.call, disposition = ?kept.record.disposition, "sending a call record a previous run left waiting for the agent's wrap-up");
        if record_wrapped_up(outbox, &kept.record).await? {
            sent += 1;
        }
    }
    Ok((sent, running))
}

fn wrap_up_runs(kept: &KeptRecord, now: UnixMillis) -> bool {
    let grace = super::wrap_up::WRAP_UP_GRACE.as_millis() as i64;
    kept.wrap_up_until
        .is_some_and(|until| now < until.plus_millis(grace))
}

/// How often [`complete_wrap_up`] looks for the agent's code.
const SAVED_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Waits for a record [`settle_wrap_ups`] found still in its wrap-up: sends it with the code
/// the agent saves (the desk writes `agent_disposition`), or without one once the wrap-up
/// has ended (plus the grace). Never sends it twice ([`record_wrapped_up`]).
pub async fn complete_wrap_up(
    pool: &SqlitePool,
    outbox: &crate::agents::service::SharedOutbox,
    mut kept: KeptRecord,
) -> Result<bool, DialerError> {
    loop {
        if let Some(code) = saved_disposition(pool, kept.record.call).await? {
            kept.record.disposition = Some(code);
            break;
        }
        if !wrap_up_runs(&kept, UnixMillis::now()) {
            break;
        }
        tokio::time::sleep(SAVED_POLL).await;
    }
    tracing::info!(call = %kept.record.call, disposition = ?kept.record.disposition, "a wrap-up left by the last stop is over; the call record goes out");
    let current = outbox.read().await.clone();
    record_wrapped_up(&current, &kept.record).await
}

/// Hands contacts back (`Uplink::LeaseReturn`) and records why, in one transaction:
/// `state` is [`DialState::Refused`] (the gate refused them) or [`DialState::Returned`]
/// (lease expired or revoked, campaign stopped); `close` also marks the lease closed.
/// Contacts no longer pending keep their state.
pub async fn hand_back(
    pool: &SqlitePool,
    outbox: &UplinkOutbox,
    lease: LeaseId,
    contacts: Vec<ContactId>,
    reason: &str,
    state: DialState,
    close: bool,
) -> Result<(), DialerError> {
    let ids: Vec<i64> = contacts.iter().map(|c| c.0 as i64).collect();
    let (l, reason_text, state_name) = (lease.0 as i64, reason.to_owned(), state.as_str());
    let also: crate::sync::outbox_store::AlsoInTx<'_> = Box::new(move |conn| {
        Box::pin(async move {
            for id in ids {
                sqlx::query(
                    "UPDATE dialer_contacts SET state = $3, reason = $4 \
                     WHERE lease = $1 AND contact = $2 AND state IN ('pending', 'dialling')",
                )
                .bind(l)
                .bind(id)
                .bind(state_name)
                .bind(&reason_text)
                .execute(&mut *conn)
                .await?;
            }
            if close {
                sqlx::query("UPDATE dialer_leases SET closed = 1 WHERE lease = $1")
                    .bind(l)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    });
    if contacts.is_empty() {
        // Nothing to hand back; only the lease's closing is recorded.
        let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
        also(&mut tx).await?;
        tx.commit().await?;
        return Ok(());
    }
    outbox
        .send_with(
            &Uplink::LeaseReturn {
                lease,
                contacts,
                reason: reason.to_owned(),
            },
            also,
        )
        .await?;
    Ok(())
}

/// Settles attempts a previous run left `dialling` (the process stopped mid-call): each
/// gets its attempt result — the one kept by [`record_call`] if the call record made it,
/// else `Failed` — and is marked done. Never dials anything. Returns how many.
pub async fn settle_interrupted(
    pool: &SqlitePool,
    outbox: &Arc<UplinkOutbox>,
    now: UnixMillis,
) -> Result<usize, DialerError> {
    let rows: Vec<InterruptedRow> = sqlx::query_as(
        "SELECT lease, contact, campaign, attempt, started_at, result FROM dialer_contacts \
             WHERE state = 'dialling'",
    )
    .fetch_all(pool)
    .await?;
    let n = rows.len();
    for (lease, contact, campaign, attempt, started, kept) in rows {
        let result = match kept {
            Some(text) => from_json::<AttemptResult>("kept attempt result", &text)?,
            None => AttemptResult {
                attempt: attempt
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(AttemptId::new_v7),
                call: None,
                campaign: CampaignId(campaign as u64),
                contact: ContactId(contact as u64),
                lease: LeaseId(lease as u64),
                trunk: None,
                started_at: started.map_or(now, UnixMillis),
                ended_at: now,
                outcome: CallOutcome::Failed,
                sip_status: None,
                post_dial_delay_ms: None,
            },
        };
        tracing::warn!(
            lease,
            contact,
            outcome = ?result.outcome,
            "settling an attempt interrupted by a restart; the contact is not dialled again"
        );
        record_attempt(outbox, &result).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_common::compliance::{CallingWindow, ComplianceProfile, DncScope};
    use callgate_common::phone::PhoneNumber;
    use callgate_common::wire::{ContactLease, DialMode, DncDelta};

    fn brief(version: u64, name: &str) -> CampaignBrief {
        CampaignBrief {
            campaign: CampaignId(3),
            version,
            name: name.into(),
            dial_mode: DialMode::Agentless,
            running: true,
            profile: ComplianceProfile::uk(),
            window: CallingWindow::us_default(),
            caller_id: "+442079460000".into(),
            script: String::new(),
            disposition_codes: vec![],
            wrap_up_seconds: 5,
            recording_consent_announcement: false,
            robot_script: None,
        }
    }

    fn lease() -> ContactLease {
        let contact = |i: u64| LeasedContact {
            contact: ContactId(i),
            number: PhoneNumber::parse(&format!("+4420794600{i:02}"), None).unwrap(),
            time_zones: vec!["Europe/London".into()],
            attempts: 0,
            recent_attempts: vec![],
            dnc: vec![],
            fields: vec![("name".into(), format!("n{i}"))],
            tags: vec![],
            last_outcome: None,
            last_agent: None,
        };
        ContactLease {
            lease: LeaseId(9),
            campaign: CampaignId(3),
            issued_at: UnixMillis(1_000),
            expires_at: UnixMillis(100_000),
            contacts: (0..3).map(contact).collect(),
        }
    }

    #[tokio::test]
    async fn replayed_downlinks_are_harmless_and_the_newest_brief_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pool = store.pool();
        let number = PhoneNumber::parse("+442079460001", None).unwrap();
        let dnc = DncEntry {
            scope: DncScope::Global,
            expires_at: None,
        };
        let messages = vec![
            Downlink::Campaign(brief(2, "new")),
            Downlink::Campaign(brief(1, "old")),
            Downlink::ContactLease(lease()),
            Downlink::PacingGrant(PacingGrant {
                campaign: CampaignId(3),
                max_concurrent: 4,
                max_attempts_per_minute: 60,
                abandon_budget: 2,
                expires_at: UnixMillis(50_000),
            }),
            Downlink::DncDelta(DncDelta {
                added: vec![(number.clone(), dnc)],
                cleared: vec![],
            }),
            Downlink::LeaseRevoked {
                lease: LeaseId(9),
                reason: "paused".into(),
            },
        ];
        for m in &messages {
            assert!(apply_now(pool, m).await.unwrap());
        }
        let once = load(pool, UnixMillis(2_000), 86_400_000).await.unwrap();
        // A dial state moves on, then every message is replayed.
        mark_dialling(
            pool,
            LeaseId(9),
            ContactId(0),
            AttemptId::new_v7(),
            UnixMillis(2_000),
        )
        .await
        .unwrap();
        for m in &messages {
            apply_now(pool, m).await.unwrap();
        }
        let twice = load(pool, UnixMillis(2_000), 86_400_000).await.unwrap();
        assert_eq!(twice.campaigns, vec![brief(2, "new")]);
        assert_eq!(twice.grants, once.grants);
        assert_eq!(twice.dnc, vec![(number.e164(), dnc)]);
        assert_eq!(twice.leases.len(), 1);
        let l = &twice.leases[0];
        assert_eq!(l.revoked.as_deref(), Some("paused"));
        assert_eq!(l.contacts.len(), 3);
        assert_eq!(
            l.contacts[0].state,
            DialState::Dialling,
            "not reset by the replay"
        );
        assert_eq!(l.contacts[0].started_at, Some(UnixMillis(2_000)));
        assert_eq!(l.contacts[1].contact, lease().contacts[1]);
        assert!(!apply_now(pool, &Downlink::Ack { up_to: 1 }).await.unwrap());
    }

    #[tokio::test]
    async fn a_contact_is_marked_dialling_once_and_results_and_returns_reach_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pool = store.pool();
        let outbox = Arc::new(
            UplinkOutbox::open(
                pool.clone(),
                callgate_common::outbox::OutboxConfig::default(),
            )
            .await
            .unwrap(),
        );
        apply_now(pool, &Downlink::ContactLease(lease()))
            .await
            .unwrap();
        let attempt = AttemptId::new_v7();
        mark_dialling(pool, LeaseId(9), ContactId(0), attempt, UnixMillis(5))
            .await
            .unwrap();
        assert!(matches!(
            mark_dialling(
                pool,
                LeaseId(9),
                ContactId(0),
                AttemptId::new_v7(),
                UnixMillis(6)
            )
            .await,
            Err(DialerError::NotPending { .. })
        ));
        // Contact 1 was being dialled when the process died: settled as failed, not redialled.
        mark_dialling(
            pool,
            LeaseId(9),
            ContactId(1),
            AttemptId::new_v7(),
            UnixMillis(7),
        )
        .await
        .unwrap();
        let result = AttemptResult {
            attempt,
            call: None,
            campaign: CampaignId(3),
            contact: ContactId(0),
            lease: LeaseId(9),
            trunk: None,
            started_at: UnixMillis(5),
            ended_at: UnixMillis(9),
            outcome: CallOutcome::AnsweredHuman,
            sip_status: None,
            post_dial_delay_ms: Some(100),
        };
        record_attempt(&outbox, &result).await.unwrap();
        assert_eq!(
            settle_interrupted(pool, &outbox, UnixMillis(10))
                .await
                .unwrap(),
            1
        );
        hand_back(
            pool,
            &outbox,
            LeaseId(9),
            vec![ContactId(2)],
            "lease expired",
            DialState::Returned,
            true,
        )
        .await
        .unwrap();
        let h = load(pool, UnixMillis(10), 86_400_000).await.unwrap();
        let states: Vec<DialState> = h.leases[0].contacts.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            vec![DialState::Done, DialState::Done, DialState::Returned]
        );
        assert!(h.leases[0].closed);
        assert_eq!(h.live_answers, vec![(CampaignId(3), UnixMillis(9), false)]);
        outbox.connected(std::time::Instant::now()).await;
        let sent: Vec<Uplink> = outbox
            .next_transmits(10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], Uplink::AttemptResult(result));
        assert!(matches!(&sent[1], Uplink::AttemptResult(r)
            if r.contact == ContactId(1) && r.outcome == CallOutcome::Failed));
        assert_eq!(
            sent[2],
            Uplink::LeaseReturn {
                lease: LeaseId(9),
                contacts: vec![ContactId(2)],
                reason: "lease expired".into()
            }
        );
    }

    async fn outbox_on(pool: &SqlitePool) -> Arc<UplinkOutbox> {
        Arc::new(
            UplinkOutbox::open(
                pool.clone(),
                callgate_common::outbox::OutboxConfig::default(),
            )
            .await
            .unwrap(),
        )
    }

    async fn sent(outbox: &UplinkOutbox) -> Vec<Uplink> {
        outbox.connected(std::time::Instant::now()).await;
        outbox
            .next_transmits(20)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    fn talked(contact: u64) -> (AttemptResult, CallRecord) {
        let call = callgate_common::ids::CallId::new_v7();
        let result = AttemptResult {
            attempt: AttemptId::new_v7(),
            call: Some(call),
            campaign: CampaignId(3),
            contact: ContactId(contact),
            lease: LeaseId(9),
            trunk: None,
            started_at: UnixMillis(5),
            ended_at: UnixMillis(9),
            outcome: CallOutcome::AnsweredHuman,
            sip_status: None,
            post_dial_delay_ms: None,
        };
        let record = CallRecord {
            call,
            attempt: Some(result.attempt),
            campaign: Some(CampaignId(3)),
            contact: Some(ContactId(contact)),
            direction: callgate_common::wire::Direction::Outbound,
            trunk: None,
            remote: None,
            agent: Some(callgate_common::ids::AgentId(4)),
            started_at: UnixMillis(5),
            answered_at: Some(UnixMillis(6)),
            ended_at: UnixMillis(9),
            outcome: CallOutcome::AnsweredHuman,
            sip_status: None,
            disposition: None,
            recording_segments: 0,
            quality: None,
        };
        (result, record)
    }

    #[tokio::test]
    async fn a_call_in_wrap_up_has_its_result_at_once_and_its_record_once_with_the_late_disposition(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pool = store.pool();
        let outbox = outbox_on(pool).await;
        apply_now(pool, &Downlink::ContactLease(lease()))
            .await
            .unwrap();
        let (result, record) = talked(0);
        mark_dialling(
            pool,
            LeaseId(9),
            ContactId(0),
            result.attempt,
            UnixMillis(5),
        )
        .await
        .unwrap();
        let kept = KeptRecord {
            record: record.clone(),
            wrap_up_until: Some(UnixMillis(60_000)),
        };
        record_attempt_in_wrap_up(&outbox, &result, &kept)
            .await
            .unwrap();
        // The attempt is settled (the contact done) with its record kept, not yet sent.
        let h = load(pool, UnixMillis(10), 86_400_000).await.unwrap();
        assert_eq!(h.leases[0].contacts[0].state, DialState::Done);
        let kept: (i64,) = sqlx::query_as("SELECT count(*) FROM dialer_wrap_ups")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(kept.0, 1);
        let mut later = record.clone();
        later.disposition = Some("sale".into());
        assert!(record_wrapped_up(&outbox, &later).await.unwrap());
        // Sent once: a second try (or a settle) sends nothing.
        assert!(!record_wrapped_up(&outbox, &later).await.unwrap());
        assert_eq!(
            settle_wrap_ups(pool, &outbox, UnixMillis(100_000), |_| false)
                .await
                .unwrap(),
            (0, vec![])
        );
        assert_eq!(
            sent(&outbox).await,
            vec![Uplink::AttemptResult(result), Uplink::CallRecord(later)]
        );
    }

    #[tokio::test]
    async fn a_restart_completes_the_records_left_in_wrap_up_with_the_code_saved_or_when_the_wrap_up_ended(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pool = store.pool();
        let outbox = outbox_on(pool).await;
        apply_now(pool, &Downlink::ContactLease(lease()))
            .await
            .unwrap();
        let now = UnixMillis::now();
        let (saved_result, saved) = talked(0);
        let (ended_result, ended) = talked(1);
        let (running_result, running) = talked(2);
        let (live_result, live) = talked(3);
        let (unknown_result, unknown) = talked(4);
        for (i, (r, rec, until)) in [
            (&saved_result, &saved, Some(now.plus_millis(60_000))),
            (&ended_result, &ended, Some(now.plus_millis(-5_000))),
            (&running_result, &running, Some(now.plus_millis(60_000))),
            (&live_result, &live, Some(now.plus_millis(60_000))),
            (&unknown_result, &unknown, None),
        ]
        .into_iter()
        .enumerate()
        {
            if i < 3 {
                // (The lease holds three contacts; the others' records stand alone.)
                mark_dialling(
                    pool,
                    LeaseId(9),
                    ContactId(i as u64),
                    r.attempt,
                    UnixMillis(5),
                )
                .await
                .unwrap();
            }
            let kept = KeptRecord {
                record: rec.clone(),
                wrap_up_until: until,
            };
            record_attempt_in_wrap_up(&outbox, r, &kept).await.unwrap();
        }
        let save = |call: callgate_common::ids::CallId, code: &'static str| {
            sqlx::query(
                "INSERT INTO agent_disposition (call_id, agent_id, campaign_id, code, saved_at_ms) \
                 VALUES ($1, 4, 3, $2, 20)",
            )
            .bind(call.to_string())
            .bind(code)
            .execute(pool)
        };
        // The agent saved a code for the first call before the process stopped.
        save(saved.call, "callback").await.unwrap();
        let live_call = live.call;
        let (sent_now, still) = settle_wrap_ups(pool, &outbox, now, |c| c == live_call)
            .await
            .unwrap();
        assert_eq!(sent_now, 3, "saved, ended and of unknown end");
        assert_eq!(
            still,
            vec![KeptRecord {
                record: running.clone(),
                wrap_up_until: Some(now.plus_millis(60_000)),
            }],
            "the wrap-up still running waits; the live one is left alone"
        );
        // The agent (back in its wrap-up after the restart) saves the code 0.3 s later.
        let completing = {
            let (pool, outbox) = (
                pool.clone(),
                Arc::new(tokio::sync::RwLock::new(outbox.clone())),
            );
            let kept = still[0].clone();
            tokio::spawn(async move { complete_wrap_up(&pool, &outbox, kept).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        save(running.call, "sale").await.unwrap();
        assert!(completing.await.unwrap().unwrap(), "sent");
        // Never twice: a second settle sends nothing but leaves the live one alone.
        assert_eq!(
            settle_wrap_ups(pool, &outbox, now, |c| c == live_call)
                .await
                .unwrap(),
            (0, vec![])
        );
        let records: Vec<CallRecord> = sent(&outbox)
            .await
            .into_iter()
            .filter_map(|u| match u {
                Uplink::CallRecord(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(records.len(), 4, "{records:?}");
        let of = |call| records.iter().find(|r| r.call == call).unwrap();
        assert_eq!(of(saved.call).disposition.as_deref(), Some("callback"));
        assert_eq!(of(ended.call).disposition, None);
        assert_eq!(of(ended.call).agent, Some(callgate_common::ids::AgentId(4)));
        assert_eq!(of(unknown.call).disposition, None);
        assert_eq!(of(running.call).disposition.as_deref(), Some("sale"));
        assert!(
            records.iter().all(|r| r.call != live_call),
            "the live wrap-up is left alone"
        );
        // The one still waited for is sent when its wrap-up ends.
        assert!(record_wrapped_up(&outbox, &live).await.unwrap());
    }
}
