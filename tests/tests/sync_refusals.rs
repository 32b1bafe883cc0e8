//! What the link refuses, with real processes and a real broker: injected duplicates are
//! ignored, an appliance cannot publish on another's topic (the broker's ACL), an envelope
//! that disagrees with its topic is ignored by the coordinator, and garbage is logged with
//! the sender and dropped — and in every case the stream goes on, exactly once.

#[macro_use]
mod sync_common;

use callgate_appliance::sync::load::call_record;
use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use callgate_common::topics;
use callgate_common::wire::{Uplink, UplinkEnvelope};
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, World};

const LIMIT: Duration = Duration::from_secs(60);

fn envelope(app: &str, seq: u64, record_of: &str, i: u64) -> Vec<u8> {
    UplinkEnvelope::new(
        ApplianceId::new(app).unwrap(),
        seq,
        UnixMillis::now(),
        Uplink::CallRecord(call_record(&ApplianceId::new(record_of).unwrap(), i)),
    )
    .encode()
}

/// Waits until the coordinator's metrics show `needle` with a value of at least `n`.
async fn wait_metric(w: &World, needle: &str, n: u64) {
    let start = Instant::now();
    loop {
        let text = w.metrics().await;
        let value = text
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if value >= n as f64 {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "metric {needle} never reached {n}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn injected_duplicates_are_ignored_and_the_stream_goes_on(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let load = w.start_load("branch-1", 50, 0);
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 50).await;
    // Replay every envelope the box sent (seq i+1 carried record i), with its own
    // certificate on its own topic.
    for i in 0..50 {
        assert!(w.publish_as(
            "branch-1",
            &topics::uplink(&ApplianceId::new("branch-1").unwrap()),
            &envelope("branch-1", i + 1, "branch-1", i)
        ));
    }
    wait_metric(&w, "callgate_sync_uplink_replays_total", 50).await;
    w.assert_exactly_once("branch-1", 50).await;
    let load = w.start_load("branch-1", 80, 0);
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 80).await;
}

async fn another_appliances_topic_is_refused_by_the_broker_and_a_topic_envelope_mismatch_is_ignored(
    kind: BrokerKind,
) {
    let mut w = World::with_broker(&["branch-1", "branch-2"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let two = ApplianceId::new("branch-2").unwrap();
    let one = ApplianceId::new("branch-1").unwrap();
    // branch-1 forges branch-2's first message on branch-2's topic: the ACL drops it.
    w.publish_as(
        "branch-1",
        &topics::uplink(&two),
        &envelope("branch-2", 1, "branch-2", 0),
    );
    // branch-1 sends branch-2's envelope on its own topic: the coordinator ignores it.
    assert!(w.publish_as(
        "branch-1",
        &topics::uplink(&one),
        &envelope("branch-2", 1, "branch-2", 0)
    ));
    wait_metric(
        &w,
        "callgate_sync_uplink_rejected_total{reason=\"envelope_topic_mismatch\"}",
        1,
    )
    .await;
    assert_eq!(
        w.stored_count("branch-2").await,
        0,
        "nothing of the forgeries was stored"
    );
    assert_eq!(w.stored_count("branch-1").await, 0);
    // Both real streams go on from sequence number 1.
    let a = w.start_load("branch-1", 30, 0);
    let b = w.start_load("branch-2", 30, 0);
    w.wait_load("branch-1", a, LIMIT).await;
    w.wait_load("branch-2", b, LIMIT).await;
    w.assert_exactly_once("branch-1", 30).await;
    w.assert_exactly_once("branch-2", 30).await;
}

async fn garbage_and_truncated_payloads_are_logged_with_the_sender_and_dropped(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let up = topics::uplink(&ApplianceId::new("branch-1").unwrap());
    assert!(w.publish_as("branch-1", &up, b"\xff\xfe not an envelope"));
    let whole = envelope("branch-1", 1, "branch-1", 0);
    assert!(w.publish_as("branch-1", &up, &whole[..whole.len() / 2]));
    wait_metric(
        &w,
        "callgate_sync_uplink_rejected_total{reason=\"undecodable\"}",
        2,
    )
    .await;
    let log = w.coordinator_log();
    let line = log
        .lines()
        .find(|l| l.contains("uplink message dropped") && l.contains("undecodable"))
        .unwrap_or_else(|| panic!("no log line for the garbage:\n{log}"));
    assert!(line.contains("branch-1"), "the sender is named: {line}");
    let load = w.start_load("branch-1", 40, 0);
    w.wait_load("branch-1", load, LIMIT).await;
    w.assert_exactly_once("branch-1", 40).await;
}

on_both_brokers!(
    injected_duplicates_are_ignored_and_the_stream_goes_on,
    another_appliances_topic_is_refused_by_the_broker_and_a_topic_envelope_mismatch_is_ignored,
    garbage_and_truncated_payloads_are_logged_with_the_sender_and_dropped
);
