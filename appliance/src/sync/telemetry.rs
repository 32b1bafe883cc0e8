//! The box's telemetry producer: samples what the daemon's parts report (the dialer's
//! campaigns, the trunk router's trunks with their OPTIONS probe state, the agent desk's
//! counts, the board's temperature, the data partition, the outbox itself) and sends an `Uplink::Telemetry` through the outbox when it changed — at
//! most once per `min_gap` — and at least once per `heartbeat`.
//!
//! Owns no table: the outbox coalesces unsent telemetry (latest wins), so however long the
//! link is down, one report waits. It never blocks a record: a report refused by the
//! outbox's quota is logged and dropped (telemetry is the first thing to give up).
//!
//! The sources are handed in as `watch::Receiver`s and closures ([`TelemetrySources`]) so
//! that this room does not reach into the dialer's or the agents' internals; `server.rs`
//! wires them. [`TelemetryPacer`] is the sans-IO decision; [`run`] is its tokio driver.

use super::outbox_store::SharedOutbox;
use crate::dialer::DialerStatus;
use crate::web::status::TrunkSource;
use callgate_common::ids::TrunkId;
use callgate_common::wire::{CampaignCalls, Telemetry, TrunkHealth, Uplink};
use callgate_sip::trunk::TrunkState;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A count the daemon reads on demand (e.g. agents ready from the desk).
pub type CountFn = Box<dyn Fn() -> u32 + Send + Sync>;
/// The board temperature in m°C, when the board has a sensor.
pub type TemperatureFn = Box<dyn Fn() -> Option<i32> + Send + Sync>;

/// What the producer samples; every source is optional (a box without `[sip]` has no
/// dialer, a development machine no board).
pub struct TelemetrySources {
    /// The data directory, whose partition's use is reported.
    pub data_dir: PathBuf,
    /// `DialerTask::status()`: every campaign's status; calls up = the sum of `in_flight`.
    pub campaigns: Option<watch::Receiver<Vec<DialerStatus>>>,
    /// Agents logged in and ready (the desk's `pacing_counts().ready_before_queue`).
    pub agents_ready: Option<CountFn>,
    /// Changes whenever an agent's state may have changed (the desk's `changes()`).
    pub agents_changed: Option<watch::Receiver<u64>>,
    /// The board temperature.
    pub temperature: Option<TemperatureFn>,
    /// The running trunk router (the dialer's `trunk_control()`): each trunk's name, probe
    /// state, calls up and figures. Read every [`TRUNK_POLL`], since a probe's verdict
    /// announces itself nowhere else.
    pub trunks: Option<Arc<dyn TrunkSource>>,
}

/// How often the trunks are read when there are some (a change is still sent at most once
/// per `min_gap`).
pub const TRUNK_POLL: Duration = Duration::from_secs(1);

/// The trunks as the coordinator sees them: name, up or down as the OPTIONS probes judge,
/// calls up, answer-seizure ratio and mean post-dial delay. A trunk whose configured name
/// is not a valid [`TrunkId`] is left out (config validation refuses such names).
pub fn trunk_health(states: &[TrunkState]) -> Vec<TrunkHealth> {
    states
        .iter()
        .filter_map(|s| {
            let trunk = TrunkId::new(s.trunk.name.clone()).ok()?;
            Some(TrunkHealth {
                trunk,
                up: s.health.is_up(),
                active_calls: s.active,
                asr_permille: (s.figures.attempts > 0).then(|| {
                    (s.figures.answered.min(s.figures.attempts) * 1000 / s.figures.attempts) as u16
                }),
                pdd_ms: s
                    .figures
                    .mean_pdd()
                    .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            })
        })
        .collect()
}

impl std::fmt::Debug for TelemetrySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySources")
            .field("data_dir", &self.data_dir)
            .field("campaigns", &self.campaigns.is_some())
            .field("agents_ready", &self.agents_ready.is_some())
            .field("temperature", &self.temperature.is_some())
            .field("trunks", &self.trunks.is_some())
            .finish()
    }
}

/// One sample: the box's telemetry and its calls up per campaign (sent as
/// `Uplink::Telemetry` and, when they changed, `Uplink::CampaignCalls`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The box's figures.
    pub telemetry: Telemetry,
    /// Calls up per campaign, campaigns with none left out, ordered by campaign.
    pub campaigns: Vec<CampaignCalls>,
}

/// Decides when a sampled report is sent. Sans-IO: time is passed in.
#[derive(Debug, Clone)]
pub struct TelemetryPacer {
    heartbeat: Duration,
    min_gap: Duration,
    last: Option<(Instant, Report)>,
    /// A changed report was held back by `min_gap`.
    dirty: bool,
}

/// Whether two reports differ in what an operator watches. The outbox depth and the disk
/// use move with every record and with the report itself; they ride along on the next
/// change or heartbeat instead of causing reports of their own.
fn significant(a: &Report, b: &Report) -> bool {
    a.campaigns != b.campaigns || significant_telemetry(&a.telemetry, &b.telemetry)
}

fn significant_telemetry(a: &Telemetry, b: &Telemetry) -> bool {
    a.active_calls != b.active_calls
        || a.agents_ready != b.agents_ready
        || a.trunks != b.trunks
        || a.temperature_decicelsius.map(|t| t / 10) != b.temperature_decicelsius.map(|t| t / 10)
}

impl TelemetryPacer {
    /// At least one report per `heartbeat`, at most one per `min_gap`.
    pub fn new(heartbeat: Duration, min_gap: Duration) -> TelemetryPacer {
        TelemetryPacer {
            heartbeat,
            min_gap: min_gap.min(heartbeat),
            last: None,
            dirty: false,
        }
    }

    /// A fresh sample; returns it when it is to be sent now.
    pub fn handle_sample(&mut self, now: Instant, sample: Report) -> Option<Report> {
        let send = match &self.last {
            None => true,
            Some((at, last)) => {
                let since = now.saturating_duration_since(*at);
                since >= self.heartbeat
                    || ((self.dirty || significant(last, &sample)) && since >= self.min_gap)
            }
        };
        if send {
            self.last = Some((now, sample.clone()));
            self.dirty = false;
            Some(sample)
        } else {
            if let Some((_, last)) = &self.last {
                self.dirty |= significant(last, &sample);
            }
            None
        }
    }

    /// When to sample again without being told of a change.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.last {
            None => None,
            Some((at, _)) if self.dirty => Some(*at + self.min_gap),
            Some((at, _)) => Some(*at + self.heartbeat),
        }
    }
}

/// Calls up per campaign from the dialer's statuses: campaigns with none left out,
/// ordered by campaign.
pub fn campaign_calls(statuses: &[DialerStatus]) -> Vec<CampaignCalls> {
    let mut calls: Vec<CampaignCalls> = statuses
        .iter()
        .filter(|s| s.in_flight > 0)
        .map(|s| CampaignCalls {
            campaign: s.campaign,
            calls: s.in_flight,
        })
        .collect();
    calls.sort_by_key(|c| c.campaign);
    calls
}

/// Reads every source once.
async fn sample(sources: &TelemetrySources, outbox: &SharedOutbox) -> Report {
    let campaigns = sources
        .campaigns
        .as_ref()
        .map(|c| campaign_calls(&c.borrow()))
        .unwrap_or_default();
    let active_calls = campaigns.iter().map(|c| c.calls).sum();
    let agents_ready = sources.agents_ready.as_ref().map(|f| f()).unwrap_or(0);
    let temperature_decicelsius = sources
        .temperature
        .as_ref()
        .and_then(|f| f())
        .and_then(|m| i16::try_from(m / 100).ok());
    let disk_used_percent = match rustix::fs::statvfs(&sources.data_dir) {
        Ok(s) if s.f_blocks > 0 => (100 - s.f_bavail.min(s.f_blocks) * 100 / s.f_blocks) as u8,
        _ => 0,
    };
    let trunks = match &sources.trunks {
        Some(router) => match router.trunk_states().await {
            Ok(states) => trunk_health(&states),
            Err(e) => {
                tracing::debug!(error = %e, "trunks not readable for telemetry");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let current = outbox.read().await.clone();
    let (depth, _) = current.depth().await;
    Report {
        telemetry: Telemetry {
            active_calls,
            agents_ready,
            trunks,
            disk_used_percent,
            temperature_decicelsius,
            outbox_depth: depth as u64,
        },
        campaigns,
    }
}

/// Resolves when `rx` changes; never when there is no such source.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                // The source stopped: stop listening to it, keep the heartbeat.
                *rx = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// Runs the producer until `stop` turns true: a report at once, then on every change (at
/// most one per `min_gap`) and at least one per `heartbeat`, each through the outbox
/// `outbox` holds at that moment.
pub async fn run(
    mut sources: TelemetrySources,
    outbox: SharedOutbox,
    heartbeat: Duration,
    min_gap: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut pacer = TelemetryPacer::new(heartbeat, min_gap);
    let mut campaigns = sources.campaigns.take();
    let mut agents = sources.agents_changed.take();
    // What the coordinator last got; `None` until the first report, which always carries
    // the per-campaign calls (even none) so a restarted box clears what it said before.
    let mut campaigns_sent: Option<Vec<CampaignCalls>> = None;
    loop {
        let report = {
            // Put the receivers back for the sample, take them again to wait on.
            sources.campaigns = campaigns.take();
            let s = sample(&sources, &outbox).await;
            campaigns = sources.campaigns.take();
            s
        };
        if let Some(report) = pacer.handle_sample(Instant::now(), report) {
            let current = outbox.read().await.clone();
            match current.send(&Uplink::Telemetry(report.telemetry)).await {
                Ok(_) => metrics::counter!("callgate_sync_telemetry_reports_total").increment(1),
                Err(e) => tracing::warn!(error = %e, "telemetry report not stored"),
            }
            if campaigns_sent.as_ref() != Some(&report.campaigns) {
                match current
                    .send(&Uplink::CampaignCalls(report.campaigns.clone()))
                    .await
                {
                    Ok(_) => campaigns_sent = Some(report.campaigns),
                    Err(e) => tracing::warn!(error = %e, "per-campaign calls not stored"),
                }
            }
        }
        let mut wake = pacer
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + min_gap);
        if sources.trunks.is_some() {
            wake = wake.min(Instant::now() + TRUNK_POLL);
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep_until(wake.into()) => {}
            () = changed(&mut campaigns) => {}
            () = changed(&mut agents) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(calls: u32, depth: u64) -> Report {
        Report {
            telemetry: Telemetry {
                active_calls: calls,
                agents_ready: 2,
                trunks: Vec::new(),
                disk_used_percent: 10,
                temperature_decicelsius: Some(412),
                outbox_depth: depth,
            },
            campaigns: Vec::new(),
        }
    }

    fn status(campaign: u64, in_flight: u32) -> DialerStatus {
        DialerStatus {
            campaign: callgate_common::ids::CampaignId(campaign),
            name: format!("campaign {campaign}"),
            mode: None,
            run: crate::dialer::CampaignRun::Dialling,
            in_flight,
            pending: 0,
            dialled: in_flight,
            refused: 0,
            returned: 0,
            grant_expires_at: None,
            tally: Default::default(),
        }
    }

    #[test]
    fn calls_move_from_one_campaign_to_another_is_a_change_even_at_the_same_total() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = TelemetryPacer::new(60 * s, 5 * s);
        let with = |calls: &[(u64, u32)]| {
            let statuses: Vec<DialerStatus> = calls.iter().map(|&(c, n)| status(c, n)).collect();
            let mut r = report(0, 0);
            r.campaigns = campaign_calls(&statuses);
            r.telemetry.active_calls = r.campaigns.iter().map(|c| c.calls).sum();
            r
        };
        assert!(p.handle_sample(t0, with(&[(1, 2), (2, 0)])).is_some());
        assert_eq!(
            with(&[(2, 0), (1, 2)]).campaigns,
            vec![CampaignCalls {
                campaign: callgate_common::ids::CampaignId(1),
                calls: 2
            }],
            "campaigns with no call are left out"
        );
        let moved = with(&[(1, 1), (2, 1)]);
        assert_eq!(moved.telemetry.active_calls, 2, "same total");
        assert_eq!(p.handle_sample(t0 + 10 * s, moved.clone()), Some(moved));
    }

    #[test]
    fn trunks_are_reported_with_their_probe_state_calls_asr_and_pdd() {
        use callgate_sip::trunk::{ProbePolicy, Trunk, TrunkGroup};
        let trunk = |name: &str| Trunk {
            name: name.into(),
            address: "127.0.0.1:5060".parse().unwrap(),
            domain: "carrier.example".into(),
            credentials: None,
            max_channels: 10,
            max_cps: 5,
            priority: 1,
            weight: 1,
        };
        let mut group = TrunkGroup::new(vec![trunk("carrier-a"), trunk("carrier-b")]);
        let policy = ProbePolicy {
            failures_to_down: 1,
            ..ProbePolicy::default()
        };
        let t0 = Instant::now();
        let a = &mut group.trunks[0];
        for _ in 0..4 {
            a.seize(t0);
        }
        a.release();
        a.figures.answered = 3;
        a.figures.pdd_samples = 2;
        a.figures.pdd_total = Duration::from_millis(3_000);
        group.trunks[1].health.record(408, &policy);
        let report = trunk_health(&group.trunks);
        assert_eq!(
            report,
            vec![
                TrunkHealth {
                    trunk: TrunkId::new("carrier-a").unwrap(),
                    up: true,
                    active_calls: 3,
                    asr_permille: Some(750),
                    pdd_ms: Some(1_500),
                },
                TrunkHealth {
                    trunk: TrunkId::new("carrier-b").unwrap(),
                    up: false,
                    active_calls: 0,
                    asr_permille: None,
                    pdd_ms: None,
                },
            ]
        );
    }

    #[test]
    fn the_first_sample_goes_at_once_and_a_burst_of_changes_yields_one_report_per_gap() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = TelemetryPacer::new(60 * s, 5 * s);
        assert_eq!(p.handle_sample(t0, report(0, 0)), Some(report(0, 0)));
        for i in 1..5 {
            assert_eq!(p.handle_sample(t0 + i * s, report(i, 0)), None);
        }
        assert_eq!(p.poll_timeout(), Some(t0 + 5 * s), "a held-back change");
        assert_eq!(
            p.handle_sample(t0 + 5 * s, report(4, 0)),
            Some(report(4, 0)),
            "the latest state goes when the gap is over"
        );
        assert_eq!(p.poll_timeout(), Some(t0 + 65 * s));
    }

    #[test]
    fn an_unchanged_box_reports_only_on_the_heartbeat_and_depth_alone_is_not_a_change() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = TelemetryPacer::new(60 * s, 5 * s);
        p.handle_sample(t0, report(1, 0));
        assert_eq!(p.handle_sample(t0 + 10 * s, report(1, 1)), None);
        assert_eq!(p.handle_sample(t0 + 59 * s, report(1, 7)), None);
        assert_eq!(p.poll_timeout(), Some(t0 + 60 * s));
        assert_eq!(
            p.handle_sample(t0 + 60 * s, report(1, 7)),
            Some(report(1, 7)),
            "the heartbeat carries the depth"
        );
    }

    #[tokio::test]
    async fn the_producer_reports_at_once_and_again_when_calls_change() {
        use super::super::outbox_store::UplinkOutbox;
        use callgate_common::outbox::OutboxConfig;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).await.unwrap();
        let outbox = Arc::new(
            UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
                .await
                .unwrap(),
        );
        let shared: SharedOutbox = Arc::new(tokio::sync::RwLock::new(outbox.clone()));
        let (campaigns_tx, campaigns) = watch::channel(Vec::<DialerStatus>::new());
        let (stop_tx, stop) = watch::channel(false);
        let sources = TelemetrySources {
            data_dir: dir.path().to_path_buf(),
            campaigns: Some(campaigns),
            agents_ready: Some(Box::new(|| 3)),
            agents_changed: None,
            temperature: Some(Box::new(|| Some(41_250))),
            trunks: None,
        };
        let task = tokio::spawn(run(
            sources,
            shared,
            Duration::from_secs(3600),
            Duration::from_millis(10),
            stop,
        ));
        let sent = |outbox: Arc<UplinkOutbox>| async move {
            outbox.connected(Instant::now()).await;
            outbox.next_transmits(10).await.unwrap()
        };
        let mut first = Vec::new();
        for _ in 0..200 {
            first = sent(outbox.clone()).await;
            if !first.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some((_, Uplink::Telemetry(t))) = first.first() else {
            panic!("no telemetry report was stored: {first:?}");
        };
        assert_eq!(
            (t.active_calls, t.agents_ready, t.temperature_decicelsius),
            (0, 3, Some(412))
        );
        assert!(
            matches!(first.get(1), Some((_, Uplink::CampaignCalls(c))) if c.is_empty()),
            "the first report says no campaign has a call: {first:?}"
        );
        let last = first.last().unwrap().0.seq;
        outbox.acked(Instant::now(), last).await.unwrap();
        campaigns_tx.send_modify(|c| {
            c.push(status(1, 4));
            c.push(status(2, 0));
        });
        let mut next = Vec::new();
        for _ in 0..200 {
            next = sent(outbox.clone()).await;
            if next.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            matches!(next.first(), Some((_, Uplink::Telemetry(t))) if t.active_calls == 4),
            "the change went out as a new report: {next:?}"
        );
        assert!(
            matches!(next.get(1), Some((_, Uplink::CampaignCalls(c))) if c == &vec![CampaignCalls {
                campaign: callgate_common::ids::CampaignId(1),
                calls: 4,
            }]),
            "with the campaign's calls: {next:?}"
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
