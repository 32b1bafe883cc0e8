//! Certificate renewal over the link: a box whose certificate is inside its renewal window
//! makes a new key pair, sends a CSR on its uplink, gets the new certificate on its
//! (durable, sequenced) downlink, swaps key and certificate, reconnects with them — and the
//! stream goes on exactly once.

#[macro_use]
mod sync_common;

use callgate_system_tests::{binary, free_loopback_addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, Load, World};

/// Telemetry is off: the test counts every sequenced message the box sends. The local web
/// UI is off: its default address is fixed, and both brokers' cases run at once.
fn write_config(w: &World, renew_before_days: u32, ops: std::net::SocketAddr) {
    std::fs::write(
        w.appliance_config("branch-1"),
        format!(
            "[appliance]\nid = \"branch-1\"\ndata_dir = \"{}\"\n[ops]\nlisten = \"{ops}\"\n\
             [web]\nenabled = false\n\
             [sync]\nbroker = \"{}\"\nrenew_before_days = {renew_before_days}\n\
             telemetry_secs = 0\n",
            w.path("branch-1").display(),
            w.broker_addr
        ),
    )
    .unwrap();
}

async fn a_certificate_inside_its_renewal_window_is_renewed_over_the_link(kind: BrokerKind) {
    let mut w = World::with_broker(&["branch-1"], kind);
    w.start_broker();
    w.start_coordinator().await;
    let cert_path = w.path("branch-1/identity/cert.pem");
    let key_path = w.path("branch-1/identity/key.pem");
    let old_cert = std::fs::read_to_string(&cert_path).unwrap();
    let old_key = std::fs::read_to_string(&key_path).unwrap();

    // 90-day certificates, renewal window 365 days: due at once.
    write_config(&w, 365, free_loopback_addr());
    let mut daemon = Load(
        Command::new(binary("callgate-appliance"))
            .arg("-c")
            .arg(w.appliance_config("branch-1"))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::fs::read_to_string(&cert_path).unwrap() == old_cert {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no renewed certificate arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let new_key = std::fs::read_to_string(&key_path).unwrap();
    assert_ne!(new_key, old_key, "a new key pair was made on the box");
    assert!(!w.path("branch-1/identity/key.next.pem").exists());

    let db = w.db().await;
    let (serial,): (String,) =
        sqlx::query_as("SELECT cert_serial FROM appliances WHERE name = 'branch-1'")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    assert!(!serial.is_empty());

    // The box syncs with its new identity.
    write_config(&w, 30, free_loopback_addr());
    let load = w.start_load("branch-1", 30, 0);
    w.wait_load("branch-1", load, Duration::from_secs(60)).await;
    // 30 records and the one renewal request, each applied once.
    w.assert_exactly_once_with("branch-1", 30, 1).await;
}

on_both_brokers!(a_certificate_inside_its_renewal_window_is_renewed_over_the_link);
