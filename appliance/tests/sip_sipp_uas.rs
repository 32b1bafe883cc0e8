//! The appliance's SIP user agent, on its tokio UDP driver, places real calls to a real
//! SIPp acting as the carrier's UAS (package `sip-tester`): answered calls
//! (100/180/200/ACK/BYE), busy and declined calls (486, 603), a 401 digest challenge
//! answered, and CANCEL on ring timeout after 183 early media. Every SIPp runs on a free loopback port in a temp dir and must
//! itself report its scenario passed (exit 0).

use callgate_appliance::sip::udp::UdpAgent;
use callgate_sip::agent::{AgentConfig, AgentEvent, CallSpec, LegId};
use callgate_sip::digest::DigestCredentials;
use callgate_sip::transaction::TimerConfig;
use callgate_sip::uri::Uri;
use std::time::Duration;

mod sip_support;
use sip_support::{scenario, Sipp};

async fn agent(credentials: Option<DigestCredentials>) -> UdpAgent {
    UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "dialer".into(),
            timers: TimerConfig::default(),
            credentials,
            seed: std::process::id().into(),
        },
    )
    .await
    .unwrap()
}

/// Events of `leg` until one matching `done`, with a deadline.
async fn events_until(
    ua: &mut UdpAgent,
    leg: LegId,
    done: impl Fn(&AgentEvent) -> bool,
) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(15), ua.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event in time; so far {seen:?}"))
            .expect("driver running");
        let mine = match &e {
            AgentEvent::Progress { leg: l, .. }
            | AgentEvent::Answered { leg: l, .. }
            | AgentEvent::Failed { leg: l, .. }
            | AgentEvent::Ended { leg: l, .. } => *l == leg,
            _ => false,
        };
        if mine {
            let stop = done(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    }
}

fn to(sipp: &Sipp) -> Uri {
    Uri::parse(&format!("sip:+4930555@{}", sipp.addr)).unwrap()
}

const OFFER: &[u8] = b"v=0\r\no=callgate 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

#[tokio::test]
async fn an_outbound_call_to_sipp_is_answered_acked_and_hung_up() {
    let sipp = Sipp::start(&["-sn", "uas"]);
    // Let SIPp bind before the INVITE; a lost first INVITE would only be retransmitted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ua = agent(None).await;
    let leg = ua
        .place_call(CallSpec::new(to(&sipp), sipp.addr, OFFER.to_vec()))
        .await
        .unwrap();
    let seen = events_until(&mut ua, leg, |e| matches!(e, AgentEvent::Answered { .. })).await;
    assert!(
        matches!(seen[0], AgentEvent::Progress { status: 180, .. }),
        "{seen:?}"
    );
    let AgentEvent::Answered { body, .. } = seen.last().unwrap() else {
        panic!()
    };
    assert!(
        String::from_utf8_lossy(body).contains("m=audio"),
        "the 200 carried SDP"
    );
    ua.hang_up(leg).unwrap();
    let end = events_until(&mut ua, leg, |e| matches!(e, AgentEvent::Ended { .. })).await;
    assert!(matches!(end[0], AgentEvent::Ended { by_peer: false, .. }));
    let (ok, errors) = sipp.passed().await;
    assert!(
        ok,
        "SIPp saw INVITE, ACK and BYE as its scenario expects: {errors}"
    );
}

#[tokio::test]
async fn busy_and_declined_calls_are_reported_with_their_status() {
    for (file, status, reason) in [
        ("uas_busy.xml", "486", "Busy Here"),
        ("uas_decline.xml", "603", "Decline"),
    ] {
        let sipp = Sipp::start(&["-sf", &scenario(file)]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut ua = agent(None).await;
        let leg = ua
            .place_call(CallSpec::new(to(&sipp), sipp.addr, OFFER.to_vec()))
            .await
            .unwrap();
        let seen = events_until(&mut ua, leg, |e| matches!(e, AgentEvent::Failed { .. })).await;
        let AgentEvent::Failed {
            status: got,
            reason: why,
            ..
        } = seen.last().unwrap()
        else {
            panic!()
        };
        assert_eq!(got.to_string(), status);
        assert_eq!(why, reason);
        let (ok, errors) = sipp.passed().await;
        assert!(ok, "SIPp got its ACK for {status}: {errors}");
    }
}

#[tokio::test]
async fn a_401_challenge_from_sipp_is_answered_and_the_call_completes() {
    let sipp = Sipp::start(&["-sf", &scenario("uas_auth.xml")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ua = agent(Some(DigestCredentials {
        username: "branch7".into(),
        password: "s3cret".into(),
        realm: None,
    }))
    .await;
    let leg = ua
        .place_call(CallSpec::new(to(&sipp), sipp.addr, OFFER.to_vec()))
        .await
        .unwrap();
    let seen = events_until(&mut ua, leg, |e| {
        matches!(e, AgentEvent::Answered { .. } | AgentEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(seen.last().unwrap(), AgentEvent::Answered { .. }),
        "SIPp accepted our digest: {seen:?}"
    );
    ua.hang_up(leg).unwrap();
    events_until(&mut ua, leg, |e| matches!(e, AgentEvent::Ended { .. })).await;
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn wrong_credentials_are_refused_by_sipp_with_403() {
    let sipp = Sipp::start(&["-sf", &scenario("uas_auth.xml")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ua = agent(Some(DigestCredentials {
        username: "branch7".into(),
        password: "wrong".into(),
        realm: None,
    }))
    .await;
    let leg = ua
        .place_call(CallSpec::new(to(&sipp), sipp.addr, OFFER.to_vec()))
        .await
        .unwrap();
    let seen = events_until(&mut ua, leg, |e| matches!(e, AgentEvent::Failed { .. })).await;
    assert!(
        matches!(seen.last().unwrap(), AgentEvent::Failed { status: 403, .. }),
        "{seen:?}"
    );
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn an_unanswered_call_is_cancelled_at_its_ring_timeout_after_early_media() {
    let sipp = Sipp::start(&["-sf", &scenario("uas_ring_cancel.xml")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ua = agent(None).await;
    let leg = ua
        .place_call(CallSpec {
            ring_timeout: Some(Duration::from_secs(1)),
            ..CallSpec::new(to(&sipp), sipp.addr, OFFER.to_vec())
        })
        .await
        .unwrap();
    let seen = events_until(&mut ua, leg, |e| matches!(e, AgentEvent::Failed { .. })).await;
    let AgentEvent::Progress {
        status: 183, body, ..
    } = &seen[0]
    else {
        panic!("{seen:?}")
    };
    assert!(
        String::from_utf8_lossy(body).contains("m=audio"),
        "early media SDP"
    );
    assert!(matches!(seen[1], AgentEvent::Progress { status: 180, .. }));
    assert!(
        matches!(seen[2], AgentEvent::Failed { status: 487, .. }),
        "{seen:?}"
    );
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "SIPp got CANCEL and the ACK for 487: {errors}");
}
