//! Two real RTP legs over loopback UDP: audio flows both ways in real time, a peer whose SDP
//! address is wrong (NAT) is latched onto, and DTMF events arrive once per key press.

use callgate_appliance::media::{
    fresh_srtp_key, run_audio_leg, run_audio_leg_with_keys, LegAudio, RtpLeg, RtpPortRange,
};
use callgate_media::dtmf::{key_press_packets, Digit, DtmfReport};
use callgate_media::g711::Codec;
use callgate_media::rtp::{RtpPacket, RtpSender};
use callgate_media::sdp::{Direction, NegotiatedAudio, SrtpKeys};
use callgate_media::tone::{tone_presence, ToneGenerator};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn free_range() -> RtpPortRange {
    loop {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p % 2 == 0 && p < 64_000 {
            return RtpPortRange::new(p, p + 40).unwrap();
        }
    }
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

/// `seconds` of a tone queued up front in a leg's outgoing channel, so every packet time has
/// its frame; the channel closes after the last one, which ends the leg.
fn tone_source(hz: f64, seconds: u32) -> mpsc::Receiver<Vec<i16>> {
    let frames = seconds as usize * 50;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_legs_exchange_audio_both_ways_in_real_time() {
    let range = free_range();
    let a_sockets = range.bind_pair(loopback()).await.unwrap();
    let b_sockets = range.bind_pair(loopback()).await.unwrap();
    let a_addr = a_sockets.0.local_addr().unwrap();
    let b_addr = b_sockets.0.local_addr().unwrap();
    // RTCP every ~400 ms so reports are exchanged within the two seconds.
    let a = RtpLeg::new(a_sockets, &negotiated(Codec::Pcmu, Some(b_addr)))
        .unwrap()
        .with_rtcp_interval(Duration::from_millis(400));
    let b = RtpLeg::new(b_sockets, &negotiated(Codec::Pcmu, Some(a_addr)))
        .unwrap()
        .with_rtcp_interval(Duration::from_millis(400));
    let (a_in_tx, a_in) = mpsc::channel(500);
    let (b_in_tx, b_in) = mpsc::channel(500);
    let a_task = tokio::spawn(run_audio_leg(a, tone_source(440.0, 2), a_in_tx));
    let b_task = tokio::spawn(run_audio_leg(b, tone_source(1_000.0, 2), b_in_tx));
    let (a_heard, b_heard) = tokio::join!(collect(a_in), collect(b_in));
    let a_report = a_task.await.unwrap().unwrap();
    let b_report = b_task.await.unwrap().unwrap();

    for (name, heard, hz) in [("a", &a_heard, 1_000.0), ("b", &b_heard, 440.0)] {
        let start = heard.iter().position(|s| *s != 0).expect("audio arrived");
        let body = &heard[start..(start + 8_000).min(heard.len())];
        assert!(body.len() >= 8_000, "{name} heard {} samples", body.len());
        // Per 50 ms window: on a loaded machine the jitter buffer may wait or drop a frame,
        // which shifts the phase but loses no packet (asserted below).
        let presence = tone_presence(body, hz, 400);
        assert!(
            presence >= 0.8,
            "{name} hears the other leg's {hz} Hz in {presence:.2} of windows"
        );
    }
    for r in [&a_report, &b_report] {
        let remote = r.remote_reception.expect("the other leg sent RTCP reports");
        assert_eq!(remote.cumulative_lost, 0, "{r:?}");
        let rtt = remote.round_trip.expect("a round trip from SR/RR");
        assert!(
            rtt < Duration::from_millis(100),
            "loopback round trip {rtt:?}"
        );
        assert!(r.quality.mos > 4.0, "{:?}", r.quality);
        assert!(r.packets_sent >= 95, "{r:?}");
        assert_eq!(r.receive.lost, 0, "{r:?}");
        assert_eq!(
            (r.refused, r.malformed, r.frames_not_consumed),
            (0, 0, 0),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_peer_behind_nat_is_latched_and_stray_packets_are_refused() {
    let range = free_range();
    let sockets = range.bind_pair(loopback()).await.unwrap();
    let leg_addr = sockets.0.local_addr().unwrap();
    // The SDP named a private address we cannot reach; the phone's packets come from `phone`.
    let signalled: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut leg = RtpLeg::new(sockets, &negotiated(Codec::Pcma, Some(signalled))).unwrap();
    assert_eq!(leg.remote(), Some(signalled));

    let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut tx = RtpSender::new(77, 1, 1);
    // Garbage and a wrong payload type from a stranger do not latch the leg to it.
    stranger.send_to(b"not rtp at all", leg_addr).await.unwrap();
    let wrong_pt = RtpSender::new(99, 1, 1).audio(0, vec![0xFF; 160]);
    stranger
        .send_to(&wrong_pt.to_bytes().unwrap(), leg_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    phone
        .send_to(&tx.audio(8, vec![0xD5; 160]).to_bytes().unwrap(), leg_addr)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), leg.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.from, phone.local_addr().unwrap());
    assert_eq!(leg.remote(), Some(phone.local_addr().unwrap()));

    // A second source is refused while the phone talks; the next phone packet gets through.
    stranger
        .send_to(
            &RtpSender::new(99, 1, 1)
                .audio(8, vec![1; 160])
                .to_bytes()
                .unwrap(),
            leg_addr,
        )
        .await
        .unwrap();
    phone
        .send_to(&tx.audio(8, vec![2; 160]).to_bytes().unwrap(), leg_addr)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), leg.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.packet.ssrc, got.packet.payload[0]), (77, 2));

    // Our audio now reaches the phone at its real address.
    assert!(leg.send_audio(&[0; 160]).await.unwrap());
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), phone.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, leg_addr);
    let p = RtpPacket::parse(&buf[..n]).unwrap();
    assert_eq!((p.payload_type, p.payload.len()), (8, 160));
}

#[tokio::test]
async fn rfc_4733_key_presses_reach_the_consumer_once_each() {
    let range = free_range();
    let sockets = range.bind_pair(loopback()).await.unwrap();
    let leg_addr = sockets.0.local_addr().unwrap();
    let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let leg = RtpLeg::new(
        sockets,
        &negotiated(Codec::Pcmu, Some(phone.local_addr().unwrap())),
    )
    .unwrap();
    let (out_tx, out_rx) = mpsc::channel::<Vec<i16>>(1);
    let (in_tx, mut in_rx) = mpsc::channel(500);
    let task = tokio::spawn(run_audio_leg(leg, out_rx, in_tx));
    let mut tx = RtpSender::new(5, 100, 1_000);
    for c in ['4', '2', '#'] {
        for p in key_press_packets(&mut tx, 101, Digit::from_char(c).unwrap(), 60, 20) {
            phone
                .send_to(&p.to_bytes().unwrap(), leg_addr)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut presses = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while presses.len() < 3 {
        match tokio::time::timeout_at(deadline, in_rx.recv()).await {
            Ok(Some(LegAudio::Dtmf(DtmfReport::Pressed(d)))) => presses.push(d.as_char()),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    drop(out_tx);
    let report = task.await.unwrap().unwrap();
    assert_eq!(presses, "42#");
    assert_eq!(
        report.receive.duplicates, 0,
        "retransmitted ends are new sequence numbers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srtp_leg_pair_carries_audio_and_refuses_plain_injected_packets() {
    let range = free_range();
    let a_sockets = range.bind_pair(loopback()).await.unwrap();
    let b_sockets = range.bind_pair(loopback()).await.unwrap();
    let a_addr = a_sockets.0.local_addr().unwrap();
    let b_addr = b_sockets.0.local_addr().unwrap();
    let (ka, kb) = (fresh_srtp_key().unwrap(), fresh_srtp_key().unwrap());
    assert_ne!(ka, kb, "fresh keys per leg");
    let mut a_audio = negotiated(Codec::Pcma, Some(b_addr));
    a_audio.srtp = Some(SrtpKeys {
        ours: ka.clone(),
        theirs: kb.clone(),
    });
    let mut b_audio = negotiated(Codec::Pcma, Some(a_addr));
    b_audio.srtp = Some(SrtpKeys {
        ours: kb,
        theirs: ka,
    });
    let a = RtpLeg::new(a_sockets, &a_audio)
        .unwrap()
        .with_rtcp_interval(Duration::from_millis(400));
    let b = RtpLeg::new(b_sockets, &b_audio)
        .unwrap()
        .with_rtcp_interval(Duration::from_millis(400));
    let (a_in_tx, a_in) = mpsc::channel(500);
    let (b_in_tx, b_in) = mpsc::channel(500);
    let a_task = tokio::spawn(run_audio_leg(a, tone_source(440.0, 2), a_in_tx));
    let b_task = tokio::spawn(run_audio_leg(b, tone_source(1_000.0, 2), b_in_tx));
    // An attacker who knows the addresses injects plain RTP into leg B.
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut forged = RtpSender::new(0xBAD, 1, 1);
    for _ in 0..5 {
        attacker
            .send_to(&forged.audio(8, vec![0; 160]).to_bytes().unwrap(), b_addr)
            .await
            .unwrap();
    }
    let (a_heard, b_heard) = tokio::join!(collect(a_in), collect(b_in));
    let a_report = a_task.await.unwrap().unwrap();
    let b_report = b_task.await.unwrap().unwrap();
    for (name, heard, hz) in [("a", &a_heard, 1_000.0), ("b", &b_heard, 440.0)] {
        let start = heard.iter().position(|s| *s != 0).expect("audio arrived");
        let body = &heard[start..(start + 8_000).min(heard.len())];
        assert!(body.len() >= 8_000, "{name} heard {} samples", body.len());
        let presence = tone_presence(body, hz, 400);
        assert!(
            presence >= 0.8,
            "{name} hears {hz} Hz through SRTP in {presence:.2} of windows"
        );
    }
    assert_eq!(b_report.unauthenticated, 5, "{b_report:?}");
    assert_eq!(b_report.remote, Some(a_addr), "forgeries never latch");
    for r in [&a_report, &b_report] {
        assert_eq!(r.receive.lost, 0, "{r:?}");
        assert!(
            r.remote_reception.is_some(),
            "SRTCP reports decrypted: {r:?}"
        );
    }
}

/// Sends `keys` from leg A to leg B (both with or both without telephone-event) while A also
/// streams silence-free audio; returns the keys B reported pressed.
async fn send_keys_between_legs(telephone_event: bool, keys: &str) -> String {
    let range = free_range();
    let a_sockets = range.bind_pair(loopback()).await.unwrap();
    let b_sockets = range.bind_pair(loopback()).await.unwrap();
    let a_addr = a_sockets.0.local_addr().unwrap();
    let b_addr = b_sockets.0.local_addr().unwrap();
    let mut a_audio = negotiated(Codec::Pcmu, Some(b_addr));
    let mut b_audio = negotiated(Codec::Pcmu, Some(a_addr));
    if !telephone_event {
        a_audio.telephone_event_pt = None;
        b_audio.telephone_event_pt = None;
    }
    let a = RtpLeg::new(a_sockets, &a_audio).unwrap();
    let b = RtpLeg::new(b_sockets, &b_audio).unwrap();
    let (key_tx, key_rx) = mpsc::channel(16);
    for c in keys.chars() {
        key_tx
            .try_send((Digit::from_char(c).unwrap(), 150))
            .unwrap();
    }
    drop(key_tx);
    // A sends low-level 300 Hz "voice" for 2 s around the keys.
    let (a_in_tx, _a_in) = mpsc::channel(500);
    let (b_in_tx, mut b_in) = mpsc::channel(500);
    let (voice_tx, voice_rx) = mpsc::channel(100);
    let mut voice = ToneGenerator::new(300.0, 300);
    for _ in 0..100 {
        voice_tx.try_send(voice.next_samples(160)).unwrap();
    }
    drop(voice_tx);
    let (b_out_tx, b_out_rx) = mpsc::channel::<Vec<i16>>(1);
    let a_task = tokio::spawn(run_audio_leg_with_keys(a, voice_rx, key_rx, a_in_tx));
    let b_task = tokio::spawn(run_audio_leg(b, b_out_rx, b_in_tx));
    let mut pressed = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while pressed.len() < keys.len() {
        match tokio::time::timeout_at(deadline, b_in.recv()).await {
            Ok(Some(LegAudio::Dtmf(DtmfReport::Pressed(d)))) => pressed.push(d.as_char()),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    a_task.await.unwrap().unwrap();
    drop(b_out_tx);
    b_task.await.unwrap().unwrap();
    pressed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_presses_sent_as_rfc_4733_events_arrive_in_order() {
    assert_eq!(send_keys_between_legs(true, "7#0").await, "7#0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_presses_without_telephone_event_go_in_band_and_are_detected() {
    assert_eq!(send_keys_between_legs(false, "59*").await, "59*");
}
