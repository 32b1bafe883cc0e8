//! The all-in-one demo (`callgate-demo`, the README's first command) as a user runs it:
//! calls flow end to end (the simulated carrier → the enrolled appliances' dialers → the
//! simulated agents on the agent desks → attempt results, call records with dispositions
//! and agent events at the coordinator over the embedded broker), the HQ console
//! and every appliance's web UI answer on the printed URLs, Ctrl-C (SIGINT) stops it with
//! exit 0, and a second run on the same data directory carries on with the same campaign
//! and appliances. A directory that is not a demo's is refused with its name.

use callgate_system_tests::binary;
use callgate_system_tests::demo::{url_in, Demo};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn count(db: &Path, sql: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return 0;
    };
    let n = sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    n
}

async fn wait_for(db: &Path, sql: &str, at_least: i64, limit: Duration, log: &Path) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let n = count(db, sql).await;
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} = {n}, wanted {at_least} within {limit:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_places_calls_end_to_end_serves_console_and_uis_stops_on_ctrl_c_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("demo.log");
    let db = data.join("coordinator/coordinator.db");
    let mut demo = Demo::start(&data, &log, 2);
    let console = url_in(&demo.line_with("HQ console", Duration::from_secs(180), &log));
    let uis: Vec<String> = ["branch-1 web UI", "branch-2 web UI"]
        .iter()
        .map(|n| url_in(&demo.line_with(n, Duration::from_secs(5), &log)))
        .collect();
    assert!(demo
        .line_with("HQ console", Duration::ZERO, &log)
        .contains("login demo / "));

    // Calls end to end: results of both appliances at HQ, with answered and unanswered
    // outcomes, each with its call record.
    let results = "SELECT COUNT(*) FROM attempt_results";
    wait_for(&db, results, 20, Duration::from_secs(180), &log).await;
    for outcome in ["answered_human", "busy"] {
        let sql = format!("SELECT COUNT(*) FROM attempt_results WHERE outcome = '{outcome}'");
        wait_for(&db, &sql, 1, Duration::from_secs(60), &log).await;
    }
    for b in ["branch-1", "branch-2"] {
        let sql = format!("SELECT COUNT(*) FROM attempt_results WHERE appliance = '{b}'");
        wait_for(&db, &sql, 1, Duration::from_secs(60), &log).await;
    }
    // An agent's call record waits for the agent's disposition (or the wrap-up time), so
    // records may trail the attempt results a little.
    wait_for(
        &db,
        "SELECT COUNT(*) FROM call_records",
        20,
        Duration::from_secs(120),
        &log,
    )
    .await;
    // The simulated agents took answered calls and saved dispositions that reached HQ in
    // the call records, and their state changes reached HQ as agent events.
    wait_for(
        &db,
        "SELECT COUNT(*) FROM call_records WHERE disposition IN ('sale', 'callback', 'not-interested')",
        1,
        Duration::from_secs(120),
        &log,
    )
    .await;
    wait_for(
        &db,
        "SELECT COUNT(*) FROM agent_events",
        6,
        Duration::from_secs(60),
        &log,
    )
    .await;
    // Every attempt result gets its call record: an agent's call's record follows its result
    // once the agent saved a disposition or the wrap-up time ran out.
    for b in ["branch-1", "branch-2"] {
        let r = count(
            &db,
            &format!("SELECT COUNT(*) FROM attempt_results WHERE appliance = '{b}'"),
        )
        .await;
        wait_for(
            &db,
            &format!("SELECT COUNT(*) FROM call_records WHERE appliance = '{b}'"),
            r,
            Duration::from_secs(120),
            &log,
        )
        .await;
    }
    // The progress line reports them too.
    demo.line_with("attempt results", Duration::from_secs(10), &log);

    // The console and the appliances' web UIs answer (self-signed certificates).
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for url in std::iter::once(&console).chain(&uis) {
        let r = http.get(url).send().await.unwrap();
        assert!(
            r.status().is_success() || r.status().is_redirection(),
            "{url}: {}",
            r.status()
        );
    }
    let login = http
        .get(format!("{}login", console))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.to_lowercase().contains("password"), "{login}");

    // Ctrl-C stops everything with exit 0.
    let status = demo.interrupt(&log);
    assert!(
        status.success(),
        "{status:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    demo.line_with("stopped cleanly", Duration::ZERO, &log);
    // Nothing still runs against the database once the stop has closed it (the webhook
    // worker once did, and logged "attempted to acquire a connection on a closed pool").
    let written = std::fs::read_to_string(&log).unwrap_or_default();
    let late: Vec<&str> = written
        .lines()
        .filter(|l| l.contains("closed pool"))
        .collect();
    assert!(late.is_empty(), "work after the database closed: {late:#?}");
    let before = count(&db, results).await;

    // Again on the same data directory: same appliances and campaign, more calls.
    let log2 = dir.path().join("demo2.log");
    let mut demo = Demo::start(&data, &log2, 2);
    demo.line_with("HQ console", Duration::from_secs(180), &log2);
    wait_for(&db, results, before + 5, Duration::from_secs(120), &log2).await;
    let status = demo.interrupt(&log2);
    assert!(status.success(), "{status:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM campaigns").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM appliances").await, 2);
}

#[test]
fn a_data_directory_that_is_not_a_demos_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let out = Command::new(binary("callgate-demo"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--ports", "auto", "--reset"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("not a demo's data directory"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("precious.txt")).unwrap(),
        "keep me",
        "nothing deleted"
    );
    let out = Command::new(binary("callgate-demo"))
        .args(["--appliances", "9", "--ports", "auto", "--data-dir"])
        .arg(dir.path().join("fresh"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--appliances: must be 1 to 5, got 9"), "{err}");
}
