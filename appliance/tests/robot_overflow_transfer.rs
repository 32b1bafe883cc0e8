//! An inbound caller's overflow script transfers to an agent group, against real peers: a
//! SIPp caller (`+442079460123`) dials `service`, which the route table sends to the group
//! `support` (nobody in it); after a second in the queue the call overflows to a robot script
//! (espeak-ng) that asks for 1 and transfers to `sales`, whose agent is ready with a SIPp
//! desk phone on the nailed-up leg (digest registration, RTP echoed). The transfer goes
//! through the dialer's desk transfer (`DeskTransfer` over `AgentPlacement`), as the daemon
//! plugs it into the desk (`AgentDeskService::set_transfer`): the agent gets the call, the
//! caller is heard there, the agent hangs up and saves a code in wrap-up, and the inbound
//! call record carries the agent and that code.

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
use callgate_appliance::robot_call::{OverflowTarget, ScriptOverflow, SpeechCache};
use callgate_appliance::store::Store;
use callgate_appliance::sync::outbox_store::UplinkOutbox;
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::outbox::OutboxConfig;
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, CallOutcome, CallRecord, Direction,
    Downlink, Uplink,
};
use callgate_media::prompt::Prompt;
use callgate_media::tone::ToneGenerator;
use callgate_robot::{EspeakNg, RobotScript};
use robot_support::{callee_pcap, line_noise, transfer_script, KeyStyle};
use sip_support::{free_udp_port, scenario, Sipp};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;

const AGENT: AgentId = AgentId(11);
const SUPPORT: AgentGroupId = AgentGroupId(3);
const SALES: AgentGroupId = AgentGroupId(2);

/// Asks for 1, then transfers to group 2 (sales); nobody there → `no_agent`.
fn to_sales() -> String {
    transfer_script("overflow to sales", "Press 1 to speak to sales.", 8000)
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

async fn uplinks(store: &Store) -> Vec<Uplink> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter()
        .map(|(b,)| postcard::from_bytes(&b).unwrap())
        .collect()
}

async fn call_records(store: &Store) -> Vec<CallRecord> {
    uplinks(store)
        .await
        .into_iter()
        .filter_map(|u| match u {
            Uplink::CallRecord(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_script_transfers_the_inbound_caller_to_the_groups_agent_whose_code_is_in_the_record(
) {
    overflow_transfer(false).await;
}

/// The transfer finds the agent paused and waits (safe-harbour time 20 s here); the agent
/// turns ready meanwhile and the desk's later `Connect` reaches the transfer, not the lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_waits_for_the_groups_agent_reaches_it_when_it_turns_ready() {
    overflow_transfer(true).await;
}

async fn overflow_transfer(agent_paused_at_the_transfer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let roster = AgentRoster {
        version: 1,
        groups: vec![
            AgentGroupBrief {
                group: SALES,
                name: "sales".into(),
            },
            AgentGroupBrief {
                group: SUPPORT,
                name: "support".into(),
            },
        ],
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
    let mut tx = store.pool().begin().await.unwrap();
    callgate_appliance::agents::roster::apply_downlink(&mut tx, &Downlink::AgentRoster(roster))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let outbox = Arc::new(tokio::sync::RwLock::new(Arc::new(
        UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
            .await
            .unwrap(),
    )));
    let ua = agents_support::agents_side().await;
    let box_addr = ua.local_addr().to_string();
    let speech = Arc::new(SpeechCache::new(Arc::new(EspeakNg::default()), 32));
    let script = Arc::new(RobotScript::parse(&to_sales(), dir.path()).unwrap());
    let overflow = ScriptOverflow::new(script, speech, None);
    let base = agents_support::free_even_port();
    let (desk_tx, desk_outputs) = tokio::sync::mpsc::unbounded_channel();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = callgate_appliance::agents::start_with_lines(
        AgentsSetup {
            pool: store.pool().clone(),
            outbox: Some(outbox.clone()),
            desk: DeskSettings {
                queue_overflow_after_ms: 1_000,
                inbound_wrap_up_ms: 60_000,
                safe_harbour_after_ms: 20_000,
                ..DeskSettings::default()
            },
            lines: Some((
                ua,
                LineSettings {
                    media_ip: "127.0.0.1".parse().unwrap(),
                    rtp_ports: RtpPortRange::new(base, base + 40).unwrap(),
                    phone_ring_timeout: Duration::from_secs(10),
                    overflow: OverflowRoute::Robot(OverflowTarget(Arc::new(overflow))),
                    phone_srtp: false,
                },
            )),
            dialer: Some(desk_tx),
        },
        stop_rx,
    )
    .await
    .unwrap();
    let desk = started.desk.clone();
    // As `dialer::driver::start_from_config` joins them in the daemon.
    let (control, _receiver) = DialerControl::channel();
    let agents = AgentPlacement::start(
        desk.clone(),
        started.lines.clone().unwrap(),
        Announcement::new(
            Prompt::tones(&[(523.3, 300, 100)], 8_000),
            CallOutcome::Abandoned,
        ),
        control,
        desk_outputs,
    );
    desk.set_transfer(Arc::new(DeskTransfer::new(agents)));

    // The desk phone registers, answers the nailed-up leg and echoes; the agent is ready.
    let phone_port = free_udp_port();
    let register = Sipp::start_on(
        phone_port,
        &["-sf", &scenario("phone_register.xml"), &box_addr],
        &["-m", "1", "-au", "desk1", "-ap", "pw1"],
    );
    let (ok, errors) = register.passed().await;
    assert!(ok, "the phone registered: {errors}");
    let _phone = Sipp::start_on(
        phone_port,
        &["-sf", &scenario("agents_phone.xml")],
        &[
            "-m",
            "1",
            "-d",
            "60000",
            "-mp",
            &agents_support::free_even_port().to_string(),
            "-rtp_echo",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(desk.log_in(AGENT).await.unwrap());
    wait_for(&desk, "ready", Duration::from_secs(30)).await;

    // The caller presses 1 at 4 s (1 s queued, then the question), then talks a 700 Hz tone;
    // it expects the box's BYE.
    let mut audio = line_noise(4_500);
    audio.extend(ToneGenerator::new(700.0, 8_000).next_samples(20_000 * 8));
    let pcap = callee_pcap(&audio, &[(4_000, '1')], KeyStyle::Rfc4733);
    let sipp_dir = tempfile::tempdir().unwrap();
    std::fs::write(sipp_dir.path().join("caller.pcap"), pcap).unwrap();
    let mut caller = Command::new("sipp")
        .arg(&box_addr)
        .arg("-sf")
        .arg(scenario("robot_caller.xml"))
        .args(["-s", "service", "-m", "1"])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-mp", &agents_support::free_even_port().to_string()])
        .args(["-nostdin", "-timeout", "60", "-timeout_error", "-trace_err"])
        .current_dir(sipp_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed by scripts/setup (package sip-tester)");

    if agent_paused_at_the_transfer {
        desk.pause(AGENT, "coffee").await.unwrap();
        // The key goes 4 s after the answer: the transfer waits for sales from then on.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(desk.view(AGENT).unwrap().state, "paused");
        desk.ready(AGENT).await.unwrap();
    }
    // The agent of sales gets the caller (not through the queue of support: it overflowed).
    wait_for(&desk, "talking", Duration::from_secs(60)).await;
    let view = desk.view(AGENT).unwrap();
    let call = view.call.clone().expect("the agent talks on the call");
    assert!(call.inbound, "a call of no campaign: {call:?}");
    assert_eq!(
        call.dispositions,
        DeskSettings::default().inbound_dispositions
    );
    assert!(
        call.pop
            .fields
            .contains(&("choice".to_string(), "1".to_string())),
        "the screen-pop shows what the caller keyed: {:?}",
        call.pop.fields
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    desk.hang_up(AGENT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), caller.wait())
        .await
        .expect("sipp finishes")
        .unwrap();
    assert!(
        status.success(),
        "the caller got our BYE after the agent hung up"
    );
    wait_for(&desk, "wrap_up", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        call_records(&store).await.is_empty(),
        "the record waits for the agent's code"
    );
    desk.dispose(AGENT, "escalated").await.unwrap();

    let start = Instant::now();
    let records = loop {
        let r = call_records(&store).await;
        if !r.is_empty() || start.elapsed() > Duration::from_secs(60) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.call.to_string(), call.call);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(r.agent, Some(AGENT));
    assert_eq!(r.disposition.as_deref(), Some("escalated"));
    assert_eq!(
        r.remote.as_ref().map(|n| n.e164()),
        Some("+442079460123".to_string())
    );
    // The agent's events for the call: reserved, talking, wrap-up, then ready.
    desk.flushed().await;
    let states: Vec<AgentState> = uplinks(&store)
        .await
        .into_iter()
        .filter_map(|u| match u {
            Uplink::AgentEvent(e) if e.call == Some(r.call) => Some(e.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp
        ],
        "{states:?}"
    );
}
