//! Registration to a real SIPp registrar through the tokio driver: the digest challenge
//! is answered, the binding is refreshed before it expires with the nonce reused, and
//! SIPp's `verifyauth` checks both REGISTERs.

use callgate_appliance::sip::udp::UdpAgent;
use callgate_sip::agent::{AgentConfig, AgentEvent, RegistrationSpec};
use callgate_sip::digest::DigestCredentials;
use callgate_sip::transaction::TimerConfig;
use callgate_sip::uri::Uri;
use std::time::Duration;

mod sip_support;
use sip_support::{scenario, Sipp};

async fn registered_events(ua: &mut UdpAgent, n: usize) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), ua.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event in time; so far {seen:?}"))
            .unwrap();
        if matches!(
            e,
            AgentEvent::Registered { .. } | AgentEvent::RegistrationFailed { .. }
        ) {
            seen.push(e);
        }
    }
    seen
}

async fn register(password: &str) -> (Vec<AgentEvent>, bool, String) {
    let sipp = Sipp::start(&["-sf", &scenario("registrar_auth.xml")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "trunk7".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: std::process::id().into(),
        },
    )
    .await
    .unwrap();
    ua.register(RegistrationSpec {
        registrar: Uri::parse(&format!("sip:{}", sipp.addr)).unwrap(),
        dest: sipp.addr,
        aor: Uri::parse("sip:trunk7@carrier.test").unwrap(),
        expires: 3600,
        credentials: Some(DigestCredentials {
            username: "trunk7".into(),
            password: password.into(),
            realm: None,
        }),
    })
    .await
    .unwrap();
    let wanted = if password == "pw7" { 2 } else { 1 };
    let events = registered_events(&mut ua, wanted).await;
    let (ok, errors) = sipp.passed().await;
    (events, ok, errors)
}

#[tokio::test]
async fn registration_with_digest_is_accepted_and_refreshed_before_expiry() {
    let (events, ok, errors) = register("pw7").await;
    assert!(
        events
            .iter()
            .all(|e| matches!(e, AgentEvent::Registered { expires: 2, .. })),
        "{events:?}"
    );
    assert!(ok, "SIPp verified both REGISTERs: {errors}");
}

#[tokio::test]
async fn registration_with_a_wrong_password_is_refused() {
    let (events, ok, errors) = register("nope").await;
    assert!(
        matches!(
            events[0],
            AgentEvent::RegistrationFailed { status: 403, .. }
        ),
        "{events:?}"
    );
    assert!(ok, "{errors}");
}
