//! A real call with SIPp: SIPp answers as a UAS with RTP echo (`sipp -sn uas -rtp_echo`), the
//! offer/answer runs through our SDP core, and audio flows both ways through an appliance leg:
//! the tone we send comes back from SIPp and plays out of our jitter buffer.

use callgate_appliance::media::{run_audio_leg, LegAudio, RtpLeg, RtpPortRange};
use callgate_media::g711::Codec;
use callgate_media::sdp::{
    create_offer, negotiate::accept_answer, Direction, LocalMedia, SessionDescription,
};
use callgate_media::tone::{tone_presence, ToneGenerator};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Kills SIPp if the test fails before it exits.
struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An even port with `+2` also free (SIPp's echo listens on both).
fn free_media_port() -> u16 {
    loop {
        let p = free_udp_port();
        if p % 2 == 0 && p < 65_000 && UdpSocket::bind(("127.0.0.1", p + 2)).is_ok() {
            return p;
        }
    }
}

/// Sends `request` and retransmits it every 500 ms until a final response arrives; returns it.
fn transact(sip: &UdpSocket, to: SocketAddr, request: &str) -> String {
    sip.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65_535];
    sip.send_to(request.as_bytes(), to).unwrap();
    while Instant::now() < deadline {
        match sip.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let status: u16 = text.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0);
                if status >= 200 {
                    return text;
                }
            }
            Err(_) => {
                sip.send_to(request.as_bytes(), to).unwrap();
            }
        }
    }
    panic!("no final response from SIPp to:\n{request}");
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{message}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_sipp_rtp_echo_carries_audio_both_ways() {
    let sip_port = free_udp_port();
    let media_port = free_media_port();
    let _sipp = Sipp(
        Command::new("sipp")
            .args([
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-rtp_echo",
                "-m",
                "1",
                "-nostdin",
            ])
            .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp must be installed (scripts/setup installs package `sip-tester`)"),
    );
    let sipp_addr: SocketAddr = ([127, 0, 0, 1], sip_port).into();

    // Our leg and our offer.
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let base = free_media_port();
    let range = RtpPortRange::new(base, base + 20).unwrap();
    let sockets = range.bind_pair(loopback).await.unwrap();
    let local = LocalMedia {
        address: loopback,
        rtp_port: sockets.0.local_addr().unwrap().port(),
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event: true,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        session_id: 4_242,
        session_version: 1,
        srtp: None,
    };
    let offer = create_offer(&local);
    let body = offer.to_string();

    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sip.local_addr().unwrap();
    let call_id = format!("media-test-{}@127.0.0.1", std::process::id());
    let invite = format!(
        "INVITE sip:service@{sipp_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-inv1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:callgate@{me}>;tag=cg1\r\nTo: <sip:service@{sipp_addr}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callgate@{me}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let ok = transact(&sip, sipp_addr, &invite);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let answer_text = ok.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let answer = SessionDescription::parse(answer_text).unwrap();
    let audio = accept_answer(&offer, &answer).unwrap();
    assert_eq!(audio.codec, Codec::Pcmu);
    assert_eq!(audio.remote, Some(([127, 0, 0, 1], media_port).into()));
    let to = header(&ok, "To").to_owned();
    let ack = format!(
        "ACK sip:service@{sipp_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ack1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:callgate@{me}>;tag=cg1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(ack.as_bytes(), sipp_addr).unwrap();

    // Two seconds of 440 Hz out; SIPp echoes it back.
    let leg = RtpLeg::new(sockets, &audio).unwrap();
    // Queued up front, so every packet time has its frame and the tone is unbroken.
    let (out_tx, out_rx) = mpsc::channel(100);
    let mut g = ToneGenerator::new(440.0, 8_000);
    for _ in 0..100 {
        out_tx.try_send(g.next_samples(160)).unwrap();
    }
    drop(out_tx);
    let (in_tx, mut in_rx) = mpsc::channel(500);
    let task = tokio::spawn(run_audio_leg(leg, out_rx, in_tx));
    let mut heard = Vec::new();
    while let Some(a) = in_rx.recv().await {
        if let LegAudio::Frame(f) = a {
            heard.extend(f.samples);
        }
    }
    let report = task.await.unwrap().unwrap();

    let bye = format!(
        "BYE sip:service@{sipp_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bye1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:callgate@{me}>;tag=cg1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let bye_ok = transact(&sip, sipp_addr, &bye);
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");

    assert!(report.packets_sent >= 95, "{report:?}");
    assert!(report.receive.received >= 90, "echo came back: {report:?}");
    assert_eq!(report.receive.lost, 0, "{report:?}");
    assert_eq!(report.remote, audio.remote, "latched to SIPp's media port");
    let start = heard
        .iter()
        .position(|s| *s != 0)
        .expect("echoed audio played out");
    let body = &heard[start..(start + 12_000).min(heard.len())];
    assert!(body.len() >= 12_000, "heard {} samples", body.len());
    // Per 50 ms window, so the jitter buffer's adaptation on a loaded machine (a waited or
    // dropped frame shifts the phase) does not count as lost audio.
    let presence = tone_presence(body, 440.0, 400);
    assert!(
        presence >= 0.8,
        "the echoed tone is our 440 Hz in {presence:.2} of windows; {report:?}"
    );
    assert!(tone_presence(body, 1_000.0, 400) < 0.05);
}
