//! Shared by the `dialer_*` tests: a SIPp carrier, and a dialer wired to it on a temp store
//! with its holdings fed straight through the store (no coordinator).

#![allow(dead_code, unreachable_pub)]

use callgate_appliance::dialer::driver::{DialerControl, DialerSettings, DialerTask, SharedOutbox};
use callgate_appliance::dialer::placement::Announcement;
use callgate_appliance::dialer::store;
use callgate_appliance::media::RtpPortRange;
use callgate_appliance::sip::udp::{UdpTrunkRouter, WireRecord};
use callgate_appliance::store::Store;
use callgate_appliance::sync::outbox_store::UplinkOutbox;
use callgate_common::compliance::{AbandonBudget, AttemptCaps, CallingWindow, ComplianceProfile};
use callgate_common::ids::{CampaignId, ContactId, LeaseId, TrunkId};
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    CallOutcome, CampaignBrief, ContactLease, DialMode, Downlink, LeasedContact, PacingGrant,
    Uplink,
};
use callgate_media::prompt::Prompt;
use callgate_pacing::{PacingConfig, TrunkLimits};
use callgate_sip::agent::AgentConfig;
use callgate_sip::trunk::router::RouterConfig;
use callgate_sip::trunk::{Trunk, TrunkGroup};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, RwLock};

/// The campaign every test dials.
pub const CAMPAIGN: CampaignId = CampaignId(11);

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// SIPp as the carrier (`carrier_mix.xml`, echoing the RTP it gets), killed when dropped.
pub struct Carrier {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Carrier {
    /// Starts the carrier. It takes any number of calls: the tests count calls on the
    /// dialer's side, since SIPp can count one INVITE twice when a retransmission crosses a
    /// fast final response.
    pub fn start() -> Carrier {
        Carrier::start_with("carrier_mix.xml")
    }

    /// Starts the carrier with another scenario from `tests/sipp/`.
    pub fn start_with(scenario: &str) -> Carrier {
        Carrier::spawn(scenario, false)
    }

    /// [`Carrier::start`], logging every message SIPp receives (see
    /// [`Carrier::invites_received`]).
    pub fn start_traced() -> Carrier {
        Carrier::spawn("carrier_mix.xml", true)
    }

    fn spawn(scenario: &str, trace_messages: bool) -> Carrier {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let scenario = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &free_udp_port().to_string(), "-rtp_echo"])
            .args(["-l", "1000"])
            .args([
                "-nostdin",
                "-timeout",
                "180",
                "-timeout_error",
                "-trace_err",
            ])
            .args(trace_messages.then_some("-trace_msg"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp is installed by scripts/setup (package sip-tester)");
        Carrier {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    /// INVITEs SIPp received so far, as its message log (`start_traced`) shows them;
    /// a retransmission counts again.
    pub fn invites_received(&self) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with("messages.log") {
                let log = std::fs::read_to_string(&p).unwrap_or_default();
                n += log.lines().filter(|l| l.starts_with("INVITE sip:")).count();
            }
        }
        n
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

/// A dialer on a temp store, dialling through a traced router to `carrier`.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub outbox: SharedOutbox,
    pub dialer: Option<DialerTask>,
    pub wire: mpsc::UnboundedReceiver<WireRecord>,
    /// Recording of answered calls, when a test sets it before starting the dialer.
    pub recording: Option<callgate_appliance::recording::ValidRecording>,
    /// The carrier trunk's channel limit (the router's; the executor is told 200).
    pub trunk_channels: u32,
    /// Why no new call may start, when a test watches that (set before starting the dialer).
    pub new_calls: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

/// The RTP range for one rig: 400 ports from a free one.
fn port_range() -> Arc<RtpPortRange> {
    let base = free_udp_port() & !1;
    let base = if base > 60_000 { 40_000 } else { base };
    Arc::new(RtpPortRange::new(base, base + 399).unwrap())
}

impl Rig {
    /// Opens a store in a temp dir.
    pub async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let outbox = UplinkOutbox::open(
            store.pool().clone(),
            callgate_common::outbox::OutboxConfig::default(),
        )
        .await
        .unwrap();
        let (_tx, wire) = mpsc::unbounded_channel();
        Rig {
            dir,
            store,
            outbox: Arc::new(RwLock::new(Arc::new(outbox))),
            dialer: None,
            wire,
            recording: None,
            trunk_channels: 200,
            new_calls: None,
        }
    }

    /// Starts (or restarts) the dialer against `carrier`.
    pub async fn start_dialer(&mut self, carrier: SocketAddr, ring_timeout: Duration) {
        let mut router = UdpTrunkRouter::start(
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
                max_channels: self.trunk_channels,
                max_cps: 1_000,
                priority: 0,
                weight: 1,
            }]),
            RouterConfig {
                probe: None,
                ..RouterConfig::default()
            },
            true,
        )
        .await
        .unwrap();
        let wire = router.take_wire().unwrap();
        // Keep what the earlier run logged.
        let mut old = std::mem::replace(&mut self.wire, wire);
        let (tx, merged) = mpsc::unbounded_channel();
        while let Ok(w) = old.try_recv() {
            tx.send(w).unwrap();
        }
        let mut fresh = std::mem::replace(&mut self.wire, merged);
        tokio::spawn(async move {
            while let Some(w) = fresh.recv().await {
                if tx.send(w).is_err() {
                    return;
                }
            }
        });
        let settings = DialerSettings {
            media_ip: "127.0.0.1".parse().unwrap(),
            ports: port_range(),
            ring_timeout,
            trunks: vec![(
                TrunkId::new("carrier").unwrap(),
                TrunkLimits {
                    max_concurrent: 200,
                    max_per_minute: 60_000,
                },
            )],
            recording: self.recording.clone(),
            pacing: PacingConfig::default(),
        };
        // 0.8 s: longer than the carrier's longest talk time before it hangs up itself.
        let announcement = Arc::new(Announcement::new(
            Prompt::tones(&[(440.0, 700, 100)], 8_000),
            CallOutcome::AnsweredHuman,
        ));
        let (control, mut receiver) = DialerControl::channel();
        if let Some(held) = &self.new_calls {
            receiver = receiver.with_new_calls(held.clone());
        }
        self.dialer = Some(
            DialerTask::start_with_control(
                settings,
                self.store.pool().clone(),
                self.outbox.clone(),
                router,
                announcement,
                (control, receiver),
            )
            .await
            .unwrap(),
        );
    }

    /// Applies a downlink message through the store, as the sync link would.
    pub async fn feed(&self, body: Downlink) {
        assert!(store::apply_now(self.store.pool(), &body).await.unwrap());
    }

    /// Contacts still pending or being dialled.
    pub async fn unsettled(&self) -> i64 {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM dialer_contacts WHERE state IN ('pending', 'dialling')",
        )
        .fetch_one(self.store.pool())
        .await
        .unwrap();
        n
    }

    /// Waits until no contact is pending or dialling and no attempt is in flight.
    pub async fn settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let status = self.dialer.as_ref().unwrap().status();
        loop {
            let in_flight: u32 = status.borrow().iter().map(|s| s.in_flight).sum();
            if in_flight == 0 && self.unsettled().await == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "campaign not settled: {:?}",
                *status.borrow()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every message in the outbox (nothing is acked: no coordinator runs).
    pub async fn uplinks(&self) -> Vec<Uplink> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
            .fetch_all(self.store.pool())
            .await
            .unwrap();
        rows.into_iter()
            .map(|(b,)| postcard::from_bytes(&b).unwrap())
            .collect()
    }

    /// The first INVITE of each call the dialer sent so far: (when, Request-URI user).
    pub fn invites(&mut self) -> Vec<(Instant, String, String)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while let Ok(w) = self.wire.try_recv() {
            if !w.outbound || !w.bytes.starts_with(b"INVITE ") {
                continue;
            }
            let text = String::from_utf8_lossy(&w.bytes).into_owned();
            let call_id = text
                .lines()
                .find_map(|l| l.strip_prefix("Call-ID:").or_else(|| l.strip_prefix("i:")))
                .unwrap_or("")
                .trim()
                .to_owned();
            let user = text
                .split_whitespace()
                .nth(1)
                .and_then(|uri| uri.strip_prefix("sip:"))
                .and_then(|u| u.split('@').next())
                .unwrap_or("")
                .to_owned();
            if seen.insert(call_id.clone()) {
                out.push((w.at, user, call_id));
            }
        }
        out
    }
}

/// Every day, all day.
pub fn all_day() -> CallingWindow {
    CallingWindow {
        start_minute: 0,
        end_minute: 1440,
        days: (0..7).collect(),
        holidays: vec![],
    }
}

/// A window of ±2 h around the current UTC minute: open in `Etc/UTC`, closed twelve hours
/// away (`Etc/GMT-12`).
pub fn window_around_now_utc() -> CallingWindow {
    let minute = (UnixMillis::now().0 / 60_000).rem_euclid(1440) as u16;
    CallingWindow {
        start_minute: minute.saturating_sub(120),
        end_minute: (minute + 120).min(1440),
        days: (0..7).collect(),
        holidays: vec![],
    }
}

/// An agentless campaign brief with the given window and a permissive profile.
pub fn agentless_brief(window: CallingWindow) -> Downlink {
    brief(DialMode::Agentless, window)
}

/// A campaign brief in `mode` with the given window and a permissive profile.
pub fn brief(mode: DialMode, window: CallingWindow) -> Downlink {
    Downlink::Campaign(CampaignBrief {
        campaign: CAMPAIGN,
        version: 1,
        name: "dialer test".into(),
        dial_mode: mode,
        running: true,
        profile: ComplianceProfile {
            abandon: AbandonBudget {
                cap_permille: 30,
                window_ms: 86_400_000,
            },
            caps: AttemptCaps {
                per_day: 3,
                per_week: 7,
            },
            window: all_day(),
            ..ComplianceProfile::us()
        },
        window,
        caller_id: "+442079460000".into(),
        script: String::new(),
        disposition_codes: vec![],
        wrap_up_seconds: 0,
        recording_consent_announcement: false,
        robot_script: None,
    })
}

/// A distinct UK number per contact.
pub fn number(i: u64) -> PhoneNumber {
    PhoneNumber::parse(&format!("+44207946{:04}", i), None).unwrap()
}

/// Contacts `range`, those for which `closed(i)` is true in `Etc/GMT-12`, the rest in UTC.
pub fn lease(
    lease: u64,
    range: std::ops::Range<u64>,
    expires_at: UnixMillis,
    closed: impl Fn(u64) -> bool,
) -> Downlink {
    Downlink::ContactLease(ContactLease {
        lease: LeaseId(lease),
        campaign: CAMPAIGN,
        issued_at: UnixMillis::now(),
        expires_at,
        contacts: range
            .map(|i| LeasedContact {
                contact: ContactId(i),
                number: number(i),
                time_zones: vec![if closed(i) { "Etc/GMT-12" } else { "Etc/UTC" }.into()],
                attempts: 0,
                recent_attempts: vec![],
                dnc: vec![],
                fields: vec![],
                tags: vec![],
                last_outcome: None,
                last_agent: None,
            })
            .collect(),
    })
}

/// A grant for the campaign.
pub fn grant(max_concurrent: u32, expires_at: UnixMillis) -> Downlink {
    Downlink::PacingGrant(PacingGrant {
        campaign: CAMPAIGN,
        max_concurrent,
        max_attempts_per_minute: 10_000,
        abandon_budget: 0,
        expires_at,
    })
}
