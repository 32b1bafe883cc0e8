//! Two coordinator replicas at once on one PostgreSQL, through a real Mosquitto. Each
//! replica applies the uplink of the appliances in the hash buckets it holds
//! (`coordinator/src/sync/ownership.rs`); when one is killed, the survivor takes its buckets
//! once their leases run out and its boxes' streams go on. Every record must be applied
//! exactly once (by count, by content, one application per sequence number), and both
//! replicas must have applied part of it.

mod sync_common;

use callgate_system_tests::{binary, free_loopback_addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sync_common::{Load, Postgres, World};

/// A metric's value on the coordinator serving `http` (0 when absent or unreachable).
async fn metric(http: std::net::SocketAddr, name: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{http}/metrics")).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const APPLIED: &str = "callgate_sync_uplink_applied_total";
const OWNED: &str = "callgate_sync_owned_buckets";

async fn wait_healthy(http: std::net::SocketAddr, log: &std::path::Path) {
    let start = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://{http}/healthz")).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "replica b not healthy:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether replica "a" (the first of the two sorted ids) is preferred for `name`'s bucket:
/// FNV-1a of the id, mod 32 buckets, even buckets to the first replica.
fn first_replicas(name: &str) -> bool {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % 32) % 2 == 0
}

/// Polls `cond` (up to a minute) and panics with `what` and both logs if it never holds.
async fn wait_until<F: std::future::Future<Output = bool>>(
    w: &World,
    log_b: &std::path::Path,
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{what}\n--- replica a:\n{}\n--- replica b:\n{}",
            w.coordinator_log(),
            std::fs::read_to_string(log_b).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_replicas_split_the_appliances_and_the_survivor_takes_over_a_killed_ones() {
    let pg = Postgres::start();
    // Two boxes for each replica.
    let (mut mine_a, mut mine_b) = (Vec::new(), Vec::new());
    for i in 1.. {
        let name = format!("branch-{i}");
        match first_replicas(&name) {
            true if mine_a.len() < 2 => mine_a.push(name),
            false if mine_b.len() < 2 => mine_b.push(name),
            _ => {}
        }
        if mine_a.len() == 2 && mine_b.len() == 2 {
            break;
        }
    }
    let names: Vec<&str> = mine_a.iter().chain(&mine_b).map(String::as_str).collect();
    let mut w = World::with_database(&names, Some(&pg.url));
    // `[sync]` is the last table of the generated config: replica a.
    let path = w.path("coordinator.toml");
    let base = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{base}replica = \"a\"\nownership_ttl_secs = 3\n"),
    )
    .unwrap();
    // Replica b: the same data directory (organisation CA, its broker identity) and
    // database, its own HTTP listener, no enrollment listener.
    let http_b = free_loopback_addr();
    let config_b = base
        .replace(&w.http_addr.to_string(), &http_b.to_string())
        .lines()
        .filter(|l| !l.starts_with("enroll_listen"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "replica = \"b\"\nownership_ttl_secs = 3\n";
    std::fs::write(w.path("coordinator-b.toml"), config_b).unwrap();

    w.start_broker();
    w.start_coordinator().await;
    let log_b = w.path("coordinator-b.log");
    let log = std::fs::File::create(&log_b).unwrap();
    let mut replica_b = Load(
        Command::new(binary("callgate-coordinator"))
            .arg("-c")
            .arg(w.path("coordinator-b.toml"))
            .arg("all-in-one")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_healthy(http_b, &log_b).await;
    let http_a = w.http_addr;
    wait_until(&w, &log_b, "the replicas never split the buckets 16/16", || async move {
        metric(http_a, OWNED).await == 16.0 && metric(http_b, OWNED).await == 16.0
    })
    .await;

    let per_box = 400u64;
    let loads: Vec<(&str, Load)> = names
        .iter()
        .map(|name| (*name, w.start_load(name, per_box, 40)))
        .collect();
    // Both replicas apply their own boxes' records...
    wait_until(&w, &log_b, "both replicas applied records", || async move {
        metric(http_a, APPLIED).await >= 20.0 && metric(http_b, APPLIED).await >= 20.0
    })
    .await;
    // ...then b dies with its boxes' streams half way.
    replica_b.0.kill().unwrap();
    replica_b.0.wait().unwrap();
    for name in &mine_b {
        let stored = w.stored_count(name).await as u64;
        assert!(
            stored < per_box,
            "{name} finished before b was killed ({stored})"
        );
    }
    for (name, load) in loads {
        w.wait_load(name, load, Duration::from_secs(240)).await;
    }
    for name in &names {
        w.assert_exactly_once(name, per_box).await;
    }
    let own_total = per_box * mine_a.len() as u64;
    let a = metric(http_a, APPLIED).await as u64;
    assert!(
        a > own_total && a <= per_box * names.len() as u64,
        "a applied its own boxes' {own_total} records and the rest of b's ({a})"
    );
    assert_eq!(metric(http_a, OWNED).await, 32.0, "a holds every bucket");
}
