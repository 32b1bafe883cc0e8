//! Both daemons start from a config file, report healthy, expose metrics, refuse a bad
//! config by key, and stop cleanly on SIGTERM.

use callgate_system_tests::{free_loopback_addr, run_to_end, Daemon};
use std::time::Duration;

#[tokio::test]
async fn coordinator_serves_health_and_metrics_then_stops_on_sigterm() {
    let addr = free_loopback_addr();
    let config = format!("[http]\nlisten = \"{addr}\"\n[store]\ndata_dir = \"data\"\n");
    let mut d = Daemon::start("callgate-coordinator", &config, addr, &["all-in-one"]);
    d.wait_healthy(Duration::from_secs(30)).await;

    let health: serde_json::Value = reqwest::get(d.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "callgate-coordinator");
    assert_eq!(health["checks"][0]["name"], "database");

    let metrics = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("callgate_coordinator_up 1"), "{metrics}");
    assert!(d.dir.path().join("data/coordinator.db").exists());

    assert!(d.terminate().success(), "clean exit on SIGTERM");
}

#[tokio::test]
async fn appliance_serves_health_and_metrics_then_stops_on_sigterm() {
    let addr = free_loopback_addr();
    let config = format!(
        "[appliance]\nid = \"branch-test\"\ndata_dir = \"data\"\n[ops]\nlisten = \"{addr}\"\n"
    );
    let mut d = Daemon::start("callgate-appliance", &config, addr, &["run"]);
    d.wait_healthy(Duration::from_secs(30)).await;
    let health: serde_json::Value = reqwest::get(d.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["service"], "callgate-appliance");
    let metrics = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("callgate_appliance_up 1"), "{metrics}");
    // The simulated board's LM75 reads 36.5 °C through the real driver and the board thread.
    assert!(
        metrics.contains("callgate_board_temperature_celsius 36.5"),
        "{metrics}"
    );
    assert!(d.dir.path().join("data/appliance.db").exists());
    assert!(d.terminate().success(), "clean exit on SIGTERM");
}

#[test]
fn a_bad_config_is_refused_with_the_key_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[http]\nlisten = \"not-an-address\"\n").unwrap();
    let (status, _, stderr) = run_to_end(
        "callgate-coordinator",
        &["--config", path.to_str().unwrap(), "check-config"],
    );
    assert!(!status.success());
    assert!(stderr.contains("http.listen"), "{stderr}");

    std::fs::write(&path, "[ops]\nlisten = \"127.0.0.1:1\"\nsurprise = 1\n").unwrap();
    let (status, _, stderr) = run_to_end(
        "callgate-appliance",
        &["--config", path.to_str().unwrap(), "check-config"],
    );
    assert!(!status.success());
    assert!(stderr.contains("surprise"), "{stderr}");
}

#[test]
fn the_example_configs_are_accepted() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    for (bin, file) in [
        ("callgate-coordinator", "coordinator.example.toml"),
        ("callgate-appliance", "appliance.example.toml"),
    ] {
        let path = format!("{root}/{file}");
        let (status, stdout, stderr) = run_to_end(bin, &["--config", &path, "check-config"]);
        assert!(status.success(), "{bin} {file}: {stderr}");
        assert!(stdout.starts_with("config OK"), "{stdout}");
    }
}
