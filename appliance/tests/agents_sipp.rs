//! The agents' lines against real SIPp peers: a desk phone registers with digest, the
//! agent logs in and the appliance calls the phone (nailed-up leg, SIPp answers); a SIPp
//! caller on a trunk address dials a number the route table sends to the agent's group, is
//! answered, offered to the agent and bridged (connect beep, `run_bridge`); its hang-up
//! puts the agent in wrap-up, the disposition makes the agent ready; the phone hanging up
//! the nailed-up leg logs the agent out. The agent events are in the outbox in order.

mod sip_support;

use callgate_appliance::agents::desk::{DeskSettings, PHONE_CONNECTING};
use callgate_appliance::agents::lines::{run_agent_lines, LineSettings, OverflowRoute};
use callgate_appliance::agents::service::AgentDeskService;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::sip::udp::UdpAgent;
use callgate_appliance::store::Store;
use callgate_appliance::sync::outbox_store::UplinkOutbox;
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::outbox::OutboxConfig;
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, Downlink, Uplink,
};
use callgate_sip::agent::AgentConfig;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::registrar::{PhoneAccount, Registrar, RegistrarConfig};
use callgate_sip::transaction::TimerConfig;
use sip_support::{free_udp_port, scenario, Sipp};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: AgentId = AgentId(11);

/// An even port with the next one free too, for an RTP/RTCP pair or a range start.
fn free_even_port() -> u16 {
    loop {
        let p = free_udp_port();
        if p % 2 == 0 && p < 60_000 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

async fn wait_for_state(desk: &AgentDeskService, want: &str, within: Duration) {
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

/// The box's agent side on loopback: store, outbox, desk, SIP user agent (registrar for
/// the desk phone `desk1`, route `service` → group `support`) and the agent lines.
struct Rig {
    store: Store,
    desk: AgentDeskService,
    box_addr: String,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn rig(desk_settings: DeskSettings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let roster = AgentRoster {
        version: 1,
        groups: vec![AgentGroupBrief {
            group: AgentGroupId(4),
            name: "support".into(),
        }],
        agents: vec![AgentBrief {
            agent: AGENT,
            name: "Ann Agent".into(),
            login: "ann".into(),
            password_phc: callgate_appliance::web::auth::hash_password("agent password 1"),
            sip_username: "desk1".into(),
            skills: vec![],
            groups: vec![AgentGroupId(4)],
        }],
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
    let (desk, outputs) = AgentDeskService::start(
        store.pool().clone(),
        Some(Arc::new(tokio::sync::RwLock::new(Arc::new(outbox)))),
        desk_settings,
        stop_rx.clone(),
    )
    .await
    .unwrap();

    // The box's SIP side for agents: registrar for the desk phones, the inbound route table.
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
            // SIPp's digest answers MD5 only.
            algorithms: vec!["MD5".into()],
            ..RegistrarConfig::default()
        },
        vec![PhoneAccount {
            username: "desk1".into(),
            password: "pw1".into(),
        }],
    ))
    .unwrap();
    ua.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.1".parse().unwrap()],
        unknown_source: UnknownSource::Reject,
        per_source_rate: 20,
        per_source_burst: 40,
        routes: vec![InboundRoute {
            number: "service".into(),
            target: RouteTarget::AgentGroup("support".into()),
        }],
    })
    .unwrap();
    let box_addr = ua.local_addr().to_string();
    let base = free_even_port();
    let settings = LineSettings {
        media_ip: "127.0.0.1".parse().unwrap(),
        rtp_ports: RtpPortRange::new(base, base + 40).unwrap(),
        phone_ring_timeout: Duration::from_secs(10),
        overflow: OverflowRoute::HangUp,
    };
    tokio::spawn(run_agent_lines(
        ua,
        desk.clone(),
        outputs,
        None,
        settings,
        stop_rx,
    ));

    Rig {
        store,
        desk,
        box_addr,
        stop,
        _dir: dir,
    }
}

/// Registers the desk phone, starts it answering (it hangs up after `hold_ms`), logs the
/// agent in and waits until the nailed-up leg made the agent ready.
async fn phone_logged_in(rig: &Rig, hold_ms: u32) -> Sipp {
    let (desk, box_addr) = (&rig.desk, &rig.box_addr);
    // The desk phone registers with digest from its port, then answers calls there.
    let phone_port = free_udp_port();
    let register = Sipp::start_on(
        phone_port,
        &["-sf", &scenario("phone_register.xml"), box_addr],
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
            &hold_ms.to_string(),
            "-mp",
            &free_even_port().to_string(),
            "-rtp_echo",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Login: the agent waits for the phone, then is ready.
    assert!(desk.log_in(AGENT).await.unwrap());
    wait_for_state(desk, "ready", Duration::from_secs(5)).await;
    phone
}

async fn agent_states(store: &Store) -> Vec<AgentState> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter()
        .filter_map(|(b,)| match postcard::from_bytes::<Uplink>(&b).unwrap() {
            Uplink::AgentEvent(e) => Some(e.state),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_answers_the_nailed_up_leg_and_an_inbound_caller_is_bridged_to_the_agent() {
    let rig = rig(DeskSettings {
        inbound_wrap_up_ms: 60_000,
        ..DeskSettings::default()
    })
    .await;
    let (desk, box_addr) = (&rig.desk, &rig.box_addr);
    let phone = phone_logged_in(&rig, 7000).await;

    // A caller on a trunk address dials the support number and holds for 1.5 s.
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", box_addr],
        &["-m", "1", "-d", "1500"],
    );
    wait_for_state(desk, "talking", Duration::from_secs(5)).await;
    let view = desk.view(AGENT).unwrap();
    let call = view.call.expect("the talking agent has the call");
    assert!(call.inbound);
    assert_eq!(call.pop.source, "support");
    assert_eq!(
        call.pop.fields,
        vec![("called number".to_string(), "service".to_string())]
    );
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "the caller's call was answered and ended cleanly: {errors}"
    );
    wait_for_state(desk, "wrap_up", Duration::from_secs(5)).await;
    desk.dispose(AGENT, "resolved").await.unwrap();
    wait_for_state(desk, "ready", Duration::from_secs(1)).await;

    // The phone hangs up the nailed-up leg: the agent is logged out.
    let (ok, errors) = phone.passed().await;
    assert!(
        ok,
        "the phone answered, kept the leg up and hung up: {errors}"
    );
    wait_for_state(desk, "logged_out", Duration::from_secs(5)).await;

    desk.flushed().await;
    assert_eq!(
        agent_states(&rig.store).await,
        vec![
            AgentState::Paused {
                reason: PHONE_CONNECTING.into()
            },
            AgentState::Ready,
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp,
            AgentState::Ready,
            AgentState::LoggedOut,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waits_on_hold_while_the_agent_is_paused_and_is_bridged_when_the_agent_is_ready() {
    let rig = rig(DeskSettings::default()).await;
    let (desk, box_addr) = (&rig.desk, &rig.box_addr);
    let phone = phone_logged_in(&rig, 6000).await;
    desk.pause(AGENT, "coffee").await.unwrap();

    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", box_addr],
        &["-m", "1", "-d", "2500"],
    );
    let start = Instant::now();
    while desk.pacing_counts().inbound_waiting == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the caller never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(desk.pacing_counts().ready, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        desk.view(AGENT).unwrap().state,
        "paused",
        "queued, not offered"
    );

    desk.ready(AGENT).await.unwrap();
    wait_for_state(desk, "talking", Duration::from_secs(3)).await;
    assert_eq!(desk.pacing_counts().inbound_waiting, 0);
    assert_eq!(desk.pacing_counts().talking_inbound, 1);
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "the held caller was answered and ended cleanly: {errors}"
    );
    wait_for_state(desk, "wrap_up", Duration::from_secs(5)).await;
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
    wait_for_state(desk, "logged_out", Duration::from_secs(5)).await;
}
