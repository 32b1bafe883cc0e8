//! Shared by the tests against real peers: free loopback ports, SIPp (and other peer)
//! processes in temp dirs, trunks and agent settings.

#![allow(dead_code, unreachable_pub)]

use callgate_sip::agent::AgentConfig;
use callgate_sip::transaction::TimerConfig;
use callgate_sip::trunk::Trunk;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

pub fn free_tcp_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port(ip: IpAddr) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn v4() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

pub fn v6() -> IpAddr {
    "::1".parse().unwrap()
}

/// A peer process (killed when dropped) with its temp dir.
pub struct Peer {
    child: Child,
    dir: tempfile::TempDir,
}

impl Peer {
    pub fn sipp(args: &[&str]) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("sipp")
            .args(args)
            .args(["-nostdin", "-timeout", "30", "-timeout_error", "-trace_err"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp is installed by scripts/setup (package sip-tester)");
        Peer { child, dir }
    }

    /// Waits for SIPp to end; whether its scenario passed, with its error log.
    pub async fn passed(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("sipp finishes")
            .unwrap();
        let mut errors = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with("errors.log") {
                errors.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        (status.success(), errors)
    }
}

/// Waits until something accepts TCP connections on `addr` (SIPp and socat start
/// asynchronously).
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

pub fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn trunk(name: &str, address: SocketAddr, priority: u32) -> Trunk {
    Trunk {
        name: name.into(),
        address,
        domain: address.ip().to_string(),
        credentials: None,
        max_channels: 10,
        max_cps: 10,
        priority,
        weight: 1,
    }
}

pub fn agent_config(local: SocketAddr) -> AgentConfig {
    AgentConfig {
        local,
        user: "dialer".into(),
        timers: TimerConfig::default(),
        credentials: None,
        seed: u64::from(std::process::id()),
    }
}
