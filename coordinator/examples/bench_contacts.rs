//! Benchmark: contact import and leasing, on SQLite and PostgreSQL, printed as a table.
//!
//! ```text
//! cargo run --release -p callgate-coordinator --example bench_contacts -- [ROWS] [APPLIANCES]
//! ```
//!
//! With `BENCH_SKIP_SQLITE=1` the SQLite import (step 2's first half) is left out.
//!
//! 1. Writes ROWS (default 1,000,000) generated contacts to a CSV file.
//! 2. Imports it through the real import path (E.164 normalisation, AES-256-GCM, blind
//!    index, dedupe) into a fresh SQLite store and into a fresh database of a throw-away
//!    PostgreSQL cluster; reports rows per second and the process's peak memory.
//! 3. Loads the same file with PostgreSQL's own `COPY` (psql `\copy`) into a plain table,
//!    for comparison.
//! 4. Schedules a campaign over the PostgreSQL contacts worked by APPLIANCES (default
//!    1,000) appliances and leases contacts round-robin, 100 per lease, with every
//!    compliance check on; reports contacts leased per second.

use callgate_common::bench::{render_table, write_figures_if_asked, BenchFigure, Goal};
use callgate_common::compliance::{
    AbandonBudget, AttemptCaps, CallingWindow, ComplianceProfile, Jurisdiction, DAY_MS,
};
use callgate_common::time::UnixMillis;
use callgate_coordinator::campaigns::{self, ApplianceShare, CampaignAction, CampaignSpec};
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::contacts::{self, import, ContactListId};
use callgate_coordinator::store::Store;
use callgate_coordinator::{compliance, leasing};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn write_csv(path: &Path, rows: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "phone,timezone,name,tags,urgency,customer_value,plan").unwrap();
    for i in 0..rows {
        // Area codes 201..=989 (valid NANP), exchange 2xx..9xx, 4-digit line: unique per i.
        let area = 201 + (i / 8_000_000) % 700;
        let exchange = 200 + (i / 10_000) % 800;
        let line = i % 10_000;
        writeln!(
            f,
            "({area}) {exchange}-{line:04},America/Chicago,Customer {i},vip;late,{},{},gold",
            i % 10,
            (i * 7) % 10
        )
        .unwrap();
    }
    f.flush().unwrap();
}

async fn import_into(store: &Store, vault: &NumberVault, csv: &Path) -> (f64, u64, i64) {
    let list = contacts::create_list(store, "bench", "US").await.unwrap();
    let started = Instant::now();
    let report = import::import_csv(
        store,
        vault,
        ContactListId(list.id),
        std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(csv).unwrap()),
        None,
        |_| {},
    )
    .await
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.rejected, 0, "{:?}", report.errors);
    (secs, report.imported, list.id)
}

async fn lease_bench(
    store: &Store,
    vault: &NumberVault,
    list: i64,
    appliances: usize,
) -> (f64, u64, u64) {
    let profile = ComplianceProfile {
        jurisdiction: Jurisdiction::Us,
        abandon: AbandonBudget {
            cap_permille: 30,
            window_ms: 30 * DAY_MS,
        },
        lockout_after_abandon_ms: None,
        caps: AttemptCaps {
            per_day: 3,
            per_week: 7,
        },
        window: CallingWindow {
            start_minute: 0,
            end_minute: 1440,
            days: (0..7).collect(),
            holidays: vec![],
        },
        recording_consent_announcement: true,
        retention_days: 30,
    };
    let p = compliance::create_profile(store, "bench-all-day", profile)
        .await
        .unwrap();
    let spec = CampaignSpec {
        name: "bench".into(),
        kind: campaigns::CampaignKind::Service,
        dial_mode: campaigns::DialMode::Progressive,
        compliance_profile_id: p.id,
        starts_on: None,
        ends_on: None,
        calling_window: CallingWindow {
            start_minute: 0,
            end_minute: 1440,
            days: (0..7).collect(),
            holidays: vec![],
        },
        caller_id: "+14155550100".into(),
        script: String::new(),
        disposition_codes: vec![],
        conversion_dispositions: vec![],
        wrap_up_seconds: 0,
        retry: Default::default(),
        priority_weights: Default::default(),
        appliances: (0..appliances)
            .map(|i| ApplianceShare {
                appliance: format!("branch-{i}"),
                share: 1,
            })
            .collect(),
        contact_lists: vec![list],
        recording_consent_announcement: false,
    };
    let c = campaigns::create(store, spec).await.unwrap();
    campaigns::apply(store, c.id, CampaignAction::Schedule)
        .await
        .unwrap();
    let now = UnixMillis::now();
    let started = Instant::now();
    let mut leased = 0u64;
    let mut leases = 0u64;
    // Round-robin over the appliances, four leases in flight, for at most 60 s.
    'outer: loop {
        for chunk in (0..appliances).collect::<Vec<_>>().chunks(4) {
            let mut tasks = Vec::new();
            for i in chunk {
                let (store, vault) = (store.clone(), vault.clone());
                let app = format!("branch-{i}");
                tasks.push(tokio::spawn(async move {
                    leasing::lease_contacts(&store, &vault, c.id, &app, 100, 600_000, now).await
                }));
            }
            let mut got = 0;
            for t in tasks {
                if let Ok(Ok(l)) = t.await {
                    got += l.contacts.len() as u64;
                    leases += 1;
                }
            }
            leased += got;
            if got == 0 || started.elapsed().as_secs() >= 60 {
                break 'outer;
            }
        }
    }
    (started.elapsed().as_secs_f64(), leased, leases)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args
        .next()
        .map(|a| a.parse().expect("ROWS"))
        .unwrap_or(1_000_000);
    let appliances: usize = args
        .next()
        .map(|a| a.parse().expect("APPLIANCES"))
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("contacts.csv");
    let t = Instant::now();
    write_csv(&csv, rows);
    let size = std::fs::metadata(&csv).unwrap().len();
    eprintln!(
        "generated {rows} rows ({:.1} MiB) in {:.1}s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let vault = NumberVault::from_master_key(&[42; 32]);
    let mut table = Vec::new();

    // `BENCH_SKIP_SQLITE=1` leaves the (slow, goal-less) SQLite import out, e.g. while
    // profiling the PostgreSQL one.
    if std::env::var_os("BENCH_SKIP_SQLITE").is_none() {
        let sqlite = Store::open(&dir.path().join("sqlite"), None).await.unwrap();
        let (secs, n, _) = import_into(&sqlite, &vault, &csv).await;
        table.push((
            "import → SQLite (normalise+encrypt+dedupe)",
            n,
            secs,
            peak_rss_mib(),
        ));
        sqlite.pool().close().await;
        eprintln!("sqlite import done");
    }

    let cluster = callgate_system_tests::postgres::shared_cluster();
    let url = cluster.fresh_database();
    let pg = Store::open(&dir.path().join("pg"), Some(&url))
        .await
        .unwrap();
    let (secs, n, list) = import_into(&pg, &vault, &csv).await;
    table.push((
        "import → PostgreSQL (normalise+encrypt+dedupe)",
        n,
        secs,
        peak_rss_mib(),
    ));
    eprintln!("postgres import done");

    let copy_db = cluster.fresh_database();
    cluster
        .run("psql", &["-X", "-q", "-v", "ON_ERROR_STOP=1", &copy_db, "-c",
            "CREATE TABLE raw_contacts (phone text, timezone text, name text, tags text, urgency text, customer_value text, plan text)"])
        .unwrap();
    let t = Instant::now();
    cluster
        .run(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                &copy_db,
                "-c",
                &format!(
                    "\\copy raw_contacts FROM '{}' WITH (FORMAT csv, HEADER true)",
                    csv.display()
                ),
            ],
        )
        .unwrap();
    table.push((
        "PostgreSQL COPY of the same file (no processing)",
        rows,
        t.elapsed().as_secs_f64(),
        f64::NAN,
    ));

    let (secs, leased, leases) = lease_bench(&pg, &vault, list, appliances).await;
    let lease_row = format!("leasing with compliance, {appliances} appliances ({leases} leases)");

    println!();
    println!("| step | rows | seconds | rows/s | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (name, n, secs, rss) in &table {
        println!(
            "| {name} | {n} | {secs:.1} | {:.0} | {} |",
            *n as f64 / secs,
            if rss.is_nan() {
                "-".into()
            } else {
                format!("{rss:.0}")
            }
        );
    }
    println!(
        "| {lease_row} | {leased} | {secs:.1} | {:.0} | {:.0} |",
        leased as f64 / secs,
        peak_rss_mib()
    );
    let row = |label: &str| table.iter().find(|r| r.0.starts_with(label)).copied();
    let rate = |r: (&str, u64, f64, f64)| r.1 as f64 / r.2;
    let pg = row("import → PostgreSQL").expect("the PostgreSQL import ran");
    let copy_rate = rate(row("PostgreSQL COPY").expect("COPY ran"));
    let pg_rate = rate(pg);
    println!(
        "\nPostgreSQL import speed is {:.0}% of COPY (goal: at least 50%).",
        pg_rate / copy_rate * 100.0
    );
    let mut figures = vec![
        BenchFigure {
            benchmark: "import".into(),
            measure: "contacts/s into PostgreSQL (normalise, encrypt, dedupe)".into(),
            ours: pg_rate,
            peer: Some(copy_rate),
            peer_name: Some("PostgreSQL COPY of the same file".into()),
            goal: Goal::AtLeastFractionOfPeer(0.5),
            note: format!("{rows} rows; peak RSS {:.0} MiB", pg.3),
            condition_failed: false,
        },
        BenchFigure {
            benchmark: "import".into(),
            measure: format!("contacts leased/s with compliance, {appliances} appliances"),
            ours: leased as f64 / secs,
            peer: None,
            peer_name: None,
            goal: Goal::None,
            note: format!("{leases} leases"),
            condition_failed: false,
        },
    ];
    if let Some(sqlite) = row("import → SQLite") {
        figures.insert(
            1,
            BenchFigure {
                benchmark: "import".into(),
                measure: "contacts/s into SQLite (normalise, encrypt, dedupe)".into(),
                ours: rate(sqlite),
                peer: Some(copy_rate),
                peer_name: Some("PostgreSQL COPY of the same file".into()),
                goal: Goal::None,
                note: format!("{rows} rows; peak RSS {:.0} MiB", sqlite.3),
                condition_failed: false,
            },
        );
    }
    println!("\n{}", render_table(&figures));
    write_figures_if_asked(&figures).expect("writing the figures");
}
