//! Enrollment end to end with the real programs: HQ registers an appliance and gets a
//! one-time claim code; `callgate-appliance enroll` generates the key on the box and sends
//! a CSR over HTTPS; wrong, used and expired codes and re-enrolling each get their own
//! error; the enrolled box then syncs through Mosquitto with the certificate it got; a
//! revoked appliance is refused by the coordinator and left out of the broker ACL.

#[macro_use]
mod sync_common;

use callgate_system_tests::binary;
use std::process::{Command, Stdio};
use std::time::Duration;
use sync_common::{BrokerKind, Load, World};

fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary(bin))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn bare_appliance_config(w: &World, name: &str) -> String {
    // No id, no broker: enrollment supplies both.
    let path = w.path(&format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("[appliance]\ndata_dir = \"{}\"\n", w.path(name).display()),
    )
    .unwrap();
    path.display().to_string()
}

async fn a_box_enrolls_with_a_claim_code_over_https_then_syncs_and_revocation_shuts_it_out(
    kind: BrokerKind,
) {
    let mut w = World::with_broker(&[], kind);
    w.start_coordinator().await;
    let coord = w.coord_config();
    let (ok, code) = run(
        "callgate-coordinator",
        &[
            "-c",
            &coord,
            "appliance",
            "register",
            "branch-7",
            "--site",
            "leeds",
        ],
    );
    assert!(ok, "{code}");
    let code = code.trim().to_string();
    let url = format!("https://{}", w.enroll_addr);
    let ca = w.path("coordinator/pki/ca.pem").display().to_string();
    let box_a = bare_appliance_config(&w, "box-a");
    let enroll = |cfg: &str, claim: &str| {
        run(
            "callgate-appliance",
            &[
                "-c",
                cfg,
                "enroll",
                "--coordinator",
                &url,
                "--claim",
                claim,
                "--ca",
                &ca,
            ],
        )
    };

    let (ok, out) = enroll(&box_a, "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
    assert!(!ok && out.contains("claim code is wrong"), "{out}");
    let (ok, out) = enroll(&box_a, &code);
    assert!(ok && out.contains("enrolled as branch-7"), "{out}");
    let key = std::fs::read_to_string(w.path("box-a/identity/key.pem")).unwrap();
    assert!(
        key.contains("PRIVATE KEY"),
        "the key was made and kept on the box"
    );
    let (ok, out) = enroll(&box_a, &code);
    assert!(!ok && out.contains("already enrolled"), "{out}");
    let box_b = bare_appliance_config(&w, "box-b");
    let (ok, out) = enroll(&box_b, &code);
    assert!(!ok && out.contains("already used"), "{out}");

    // An expired code: register another appliance and age its code past 24 h.
    let (ok, code8) = run(
        "callgate-coordinator",
        &["-c", &coord, "appliance", "register", "branch-8"],
    );
    assert!(ok, "{code8}");
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        w.path("coordinator/coordinator.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE claim_codes SET expires_at = 0 WHERE appliance = 'branch-8'")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let (ok, out) = enroll(&box_b, code8.trim());
    assert!(!ok && out.contains("expired"), "{out}");

    // The enrolled box syncs with its certificate, through a broker whose ACL lists it.
    w.write_broker_config();
    let acl = std::fs::read_to_string(w.path("broker/acl")).unwrap();
    assert!(acl.contains("user branch-7\n"), "{acl}");
    assert!(
        !acl.contains("user branch-8\n"),
        "not enrolled, not in the ACL"
    );
    w.start_broker();
    let load = Command::new(binary("callgate-appliance"))
        .args(["-c", &box_a, "sync-load", "--records", "25"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    w.assert_exactly_once("branch-7", 25).await;

    // Revoked: the coordinator refuses its messages; the next ACL leaves it out.
    let (ok, out) = run(
        "callgate-coordinator",
        &["-c", &coord, "appliance", "revoke", "branch-7"],
    );
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(6)).await; // the link re-reads states every 5 s
    let mut more = Load(
        Command::new(binary("callgate-appliance"))
            .args(["-c", &box_a, "sync-load", "--records", "40"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    match kind {
        // Mosquitto still lets the old certificate in (until the ACL is regenerated and
        // reloaded): the coordinator is the one refusing, and says so.
        BrokerKind::Mosquitto => {
            let start = std::time::Instant::now();
            loop {
                let metrics = w.metrics().await;
                if metrics.contains("callgate_sync_uplink_rejected_total{reason=\"revoked\"}") {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "{metrics}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // The embedded broker reloads its ACL from the database and refuses the connection
        // itself (CONNACK "not authorized").
        BrokerKind::Embedded => {
            let start = std::time::Instant::now();
            loop {
                let metrics = w.metrics().await;
                let refused = metrics
                    .lines()
                    .find(|l| l.starts_with("callgate_broker_refused_connections "))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                if refused >= 1.0 {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "{metrics}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = more.kill();
    let _ = more.wait();
    assert_eq!(
        w.stored_count("branch-7").await,
        25,
        "nothing applied after revocation"
    );
    w.write_broker_config();
    let acl = std::fs::read_to_string(w.path("broker/acl")).unwrap();
    assert!(!acl.contains("branch-7"), "{acl}");
}

on_both_brokers!(a_box_enrolls_with_a_claim_code_over_https_then_syncs_and_revocation_shuts_it_out);
