//! Simulated agents against the appliance's real agent side, started the way the daemon
//! starts it (store with a roster, the desk service, the agents' SIP user agent with the
//! registrar and the inbound route table, the agent lines, the HTTPS agent page): the
//! simulated phone registers with digest and answers the nailed-up leg, the simulated
//! person logs in on the page and is ready; an inbound caller is bridged to the phone and
//! hears its speech-like voice; when the caller hangs up the person saves a disposition
//! from the scenario after the wrap-up time and is ready again; stopping logs out.

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
use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, Downlink};
use callgate_media::g711::Codec;
use callgate_media::rtp::RtpPacket;
use callgate_media::sdp::{create_offer, Direction, LocalMedia};
use callgate_sim::agents::SimAgents;
use callgate_sim::dist::Seconds;
use callgate_sim::scenario::{AgentsScenario, SimPerson};
use callgate_sim::voice::rms;
use callgate_sip::agent::{AgentConfig, AgentEvent, CallSpec};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::registrar::{PhoneAccount, Registrar, RegistrarConfig};
use callgate_sip::uri::Uri;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AGENT: AgentId = AgentId(21);

fn free_even_port() -> u16 {
    loop {
        let p = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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

fn agent_caller_config() -> AgentConfig {
    AgentConfig {
        local: "127.0.0.1:0".parse().unwrap(),
        user: "caller".into(),
        timers: Default::default(),
        credentials: None,
        seed: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_agent_answers_the_nailed_up_leg_takes_a_call_and_saves_a_disposition() {
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
            password_phc: callgate_appliance::web::auth::hash_password("ann demo password"),
            sip_username: "desk-ann".into(),
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
    let ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            user: "branch".into(),
            seed: 77,
            ..agent_caller_config()
        },
    )
    .await
    .unwrap();
    ua.set_registrar(Registrar::new(
        RegistrarConfig::default(),
        vec![PhoneAccount {
            username: "desk-ann".into(),
            password: "desk-ann-secret".into(),
        }],
    ))
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
    let box_addr = ua.local_addr();
    let base = free_even_port();
    let desk = callgate_appliance::agents::start(
        AgentsSetup {
            pool: store.pool().clone(),
            outbox: Some(Arc::new(tokio::sync::RwLock::new(Arc::new(outbox)))),
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
            dialer: None,
        },
        stop_rx.clone(),
    )
    .await
    .unwrap();
    // The agent page.
    let web_dir = dir.path().join("web-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web = WebSettings {
        listen: ([127, 0, 0, 1], port).into(),
        setup_code_file: web_dir.join("setup-code"),
        certificate_names: vec!["127.0.0.1".into()],
        sessions: Default::default(),
        reboot_command: vec![],
        identity_dir: web_dir.join("identity"),
        restart: Default::default(),
        sip: None,
    };
    let status = StatusSource {
        appliance: Some("branch-sim".into()),
        started: Instant::now(),
        store: store.clone(),
        data_dir: web_dir.clone(),
        temperature: Arc::new(Mutex::new(None)),
        link: callgate_appliance::sync::status::LinkStatusCell::new(
            callgate_appliance::sync::status::LinkStatus::not_enrolled(),
        ),
        outbox: None,
        campaigns: None,
    };
    let ui = WebUi::bind_with_agents(&web, status, Some(desk.clone())).unwrap();
    let mut ui_stop = stop_rx.clone();
    tokio::spawn(ui.serve(async move {
        let _ = ui_stop.wait_for(|s| *s).await;
    }));

    // The simulated agent.
    let scenario = AgentsScenario {
        web: format!("https://127.0.0.1:{port}"),
        web_certificate: Some(web_dir.join("web/cert.pem")),
        registrar: box_addr,
        wrap_up_seconds: Seconds::fixed(0.5),
        dispositions: vec!["callback".into(), "no-such-code".into()],
        people: vec![SimPerson {
            login: "ann".into(),
            password: "ann demo password".into(),
            phone: "desk-ann".into(),
            phone_password: "desk-ann-secret".into(),
            phone_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }],
    };
    let agents = SimAgents::start(&scenario, 3).await.unwrap();
    wait_for_state(&desk, "ready", Duration::from_secs(20)).await;
    let start = Instant::now();
    while agents.stats().logins == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "never logged in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = agents.stats();
    assert_eq!(
        (s.registered, s.legs_answered, s.logins),
        (1, 1, 1),
        "{s:?}"
    );

    // An inbound caller is bridged to the phone and hears the simulated agent talk.
    let mut caller = UdpAgent::start("127.0.0.1:0".parse().unwrap(), agent_caller_config())
        .await
        .unwrap();
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let offer = create_offer(&LocalMedia {
        address: "127.0.0.1".parse().unwrap(),
        rtp_port: rtp.local_addr().unwrap().port(),
        codecs: vec![Codec::Pcmu],
        telephone_event: false,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        session_id: 9,
        session_version: 1,
        srtp: None,
    });
    let leg = caller
        .place_call(CallSpec::new(
            Uri::parse(&format!("sip:service@{box_addr}")).unwrap(),
            box_addr,
            offer.to_string().into_bytes(),
        ))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), caller.next_event())
            .await
            .expect("the box answers")
            .unwrap()
        {
            AgentEvent::Answered { leg: l, .. } if l == leg => break,
            AgentEvent::Progress { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    wait_for_state(&desk, "talking", Duration::from_secs(5)).await;
    // Two seconds of what the caller hears (after the connect beep).
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    let until = Instant::now() + Duration::from_millis(2_500);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), rtp.recv(&mut buf)).await {
        if let Ok(p) = RtpPacket::parse(&buf[..n]) {
            let mut pcm = Vec::new();
            Codec::Pcmu.decode(&p.payload, &mut pcm);
            frames.push(pcm);
        }
    }
    let loud = frames.iter().skip(25).filter(|f| rms(f) > 300.0).count();
    assert!(
        loud >= 20,
        "the agent's voice crossed the bridge: {loud} loud frames of {}",
        frames.len()
    );

    // The caller hangs up: wrap-up, then the simulated person's disposition, ready again.
    caller.hang_up(leg).unwrap();
    wait_for_state(&desk, "wrap_up", Duration::from_secs(5)).await;
    wait_for_state(&desk, "ready", Duration::from_secs(10)).await;
    let start = Instant::now();
    let code = loop {
        let row: Option<(String,)> = sqlx::query_as("SELECT code FROM agent_disposition")
            .fetch_optional(store.pool())
            .await
            .unwrap();
        if let Some((code,)) = row {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no disposition stored; {:?}",
            agents.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, "callback", "only a code the call allows is chosen");
    let start = Instant::now();
    while agents.stats().dispositions == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = agents.stats();
    assert_eq!((s.calls, s.dispositions, s.errors), (1, 1, 0), "{s:?}");

    // Stopping logs the person out on the page.
    agents.stop().await;
    wait_for_state(&desk, "logged_out", Duration::from_secs(5)).await;
    let _ = stop.send(true);
}
