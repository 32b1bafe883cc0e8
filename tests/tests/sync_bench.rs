//! The sync benchmark — a command, not a timed test (it asserts nothing about speed):
//!
//! ```text
//! cargo build --workspace --bins --release
//! cargo test --release -p callgate-system-tests --test sync_bench -- --ignored --nocapture
//! ```
//!
//! `SYNC_BENCH_RECORDS` (default 200) call records per appliance.
//! `SYNC_BENCH_APPLIANCES` (default 50) simulated appliances run in `SYNC_BENCH_PROCESSES`
//! (default 4) `callgate-appliance sync-bench` processes, each box with its own certificate,
//! SQLite store and outbox,
//! against one coordinator through a real Mosquitto with mutual TLS. It prints one table:
//! end-to-end exactly-once records/s into SQLite (while the boxes generate them, each a
//! durable commit on this machine's one disk, and with the outboxes filled first so only
//! the link is timed) and into PostgreSQL (prefilled), p50/p99 publish-to-
//! commit latency at 1,000 records/s, the appliances held connected, and the broker's raw
//! QoS 1 rate with `mosquitto_pub`/`mosquitto_sub` on the same machine and listener.

mod sync_common;

use callgate_common::bench::{render_table, BenchFigure, Goal, FIGURES_ENV};
use callgate_system_tests::binary;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, Postgres, World};

fn appliances() -> usize {
    std::env::var("SYNC_BENCH_APPLIANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-{i}")).collect()
}

/// How many `sync-bench` processes share the simulated appliances
/// (`SYNC_BENCH_PROCESSES`, default 4): one process is one tokio runtime, and with every box
/// in one, the simulator rather than the coordinator was the bottleneck.
fn processes() -> usize {
    std::env::var("SYNC_BENCH_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4usize)
        .max(1)
}

/// Writes one quiet config per appliance into `{root}/bench/p{k}/`, the appliances dealt
/// round robin over the processes; returns the per-process directories.
fn bench_dirs(w: &World, names: &[String]) -> Vec<std::path::PathBuf> {
    let dirs: Vec<_> = (0..processes().min(names.len()))
        .map(|k| w.path(&format!("bench/p{k}")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let dir = &dirs[i % dirs.len()];
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "[appliance]\nid = \"{name}\"\ndata_dir = \"{}\"\n[log]\nlevel = \"warn\"\n\
                 [sync]\nbroker = \"{}\"\n",
                w.path(name).display(),
                w.broker_addr
            ),
        )
        .unwrap();
    }
    dirs
}

/// Runs one `sync-bench` per directory at once; returns (records, seconds until the last
/// finished). With `prefill`, every process first fills its boxes' outboxes with the link
/// stopped; the clock starts when all have, and they are told to go together.
fn run_bench(dirs: &[std::path::PathBuf], records: u64, rate: u32, prefill: bool) -> (u64, f64) {
    use std::io::BufRead;
    let mut start = Instant::now();
    let mut children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            Command::new(binary("callgate-appliance"))
                .args(["sync-bench", "--dir"])
                .arg(dir)
                .args([
                    "--records",
                    &records.to_string(),
                    "--rate",
                    &rate.to_string(),
                ])
                .args(prefill.then_some("--prefill"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    if prefill {
        for child in &mut children {
            // Nothing more is written until the go, so the reader's buffer holds no more.
            let mut out = std::io::BufReader::new(child.stdout.as_mut().unwrap());
            let mut line = String::new();
            while out.read_line(&mut line).unwrap_or(0) > 0 && !line.starts_with("prefilled") {
                line.clear();
            }
        }
        start = Instant::now();
    }
    for child in &mut children {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "go");
        }
    }
    let mut generated = 0u64;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sync-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        generated += text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("records="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (generated, start.elapsed().as_secs_f64())
}

fn quantile(metrics: &str, q: &str) -> String {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("callgate_sync_uplink_lag_ms{")
                && l.contains(&format!("quantile=\"{q}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| format!("{:.0} ms", v.parse::<f64>().unwrap_or(f64::NAN)))
        .unwrap_or_else(|| "n/a".into())
}

/// Raw QoS 1 rate through the same TLS listener: one mosquitto_pub → one mosquitto_sub.
fn broker_raw_rate(w: &World, publisher: &str, count: usize) -> f64 {
    let pki = w.path("coordinator/pki");
    let id = w.path(&format!("{publisher}/identity"));
    let host = w.broker_addr.ip().to_string();
    let port = w.broker_addr.port().to_string();
    let topic = format!("callgate/v1/{publisher}/up");
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            &topic,
            "-C",
            &count.to_string(),
        ])
        .arg("--cafile")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("coordinator.pem"))
        .arg("--key")
        .arg(pki.join("coordinator.key"))
        .args(["-i", "bench-sub"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let mut publish = Command::new("mosquitto_pub")
        .args(["-h", &host, "-p", &port, "-q", "1", "-t", &topic, "-l"])
        .arg("--cafile")
        .arg(id.join("ca.pem"))
        .arg("--cert")
        .arg(id.join("cert.pem"))
        .arg("--key")
        .arg(id.join("key.pem"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = publish.stdin.take().unwrap();
        let line = "x".repeat(120);
        for _ in 0..count {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    sub.wait().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let _ = publish.wait();
    count as f64 / secs
}

#[tokio::test]
#[ignore = "benchmark command: run with --ignored --nocapture"]
async fn sync_benchmark_prints_its_table() {
    let n = appliances();
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let per_appliance = std::env::var("SYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u64);
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut figures = Vec::new();
    rows.push((
        "appliances (own cert, store, outbox each), simulator processes".into(),
        format!("{n}, {}", processes().min(n)),
    ));

    for kind in [BrokerKind::Mosquitto, BrokerKind::Embedded] {
        let label = match kind {
            BrokerKind::Mosquitto => "Mosquitto",
            BrokerKind::Embedded => "embedded broker",
        };
        let mut w = World::with_broker(&refs, kind);
        w.start_broker();
        w.start_coordinator().await;
        let dirs = bench_dirs(&w, &names);
        let (records, secs) = run_bench(&dirs, per_appliance, 0, false);
        let metrics = w.metrics().await;
        let connected = metrics.contains("callgate_sync_broker_connected 1");
        rows.push((
            format!("exactly-once records/s into SQLite via {label}, generated while sent"),
            format!(
                "{:.0} ({records} in {secs:.1} s; coordinator connected: {connected})",
                records as f64 / secs
            ),
        ));
        figures.push(BenchFigure {
            benchmark: "sync".into(),
            measure: format!(
                "exactly-once records/s into SQLite via {label}, generated while sent"
            ),
            ours: records as f64 / secs,
            peer: None,
            peer_name: None,
            goal: Goal::None,
            note: format!(
                "{n} appliances on one disk, one durable commit per record generated, \
                 {records} records in {secs:.1} s"
            ),
            condition_failed: !connected,
        });
        // The link alone: outboxes filled first, the clock runs while they drain.
        let (drained, drain_secs) = run_bench(&dirs, per_appliance * 2, 0, true);
        let raw = broker_raw_rate(&w, &names[0], 20_000);
        rows.push((
            format!("exactly-once records/s into SQLite via {label}, prefilled outboxes drained"),
            format!(
                "{:.0} ({drained} in {drain_secs:.1} s)",
                drained as f64 / drain_secs
            ),
        ));
        figures.push(BenchFigure {
            benchmark: "sync".into(),
            measure: format!("exactly-once records/s into SQLite via {label}"),
            ours: drained as f64 / drain_secs,
            peer: Some(raw),
            peer_name: Some(format!("{label} raw QoS 1, mosquitto_pub → mosquitto_sub")),
            goal: Goal::AtLeastFractionOfPeer(0.5),
            note: format!(
                "{n} appliances, prefilled outboxes drained: {drained} records in {drain_secs:.1} s"
            ),
            condition_failed: !connected,
        });
        rows.push((
            format!("{label} raw QoS 1 rate (mosquitto_pub → mosquitto_sub, TLS)"),
            format!("{raw:.0} msg/s"),
        ));
        if kind == BrokerKind::Mosquitto {
            // Latency at 1,000 records/s in total, on a fresh coordinator (fresh histogram).
            w.kill_coordinator();
            w.start_coordinator().await;
            let rate = (1000 / n).max(1) as u32;
            let (lat_n, lat_s) =
                run_bench(&dirs, per_appliance * 2 + u64::from(rate) * 10, rate, false);
            let metrics = w.metrics().await;
            rows.push((
                format!(
                    "publish→commit latency p50 / p99 at {} records/s (Mosquitto)",
                    rate as usize * n
                ),
                format!(
                    "{} / {} ({lat_n} records in {lat_s:.1} s)",
                    quantile(&metrics, "0.5"),
                    quantile(&metrics, "0.99")
                ),
            ));
        }
    }

    let pg = Postgres::start();
    let mut w = World::with_database(&refs, Some(&pg.url));
    w.start_broker();
    w.start_coordinator().await;
    let dirs = bench_dirs(&w, &names);
    let (records, secs) = run_bench(&dirs, per_appliance, 0, true);
    rows.push((
        "exactly-once records/s into PostgreSQL via Mosquitto, prefilled outboxes drained".into(),
        format!("{:.0} ({records} in {secs:.1} s)", records as f64 / secs),
    ));
    drop(w);
    figures.push(BenchFigure {
        benchmark: "sync".into(),
        measure: "exactly-once records/s into PostgreSQL via Mosquitto".into(),
        ours: records as f64 / secs,
        peer: None,
        peer_name: None,
        goal: Goal::None,
        note: format!("{n} appliances, prefilled outboxes drained"),
        condition_failed: false,
    });
    figures.push(BenchFigure {
        benchmark: "sync".into(),
        measure: "appliances held connected to one coordinator".into(),
        ours: n as f64,
        peer: None,
        peer_name: None,
        goal: Goal::AtLeast(1_000.0),
        note: "each delivered all its records exactly once; set with SYNC_BENCH_APPLIANCES".into(),
        condition_failed: false,
    });
    if let Some(path) = std::env::var_os(FIGURES_ENV) {
        std::fs::write(path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }

    println!("{}", render_table(&figures));
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    println!();
}
