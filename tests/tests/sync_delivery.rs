//! The appliance ⇄ coordinator link over mutual TLS through a real Mosquitto and through
//! the embedded broker: every call
//! record arrives exactly once, by count and content, with several appliances at once.

#[macro_use]
mod sync_common;

use std::time::Duration;
use sync_common::{BrokerKind, World};

async fn records_from_two_appliances_arrive_exactly_once_over_mutual_tls(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1", "branch-2"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let a = w.start_load("branch-1", 400, 0);
    let b = w.start_load("branch-2", 300, 0);
    w.wait_load("branch-1", a, Duration::from_secs(60)).await;
    w.wait_load("branch-2", b, Duration::from_secs(60)).await;
    w.assert_exactly_once("branch-1", 400).await;
    w.assert_exactly_once("branch-2", 300).await;
    assert!(
        w.log("branch-1").contains("coordinator acked up to 400"),
        "{}",
        w.log("branch-1")
    );
}

/// The coordinator subscribes with `$share/callgate/...` (as replicas do): the broker's
/// ACL admits it and every record still arrives exactly once.
async fn a_coordinator_on_a_shared_subscription_receives_everything_once(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1"], kind);
    // `[sync]` is the last table of the generated config.
    let path = w.path("coordinator.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str("shared_subscription = true\n");
    std::fs::write(&path, config).unwrap();
    w.start_broker();
    w.start_coordinator().await;
    let load = w.start_load("branch-1", 200, 0);
    w.wait_load("branch-1", load, Duration::from_secs(60)).await;
    w.assert_exactly_once("branch-1", 200).await;
}

/// The coordinator's own link reaches its embedded broker through the local socket in its
/// data directory (mode 0600), not over TLS to itself: with every box gone, the broker's
/// TLS listener holds no connection while the coordinator's link is up and was served.
#[tokio::test]
async fn the_coordinator_reaches_its_embedded_broker_through_its_local_socket() {
    let mut w = World::with_broker(&["branch-1"], BrokerKind::Embedded);
    w.start_coordinator().await;
    let load = w.start_load("branch-1", 50, 0);
    w.wait_load("branch-1", load, Duration::from_secs(60)).await;
    w.assert_exactly_once("branch-1", 50).await;
    let socket = w.path("coordinator/broker.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", socket.display());
    let start = std::time::Instant::now();
    while w.broker_connections() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} TCP connections left on the broker's listener",
            w.broker_connections()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("callgate_sync_broker_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("callgate_broker_connections 1"),
        "{metrics}"
    );
}

on_both_brokers!(
    records_from_two_appliances_arrive_exactly_once_over_mutual_tls,
    a_coordinator_on_a_shared_subscription_receives_everything_once
);
