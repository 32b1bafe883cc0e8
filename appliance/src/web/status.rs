//! What the status and network pages show, gathered from the daemon and the system.
//!
//! The call engine's live parts (trunks with their OPTIONS probe state, calls in progress,
//! agents by state, and one line per call in progress: masked number, trunk, direction,
//! phase, since when) come through two small source traits, [`TrunkSource`] (the running
//! trunk router, `crate::sip::udp::TrunkControl`) and [`AgentSource`] (the agent desk),
//! handed to the UI with [`super::WebUi::with_engine`]; this module only reads them.

use crate::agents::desk::PacingCounts;
use crate::dialer::executor::{CampaignRun, DialerStatus};
use crate::sip::live_calls::{CallDirection, CallPhase, LiveCall};
use crate::store::Store;
use crate::sync::outbox_store::UplinkOutbox;
use crate::sync::status::{LinkState, LinkStatusCell};
use callgate_common::time::UnixMillis;
use callgate_sip::trunk::TrunkState;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The running trunk router as the status page reads it.
pub trait TrunkSource: Send + Sync + 'static {
    /// The trunks in service with their probe health, calls up and figures; `Err` says why
    /// they cannot be read (the engine stopped).
    fn trunk_states(&self) -> BoxFuture<'_, Result<Vec<TrunkState>, String>>;
    /// The calls in progress (numbers masked), updated as they change; `None` when the
    /// source keeps no per-call list.
    fn live_calls(&self) -> Option<tokio::sync::watch::Receiver<Vec<LiveCall>>> {
        None
    }
}

/// A boxed future, for the object-safe source traits.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl TrunkSource for crate::sip::udp::TrunkControl {
    fn trunk_states(&self) -> BoxFuture<'_, Result<Vec<TrunkState>, String>> {
        Box::pin(async move { self.trunks().await.map_err(|e| e.to_string()) })
    }
    fn live_calls(&self) -> Option<tokio::sync::watch::Receiver<Vec<LiveCall>>> {
        Some(self.calls())
    }
}

/// The agent desk as the status page reads it.
pub trait AgentSource: Send + Sync + 'static {
    /// Agents by state now.
    fn agent_counts(&self) -> PacingCounts;
    /// Changes whenever an agent's state may have changed (wakes the live stream).
    fn agent_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}

impl AgentSource for crate::agents::service::AgentDeskService {
    fn agent_counts(&self) -> PacingCounts {
        self.pacing_counts()
    }
    fn agent_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes())
    }
}

/// The call engine's live parts the status page shows; every part is optional (a box
/// without `[sip]` has none).
#[derive(Clone, Default)]
pub struct LiveEngine {
    /// The running trunk router.
    pub trunks: Option<Arc<dyn TrunkSource>>,
    /// Whether OPTIONS probing is configured (`[sip.probe]`); without it trunks are never
    /// marked down by probes.
    pub probing: bool,
    /// The agent desk (default: the one given to [`super::WebUi::bind_with_agents`]).
    pub agents: Option<Arc<dyn AgentSource>>,
    /// The inbound calls offered to the agents' SIP side (default: those of the agents'
    /// SIP control given to [`super::WebUi::with_engine`]).
    pub inbound_calls: Option<tokio::sync::watch::Receiver<Vec<LiveCall>>>,
    /// Test calls the diagnostics page is placing (on ports of their own, beside the
    /// engine), each described; set by the UI itself.
    pub(crate) test_calls: Arc<tokio::sync::watch::Sender<Vec<String>>>,
}

/// The trunks, each with its probe state, calls and (when it registers) its registration
/// as of `now`, joined with `; `.
pub fn describe_trunks(trunks: &[TrunkState], probing: bool, now: Instant) -> String {
    if trunks.is_empty() {
        return "none configured".into();
    }
    trunks
        .iter()
        .map(|t| {
            let probe = match (probing, t.health.is_up()) {
                (false, _) => "up (not probed: no [sip.probe])",
                (true, true) => "up (answers OPTIONS)",
                (true, false) => "DOWN (OPTIONS unanswered)",
            };
            let asr = t
                .figures
                .asr_percent()
                .map(|a| format!(", ASR {a:.0}%"))
                .unwrap_or_default();
            let registration = t
                .registration
                .as_ref()
                .map(|r| format!(", {}", r.describe(now)))
                .unwrap_or_default();
            format!(
                "{} {}: {probe}, {}/{} calls{asr}{registration}",
                t.trunk.name, t.trunk.address, t.active, t.trunk.max_channels
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Calls up on the trunks, in total and per trunk.
pub fn describe_calls(trunks: &[TrunkState]) -> String {
    let total: u32 = trunks.iter().map(|t| t.active).sum();
    if total == 0 {
        return "none".into();
    }
    let per: Vec<String> = trunks
        .iter()
        .filter(|t| t.active > 0)
        .map(|t| format!("{} on {}", t.active, t.trunk.name))
        .collect();
    format!("{total} in progress ({})", per.join(", "))
}

/// One call in progress as the status page's call table shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallLine {
    /// The number, masked.
    pub number: String,
    /// The trunk carrying it, or `choosing` until one answered (`—` for an inbound call:
    /// the agents' side does not know the trunk).
    pub trunk: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// `trying`, `ringing` or `up`.
    pub state: String,
    /// When it started, with how long ago; for an answered call also how long it is up.
    pub since: String,
}

/// The calls in progress, one line each, oldest first. `at`/`now` are the same moment on
/// the monotonic and the wall clock.
pub fn describe_call_list(calls: &[LiveCall], at: Instant, now: UnixMillis) -> Vec<CallLine> {
    let wall = |t: Instant| {
        let ago = at.saturating_duration_since(t);
        let ms = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        (UnixMillis(now.0.saturating_sub(ms)), ago.as_secs())
    };
    calls
        .iter()
        .map(|c| {
            let (started, ago) = wall(c.started);
            let up = c
                .answered
                .map(|t| format!(", up {}", human_duration(wall(t).1)))
                .unwrap_or_default();
            CallLine {
                number: c.number.clone(),
                trunk: match (&c.trunk, c.direction) {
                    (Some(t), _) => t.clone(),
                    (None, CallDirection::Outbound) => "choosing".into(),
                    (None, CallDirection::Inbound) => "—".into(),
                },
                direction: match c.direction {
                    CallDirection::Outbound => "outbound".into(),
                    CallDirection::Inbound => "inbound".into(),
                },
                state: match c.phase {
                    CallPhase::Trying => "trying".into(),
                    CallPhase::Ringing => "ringing".into(),
                    CallPhase::Up => "up".into(),
                },
                since: format!("{} ({} ago{up})", utc_seconds(started), human_duration(ago)),
            }
        })
        .collect()
}

/// Agents by state.
pub fn describe_agents(c: &PacingCounts) -> String {
    let talking = c.talking_outbound + c.talking_inbound;
    let wrap_up = c.wrap_up_ends.len() as u32;
    let logged_in = c.ready_before_queue + c.reserved + talking + wrap_up + c.paused;
    format!(
        "{logged_in} logged in: {} ready, {} connecting a call, {talking} talking, {wrap_up} in \
         wrap-up, {} paused; {} inbound waiting",
        c.ready_before_queue, c.reserved, c.paused, c.inbound_waiting
    )
}

/// The daemon's facts the UI reads.
#[derive(Clone)]
pub struct StatusSource {
    /// The box's id, when set.
    pub appliance: Option<String>,
    /// When the daemon started.
    pub started: Instant,
    /// The store, for its health.
    pub store: Store,
    /// The data directory, for disk use.
    pub data_dir: PathBuf,
    /// The last board temperature, m°C.
    pub temperature: Arc<Mutex<Option<i32>>>,
    /// The link to the coordinator.
    pub link: LinkStatusCell,
    /// The uplink outbox, while the box is enrolled.
    pub outbox: Option<Arc<tokio::sync::RwLock<Arc<UplinkOutbox>>>>,
    /// The campaign executor's view of each campaign, when the dialer runs.
    pub campaigns: Option<tokio::sync::watch::Receiver<Vec<DialerStatus>>>,
}

/// One status snapshot, as the page and the live stream show it (all values as text).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// When it was taken (UTC, to the second).
    pub updated: String,
    /// The box's id.
    pub appliance: String,
    /// Firmware version.
    pub firmware: String,
    /// Uptime, `3d 4h 5m 6s`.
    pub uptime: String,
    /// `ok` or the store's error.
    pub store: String,
    /// `41.2 °C` or `no sensor reading`.
    pub temperature: String,
    /// `12% used, 3456 MiB free`.
    pub disk: String,
    /// `online since …`, `offline since … (reason)` or `not enrolled`.
    pub cloud_link: String,
    /// When the coordinator was last heard from.
    pub last_downlink: String,
    /// Messages waiting for the coordinator's acknowledgement.
    pub outbox: String,
    /// Each campaign the box holds: dialling or why not, and its counts.
    pub campaigns: String,
    /// Each trunk with its OPTIONS probe state and calls.
    pub trunks: String,
    /// Calls in progress on the trunks.
    pub calls: String,
    /// One line per call in progress (the page's call table).
    pub call_list: Vec<CallLine>,
    /// Agents logged in, by state.
    pub agents: String,
    /// The calls a technician can listen to on the headset now (the diagnostics page's
    /// listen form).
    pub listenable: Vec<ListenOption>,
}

/// A call one can listen to, as the listen form offers it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListenOption {
    /// The call's id (the form's value).
    pub call: String,
    /// Masked number, what the call is, since when.
    pub label: String,
}

impl StatusSource {
    /// Takes a snapshot now, with the call engine's live parts from `engine`.
    pub async fn snapshot_with(&self, now: UnixMillis, engine: &LiveEngine) -> StatusSnapshot {
        let mut s = self.snapshot(now).await;
        let mut list = match &engine.inbound_calls {
            Some(calls) => calls.borrow().clone(),
            None => Vec::new(),
        };
        match &engine.trunks {
            Some(source) => match source.trunk_states().await {
                Ok(trunks) => {
                    s.trunks = describe_trunks(&trunks, engine.probing, Instant::now());
                    s.calls = describe_calls(&trunks);
                    if let Some(calls) = source.live_calls() {
                        list.extend(calls.borrow().iter().cloned());
                    }
                }
                Err(e) => {
                    s.trunks = format!("unreadable: {e}");
                    s.calls = s.trunks.clone();
                }
            },
            None => {
                s.trunks = "SIP engine off (no [sip] section)".into();
                s.calls = "none (SIP engine off)".into();
            }
        }
        list.sort_by_key(|c| c.started);
        s.call_list = describe_call_list(&list, Instant::now(), now);
        let tests = engine.test_calls.borrow().clone();
        if !tests.is_empty() {
            s.calls = if s.calls.starts_with("none") {
                tests.join("; ")
            } else {
                format!("{}; {}", s.calls, tests.join("; "))
            };
        }
        s.agents = match &engine.agents {
            Some(desk) => describe_agents(&desk.agent_counts()),
            None => "agent desk off".into(),
        };
        s
    }

    /// Takes a snapshot now (without the call engine's parts).
    pub async fn snapshot(&self, now: UnixMillis) -> StatusSnapshot {
        let store = match self.store.ping().await {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failing: {e}"),
        };
        let temperature = match *self.temperature.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(mc) => format!("{:.1} °C", f64::from(mc) / 1000.0),
            None => "no sensor reading".into(),
        };
        StatusSnapshot {
            updated: utc_seconds(now),
            appliance: self
                .appliance
                .clone()
                .unwrap_or_else(|| "not enrolled".into()),
            firmware: env!("CARGO_PKG_VERSION").into(),
            uptime: human_duration(self.started.elapsed().as_secs()),
            store,
            temperature,
            disk: disk_use(&self.data_dir),
            cloud_link: describe_link(&self.link.current().state, now),
            last_downlink: match self.link.current().last_downlink {
                Some(t) => utc_seconds(t),
                None => "never".into(),
            },
            outbox: match &self.outbox {
                Some(outbox) => {
                    let (waiting, acked) = outbox.read().await.depth().await;
                    format!("{waiting} waiting, acknowledged up to #{acked}")
                }
                None => "off (not enrolled)".into(),
            },
            campaigns: match &self.campaigns {
                Some(rx) => describe_campaigns(&rx.borrow()),
                None => "dialler off (no [sip] section)".into(),
            },
            trunks: String::new(),
            calls: String::new(),
            call_list: Vec::new(),
            agents: String::new(),
            listenable: super::diagnostics::listenable_calls()
                .into_iter()
                .map(|(call, label)| ListenOption { call, label })
                .collect(),
        }
    }
}

/// The campaigns in one line each, joined with `; `: what they do and why.
pub fn describe_campaigns(campaigns: &[DialerStatus]) -> String {
    if campaigns.is_empty() {
        return "none held".into();
    }
    campaigns
        .iter()
        .map(|c| {
            let name = if c.name.is_empty() {
                format!("campaign {}", c.campaign)
            } else {
                c.name.clone()
            };
            let run = match &c.run {
                CampaignRun::Dialling => "dialling".to_string(),
                CampaignRun::Limited(why) => format!("dialling, limited: {why}"),
                CampaignRun::Waiting(why) => format!("waiting: {why}"),
                CampaignRun::Stopped(why) => format!("stopped: {why}"),
            };
            let grant = c
                .grant_expires_at
                .map(|t| format!(", grant until {}", utc_seconds(t)))
                .unwrap_or_default();
            format!(
                "{name}: {run} — {} in flight, {} pending, {} dialled, {} refused, {} returned{grant}",
                c.in_flight, c.pending, c.dialled, c.refused, c.returned
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The link state in words, with how long it has been so.
pub fn describe_link(state: &LinkState, now: UnixMillis) -> String {
    let ago = |since: UnixMillis| {
        let secs = u64::try_from((now.0 - since.0).max(0) / 1000).unwrap_or(0);
        format!("{} ({} ago)", utc_seconds(since), human_duration(secs))
    };
    match state {
        LinkState::NotEnrolled => "not enrolled".into(),
        LinkState::Connecting { since } => format!("connecting since {}", ago(*since)),
        LinkState::Online { since } => format!("online since {}", ago(*since)),
        LinkState::Offline { since, reason } => {
            format!("offline since {}: {reason}", ago(*since))
        }
    }
}

/// `2026-11-21 06:42:07 UTC`.
pub fn utc_seconds(now: UnixMillis) -> String {
    let secs = now.0.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3d 4h 5m 6s`, leaving out leading zero units.
pub fn human_duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
    ];
    let mut out = String::new();
    for (n, unit) in parts {
        if n > 0 || !out.is_empty() {
            out.push_str(&format!("{n}{unit} "));
        }
    }
    out.push_str(&format!("{}s", secs % 60));
    out
}

fn disk_use(dir: &Path) -> String {
    match rustix::fs::statvfs(dir) {
        Ok(s) if s.f_blocks > 0 => {
            let used = 100 - (s.f_bavail * 100 / s.f_blocks);
            format!("{used}% used, {} MiB free", (s.f_bavail * s.f_frsize) >> 20)
        }
        Ok(_) => "unknown".into(),
        Err(e) => format!("unreadable: {e}"),
    }
}

/// Nameservers from a resolv.conf.
pub fn dns_servers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The default gateway from `/proc/net/route` text.
pub fn default_gateway(proc_net_route: &str) -> Option<String> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            let ip = std::net::Ipv4Addr::from(gw.to_le_bytes());
            Some(format!("{ip} via {}", f[0]))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates_across_leap_years() {
        assert_eq!(utc_seconds(UnixMillis(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc_seconds(UnixMillis(951_782_400_000)),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            utc_seconds(UnixMillis(1_795_245_727_000)),
            "2026-11-21 07:22:07 UTC"
        );
    }

    #[test]
    fn the_link_state_reads_as_since_when_and_why() {
        let now = UnixMillis(1_795_245_727_000);
        assert_eq!(describe_link(&LinkState::NotEnrolled, now), "not enrolled");
        assert_eq!(
            describe_link(
                &LinkState::Offline {
                    since: UnixMillis(now.0 - 3_725_000),
                    reason: "connection refused".into()
                },
                now
            ),
            "offline since 2026-11-21 06:20:02 UTC (1h 2m 5s ago): connection refused"
        );
        assert_eq!(
            describe_link(&LinkState::Online { since: now }, now),
            "online since 2026-11-21 07:22:07 UTC (0s ago)"
        );
    }

    #[test]
    fn each_campaign_says_whether_it_dials_and_why_not() {
        use callgate_common::ids::CampaignId;
        let status = |name: &str, run: CampaignRun| DialerStatus {
            campaign: CampaignId(7),
            name: name.into(),
            mode: None,
            run,
            in_flight: 2,
            pending: 40,
            dialled: 10,
            refused: 1,
            returned: 0,
            grant_expires_at: Some(UnixMillis(1_795_245_727_000)),
            tally: Default::default(),
        };
        assert_eq!(describe_campaigns(&[]), "none held");
        let text = describe_campaigns(&[
            status("renewals", CampaignRun::Dialling),
            status(
                "",
                CampaignRun::Stopped("grant expired: the cloud is unreachable".into()),
            ),
        ]);
        assert_eq!(
            text,
            "renewals: dialling — 2 in flight, 40 pending, 10 dialled, 1 refused, 0 returned, \
             grant until 2026-11-21 07:22:07 UTC; campaign 7: stopped: grant expired: the cloud \
             is unreachable — 2 in flight, 40 pending, 10 dialled, 1 refused, 0 returned, grant \
             until 2026-11-21 07:22:07 UTC"
        );
    }

    #[test]
    fn trunks_show_their_probe_state_and_calls_and_agents_their_states() {
        use callgate_sip::trunk::{RegistrationState, Trunk, TrunkGroup};
        use std::time::Duration;
        let trunk = |name: &str, port: u16| Trunk {
            name: name.into(),
            address: ([127, 0, 0, 1], port).into(),
            domain: "127.0.0.1".into(),
            credentials: None,
            max_channels: 4,
            max_cps: 2,
            priority: 0,
            weight: 1,
        };
        let mut group = TrunkGroup::new(vec![trunk("a", 5070), trunk("b", 5080)]);
        let now = Instant::now();
        group.trunks[0].seize(now);
        group.trunks[0].seize(now);
        let policy = callgate_sip::trunk::ProbePolicy {
            failures_to_down: 1,
            ..Default::default()
        };
        let _ = group.trunks[1].health.record(408, &policy);
        assert_eq!(
            describe_trunks(&group.trunks, true, now),
            "a 127.0.0.1:5070: up (answers OPTIONS), 2/4 calls, ASR 0%; \
             b 127.0.0.1:5080: DOWN (OPTIONS unanswered), 0/4 calls"
        );
        assert!(describe_trunks(&group.trunks, false, now).contains("not probed"));
        group.trunks[0].registration = Some(RegistrationState::Registered {
            until: now + Duration::from_secs(118),
        });
        group.trunks[1].registration = Some(RegistrationState::Failed {
            status: 403,
            reason: "Forbidden".into(),
            next_try: now + Duration::from_millis(3_200),
        });
        let shown = describe_trunks(&group.trunks, true, now);
        assert!(
            shown.contains("ASR 0%, registered for 118 s more;"),
            "{shown}"
        );
        assert!(
            shown.ends_with("0/4 calls, registration FAILED: 403 Forbidden, next try in 4 s"),
            "{shown}"
        );
        assert_eq!(describe_calls(&group.trunks), "2 in progress (2 on a)");
        assert_eq!(describe_calls(&group.trunks[1..]), "none");
        let counts = PacingCounts {
            ready: 1,
            ready_before_queue: 2,
            reserved: 1,
            talking_outbound: 1,
            talking_inbound: 1,
            wrap_up_ends: vec![UnixMillis(5)],
            paused: 1,
            inbound_waiting: 1,
        };
        assert_eq!(
            describe_agents(&counts),
            "7 logged in: 2 ready, 1 connecting a call, 2 talking, 1 in wrap-up, 1 paused; \
             1 inbound waiting"
        );
    }

    #[tokio::test]
    async fn the_snapshot_lists_the_agents_sides_inbound_calls_even_without_a_trunk_router() {
        use crate::sip::live_calls::LiveCalls;
        use callgate_sip::agent::{AgentEvent, LegId};
        let dir = tempfile::tempdir().unwrap();
        let source = StatusSource {
            appliance: None,
            started: Instant::now(),
            store: crate::store::Store::open(dir.path()).await.unwrap(),
            data_dir: dir.path().to_path_buf(),
            temperature: Arc::default(),
            link: crate::sync::status::LinkStatusCell::new(
                crate::sync::status::LinkStatus::not_enrolled(),
            ),
            outbox: None,
            campaigns: None,
        };
        let mut calls = LiveCalls::default();
        calls.on_agent_event(
            Instant::now(),
            &AgentEvent::Incoming {
                leg: LegId(9),
                from: "<sip:+442071234567@carrier>".into(),
                number: "4930777".into(),
                trunk: Some("carrier".into()),
                target: callgate_sip::inbound::RouteTarget::AgentGroup("support".into()),
                body: Vec::new(),
            },
        );
        let (_tx, inbound) = tokio::sync::watch::channel(calls.list());
        let engine = LiveEngine {
            inbound_calls: Some(inbound),
            ..LiveEngine::default()
        };
        let s = source.snapshot_with(UnixMillis::now(), &engine).await;
        assert_eq!(s.call_list.len(), 1, "{:?}", s.call_list);
        assert_eq!(s.call_list[0].direction, "inbound");
        let s = source
            .snapshot_with(UnixMillis::now(), &LiveEngine::default())
            .await;
        assert!(s.call_list.is_empty());
    }

    #[test]
    fn an_inbound_call_on_the_agents_side_is_a_line_marked_inbound_with_its_trunk_if_known() {
        use crate::sip::live_calls::LiveCalls;
        use callgate_sip::agent::{AgentEvent, LegId};
        let t0 = Instant::now();
        let mut calls = LiveCalls::default();
        calls.on_agent_event(
            t0,
            &AgentEvent::Incoming {
                leg: LegId(5),
                from: "<sip:+442071234567@carrier>".into(),
                number: "4930777".into(),
                trunk: None,
                target: callgate_sip::inbound::RouteTarget::AgentGroup("support".into()),
                body: Vec::new(),
            },
        );
        let lines = describe_call_list(&calls.list(), t0, UnixMillis(1_795_245_727_000));
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].trunk.as_str(), lines[0].direction.as_str()),
            ("—", "inbound")
        );
        assert_eq!(lines[0].state, "ringing");
        assert!(!lines[0].number.contains("2071234567"), "{:?}", lines[0]);
    }

    #[test]
    fn each_call_in_progress_is_a_line_with_masked_number_trunk_direction_and_since() {
        use crate::sip::live_calls::LiveCalls;
        use callgate_sip::trunk::router::{AttemptId, DialEvent};
        use std::time::Duration;
        let t0 = Instant::now();
        let mut calls = LiveCalls::default();
        calls.dialled(t0, AttemptId(1), "+442071234567");
        calls.dialled(t0 + Duration::from_secs(30), AttemptId(2), "+33612345678");
        calls.on_event(
            t0 + Duration::from_secs(5),
            &DialEvent::Answered {
                attempt: AttemptId(1),
                trunk: "carrier".into(),
                body: Vec::new(),
            },
        );
        let now = UnixMillis(1_795_245_727_000);
        let lines = describe_call_list(&calls.list(), t0 + Duration::from_secs(65), now);
        assert_eq!(
            lines,
            vec![
                CallLine {
                    number: callgate_common::phone::PhoneNumber::parse("+442071234567", None)
                        .unwrap()
                        .masked(),
                    trunk: "carrier".into(),
                    direction: "outbound".into(),
                    state: "up".into(),
                    since: "2026-11-21 07:21:02 UTC (1m 5s ago, up 1m 0s)".into(),
                },
                CallLine {
                    number: callgate_common::phone::PhoneNumber::parse("+33612345678", None)
                        .unwrap()
                        .masked(),
                    trunk: "choosing".into(),
                    direction: "outbound".into(),
                    state: "trying".into(),
                    since: "2026-11-21 07:21:32 UTC (35s ago)".into(),
                },
            ]
        );
        assert!(lines.iter().all(|l| !l.number.contains("2071234567")));
    }

    #[test]
    fn durations_leave_out_leading_zero_units() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(3_661), "1h 1m 1s");
        assert_eq!(human_duration(90_000), "1d 1h 0m 0s");
    }

    #[test]
    fn reads_dns_and_the_default_route() {
        let conf = "# generated\nnameserver 10.0.0.53\nsearch lan\nnameserver  1.1.1.1 \n";
        assert_eq!(dns_servers(conf), vec!["10.0.0.53", "1.1.1.1"]);
        let route = "Iface\tDestination\tGateway\tFlags\n\
                     eth0\t0000A8C0\t00000000\t0001\n\
                     eth0\t00000000\t0100A8C0\t0003\n";
        assert_eq!(default_gateway(route), Some("192.168.0.1 via eth0".into()));
        assert_eq!(default_gateway("Iface\tDestination\n"), None);
    }
}
