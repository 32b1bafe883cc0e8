//! Shared by the `agents_*` tests: the box's agent side on loopback (store, outbox, desk,
//! SIP user agent with the registrar and the inbound route table, the agent lines) and a
//! SIPp desk phone.
#![allow(dead_code, unreachable_pub)]

use crate::sip_support::{free_udp_port, scenario, Sipp};
use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::agents::lines::{LineSettings, OverflowRoute};
use callgate_appliance::agents::service::AgentDeskService;
use callgate_appliance::agents::AgentsSetup;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::sip::udp::UdpAgent;
use callgate_appliance::store::Store;
use callgate_appliance::sync::outbox_store::UplinkOutbox;
use callgate_appliance::web::status::StatusSource;
use callgate_appliance::web::{WebSettings, WebUi};
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::outbox::OutboxConfig;
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, Downlink, Uplink,
};
use callgate_sip::agent::AgentConfig;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::registrar::{PhoneAccount, Registrar, RegistrarConfig};
use callgate_sip::transaction::TimerConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const AGENT: AgentId = AgentId(11);

/// An even port with the next one free too, for an RTP/RTCP pair or a range start.
pub fn free_even_port() -> u16 {
    loop {
        let p = free_udp_port();
        if p % 2 == 0 && p < 60_000 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

pub async fn wait_for_state(desk: &AgentDeskService, want: &str, within: Duration) {
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
pub struct Rig {
    pub store: Store,
    pub desk: AgentDeskService,
    /// The lines' handle, as the dialer's dispatch holds it.
    pub lines: Option<callgate_appliance::agents::lines::LinesHandle>,
    pub box_addr: String,
    pub stop: tokio::sync::watch::Sender<bool>,
    _dir: Option<tempfile::TempDir>,
}

impl Rig {
    /// The rig's temp directory.
    pub fn store_dir(&self) -> &std::path::Path {
        self._dir
            .as_ref()
            .expect("the rig owns its directory")
            .path()
    }

    /// Stops the rig (as the box stopping) and hands over its data directory, for a rig
    /// started again on it ([`rig_in`]).
    pub fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let _ = self.stop.send(true);
        self._dir.take().expect("the rig owns its directory")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub async fn rig(desk_settings: DeskSettings) -> Rig {
    rig_with(desk_settings, false).await
}

/// [`rig`], its agents' phone legs offered SRTP when `phone_srtp`.
pub async fn rig_with(desk_settings: DeskSettings, phone_srtp: bool) -> Rig {
    rig_on(tempfile::tempdir().unwrap(), desk_settings, phone_srtp).await
}

/// [`rig`] on a data directory a stopped rig handed over ([`Rig::stop_keeping_data`]): the
/// box started again.
pub async fn rig_in(dir: tempfile::TempDir, desk_settings: DeskSettings) -> Rig {
    rig_on(dir, desk_settings, false).await
}

async fn rig_on(dir: tempfile::TempDir, desk_settings: DeskSettings, phone_srtp: bool) -> Rig {
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
    let ua = agents_side().await;
    let box_addr = ua.local_addr().to_string();
    let base = free_even_port();
    let settings = LineSettings {
        media_ip: "127.0.0.1".parse().unwrap(),
        rtp_ports: RtpPortRange::new(base, base + 40).unwrap(),
        phone_ring_timeout: Duration::from_secs(10),
        overflow: OverflowRoute::HangUp,
        phone_srtp,
    };
    // Started the way the daemon starts it.
    let started = callgate_appliance::agents::start_with_lines(
        AgentsSetup {
            pool: store.pool().clone(),
            outbox: Some(Arc::new(tokio::sync::RwLock::new(Arc::new(outbox)))),
            desk: desk_settings,
            lines: Some((ua, settings)),
            dialer: None,
        },
        stop_rx,
    )
    .await
    .unwrap();

    Rig {
        store,
        desk: started.desk,
        lines: started.lines,
        box_addr,
        stop,
        _dir: Some(dir),
    }
}

/// Registers the desk phone and starts it answering (it hangs up `hold_ms` after it
/// answered).
pub async fn start_phone(rig: &Rig, hold_ms: u32) -> Sipp {
    let box_addr = &rig.box_addr;
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
    phone
}

/// [`start_phone`], then logs the agent in and waits until the nailed-up leg made the
/// agent ready.
pub async fn phone_logged_in(rig: &Rig, hold_ms: u32) -> Sipp {
    let phone = start_phone(rig, hold_ms).await;
    assert!(rig.desk.log_in(AGENT).await.unwrap());
    wait_for_state(&rig.desk, "ready", Duration::from_secs(5)).await;
    phone
}

pub async fn agent_states(store: &Store) -> Vec<AgentState> {
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

/// Serves the web UI with the agent page over `desk` on a free loopback port until `stop`
/// changes; returns its base URL.
pub fn serve_agent_page(
    store: &Store,
    desk: AgentDeskService,
    data: &std::path::Path,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web = WebSettings {
        listen: ([127, 0, 0, 1], port).into(),
        setup_code_file: data.join("setup-code"),
        certificate_names: vec!["127.0.0.1".into()],
        sessions: Default::default(),
        reboot_command: vec![],
        identity_dir: data.join("identity"),
        restart: Default::default(),
        sip: None,
    };
    let status = StatusSource {
        appliance: Some("branch-agents".into()),
        started: Instant::now(),
        store: store.clone(),
        data_dir: data.to_path_buf(),
        temperature: Arc::new(Mutex::new(None)),
        link: callgate_appliance::sync::status::LinkStatusCell::new(
            callgate_appliance::sync::status::LinkStatus::not_enrolled(),
        ),
        outbox: None,
        campaigns: None,
    };
    let ui = WebUi::bind_with_agents(&web, status, Some(desk)).unwrap();
    tokio::spawn(ui.serve(async move {
        let _ = stopped.changed().await;
    }));
    format!("https://127.0.0.1:{port}")
}

/// A caller that called the rig's `service` number and was answered: our own user agent and
/// its RTP leg (not started), with the box's SDP answer.
pub struct Caller {
    pub ua: UdpAgent,
    pub leg: callgate_sip::agent::LegId,
    pub rtp: callgate_appliance::media::RtpLeg,
    pub audio: callgate_media::sdp::NegotiatedAudio,
    /// The box's SDP answer, as text.
    pub answer: String,
}

/// Calls the rig's `service` number as `user` with a PCMU offer (RTP/SAVP with a fresh SDES
/// key when `srtp`) and waits for the answer.
pub async fn call_service(rig: &Rig, user: &str, seed: u64, srtp: bool) -> Caller {
    use callgate_media::sdp::{
        accept_answer, create_offer, Direction, LocalMedia, SessionDescription,
    };
    use callgate_sip::agent::{AgentEvent as SipEvent, CallSpec};
    let mut ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: user.into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed,
        },
    )
    .await
    .unwrap();
    let base = free_even_port();
    let sockets = RtpPortRange::new(base, base + 10)
        .unwrap()
        .bind_pair("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let local = LocalMedia {
        address: "127.0.0.1".parse().unwrap(),
        rtp_port: sockets.0.local_addr().unwrap().port(),
        codecs: vec![callgate_media::g711::Codec::Pcmu],
        telephone_event: false,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        session_id: seed,
        session_version: 1,
        srtp: srtp.then(|| callgate_appliance::media::fresh_srtp_key().unwrap()),
    };
    let offer = create_offer(&local);
    let box_addr: std::net::SocketAddr = rig.box_addr.parse().unwrap();
    let leg = ua
        .place_call(CallSpec::new(
            callgate_sip::uri::Uri::parse(&format!("sip:service@{box_addr}")).unwrap(),
            box_addr,
            offer.to_string().into_bytes(),
        ))
        .await
        .unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(10), ua.next_event())
            .await
            .expect("the box answers")
            .unwrap()
        {
            SipEvent::Answered { leg: l, body } if l == leg => break body,
            SipEvent::Progress { .. } => continue,
            other => panic!("the call to `service` was not answered: {other:?}"),
        }
    };
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let audio = accept_answer(&offer, &SessionDescription::parse(&answer).unwrap()).unwrap();
    let rtp = callgate_appliance::media::RtpLeg::new(sockets, &audio).unwrap();
    Caller {
        ua,
        leg,
        rtp,
        audio,
        answer,
    }
}

/// The box's SIP side for agents: registrar for the desk phone `desk1` (MD5 digest, what
/// SIPp answers) and the inbound route `service` → agent group `support`.
pub async fn agents_side() -> UdpAgent {
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
        // The SIPp callers come from the carrier's address.
        trunk_names: vec![("127.0.0.1".parse().unwrap(), "carrier".into())],
        unknown_source: UnknownSource::Reject,
        per_source_rate: 20,
        per_source_burst: 40,
        routes: vec![InboundRoute {
            number: "service".into(),
            target: RouteTarget::AgentGroup("support".into()),
        }],
    })
    .unwrap();
    ua
}
