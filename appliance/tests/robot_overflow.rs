//! Inbound overflow to a robot script or voicemail, against SIPp as the inbound caller: the
//! route table sends `service` to the agent group `support`, nobody is logged in, the queued
//! caller overflows after a second (`OverflowRoute::Robot`), and the script (or voicemail)
//! takes the call; the box hangs up when it is done (SIPp expects our BYE).

mod dialer_support;
mod robot_support;

use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::agents::lines::{LineSettings, OverflowRoute};
use callgate_appliance::agents::AgentsSetup;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::recording::{RecordingSettings, SqliteSegmentStore};
use callgate_appliance::robot_call::{
    OverflowReport, OverflowTarget, ScriptOverflow, SpeechCache, Voicemail,
};
use callgate_appliance::sip::udp::UdpAgent;
use callgate_appliance::store::Store;
use callgate_appliance::sync::outbox_store::UplinkOutbox;
use callgate_common::ids::{AgentGroupId, CallId};
use callgate_common::outbox::OutboxConfig;
use callgate_common::wire::{
    AgentGroupBrief, AgentRoster, CallOutcome, CallRecord, Direction, Downlink, Uplink,
};
use callgate_media::prompt::Prompt;
use callgate_media::tone::ToneGenerator;
use callgate_robot::{EspeakNg, RobotScript};
use callgate_sip::agent::AgentConfig;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::transaction::TimerConfig;
use dialer_support::free_udp_port;
use robot_support::{callee_pcap, line_noise, KeyStyle};
use std::process::{Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::mpsc;

/// The box's agent side with an empty group and `overflow` for its queue.
struct Box_ {
    addr: String,
    store: Store,
    stop: tokio::sync::watch::Sender<bool>,
    dir: tempfile::TempDir,
}

impl Drop for Box_ {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn start_box(dir: tempfile::TempDir, store: Store, overflow: OverflowRoute) -> Box_ {
    let roster = AgentRoster {
        version: 1,
        groups: vec![AgentGroupBrief {
            group: AgentGroupId(4),
            name: "support".into(),
        }],
        agents: vec![],
    };
    let mut tx = store.pool().begin().await.unwrap();
    callgate_appliance::agents::roster::apply_downlink(&mut tx, &Downlink::AgentRoster(roster))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let outbox = UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
        .await
        .unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "branch".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: 11,
        },
    )
    .await
    .unwrap();
    ua.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.1".parse().unwrap()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 20,
        per_source_burst: 40,
        routes: vec![InboundRoute {
            number: "service".into(),
            target: RouteTarget::AgentGroup("support".into()),
        }],
    })
    .unwrap();
    let addr = ua.local_addr().to_string();
    let base = free_udp_port() & !1;
    let base = if base > 60_000 { 40_000 } else { base };
    callgate_appliance::agents::start(
        AgentsSetup {
            pool: store.pool().clone(),
            outbox: Some(Arc::new(tokio::sync::RwLock::new(Arc::new(outbox)))),
            desk: DeskSettings {
                queue_overflow_after_ms: 1_000,
                ..DeskSettings::default()
            },
            lines: Some((
                ua,
                LineSettings {
                    media_ip: "127.0.0.1".parse().unwrap(),
                    rtp_ports: RtpPortRange::new(base, base + 19).unwrap(),
                    phone_ring_timeout: Duration::from_secs(5),
                    overflow,
                    phone_srtp: false,
                },
            )),
            dialer: None,
        },
        stop_rx,
    )
    .await
    .unwrap();
    Box_ {
        addr,
        store,
        stop,
        dir,
    }
}

/// SIPp calls `service` on the box once, playing `pcap` from the answer; true when the call
/// went as the scenario says (answered, then our BYE).
async fn sipp_calls(box_addr: &str, pcap: &[u8]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("caller.pcap"), pcap).unwrap();
    let scenario =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/robot_caller.xml");
    let mut child = Command::new("sipp")
        .arg(box_addr)
        .arg("-sf")
        .arg(&scenario)
        .args(["-s", "service", "-m", "1"])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-mp", &(free_udp_port() & !1).to_string()])
        .args(["-nostdin", "-timeout", "40", "-timeout_error", "-trace_err"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed by scripts/setup (package sip-tester)");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("sipp finishes")
        .unwrap();
    let mut errors = String::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with("errors.log") {
            errors.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    (status.success(), errors)
}

const BUSY: &str = r#"
format = 1
name = "busy line"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_caller_runs_the_robot_script_and_a_key_press_ends_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let script = Arc::new(RobotScript::parse(BUSY, dir.path()).unwrap());
    let (tx, mut reports) = mpsc::unbounded_channel::<(CallId, OverflowReport)>();
    let robot = ScriptOverflow::new(
        script,
        Arc::new(SpeechCache::new(Arc::new(EspeakNg::default()), 16)),
        None,
    )
    .with_reports(tx);
    let the_box = start_box(
        dir,
        store,
        OverflowRoute::Robot(OverflowTarget(Arc::new(robot))),
    )
    .await;
    // Queued 1 s, then the robot asks; the key goes 3.5 s after the answer.
    let pcap = callee_pcap(&line_noise(12_000), &[(3_500, '1')], KeyStyle::Rfc4733);
    let started = Instant::now();
    let (ok, errors) = sipp_calls(&the_box.addr, &pcap).await;
    let took = started.elapsed();
    assert!(ok, "SIPp: {errors}");
    let (_, report) = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("the overflow reported")
        .unwrap();
    assert_eq!(report.disposition, "callback_requested");
    assert!(
        took < Duration::from_secs(9),
        "the key ended the call before the 10 s question timeout: {took:?}"
    );
    // One inbound call record: the script's disposition, the caller's number.
    let r = one_call_record(&the_box.store).await;
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        (r.agent, r.disposition.as_deref()),
        (None, Some("callback_requested"))
    );
    assert_eq!(
        r.remote.map(|n| n.e164()),
        Some("+442079460123".to_string())
    );
}

/// The only call record in the box's outbox (waited for: a loaded machine).
async fn one_call_record(store: &Store) -> CallRecord {
    let start = Instant::now();
    loop {
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
        if !records.is_empty() || start.elapsed() > Duration::from_secs(60) {
            assert_eq!(records.len(), 1, "one record for the call: {records:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            return records.into_iter().next().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A box whose queue overflows to voicemail (a 600 Hz greeting, messages up to 5 s,
/// recorded for a fresh age identity in `id.txt`), and the voicemail's reports.
async fn voicemail_box() -> (Box_, mpsc::UnboundedReceiver<(CallId, OverflowReport)>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let id = dir.path().join("id.txt");
    assert!(StdCommand::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen (package age) is installed by scripts/setup")
        .status
        .success());
    let recipient = String::from_utf8(
        StdCommand::new("age-keygen")
            .arg("-y")
            .arg(&id)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let recordings = dir.path().join("recordings");
    let recording = RecordingSettings {
        recipients: vec![recipient.trim().to_owned()],
        directory: Some(recordings.clone()),
        ..RecordingSettings::default()
    }
    .validate(dir.path())
    .unwrap();
    let (tx, reports) = mpsc::unbounded_channel();
    let voicemail = Voicemail::new(
        Prompt::tones(&[(600.0, 500, 0)], 6_000),
        Duration::from_secs(5),
        (recording, SqliteSegmentStore::new(store.pool().clone())),
    )
    .with_reports(tx);
    let the_box = start_box(
        dir,
        store,
        OverflowRoute::Robot(OverflowTarget(Arc::new(voicemail))),
    )
    .await;
    (the_box, reports)
}

/// What the caller sends in the voicemail tests: line noise, then from 4 s (after the
/// queue's second, the greeting and the beep) a 300 Hz tone for 2 s, then noise.
fn a_caller_leaving_a_message() -> Vec<u8> {
    let mut audio = line_noise(4_000);
    audio.extend(ToneGenerator::new(300.0, 8_000).next_samples(16_000));
    audio.extend(line_noise(5_000));
    callee_pcap(&audio, &[], KeyStyle::Rfc4733)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicemail_records_the_callers_message_after_the_greeting() {
    let (the_box, mut reports) = voicemail_box().await;
    let (ok, errors) = sipp_calls(&the_box.addr, &a_caller_leaving_a_message()).await;
    assert!(ok, "SIPp: {errors}");
    let (call, report) = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("the voicemail reported")
        .unwrap();
    assert_eq!(report.disposition, "voicemail");
    assert!(report.recording_segments >= 1);
    let files: Vec<(String,)> = sqlx::query_as(
        "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
    )
    .bind(call.to_string())
    .fetch_all(the_box.store.pool())
    .await
    .unwrap();
    assert_eq!(files.len() as u32, report.recording_segments);
    let r = one_call_record(&the_box.store).await;
    assert_eq!((r.call, r.outcome), (call, CallOutcome::AnsweredHuman));
    assert_eq!(r.disposition.as_deref(), Some("voicemail"));
    assert_eq!(r.recording_segments, report.recording_segments);
    let mut caller_side = Vec::new();
    for (file,) in &files {
        let out = StdCommand::new("age")
            .arg("-d")
            .arg("-i")
            .arg(the_box.dir.path().join("id.txt"))
            .arg(the_box.dir.path().join("recordings").join(file))
            .output()
            .unwrap();
        assert!(out.status.success());
        caller_side.extend(
            out.stdout[44..]
                .chunks_exact(4)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    let loud = caller_side
        .iter()
        .filter(|s| s.unsigned_abs() > 4_000)
        .count();
    assert!(
        loud > 8_000,
        "the caller's message is on the recording's left channel: {loud} loud samples"
    );
}

/// Waits for a listenable call of kind `what` (and, when given, that call), listens to it and
/// keeps what is heard until its media ends.
async fn listen_to(what: &'static str, call: Option<CallId>) -> (CallId, Vec<i16>) {
    let taps = callgate_appliance::call_tap::live();
    let deadline = Instant::now() + Duration::from_secs(30);
    let call = loop {
        if let Some(c) = taps
            .calls()
            .into_iter()
            .find(|c| c.what == what && call.is_none_or(|id| id == c.call))
        {
            break c.call;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} call was ever listenable: {:?}",
            taps.calls()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut frames = taps.listen(call).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut heard = Vec::new();
    while let Some(f) = frames.recv().await {
        heard.extend(f);
    }
    (call, heard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_can_listen_to_a_queued_caller_and_then_to_its_voicemail() {
    use callgate_appliance::agents::lines::HOLD_TAP;
    use callgate_appliance::robot_call::overflow::VOICEMAIL_TAP;
    use callgate_media::tone::tone_presence;
    let (the_box, mut reports) = voicemail_box().await;
    let headset = tokio::spawn(async {
        let (call, held) = listen_to(HOLD_TAP, None).await;
        let (_, voicemail) = listen_to(VOICEMAIL_TAP, Some(call)).await;
        (call, held, voicemail)
    });
    let (ok, errors) = sipp_calls(&the_box.addr, &a_caller_leaving_a_message()).await;
    assert!(ok, "SIPp: {errors}");
    let (call, _) = reports.recv().await.expect("the voicemail reported");
    let (listened, held, voicemail) = headset.await.unwrap();
    assert_eq!(listened, call, "the queued call was listened to");
    // About the queue's second: the position beep (880 Hz) the caller hears.
    assert!(held.len() >= 4_000, "heard {} samples on hold", held.len());
    assert!(
        tone_presence(&held, 880.0, 400) > 0.0,
        "the position beep is heard while the caller is queued"
    );
    // The greeting (600 Hz) and the caller's message (a 300 Hz tone for 2 s).
    assert!(
        tone_presence(&voicemail, 600.0, 400) > 0.0,
        "the greeting is heard"
    );
    let message = tone_presence(&voicemail, 300.0, 400);
    assert!(
        message > 0.1,
        "the caller's message is heard in {message:.2} of windows"
    );
    assert!(
        callgate_appliance::call_tap::live().calls().is_empty(),
        "the tap points go with the call"
    );
}
