//! The recording-consent announcement, against a real carrier (SIPp echoing the RTP it gets)
//! and real `age`: a campaign that asks for it has every answered call hear the consent prompt
//! (a 1 kHz tone here) before the announcement (440 Hz), and the decrypted recording starts
//! after the consent prompt — the prompt itself is not in it, on either channel. The same
//! holds for a robot-script call (SIPp playing the customer, the real espeak-ng). A call
//! bridged to an agent through the agents' lines (a SIPp desk phone echoing RTP) hears the
//! consent prompt before anything from the agent's side.

mod agents_support;
mod dialer_support;
mod robot_support;
mod sip_support;

use callgate_appliance::recording::RecordingSettings;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, Downlink, Uplink};
use callgate_media::tone::{tone_presence, ToneGenerator};
use dialer_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CONSENT_HZ: f64 = 1_000.0;
const CONSENT_MS: i64 = 1_200;
const ANNOUNCEMENT_HZ: f64 = 440.0;

fn age_identity(dir: &Path) -> (PathBuf, String) {
    let id = dir.join("identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen must be installed (scripts/setup installs package `age`)");
    assert!(out.status.success(), "age-keygen failed: {out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&id)
        .output()
        .unwrap();
    (id, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A mono 16-bit PCM WAV of a 1 kHz tone lasting `CONSENT_MS`.
fn consent_wav(path: &Path) {
    let samples = ToneGenerator::new(CONSENT_HZ, 8_000).next_samples(CONSENT_MS as usize * 8);
    let mut wav = callgate_media::wav::pcm16_header(1, samples.len() as u32).to_vec();
    wav.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    std::fs::write(path, wav).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_hear_the_consent_prompt_first_and_the_recording_starts_after_it() {
    let carrier = Carrier::start_with("carrier_agents.xml");
    let mut rig = Rig::new().await;
    let (identity, recipient) = age_identity(rig.dir.path());
    let recordings = rig.dir.path().join("recordings");
    let consent = rig.dir.path().join("consent.wav");
    consent_wav(&consent);
    rig.recording = Some(
        RecordingSettings {
            recipients: vec![recipient],
            directory: Some(recordings.clone()),
            consent_prompt: Some(consent),
            ..RecordingSettings::default()
        }
        .validate(rig.dir.path())
        .unwrap(),
    );
    let hour = UnixMillis::now().plus_millis(3_600_000);
    let Downlink::Campaign(mut brief) = agentless_brief(all_day()) else {
        unreachable!()
    };
    brief.recording_consent_announcement = true;
    rig.feed(Downlink::Campaign(brief)).await;
    rig.feed(lease(1, 0..8, hour, |_| false)).await;
    rig.feed(grant(8, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_secs(3)).await;
    rig.settled(Duration::from_secs(90)).await;

    let answered: Vec<_> = rig
        .uplinks()
        .await
        .into_iter()
        .filter_map(|u| match u {
            Uplink::CallRecord(r) if r.outcome == CallOutcome::AnsweredHuman => Some(r),
            _ => None,
        })
        .collect();
    assert!(!answered.is_empty(), "the carrier answered some calls");
    for r in &answered {
        // The customer talks 3.5 s or more: every call plays the consent prompt (1.2 s) and
        // then the whole announcement (0.8 s) before the box hangs up.
        let lasted = r.ended_at.0 - r.answered_at.unwrap().0;
        assert!(
            lasted >= CONSENT_MS + 700,
            "call {} lasted {lasted} ms: consent and announcement not both played",
            r.call
        );
        assert!(r.recording_segments >= 1, "call {} not recorded", r.call);
        let (file,): (String,) = sqlx::query_as(
            "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
        )
        .bind(r.call.to_string())
        .fetch_one(rig.store.pool())
        .await
        .unwrap();
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(recordings.join(&file))
            .output()
            .expect("age must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wav = callgate_media::wav::read(&out.stdout).unwrap();
        let (left, right) = (wav.channel(0), wav.channel(1));
        // Our side: the announcement from its start, never the consent prompt.
        let announced = tone_presence(&right, ANNOUNCEMENT_HZ, 160);
        assert!(
            announced > 0.5,
            "call {}: announcement in {announced:.2} of the recording",
            r.call
        );
        let first = &right[..right.len().min(800)];
        assert!(
            tone_presence(first, ANNOUNCEMENT_HZ, 160) > 0.5,
            "call {}: the recording does not open with the announcement",
            r.call
        );
        assert_eq!(
            tone_presence(&right, CONSENT_HZ, 160),
            0.0,
            "call {}: the consent prompt is in the recording",
            r.call
        );
        // The customer's side echoes what it heard: at most the echo of the prompt's last
        // packets (in flight when it ended) can reach the recording, never the prompt.
        let echoed_consent = tone_presence(&left, CONSENT_HZ, 160) * left.len() as f64 / 8.0;
        assert!(
            echoed_consent <= 200.0,
            "call {}: {echoed_consent:.0} ms of the consent prompt on the customer channel",
            r.call
        );
    }
    rig.dialer.take().unwrap().stop().await;
}

const GREETING: &str = r#"
format = 1
name = "greeting"
version = 1
start = "greet"

[steps.greet]
kind = "say"
text = "Hello, this is a test call. Goodbye."
next = "done"

[steps.done]
kind = "hangup"
disposition = "greeted"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_call_plays_the_consent_prompt_before_its_script_and_records_only_after_it() {
    use callgate_appliance::dialer::placement::Announcement;
    use callgate_appliance::robot_call::{RobotPlacement, SpeechCache};
    use callgate_media::prompt::Prompt;
    use robot_support::*;

    let pcap = callee_pcap(&line_noise(12_000), &[], KeyStyle::Rfc4733);
    let callee = Callee::start("robot_callee.xml", &pcap);
    let mut rig = Rig::new().await;
    let (identity, recipient) = age_identity(rig.dir.path());
    let recordings = rig.dir.path().join("recordings");
    let consent = rig.dir.path().join("consent.wav");
    consent_wav(&consent);
    rig.recording = Some(
        RecordingSettings {
            recipients: vec![recipient],
            directory: Some(recordings.clone()),
            consent_prompt: Some(consent),
            ..RecordingSettings::default()
        }
        .validate(rig.dir.path())
        .unwrap(),
    );
    let placement = RobotPlacement::new(
        std::sync::Arc::new(SpeechCache::new(
            std::sync::Arc::new(callgate_robot::EspeakNg::default()),
            64,
        )),
        rig.dir.path(),
        Announcement::new(
            Prompt::tones(&[(ANNOUNCEMENT_HZ, 600, 100)], 8_000),
            CallOutcome::AnsweredHuman,
        ),
    );
    let mut brief = robot_brief(Some(GREETING));
    if let Downlink::Campaign(b) = &mut brief {
        b.recording_consent_announcement = true;
    }
    placement.set_campaign(brief_of(&brief)).unwrap();
    let record = one_call(
        &mut rig,
        &callee,
        std::sync::Arc::new(placement),
        brief,
        one_contact(1, &[]),
    )
    .await;
    assert_eq!(
        record.outcome,
        CallOutcome::AnsweredHuman,
        "{}",
        callee.errors()
    );
    assert_eq!(record.disposition.as_deref(), Some("greeted"));
    let lasted = record.ended_at.0 - record.answered_at.unwrap().0;
    assert!(
        lasted >= CONSENT_MS + 1_000,
        "the call lasted {lasted} ms: consent and greeting not both played"
    );
    assert!(record.recording_segments >= 1);
    let (file,): (String,) = sqlx::query_as(
        "SELECT file_name FROM recording_segments WHERE call_id = $1 ORDER BY segment_index",
    )
    .bind(record.call.to_string())
    .fetch_one(rig.store.pool())
    .await
    .unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(recordings.join(&file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wav = callgate_media::wav::read(&out.stdout).unwrap();
    let right = wav.channel(1);
    let robot_ms = right.len() as i64 / 8;
    assert!(
        robot_ms < lasted - CONSENT_MS + 500,
        "the recording ({robot_ms} ms) covers the consent prompt too (call {lasted} ms)"
    );
    assert_eq!(
        tone_presence(&right, CONSENT_HZ, 160),
        0.0,
        "the consent prompt is in the recording"
    );
    let spoke = right.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / right.len() as f64;
    assert!(
        spoke.sqrt() > 300.0,
        "the robot's greeting is recorded: RMS {}",
        spoke.sqrt()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_bridged_to_an_agent_hears_the_consent_prompt_before_the_agents_side() {
    use callgate_appliance::media::{run_audio_leg, BridgeCommand, LegAudio, RtpLeg, RtpPortRange};
    use callgate_common::ids::CallId;
    use callgate_media::g711::Codec;
    use callgate_media::sdp::{Direction, NegotiatedAudio};
    use tokio::sync::mpsc;

    let rig = agents_support::rig(Default::default()).await;
    let _phone = agents_support::phone_logged_in(&rig, 10_000).await;
    agents_support::wait_for_state(&rig.desk, "ready", Duration::from_secs(30)).await;
    let negotiated = |remote| NegotiatedAudio {
        remote: Some(remote),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    };
    let base = agents_support::free_even_port();
    let range = RtpPortRange::new(base, base + 10).unwrap();
    let ip = "127.0.0.1".parse().unwrap();
    let (box_side, customer_side) = (
        range.bind_pair(ip).await.unwrap(),
        range.bind_pair(ip).await.unwrap(),
    );
    let (b, c) = (
        box_side.0.local_addr().unwrap(),
        customer_side.0.local_addr().unwrap(),
    );
    // The customer says 440 Hz for 3 s; the desk phone echoes what reaches it.
    let (say, said) = mpsc::channel(150);
    let mut voice = ToneGenerator::new(ANNOUNCEMENT_HZ, 8_000);
    for _ in 0..150 {
        say.try_send(voice.next_samples(160)).unwrap();
    }
    drop(say);
    let (heard_tx, mut heard_rx) = mpsc::channel(1_000);
    let customer = tokio::spawn(run_audio_leg(
        RtpLeg::new(customer_side, &negotiated(b)).unwrap(),
        said,
        heard_tx,
    ));
    let consent = callgate_media::prompt::Prompt::tones(&[(CONSENT_HZ, 1_000, 0)], 8_000);
    let bridge = rig
        .lines
        .as_ref()
        .unwrap()
        .bridge_outbound(
            CallId::new_v7(),
            agents_support::AGENT,
            RtpLeg::new(box_side, &negotiated(c)).unwrap(),
            None,
            Some(std::sync::Arc::new(consent)),
        )
        .await
        .map_err(|e| e.reason.clone())
        .unwrap();
    let mut heard = Vec::new();
    while let Some(a) = heard_rx.recv().await {
        if let LegAudio::Frame(f) = a {
            heard.extend(f.samples);
        }
    }
    customer.await.unwrap().unwrap();
    bridge.commands.send(BridgeCommand::Hangup).await.unwrap();
    let report = bridge.report.await.unwrap().unwrap();
    assert_eq!(report.consent_frames, 50, "the whole 1 s prompt was played");
    let windows = |hz: f64| -> Vec<usize> {
        heard
            .chunks_exact(400)
            .enumerate()
            .filter(|(_, w)| callgate_media::tone::tone_correlation(w, hz) > 0.9)
            .map(|(i, _)| i)
            .collect()
    };
    let (prompt, agent_side) = (windows(CONSENT_HZ), windows(ANNOUNCEMENT_HZ));
    assert!(
        prompt.len() >= 16,
        "consent prompt heard in windows {prompt:?}"
    );
    assert!(
        agent_side.len() >= 10,
        "the agent side (the phone's echo) heard in windows {agent_side:?}"
    );
    assert!(
        prompt.last() < agent_side.first(),
        "consent {prompt:?} before the agent side {agent_side:?}"
    );
}
