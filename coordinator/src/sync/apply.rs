//! Idempotent apply of uplink messages: one database transaction stores a message's effect
//! and advances that appliance's high-water sequence number, so a replay (after a resend,
//! a reconnect, a restart of either side) is recognised and dropped, and a message ahead of
//! a gap waits for the sender to resend from the gap. Portable SQL (`$n`, integers, text,
//! blobs) for SQLite and PostgreSQL alike.

use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentState, CallOutcome, Uplink, UplinkEnvelope};
use sqlx::{Any, AnyPool, Transaction};

/// What applying an envelope did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored; the appliance's high-water mark is now `seq`.
    Stored { seq: u64 },
    /// Already applied before; nothing changed. `high_water` is the mark to ack.
    Replay { high_water: u64 },
    /// Ahead of a gap; nothing changed; the sender will resend from `expected`.
    Gap { expected: u64, high_water: u64 },
}

/// The appliance's high-water mark (0 when none was applied yet).
pub async fn high_water(pool: &AnyPool, appliance: &ApplianceId) -> Result<u64, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT high_water FROM sync_uplink_state WHERE appliance = $1")
            .bind(appliance.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map_or(0, |(h,)| h as u64))
}

/// Applies one sequenced envelope (seq > 0), whose appliance the caller has checked
/// against the topic. `skew_ms` is the measured clock skew, recorded with the mark.
pub async fn apply_uplink(
    pool: &AnyPool,
    env: &UplinkEnvelope,
    now: UnixMillis,
    skew_ms: i64,
) -> Result<Applied, sqlx::Error> {
    apply_batch(
        pool,
        &env.appliance,
        std::slice::from_ref(env),
        now,
        skew_ms,
    )
    .await
}

/// Applies consecutive envelopes of one appliance in ONE transaction: each in-order one's
/// effect is stored, replays are skipped, the batch stops at a gap, and the high-water mark
/// moves to the last applied — all or nothing. [`Applied::Stored`] carries the new mark.
pub async fn apply_batch(
    pool: &AnyPool,
    appliance: &ApplianceId,
    envs: &[UplinkEnvelope],
    now: UnixMillis,
    skew_ms: i64,
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (applied, _) = apply_in(&mut tx, appliance, envs, now, skew_ms).await?;
    match applied {
        Applied::Stored { .. } => tx.commit().await?,
        Applied::Replay { .. } | Applied::Gap { .. } => tx.rollback().await?,
    }
    Ok(applied)
}

/// One appliance's consecutive envelopes, with the clock skew measured on them.
#[derive(Debug, Clone)]
pub struct ApplianceBatch {
    /// The appliance (checked against the topic by the caller).
    pub appliance: ApplianceId,
    /// Its envelopes in arrival order.
    pub envs: Vec<UplinkEnvelope>,
    /// Clock skew recorded with the mark.
    pub skew_ms: i64,
}

/// What [`apply_many`] did with one appliance's batch.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The appliance.
    pub appliance: ApplianceId,
    /// What applying its batch did (an error rolled back its savepoint only).
    pub applied: Result<Applied, sqlx::Error>,
    /// Its mark before: with [`Applied::Stored`], the messages `before < seq <= stored`
    /// were applied by this call.
    pub before: u64,
}

/// Applies the batches of several appliances in ONE transaction (one commit, one fsync),
/// each appliance in its own savepoint: its effects and its high-water mark move together,
/// and an appliance whose effect fails is rolled back alone (its error is returned in its
/// slot) while the others commit. Appliances are taken in id order, so two replicas
/// applying overlapping sets lock the mark rows in the same order and cannot deadlock.
/// The outer error means the commit failed: nothing of the call was stored.
pub async fn apply_many(
    pool: &AnyPool,
    batches: &[ApplianceBatch],
    now: UnixMillis,
) -> Result<Vec<BatchOutcome>, sqlx::Error> {
    use sqlx::Acquire;
    let mut order: Vec<&ApplianceBatch> = batches.iter().collect();
    order.sort_by(|a, b| a.appliance.as_str().cmp(b.appliance.as_str()));
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(order.len());
    for b in order {
        let mut savepoint = (&mut tx).begin().await?;
        let applied = apply_in(&mut savepoint, &b.appliance, &b.envs, now, b.skew_ms).await;
        match &applied {
            Ok((Applied::Stored { .. }, _)) => savepoint.commit().await?,
            _ => savepoint.rollback().await?,
        }
        results.push(match applied {
            Ok((applied, before)) => BatchOutcome {
                appliance: b.appliance.clone(),
                applied: Ok(applied),
                before,
            },
            Err(e) => BatchOutcome {
                appliance: b.appliance.clone(),
                applied: Err(e),
                before: 0,
            },
        });
    }
    tx.commit().await?;
    Ok(results)
}

/// The body of [`apply_batch`] inside `tx`. Its first statement writes the appliance's mark
/// row (an upsert that changes nothing), so the transaction holds the write lock (SQLite)
/// or the row lock (PostgreSQL) before it reads the mark: no `SQLITE_BUSY_SNAPSHOT` when
/// another writer commits meanwhile, and a second replica applying the same appliance waits
/// for the first to commit and then reads the mark it left.
async fn apply_in(
    tx: &mut Transaction<'_, Any>,
    appliance: &ApplianceId,
    envs: &[UplinkEnvelope],
    now: UnixMillis,
    skew_ms: i64,
) -> Result<(Applied, u64), sqlx::Error> {
    let app = appliance.as_str();
    let (hw,): (i64,) = sqlx::query_as(
        "INSERT INTO sync_uplink_state \
         (appliance, high_water, applied_count, last_seen_at, clock_skew_ms) \
         VALUES ($1, 0, 0, $2, $3) \
         ON CONFLICT (appliance) DO UPDATE SET high_water = sync_uplink_state.high_water \
         RETURNING high_water",
    )
    .bind(app)
    .bind(now.0)
    .bind(skew_ms)
    .fetch_one(&mut **tx)
    .await?;
    let hw = hw as u64;
    let mut mark = hw;
    for env in envs {
        if env.seq <= mark {
            continue;
        }
        if env.seq != mark + 1 {
            break;
        }
        store_effect(tx, env, now).await?;
        mark = env.seq;
    }
    if mark == hw {
        let first = envs.iter().map(|e| e.seq).find(|s| *s > hw);
        let applied = match first {
            Some(_) => Applied::Gap {
                expected: hw + 1,
                high_water: hw,
            },
            None => Applied::Replay { high_water: hw },
        };
        return Ok((applied, hw));
    }
    sqlx::query(
        "UPDATE sync_uplink_state SET high_water = $1, applied_count = applied_count + $2, \
         last_seen_at = $3, clock_skew_ms = $4 WHERE appliance = $5",
    )
    .bind(mark as i64)
    .bind((mark - hw) as i64)
    .bind(now.0)
    .bind(skew_ms)
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok((Applied::Stored { seq: mark }, hw))
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

async fn store_effect(
    tx: &mut Transaction<'_, Any>,
    env: &UplinkEnvelope,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    let app = env.appliance.as_str();
    match &env.body {
        Uplink::CallRecord(r) => {
            sqlx::query(
                "INSERT INTO call_records (call_id, appliance, uplink_seq, campaign_id, outcome, \
                 started_at, ended_at, disposition, record) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(r.call.to_string())
            .bind(app)
            .bind(env.seq as i64)
            .bind(r.campaign.map(|c| c.0 as i64))
            .bind(outcome_name(r.outcome))
            .bind(r.started_at.0)
            .bind(r.ended_at.0)
            .bind(r.disposition.clone())
            .bind(encode(r))
            .execute(&mut **tx)
            .await?;
            if let (Some(contact), Some(_)) = (r.contact, r.answered_at) {
                // Who last spoke to the contact and what they set: routing inputs of the
                // contact's next lease.
                sqlx::query(
                    "UPDATE contacts SET last_agent_id = COALESCE($1, last_agent_id), \
                     last_disposition = COALESCE($2, last_disposition) WHERE id = $3",
                )
                .bind(r.agent.map(|a| a.0 as i64))
                .bind(r.disposition.clone())
                .bind(contact.0 as i64)
                .execute(&mut **tx)
                .await?;
            }
        }
        Uplink::AttemptResult(a) => {
            sqlx::query(
                "INSERT INTO attempt_results (attempt_id, appliance, uplink_seq, campaign_id, \
                 contact_id, lease_id, outcome, ended_at, record) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(a.attempt.to_string())
            .bind(app)
            .bind(env.seq as i64)
            .bind(a.campaign.0 as i64)
            .bind(a.contact.0 as i64)
            .bind(a.lease.0 as i64)
            .bind(outcome_name(a.outcome))
            .bind(a.ended_at.0)
            .bind(encode(a))
            .execute(&mut **tx)
            .await?;
        }
        Uplink::Telemetry(t) => {
            sqlx::query(
                "INSERT INTO appliance_telemetry \
                 (appliance, received_at, active_calls, outbox_depth, record) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (appliance) DO UPDATE SET received_at = excluded.received_at, \
                 active_calls = excluded.active_calls, outbox_depth = excluded.outbox_depth, \
                 record = excluded.record",
            )
            .bind(app)
            .bind(now.0)
            .bind(i64::from(t.active_calls))
            .bind(t.outbox_depth as i64)
            .bind(encode(t))
            .execute(&mut **tx)
            .await?;
        }
        Uplink::AgentEvent(e) => {
            let (state, reason) = agent_state(&e.state);
            sqlx::query(
                "INSERT INTO agent_events (appliance, uplink_seq, agent_id, state, reason, at, \
                 call_id, campaign_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(app)
            .bind(env.seq as i64)
            .bind(e.agent.0 as i64)
            .bind(state)
            .bind(reason)
            .bind(e.at.0)
            .bind(e.call.map(|c| c.to_string()))
            .bind(e.campaign.map(|c| c.0 as i64))
            .execute(&mut **tx)
            .await?;
        }
        Uplink::LeaseReturn {
            lease,
            contacts,
            reason,
        } => {
            let back =
                crate::leasing::push::return_from_appliance(tx, app, lease.0 as i64, contacts)
                    .await?;
            tracing::info!(appliance = app, lease = lease.0, returned = back, %reason, "appliance returned leased contacts");
        }
        Uplink::CampaignCalls(calls) => {
            // The report is the whole picture: campaigns it leaves out have no call up.
            sqlx::query("DELETE FROM appliance_campaign_calls WHERE appliance = $1")
                .bind(app)
                .execute(&mut **tx)
                .await?;
            for c in calls {
                sqlx::query(
                    "INSERT INTO appliance_campaign_calls (appliance, campaign_id, calls, received_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (appliance, campaign_id) \
                     DO UPDATE SET calls = excluded.calls, received_at = excluded.received_at",
                )
                .bind(app)
                .bind(c.campaign.0 as i64)
                .bind(i64::from(c.calls))
                .bind(now.0)
                .execute(&mut **tx)
                .await?;
            }
        }
        Uplink::CertificateRenewal { .. } => {
            // Answered by the link once this commits (a new certificate on the downlink).
        }
        other => {
            // Hello and Ack travel unsequenced; a kind this build has no table for yet still
            // advances the mark (it was received and understood) and is logged.
            tracing::info!(appliance = app, seq = env.seq, kind = ?std::mem::discriminant(other), "uplink kind with no stored effect");
        }
    }
    Ok(())
}

/// An agent state's stored name and, for a pause, its reason.
fn agent_state(s: &AgentState) -> (&'static str, Option<String>) {
    match s {
        AgentState::Ready => ("ready", None),
        AgentState::Reserved => ("reserved", None),
        AgentState::Talking => ("talking", None),
        AgentState::WrapUp => ("wrap_up", None),
        AgentState::Paused { reason } => ("paused", Some(reason.clone())),
        AgentState::LoggedOut => ("logged_out", None),
    }
}

/// postcard bytes of a body, for the `record` columns.
fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("postcard encoding to a Vec is infallible")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_common::ids::{CallId, TrunkId};
    use callgate_common::wire::{CallRecord, Direction};

    fn record(i: u64) -> Uplink {
        Uplink::CallRecord(CallRecord {
            call: CallId(uuid::Uuid::from_u64_pair(7, i)),
            attempt: None,
            campaign: None,
            contact: None,
            direction: Direction::Inbound,
            trunk: Some(TrunkId::new("t").unwrap()),
            remote: None,
            agent: None,
            started_at: UnixMillis(i as i64),
            answered_at: None,
            ended_at: UnixMillis(i as i64 + 5),
            outcome: CallOutcome::Busy,
            sip_status: Some(486),
            disposition: None,
            recording_segments: 0,
            quality: None,
        })
    }

    pub(crate) async fn replay_is_harmless_and_gaps_wait(pool: &AnyPool) {
        let app = ApplianceId::new("branch-1").unwrap();
        let env = |seq| UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(seq));
        let now = UnixMillis(1);
        assert_eq!(
            apply_uplink(pool, &env(2), now, 0).await.unwrap(),
            Applied::Gap {
                expected: 1,
                high_water: 0
            }
        );
        assert_eq!(
            apply_uplink(pool, &env(1), now, 0).await.unwrap(),
            Applied::Stored { seq: 1 }
        );
        assert_eq!(
            apply_uplink(pool, &env(1), now, 0).await.unwrap(),
            Applied::Replay { high_water: 1 }
        );
        assert_eq!(
            apply_uplink(pool, &env(2), now, 0).await.unwrap(),
            Applied::Stored { seq: 2 }
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        let (hw, count): (i64, i64) = sqlx::query_as(
            "SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = $1",
        )
        .bind("branch-1")
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!((hw, count), (2, 2));
    }

    #[tokio::test]
    async fn on_sqlite_a_replay_is_harmless_and_a_message_after_a_gap_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        replay_is_harmless_and_gaps_wait(store.pool()).await;
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_skips_replays_stops_at_a_gap_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let app = ApplianceId::new("branch-1").unwrap();
        let env = |seq| UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(seq));
        let now = UnixMillis(1);
        apply_uplink(pool, &env(1), now, 0).await.unwrap();
        let batch = vec![env(1), env(2), env(3), env(5), env(6)];
        assert_eq!(
            apply_batch(pool, &app, &batch, now, 0).await.unwrap(),
            Applied::Stored { seq: 3 }
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(rows, 3);
        // A batch whose second message cannot be stored leaves nothing of the first either.
        let poisoned = vec![
            env(4),
            UplinkEnvelope::new(app.clone(), 5, UnixMillis(0), record(1)),
        ];
        assert!(apply_batch(pool, &app, &poisoned, now, 0).await.is_err());
        assert_eq!(high_water(pool, &app).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn each_campaign_calls_report_replaces_the_boxs_previous_one_whole() {
        use callgate_common::ids::CampaignId;
        use callgate_common::wire::CampaignCalls;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let report = |app: &str, seq, calls: &[(u64, u32)]| {
            UplinkEnvelope::new(
                ApplianceId::new(app).unwrap(),
                seq,
                UnixMillis(0),
                Uplink::CampaignCalls(
                    calls
                        .iter()
                        .map(|&(c, n)| CampaignCalls {
                            campaign: CampaignId(c),
                            calls: n,
                        })
                        .collect(),
                ),
            )
        };
        let rows = || async {
            sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT appliance, campaign_id, calls FROM appliance_campaign_calls \
                 ORDER BY appliance, campaign_id",
            )
            .fetch_all(pool)
            .await
            .unwrap()
        };
        let now = UnixMillis(10);
        apply_uplink(pool, &report("branch-1", 1, &[(1, 3), (2, 1)]), now, 0)
            .await
            .unwrap();
        apply_uplink(pool, &report("branch-2", 1, &[(1, 2)]), now, 0)
            .await
            .unwrap();
        // branch-1's campaign 2 ended its call: the next report leaves it out.
        apply_uplink(pool, &report("branch-1", 2, &[(1, 4)]), now, 0)
            .await
            .unwrap();
        assert_eq!(
            rows().await,
            vec![
                ("branch-1".to_string(), 1, 4),
                ("branch-2".to_string(), 1, 2)
            ]
        );
        // A replayed older report changes nothing.
        apply_uplink(pool, &report("branch-1", 1, &[(1, 3), (2, 1)]), now, 0)
            .await
            .unwrap();
        assert_eq!(rows().await.len(), 2);
        apply_uplink(pool, &report("branch-1", 3, &[]), now, 0)
            .await
            .unwrap();
        assert_eq!(rows().await, vec![("branch-2".to_string(), 1, 2)]);
    }

    #[tokio::test]
    async fn an_effect_that_fails_leaves_the_high_water_mark_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let app = ApplianceId::new("branch-1").unwrap();
        let first = UplinkEnvelope::new(app.clone(), 1, UnixMillis(0), record(1));
        apply_uplink(pool, &first, UnixMillis(0), 0).await.unwrap();
        // Same call id under a new sequence number: the insert fails, the mark must not move.
        let clash = UplinkEnvelope::new(app.clone(), 2, UnixMillis(0), record(1));
        assert!(apply_uplink(pool, &clash, UnixMillis(0), 0).await.is_err());
        assert_eq!(high_water(pool, &app).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn several_appliances_commit_together_and_a_failing_one_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let (a, b) = (
            ApplianceId::new("branch-a").unwrap(),
            ApplianceId::new("branch-b").unwrap(),
        );
        let rec = |app: &ApplianceId, seq, call| {
            UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(call))
        };
        apply_uplink(pool, &rec(&a, 1, 1), UnixMillis(0), 0)
            .await
            .unwrap();
        let batches = vec![
            ApplianceBatch {
                appliance: b.clone(),
                envs: vec![rec(&b, 1, 10), rec(&b, 2, 11)],
                skew_ms: 0,
            },
            // Its second record reuses a call id already stored: the insert fails.
            ApplianceBatch {
                appliance: a.clone(),
                envs: vec![rec(&a, 2, 2), rec(&a, 3, 1)],
                skew_ms: 0,
            },
        ];
        let results = apply_many(pool, &batches, UnixMillis(1)).await.unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].appliance, a, "taken in id order");
        assert!(results[0].applied.is_err());
        assert_eq!(results[1].appliance, b);
        assert_eq!(
            (results[1].applied.as_ref().unwrap(), results[1].before),
            (&Applied::Stored { seq: 2 }, 0)
        );
        assert_eq!(
            high_water(pool, &a).await.unwrap(),
            1,
            "a rolled back alone"
        );
        assert_eq!(high_water(pool, &b).await.unwrap(), 2);
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            rows, 3,
            "a's first record, b's two; nothing of a's failed batch"
        );
    }

    /// Two appliers (as two replicas on a shared subscription) apply the same messages at
    /// once while a third writer commits: every message is stored once, neither meets a
    /// stale snapshot, and the mark ends where the messages end.
    #[tokio::test]
    async fn concurrent_appliers_of_one_appliance_store_each_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool().clone();
        let app = ApplianceId::new("branch-1").unwrap();
        let envs: Vec<UplinkEnvelope> = (1..=60)
            .map(|seq| UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(seq)))
            .collect();
        let applier = |pool: AnyPool, envs: Vec<UplinkEnvelope>| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut stored = 0u64;
                for pair in envs.chunks(2) {
                    loop {
                        match apply_batch(&pool, &app, pair, UnixMillis(1), 0)
                            .await
                            .unwrap()
                        {
                            Applied::Stored { seq } => {
                                stored += seq - pair[0].seq + 1;
                                break;
                            }
                            Applied::Replay { .. } => break,
                            Applied::Gap { .. } => tokio::task::yield_now().await,
                        }
                    }
                }
                stored
            })
        };
        let other = {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    sqlx::query(
                        "INSERT INTO appliance_telemetry \
                         (appliance, received_at, active_calls, outbox_depth, record) \
                         VALUES ('other', $1, 0, 0, x'00') ON CONFLICT (appliance) \
                         DO UPDATE SET received_at = excluded.received_at",
                    )
                    .bind(i as i64)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            })
        };
        let first = applier(pool.clone(), envs.clone());
        let second = applier(pool.clone(), envs);
        let total = first.await.unwrap() + second.await.unwrap();
        other.await.unwrap();
        assert!(
            total >= 60,
            "every message stored by one applier or the other"
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 60);
        let (hw, count): (i64, i64) = sqlx::query_as(
            "SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = $1",
        )
        .bind("branch-1")
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((hw, count), (60, 60));
    }
}
