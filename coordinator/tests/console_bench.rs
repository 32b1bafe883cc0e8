//! Benchmark (ignored by default): how long the console's live snapshot and 30-day
//! analytics take over N stored attempt results (and as many call records), on SQLite and
//! PostgreSQL. Prints a table.
//!
//!     cargo test -p callgate-coordinator --test console_bench -- --ignored --nocapture
//!
//! `CONSOLE_BENCH_ROWS=10000,100000` chooses the sizes.

mod console_support;

use callgate_common::ids::{
    AgentId, ApplianceId, AttemptId, CallId, CampaignId, ContactId, LeaseId, TrunkId,
};
use callgate_common::store::Backend;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AttemptResult, CallOutcome, CallRecord, Direction, Uplink, UplinkEnvelope,
};
use callgate_coordinator::console::{analytics, live};
use callgate_coordinator::store::Store;
use callgate_coordinator::sync::apply::apply_batch;
use std::time::Instant;

async fn fill(store: &Store, rows: u64) {
    let now = UnixMillis::now().0;
    let outcomes = [
        CallOutcome::AnsweredHuman,
        CallOutcome::NoAnswer,
        CallOutcome::Busy,
        CallOutcome::AnsweredMachine,
        CallOutcome::Abandoned,
    ];
    let mut seq = 0u64;
    for app_no in 0..10u64 {
        let app = ApplianceId::new(format!("branch-{app_no}")).unwrap();
        let mut batch = Vec::new();
        for i in 0..rows / 10 {
            let at = now - ((i * 7919) % (30 * 86_400_000 / 1000)) as i64 * 1000;
            let outcome = outcomes[(i % 5) as usize];
            let call = CallId::new_v7();
            let attempt = AttemptId::new_v7();
            seq += 1;
            batch.push(UplinkEnvelope::new(
                app.clone(),
                seq,
                UnixMillis(at),
                Uplink::AttemptResult(AttemptResult {
                    attempt,
                    call: Some(call),
                    campaign: CampaignId(1 + i % 4),
                    contact: ContactId(i),
                    lease: LeaseId(1),
                    trunk: Some(TrunkId::new(format!("carrier-{}", i % 3)).unwrap()),
                    started_at: UnixMillis(at - 30_000),
                    ended_at: UnixMillis(at),
                    outcome,
                    sip_status: None,
                    post_dial_delay_ms: Some(1500 + (i % 1000) as u32),
                }),
            ));
            seq += 1;
            batch.push(UplinkEnvelope::new(
                app.clone(),
                seq,
                UnixMillis(at),
                Uplink::CallRecord(CallRecord {
                    call,
                    attempt: Some(attempt),
                    campaign: Some(CampaignId(1 + i % 4)),
                    contact: Some(ContactId(i)),
                    direction: Direction::Outbound,
                    trunk: None,
                    remote: None,
                    agent: Some(AgentId(i % 50)),
                    started_at: UnixMillis(at - 30_000),
                    answered_at: Some(UnixMillis(at - 20_000)),
                    ended_at: UnixMillis(at),
                    outcome,
                    sip_status: None,
                    disposition: None,
                    recording_segments: 0,
                    quality: None,
                }),
            ));
            if batch.len() >= 1000 {
                apply_batch(store.pool(), &app, &batch, UnixMillis(now), 0)
                    .await
                    .unwrap();
                batch.clear();
            }
        }
        if !batch.is_empty() {
            apply_batch(store.pool(), &app, &batch, UnixMillis(now), 0)
                .await
                .unwrap();
        }
        seq = 0;
    }
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn console_figures_benchmark() {
    let sizes: Vec<u64> = std::env::var("CONSOLE_BENCH_ROWS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    println!(
        "| backend | attempt results | call records | live snapshot ms | 30-day analytics ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for &rows in &sizes {
            let hq = console_support::Hq::start_on(backend).await;
            fill(&hq.store, rows).await;
            let now = UnixMillis::now();
            let _ = live::snapshot(&hq.store, now).await.unwrap();
            let t = Instant::now();
            let s = live::snapshot(&hq.store, now).await.unwrap();
            let snap = t.elapsed();
            assert_eq!(s.appliances.len(), 10);
            let t = Instant::now();
            let (days, _) = analytics::figures(&hq.store, now, 30, None).await.unwrap();
            let ana = t.elapsed();
            assert!(days.iter().map(|d| d.attempts).sum::<u64>() > 0);
            println!(
                "| {backend:?} | {rows} | {rows} | {:.1} | {:.1} |",
                snap.as_secs_f64() * 1000.0,
                ana.as_secs_f64() * 1000.0
            );
        }
    }
}
