//! Inbound calls from a real SIPp UAC through the tokio driver: a call from a trunk
//! address is routed by the called number, rung, answered, ACKed and ended by the
//! caller's BYE; a call from an address the appliance does not know gets 403.

use callgate_appliance::sip::udp::UdpAgent;
use callgate_sip::agent::{AgentConfig, AgentEvent};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::transaction::TimerConfig;
use std::net::IpAddr;
use std::time::Duration;

mod sip_support;
use sip_support::{free_udp_port, scenario, Sipp};

async fn appliance(allowed: IpAddr) -> UdpAgent {
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
    ua.set_inbound_policy(InboundPolicy {
        allowed_sources: vec![allowed],
        trunk_names: Vec::new(),
        unknown_source: UnknownSource::Reject,
        per_source_rate: 20,
        per_source_burst: 40,
        routes: vec![InboundRoute {
            number: "service".into(),
            target: RouteTarget::AgentGroup("callbacks".into()),
        }],
    })
    .unwrap();
    ua
}

async fn next(ua: &mut UdpAgent) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(15), ua.next_event())
        .await
        .expect("an event in time")
        .expect("driver running")
}

#[tokio::test]
async fn a_call_from_a_trunk_address_is_routed_answered_and_ended_by_the_caller() {
    let mut ua = appliance("127.0.0.1".parse().unwrap()).await;
    let target = ua.local_addr().to_string();
    let caller = Sipp::start_on(free_udp_port(), &["-sn", "uac", &target], &["-m", "1"]);
    let AgentEvent::Incoming {
        leg,
        number,
        target,
        body,
        ..
    } = next(&mut ua).await
    else {
        panic!("expected an incoming call")
    };
    assert_eq!(number, "service");
    assert_eq!(target, RouteTarget::AgentGroup("callbacks".into()));
    assert!(
        String::from_utf8_lossy(&body).contains("m=audio"),
        "SIPp's offer"
    );
    ua.ring(leg).unwrap();
    ua.answer(
        leg,
        b"v=0\r\no=branch 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"
            .to_vec(),
    )
    .unwrap();
    assert!(matches!(next(&mut ua).await, AgentEvent::Answered { leg: l, .. } if l == leg));
    assert!(matches!(
        next(&mut ua).await,
        AgentEvent::Ended { leg: l, by_peer: true } if l == leg
    ));
    let (ok, errors) = caller.passed().await;
    assert!(ok, "SIPp's call went INVITE/200/ACK/BYE/200: {errors}");
}

#[tokio::test]
async fn a_call_from_an_unknown_address_is_refused_with_403() {
    // Only 127.0.0.2 is a trunk; SIPp calls from 127.0.0.1.
    let mut ua = appliance("127.0.0.2".parse().unwrap()).await;
    let target = ua.local_addr().to_string();
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sf", &scenario("uac_expect_refusal.xml"), &target],
        &["-m", "1"],
    );
    let (ok, errors) = caller.passed().await;
    assert!(ok, "SIPp got 403 and ACKed it: {errors}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ua.next_event())
            .await
            .is_err(),
        "no call reached the daemon"
    );
}
