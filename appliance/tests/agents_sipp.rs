//! The agents' lines against real SIPp peers: a desk phone registers with digest, the
//! agent logs in and the appliance calls the phone (nailed-up leg, SIPp answers); a SIPp
//! caller on a trunk address dials a number the route table sends to the agent's group, is
//! answered, offered to the agent and bridged (connect beep, `run_bridge`); its hang-up
//! puts the agent in wrap-up, the disposition makes the agent ready; the phone hanging up
//! the nailed-up leg logs the agent out. The agent events are in the outbox in order.

mod agents_support;
mod sip_support;

use agents_support::{
    agent_states, call_service, free_even_port, phone_logged_in, rig, wait_for_state, Caller, AGENT,
};
use callgate_appliance::agents::desk::{DeskSettings, PHONE_CONNECTING};
use callgate_appliance::agents::lines::HOLD_TAP;
use callgate_appliance::media::{run_audio_leg, LegAudio};
use callgate_appliance::sip::udp::UdpAgent;
use callgate_common::wire::AgentState;
use callgate_media::g711::Codec;
use callgate_media::sdp::{create_offer, Direction, LocalMedia};
use callgate_media::tone::{tone_presence, ToneGenerator};
use callgate_sip::agent::{AgentConfig, AgentEvent as SipEvent, CallSpec};
use callgate_sip::transaction::TimerConfig;
use callgate_sip::uri::Uri;
use sip_support::{free_udp_port, Sipp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    // The bridge stored the caller's leg and the agent's leg quality with the call.
    let deadline = Instant::now() + Duration::from_secs(60);
    let legs = loop {
        let legs: Vec<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT call_id, leg_index, role, packets_received FROM call_leg_quality \
             ORDER BY leg_index",
        )
        .fetch_all(rig.store.pool())
        .await
        .unwrap();
        if legs.len() >= 2 || Instant::now() > deadline {
            break legs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert!(legs.iter().all(|l| l.0 == call.call), "{legs:?}");
    assert_eq!((legs[0].1, legs[0].2.as_str()), (0, "customer"));
    assert_eq!((legs[1].1, legs[1].2.as_str()), (1, "agent"));
    // SIPp's `uac` caller sends no RTP; the phone does.
    assert!(legs[1].3 > 0, "the phone's RTP was counted: {legs:?}");
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

/// Collects what the caller's leg plays out for `span`.
async fn listen(incoming: &mut mpsc::Receiver<LegAudio>, span: Duration) -> Vec<i16> {
    let mut heard = Vec::new();
    let end = tokio::time::Instant::now() + span;
    while let Ok(Some(a)) = tokio::time::timeout_at(end, incoming.recv()).await {
        if let LegAudio::Frame(f) = a {
            heard.extend(f.samples);
        }
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_caller_hears_hold_music_then_its_voice_crosses_the_bridge_to_the_phone_and_back() {
    let rig = rig(DeskSettings::default()).await;
    let phone = phone_logged_in(&rig, 9_000).await;
    rig.desk.pause(AGENT, "coffee").await.unwrap();

    // The caller is our own user agent and RTP leg, talking a 1 kHz tone.
    let Caller { ua, leg, rtp, .. } = call_service(&rig, "caller", 99, false).await;
    let (out_tx, out_rx) = mpsc::channel(3);
    let voice = tokio::spawn(async move {
        let mut g = ToneGenerator::new(1_000.0, 8_000);
        while out_tx.send(g.next_samples(160)).await.is_ok() {}
    });
    let (in_tx, mut in_rx) = mpsc::channel(1_000);
    let caller_leg = tokio::spawn(run_audio_leg(rtp, out_rx, in_tx));

    // A technician listening in from the headset hears both: the caller (1 kHz) and what
    // the caller hears.
    let headset = tokio::spawn(async {
        let taps = callgate_appliance::call_tap::live();
        let start = Instant::now();
        let call = loop {
            let held = taps.calls().into_iter().find(|c| c.what == HOLD_TAP);
            if let Some(c) = held {
                break c.call;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{:?}",
                taps.calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut frames = taps.listen(call).unwrap();
        let mut heard = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_millis(2_000);
        while let Ok(Some(f)) = tokio::time::timeout_at(end, frames.recv()).await {
            heard.extend(f);
        }
        heard
    });

    // Queued: the position beeps (880 Hz) and the hold tune (392 Hz first), nobody's voice.
    let held = listen(&mut in_rx, Duration::from_millis(2_500)).await;
    let tapped = headset.await.unwrap();
    assert!(
        tone_presence(&tapped, 1_000.0, 400) > 0.5,
        "the queued caller's voice is heard on the headset"
    );
    // Mixed with the caller's tone, the beeps and the tune no longer dominate a window;
    // they still correlate clearly with it where they play.
    let music = tapped
        .chunks_exact(400)
        .filter(|w| {
            callgate_media::tone::tone_correlation(w, 880.0) > 0.3
                || callgate_media::tone::tone_correlation(w, 392.0) > 0.3
        })
        .count();
    assert!(music > 0, "and what the caller hears, too");
    assert_eq!(rig.desk.pacing_counts().inbound_waiting, 1);
    assert!(
        tone_presence(&held, 880.0, 400) > 0.0,
        "position beeps heard"
    );
    assert!(tone_presence(&held, 392.0, 400) > 0.0, "hold tune heard");
    assert!(
        tone_presence(&held, 1_000.0, 400) < 0.02,
        "not bridged while queued"
    );

    // Ready: bridged to the phone, which echoes; the caller hears its own voice back.
    rig.desk.ready(AGENT).await.unwrap();
    wait_for_state(&rig.desk, "talking", Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bridged = listen(&mut in_rx, Duration::from_millis(2_000)).await;
    let presence = tone_presence(&bridged, 1_000.0, 400);
    assert!(
        presence > 0.5,
        "the caller's voice came back through the bridge and the phone in {presence:.2} of windows"
    );

    ua.hang_up(leg).unwrap();
    voice.abort();
    let _ = caller_leg.await;
    wait_for_state(&rig.desk, "wrap_up", Duration::from_secs(5)).await;
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_overflows_after_the_configured_wait_and_the_box_hangs_up() {
    let rig = rig(DeskSettings {
        queue_overflow_after_ms: 1_000,
        ..DeskSettings::default()
    })
    .await;
    let phone = phone_logged_in(&rig, 4_000).await;
    rig.desk.pause(AGENT, "training").await.unwrap();

    let mut ua = UdpAgent::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "caller".into(),
            timers: TimerConfig::default(),
            credentials: None,
            seed: 7,
        },
    )
    .await
    .unwrap();
    let local = LocalMedia {
        address: "127.0.0.1".parse().unwrap(),
        rtp_port: free_even_port(),
        codecs: vec![Codec::Pcmu],
        telephone_event: false,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        session_id: 78,
        session_version: 1,
        srtp: None,
    };
    let box_addr: SocketAddr = rig.box_addr.parse().unwrap();
    let leg = ua
        .place_call(CallSpec::new(
            Uri::parse(&format!("sip:service@{box_addr}")).unwrap(),
            box_addr,
            create_offer(&local).to_string().into_bytes(),
        ))
        .await
        .unwrap();
    let mut answered_at = None;
    let ended_at = loop {
        match tokio::time::timeout(Duration::from_secs(5), ua.next_event())
            .await
            .expect("the box answers, then hangs up")
            .unwrap()
        {
            SipEvent::Answered { leg: l, .. } if l == leg => answered_at = Some(Instant::now()),
            SipEvent::Ended { leg: l, by_peer } if l == leg => {
                assert!(by_peer, "the box hung up, not us");
                break Instant::now();
            }
            SipEvent::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    let waited = ended_at - answered_at.expect("answered first");
    assert!(
        waited >= Duration::from_millis(900),
        "overflowed after {waited:?}, before the configured second"
    );
    assert_eq!(rig.desk.pacing_counts().inbound_waiting, 0);
    assert_eq!(rig.desk.view(AGENT).unwrap().state, "paused");
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
    rig.desk.flushed().await;
    assert!(
        !agent_states(&rig.store)
            .await
            .contains(&AgentState::Reserved),
        "the overflowed call was never offered to the paused agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_before_the_box_restarts_is_called_after_it_without_registering_again() {
    let first = rig(DeskSettings::default()).await;
    // Registers once, then only answers (one call, held 3 s).
    let phone = agents_support::start_phone(&first, 3_000).await;
    let start = Instant::now();
    loop {
        let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM phone_bindings")
            .fetch_one(first.store.pool())
            .await
            .unwrap();
        if kept == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the phone's binding was never kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = first.stop_keeping_data();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The box again, on the same data: logging the agent in calls the phone at once.
    let second = agents_support::rig_in(data, DeskSettings::default()).await;
    assert!(second.desk.log_in(AGENT).await.unwrap());
    wait_for_state(&second.desk, "ready", Duration::from_secs(10)).await;
    let (ok, errors) = phone.passed().await;
    assert!(ok, "the phone was called and answered: {errors}");
}
