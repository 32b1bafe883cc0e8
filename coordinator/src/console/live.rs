//! The live figures and the dashboard that shows them, pushed over a WebSocket (`/live`)
//! once a second.
//!
//! Everything is computed from what the sync stores — `attempt_results` and
//! `call_records` (applied uplink), `appliance_telemetry` (latest per appliance) and
//! `sync_uplink_state` (last contact) — plus the campaigns' own tables:
//! - *calls in progress*: per appliance its latest telemetry's `active_calls`; per
//!   campaign the sum of the online appliances' latest `CampaignCalls` reports
//!   (`appliance_campaign_calls`). Offline appliances count for nothing. Next to it, the
//!   contacts currently on lease (dialling or queued on a box);
//! - *answer rate*: answered attempts (person, machine, or answered then abandoned) over all
//!   attempts in the last 24 h;
//! - *abandon rate*: abandoned over live-answered (person + abandoned), as the compliance
//!   rules count it, over 24 h and 30 days, shown against the campaign's profile cap;
//! - *agent occupancy*: over the last 15 minutes, from the appliances' agent events
//!   (`agent_events`, applied by the sync): time agents spent reserved, talking or in
//!   wrap-up over the time they were available (ready, reserved, talking or wrap-up; paused
//!   and logged-out time does not count). For a box that sent no agent event (older
//!   firmware), talk time from its call records over 15 minutes times the agents seen.
//!   Per campaign: the time agents were busy on that campaign's calls (the events'
//!   `campaign_id`) over the available time of the agents who served it in the window.

use super::auth::Permission;
use super::web::{failure, render, when, Frame, Page, SignedIn};
use super::ConsoleState;
use crate::store::Store;
use askama::Template;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallRecord, Telemetry};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// An appliance heard from within this long is online.
pub const ONLINE_WINDOW_MS: i64 = 120_000;
/// How often the dashboard is pushed.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(1);
const DAY_MS: i64 = 86_400_000;
const OCCUPANCY_WINDOW_MS: i64 = 15 * 60_000;

/// Outcome counts over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub attempts: u64,
    pub answered: u64,
    pub live: u64,
    pub abandoned: u64,
}

impl Tally {
    fn add(&mut self, outcome: &str, n: u64) {
        self.attempts += n;
        match outcome {
            "answered_human" => {
                self.answered += n;
                self.live += n;
            }
            "answered_machine" => self.answered += n,
            "abandoned" => {
                self.answered += n;
                self.live += n;
                self.abandoned += n;
            }
            _ => {}
        }
    }
    /// Answered share of attempts, per mille (`None` with no attempt).
    pub fn answer_permille(&self) -> Option<u64> {
        (self.attempts > 0).then(|| self.answered * 1000 / self.attempts)
    }
    /// Abandoned share of live answers, per mille (`None` with no live answer).
    pub fn abandon_permille(&self) -> Option<u64> {
        (self.live > 0).then(|| self.abandoned * 1000 / self.live)
    }
}

/// A per-mille figure as `12.3 %`, or `–`.
pub fn percent(permille: Option<u64>) -> String {
    match permille {
        Some(p) => format!("{}.{} %", p / 10, p % 10),
        None => "–".into(),
    }
}

/// One campaign's live figures.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignLive {
    pub id: i64,
    pub name: String,
    pub state: String,
    /// Calls up now on the online appliances working it.
    pub calls: u64,
    /// Contacts on lease now (queued or dialling on a box).
    pub leased: u64,
    pub attempts_24h: u64,
    pub answer_rate: String,
    pub abandon_24h: String,
    pub abandon_30d: String,
    /// The profile's cap and window, e.g. `3.0 % / 30 d`.
    pub cap: String,
    /// Whether the rate in the cap's window has reached the cap.
    pub over_cap: bool,
    /// Agent occupancy on this campaign's calls over the occupancy window.
    pub occupancy: String,
}

/// One appliance's live figures.
#[derive(Debug, Clone, Serialize)]
pub struct ApplianceLive {
    pub name: String,
    pub online: bool,
    /// `online since …`, or `offline since …`.
    pub status: String,
    /// The firmware its last Hello reported.
    pub firmware: String,
    pub last_seen: Option<i64>,
    pub calls: u64,
    pub agents_ready: u64,
    pub attempts_24h: u64,
    pub answer_rate: String,
    pub occupancy: String,
    /// Agents' busy milliseconds in the occupancy window (reserved, talking, wrap-up).
    pub busy_ms: i64,
    /// Agents' available milliseconds in the occupancy window.
    pub available_ms: i64,
    /// Trunks as `name up|down ASR a PDD p, n calls` (up/down: the box's OPTIONS probes).
    pub trunks: Vec<String>,
    pub outbox_depth: u64,
}

/// Totals over everything.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    pub calls: u64,
    pub appliances_online: u64,
    pub appliances: u64,
    pub attempts_24h: u64,
    pub answer_rate: String,
    pub abandon_24h: String,
    pub abandon_30d: String,
    pub agents_ready: u64,
    pub occupancy: String,
}

/// What the dashboard shows at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at: i64,
    pub updated: String,
    pub totals: Totals,
    pub campaigns: Vec<CampaignLive>,
    pub appliances: Vec<ApplianceLive>,
}

async fn tallies(
    store: &Store,
    column: &str,
    since: i64,
) -> Result<HashMap<String, Tally>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT CAST({column} AS TEXT), outcome, COUNT(*) FROM attempt_results \
         WHERE ended_at > $1 GROUP BY {column}, outcome"
    ))
    .bind(since)
    .fetch_all(store.pool())
    .await?;
    let mut out: HashMap<String, Tally> = HashMap::new();
    for (key, outcome, n) in rows {
        out.entry(key).or_default().add(&outcome, n.max(0) as u64);
    }
    Ok(out)
}

/// Talk time (ms) per appliance and agents seen, from call records overlapping the window.
async fn talk(store: &Store, now: i64) -> Result<HashMap<String, (i64, u64)>, sqlx::Error> {
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT appliance, record FROM call_records WHERE ended_at > $1")
            .bind(now - OCCUPANCY_WINDOW_MS)
            .fetch_all(store.pool())
            .await?;
    let mut per: HashMap<String, (i64, std::collections::HashSet<String>)> = HashMap::new();
    for (app, blob) in rows {
        let Ok(r) = postcard::from_bytes::<CallRecord>(&blob) else {
            continue;
        };
        let (Some(agent), Some(answered)) = (r.agent, r.answered_at) else {
            continue;
        };
        let from = answered.0.max(now - OCCUPANCY_WINDOW_MS);
        let e = per.entry(app).or_default();
        e.0 += (r.ended_at.0.min(now) - from).max(0);
        e.1.insert(agent.to_string());
    }
    Ok(per
        .into_iter()
        .map(|(k, (ms, agents))| (k, (ms, agents.len() as u64)))
        .collect())
}

/// How far before the window an agent's last state change is looked for.
const AGENT_STATE_LOOKBACK_MS: i64 = 12 * 3_600_000;

/// Busy and available milliseconds of one agent inside `[from, to]`, from its state changes
/// in time order, the first of which may be before `from` (the state it was in then).
pub fn agent_time(events: &[(i64, &str)], from: i64, to: i64) -> (i64, i64) {
    let (mut busy, mut available) = (0, 0);
    for (i, (at, state)) in events.iter().enumerate() {
        let start = (*at).max(from);
        let end = events.get(i + 1).map_or(to, |next| next.0).min(to);
        let span = (end - start).max(0);
        match *state {
            "reserved" | "talking" | "wrap_up" => {
                busy += span;
                available += span;
            }
            "ready" => available += span,
            _ => {}
        }
    }
    (busy, available)
}

/// Busy milliseconds of one agent inside `[from, to]` per campaign whose call it was
/// busy with (events as in [`agent_time`], each with its campaign); busy time on calls of
/// no campaign is left out.
pub fn agent_busy_by_campaign(
    events: &[(i64, &str, Option<i64>)],
    from: i64,
    to: i64,
) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for (i, (at, state, campaign)) in events.iter().enumerate() {
        let (Some(c), "reserved" | "talking" | "wrap_up") = (campaign, *state) else {
            continue;
        };
        let start = (*at).max(from);
        let end = events.get(i + 1).map_or(to, |next| next.0).min(to);
        if end > start {
            *out.entry(*c).or_insert(0) += end - start;
        }
    }
    out
}

/// An agent's state change: when, its uplink sequence (orders ties), the state, the
/// campaign of the call it belongs to.
type StateChange = (i64, i64, String, Option<i64>);

/// Busy and available milliseconds over the occupancy window, from agent events.
#[derive(Debug, Default)]
struct Occupancy {
    /// Per appliance; appliances that sent no event are absent.
    appliances: HashMap<String, (i64, i64)>,
    /// Per campaign: busy on its calls, and the available time of the agents who were.
    campaigns: HashMap<i64, (i64, i64)>,
}

/// Busy and available milliseconds per appliance and per campaign over the occupancy
/// window, from agent events.
async fn agent_occupancy(store: &Store, now: i64) -> Result<Occupancy, sqlx::Error> {
    let from = now - OCCUPANCY_WINDOW_MS;
    // Each agent's last state before the window (the newest event wins a tie), then the
    // changes inside it.
    let before: Vec<(String, i64, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT e.appliance, e.agent_id, e.state, e.at, e.uplink_seq, e.campaign_id \
         FROM agent_events e \
         JOIN (SELECT appliance, agent_id, MAX(at) AS last_at FROM agent_events \
               WHERE at <= $1 AND at > $2 GROUP BY appliance, agent_id) m \
         ON m.appliance = e.appliance AND m.agent_id = e.agent_id AND m.last_at = e.at",
    )
    .bind(from)
    .bind(from - AGENT_STATE_LOOKBACK_MS)
    .fetch_all(store.pool())
    .await?;
    let inside: Vec<(String, i64, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT appliance, agent_id, state, at, uplink_seq, campaign_id FROM agent_events \
         WHERE at > $1 AND at <= $2",
    )
    .bind(from)
    .bind(now)
    .fetch_all(store.pool())
    .await?;
    let mut per_agent: BTreeMap<(String, i64), Vec<StateChange>> = BTreeMap::new();
    let mut first: HashMap<(String, i64), StateChange> = HashMap::new();
    for (app, agent, state, at, seq, campaign) in before {
        let e = first
            .entry((app, agent))
            .or_insert((at, seq, state.clone(), campaign));
        if seq > e.1 {
            *e = (at, seq, state, campaign);
        }
    }
    for (key, ev) in first {
        per_agent.entry(key).or_default().push(ev);
    }
    for (app, agent, state, at, seq, campaign) in inside {
        per_agent
            .entry((app, agent))
            .or_default()
            .push((at, seq, state, campaign));
    }
    let mut out = Occupancy::default();
    for ((app, _), mut events) in per_agent {
        events.sort_by_key(|e| (e.0, e.1));
        let timeline: Vec<(i64, &str)> = events.iter().map(|e| (e.0, e.2.as_str())).collect();
        let (busy, available) = agent_time(&timeline, from, now);
        let e = out.appliances.entry(app).or_default();
        e.0 += busy;
        e.1 += available;
        let with_campaign: Vec<(i64, &str, Option<i64>)> =
            events.iter().map(|e| (e.0, e.2.as_str(), e.3)).collect();
        for (campaign, busy_on) in agent_busy_by_campaign(&with_campaign, from, now) {
            let c = out.campaigns.entry(campaign).or_default();
            c.0 += busy_on;
            c.1 += available;
        }
    }
    Ok(out)
}

/// Busy over available time, per mille (`None` when nobody was available).
fn occupancy_of(busy_ms: i64, available_ms: i64) -> Option<u64> {
    (available_ms > 0).then(|| (busy_ms.max(0) as u64 * 1000 / available_ms as u64).min(1000))
}

/// Every appliance the coordinator knows: registered, or heard from.
async fn appliances(
    store: &Store,
    now: i64,
    agent_time: &HashMap<String, (i64, i64)>,
) -> Result<Vec<ApplianceLive>, sqlx::Error> {
    let registered: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM appliances WHERE state <> 'revoked'")
            .fetch_all(store.pool())
            .await?;
    let seen: Vec<(String, i64)> =
        sqlx::query_as("SELECT appliance, last_seen_at FROM sync_uplink_state")
            .fetch_all(store.pool())
            .await?;
    let telemetry: Vec<(String, i64, Vec<u8>)> =
        sqlx::query_as("SELECT appliance, received_at, record FROM appliance_telemetry")
            .fetch_all(store.pool())
            .await?;
    let mut last: BTreeMap<String, Option<i64>> =
        registered.into_iter().map(|(n,)| (n, None)).collect();
    for (n, t) in seen {
        let e = last.entry(n).or_default();
        *e = Some(e.map_or(t, |x| x.max(t)));
    }
    let mut tele: HashMap<String, Telemetry> = HashMap::new();
    for (n, t, blob) in telemetry {
        let e = last.entry(n.clone()).or_default();
        *e = Some(e.map_or(t, |x| x.max(t)));
        if let Ok(decoded) = postcard::from_bytes::<Telemetry>(&blob) {
            tele.insert(n, decoded);
        }
    }
    // The link's presence (Hello, retained status, last will) when the box has one; the
    // window over what was last heard otherwise.
    let presence: Vec<(String, i64, i64, Option<String>)> =
        sqlx::query_as("SELECT appliance, online, since, firmware FROM appliance_presence")
            .fetch_all(store.pool())
            .await?;
    let presence: HashMap<String, (bool, i64, Option<String>)> = presence
        .into_iter()
        .map(|(n, online, since, firmware)| (n, (online == 1, since, firmware)))
        .collect();
    let revoked: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM appliances WHERE state = 'revoked'")
            .fetch_all(store.pool())
            .await?;
    for name in presence.keys() {
        if !revoked.iter().any(|(r,)| r == name) {
            last.entry(name.clone()).or_default();
        }
    }
    let day = tallies(store, "appliance", now - DAY_MS).await?;
    let talk = talk(store, now).await?;
    Ok(last
        .into_iter()
        .map(|(name, last_seen)| {
            let t = tele.get(&name);
            let present = presence.get(&name);
            let (online, status) = match present {
                Some((true, since, _)) => (true, format!("online since {}", when(*since))),
                Some((false, since, _)) => (false, format!("offline since {}", when(*since))),
                None => {
                    let online = last_seen.is_some_and(|t| now - t <= ONLINE_WINDOW_MS);
                    let status = match (online, last_seen) {
                        (true, _) => "online".to_string(),
                        (false, Some(t)) => format!("offline since {}", when(t)),
                        (false, None) => "never connected".to_string(),
                    };
                    (online, status)
                }
            };
            let firmware = present
                .and_then(|p| p.2.clone())
                .unwrap_or_else(|| "not reported".into());
            let tally = day.get(&name).copied().unwrap_or_default();
            let agents_ready = t.map_or(0, |t| u64::from(t.agents_ready));
            let (talk_ms, talkers) = talk.get(&name).copied().unwrap_or((0, 0));
            let (busy_ms, available_ms) = match agent_time.get(&name) {
                Some(t) => *t,
                None => (
                    talk_ms,
                    OCCUPANCY_WINDOW_MS * talkers.max(agents_ready) as i64,
                ),
            };
            ApplianceLive {
                online,
                status,
                firmware,
                last_seen,
                calls: t.map_or(0, |t| u64::from(t.active_calls)),
                agents_ready,
                attempts_24h: tally.attempts,
                answer_rate: percent(tally.answer_permille()),
                occupancy: percent(occupancy_of(busy_ms, available_ms)),
                busy_ms,
                available_ms,
                trunks: t
                    .map(|t| {
                        t.trunks
                            .iter()
                            .map(|k| {
                                format!(
                                    "{} {} ASR {} PDD {}, {} {}",
                                    k.trunk,
                                    if k.up { "up" } else { "down" },
                                    percent(k.asr_permille.map(u64::from)),
                                    k.pdd_ms.map_or("–".into(), |p| format!("{p} ms")),
                                    k.active_calls,
                                    if k.active_calls == 1 { "call" } else { "calls" }
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                outbox_depth: t.map_or(0, |t| t.outbox_depth),
                name,
            }
        })
        .collect())
}

/// The figures at `now`.
pub async fn snapshot(store: &Store, now: UnixMillis) -> Result<Snapshot, sqlx::Error> {
    let now = now.0;
    let day = tallies(store, "campaign_id", now - DAY_MS).await?;
    let month = tallies(store, "campaign_id", now - 30 * DAY_MS).await?;
    let caps: HashMap<i64, (u32, i64)> = crate::compliance::page_profiles(store, 0, 10_000)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?
        .into_iter()
        .map(|p| {
            (
                p.id,
                (p.profile.abandon.cap_permille, p.profile.abandon.window_ms),
            )
        })
        .collect();
    let campaigns: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT id, name, state, profile_id FROM campaigns WHERE state <> 'archived' ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    let leased: HashMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "SELECT campaign_id, COUNT(*) FROM campaign_contacts WHERE lease_id IS NOT NULL GROUP BY campaign_id",
    )
    .fetch_all(store.pool())
    .await?
    .into_iter()
    .collect();
    let occupancy = agent_occupancy(store, now).await?;
    let appliances = appliances(store, now, &occupancy.appliances).await?;
    let online: Vec<&str> = appliances
        .iter()
        .filter(|a| a.online)
        .map(|a| a.name.as_str())
        .collect();
    let mut calls_up: HashMap<i64, u64> = HashMap::new();
    for (appliance, campaign, calls) in sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT appliance, campaign_id, calls FROM appliance_campaign_calls",
    )
    .fetch_all(store.pool())
    .await?
    {
        if online.contains(&appliance.as_str()) {
            *calls_up.entry(campaign).or_default() += calls.max(0) as u64;
        }
    }
    let campaigns: Vec<CampaignLive> = campaigns
        .into_iter()
        .map(|(id, name, state, profile)| {
            let d = day.get(&id.to_string()).copied().unwrap_or_default();
            let m = month.get(&id.to_string()).copied().unwrap_or_default();
            let (cap_permille, window) = caps.get(&profile).copied().unwrap_or((30, 30 * DAY_MS));
            let in_window = if window <= DAY_MS { d } else { m };
            CampaignLive {
                id,
                name,
                state,
                calls: calls_up.get(&id).copied().unwrap_or(0),
                leased: leased.get(&id).copied().unwrap_or(0).max(0) as u64,
                attempts_24h: d.attempts,
                answer_rate: percent(d.answer_permille()),
                abandon_24h: percent(d.abandon_permille()),
                abandon_30d: percent(m.abandon_permille()),
                cap: format!(
                    "{} / {}",
                    percent(Some(u64::from(cap_permille))),
                    if window <= DAY_MS { "24 h" } else { "30 d" }
                ),
                over_cap: in_window
                    .abandon_permille()
                    .is_some_and(|p| p >= u64::from(cap_permille)),
                occupancy: percent(
                    occupancy
                        .campaigns
                        .get(&id)
                        .and_then(|(busy, available)| occupancy_of(*busy, *available)),
                ),
            }
        })
        .collect();
    let all_day = day.values().fold(Tally::default(), |a, t| sum(a, *t));
    let all_month = month.values().fold(Tally::default(), |a, t| sum(a, *t));
    let busy_ms: i64 = appliances.iter().map(|a| a.busy_ms).sum();
    let available_ms: i64 = appliances.iter().map(|a| a.available_ms).sum();
    let totals = Totals {
        calls: appliances
            .iter()
            .filter(|a| a.online)
            .map(|a| a.calls)
            .sum(),
        appliances_online: appliances.iter().filter(|a| a.online).count() as u64,
        appliances: appliances.len() as u64,
        attempts_24h: all_day.attempts,
        answer_rate: percent(all_day.answer_permille()),
        abandon_24h: percent(all_day.abandon_permille()),
        abandon_30d: percent(all_month.abandon_permille()),
        agents_ready: appliances.iter().map(|a| a.agents_ready).sum(),
        occupancy: percent(occupancy_of(busy_ms, available_ms)),
    };
    Ok(Snapshot {
        at: now,
        updated: when(now),
        totals,
        campaigns,
        appliances,
    })
}

fn sum(a: Tally, b: Tally) -> Tally {
    Tally {
        attempts: a.attempts + b.attempts,
        answered: a.answered + b.answered,
        live: a.live + b.live,
        abandoned: a.abandoned + b.abandoned,
    }
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    page: Frame,
    s: Snapshot,
}

pub async fn dashboard(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::View)?;
    let s = snapshot(&state.store, UnixMillis::now())
        .await
        .map_err(|e| failure(me.frame(), e))?;
    Ok(render(
        StatusCode::OK,
        &DashboardPage {
            page: me.frame(),
            s,
        },
    ))
}

/// Whether the request's `Origin` is this console (a WebSocket is not covered by the
/// same-origin policy, so a page elsewhere must not ride on the session cookie).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    match (host, origin) {
        (Some(h), Some(o)) => o.strip_prefix("https://") == Some(h),
        (_, None) => true,
        _ => false,
    }
}

pub async fn socket(
    State(state): State<ConsoleState>,
    me: SignedIn,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = me.require(Permission::View) {
        return refusal.into_response();
    }
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket refused").into_response();
    }
    ws.on_upgrade(move |socket| push(state, socket))
}

/// A snapshot younger than this is shared by every open dashboard.
const FRESH: Duration = Duration::from_millis(900);

/// When a snapshot was taken, and its JSON.
type Cached = (std::time::Instant, std::sync::Arc<str>);

/// The latest snapshot as JSON, shared by all WebSocket clients so that the database work
/// stays at about one snapshot a second however many dashboards are open.
#[derive(Clone, Default)]
pub struct LiveCache(std::sync::Arc<tokio::sync::Mutex<Option<Cached>>>);

impl LiveCache {
    /// The current snapshot as JSON, computed at most once per [`FRESH`].
    pub async fn json(&self, store: &Store) -> Result<std::sync::Arc<str>, sqlx::Error> {
        let mut held = self.0.lock().await;
        if let Some((at, text)) = held.as_ref() {
            if at.elapsed() < FRESH {
                return Ok(text.clone());
            }
        }
        let s = snapshot(store, UnixMillis::now()).await?;
        let text: std::sync::Arc<str> = serde_json::to_string(&s)
            .expect("snapshots serialise")
            .into();
        *held = Some((std::time::Instant::now(), text.clone()));
        Ok(text)
    }
}

async fn push(state: ConsoleState, mut socket: WebSocket) {
    let mut tick = tokio::time::interval(PUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let text = match state.live.json(&state.store).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "live dashboard snapshot failed");
                        continue;
                    }
                };
                if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandons_count_against_live_answers_and_answers_against_attempts() {
        let mut t = Tally::default();
        t.add("answered_human", 97);
        t.add("abandoned", 3);
        t.add("answered_machine", 50);
        t.add("no_answer", 50);
        assert_eq!(t.attempts, 200);
        assert_eq!(t.answer_permille(), Some(750));
        assert_eq!(t.abandon_permille(), Some(30));
        assert_eq!(percent(t.abandon_permille()), "3.0 %");
        assert_eq!(Tally::default().answer_permille(), None);
        assert_eq!(percent(None), "–");
    }

    #[test]
    fn agent_time_counts_busy_states_over_available_ones_inside_the_window() {
        // Ready before the window, talking 100..400, wrap-up to 500, paused 500..800,
        // ready again until the end at 1000.
        let events = [
            (-50, "ready"),
            (100, "reserved"),
            (120, "talking"),
            (400, "wrap_up"),
            (500, "paused"),
            (800, "ready"),
        ];
        assert_eq!(agent_time(&events, 0, 1000), (400, 700));
        assert_eq!(occupancy_of(400, 700), Some(571));
        // Logged out the whole time: not available at all.
        assert_eq!(agent_time(&[(-10, "logged_out")], 0, 1000), (0, 0));
        assert_eq!(occupancy_of(0, 0), None);
        // An agent who logs in mid-window counts from then on.
        assert_eq!(agent_time(&[(600, "talking")], 0, 1000), (400, 400));
    }

    #[test]
    fn busy_time_is_split_by_the_campaign_of_the_call() {
        let events = [
            (-100, "talking", Some(1)),
            (100, "wrap_up", Some(1)),
            (200, "ready", None),
            (500, "reserved", Some(2)),
            (600, "talking", Some(2)),
            (900, "paused", None),
            (1000, "talking", Some(3)),
        ];
        let busy = agent_busy_by_campaign(&events, 0, 1000);
        assert_eq!(busy.into_iter().collect::<Vec<_>>(), [(1, 200), (2, 400)]);
    }

    #[test]
    fn occupancy_is_talk_time_over_the_window_for_the_agents_seen() {
        let window = |agents: i64| OCCUPANCY_WINDOW_MS * agents;
        assert_eq!(occupancy_of(OCCUPANCY_WINDOW_MS, window(2)), Some(500));
        assert_eq!(
            occupancy_of(3 * OCCUPANCY_WINDOW_MS, window(2)),
            Some(1000),
            "capped"
        );
    }
}
