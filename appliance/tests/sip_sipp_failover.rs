//! Failover and probing against real SIPp carriers through the tokio driver: the first
//! trunk answers 503, or is not running at all, and the call completes on the second;
//! probing marks a stopped trunk down within its thresholds and up again when it returns.

use callgate_appliance::sip::udp::UdpTrunkRouter;
use callgate_sip::agent::AgentConfig;
use callgate_sip::transaction::TimerConfig;
use callgate_sip::trunk::router::{DialEvent, RouterConfig};
use callgate_sip::trunk::{HealthChange, ProbePolicy, Trunk, TrunkGroup};
use std::net::SocketAddr;
use std::time::Duration;

mod sip_support;
use sip_support::{free_udp_port, scenario, Sipp};

fn trunk(name: &str, address: SocketAddr, priority: u32) -> Trunk {
    Trunk {
        name: name.into(),
        address,
        domain: address.ip().to_string(),
        credentials: None,
        max_channels: 10,
        max_cps: 10,
        priority,
        weight: 1,
    }
}

fn fast_timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
    }
}

async fn router(trunks: Vec<Trunk>, cfg: RouterConfig) -> UdpTrunkRouter {
    UdpTrunkRouter::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "dialer".into(),
            timers: fast_timers(),
            credentials: None,
            seed: std::process::id().into(),
        },
        TrunkGroup::new(trunks),
        cfg,
        false,
    )
    .await
    .unwrap()
}

/// Scenario-driven SIPp treats an OPTIONS as a call of its own (and `-m 1` would end on
/// it), so the failover tests do without probes.
fn quiet_probes() -> RouterConfig {
    RouterConfig {
        probe: None,
        answer_wait: Duration::from_secs(1),
        ..RouterConfig::default()
    }
}

async fn next_dial_event(r: &mut UdpTrunkRouter) -> DialEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(15), r.next_event())
            .await
            .expect("an event in time")
            .expect("driver running");
        if !matches!(
            e,
            DialEvent::Progress { .. } | DialEvent::TrunkHealth { .. }
        ) {
            return e;
        }
    }
}

const OFFER: &[u8] = b"v=0\r\no=callgate 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

#[tokio::test]
async fn invite_fails_over_to_second_trunk_on_503() {
    let first = Sipp::start(&["-sf", &scenario("uas_unavailable.xml")]);
    let second = Sipp::start(&["-sn", "uas"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut r = router(
        vec![
            trunk("primary", first.addr, 1),
            trunk("backup", second.addr, 2),
        ],
        quiet_probes(),
    )
    .await;
    let attempt = r.dial("4930555", OFFER.to_vec(), None).await.unwrap();
    match next_dial_event(&mut r).await {
        DialEvent::Answered {
            attempt: a, trunk, ..
        } => {
            assert_eq!(a, attempt);
            assert_eq!(trunk, "backup");
        }
        other => panic!("the dialer must see an answer, not {other:?}"),
    }
    r.hang_up(attempt).unwrap();
    assert!(matches!(
        next_dial_event(&mut r).await,
        DialEvent::Ended { .. }
    ));
    let trunks = r.trunks().await.unwrap();
    assert_eq!(
        (trunks[0].figures.attempts, trunks[0].figures.answered),
        (1, 0)
    );
    assert_eq!(
        (trunks[1].figures.attempts, trunks[1].figures.answered),
        (1, 1)
    );
    assert!(
        trunks[1].figures.mean_pdd().is_some(),
        "PDD measured on the answering trunk"
    );
    let (ok1, e1) = first.passed().await;
    assert!(ok1, "the 503 was ACKed: {e1}");
    let (ok2, e2) = second.passed().await;
    assert!(ok2, "the call completed with ACK and BYE: {e2}");
}

#[tokio::test]
async fn a_stopped_trunk_is_skipped_and_the_call_completes_on_the_second() {
    let dead: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let second = Sipp::start(&["-sn", "uas"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut r = router(
        vec![trunk("primary", dead, 1), trunk("backup", second.addr, 2)],
        quiet_probes(),
    )
    .await;
    let attempt = r.dial("4930555", OFFER.to_vec(), None).await.unwrap();
    let started = std::time::Instant::now();
    match next_dial_event(&mut r).await {
        DialEvent::Answered { trunk, .. } => assert_eq!(trunk, "backup"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "after the answer wait"
    );
    r.hang_up(attempt).unwrap();
    assert!(matches!(
        next_dial_event(&mut r).await,
        DialEvent::Ended { .. }
    ));
    let (ok, e) = second.passed().await;
    assert!(ok, "{e}");
}

#[tokio::test]
async fn probing_marks_a_stopped_trunk_down_and_up_again_when_it_returns() {
    let port = free_udp_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = RouterConfig {
        probe: Some(ProbePolicy {
            interval: Duration::from_millis(500),
            failures_to_down: 2,
            successes_to_up: 2,
        }),
        ..RouterConfig::default()
    };
    let mut r = router(vec![trunk("primary", address, 1)], cfg).await;
    let health = |e: DialEvent| match e {
        DialEvent::TrunkHealth { trunk, change } => Some((trunk, change)),
        _ => None,
    };
    // Probes time out after 64*T1 = 3.2 s each; the second failure marks it down.
    let down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(h) = health(r.next_event().await.unwrap()) {
                return h;
            }
        }
    })
    .await
    .expect("marked down in time");
    assert_eq!(down, ("primary".to_owned(), HealthChange::WentDown));
    assert!(!r.trunks().await.unwrap()[0].health.is_up());
    // The carrier returns (SIPp answers OPTIONS with -aa).
    let _carrier = Sipp::start_on(port, &["-sn", "uas"], &["-aa"]);
    let up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(h) = health(r.next_event().await.unwrap()) {
                return h;
            }
        }
    })
    .await
    .expect("marked up in time");
    assert_eq!(up, ("primary".to_owned(), HealthChange::CameUp));
}
