//! The agents' lines against real SIPp peers: a desk phone registers with digest, the
//! agent logs in and the appliance calls the phone (nailed-up leg, SIPp answers); a SIPp
//! caller on a trunk address dials a number the route table sends to the agent's group, is
//! answered, offered to the agent and bridged (connect beep, `run_bridge`); its hang-up
//! puts the agent in wrap-up, the disposition makes the agent ready; the phone hanging up
//! the nailed-up leg logs the agent out. The agent events are in the outbox in order.

mod agents_support;
mod sip_support;

use agents_support::{agent_states, phone_logged_in, rig, wait_for_state, AGENT};
use callgate_appliance::agents::desk::{DeskSettings, PHONE_CONNECTING};
use callgate_common::wire::AgentState;
use sip_support::{free_udp_port, Sipp};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_answers_the_nailed_up_leg_and_an_inbound_caller_is_bridged_to_the_agent() {
    let rig = rig(DeskSettings {
        inbound_wrap_up_ms: 60_000,
        ..DeskSettings::default()
    })
    .await;
    let (desk, box_addr) = (&rig.desk, &rig.box_addr);
    let phone = phone_logged_in(&rig, 7000).await;

    // A caller on a trunk address dials the support number and holds for 1.5 s.
    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", box_addr],
        &["-m", "1", "-d", "1500"],
    );
    wait_for_state(desk, "talking", Duration::from_secs(5)).await;
    let view = desk.view(AGENT).unwrap();
    let call = view.call.expect("the talking agent has the call");
    assert!(call.inbound);
    assert_eq!(call.pop.source, "support");
    assert_eq!(
        call.pop.fields,
        vec![("called number".to_string(), "service".to_string())]
    );
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "the caller's call was answered and ended cleanly: {errors}"
    );
    wait_for_state(desk, "wrap_up", Duration::from_secs(5)).await;
    desk.dispose(AGENT, "resolved").await.unwrap();
    wait_for_state(desk, "ready", Duration::from_secs(1)).await;

    // The phone hangs up the nailed-up leg: the agent is logged out.
    let (ok, errors) = phone.passed().await;
    assert!(
        ok,
        "the phone answered, kept the leg up and hung up: {errors}"
    );
    wait_for_state(desk, "logged_out", Duration::from_secs(5)).await;

    desk.flushed().await;
    assert_eq!(
        agent_states(&rig.store).await,
        vec![
            AgentState::Paused {
                reason: PHONE_CONNECTING.into()
            },
            AgentState::Ready,
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp,
            AgentState::Ready,
            AgentState::LoggedOut,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waits_on_hold_while_the_agent_is_paused_and_is_bridged_when_the_agent_is_ready() {
    let rig = rig(DeskSettings::default()).await;
    let (desk, box_addr) = (&rig.desk, &rig.box_addr);
    let phone = phone_logged_in(&rig, 6000).await;
    desk.pause(AGENT, "coffee").await.unwrap();

    let caller = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uac", box_addr],
        &["-m", "1", "-d", "2500"],
    );
    let start = Instant::now();
    while desk.pacing_counts().inbound_waiting == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the caller never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(desk.pacing_counts().ready, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        desk.view(AGENT).unwrap().state,
        "paused",
        "queued, not offered"
    );

    desk.ready(AGENT).await.unwrap();
    wait_for_state(desk, "talking", Duration::from_secs(3)).await;
    assert_eq!(desk.pacing_counts().inbound_waiting, 0);
    assert_eq!(desk.pacing_counts().talking_inbound, 1);
    let (ok, errors) = caller.passed().await;
    assert!(
        ok,
        "the held caller was answered and ended cleanly: {errors}"
    );
    wait_for_state(desk, "wrap_up", Duration::from_secs(5)).await;
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
    wait_for_state(desk, "logged_out", Duration::from_secs(5)).await;
}
