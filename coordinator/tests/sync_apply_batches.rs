//! The uplink apply's multi-row batching (`sync::apply::apply_many`) on both backends: a
//! batch mixing record kinds and boxes lands once per message, duplicates inside one batch
//! are skipped, a batch larger than the bound-parameter limits is split and stored whole,
//! and a failing box is rolled back alone.

mod common;

use callgate_common::ids::{
    AgentId, ApplianceId, AttemptId, CallId, CampaignId, ContactId, LeaseId, TrunkId,
};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AgentEvent, AgentState, AttemptResult, CallOutcome, CallRecord, CampaignCalls, Direction,
    Telemetry, Uplink, UplinkEnvelope,
};
use callgate_coordinator::sync::apply::{apply_many, high_water, ApplianceBatch, Applied};
use common::{fresh_store, BACKENDS};
use sqlx::AnyPool;

fn call(box_no: u64, i: u64) -> Uplink {
    Uplink::CallRecord(CallRecord {
        call: CallId(uuid::Uuid::from_u64_pair(box_no, i)),
        attempt: None,
        campaign: Some(CampaignId(3)),
        contact: None,
        direction: Direction::Outbound,
        trunk: Some(TrunkId::new("t").unwrap()),
        remote: None,
        agent: None,
        started_at: UnixMillis(i as i64),
        answered_at: None,
        ended_at: UnixMillis(i as i64 + 5),
        outcome: CallOutcome::NoAnswer,
        sip_status: Some(480),
        disposition: Some(format!("d{i}")),
        recording_segments: 0,
        quality: None,
    })
}

fn telemetry(active_calls: u32) -> Uplink {
    Uplink::Telemetry(Telemetry {
        active_calls,
        agents_ready: 0,
        trunks: Vec::new(),
        disk_used_percent: 10,
        temperature_decicelsius: None,
        outbox_depth: u64::from(active_calls) * 10,
    })
}

fn env(app: &ApplianceId, seq: u64, body: Uplink) -> UplinkEnvelope {
    UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), body)
}

async fn count(pool: &AnyPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

async fn mark_row(pool: &AnyPool, app: &str) -> Option<(i64, i64)> {
    sqlx::query_as("SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = $1")
        .bind(app)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_of_mixed_kinds_from_several_boxes_lands_once_per_message_on_both_backends() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let pool = t.store.pool();
        let (a, b, c) = (
            ApplianceId::new("branch-a").unwrap(),
            ApplianceId::new("branch-b").unwrap(),
            ApplianceId::new("branch-c").unwrap(),
        );
        let a_envs = vec![
            env(&a, 1, call(1, 1)),
            env(
                &a,
                2,
                Uplink::AttemptResult(AttemptResult {
                    attempt: AttemptId(uuid::Uuid::from_u64_pair(1, 2)),
                    call: None,
                    campaign: CampaignId(3),
                    contact: ContactId(40),
                    lease: LeaseId(5),
                    trunk: None,
                    started_at: UnixMillis(1),
                    ended_at: UnixMillis(2),
                    outcome: CallOutcome::Busy,
                    sip_status: Some(486),
                    post_dial_delay_ms: None,
                }),
            ),
            // The same message twice in one batch (a resend that met the original).
            env(&a, 2, call(1, 999)),
            env(&a, 3, telemetry(1)),
            env(
                &a,
                4,
                Uplink::AgentEvent(AgentEvent {
                    agent: AgentId(7),
                    state: AgentState::Paused {
                        reason: "lunch".into(),
                    },
                    at: UnixMillis(4),
                    call: None,
                    campaign: None,
                }),
            ),
            env(&a, 5, telemetry(2)),
            env(
                &a,
                6,
                Uplink::CampaignCalls(vec![CampaignCalls {
                    campaign: CampaignId(3),
                    calls: 2,
                }]),
            ),
            env(&a, 7, call(1, 7)),
        ];
        let batches = vec![
            ApplianceBatch {
                appliance: c.clone(),
                // Ahead of a gap: the box must resend from 1.
                envs: vec![env(&c, 2, call(3, 2))],
                skew_ms: 0,
            },
            ApplianceBatch {
                appliance: b.clone(),
                envs: (1..=3).map(|i| env(&b, i, call(2, i))).collect(),
                skew_ms: 5,
            },
            ApplianceBatch {
                appliance: a.clone(),
                envs: a_envs.clone(),
                skew_ms: 0,
            },
        ];
        let results = apply_many(pool, &batches, UnixMillis(100)).await.unwrap();
        let got: Vec<(String, Applied, u64)> = results
            .into_iter()
            .map(|o| (o.appliance.to_string(), o.applied.unwrap(), o.before))
            .collect();
        assert_eq!(
            got,
            vec![
                ("branch-a".to_string(), Applied::Stored { seq: 7 }, 0),
                ("branch-b".to_string(), Applied::Stored { seq: 3 }, 0),
                (
                    "branch-c".to_string(),
                    Applied::Gap {
                        expected: 1,
                        high_water: 0
                    },
                    0
                ),
            ],
            "{backend:?}"
        );
        let calls: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT appliance, uplink_seq, disposition FROM call_records \
             ORDER BY appliance, uplink_seq",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let want: Vec<(String, i64, String)> = [("branch-a", 1), ("branch-a", 7)]
            .into_iter()
            .chain((1..=3).map(|i| ("branch-b", i)))
            .map(|(app, seq)| (app.to_string(), seq, format!("d{seq}")))
            .collect();
        assert_eq!(
            calls, want,
            "{backend:?}: the duplicate seq 2 stored nothing"
        );
        let attempts: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT appliance, uplink_seq, contact_id FROM attempt_results")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(
            attempts,
            vec![("branch-a".to_string(), 2, 40)],
            "{backend:?}"
        );
        let events: Vec<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT agent_id, state, reason FROM agent_events")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(
            events,
            vec![(7, "paused".to_string(), Some("lunch".to_string()))],
            "{backend:?}"
        );
        let tele: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT appliance, active_calls, outbox_depth FROM appliance_telemetry")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(
            tele,
            vec![("branch-a".to_string(), 2, 20)],
            "{backend:?}: the later telemetry of the batch wins"
        );
        assert_eq!(
            count(pool, "SELECT COUNT(*) FROM appliance_campaign_calls").await,
            1,
            "{backend:?}"
        );
        assert_eq!(
            mark_row(pool, "branch-a").await,
            Some((7, 7)),
            "{backend:?}"
        );
        assert_eq!(
            mark_row(pool, "branch-b").await,
            Some((3, 3)),
            "{backend:?}"
        );
        assert_eq!(
            mark_row(pool, "branch-c").await,
            None,
            "{backend:?}: a box that stored nothing leaves no mark row"
        );

        // The same batches again: replays everywhere, nothing changes.
        let again = apply_many(pool, &batches, UnixMillis(200)).await.unwrap();
        let verdicts: Vec<Applied> = again.into_iter().map(|o| o.applied.unwrap()).collect();
        assert_eq!(
            verdicts,
            vec![
                Applied::Replay { high_water: 7 },
                Applied::Replay { high_water: 3 },
                Applied::Gap {
                    expected: 1,
                    high_water: 0
                },
            ],
            "{backend:?}"
        );
        assert_eq!(
            count(pool, "SELECT COUNT(*) FROM call_records").await,
            5,
            "{backend:?}"
        );
        assert_eq!(
            mark_row(pool, "branch-a").await,
            Some((7, 7)),
            "{backend:?}"
        );
    }
}

/// 7,300 call records of nine columns each bind 65,700 parameters: past SQLite's 32,766
/// and PostgreSQL's 65,535 per statement.
#[tokio::test]
async fn a_batch_past_the_bound_parameter_limits_is_split_and_stored_whole_on_both_backends() {
    const N: u64 = 7_300;
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let pool = t.store.pool();
        let app = ApplianceId::new("branch-1").unwrap();
        let batches = vec![ApplianceBatch {
            appliance: app.clone(),
            envs: (1..=N).map(|i| env(&app, i, call(1, i))).collect(),
            skew_ms: 0,
        }];
        let results = apply_many(pool, &batches, UnixMillis(1)).await.unwrap();
        assert_eq!(
            results[0].applied.as_ref().unwrap(),
            &Applied::Stored { seq: N },
            "{backend:?}"
        );
        assert_eq!(
            count(pool, "SELECT COUNT(*) FROM call_records").await,
            N as i64,
            "{backend:?}"
        );
        assert_eq!(
            count(pool, "SELECT COUNT(DISTINCT uplink_seq) FROM call_records").await,
            N as i64,
            "{backend:?}"
        );
        assert_eq!(high_water(pool, &app).await.unwrap(), N, "{backend:?}");
    }
}

#[tokio::test]
async fn a_box_whose_batch_fails_is_rolled_back_alone_on_both_backends() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let pool = t.store.pool();
        let (a, b) = (
            ApplianceId::new("branch-a").unwrap(),
            ApplianceId::new("branch-b").unwrap(),
        );
        let first = vec![ApplianceBatch {
            appliance: a.clone(),
            envs: vec![env(&a, 1, call(1, 1))],
            skew_ms: 0,
        }];
        apply_many(pool, &first, UnixMillis(0)).await.unwrap();
        let batches = vec![
            ApplianceBatch {
                appliance: a.clone(),
                // Its third message reuses a call id already stored: the insert fails.
                envs: vec![
                    env(&a, 2, call(1, 2)),
                    env(&a, 3, telemetry(4)),
                    env(&a, 4, call(1, 1)),
                ],
                skew_ms: 0,
            },
            ApplianceBatch {
                appliance: b.clone(),
                envs: vec![env(&b, 1, call(2, 1)), env(&b, 2, telemetry(9))],
                skew_ms: 0,
            },
        ];
        let results = apply_many(pool, &batches, UnixMillis(1)).await.unwrap();
        assert!(results[0].applied.is_err(), "{backend:?}");
        assert_eq!(
            results[1].applied.as_ref().unwrap(),
            &Applied::Stored { seq: 2 },
            "{backend:?}"
        );
        assert_eq!(high_water(pool, &a).await.unwrap(), 1, "{backend:?}");
        assert_eq!(high_water(pool, &b).await.unwrap(), 2, "{backend:?}");
        assert_eq!(
            count(pool, "SELECT COUNT(*) FROM call_records").await,
            2,
            "{backend:?}: a's first record and b's; nothing of a's failed batch"
        );
        let tele: Vec<(String,)> = sqlx::query_as("SELECT appliance FROM appliance_telemetry")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(tele, vec![("branch-b".to_string(),)], "{backend:?}");
    }
}
