//! Session features against SIPp over UDP (through the same driver): early media relayed
//! through the B2BUA, the UAS side of 100rel, UPDATE as the UAC, and re-INVITE glare
//! (491, then the retry after the RFC 3261 §14.1 wait).

mod support;

use callgate_sip::agent::{AgentEvent, CallSpec, UserAgent};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::trunk::router::{OutboundRouter, RouterConfig};
use callgate_sip::trunk::TrunkGroup;
use callgate_sip::uri::Uri;
use callgate_sip_net::{EndpointConfig, SipEndpoint};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn udp_only() -> EndpointConfig {
    EndpointConfig {
        udp: vec![SocketAddr::new(v4(), 0)],
        trace: true,
        ..EndpointConfig::default()
    }
}

fn policy(target: RouteTarget) -> InboundPolicy {
    InboundPolicy {
        allowed_sources: vec![v4()],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 10,
        per_source_burst: 10,
        routes: vec![InboundRoute {
            number: "*".into(),
            target,
        }],
    }
}

fn sipp_scenario(file: &str, port: u16, extra: &[&str]) -> Peer {
    let scenario = scenario(file);
    let port = port.to_string();
    let mut args = vec!["-sf", &scenario, "-i", "127.0.0.1", "-p", &port, "-m", "1"];
    args.extend_from_slice(extra);
    Peer::sipp(&args)
}

async fn agent_event(ep: &mut SipEndpoint<UserAgent>) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(20), ep.next_event())
        .await
        .expect("an event in time")
        .expect("driver running")
}

#[tokio::test]
async fn the_callees_early_media_reaches_a_sipp_caller_through_the_b2bua() {
    let callee_port = free_udp_port(v4());
    let callee = sipp_scenario("uas_early_media.xml", callee_port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let group = TrunkGroup::new(vec![trunk("callee", SocketAddr::new(v4(), callee_port), 0)]);
    let ep = SipEndpoint::start(udp_only(), move |bound| {
        let ua = UserAgent::new(agent_config(bound.udp[0]));
        let mut r = OutboundRouter::new(
            ua,
            group,
            RouterConfig {
                probe: None,
                ..RouterConfig::default()
            },
            Instant::now(),
            3,
        );
        r.set_inbound_policy(policy(RouteTarget::Trunk("callee".into())));
        r
    })
    .await
    .unwrap();
    let us = ep.bound().udp[0].to_string();
    let caller = sipp_scenario(
        "uac_expects_early_media.xml",
        free_udp_port(v4()),
        &[us.as_str()],
    );
    let (caller_ok, caller_errors) = caller.passed().await;
    let (callee_ok, callee_errors) = callee.passed().await;
    assert!(
        caller_ok,
        "the caller heard the 183 with the callee's SDP, then the answer: {caller_errors}"
    );
    assert!(callee_ok, "{callee_errors}");
    drop(ep);
}

#[tokio::test]
async fn a_100rel_sipp_caller_gets_reliable_early_media_and_the_answer_after_its_prack() {
    let mut ep = SipEndpoint::start(udp_only(), |bound| {
        let mut ua = UserAgent::new(agent_config(bound.udp[0]));
        ua.set_inbound_policy(policy(RouteTarget::AgentGroup("branch".into())));
        ua
    })
    .await
    .unwrap();
    let us = ep.bound().udp[0].to_string();
    let caller = sipp_scenario("uac_100rel.xml", free_udp_port(v4()), &[us.as_str()]);
    let leg = loop {
        if let AgentEvent::Incoming { leg, .. } = agent_event(&mut ep).await {
            break leg;
        }
    };
    ep.with(move |ua, now| {
        ua.progress(now, leg, 183, SDP.to_vec()).unwrap();
        // Held back until the PRACK arrives.
        ua.answer(now, leg, SDP.to_vec()).unwrap();
    })
    .await
    .unwrap();
    while !matches!(agent_event(&mut ep).await, AgentEvent::Answered { .. }) {}
    while !matches!(
        agent_event(&mut ep).await,
        AgentEvent::Ended { by_peer: true, .. }
    ) {}
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "SIPp PRACKed our reliable 183 and got the 200 after: {errors}"
    );
}

#[tokio::test]
async fn a_sipp_callers_early_cancel_reaches_the_callee_after_its_late_180_and_no_other_trunk() {
    let callee_port = free_udp_port(v4());
    let callee = sipp_scenario("uas_rings_late_then_cancelled.xml", callee_port, &[]);
    // A second trunk nobody answers on: a cancelled call must never be sent there.
    let spare = SocketAddr::new(v4(), free_udp_port(v4()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let group = TrunkGroup::new(vec![
        trunk("slow", SocketAddr::new(v4(), callee_port), 0),
        trunk("spare", spare, 1),
    ]);
    let ep = SipEndpoint::start(udp_only(), move |bound| {
        let ua = UserAgent::new(agent_config(bound.udp[0]));
        let mut r = OutboundRouter::new(
            ua,
            group,
            RouterConfig {
                probe: None,
                // Shorter than the callee's silence: without the cancel it would fail over.
                answer_wait: Duration::from_millis(1_000),
                ..RouterConfig::default()
            },
            Instant::now(),
            3,
        );
        r.set_inbound_policy(policy(RouteTarget::Trunk("slow".into())));
        r
    })
    .await
    .unwrap();
    let us = ep.bound().udp[0].to_string();
    let caller = sipp_scenario(
        "uac_cancels_at_once.xml",
        free_udp_port(v4()),
        &[us.as_str()],
    );
    let (caller_ok, caller_errors) = caller.passed().await;
    assert!(
        caller_ok,
        "the caller's CANCEL was answered 200 and 487: {caller_errors}"
    );
    let (callee_ok, callee_errors) = callee.passed().await;
    assert!(
        callee_ok,
        "the callee got the CANCEL after its 180 and ended with 487: {callee_errors}"
    );
    let trunks = ep.with(|r, _| r.group().trunks.clone()).await.unwrap();
    assert_eq!(
        trunks[1].figures.attempts, 0,
        "the spare trunk was never tried"
    );
}

async fn answered_call(
    ep: &mut SipEndpoint<UserAgent>,
    peer: SocketAddr,
) -> callgate_sip::agent::LegId {
    let to = Uri::parse(&format!("sip:+4930123@{peer}")).unwrap();
    let leg = ep
        .with(move |ua, now| ua.place_call(now, CallSpec::new(to, peer, SDP.to_vec())))
        .await
        .unwrap();
    loop {
        match agent_event(ep).await {
            AgentEvent::Answered { .. } => return leg,
            AgentEvent::Progress { .. } => {}
            other => panic!("expected the answer, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_update_puts_a_sipp_carrier_on_hold_and_its_answer_comes_back() {
    let port = free_udp_port(v4());
    let peer = SocketAddr::new(v4(), port);
    let carrier = sipp_scenario("uas_update.xml", port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ep = SipEndpoint::start(udp_only(), |bound| {
        UserAgent::new(agent_config(bound.udp[0]))
    })
    .await
    .unwrap();
    let leg = answered_call(&mut ep, peer).await;
    let mut hold = SDP.to_vec();
    hold.extend_from_slice(b"a=sendonly\r\n");
    ep.with(move |ua, now| ua.update(now, leg, hold))
        .await
        .unwrap()
        .unwrap();
    match agent_event(&mut ep).await {
        AgentEvent::Updated { status, body, .. } => {
            assert_eq!(status, 200);
            assert!(String::from_utf8_lossy(&body).contains("a=recvonly"));
        }
        other => panic!("expected the UPDATE's answer, got {other:?}"),
    }
    ep.with(move |ua, now| ua.hang_up(now, leg))
        .await
        .unwrap()
        .unwrap();
    while !matches!(agent_event(&mut ep).await, AgentEvent::Ended { .. }) {}
    let (ok, errors) = carrier.passed().await;
    assert!(ok, "SIPp saw the UPDATE with a=sendonly: {errors}");
}

#[tokio::test]
async fn a_reinvite_refused_491_by_sipp_is_retried_after_2_1_to_4_seconds() {
    let port = free_udp_port(v4());
    let peer = SocketAddr::new(v4(), port);
    let carrier = sipp_scenario("uas_glare.xml", port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ep = SipEndpoint::start(udp_only(), |bound| {
        UserAgent::new(agent_config(bound.udp[0]))
    })
    .await
    .unwrap();
    let mut wire = ep.take_wire().unwrap();
    let leg = answered_call(&mut ep, peer).await;
    let mut hold = SDP.to_vec();
    hold.extend_from_slice(b"a=sendonly\r\n");
    ep.with(move |ua, now| ua.reinvite(now, leg, hold))
        .await
        .unwrap()
        .unwrap();
    match agent_event(&mut ep).await {
        AgentEvent::Reinvited { status, .. } => assert_eq!(status, 200, "the retry was accepted"),
        other => panic!("expected the re-INVITE's outcome, got {other:?}"),
    }
    ep.with(move |ua, now| ua.hang_up(now, leg))
        .await
        .unwrap()
        .unwrap();
    while !matches!(agent_event(&mut ep).await, AgentEvent::Ended { .. }) {}
    let (ok, errors) = carrier.passed().await;
    assert!(ok, "{errors}");
    let mut got_491 = None;
    let mut retry = None;
    while let Ok(r) = wire.try_recv() {
        let text = String::from_utf8_lossy(&r.bytes).into_owned();
        if !r.outbound && text.starts_with("SIP/2.0 491") {
            got_491 = Some(r.at);
        } else if r.outbound && text.starts_with("INVITE ") && got_491.is_some() {
            retry.get_or_insert(r.at);
        }
    }
    let wait = retry.expect("a retry was sent") - got_491.expect("SIPp said 491");
    assert!(
        wait >= Duration::from_millis(2_100) && wait <= Duration::from_millis(4_050),
        "we own the Call-ID: the retry waits 2.1 to 4 s, waited {wait:?}"
    );
}
