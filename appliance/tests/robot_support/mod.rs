//! Shared by the `robot_*` tests: SIPp as the robot call's customer playing an RTP capture
//! the test generates (audio from espeak-ng or tones, RFC 4733 or in-band key presses), a
//! dialer started with any placement on the `dialer_support` rig, and briefs with robot
//! scripts.

#![allow(dead_code, unreachable_pub)]

use crate::dialer_support::{free_udp_port, Rig, CAMPAIGN};
use callgate_appliance::dialer::driver::{DialerSettings, DialerTask};
use callgate_appliance::dialer::placement::AnsweredCallPlacement;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::sip::udp::UdpTrunkRouter;
use callgate_common::ids::TrunkId;
use callgate_common::wire::{CallRecord, Downlink, Uplink};
use callgate_media::dtmf::Digit;
use callgate_media::g711::Codec;
use callgate_media::tone::{mix_into, ToneGenerator};
use callgate_pacing::{PacingConfig, TrunkLimits};
use callgate_sip::agent::AgentConfig;
use callgate_sip::trunk::router::RouterConfig;
use callgate_sip::trunk::{Trunk, TrunkGroup};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How the customer presses a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// RFC 4733 events (payload type 101).
    Rfc4733,
    /// Dual tones inside the audio.
    InBand,
}

/// The customer's side of the call as an RTP capture: `audio` (8 kHz) sent as PCMU, 20 ms a
/// packet, with `keys` pressed at `(ms, key)` for 120 ms each.
pub fn callee_pcap(audio: &[i16], keys: &[(u32, char)], style: KeyStyle) -> Vec<u8> {
    let mut audio = audio.to_vec();
    if style == KeyStyle::InBand {
        for &(at, key) in keys {
            let (row, col) = Digit::from_char(key).unwrap().frequencies();
            let mut tone = ToneGenerator::new(row, 7_000).next_samples(960);
            mix_into(&mut tone, &ToneGenerator::new(col, 7_000).next_samples(960));
            let start = at as usize * 8;
            if audio.len() < start + tone.len() {
                audio.resize(start + tone.len(), 0);
            }
            audio[start..start + tone.len()].copy_from_slice(&tone);
        }
    }
    let frames = audio.len().div_ceil(160);
    let ssrc = 0x5eed_1234u32;
    let mut pcap = Vec::new();
    // Global header: microsecond timestamps, Ethernet.
    pcap.extend(0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend(2u16.to_le_bytes());
    pcap.extend(4u16.to_le_bytes());
    pcap.extend(0i32.to_le_bytes());
    pcap.extend(0u32.to_le_bytes());
    pcap.extend(65_535u32.to_le_bytes());
    pcap.extend(1u32.to_le_bytes());
    let mut seq = 1_000u16;
    let mut packet =
        |pcap: &mut Vec<u8>, at_us: u64, pt: u8, marker: bool, ts: u32, payload: &[u8]| {
            let mut rtp = vec![0x80, pt | if marker { 0x80 } else { 0 }];
            rtp.extend(seq.to_be_bytes());
            seq = seq.wrapping_add(1);
            rtp.extend(ts.to_be_bytes());
            rtp.extend(ssrc.to_be_bytes());
            rtp.extend(payload);
            let udp_len = 8 + rtp.len();
            let ip_len = 20 + udp_len;
            let mut frame = vec![0u8; 12];
            frame.extend([0x08, 0x00]);
            frame.extend([0x45, 0x00]);
            frame.extend((ip_len as u16).to_be_bytes());
            frame.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
            frame.extend([127, 0, 0, 1, 127, 0, 0, 1]);
            frame.extend(6_000u16.to_be_bytes());
            frame.extend(6_002u16.to_be_bytes());
            frame.extend((udp_len as u16).to_be_bytes());
            frame.extend([0, 0]);
            frame.extend(rtp);
            pcap.extend(((at_us / 1_000_000) as u32).to_le_bytes());
            pcap.extend(((at_us % 1_000_000) as u32).to_le_bytes());
            pcap.extend((frame.len() as u32).to_le_bytes());
            pcap.extend((frame.len() as u32).to_le_bytes());
            pcap.extend(frame);
        };
    let key_at = |i: usize| -> Option<(usize, char)> {
        if style != KeyStyle::Rfc4733 {
            return None;
        }
        keys.iter().find_map(|&(at, key)| {
            let first = at as usize / 20;
            (i >= first && i < first + 6).then(|| (i - first, key))
        })
    };
    for i in 0..frames {
        let at_us = i as u64 * 20_000;
        let ts = (i * 160) as u32;
        match key_at(i) {
            Some((n, key)) => {
                let code = Digit::from_char(key).unwrap().event_code();
                let start_ts = ts - (n as u32) * 160;
                let end = n == 5;
                let duration = ((n as u32 + 1) * 160) as u16;
                let mut ev = vec![code, if end { 0x80 } else { 0 } | 10];
                ev.extend(duration.to_be_bytes());
                // The end packet goes three times (RFC 4733 §2.5.1.4).
                for _ in 0..if end { 3 } else { 1 } {
                    packet(&mut pcap, at_us, 101, n == 0, start_ts, &ev);
                }
            }
            None => {
                let chunk = &audio[i * 160..((i + 1) * 160).min(audio.len())];
                let mut samples = chunk.to_vec();
                samples.resize(160, 0);
                let mut payload = Vec::with_capacity(160);
                Codec::Pcmu.encode(&samples, &mut payload);
                packet(&mut pcap, at_us, 0, i == 0, ts, &payload);
            }
        }
    }
    pcap
}

/// Quiet line noise (about -50 dBFS), deterministic, `ms` long.
pub fn line_noise(ms: u32) -> Vec<i16> {
    let mut x = 0x2545_f491u32;
    (0..ms as usize * 8)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((x % 200) as i16) - 100
        })
        .collect()
}

/// SIPp as the robot call's customer, playing `pcap`; killed when dropped.
pub struct Callee {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Callee {
    /// Starts SIPp with `scenario` (a file in `tests/sipp/`) and the capture it plays.
    pub fn start(scenario: &str, pcap: &[u8]) -> Callee {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("callee.pcap"), pcap).unwrap();
        let port = free_udp_port();
        let scenario = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &(free_udp_port() & !1).to_string()])
            .args([
                "-nostdin",
                "-timeout",
                "120",
                "-timeout_error",
                "-trace_err",
                "-trace_msg",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp is installed by scripts/setup (package sip-tester)");
        Callee {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    /// Whether the call's BYE (whoever sent it) has been answered with 200 OK, from SIPp's
    /// message log: the customer's leg is over.
    pub fn bye_answered(&self) -> bool {
        bye_answered_in(self.dir.path())
    }

    /// Where SIPp writes its logs.
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }

    /// SIPp's error log so far, without SIPp's own overload warnings (its scheduler
    /// running late on a loaded machine says nothing about the call under test) and the
    /// heading it writes above every event.
    pub fn errors(&self) -> String {
        let mut errors = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with("errors.log") {
                errors.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        errors
            .lines()
            .filter(|l| !l.contains("Overload warning:") && *l != "The following events occurred:")
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether SIPp's message log in `dir` shows a 200 OK to a BYE.
pub fn bye_answered_in(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let p = e.path();
        p.to_string_lossy().ends_with("_messages.log")
            && std::fs::read_to_string(&p).is_ok_and(|log| {
                log.split("----------------------------------------------- ")
                    .any(|m| {
                        m.contains("SIP/2.0 200")
                            && m.lines()
                                .any(|l| l.starts_with("CSeq:") && l.trim_end().ends_with(" BYE"))
                    })
            })
    })
}

/// Starts the rig's dialer against `carrier` with `placement` for answered calls.
pub async fn start_with(
    rig: &mut Rig,
    carrier: SocketAddr,
    placement: Arc<dyn AnsweredCallPlacement>,
) {
    let router = UdpTrunkRouter::start(
        "127.0.0.1:0".parse().unwrap(),
        AgentConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            user: "callgate".into(),
            timers: Default::default(),
            credentials: None,
            seed: u64::from(free_udp_port()),
        },
        TrunkGroup::new(vec![Trunk {
            name: "carrier".into(),
            address: carrier,
            domain: "127.0.0.1".into(),
            credentials: None,
            max_channels: 50,
            max_cps: 1_000,
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
    let base = free_udp_port() & !1;
    let base = if base > 60_000 { 40_000 } else { base };
    let settings = DialerSettings {
        media_ip: "127.0.0.1".parse().unwrap(),
        ports: Arc::new(RtpPortRange::new(base, base + 39).unwrap()),
        ring_timeout: Duration::from_secs(5),
        trunks: vec![(
            TrunkId::new("carrier").unwrap(),
            TrunkLimits {
                max_concurrent: 50,
                max_per_minute: 60_000,
            },
        )],
        recording: rig.recording.clone(),
        pacing: PacingConfig::default(),
    };
    rig.dialer = Some(
        DialerTask::start(
            settings,
            rig.store.pool().clone(),
            rig.outbox.clone(),
            router,
            placement,
        )
        .await
        .unwrap(),
    );
}

/// The campaign brief with `robot_script` set.
pub fn robot_brief(script: Option<&str>) -> Downlink {
    let mut brief = crate::dialer_support::agentless_brief(crate::dialer_support::all_day());
    if let Downlink::Campaign(b) = &mut brief {
        b.robot_script = script.map(str::to_owned);
        b.name = "robot test".into();
    }
    brief
}

/// The campaign brief itself, for `RobotPlacement::set_campaign`.
pub fn brief_of(d: &Downlink) -> &callgate_common::wire::CampaignBrief {
    match d {
        Downlink::Campaign(b) => b,
        _ => panic!("not a brief"),
    }
}

/// One contact (number index `i`) with these fields, leased for an hour.
pub fn one_contact(i: u64, fields: &[(&str, &str)]) -> Downlink {
    let hour = callgate_common::time::UnixMillis::now().plus_millis(3_600_000);
    let mut lease = crate::dialer_support::lease(1, i..i + 1, hour, |_| false);
    if let Downlink::ContactLease(l) = &mut lease {
        for c in &mut l.contacts {
            c.fields = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
    }
    lease
}

/// The call records in the rig's outbox.
pub async fn call_records(rig: &Rig) -> Vec<CallRecord> {
    rig.uplinks()
        .await
        .into_iter()
        .filter_map(|u| match u {
            Uplink::CallRecord(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The call records in the rig's outbox once there are at least `n` (or all there are when
/// `within` has passed).
pub async fn wait_for_records(rig: &Rig, n: usize, within: Duration) -> Vec<CallRecord> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let records = call_records(rig).await;
        if records.len() >= n || std::time::Instant::now() >= deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one call of the robot campaign to `callee` through `placement`; returns its record.
pub async fn one_call(
    rig: &mut Rig,
    callee: &Callee,
    placement: Arc<dyn AnsweredCallPlacement>,
    brief: Downlink,
    contact: Downlink,
) -> CallRecord {
    let hour = callgate_common::time::UnixMillis::now().plus_millis(3_600_000);
    rig.feed(brief).await;
    rig.feed(contact).await;
    rig.feed(crate::dialer_support::grant(1, hour)).await;
    start_with(rig, callee.addr, placement).await;
    rig.settled(Duration::from_secs(90)).await;
    // A call an agent talked on is released at once; its record follows the agent's
    // wrap-up (a stopping dialer would send it with what the desk saved so far).
    let mut records = wait_for_records(rig, 1, Duration::from_secs(90)).await;
    rig.dialer.take().unwrap().stop().await;
    assert_eq!(
        records.len(),
        1,
        "one call, one record: {records:?}\n{}",
        callee.errors()
    );
    let r = records.remove(0);
    assert_eq!(r.campaign, Some(CAMPAIGN));
    r
}

/// A robot script that asks the callee to press 1 (`prompt`, waiting `timeout_ms`) and then
/// transfers to agent group 2; no agent ends as `no_agent`, no key as `no_response`.
pub fn transfer_script(name: &str, prompt: &str, timeout_ms: u32) -> String {
    format!(
        r#"
format = 1
name = "{name}"
version = 1
start = "ask"

[steps.ask]
kind = "collect"
prompt = {{ say = "{prompt}" }}
max_digits = 1
timeout_ms = {timeout_ms}
retries = 0
valid = ["1"]
into = "choice"
next = "agent"
on_no_input = "bye"
on_invalid = "bye"

[steps.agent]
kind = "transfer"
group = 2
on_no_agent = "no_agent"

[steps.no_agent]
kind = "hangup"
disposition = "no_agent"

[steps.bye]
kind = "hangup"
disposition = "no_response"
"#
    )
}
