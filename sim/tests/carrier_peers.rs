//! The simulated carrier against real callers: SIPp as the UAC (so a bug shared by our SIP
//! core on both sides of a call cannot hide), and the appliance's own trunk router
//! (`UdpTrunkRouter`, what the dialer uses) dialling it call after call, with the fates
//! checked against the seeded plan and the audio checked on the wire.

use callgate_appliance::sip::udp::UdpTrunkRouter;
use callgate_media::g711::Codec;
use callgate_media::rtp::RtpPacket;
use callgate_media::sdp::{create_offer, Direction, LocalMedia};
use callgate_sim::carrier::{CallPlan, CarrierCore, Fate, SimCarrier};
use callgate_sim::dist::Seconds;
use callgate_sim::scenario::CarrierScenario;
use callgate_sim::voice::{rms, spurts};
use callgate_sip::agent::AgentConfig;
use callgate_sip::trunk::router::{DialEvent, RouterConfig};
use callgate_sip::trunk::{Trunk, TrunkGroup};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::net::UdpSocket;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn quick_scenario() -> CarrierScenario {
    CarrierScenario {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        answer_probability: 0.6,
        machine_share: 0.4,
        busy_share: 0.5,
        ring_seconds: Seconds::Uniform { min: 0.1, max: 0.3 },
        talk_seconds: Seconds::fixed(2.5),
        greeting_seconds: Seconds::fixed(2.0),
        machine_record_seconds: 0.5,
        no_answer_after_seconds: 0.4,
        ..CarrierScenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_dials_the_simulated_carrier_and_every_fate_completes_cleanly() {
    const CALLS: u64 = 30;
    let mut scenario = quick_scenario();
    scenario.talk_seconds = Seconds::Uniform { min: 0.5, max: 1.5 };
    let carrier = SimCarrier::start(&scenario, 17).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let xml = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uac_mix.xml");
    let status = tokio::process::Command::new("sipp")
        .arg(carrier.local_addr().to_string())
        .arg("-sf")
        .arg(&xml)
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-mp", &free_udp_port().to_string(), "-rtp_echo"])
        .args(["-m", &CALLS.to_string(), "-r", "10", "-l", "30"])
        .args(["-nostdin", "-timeout", "60", "-timeout_error", "-trace_err"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .expect("sipp is installed by scripts/setup (package sip-tester)");
    let errors: String = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            p.to_string_lossy()
                .ends_with("errors.log")
                .then(|| std::fs::read_to_string(p).unwrap_or_default())
        })
        .collect();
    assert!(status.success(), "SIPp failed calls: {status:?}\n{errors}");
    // The carrier's BYE exchanges finish just after SIPp exits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = carrier.stop().await;
    assert_eq!(s.calls, CALLS, "{s:?}");
    assert_eq!(s.busy + s.no_answer + s.person + s.machine, CALLS);
    assert!(
        s.busy > 0 && s.no_answer > 0 && s.person > 0 && s.machine > 0,
        "{s:?}"
    );
    assert_eq!(s.answered, s.person + s.machine);
    assert_eq!(
        s.carrier_hung_up, s.answered,
        "every answered call ended by our BYE"
    );
    assert_eq!(s.active, 0);
    // SIPp echoes the RTP it gets: our voice came back on every answered call.
    assert_eq!(s.rtp.calls_heard, s.answered, "{s:?}");
    assert!(s.rtp.sent > 20 * s.answered, "{s:?}");
}

/// What one call through the router showed.
#[derive(Debug)]
struct Observed {
    fate: Fate,
    frames: Vec<Vec<i16>>,
}

async fn capture(socket: &UdpSocket, frames: &mut Vec<Vec<i16>>) {
    let mut buf = [0u8; 2048];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(5), socket.recv(&mut buf)).await
    {
        if let Ok(p) = RtpPacket::parse(&buf[..n]) {
            let mut pcm = Vec::new();
            Codec::Pcmu.decode(&p.payload, &mut pcm);
            frames.push(pcm);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_trunk_router_meets_the_seeded_fates_in_order_with_speech_and_greetings_on_the_wire() {
    const SEED: u64 = 2026;
    // A person's longest "hello" (0.7 s) and first pause (1.8 s) take 2.5 s: with the quick
    // scenario's 2.5 s of talk, their talk after the pause could be cut to nothing by a
    // little scheduling delay on a loaded machine. 3.5 s leaves a whole second of it.
    let scenario = CarrierScenario {
        talk_seconds: Seconds::fixed(3.5),
        ..quick_scenario()
    };
    // The plan the seed gives: enough calls to meet every fate.
    let mut probe = CarrierCore::<u32>::new(scenario.clone(), SEED);
    let mut plans: Vec<CallPlan> = Vec::new();
    while [Fate::Busy, Fate::NoAnswer, Fate::Person, Fate::Machine]
        .iter()
        .any(|f| !plans.iter().any(|p| p.fate == *f))
    {
        plans.push(probe.draw_plan());
        assert!(plans.len() < 40, "seed {SEED} never draws every fate");
    }
    let carrier = SimCarrier::start(&scenario, SEED).await.unwrap();
    let mut router = UdpTrunkRouter::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "callgate".into(),
            timers: Default::default(),
            credentials: None,
            seed: 99,
        },
        TrunkGroup::new(vec![Trunk {
            name: "sim".into(),
            address: carrier.local_addr(),
            domain: "127.0.0.1".into(),
            credentials: None,
            max_channels: 10,
            max_cps: 10,
            priority: 0,
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
    let mut seen = Vec::new();
    for (i, _) in plans.iter().enumerate() {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let offer = create_offer(&LocalMedia {
            address: "127.0.0.1".parse().unwrap(),
            rtp_port: rtp.local_addr().unwrap().port(),
            codecs: vec![Codec::Pcmu],
            telephone_event: false,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            session_id: i as u64 + 1,
            session_version: 1,
            srtp: None,
        });
        let attempt = router
            .dial(
                &format!("+1555010{i:04}"),
                offer.to_string().into_bytes(),
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        let mut frames = Vec::new();
        let mut answered = false;
        let fate = loop {
            capture(&rtp, &mut frames).await;
            let ev =
                match tokio::time::timeout(Duration::from_millis(20), router.next_event()).await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => panic!("router stopped"),
                    Err(_) => continue,
                };
            match ev {
                DialEvent::Answered { attempt: a, .. } if a == attempt => answered = true,
                DialEvent::Failed {
                    attempt: a, status, ..
                } if a == attempt => {
                    break match status {
                        486 => Fate::Busy,
                        480 => Fate::NoAnswer,
                        other => panic!("call {i}: unexpected final status {other}"),
                    };
                }
                DialEvent::Ended {
                    attempt: a,
                    by_peer,
                } if a == attempt => {
                    assert!(by_peer, "the carrier hangs up at the end of the talk time");
                    assert!(answered);
                    // What was still in the socket's buffer.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    capture(&rtp, &mut frames).await;
                    // A machine's greeting is over 2 s of near-continuous talk.
                    let talk = spurts(&frames, 300.0);
                    break if talk.first().is_some_and(|&n| n >= 80) {
                        Fate::Machine
                    } else {
                        Fate::Person
                    };
                }
                _ => {}
            }
        };
        seen.push(Observed { fate, frames });
    }
    let fates: Vec<Fate> = seen.iter().map(|o| o.fate).collect();
    let planned: Vec<Fate> = plans.iter().map(|p| p.fate).collect();
    assert_eq!(
        fates, planned,
        "the same seed gives the same fates, in order"
    );
    for (o, p) in seen.iter().zip(&plans) {
        match p.fate {
            Fate::Person => {
                // "Hello", a pause, then talk: at least two spurts in 3.5 s, real energy.
                let talk = spurts(&o.frames, 300.0);
                assert!(talk.len() >= 2, "person spurts {talk:?}");
                assert!(talk[0] < 40, "hello is short: {talk:?}");
                // Frames for the talk time (3.5 s = 175) arrived, give or take the edges.
                assert!(o.frames.len() >= 140, "{} frames", o.frames.len());
            }
            Fate::Machine => {
                // The greeting, then the 1 kHz beep right after it (2.0 s = frame 100; the
                // search allows for packets lost or delayed on a loaded machine).
                let beep_at = (80..o.frames.len().saturating_sub(10)).find(|&i| {
                    let w: Vec<i16> = o.frames[i..i + 10].concat();
                    callgate_media::tone::tone_correlation(&w, 1_000.0) > 0.5
                });
                let beep_at = beep_at.unwrap_or_else(|| {
                    panic!(
                        "no 1 kHz beep after the greeting in {} frames",
                        o.frames.len()
                    )
                });
                assert!(
                    beep_at >= 90,
                    "the beep comes after the greeting: {beep_at}"
                );
                let greeting = &o.frames[5..95];
                let loud = greeting.iter().filter(|f| rms(f) > 300.0).count();
                assert!(loud > 70, "greeting talk frames {loud} of 90");
            }
            Fate::Busy | Fate::NoAnswer => assert!(o.frames.is_empty()),
        }
    }
    let s = carrier.stop().await;
    assert_eq!(s.calls, plans.len() as u64);
    assert_eq!(s.carrier_hung_up, s.answered);
}
