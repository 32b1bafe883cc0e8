//! Listening in on an agent's call (the tech port's headset's source, `call_tap`), against
//! the agents' lines and a real SIPp desk phone: an inbound caller talking a 1 kHz tone is
//! bridged to the agent (whose phone echoes); the call is offered for listening by the
//! caller's masked number; a listener hears the call; dropping the listener leaves the
//! bridge relaying; the caller hanging up ends a second listener's stream and the call is
//! no longer offered.

mod agents_support;
mod sip_support;

use agents_support::{call_service, phone_logged_in, rig, wait_for_state, Caller};
use callgate_appliance::agents::desk::DeskSettings;
use callgate_appliance::call_tap;
use callgate_appliance::media::{run_audio_leg, LegAudio};
use callgate_media::tone::{tone_presence, ToneGenerator};
use std::time::Duration;
use tokio::sync::mpsc;

/// What `frames` gives within `span`, and whether it closed meanwhile.
async fn collect(frames: &mut mpsc::Receiver<Vec<i16>>, span: Duration) -> (Vec<i16>, bool) {
    let mut heard = Vec::new();
    let end = tokio::time::Instant::now() + span;
    loop {
        match tokio::time::timeout_at(end, frames.recv()).await {
            Ok(Some(f)) => heard.extend(f),
            Ok(None) => return (heard, true),
            Err(_) => return (heard, false),
        }
    }
}

/// What the caller's leg plays out for `span`.
async fn caller_hears(incoming: &mut mpsc::Receiver<LegAudio>, span: Duration) -> Vec<i16> {
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
async fn an_agents_bridged_call_can_be_listened_to_without_touching_it_until_it_ends() {
    let rig = rig(DeskSettings::default()).await;
    let phone = phone_logged_in(&rig, 12_000).await;

    // The caller: our own user agent (a number as its user) and RTP leg, talking 1 kHz.
    let Caller { ua, leg, rtp, .. } = call_service(&rig, "+442071234567", 41, false).await;
    let (out_tx, out_rx) = mpsc::channel(3);
    let voice = tokio::spawn(async move {
        let mut g = ToneGenerator::new(1_000.0, 8_000);
        while out_tx.send(g.next_samples(160)).await.is_ok() {}
    });
    let (in_tx, mut in_rx) = mpsc::channel(1_000);
    let caller_leg = tokio::spawn(run_audio_leg(rtp, out_rx, in_tx));
    wait_for_state(&rig.desk, "talking", Duration::from_secs(10)).await;

    // Offered for listening: the bridge, named by the caller's masked number.
    let taps = call_tap::live();
    let listed = taps.calls();
    let ours = listed
        .iter()
        .find(|c| c.what == "inbound call bridged to an agent")
        .unwrap_or_else(|| panic!("the bridged call is offered: {listed:?}"));
    let number = ours.number.clone().expect("the caller's number");
    assert!(number.starts_with("+44"), "{number}");
    assert!(!number.contains("1234567"), "masked: {number}");
    let call = ours.call;

    // A listener hears the call: the caller's 1 kHz (and the phone's echo of it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut listener = taps.listen(call).unwrap();
    let (heard, closed) = collect(&mut listener, Duration::from_millis(1_500)).await;
    assert!(!closed);
    assert!(heard.len() >= 160 * 50, "{} samples", heard.len());
    let presence = tone_presence(&heard, 1_000.0, 400);
    assert!(
        presence > 0.5,
        "the call is heard in {presence:.2} of windows"
    );

    // Listening stops; the bridge goes on: the caller still hears its voice come back.
    drop(listener);
    let _ = caller_hears(&mut in_rx, Duration::from_millis(300)).await;
    let after = caller_hears(&mut in_rx, Duration::from_millis(1_500)).await;
    let presence = tone_presence(&after, 1_000.0, 400);
    assert!(
        presence > 0.5,
        "the bridge still relays after listening stopped: {presence:.2}"
    );
    assert_eq!(
        rig.desk.view(agents_support::AGENT).unwrap().state,
        "talking"
    );

    // Listening again; the caller hangs up: the stream ends and the call is not offered.
    let mut listener = taps.listen(call).unwrap();
    let (heard, closed) = collect(&mut listener, Duration::from_millis(500)).await;
    assert!(!closed && !heard.is_empty());
    ua.hang_up(leg).unwrap();
    let (_, closed) = collect(&mut listener, Duration::from_secs(30)).await;
    assert!(closed, "the call's end ends the listening");
    // The bridge task lets go of its tap point as its media ends.
    let gone = tokio::time::Instant::now() + Duration::from_secs(5);
    while taps.calls().iter().any(|c| c.call == call) {
        assert!(
            tokio::time::Instant::now() < gone,
            "the ended call is still offered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        taps.listen(call),
        Err(call_tap::TapError::NotInProgress(_))
    ));
    voice.abort();
    let _ = caller_leg.await;
    wait_for_state(&rig.desk, "wrap_up", Duration::from_secs(5)).await;
    let (ok, errors) = phone.passed().await;
    assert!(ok, "{errors}");
}
