//! `[agents] overflow = "robot"` in the real daemon: the route table sends `service` to the
//! agent group `support`, nobody is logged in, the queued caller (SIPp) overflows after a
//! second into the configured script, presses 1 and the box hangs up with the script's
//! disposition.

mod dialer_support;
mod robot_support;

use callgate_appliance::store::Store;
use callgate_common::ids::AgentGroupId;
use callgate_common::wire::{AgentGroupBrief, AgentRoster, Downlink};
use dialer_support::free_udp_port;
use robot_support::{callee_pcap, line_noise, KeyStyle};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AFTER_HOURS: &str = r#"
format = 1
name = "after hours"
version = 1
start = "ask"

[steps.ask]
kind = "collect"
prompt = { say = "All our agents are busy. Press 1 for a call back." }
max_digits = 1
timeout_ms = 10000
retries = 0
valid = ["1"]
into = "choice"
next = "callback"
on_no_input = "bye"
on_invalid = "bye"

[steps.callback]
kind = "hangup"
disposition = "callback_requested"

[steps.bye]
kind = "hangup"
disposition = "no_response"
"#;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The daemon process, stopped however the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_overflow_script_takes_a_caller_nobody_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = Store::open(&data).await.unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        callgate_appliance::agents::roster::apply_downlink(
            &mut tx,
            &Downlink::AgentRoster(AgentRoster {
                version: 1,
                groups: vec![AgentGroupBrief {
                    group: AgentGroupId(4),
                    name: "support".into(),
                }],
                agents: vec![],
            }),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        store.pool().close().await;
    }
    std::fs::write(dir.path().join("after-hours.toml"), AFTER_HOURS).unwrap();
    let (ops, sip, agents_sip, trunk) = (
        free_tcp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let rtp = (free_udp_port() & !1).min(58_000);
    let config = format!(
        "[appliance]\nid = \"branch-overflow\"\ndata_dir = \"data\"\n\
         [log]\nlevel = \"callgate_appliance=info,warn\"\n\
         [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
         [web]\nenabled = false\n\
         [board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [[sip.trunks]]\nname = \"carrier\"\naddress = \"127.0.0.1:{trunk}\"\nmax_channels = 5\nmax_cps = 5\n\
         [[sip.routes]]\nnumber = \"service\"\nagent_group = \"support\"\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {dialer_last}\n\
         [agents]\nsip_listen = \"127.0.0.1:{agents_sip}\"\nrtp_first_port = {agents_rtp}\nrtp_last_port = {agents_last}\n\
         queue_overflow_seconds = 1\noverflow = \"robot\"\noverflow_script = \"after-hours.toml\"\n",
        dialer_last = rtp + 99,
        agents_rtp = rtp + 100,
        agents_last = rtp + 199,
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
            .args(["--config", "config.toml", "run"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let started = Instant::now();
    while !log().contains("agents' SIP side, desk and lines started") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agents' side did not start; daemon log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIPp calls `service`; queued 1 s, then the script asks; the key goes 3.5 s after the
    // answer; SIPp expects the box's BYE.
    let caller = tempfile::tempdir().unwrap();
    std::fs::write(
        caller.path().join("caller.pcap"),
        callee_pcap(&line_noise(12_000), &[(3_500, '1')], KeyStyle::Rfc4733),
    )
    .unwrap();
    let scenario =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/robot_caller.xml");
    let mut sipp = tokio::process::Command::new("sipp")
        .arg(format!("127.0.0.1:{agents_sip}"))
        .arg("-sf")
        .arg(&scenario)
        .args(["-s", "service", "-m", "1"])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-mp", &(free_udp_port() & !1).to_string()])
        .args(["-nostdin", "-timeout", "60", "-timeout_error", "-trace_err"])
        .current_dir(caller.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed by scripts/setup (package sip-tester)");
    let status = tokio::time::timeout(Duration::from_secs(90), sipp.wait())
        .await
        .expect("sipp finishes")
        .unwrap();
    let mut errors = String::new();
    for e in std::fs::read_dir(caller.path()).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with("errors.log") {
            errors.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    assert!(status.success(), "SIPp: {errors}\ndaemon log:\n{}", log());
    // The script's own disposition: the caller pressed 1 in the configured script.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = log();
        if text
            .lines()
            .any(|l| l.contains("overflowed call done") && l.contains("callback_requested"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no overflow report with the script's disposition; daemon log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
