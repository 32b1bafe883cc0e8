//! A bridged, recorded call over real UDP sockets: the customer talks to a robot, then the
//! robot's leg is replaced by an agent's. The customer hears one continuous stream (one SSRC,
//! no sequence gaps or restarts) that changes from the robot's tone to the agent's, the agent
//! side hears the customer, and the recording decrypts with `age` with the customer on the
//! left and the robot-then-agent on the right.

use callgate_appliance::media::{
    run_audio_leg, run_bridge, BridgeCommand, LegAudio, RtpLeg, RtpPortRange,
};
use callgate_appliance::recording::{CallRecorder, RecordingSettings, SqliteSegmentStore};
use callgate_appliance::store::Store;
use callgate_common::ids::CallId;
use callgate_media::g711::Codec;
use callgate_media::sdp::{Direction, NegotiatedAudio};
use callgate_media::tone::{tone_presence, ToneGenerator};
use callgate_media::wav;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::sync::mpsc;

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn negotiated(codec: Codec, remote: Option<SocketAddr>) -> NegotiatedAudio {
    NegotiatedAudio {
        remote,
        codec,
        payload_type: codec.static_payload_type(),
        telephone_event_pt: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

fn tone_source(hz: f64, frames: usize) -> mpsc::Receiver<Vec<i16>> {
    let (tx, rx) = mpsc::channel(frames);
    let mut g = ToneGenerator::new(hz, 8_000);
    for _ in 0..frames {
        tx.try_send(g.next_samples(160)).unwrap();
    }
    rx
}

async fn collect(mut rx: mpsc::Receiver<LegAudio>) -> Vec<i16> {
    let mut out = Vec::new();
    while let Some(a) = rx.recv().await {
        if let LegAudio::Frame(f) = a {
            out.extend(f.samples);
        }
    }
    out
}

/// Indices of the 50 ms windows of `signal` that carry a tone of `hz`.
fn tone_windows(signal: &[i16], hz: f64) -> Vec<usize> {
    signal
        .chunks_exact(400)
        .enumerate()
        .filter(|(_, w)| callgate_media::tone::tone_correlation(w, hz) > 0.9)
        .map(|(i, _)| i)
        .collect()
}

fn age_identity(dir: &Path) -> (std::path::PathBuf, String) {
    let id = dir.join("identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen must be installed (scripts/setup installs package `age`)");
    assert!(out.status.success());
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&id)
        .output()
        .unwrap();
    (id, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_then_agent_is_one_stream_to_the_customer_and_both_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_identity(dir.path());
    let settings = RecordingSettings {
        recipients: vec![recipient],
        ..RecordingSettings::default()
    }
    .validate(dir.path())
    .unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let call = CallId::new_v7();
    let recorder = CallRecorder::start_with_segment_frames(
        call,
        &settings,
        8_000,
        SqliteSegmentStore::new(store.pool().clone()),
    )
    .unwrap();

    let base = loop {
        let p = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p % 2 == 0 && p < 64_000 {
            break p;
        }
    };
    let range = RtpPortRange::new(base, base + 40).unwrap();
    // Appliance side: the customer leg (PCMU, the carrier) and agent-side legs (PCMA phones).
    let box_customer = range.bind_pair(loopback()).await.unwrap();
    let box_robot = range.bind_pair(loopback()).await.unwrap();
    let box_agent = range.bind_pair(loopback()).await.unwrap();
    // The far ends.
    let customer_phone = range.bind_pair(loopback()).await.unwrap();
    let robot_phone = range.bind_pair(loopback()).await.unwrap();
    let agent_phone = range.bind_pair(loopback()).await.unwrap();
    let addr = |s: &(tokio::net::UdpSocket, tokio::net::UdpSocket)| s.0.local_addr().unwrap();
    let (bc, br, ba) = (addr(&box_customer), addr(&box_robot), addr(&box_agent));
    let (cp, rp, ap) = (
        addr(&customer_phone),
        addr(&robot_phone),
        addr(&agent_phone),
    );

    let customer = RtpLeg::new(customer_phone, &negotiated(Codec::Pcmu, Some(bc))).unwrap();
    let robot = RtpLeg::new(robot_phone, &negotiated(Codec::Pcma, Some(br))).unwrap();
    let agent = RtpLeg::new(agent_phone, &negotiated(Codec::Pcma, Some(ba))).unwrap();
    let (c_tx, c_rx) = mpsc::channel(1_000);
    let (r_tx, r_rx) = mpsc::channel(1_000);
    let (a_tx, a_rx) = mpsc::channel(1_000);
    // Customer speaks 440 Hz for 3 s; the robot 1 kHz for 1.2 s; the agent 1.6 kHz for 1.8 s.
    let customer_task = tokio::spawn(run_audio_leg(customer, tone_source(440.0, 150), c_tx));
    let robot_task = tokio::spawn(run_audio_leg(robot, tone_source(1_000.0, 60), r_tx));

    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let bridge = tokio::spawn(run_bridge(
        RtpLeg::new(box_customer, &negotiated(Codec::Pcmu, Some(cp))).unwrap(),
        RtpLeg::new(box_robot, &negotiated(Codec::Pcma, Some(rp))).unwrap(),
        Some(recorder),
        None,
        cmd_rx,
    ));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let agent_task = tokio::spawn(run_audio_leg(agent, tone_source(1_600.0, 90), a_tx));
    cmd_tx
        .send(BridgeCommand::ReplaceAgentLeg(Box::new(
            RtpLeg::new(box_agent, &negotiated(Codec::Pcma, Some(ap))).unwrap(),
        )))
        .await
        .unwrap();

    let (customer_heard, robot_heard, agent_heard) =
        tokio::join!(collect(c_rx), collect(r_rx), collect(a_rx));
    let customer_report = customer_task.await.unwrap().unwrap();
    robot_task.await.unwrap().unwrap();
    agent_task.await.unwrap().unwrap();
    cmd_tx.send(BridgeCommand::Hangup).await.unwrap();
    let report = bridge.await.unwrap().unwrap();

    // The customer saw one source, with no loss, restarts or duplicates across the switch.
    let rx = customer_report.receive;
    assert_eq!(
        (rx.ssrc_changes, rx.restarts, rx.duplicates),
        (0, 0, 0),
        "{rx:?}"
    );
    assert_eq!(
        report.to_customer.source_switches, 1,
        "{:?}",
        report.to_customer
    );
    assert!(
        report.to_customer.transcoded > 0,
        "PCMA agent side to PCMU customer"
    );
    // ...and heard the robot, then the agent.
    let (robot, agent) = (
        tone_windows(&customer_heard, 1_000.0),
        tone_windows(&customer_heard, 1_600.0),
    );
    assert!(
        robot.len() >= 16 && agent.len() >= 16,
        "robot {robot:?} agent {agent:?}"
    );
    assert!(
        robot.last() < agent.first(),
        "robot {robot:?} then agent {agent:?}"
    );
    // Both agent-side parties heard the customer.
    for (who, h) in [("robot", &robot_heard), ("agent", &agent_heard)] {
        let start = h
            .iter()
            .position(|s| *s != 0)
            .unwrap_or_else(|| panic!("{who} heard nothing"));
        let body = &h[start..(start + 4_000).min(h.len())];
        assert!(
            tone_presence(body, 440.0, 400) >= 0.8,
            "{who} hears the customer"
        );
    }

    // The recording: customer left throughout, robot then agent on the right.
    assert_eq!(report.recording_frames_dropped, 0);
    let segments = report.recording.unwrap().unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for s in &segments {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(settings.directory.join(&s.file_name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let w = wav::read(&out.stdout).unwrap();
        left.extend(w.channel(0));
        right.extend(w.channel(1));
    }
    let l0 = left.iter().position(|s| *s != 0).unwrap();
    assert!(
        tone_presence(&left[l0..l0 + 16_000], 440.0, 400) >= 0.8,
        "customer on the left"
    );
    // Robot then agent on the right, wherever scheduling put the switch: at least 0.8 s of
    // each, and every robot window before every agent window.
    let (robot, agent) = (tone_windows(&right, 1_000.0), tone_windows(&right, 1_600.0));
    assert!(
        robot.len() >= 16 && agent.len() >= 16,
        "robot {robot:?} agent {agent:?}"
    );
    assert!(
        robot.last() < agent.first(),
        "robot {robot:?} then agent {agent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_announcement_plays_before_recording_and_the_stream_stays_continuous() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_identity(dir.path());
    let settings = RecordingSettings {
        recipients: vec![recipient],
        ..RecordingSettings::default()
    }
    .validate(dir.path())
    .unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let recorder = CallRecorder::start_with_segment_frames(
        CallId::new_v7(),
        &settings,
        8_000,
        SqliteSegmentStore::new(store.pool().clone()),
    )
    .unwrap();
    let base = loop {
        let p = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p % 2 == 0 && p < 64_000 {
            break p;
        }
    };
    let range = RtpPortRange::new(base, base + 20).unwrap();
    let box_customer = range.bind_pair(loopback()).await.unwrap();
    let box_agent = range.bind_pair(loopback()).await.unwrap();
    let customer_phone = range.bind_pair(loopback()).await.unwrap();
    let agent_phone = range.bind_pair(loopback()).await.unwrap();
    let addr = |s: &(tokio::net::UdpSocket, tokio::net::UdpSocket)| s.0.local_addr().unwrap();
    let (bc, ba, cp, ap) = (
        addr(&box_customer),
        addr(&box_agent),
        addr(&customer_phone),
        addr(&agent_phone),
    );
    let customer = RtpLeg::new(customer_phone, &negotiated(Codec::Pcmu, Some(bc))).unwrap();
    let agent = RtpLeg::new(agent_phone, &negotiated(Codec::Pcmu, Some(ba))).unwrap();
    let (c_tx, c_rx) = mpsc::channel(1_000);
    let (a_tx, a_rx) = mpsc::channel(1_000);
    let customer_task = tokio::spawn(run_audio_leg(customer, tone_source(440.0, 125), c_tx));
    let agent_task = tokio::spawn(run_audio_leg(agent, tone_source(1_000.0, 125), a_tx));
    // A one-second 700 Hz "this call is recorded" announcement.
    let consent = callgate_media::prompt::Prompt::tones(&[(700.0, 1_000, 0)], 8_000);
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let bridge = tokio::spawn(run_bridge(
        RtpLeg::new(box_customer, &negotiated(Codec::Pcmu, Some(cp))).unwrap(),
        RtpLeg::new(box_agent, &negotiated(Codec::Pcmu, Some(ap))).unwrap(),
        Some(recorder),
        Some(consent),
        cmd_rx,
    ));
    let (customer_heard, _) = tokio::join!(collect(c_rx), collect(a_rx));
    let customer_report = customer_task.await.unwrap().unwrap();
    agent_task.await.unwrap().unwrap();
    cmd_tx.send(BridgeCommand::Hangup).await.unwrap();
    let report = bridge.await.unwrap().unwrap();

    assert_eq!(report.consent_frames, 50);
    assert!(
        report.agent_packets_held_for_consent >= 40,
        "{}",
        report.agent_packets_held_for_consent
    );
    let rx = customer_report.receive;
    assert_eq!(
        (rx.ssrc_changes, rx.restarts, rx.duplicates, rx.lost),
        (0, 0, 0, 0),
        "{rx:?}"
    );
    // The customer hears the announcement, then the agent.
    let (announcement, agent) = (
        tone_windows(&customer_heard, 700.0),
        tone_windows(&customer_heard, 1_000.0),
    );
    assert!(announcement.len() >= 16, "announcement {announcement:?}");
    assert!(agent.len() >= 16, "agent {agent:?}");
    assert!(
        announcement.last() < agent.first(),
        "announcement {announcement:?} then agent {agent:?}"
    );
    // The recording holds no announcement and starts with the conversation.
    let segments = report.recording.unwrap().unwrap();
    let mut right = Vec::new();
    for s in &segments {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(settings.directory.join(&s.file_name))
            .output()
            .unwrap();
        assert!(out.status.success());
        right.extend(wav::read(&out.stdout).unwrap().channel(1));
    }
    // The phones talked for 2.5 s, the first second of it under the announcement.
    assert!(
        right.len() < 20_000,
        "recording started after the announcement: {}",
        right.len()
    );
    let r0 = right.iter().position(|s| *s != 0).unwrap();
    assert!(
        tone_presence(&right[r0..r0 + 8_000], 1_000.0, 400) >= 0.8,
        "the agent is recorded"
    );
    assert!(
        tone_presence(&right, 700.0, 400) < 0.05,
        "no announcement in the recording"
    );
}
