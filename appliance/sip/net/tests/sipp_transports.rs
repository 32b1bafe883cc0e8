//! The transport driver against real peers: SIPp over TCP (`-t t1`) as carrier and as
//! caller, over IPv6 loopback (UDP and TCP), and over TLS through a real TLS terminator
//! (socat's OpenSSL in front of SIPp, since the packaged SIPp is built without TLS).
//! Failed connections (refused TCP, a certificate for another name) fail over to the next
//! trunk at once. Every peer runs on free loopback ports in a temp dir.

mod support;

use callgate_sip::agent::{AgentEvent, UserAgent};
use callgate_sip::header::Transport;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::trunk::router::{DialEvent, OutboundRouter, RouterConfig};
use callgate_sip::trunk::{Trunk, TrunkGroup};
use callgate_sip_net::{EndpointConfig, SipEndpoint, TlsSettings};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;
use tokio::process::{Child, Command};

/// A router over `trunks` (with their transports) bound on `ip`.
async fn router(
    ip: IpAddr,
    trunks: Vec<(Trunk, Transport)>,
    tls: Option<TlsSettings>,
    tls_names: &[(SocketAddr, &str)],
) -> SipEndpoint<OutboundRouter> {
    let cfg = EndpointConfig {
        udp: vec![SocketAddr::new(ip, 0)],
        tcp: vec![SocketAddr::new(ip, 0)],
        tls_settings: tls,
        tls_names: tls_names
            .iter()
            .map(|(a, n)| (*a, (*n).to_owned()))
            .collect(),
        trace: true,
        ..EndpointConfig::default()
    };
    let group = TrunkGroup::new(trunks.iter().map(|(t, _)| t.clone()).collect());
    let router_cfg = RouterConfig {
        probe: None,
        ..RouterConfig::default()
    };
    SipEndpoint::start(cfg, move |bound| {
        let ua = UserAgent::new(agent_config(bound.udp[0]));
        let mut r = OutboundRouter::new(ua, group, router_cfg, Instant::now(), 7);
        for (t, transport) in trunks {
            r.set_transport(t.address, transport);
        }
        r
    })
    .await
    .unwrap()
}

async fn next_dial_event(ep: &mut SipEndpoint<OutboundRouter>) -> DialEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(15), ep.next_event())
            .await
            .expect("an event in time")
            .expect("driver running");
        if !matches!(e, DialEvent::Progress { .. }) {
            return e;
        }
    }
}

/// Dials, expects the answer on `trunk`, hangs up, expects the end. Returns the time
/// from dial to answer.
async fn call_and_hang_up(ep: &mut SipEndpoint<OutboundRouter>, trunk: &str) -> Duration {
    let started = Instant::now();
    let attempt = ep
        .with(|r, now| r.dial(now, "+4930123", SDP.to_vec(), None))
        .await
        .unwrap();
    match next_dial_event(ep).await {
        DialEvent::Answered { trunk: t, .. } => assert_eq!(t, trunk),
        other => panic!("expected an answer on {trunk}, got {other:?}"),
    }
    let answered_after = started.elapsed();
    ep.with(move |r, now| r.hang_up(now, attempt))
        .await
        .unwrap();
    match next_dial_event(ep).await {
        DialEvent::Ended { by_peer, .. } => assert!(!by_peer),
        other => panic!("expected the end, got {other:?}"),
    }
    answered_after
}

#[tokio::test]
async fn calls_over_tcp_to_sipp_reuse_one_connection() {
    let port = free_tcp_port(v4());
    let sipp_addr = SocketAddr::new(v4(), port);
    let sipp = Peer::sipp(&[
        "-sn",
        "uas",
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "2",
    ]);
    wait_listening(sipp_addr).await;
    let mut ep = router(
        v4(),
        vec![(trunk("tcp", sipp_addr, 0), Transport::Tcp)],
        None,
        &[],
    )
    .await;
    for _ in 0..2 {
        call_and_hang_up(&mut ep, "tcp").await;
        let conns = ep.connections().await.unwrap();
        assert_eq!(
            conns,
            vec![(sipp_addr, Transport::Tcp)],
            "one connection, reused"
        );
    }
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "SIPp's two calls over TCP passed: {errors}");
}

#[tokio::test]
async fn a_tcp_connection_that_breaks_mid_invite_fails_over_at_once() {
    let quitter_port = free_tcp_port(v4());
    let quitter_addr = SocketAddr::new(v4(), quitter_port);
    let quitter = Peer::sipp(&[
        "-sf",
        &scenario("uas_takes_invite_and_quits.xml"),
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-p",
        &quitter_port.to_string(),
        "-m",
        "1",
    ]);
    wait_listening(quitter_addr).await;
    let port = free_udp_port(v4());
    let sipp_addr = SocketAddr::new(v4(), port);
    let sipp = Peer::sipp(&[
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ep = router(
        v4(),
        vec![
            (trunk("quits", quitter_addr, 0), Transport::Tcp),
            (trunk("udp", sipp_addr, 1), Transport::Udp),
        ],
        None,
        &[],
    )
    .await;
    let took = call_and_hang_up(&mut ep, "udp").await;
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    let trunks = ep.with(|r, _| r.group().trunks.clone()).await.unwrap();
    assert_eq!(trunks[0].figures.attempts, 1);
    // The quitter's own verdict says nothing here: it only had to take the INVITE and go.
    drop(quitter);
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn a_refused_tcp_connection_fails_over_to_the_next_trunk_at_once() {
    let closed = SocketAddr::new(v4(), free_tcp_port(v4()));
    let port = free_udp_port(v4());
    let sipp_addr = SocketAddr::new(v4(), port);
    let sipp = Peer::sipp(&[
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ep = router(
        v4(),
        vec![
            (trunk("dead-tcp", closed, 0), Transport::Tcp),
            (trunk("udp", sipp_addr, 1), Transport::Udp),
        ],
        None,
        &[],
    )
    .await;
    let took = call_and_hang_up(&mut ep, "udp").await;
    // The answer wait is 4 s: a refused connection must not wait for it.
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    let trunks = ep.with(|r, _| r.group().trunks.clone()).await.unwrap();
    assert_eq!(
        trunks[0].figures.attempts, 1,
        "the dead trunk was tried first"
    );
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

/// A user agent taking calls from 127.0.0.1 (routed to an agent group) on `cfg`.
async fn inbound_agent(cfg: EndpointConfig) -> SipEndpoint<UserAgent> {
    SipEndpoint::start(cfg, |bound| {
        let mut ua = UserAgent::new(agent_config(bound.udp[0]));
        ua.set_inbound_policy(InboundPolicy {
            allowed_sources: vec![v4()],
            trunk_names: Vec::new(),
            unknown_source: UnknownSource::Reject,
            per_source_rate: 10,
            per_source_burst: 10,
            routes: vec![InboundRoute {
                number: "*".into(),
                target: RouteTarget::AgentGroup("branch".into()),
            }],
        });
        ua
    })
    .await
    .unwrap()
}

async fn next_agent_event(ep: &mut SipEndpoint<UserAgent>) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(15), ep.next_event())
        .await
        .expect("an event in time")
        .expect("driver running")
}

/// Answers the next incoming call and waits for the caller's ACK; returns the open
/// connections while the call is up. Then waits for the caller's BYE.
async fn answer_incoming_call(ep: &mut SipEndpoint<UserAgent>) -> Vec<(SocketAddr, Transport)> {
    let leg = loop {
        if let AgentEvent::Incoming { leg, .. } = next_agent_event(ep).await {
            break leg;
        }
    };
    ep.with(move |ua, now| {
        ua.ring(now, leg).unwrap();
        ua.answer(now, leg, SDP.to_vec()).unwrap();
    })
    .await
    .unwrap();
    while !matches!(next_agent_event(ep).await, AgentEvent::Answered { .. }) {}
    let conns = ep.connections().await.unwrap();
    while !matches!(
        next_agent_event(ep).await,
        AgentEvent::Ended { by_peer: true, .. }
    ) {}
    conns
}

fn sipp_uac(transport_flag: &str, port: u16, target: SocketAddr) -> Peer {
    Peer::sipp(&[
        "-sn",
        "uac",
        "-t",
        transport_flag,
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
        "-d",
        "500",
        &target.to_string(),
    ])
}

#[tokio::test]
async fn an_inbound_call_over_tcp_is_answered_on_the_callers_connection() {
    let mut ep = inbound_agent(EndpointConfig {
        udp: vec![SocketAddr::new(v4(), 0)],
        tcp: vec![SocketAddr::new(v4(), 0)],
        ..EndpointConfig::default()
    })
    .await;
    let listener = ep.bound().tcp[0];
    let sipp = sipp_uac("t1", free_tcp_port(v4()), listener);
    let conns = answer_incoming_call(&mut ep).await;
    assert_eq!(
        conns.len(),
        1,
        "responses used the caller's connection: {conns:?}"
    );
    assert_eq!(conns[0].1, Transport::Tcp);
    assert_ne!(conns[0].0, listener);
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "SIPp's call over TCP passed: {errors}");
}

#[tokio::test]
async fn an_inbound_call_over_tls_is_accepted_with_our_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (roots, cert, key) = certificate(dir.path(), &["localhost"]);
    let tls = TlsSettings::new(
        &roots,
        Some((
            &std::fs::read(&cert).unwrap(),
            &std::fs::read(&key).unwrap(),
        )),
    )
    .unwrap();
    let mut ep = inbound_agent(EndpointConfig {
        udp: vec![SocketAddr::new(v4(), 0)],
        tls: vec![SocketAddr::new(v4(), 0)],
        tls_settings: Some(tls),
        ..EndpointConfig::default()
    })
    .await;
    let our_tls = ep.bound().tls[0];
    // SIPp (TCP) → socat (TLS client, checking our certificate for "localhost") → us.
    let plain_port = free_tcp_port(v4());
    let _socat = Command::new("socat")
        .arg(format!(
            "TCP-LISTEN:{plain_port},bind=127.0.0.1,reuseaddr,fork"
        ))
        .arg(format!(
            "OPENSSL:{our_tls},cafile={},commonname=localhost,verify=1",
            cert.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("socat is installed by scripts/setup");
    let plain = SocketAddr::new(v4(), plain_port);
    wait_listening(plain).await;
    let sipp = sipp_uac("t1", free_tcp_port(v4()), plain);
    let conns = answer_incoming_call(&mut ep).await;
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].1, Transport::Tls);
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "SIPp's call through TLS passed: {errors}");
}

#[tokio::test]
async fn a_tls_listener_without_a_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (roots, _, _) = certificate(dir.path(), &["localhost"]);
    let e = SipEndpoint::<UserAgent>::start(
        EndpointConfig {
            tls: vec![SocketAddr::new(v4(), 0)],
            tls_settings: Some(TlsSettings::new(&roots, None).unwrap()),
            ..EndpointConfig::default()
        },
        |_| UserAgent::new(agent_config(SocketAddr::new(v4(), 5060))),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("needs a certificate and key"), "{e}");
    let e = TlsSettings::new(b"not a certificate", None).unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
}

#[tokio::test]
async fn calls_over_ipv6_loopback_work_on_udp_and_tcp() {
    for (transport, flag) in [(Transport::Udp, "u1"), (Transport::Tcp, "t1")] {
        let port = match transport {
            Transport::Tcp => free_tcp_port(v6()),
            _ => free_udp_port(v6()),
        };
        let sipp_addr = SocketAddr::new(v6(), port);
        let sipp = Peer::sipp(&[
            "-sn",
            "uas",
            "-t",
            flag,
            "-i",
            "::1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ]);
        if transport == Transport::Tcp {
            wait_listening(sipp_addr).await;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut ep = router(
            v6(),
            vec![(trunk("v6", sipp_addr, 0), transport.clone())],
            None,
            &[],
        )
        .await;
        assert!(ep.bound().udp[0].is_ipv6());
        call_and_hang_up(&mut ep, "v6").await;
        let (ok, errors) = sipp.passed().await;
        assert!(ok, "SIPp over [::1] with {flag} passed: {errors}");
    }
}

/// A self-signed certificate for `names`, written as PEM files in `dir`.
fn certificate(dir: &Path, names: &[&str]) -> (Vec<u8>, PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .unwrap();
    let cert_pem = ck.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert_pem.into_bytes(), cert, key)
}

/// socat terminating TLS on `tls_port` in front of a TCP peer; with `client_ca`, accepting
/// only clients whose certificate it vouches for (a carrier that wants mutual TLS).
fn tls_terminator(
    tls_port: u16,
    (cert, key): (&Path, &Path),
    client_ca: Option<&Path>,
    backend: SocketAddr,
) -> Child {
    let verify = match client_ca {
        None => "verify=0".to_owned(),
        Some(ca) => format!("verify=1,cafile={}", ca.display()),
    };
    Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            cert.display(),
            key.display()
        ))
        .arg(format!("TCP:{backend}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("socat is installed by scripts/setup")
}

/// SIPp answering one call over TCP on `sipp_port`, behind a TLS terminator on `tls_port`
/// (its Via/Contact name that port), once it listens.
async fn sipp_behind_tls(sipp_port: u16, tls_port: u16) -> Peer {
    let sipp = Peer::sipp(&[
        "-sf",
        &scenario("uas_behind_tls.xml"),
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-p",
        &sipp_port.to_string(),
        "-key",
        "tlsport",
        &tls_port.to_string(),
        "-m",
        "1",
    ]);
    wait_listening(SocketAddr::new(v4(), sipp_port)).await;
    sipp
}

#[tokio::test]
async fn a_carrier_asking_for_a_client_certificate_gets_ours_and_without_one_we_fail_over() {
    let carrier_dir = tempfile::tempdir().unwrap();
    let (roots, cert, key) = certificate(carrier_dir.path(), &["localhost"]);
    let box_dir = tempfile::tempdir().unwrap();
    let (box_cert_pem, box_cert, box_key) = certificate(box_dir.path(), &["branch-1.example"]);
    let sipp_port = free_tcp_port(v4());
    let tls_port = free_tcp_port(v4());
    let sipp_addr = SocketAddr::new(v4(), sipp_port);
    let tls_addr = SocketAddr::new(v4(), tls_port);
    let behind_tls = sipp_behind_tls(sipp_port, tls_port).await;
    let _socat = tls_terminator(tls_port, (&cert, &key), Some(&box_cert), sipp_addr);
    wait_listening(tls_addr).await;
    let udp_port = free_udp_port(v4());
    let fallback = Peer::sipp(&[
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        &udp_port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trunks = || {
        vec![
            (trunk("tls", tls_addr, 0), Transport::Tls),
            (
                trunk("udp", SocketAddr::new(v4(), udp_port), 1),
                Transport::Udp,
            ),
        ]
    };

    // No certificate of ours: the carrier refuses the connection and the call goes on the
    // next trunk.
    let mut without = router(
        v4(),
        trunks(),
        Some(TlsSettings::new(&roots, None).unwrap()),
        &[(tls_addr, "localhost")],
    )
    .await;
    call_and_hang_up(&mut without, "udp").await;
    let (ok, errors) = fallback.passed().await;
    assert!(ok, "{errors}");
    drop(without);

    // With the box's certificate configured, the carrier accepts it and the call is there.
    let box_key_pem = std::fs::read(&box_key).unwrap();
    let identity = TlsSettings::new(&roots, Some((box_cert_pem.as_slice(), &box_key_pem))).unwrap();
    let mut with = router(v4(), trunks(), Some(identity), &[(tls_addr, "localhost")]).await;
    call_and_hang_up(&mut with, "tls").await;
    let (ok, errors) = behind_tls.passed().await;
    assert!(ok, "SIPp behind mutual TLS passed: {errors}");
}

#[tokio::test]
async fn a_call_over_tls_reaches_sipp_behind_a_tls_terminator() {
    let dir = tempfile::tempdir().unwrap();
    let (roots, cert, key) = certificate(dir.path(), &["localhost"]);
    let sipp_port = free_tcp_port(v4());
    let tls_port = free_tcp_port(v4());
    let sipp_addr = SocketAddr::new(v4(), sipp_port);
    let tls_addr = SocketAddr::new(v4(), tls_port);
    let sipp = sipp_behind_tls(sipp_port, tls_port).await;
    let _socat = tls_terminator(tls_port, (&cert, &key), None, sipp_addr);
    wait_listening(tls_addr).await;
    let tls = TlsSettings::new(&roots, None).unwrap();
    let mut ep = router(
        v4(),
        vec![(trunk("tls", tls_addr, 0), Transport::Tls)],
        Some(tls),
        &[(tls_addr, "localhost")],
    )
    .await;
    let mut wire = ep.take_wire().expect("traced");
    call_and_hang_up(&mut ep, "tls").await;
    assert_eq!(
        ep.connections().await.unwrap(),
        vec![(tls_addr, Transport::Tls)]
    );
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "SIPp behind TLS passed: {errors}");
    // Everything, in-dialog requests included, went over the one TLS connection.
    let mut sent = Vec::new();
    while let Ok(r) = wire.try_recv() {
        if r.outbound {
            sent.push(r);
        }
    }
    let methods: Vec<String> = sent
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.bytes)
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(methods, vec!["INVITE", "ACK", "BYE"]);
    assert!(sent
        .iter()
        .all(|r| r.transport == Transport::Tls && r.peer == tls_addr));
    assert!(String::from_utf8_lossy(&sent[0].bytes).contains("Via: SIP/2.0/TLS "));
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_over_to_the_next_trunk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = certificate(dir.path(), &["impostor.invalid"]);
    let trusted = tempfile::tempdir().unwrap();
    let (roots, _, _) = certificate(trusted.path(), &["localhost"]);
    let backend = SocketAddr::new(v4(), free_tcp_port(v4()));
    let tls_port = free_tcp_port(v4());
    let tls_addr = SocketAddr::new(v4(), tls_port);
    let _socat = tls_terminator(tls_port, (&cert, &key), None, backend);
    wait_listening(tls_addr).await;
    let port = free_udp_port(v4());
    let sipp_addr = SocketAddr::new(v4(), port);
    let sipp = Peer::sipp(&[
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ep = router(
        v4(),
        vec![
            (trunk("tls", tls_addr, 0), Transport::Tls),
            (trunk("udp", sipp_addr, 1), Transport::Udp),
        ],
        Some(TlsSettings::new(&roots, None).unwrap()),
        &[(tls_addr, "localhost")],
    )
    .await;
    let took = call_and_hang_up(&mut ep, "udp").await;
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    assert!(
        ep.connections().await.unwrap().is_empty(),
        "no TLS connection to the impostor"
    );
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}
