//! Fault tests with real processes and a real broker: each produces a known set of call
//! records, breaks something mid-stream, and checks after recovery that every record
//! arrived exactly once, by count and by content.

#[macro_use]
mod sync_common;

use std::time::Duration;
use sync_common::{BrokerKind, World};

const LIMIT: Duration = Duration::from_secs(120);

async fn appliance_outbox_rows(w: &World, name: &str) -> (i64, i64) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(w.path(&format!("{name}/appliance.db")))
        .read_only(true);
    let db = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let row: (i64, i64) = sqlx::query_as("SELECT COUNT(*), COUNT(seq) FROM sync_outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    row
}

async fn an_appliance_killed_with_unacked_records_resends_them_exactly_once(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let mut load = w.start_load("branch-1", 1500, 0);
    w.wait_stored("branch-1", 200, LIMIT).await;
    load.kill().unwrap(); // SIGKILL
    load.wait().unwrap();
    let (rows, sequenced) = appliance_outbox_rows(&w, "branch-1").await;
    assert!(
        sequenced > 0 && rows >= sequenced,
        "the kill left sent-but-unacked records in the outbox ({rows} rows, {sequenced} sent)"
    );
    let stored_at_kill = w.stored_count("branch-1").await;
    assert!(stored_at_kill < 1500, "killed mid-stream");
    eprintln!("killed with {rows} rows in the outbox, {sequenced} sent but unacked");
    let load = w.start_load("branch-1", 1500, 0);
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 1500).await;
}

/// Mosquitto only: the embedded broker restarts with the coordinator (case above).
#[tokio::test]
async fn a_broker_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    let mut w = World::new(&["branch-1"]);
    w.start_broker();
    w.start_coordinator().await;
    let load = w.start_load("branch-1", 1200, 300);
    w.wait_stored("branch-1", 200, LIMIT).await;
    w.kill_broker();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.start_broker();
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 1200).await;
}

async fn a_coordinator_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    kind: BrokerKind,
) {
    // With the embedded broker this kills the broker too.
    let mut w = World::with_broker(&["branch-1"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let load = w.start_load("branch-1", 1200, 300);
    w.wait_stored("branch-1", 200, LIMIT).await;
    w.kill_coordinator();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.start_coordinator().await;
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 1200).await;
}

/// Mosquitto only (the embedded broker cannot be down while the coordinator is up).
#[tokio::test]
async fn with_the_broker_down_for_60_s_the_appliance_keeps_producing_and_catches_up() {
    let mut w = World::new(&["branch-1"]);
    w.start_broker();
    w.start_coordinator().await;
    let load = w.start_load("branch-1", 3600, 50);
    w.wait_stored("branch-1", 100, LIMIT).await;
    w.kill_broker();
    let (before, _) = appliance_outbox_rows(&w, "branch-1").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (after, _) = appliance_outbox_rows(&w, "branch-1").await;
    assert!(
        after >= before + 1500,
        "the appliance kept storing records while the broker was down ({before} → {after})"
    );
    w.start_broker();
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 3600).await;
}

on_both_brokers!(
    an_appliance_killed_with_unacked_records_resends_them_exactly_once,
    a_coordinator_killed_and_restarted_mid_stream_loses_and_duplicates_nothing
);
