//! The real `callgate-coordinator` binary with `[console]` set: the console is served over
//! HTTPS beside the plain API listener, the first admin's password is printed once, a user
//! made with `create-console-user` can log in, and a clean shutdown stops both.

mod console_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_binary_serves_the_console_over_https_and_prints_the_first_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let (http, console) = (free_port(), free_port());
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[store]\ndata_dir = \"{}\"\n[console]\nlisten = \"127.0.0.1:{console}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_callgate-coordinator");

    // A user made from the command line before the first start.
    let mut cli = Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap(),
            "create-console-user",
            "--username",
            "hq-lead",
            "--role",
            "supervisor",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(cli.stdin.take().unwrap(), "{}", console_support::PASSWORD).unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hq-lead created as supervisor"));

    let start = || {
        Command::new(bin)
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut server = start();
    // Users exist already: no admin is invented and no password is printed.
    let base = format!("https://127.0.0.1:{console}");
    let c = client();
    let started = Instant::now();
    loop {
        if c.get(format!("{base}/login")).send().await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "console never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .post(format!("{base}/login"))
        .form(&[
            ("username", "hq-lead"),
            ("password", console_support::PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
    // Plain HTTP is not served on the console port.
    assert!(reqwest::get(format!("http://127.0.0.1:{console}/login"))
        .await
        .is_err());
    // The API listener is still there.
    let health = reqwest::get(format!("http://127.0.0.1:{http}/healthz"))
        .await
        .unwrap();
    assert!(health.status().is_success());

    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "clean shutdown: {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("first admin"), "{stderr}");

    // A fresh data directory with no user: the first admin is created and printed once.
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[store]\ndata_dir = \"{}\"\n[console]\nlisten = \"127.0.0.1:{console}\"\n",
            dir.path().join("fresh").display()
        ),
    )
    .unwrap();
    let mut server = start();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let password = loop {
        let line = lines
            .next()
            .expect("the server printed the first admin")
            .unwrap();
        if let Some(at) = line.find("with password \"") {
            let rest = &line[at + 15..];
            break rest[..rest.find('"').unwrap()].to_string();
        }
    };
    // A new client: the old one's pooled connection went with the first server.
    let r = client()
        .post(format!("{base}/login"))
        .form(&[("username", "admin"), ("password", password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}

#[tokio::test]
async fn with_no_console_section_a_taken_default_address_only_turns_the_console_off() {
    // Held here (or by someone else already): taken either way.
    let _held = std::net::TcpListener::bind(callgate_coordinator::config::DEFAULT_CONSOLE_LISTEN);
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = dir.path().join("coordinator.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[store]\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_callgate-coordinator"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{http}/healthz")).await {
            assert!(r.status().is_success());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the coordinator never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "clean shutdown: {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("default address is taken"),
        "the log says why there is no console: {stderr}"
    );
    assert!(!stderr.contains("first admin"), "{stderr}");
    // No admin was made whose password nobody saw.
    let store = callgate_coordinator::store::Store::open(&data, None)
        .await
        .unwrap();
    let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM console_users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(users, 0);
}
