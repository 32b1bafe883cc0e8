//! schemathesis (installed by `scripts/setup` into `target/tools/schemathesis`) fuzzes the
//! running coordinator's REST API from its own OpenAPI document, once over SQLite and once
//! over PostgreSQL: no 5xx, and every status, content type and body as documented.

use callgate_system_tests::postgres::shared_cluster;
use callgate_system_tests::{free_loopback_addr, run_to_end, Daemon};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn schemathesis() -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/tools/schemathesis/bin/schemathesis"
    ));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path
}

async fn fuzz(database_url: Option<String>) {
    let data = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let config = format!(
        "[http]\nlisten = \"{addr}\"\n[store]\ndata_dir = \"{}\"\n",
        data.path().display()
    );
    let config_path = data.path().join("coordinator.toml");
    std::fs::write(&config_path, &config).unwrap();
    let mut args = vec!["--config", config_path.to_str().unwrap()];
    if let Some(url) = &database_url {
        args.extend(["--database-url", url]);
    }
    let mut token_args = args.clone();
    token_args.extend([
        "create-api-token",
        "--name",
        "schemathesis",
        "--scopes",
        "admin",
    ]);
    let (status, stdout, stderr) = run_to_end("callgate-coordinator", &token_args);
    assert!(status.success(), "create-api-token: {stderr}");
    let token = stdout.trim().to_string();
    assert!(token.starts_with("cgt_"), "{stdout}");

    let mut daemon_args: Vec<&str> = Vec::new();
    if let Some(url) = &database_url {
        daemon_args.extend(["--database-url", url]);
    }
    daemon_args.push("all-in-one");
    let mut d = Daemon::start("callgate-coordinator", &config, addr, &daemon_args);
    d.wait_healthy(Duration::from_secs(30)).await;

    let out = Command::new(schemathesis())
        .arg("run")
        .arg(d.url("/api/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "20", "--seed", "1", "--workers", "1"])
        // Reporting a result sends a webhook to the task's callback_url, which fuzzed data
        // could point anywhere: tests only ever talk to loopback, so this one is left to
        // the coordinator's own API tests (which use a loopback receiver).
        .args(["--exclude-operation-id", "reportCallTaskResult"])
        // Its cache of examples goes to the throw-away directory, not the source tree.
        .current_dir(data.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("running schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
    assert!(d.terminate().success());
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_schema_violation_on_sqlite() {
    fuzz(None).await;
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_schema_violation_on_postgres() {
    fuzz(Some(shared_cluster().fresh_database())).await;
}
