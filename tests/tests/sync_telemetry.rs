//! Telemetry produced by the appliance daemon (`callgate-appliance run`) reaches the
//! coordinator's `appliance_telemetry` table: a report at start, then the heartbeat, each
//! sequenced message applied once.

#[macro_use]
mod sync_common;

use callgate_common::wire::Telemetry;
use callgate_system_tests::{binary, free_loopback_addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, Load, World};

/// `(received_at, record)` of `name`'s telemetry row, when there is one.
async fn telemetry_row(w: &World, name: &str) -> Option<(i64, Telemetry)> {
    let db = w.db().await;
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT received_at, record FROM appliance_telemetry WHERE appliance = $1")
            .bind(name)
            .fetch_optional(&db)
            .await
            .unwrap();
    db.close().await;
    row.map(|(at, bytes)| {
        (
            at,
            postcard::from_bytes(&bytes).expect("a stored Telemetry"),
        )
    })
}

async fn telemetry_from_the_daemon_reaches_the_coordinators_table(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1"], kind);
    w.start_broker();
    w.start_coordinator().await;
    std::fs::write(
        w.appliance_config("branch-1"),
        format!(
            "[appliance]\nid = \"branch-1\"\ndata_dir = \"{}\"\n[ops]\nlisten = \"{}\"\n\
             [web]\nenabled = false\n[sync]\nbroker = \"{}\"\ntelemetry_secs = 1\n",
            w.path("branch-1").display(),
            free_loopback_addr(),
            w.broker_addr
        ),
    )
    .unwrap();
    let log = std::fs::File::create(w.path("branch-1.log")).unwrap();
    let _daemon = Load(
        Command::new(binary("callgate-appliance"))
            .arg("-c")
            .arg(w.appliance_config("branch-1"))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let (first_at, first) = loop {
        if let Some(row) = telemetry_row(&w, "branch-1").await {
            break row;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no telemetry arrived\n--- appliance log:\n{}\n--- coordinator log:\n{}",
            w.log("branch-1"),
            w.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // No `[sip]`: no dialer, no calls; the data partition is real, so its use is > 0.
    assert_eq!(first.active_calls, 0);
    assert!(
        (1..=100).contains(&first.disk_used_percent),
        "disk use {}",
        first.disk_used_percent
    );
    // The heartbeat (1 s here) replaces the row with a newer report.
    let start = Instant::now();
    loop {
        let (at, _) = telemetry_row(&w, "branch-1").await.unwrap();
        if at > first_at {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no second report replaced the first"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = w.db().await;
    let (hw, applied): (i64, i64) = sqlx::query_as(
        "SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = 'branch-1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    assert!(
        hw >= 2,
        "at least two reports sequenced and applied, got {hw}"
    );
    assert_eq!(hw, applied, "every telemetry message applied once");
}

on_both_brokers!(telemetry_from_the_daemon_reaches_the_coordinators_table);
