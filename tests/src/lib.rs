//! # callgate-system-tests — harness for whole-system tests
//!
//! Starts the real `callgate-coordinator` and `callgate-appliance` binaries (built by
//! `cargo build --workspace --bins`, which `scripts/test` runs first) on free loopback
//! ports with throw-away data directories, waits for them to report healthy, and kills them
//! when the test ends. Real peers (SIPp, Mosquitto, PostgreSQL, age, Chromium) are started
//! by the tests that need them, from the packages `scripts/setup` installs.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary built in the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    l.local_addr().expect("local addr")
}

/// A running program, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// Its data directory (removed with the `Daemon`).
    pub dir: tempfile::TempDir,
    /// Where its HTTP listener is.
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts `binary` with `args`, a config file holding `config_toml`, in a fresh
    /// temporary directory (its working directory).
    pub fn start(binary_name: &str, config_toml: &str, addr: SocketAddr, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_toml).expect("writing config");
        let child = Command::new(binary(binary_name))
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning daemon");
        Daemon {
            child: Some(child),
            dir,
            addr,
        }
    }

    /// `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls `/healthz` until it answers 200, failing the test after `limit`.
    pub async fn wait_healthy(&mut self, limit: Duration) {
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(resp) = client.get(self.url("/healthz")).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited before becoming healthy: {status}");
            }
            assert!(
                start.elapsed() < limit,
                "daemon not healthy within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon still running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("waiting for daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `binary` with `args` to completion and returns (status, stdout, stderr).
pub fn run_to_end(binary_name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary(binary_name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod browser;
pub mod demo;
pub mod image;
pub mod postgres;
