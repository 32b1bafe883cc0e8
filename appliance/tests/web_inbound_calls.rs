//! The status page's call list includes inbound calls offered to the agents' SIP side: the
//! agents' user agent (the daemon's `SipAgent`) keeps them from a real SIPp caller's INVITE
//! (ringing, the caller's number masked) through the answer (up) to the caller's BYE (gone),
//! and the list the status page reads from its control says so at each step.

mod sip_support;

use callgate_appliance::sip::live_calls::{CallDirection, CallPhase, LiveCall};
use callgate_appliance::sip::udp::UdpAgent;
use callgate_sip::agent::{AgentConfig, AgentEvent};
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::transaction::TimerConfig;
use sip_support::{free_udp_port, Sipp};
use std::time::Duration;
use tokio::sync::watch;

/// Waits until the list satisfies `ok`, at most a minute.
async fn until(calls: &mut watch::Receiver<Vec<LiveCall>>, ok: impl Fn(&[LiveCall]) -> bool) {
    let wait = async {
        while !ok(&calls.borrow_and_update()) {
            calls.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("the call list never got there: {:?}", calls.borrow()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_is_listed_ringing_then_up_and_leaves_at_its_end() {
    let mut ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "agents".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: 5,
        },
    )
    .await
    .unwrap();
    ua.set_inbound_policy(InboundPolicy {
        allowed_sources: vec!["127.0.0.1".parse().unwrap()],
        unknown_source: UnknownSource::Reject,
        per_source_rate: 20,
        per_source_burst: 40,
        routes: vec![InboundRoute {
            number: "4930*".into(),
            target: RouteTarget::AgentGroup("support".into()),
        }],
    })
    .unwrap();
    let mut calls = ua.control().calls();
    assert!(calls.borrow().is_empty());

    // A caller on the trunk's address; it hangs up 1.5 s after the answer.
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", &ua.local_addr().to_string()],
        &["-m", "1", "-d", "1500", "-s", "4930777"],
    );
    let leg = loop {
        match tokio::time::timeout(Duration::from_secs(30), ua.next_event())
            .await
            .expect("the INVITE arrives")
            .unwrap()
        {
            AgentEvent::Incoming { leg, .. } => break leg,
            _ => continue,
        }
    };
    until(&mut calls, |l| {
        l.len() == 1 && l[0].phase == CallPhase::Ringing && l[0].direction == CallDirection::Inbound
    })
    .await;
    // SIPp's caller is `sipp`: not a phone number, starred.
    assert_eq!(calls.borrow()[0].number, "****");

    ua.answer(
        leg,
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
          m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            .to_vec(),
    )
    .unwrap();
    // The list is fed by the events the agent gives out: keep taking them.
    let events = tokio::spawn(async move {
        let mut ended = false;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(30), ua.next_event()).await
        {
            if matches!(e, AgentEvent::Ended { .. }) {
                ended = true;
                break;
            }
        }
        (ua, ended)
    });
    until(&mut calls, |l| {
        l.len() == 1 && l[0].phase == CallPhase::Up && l[0].answered.is_some()
    })
    .await;
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "the caller's call was answered and hung up cleanly: {errors}"
    );
    let (_ua, ended) = events.await.unwrap();
    assert!(ended, "the caller's BYE ended the call");
    until(&mut calls, |l| l.is_empty()).await;
}
