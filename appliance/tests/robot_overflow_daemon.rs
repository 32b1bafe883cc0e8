//! `[agents] overflow = "robot"` in the real daemon: the route table sends `service` to the
//! agent group `support`, nobody is logged in, the queued caller (SIPp) overflows after a
//! second into the configured script, presses 1 and the box hangs up with the script's
//! disposition; a script that transfers to an agent group reaches the desk (the dialer's
//! transfer hook is wired into the overflow), and the call leaves one inbound call record.

mod dialer_support;
mod robot_support;

use callgate_appliance::store::Store;
use callgate_common::ids::AgentGroupId;
use callgate_common::wire::{
    AgentGroupBrief, AgentRoster, CallOutcome, CallRecord, Direction, Downlink, Uplink,
};
use dialer_support::free_udp_port;
use robot_support::{callee_pcap, line_noise, transfer_script, KeyStyle};
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

/// The real daemon with `[agents] overflow = "robot"` running `script`: the route table
/// sends `service` to `support` (nobody in it; `sales` is empty too); returns its temp dir
/// (config, `data`, `daemon.log`), the process and the agents' SIP port, once the agents'
/// side runs.
async fn overflow_daemon(script: &str) -> (tempfile::TempDir, Daemon, u16) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = Store::open(&data).await.unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        callgate_appliance::agents::roster::apply_downlink(
            &mut tx,
            &Downlink::AgentRoster(AgentRoster {
                version: 1,
                groups: vec![
                    AgentGroupBrief {
                        group: AgentGroupId(4),
                        name: "support".into(),
                    },
                    AgentGroupBrief {
                        group: AgentGroupId(2),
                        name: "sales".into(),
                    },
                ],
                agents: vec![],
            }),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        store.pool().close().await;
    }
    std::fs::write(dir.path().join("after-hours.toml"), script).unwrap();
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
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
            .args(["--config", "config.toml", "run"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !daemon_log(&dir).contains("agents' SIP side, desk and lines started") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agents' side did not start; daemon log:\n{}",
            daemon_log(&dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (dir, daemon, agents_sip)
}

fn daemon_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
}

/// SIPp (`+442079460123`) calls `service` on the agents' SIP port, pressing 1 3.5 s after the
/// answer (queued 1 s, then the script asks), and expects the box's BYE.
async fn sipp_calls_service(dir: &tempfile::TempDir, agents_sip: u16) {
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
    assert!(
        status.success(),
        "SIPp: {errors}\ndaemon log:\n{}",
        daemon_log(dir)
    );
}

/// Waits (generously) until a line of the daemon's log holds every one of `parts`.
async fn wait_for_log_line(dir: &tempfile::TempDir, parts: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = daemon_log(dir);
        if text.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}; daemon log:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_overflow_script_takes_a_caller_nobody_answers() {
    let (dir, _daemon, agents_sip) = overflow_daemon(AFTER_HOURS).await;
    sipp_calls_service(&dir, agents_sip).await;
    // The script's own disposition: the caller pressed 1 in the configured script.
    wait_for_log_line(
        &dir,
        &["overflowed call done", "callback_requested"],
        "no overflow report with the script's disposition",
    )
    .await;
}

/// Asks for 1, then transfers to group 2 (sales); nobody there → `no_agent`.
fn to_sales() -> String {
    transfer_script(
        "to sales",
        "All our agents are busy. Press 1 for sales.",
        10000,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_overflow_script_transfers_through_the_desk_and_the_call_leaves_one_inbound_record(
) {
    let (dir, _daemon, agents_sip) = overflow_daemon(&to_sales()).await;
    sipp_calls_service(&dir, agents_sip).await;
    // The transfer reached the desk (nobody of sales is logged in): not "no agent desk
    // connected", which is what a script without the hook logs.
    wait_for_log_line(
        &dir,
        &["robot transfer: no agent took the call"],
        "the overflow script's transfer never reached the desk",
    )
    .await;
    assert!(
        !daemon_log(&dir).contains("no agent desk connected"),
        "{}",
        daemon_log(&dir)
    );
    // One inbound call record in the daemon's outbox, with the script's disposition.
    let store = Store::open(&dir.path().join("data")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        let records: Vec<CallRecord> = rows
            .into_iter()
            .filter_map(|(b,)| match postcard::from_bytes::<Uplink>(&b).unwrap() {
                Uplink::CallRecord(r) => Some(r),
                _ => None,
            })
            .collect();
        if !records.is_empty() || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        (r.agent, r.disposition.as_deref()),
        (None, Some("no_agent"))
    );
    assert_eq!(
        r.remote.as_ref().map(|n| n.e164()),
        Some("+442079460123".to_string())
    );
}
