//! A robot script's `transfer` step through the real agent desk ([`DeskTransfer`]) against
//! real peers: SIPp as the customer (the dialer calls it, it presses 1 for an agent, then
//! plays a steady tone) and SIPp as the agent's desk phone (registered with digest,
//! answering the nailed-up leg and echoing its RTP). A ready agent of the script's group
//! gets the call (reserved, talking, wrap-up, ready in the outbox; the call record carries
//! the agent and the disposition), the customer's audio crosses to the phone and back (the
//! recording's robot/agent channel carries the echoed tone); with the group's agent paused
//! the script goes on at its `on_no_agent`.

mod agents_support;
mod dialer_support;
mod robot_support;
mod sip_support;

use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::agents::lines::{LineSettings, OverflowRoute};
use callgate_appliance::agents::service::AgentDeskService;
use callgate_appliance::agents::AgentsSetup;
use callgate_appliance::dialer::dispatch::{AgentPlacement, DeskTransfer};
use callgate_appliance::dialer::driver::DialerControl;
use callgate_appliance::dialer::placement::Announcement;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::recording::RecordingSettings;
use callgate_appliance::robot_call::{RobotPlacement, SpeechCache};
use callgate_appliance::sip::udp::UdpAgent;
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, CallOutcome, Downlink, Uplink,
};
use callgate_media::prompt::Prompt;
use callgate_media::tone::ToneGenerator;
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
const TRANSFER: &str = r#"
format = 1
name = "to an agent"
version = 1
start = "ask"

[steps.ask]
kind = "collect"
prompt = { say = "Press 1 to speak to an agent." }
max_digits = 1
timeout_ms = 6000
retries = 0
valid = ["1"]
into = "choice"
next = "agent"
on_no_input = "bye"
on_invalid = "bye"

[steps.agent]
kind = "transfer"
group = 2
on_no_agent = "no_agent"

[steps.no_agent]
kind = "hangup"
disposition = "no_agent"

[steps.bye]
kind = "hangup"
disposition = "no_response"
"#;

/// The agent side on the rig's store and outbox, started as the daemon starts it, with the
/// transfer hook installed on a fresh robot placement; and the desk phone, logged in.
async fn agent_side(
    rig: &Rig,
) -> (
    AgentDeskService,
    RobotPlacement,
    Sipp,
    tokio::sync::watch::Sender<bool>,
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
    robot.set_transfer(Some(Arc::new(DeskTransfer::new(agents))));

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
    (started.desk, robot, phone, stop)
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
    let mut brief = robot_brief(Some(TRANSFER));
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
    let callee = Callee::start("robot_callee.xml", &customer_pcap());
    let mut rig = Rig::new().await;
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
    let recordings = rig.dir.path().join("recordings");
    rig.recording = Some(
        RecordingSettings {
            recipients: vec![recipient.trim().to_owned()],
            directory: Some(recordings.clone()),
            ..RecordingSettings::default()
        }
        .validate(rig.dir.path())
        .unwrap(),
    );
    let (desk, robot, _phone, _stop) = agent_side(&rig).await;
    let brief = transfer_brief();
    robot.set_campaign(brief_of(&brief)).unwrap();
    desk.set_campaign(brief_of(&brief));

    // The agent's side of the conversation: talks 3 s, hangs up, saves the disposition.
    let agent = {
        let desk = desk.clone();
        tokio::spawn(async move {
            wait_for(&desk, "talking", Duration::from_secs(90)).await;
            let pop = desk
                .view(AGENT)
                .unwrap()
                .call
                .expect("the call is the agent's");
            tokio::time::sleep(Duration::from_secs(3)).await;
            desk.hang_up(AGENT).unwrap();
            wait_for(&desk, "wrap_up", Duration::from_secs(30)).await;
            desk.dispose(AGENT, "sale").await.unwrap();
            pop
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
    let files: Vec<(String,)> = sqlx::query_as(
        "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
    )
    .bind(record.call.to_string())
    .fetch_all(rig.store.pool())
    .await
    .unwrap();
    let mut right = Vec::new();
    for (file,) in files {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(rig.dir.path().join("id.txt"))
            .arg(recordings.join(&file))
            .output()
            .unwrap();
        assert!(out.status.success());
        right.extend(
            out.stdout[44..]
                .chunks_exact(4)
                .map(|b| i16::from_le_bytes([b[2], b[3]])),
        );
    }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_with_the_groups_agent_paused_follows_on_no_agent() {
    let callee = Callee::start("robot_callee.xml", &customer_pcap());
    let mut rig = Rig::new().await;
    let (desk, robot, _phone, _stop) = agent_side(&rig).await;
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
