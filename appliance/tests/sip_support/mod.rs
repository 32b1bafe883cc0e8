//! Shared by the `sip_*` tests: starting SIPp on a free loopback port in a temp dir and
//! collecting its verdict.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// A SIPp process (killed when dropped).
pub struct Sipp {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts SIPp as a UAS for one call with the given scenario arguments.
    pub fn start(scenario: &[&str]) -> Sipp {
        Sipp::start_on(free_udp_port(), scenario, &["-m", "1"])
    }

    /// Starts SIPp on `port` with the scenario arguments and extra options.
    pub fn start_on(port: u16, scenario: &[&str], extra: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("sipp")
            .args(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .args(["-nostdin", "-timeout", "30", "-timeout_error", "-trace_err"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp is installed by scripts/setup (package sip-tester)");
        Sipp {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    /// Waits for SIPp to finish and returns whether its scenario passed, with its errors.
    pub async fn passed(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("sipp finishes")
            .unwrap();
        let mut errors = String::new();
        for e in std::fs::read_dir(self._dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with("errors.log") {
                errors.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        (status.success(), errors)
    }
}

/// The path of a scenario in `tests/sipp/`.
pub fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
