//! A bridge over real UDP sockets, seen from the agent's phone: the RTCP sender reports the
//! bridge sends on the agent's leg count the packets it relayed there, and the agent's
//! connect beep (`BridgeCommand::PlayToAgent`) is mixed over the customer's audio from the
//! moment the bridge starts, with nothing held back for it.

use callgate_appliance::media::quality_log::leg_quality;
use callgate_appliance::media::{
    run_bridge, BridgeCommand, LegQualityLog, LegRole, RtpLeg, RtpPortRange,
};
use callgate_appliance::recording::SqliteSegmentStore;
use callgate_media::g711::Codec;
use callgate_media::prompt::Prompt;
use callgate_media::rtp::rtcp::{parse_compound, RtcpPacket};
use callgate_media::rtp::{RtpPacket, RtpSender};
use callgate_media::sdp::{Direction, NegotiatedAudio};
use callgate_media::tone::{tone_correlation, ToneGenerator};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn pcmu(remote: SocketAddr) -> NegotiatedAudio {
    NegotiatedAudio {
        remote: Some(remote),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

async fn port_range() -> RtpPortRange {
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
    RtpPortRange::new(base, base + 20).unwrap()
}

/// The far ends and a running bridge between them.
struct Rig {
    /// The customer's phone (sends to the box's customer leg).
    customer: UdpSocket,
    box_customer: SocketAddr,
    /// The agent's phone: RTP and RTCP.
    agent_rtp: UdpSocket,
    agent_rtcp: UdpSocket,
    commands: mpsc::Sender<BridgeCommand>,
    bridge: tokio::task::JoinHandle<
        Result<callgate_appliance::media::BridgeReport, callgate_appliance::media::MediaError>,
    >,
}

/// Starts a bridge whose agent leg reports every 300 ms; `before` goes in the command queue
/// before the bridge runs (as the agents' lines send the connect beep).
async fn start(before: Option<BridgeCommand>) -> Rig {
    let range = port_range().await;
    let box_customer = range.bind_pair(loopback()).await.unwrap();
    let box_agent = range.bind_pair(loopback()).await.unwrap();
    let customer_phone = range.bind_pair(loopback()).await.unwrap();
    let agent_phone = range.bind_pair(loopback()).await.unwrap();
    let addr = |s: &(UdpSocket, UdpSocket)| s.0.local_addr().unwrap();
    let (bc, cp, ap) = (
        addr(&box_customer),
        addr(&customer_phone),
        addr(&agent_phone),
    );
    let customer_leg = RtpLeg::new(box_customer, &pcmu(cp)).unwrap();
    let agent_leg = RtpLeg::new(box_agent, &pcmu(ap))
        .unwrap()
        .with_rtcp_interval(Duration::from_millis(300));
    let (commands, rx) = mpsc::channel(4);
    if let Some(c) = before {
        commands.try_send(c).unwrap();
    }
    let bridge = tokio::spawn(run_bridge::<SqliteSegmentStore>(
        customer_leg,
        agent_leg,
        None,
        None,
        rx,
    ));
    Rig {
        customer: customer_phone.0,
        box_customer: bc,
        agent_rtp: agent_phone.0,
        agent_rtcp: agent_phone.1,
        commands,
        bridge,
    }
}

/// The customer talks: `count` 20 ms packets of a 1 kHz tone, paced in real time.
async fn customer_talks(socket: &UdpSocket, to: SocketAddr, count: usize) {
    let mut sender = RtpSender::new(0x5151, 1_000, 80_000);
    let mut voice = ToneGenerator::new(1_000.0, 6_000);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..count {
        tick.tick().await;
        let mut payload = Vec::new();
        Codec::Pcmu.encode(&voice.next_samples(160), &mut payload);
        let bytes = sender.audio(0, payload).to_bytes().unwrap();
        socket.send_to(&bytes, to).await.unwrap();
    }
}

/// Receives RTP on the agent's phone until `enough` says so (or a minute passes).
async fn agent_hears(socket: &UdpSocket, enough: impl Fn(&[RtpPacket]) -> bool) -> Vec<RtpPacket> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1_500];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !enough(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => got.push(RtpPacket::parse(&buf[..n]).unwrap()),
            Ok(Err(e)) => panic!("agent phone: {e}"),
            Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_legs_sender_reports_count_the_packets_the_bridge_relayed_there() {
    let rig = start(None).await;
    let sent = 50;
    let (_, heard) = tokio::join!(
        customer_talks(&rig.customer, rig.box_customer, sent),
        agent_hears(&rig.agent_rtp, |got| got.len() >= sent)
    );
    assert_eq!(heard.len(), sent, "every customer packet reached the agent");
    let ssrc = heard[0].ssrc;
    assert!(heard.iter().all(|p| p.ssrc == ssrc));

    // The agent phone's RTCP port: wait (up to a minute) for a sender report from the
    // bridge's SSRC that covers all 50 relayed packets.
    let mut buf = vec![0u8; 1_500];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reports = Vec::new();
    let (packets, octets) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, _) = tokio::time::timeout(left, rig.agent_rtcp.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no sender report counting {sent} packets in {} reports; last: {:?}",
                    reports.len(),
                    reports.last()
                )
            })
            .unwrap();
        let compound = parse_compound(&buf[..n]).unwrap();
        let sr = compound.iter().find_map(|p| match p {
            RtcpPacket::SenderReport {
                ssrc: s,
                packet_count,
                octet_count,
                ..
            } if *s == ssrc => Some((*packet_count, *octet_count)),
            _ => None,
        });
        reports.push(compound);
        if let Some((p, o)) = sr {
            if p as usize >= sent {
                break (p, o);
            }
        }
    };
    assert_eq!(
        packets as usize, sent,
        "relayed packets are the leg's packets"
    );
    assert_eq!(octets as usize, sent * 160, "and their payload octets");
    rig.commands.send(BridgeCommand::Hangup).await.unwrap();
    let report = rig.bridge.await.unwrap().unwrap();
    assert_eq!(report.agent_legs[0].relayed, sent as u64);
    assert_eq!(report.to_agent.relayed, sent as u64);

    // Each leg's quality goes to the store the way the agents' dispatch writes it.
    let dir = tempfile::tempdir().unwrap();
    let store = callgate_appliance::store::Store::open(dir.path())
        .await
        .unwrap();
    let call = callgate_common::ids::CallId::new_v7();
    let log = LegQualityLog::new(store.pool().clone(), call);
    log.record(0, LegRole::Customer, &report.customer).await;
    log.record(1, LegRole::Agent, &report.agent_legs[0]).await;
    let legs = leg_quality(store.pool(), &call.to_string()).await.unwrap();
    assert_eq!(legs.len(), 2, "{legs:?}");
    let (customer, agent) = (&legs[0], &legs[1]);
    assert_eq!(
        (customer.role.as_str(), agent.role.as_str()),
        ("customer", "agent")
    );
    // The customer's 50 packets arrived over loopback: nothing lost, a near-perfect rating.
    assert_eq!(customer.packets_received, sent as u64, "{customer:?}");
    assert_eq!(customer.loss_ppm, 0, "{customer:?}");
    assert!(
        customer.r_factor > 85.0 && customer.mos > 4.0,
        "{customer:?}"
    );
    // The agent's phone sent nothing: no packets, and the figures say so rather than
    // inventing any.
    assert_eq!(agent.packets_received, 0, "{agent:?}");
    assert_eq!(agent.loss_ppm, 0, "{agent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_beep_reaches_the_agent_over_the_customers_audio_without_holding_it_back() {
    let beep = Prompt::connect_beep();
    let beep_frames = beep.len().div_ceil(160) as u64;
    let rig = start(Some(BridgeCommand::PlayToAgent(beep))).await;
    let sent = 60;
    let (_, heard) = tokio::join!(
        customer_talks(&rig.customer, rig.box_customer, sent),
        agent_hears(&rig.agent_rtp, |got| {
            got.iter()
                .filter(|p| tone_correlation(&decode(p), 1_000.0) > 0.3)
                .count()
                >= sent
        })
    );
    rig.commands.send(BridgeCommand::Hangup).await.unwrap();
    let report = rig.bridge.await.unwrap().unwrap();
    let to_agent = report.to_agent;

    // Every customer packet was relayed as it came (none held back for the beep), and the
    // whole beep reached the agent: mixed over the customer's packets, or alone while the
    // customer was quiet.
    assert_eq!(to_agent.relayed, sent as u64, "{to_agent:?}");
    assert_eq!(
        to_agent.mixed + to_agent.overlay_alone,
        beep_frames,
        "{to_agent:?}"
    );
    assert!(
        to_agent.mixed > 0,
        "the customer's audio flowed while the beep played: {to_agent:?}"
    );
    assert_eq!(
        heard.len() as u64,
        sent as u64 + to_agent.overlay_alone,
        "one stream: relayed packets plus the beep's own frames"
    );
    // One continuous stream to the agent: one SSRC, consecutive sequence numbers.
    for pair in heard.windows(2) {
        assert_eq!(pair[1].ssrc, pair[0].ssrc);
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
    }
    // What the agent heard: packets carrying the beep and the voice together, then the voice
    // alone (the beep is short).
    let both = heard
        .iter()
        .filter(|p| {
            let s = decode(p);
            tone_correlation(&s, 440.0) > 0.3 && tone_correlation(&s, 1_000.0) > 0.3
        })
        .count() as u64;
    assert!(
        both >= to_agent.mixed / 2 && both > 0,
        "{both} packets carry beep and voice ({to_agent:?})"
    );
    let tail: Vec<i16> = heard[heard.len() - 20..].iter().flat_map(decode).collect();
    assert!(tone_correlation(&tail, 440.0) < 0.05, "the beep is over");
    assert!(tone_correlation(&tail, 1_000.0) > 0.9, "the voice goes on");
}

fn decode(p: &RtpPacket) -> Vec<i16> {
    let mut out = Vec::new();
    Codec::Pcmu.decode(&p.payload, &mut out);
    out
}
