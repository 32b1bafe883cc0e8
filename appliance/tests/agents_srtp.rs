//! SRTP on the agents' side, against the agents' lines and a real SIPp desk phone: a caller
//! offering RTP/SAVP with an SDES key is answered with SRTP under the box's own key and its
//! audio crosses the bridge to the agent's phone and back encrypted; with `phone_srtp` the
//! nailed-up leg to a phone is offered SRTP, and a phone answering plain RTP is not used.

mod agents_support;
mod sip_support;

use agents_support::{
    agent_states, call_service, phone_logged_in, rig, rig_with, start_phone, wait_for_state,
    Caller, AGENT,
};
use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::media::{run_audio_leg, LegAudio};
use callgate_common::wire::AgentState;
use callgate_media::tone::{tone_presence, ToneGenerator};
use std::time::Duration;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_offering_srtp_is_answered_with_srtp_and_heard_through_the_bridge() {
    let rig = rig(DeskSettings::default()).await;
    // The desk phone echoes what it hears: the caller hears its own voice come back.
    let phone = phone_logged_in(&rig, 8_000).await;

    let Caller {
        ua,
        leg,
        rtp,
        audio,
        answer,
    } = call_service(&rig, "+442071234567", 43, true).await;
    assert!(
        answer.contains("RTP/SAVP") && answer.contains("a=crypto:"),
        "the answer is SRTP with the box's key: {answer}"
    );
    let keys = audio.srtp.clone().expect("SRTP keys negotiated");
    assert!(
        keys.ours != keys.theirs,
        "the box answers under a key of its own"
    );
    let (out_tx, out_rx) = mpsc::channel(3);
    let voice = tokio::spawn(async move {
        let mut g = ToneGenerator::new(1_000.0, 8_000);
        while out_tx.send(g.next_samples(160)).await.is_ok() {}
    });
    let (in_tx, mut in_rx) = mpsc::channel(1_000);
    let caller_leg = tokio::spawn(run_audio_leg(rtp, out_rx, in_tx));
    wait_for_state(&rig.desk, "talking", Duration::from_secs(10)).await;

    // The caller's tone went to the phone (decrypted by the box) and its echo came back
    // (encrypted by the box): only packets that pass SRTP authentication play out.
    let mut heard = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(a)) = tokio::time::timeout_at(end, in_rx.recv()).await {
        if let LegAudio::Frame(f) = a {
            heard.extend(f.samples);
        }
    }
    let presence = tone_presence(&heard, 1_000.0, 400);
    assert!(
        presence > 0.5,
        "the caller hears its voice back through the bridge in {presence:.2} of windows"
    );
    ua.hang_up(leg).unwrap();
    voice.abort();
    let report = caller_leg.await.unwrap().unwrap();
    assert!(
        report.receive.received > 50 && report.unauthenticated == 0,
        "authenticated SRTP reached the caller: {report:?}"
    );
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_phone_srtp_a_phone_answering_plain_rtp_is_not_used() {
    let rig = rig_with(DeskSettings::default(), true).await;
    // SIPp's desk phone answers with plain RTP/AVP.
    let _phone = start_phone(&rig, 2_000).await;
    assert!(rig.desk.log_in(AGENT).await.unwrap());
    wait_for_state(&rig.desk, "logged_out", Duration::from_secs(15)).await;
    // The desk's journal reaches the outbox a moment after the state changes.
    let written = tokio::time::Instant::now() + Duration::from_secs(10);
    let states = loop {
        let states = agent_states(&rig.store).await;
        if states.last() == Some(&AgentState::LoggedOut) || tokio::time::Instant::now() > written {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !states.contains(&AgentState::Ready),
        "a plain-RTP phone never made the agent ready: {states:?}"
    );
    assert_eq!(states.last(), Some(&AgentState::LoggedOut), "{states:?}");
}
