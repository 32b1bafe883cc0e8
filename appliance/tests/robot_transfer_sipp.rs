//! A robot script's `transfer` step through the real agent desk ([`DeskTransfer`]) against
//! real peers: SIPp as the customer (the dialer calls it, it presses 1 for an agent, then
//! plays a steady tone) and SIPp as the agent's desk phone (registered with digest,
//! answering the nailed-up leg and echoing its RTP). A ready agent of the script's group
//! gets the call (reserved, talking, wrap-up, ready in the outbox; the call record carries
//! the agent and the disposition), the customer's audio crosses to the phone and back (the
//! recording's robot/agent channel carries the echoed tone); with the group's agent paused
//! the script goes on at its `on_no_agent`.
//!
//! Late dispositions: whoever hangs up (the agent from the desk, or the customer), the
//! customer's leg is released at once (the BYE answered, the attempt result in the outbox)
//! while the agent wraps up, and the call record goes out only when the agent saves the
//! disposition — 10 s later here — carrying it; for a robot transfer and for an ordinary
//! agent call (dispatcher → desk → bridge). A wrap-up that expires unsaved gives a record
//! without a disposition.

mod agents_support;
mod dialer_support;
mod robot_support;
mod sip_support;

use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::agents::lines::{LineSettings, OverflowRoute};
use callgate_appliance::agents::service::AgentDeskService;
use callgate_appliance::agents::AgentsSetup;
use callgate_appliance::dialer::dispatch::{AgentPlacement, CallDispatch, DeskTransfer};
use callgate_appliance::dialer::driver::DialerControl;
use callgate_appliance::dialer::placement::Announcement;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::recording::RecordingSettings;
use callgate_appliance::robot_call::{RobotPlacement, SpeechCache};
use callgate_appliance::sip::udp::UdpAgent;
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, CallOutcome, DialMode, Downlink, Uplink,
};
use callgate_media::prompt::Prompt;
use callgate_media::tone::ToneGenerator;
use callgate_pacing::AgentState as PacingAgentState;
use callgate_robot::EspeakNg;
use callgate_sip::agent::AgentConfig;
use callgate_sip::registrar::{PhoneAccount, Registrar, RegistrarConfig};
use callgate_sip::transaction::TimerConfig;
use dialer_support::Rig;
use robot_support::*;
use sip_support::{scenario, Sipp};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: AgentId = AgentId(11);
const SALES: AgentGroupId = AgentGroupId(2);

/// Asks for 1, then transfers to group 2 (sales); nobody there → `no_agent`.
fn transfer() -> String {
    transfer_script("to an agent", "Press 1 to speak to an agent.", 6000)
}

/// The agent side on the rig's store and outbox, started as the daemon starts it, with the
/// transfer hook installed on a fresh robot placement; and the desk phone, logged in.
async fn agent_side(
    rig: &Rig,
) -> (
    AgentDeskService,
    RobotPlacement,
    Sipp,
    tokio::sync::watch::Sender<bool>,
    Arc<AgentPlacement>,
) {
    let roster = AgentRoster {
        version: 1,
        groups: vec![AgentGroupBrief {
            group: SALES,
            name: "sales".into(),
        }],
        agents: vec![AgentBrief {
            agent: AGENT,
            name: "Ann Agent".into(),
            login: "ann".into(),
            password_phc: callgate_appliance::web::auth::hash_password("agent password 1"),
            sip_username: "desk1".into(),
            skills: vec![],
            groups: vec![SALES],
        }],
    };
    let mut tx = rig.store.pool().begin().await.unwrap();
    callgate_appliance::agents::roster::apply_downlink(&mut tx, &Downlink::AgentRoster(roster))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "branch".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: std::process::id().into(),
        },
    )
    .await
    .unwrap();
    ua.set_registrar(Registrar::new(
        RegistrarConfig {
            algorithms: vec!["MD5".into()],
            ..RegistrarConfig::default()
        },
        vec![PhoneAccount {
            username: "desk1".into(),
            password: "pw1".into(),
        }],
    ))
    .unwrap();
    let box_addr = ua.local_addr().to_string();
    let base = agents_support::free_even_port();
    let (desk_tx, desk_outputs) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = callgate_appliance::agents::start_with_lines(
        AgentsSetup {
            pool: rig.store.pool().clone(),
            outbox: Some(rig.outbox.clone()),
            desk: DeskSettings::default(),
            lines: Some((
                ua,
                LineSettings {
                    media_ip: "127.0.0.1".parse().unwrap(),
                    rtp_ports: RtpPortRange::new(base, base + 40).unwrap(),
                    phone_ring_timeout: Duration::from_secs(10),
                    overflow: OverflowRoute::HangUp,
                    phone_srtp: false,
                },
            )),
            dialer: Some(desk_tx),
        },
        stop_rx,
    )
    .await
    .unwrap();
    let (control, _receiver) = DialerControl::channel();
    let agents = AgentPlacement::start(
        started.desk.clone(),
        started.lines.unwrap(),
        Announcement::new(
            Prompt::tones(&[(523.3, 300, 100)], 8_000),
            CallOutcome::Abandoned,
        ),
        control,
        desk_outputs,
    );
    let robot = RobotPlacement::new(
        Arc::new(SpeechCache::new(Arc::new(EspeakNg::default()), 64)),
        rig.dir.path(),
        Announcement::new(
            Prompt::tones(&[(440.0, 600, 100)], 8_000),
            CallOutcome::AnsweredHuman,
        ),
    );
    robot.set_transfer(Some(Arc::new(DeskTransfer::new(agents.clone()))));

    // The desk phone registers with digest, then answers the nailed-up leg and echoes RTP.
    let phone_port = sip_support::free_udp_port();
    let register = Sipp::start_on(
        phone_port,
        &["-sf", &scenario("phone_register.xml"), &box_addr],
        &["-m", "1", "-au", "desk1", "-ap", "pw1"],
    );
    let (ok, errors) = register.passed().await;
    assert!(ok, "the phone registered: {errors}");
    let phone = Sipp::start_on(
        phone_port,
        &["-sf", &scenario("agents_phone.xml")],
        &[
            "-m",
            "1",
            "-d",
            "28000",
            "-mp",
            &agents_support::free_even_port().to_string(),
            "-rtp_echo",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(started.desk.log_in(AGENT).await.unwrap());
    wait_for(&started.desk, "ready", Duration::from_secs(30)).await;
    (started.desk, robot, phone, stop, agents)
}

/// Every message in the outbox of the store at `pool`.
async fn uplinks_in(pool: &sqlx::SqlitePool) -> Vec<Uplink> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(b,)| postcard::from_bytes(&b).unwrap())
        .collect()
}

/// The agent's wrap-up as a demanding user sees it: waits until the call is over for the
/// customer (`sipp_logs`: the BYE answered) and the attempt result is in the outbox while
/// the call record is not (it waits for the disposition), then saves `code` no earlier than
/// `after` from the moment the agent entered wrap-up. Returns the call the agent had.
async fn dispose_late(
    desk: &AgentDeskService,
    pool: &sqlx::SqlitePool,
    sipp_logs: &std::path::Path,
    code: &str,
    after: Duration,
) -> callgate_appliance::agents::desk::CallView {
    wait_for(desk, "wrap_up", Duration::from_secs(60)).await;
    let wrapping_since = Instant::now();
    let call = desk
        .view(AGENT)
        .unwrap()
        .call
        .expect("the call is the agent's");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = uplinks_in(pool).await;
        let result = up.iter().any(|u| matches!(u, Uplink::AttemptResult(_)));
        let record = up.iter().any(|u| matches!(u, Uplink::CallRecord(_)));
        assert!(
            !record,
            "no call record before the agent saved the disposition: {up:?}"
        );
        if result && robot_support::bye_answered_in(sipp_logs) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call was not released while the agent wraps up (attempt result {result}, BYE answered {})",
            robot_support::bye_answered_in(sipp_logs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(after.saturating_sub(wrapping_since.elapsed())).await;
    assert_eq!(desk.view(AGENT).unwrap().state, "wrap_up");
    assert!(
        !uplinks_in(pool)
            .await
            .iter()
            .any(|u| matches!(u, Uplink::CallRecord(_))),
        "the record still waits for the disposition"
    );
    desk.dispose(AGENT, code).await.unwrap();
    call
}

async fn wait_for(desk: &AgentDeskService, want: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let state = desk.view(AGENT).map(|v| v.state).unwrap_or("absent");
        if state == want {
            return;
        }
        assert!(
            start.elapsed() < within,
            "agent is {state}, never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The robot brief with the transfer script, disposition codes and a wrap-up time.
fn transfer_brief() -> Downlink {
    let mut brief = robot_brief(Some(&transfer()));
    if let Downlink::Campaign(b) = &mut brief {
        b.disposition_codes = vec!["sale".into(), "no sale".into()];
        b.wrap_up_seconds = 60;
    }
    brief
}

/// The customer: quiet line noise, 1 at 2 s, then from 2.5 s a loud 700 Hz tone.
fn customer_pcap() -> Vec<u8> {
    let mut audio = line_noise(2_500);
    audio.extend(ToneGenerator::new(700.0, 8_000).next_samples(9_500 * 8));
    callee_pcap(&audio, &[(2_000, '1')], KeyStyle::Rfc4733)
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// The customer: a steady 700 Hz tone from the answer on (so the agent's side carries it as
/// soon as audio crosses), 1 pressed at 2 s.
fn tone_customer_pcap() -> Vec<u8> {
    let audio = ToneGenerator::new(700.0, 8_000).next_samples(12_000 * 8);
    callee_pcap(&audio, &[(2_000, '1')], KeyStyle::Rfc4733)
}

/// Has the call's recordings decrypted with `age`, as written by [`record_calls`].
async fn recording_of(rig: &Rig, call: callgate_common::ids::CallId) -> (Vec<i16>, Vec<i16>) {
    let files: Vec<(String,)> = sqlx::query_as(
        "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
    )
    .bind(call.to_string())
    .fetch_all(rig.store.pool())
    .await
    .unwrap();
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for (file,) in files {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(rig.dir.path().join("id.txt"))
            .arg(rig.dir.path().join("recordings").join(&file))
            .output()
            .unwrap();
        assert!(out.status.success());
        for b in out.stdout[44..].chunks_exact(4) {
            left.push(i16::from_le_bytes([b[0], b[1]]));
            right.push(i16::from_le_bytes([b[2], b[3]]));
        }
    }
    (left, right)
}

/// Records the rig's calls (age-encrypted WAV segments in `<dir>/recordings`).
fn record_calls(rig: &mut Rig) {
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(rig.dir.path().join("id.txt"))
        .output()
        .expect("age-keygen (package age) is installed by scripts/setup");
    assert!(out.status.success());
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(rig.dir.path().join("id.txt"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    rig.recording = Some(
        RecordingSettings {
            recipients: vec![recipient.trim().to_owned()],
            directory: Some(rig.dir.path().join("recordings")),
            ..RecordingSettings::default()
        }
        .validate(rig.dir.path())
        .unwrap(),
    );
}

/// What the customer heard from the agent's side, from the recording's right channel
/// starting at sample `from` (the moment the agent got the call): the desk phone echoes what
/// it hears, so the connect beep (440 Hz) mixed over the customer's own tone (700 Hz) comes
/// back only if the agent heard the beep while the customer's audio was already crossing —
/// and the agent's side was relayed to the customer during the beep. Returns the 20-ms
/// frames carrying both, and when the first audible frame came back (ms after `from`).
fn beep_over_the_customer(right: &[i16], from: usize) -> (usize, Option<u64>) {
    use callgate_media::tone::tone_correlation;
    let frames: Vec<&[i16]> = right.get(from..).unwrap_or(&[]).chunks_exact(160).collect();
    let both = frames
        .iter()
        .filter(|f| tone_correlation(f, 440.0) > 0.3 && tone_correlation(f, 700.0) > 0.3)
        .count();
    let first = frames
        .iter()
        .position(|f| rms(f) > 500.0)
        .map(|i| i as u64 * 20);
    (both, first)
}

async fn agent_states(rig: &Rig) -> Vec<AgentState> {
    rig.uplinks()
        .await
        .into_iter()
        .filter_map(|u| match u {
            Uplink::AgentEvent(e) if e.agent == AGENT => Some(e.state),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_reaches_the_ready_agent_of_the_group_and_the_customer_is_heard_there() {
    let callee = Callee::start("robot_callee.xml", &tone_customer_pcap());
    let mut rig = Rig::new().await;
    record_calls(&mut rig);
    let (desk, robot, _phone, _stop, _) = agent_side(&rig).await;
    let brief = transfer_brief();
    robot.set_campaign(brief_of(&brief)).unwrap();
    desk.set_campaign(brief_of(&brief));

    // The agent's side of the conversation: talks 3 s, hangs up, and saves the disposition
    // 10 s into the wrap-up — the customer has had the BYE long before.
    let agent = {
        let desk = desk.clone();
        let (pool, logs) = (rig.store.pool().clone(), callee.log_dir());
        tokio::spawn(async move {
            wait_for(&desk, "talking", Duration::from_secs(90)).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            desk.hang_up(AGENT).unwrap();
            dispose_late(&desk, &pool, &logs, "sale", Duration::from_secs(10)).await
        })
    };
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(robot),
        brief,
        one_contact(3, &[]),
    )
    .await;
    let call = agent
        .await
        .expect("the agent took the call and disposed it");
    assert_eq!(call.call, record.call.to_string());
    assert!(
        call.pop.fields.contains(&("choice".into(), "1".into())),
        "the agent sees what the customer keyed: {:?}",
        call.pop.fields
    );
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(record.agent, Some(AGENT), "{record:?}\n{}", callee.errors());
    assert_eq!(record.disposition.as_deref(), Some("sale"));
    desk.flushed().await;
    let states = agent_states(&rig).await;
    let talk = states
        .iter()
        .position(|s| *s == AgentState::Reserved)
        .expect("the agent was reserved for the call");
    assert_eq!(
        states[talk..],
        [
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp,
            AgentState::Ready
        ],
        "{states:?}"
    );

    // The customer's tone went to the desk phone, which echoed it: the robot/agent side of
    // the recording carries it for the transfer (the robot itself is silent then).
    assert!(record.recording_segments >= 1);
    let (_, right) = recording_of(&rig, record.call).await;
    // 100-ms windows from 3 s on (the key at 2 s ended the robot's question).
    let loud = right
        .chunks_exact(800)
        .skip(30)
        .filter(|w| rms(w) > 1_000.0)
        .count();
    assert!(
        loud >= 10,
        "the customer's tone came back from the agent's phone for at least 1 s: {loud} loud windows of {}",
        right.len() / 800
    );
    // The agent heard the connect beep over the customer's audio, which crossed from the
    // first frame (the recording starts at the answer; the agent got the call at `talking`).
    let talking_at = rig
        .uplinks()
        .await
        .into_iter()
        .find_map(|u| match u {
            Uplink::AgentEvent(e) if e.state == AgentState::Talking => Some(e.at),
            _ => None,
        })
        .expect("the agent talked");
    let from = talking_at.millis_since(record.answered_at.unwrap()).max(0) as usize * 8;
    let (both, first) = beep_over_the_customer(&right, from);
    eprintln!(
        "robot transfer: agent audio back at the customer {first:?} ms after the agent got the call \
         (desk phone echo round trip included); {both} frames of beep over the customer's tone"
    );
    assert!(
        both >= 4,
        "the connect beep came back mixed over the customer's tone: {both} frames"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_with_the_groups_agent_paused_follows_on_no_agent() {
    let callee = Callee::start("robot_callee.xml", &customer_pcap());
    let mut rig = Rig::new().await;
    let (desk, robot, _phone, _stop, _) = agent_side(&rig).await;
    desk.pause(AGENT, "coffee").await.unwrap();
    let brief = transfer_brief();
    robot.set_campaign(brief_of(&brief)).unwrap();
    desk.set_campaign(brief_of(&brief));
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(robot),
        brief,
        one_contact(4, &[]),
    )
    .await;
    assert_eq!(
        record.disposition.as_deref(),
        Some("no_agent"),
        "{record:?}\n{}",
        callee.errors()
    );
    assert_eq!(record.agent, None);
    desk.flushed().await;
    assert!(
        !agent_states(&rig).await.contains(&AgentState::Talking),
        "the paused agent never took the call"
    );
    assert_eq!(desk.view(AGENT).unwrap().state, "paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disposition_saved_ten_seconds_after_the_customer_hung_up_reaches_the_transferred_calls_record(
) {
    // The customer presses 1 at 2 s and hangs up 7 s after the answer, on the agent.
    let callee = Callee::start("robot_callee_hangs_up_on_agent.xml", &customer_pcap());
    let mut rig = Rig::new().await;
    let (desk, robot, _phone, _stop, _) = agent_side(&rig).await;
    let brief = transfer_brief();
    robot.set_campaign(brief_of(&brief)).unwrap();
    desk.set_campaign(brief_of(&brief));
    let agent = {
        let desk = desk.clone();
        let (pool, logs) = (rig.store.pool().clone(), callee.log_dir());
        tokio::spawn(async move {
            wait_for(&desk, "talking", Duration::from_secs(90)).await;
            dispose_late(&desk, &pool, &logs, "sale", Duration::from_secs(10)).await
        })
    };
    let record = one_call(
        &mut rig,
        &callee,
        Arc::new(robot),
        brief,
        one_contact(5, &[]),
    )
    .await;
    let call = agent
        .await
        .expect("the agent disposed 10 s after the hang-up");
    assert_eq!(call.call, record.call.to_string());
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(record.agent, Some(AGENT), "{record:?}\n{}", callee.errors());
    assert_eq!(record.disposition.as_deref(), Some("sale"));
    desk.flushed().await;
    let up = rig.uplinks().await;
    let result_at = up
        .iter()
        .position(|u| matches!(u, Uplink::AttemptResult(_)))
        .unwrap();
    let record_at = up
        .iter()
        .position(|u| matches!(u, Uplink::CallRecord(_)))
        .unwrap();
    assert!(
        result_at < record_at,
        "the attempt result went out at the hang-up, the record after the wrap-up"
    );
    assert_eq!(
        up.iter()
            .filter(|u| matches!(u, Uplink::CallRecord(_)))
            .count(),
        1,
        "one record"
    );
}

/// An agent campaign's brief (progressive) with disposition codes and `wrap_up_seconds`.
fn agent_brief(wrap_up_seconds: u32) -> Downlink {
    let mut brief = dialer_support::brief(DialMode::Progressive, dialer_support::all_day());
    if let Downlink::Campaign(b) = &mut brief {
        b.name = "agent test".into();
        b.disposition_codes = vec!["sale".into(), "no sale".into()];
        b.wrap_up_seconds = wrap_up_seconds;
    }
    brief
}

/// One progressive call to `callee` through the dispatcher and the real agent placement
/// (answer → desk → bridge to the agent's phone); the agent is ready in the dialer.
async fn one_agent_call(
    rig: &mut Rig,
    callee: &Callee,
    agents: Arc<AgentPlacement>,
    brief: Downlink,
) {
    let hour = callgate_common::time::UnixMillis::now().plus_millis(3_600_000);
    rig.feed(brief).await;
    rig.feed(one_contact(6, &[])).await;
    rig.feed(dialer_support::grant(1, hour)).await;
    let dispatch = CallDispatch::new(Arc::new(Announcement::new(
        Prompt::tones(&[(440.0, 600, 100)], 8_000),
        CallOutcome::AnsweredHuman,
    )))
    .with_agents(agents);
    robot_support::start_with(rig, callee.addr, Arc::new(dispatch)).await;
    rig.dialer
        .as_ref()
        .unwrap()
        .agent(AGENT, PacingAgentState::Ready)
        .unwrap();
    rig.settled(Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_disposition_saved_ten_seconds_after_the_customer_hung_up_reaches_its_record(
) {
    let callee = Callee::start("robot_callee_hangs_up_on_agent.xml", &tone_customer_pcap());
    let mut rig = Rig::new().await;
    record_calls(&mut rig);
    let (desk, _robot, _phone, _stop, agents) = agent_side(&rig).await;
    let brief = agent_brief(60);
    desk.set_campaign(brief_of(&brief));
    let agent = {
        let desk = desk.clone();
        let (pool, logs) = (rig.store.pool().clone(), callee.log_dir());
        tokio::spawn(async move {
            wait_for(&desk, "talking", Duration::from_secs(90)).await;
            dispose_late(&desk, &pool, &logs, "no sale", Duration::from_secs(10)).await
        })
    };
    one_agent_call(&mut rig, &callee, agents, brief).await;
    let call = agent
        .await
        .expect("the agent disposed 10 s after the hang-up");
    let records = wait_for_records(&rig, 1, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 1, "{records:?}\n{}", callee.errors());
    let record = &records[0];
    assert_eq!(call.call, record.call.to_string());
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(record.agent, Some(AGENT));
    assert_eq!(record.disposition.as_deref(), Some("no sale"));
    // The bridge's recording starts with the bridge: the agent heard the connect beep over
    // the customer's tone, and the agent's side reached the customer meanwhile.
    assert!(record.recording_segments >= 1);
    let (left, right) = recording_of(&rig, record.call).await;
    let (both, first) = beep_over_the_customer(&right, 0);
    let customer_first = left
        .chunks_exact(160)
        .position(|f| rms(f) > 500.0)
        .map(|i| i as u64 * 20);
    eprintln!(
        "agent call: agent audio back at the customer {first:?} ms into the bridge's recording, \
         the customer's own audio {customer_first:?} ms (desk phone echo round trip included); \
         {both} frames of beep over the customer's tone"
    );
    assert!(
        both >= 4,
        "the connect beep came back mixed over the customer's tone: {both} frames"
    );
    rig.dialer.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_call_whose_wrap_up_expires_unsaved_gets_a_record_without_a_disposition() {
    let callee = Callee::start("robot_callee_hangs_up_on_agent.xml", &customer_pcap());
    let mut rig = Rig::new().await;
    let (desk, _robot, _phone, _stop, agents) = agent_side(&rig).await;
    let brief = agent_brief(8);
    desk.set_campaign(brief_of(&brief));
    one_agent_call(&mut rig, &callee, agents, brief).await;
    // Released at the hang-up: the attempt is settled while the agent still wraps up.
    assert_eq!(desk.view(AGENT).unwrap().state, "wrap_up");
    assert!(call_records(&rig).await.is_empty(), "the record waits");
    wait_for(&desk, "ready", Duration::from_secs(30)).await;
    let records = wait_for_records(&rig, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1, "{records:?}\n{}", callee.errors());
    assert_eq!(records[0].agent, Some(AGENT));
    assert_eq!(records[0].outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        records[0].disposition, None,
        "the wrap-up ended without a disposition"
    );
    rig.dialer.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_stopping_while_the_agent_wraps_up_keeps_the_record_and_its_next_start_sends_it_with_the_code_saved(
) {
    let callee = Callee::start("robot_callee_hangs_up_on_agent.xml", &customer_pcap());
    let mut rig = Rig::new().await;
    let (desk, _robot, _phone, _stop, agents) = agent_side(&rig).await;
    let brief = agent_brief(60);
    desk.set_campaign(brief_of(&brief));
    one_agent_call(&mut rig, &callee, agents.clone(), brief).await;
    // The customer has hung up; the agent wraps up and has saved nothing yet.
    assert_eq!(desk.view(AGENT).unwrap().state, "wrap_up");
    assert!(call_records(&rig).await.is_empty(), "the record waits");
    rig.dialer.take().unwrap().stop().await;
    // Stopped: the record stays kept (durable), not sent without the code.
    let kept: (i64,) = sqlx::query_as("SELECT count(*) FROM dialer_wrap_ups")
        .fetch_one(rig.store.pool())
        .await
        .unwrap();
    assert_eq!(kept.0, 1);
    assert!(call_records(&rig).await.is_empty(), "kept, not sent");
    // The agent saves while the dialer is down; nothing is sent until it starts again.
    desk.dispose(AGENT, "sale").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(call_records(&rig).await.is_empty());
    let dispatch = CallDispatch::new(Arc::new(Announcement::new(
        Prompt::tones(&[(440.0, 600, 100)], 8_000),
        CallOutcome::AnsweredHuman,
    )))
    .with_agents(agents);
    robot_support::start_with(&mut rig, callee.addr, Arc::new(dispatch)).await;
    let records = wait_for_records(&rig, 1, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].agent, Some(AGENT));
    assert_eq!(records[0].outcome, CallOutcome::AnsweredHuman);
    assert_eq!(records[0].disposition.as_deref(), Some("sale"));
    rig.dialer.take().unwrap().stop().await;
    robot_support::start_with(
        &mut rig,
        callee.addr,
        Arc::new(CallDispatch::new(Arc::new(Announcement::new(
            Prompt::tones(&[(440.0, 600, 100)], 8_000),
            CallOutcome::AnsweredHuman,
        )))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call_records(&rig).await.len(),
        1,
        "sent once, whatever restarts"
    );
    rig.dialer.take().unwrap().stop().await;
}
