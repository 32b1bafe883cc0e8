//! The appliance as a B2BUA between two real SIPps: a carrier (SIPp UAC) calls in from a
//! trunk address, the route table sends the call out on a trunk to a SIPp UAS; ringing,
//! answer, ACK and the caller's BYE cross the bridge, and both SIPps pass their scenarios.

use callgate_appliance::sip::udp::UdpTrunkRouter;
use callgate_sip::agent::AgentConfig;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::transaction::TimerConfig;
use callgate_sip::trunk::router::{DialEvent, RouterConfig};
use callgate_sip::trunk::{Trunk, TrunkGroup};
use std::time::Duration;

mod sip_support;
use sip_support::{free_udp_port, Sipp};

#[tokio::test]
async fn a_carrier_call_routed_to_a_trunk_is_bridged_end_to_end() {
    let callee = Sipp::start(&["-sn", "uas"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut router = UdpTrunkRouter::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "branch".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: std::process::id().into(),
        },
        TrunkGroup::new(vec![Trunk {
            name: "out".into(),
            address: callee.addr,
            domain: "127.0.0.1".into(),
            credentials: None,
            max_channels: 10,
            max_cps: 10,
            priority: 1,
            weight: 1,
        }]),
        RouterConfig {
            probe: None,
            ..RouterConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    router
        .set_inbound_policy(InboundPolicy {
            allowed_sources: vec!["127.0.0.1".parse().unwrap()],
            trunk_names: Vec::new(),
            unknown_source: UnknownSource::Reject,
            per_source_rate: 50,
            per_source_burst: 50,
            routes: vec![InboundRoute {
                number: "*".into(),
                target: RouteTarget::Trunk("out".into()),
            }],
        })
        .unwrap();
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", &router.local_addr().to_string()],
        &["-m", "1"],
    );
    let (caller_ok, caller_errors) = caller.passed().await;
    assert!(
        caller_ok,
        "the caller's INVITE/200/ACK/BYE/200 went through: {caller_errors}"
    );
    let (callee_ok, callee_errors) = callee.passed().await;
    assert!(
        callee_ok,
        "the callee got INVITE, ACK and the relayed BYE: {callee_errors}"
    );
    let mut seen = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(200), router.next_event()).await
    {
        seen.push(e);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, DialEvent::Answered { trunk, .. } if trunk == "out")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, DialEvent::Ended { .. })),
        "{seen:?}"
    );
}
