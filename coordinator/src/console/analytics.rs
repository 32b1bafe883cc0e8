//! Analytics: daily series over a chosen range — attempts, connects, answer rate, average
//! handle time, abandons, conversions (calls whose disposition is one of their campaign's
//! `conversion_dispositions`), MOS, agent occupancy (from `agent_events`, as the live
//! dashboard counts it, per day) — and per-carrier answer-seizure ratio and post-dial delay,
//! drawn as SVG on the server (no chart library, no script), and CSV export of every table
//! the console shows.
//!
//! Reads only the sync's stored uplink (`attempt_results`, `call_records`, `agent_events`)
//! and the other rooms' public listing functions.

use super::auth::{self, Permission};
use super::live;
use super::web::{failure, message, render, when, Frame, Page, SignedIn};
use super::ConsoleState;
use crate::store::Store;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AttemptResult, CallRecord};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

const DAY_MS: i64 = 86_400_000;
/// The longest range offered, in days.
pub const MAX_DAYS: i64 = 92;

/// One day's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayFigures {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub attempts: u64,
    pub connects: u64,
    pub abandons: u64,
    /// Calls whose disposition is one of their campaign's `conversion_dispositions`.
    pub conversions: u64,
    /// Agents' busy milliseconds that day (reserved, talking, wrap-up; with a campaign
    /// filter: on that campaign's calls), from the appliances' agent events.
    pub busy_ms: i64,
    /// Agents' available milliseconds that day (with a campaign filter: of the agents who
    /// served it that day).
    pub available_ms: i64,
    handle_ms: i64,
    handled: u64,
    mos_sum: u64,
    mos_n: u64,
}

impl DayFigures {
    /// Connects over attempts, percent.
    pub fn answer_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.connects as f64 * 100.0 / self.attempts as f64)
    }
    /// Mean answered-to-end seconds of agent-handled calls.
    pub fn average_handle_seconds(&self) -> Option<f64> {
        (self.handled > 0).then(|| self.handle_ms as f64 / 1000.0 / self.handled as f64)
    }
    /// Mean MOS of calls with quality figures.
    pub fn mos(&self) -> Option<f64> {
        (self.mos_n > 0).then(|| self.mos_sum as f64 / 100.0 / self.mos_n as f64)
    }
    /// Agent occupancy: busy over available time, percent.
    pub fn occupancy(&self) -> Option<f64> {
        (self.available_ms > 0).then(|| self.busy_ms as f64 * 100.0 / self.available_ms as f64)
    }
}

/// How far before the range an agent's last state is looked for.
const AGENT_STATE_LOOKBACK_MS: i64 = 12 * 3_600_000;

/// Per day of the range, agents' busy and available milliseconds from `agent_events`
/// (as the live dashboard counts them, day by day), optionally only busy time on one
/// campaign's calls over the available time of the agents who served it that day.
async fn daily_occupancy(
    store: &Store,
    first_day: i64,
    days: i64,
    now: i64,
    campaign: Option<i64>,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows: Vec<(String, i64, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT appliance, agent_id, state, at, campaign_id FROM agent_events \
         WHERE at > $1 AND at <= $2 ORDER BY appliance, agent_id, at, uplink_seq",
    )
    .bind(first_day - AGENT_STATE_LOOKBACK_MS)
    .bind(now)
    .fetch_all(store.pool())
    .await?;
    let mut out = vec![(0i64, 0i64); days.max(0) as usize];
    let mut start = 0;
    while start < rows.len() {
        let key = (&rows[start].0, rows[start].1);
        let end = rows[start..]
            .iter()
            .position(|r| (&r.0, r.1) != key)
            .map_or(rows.len(), |n| start + n);
        let agent = &rows[start..end];
        let timeline: Vec<(i64, &str)> = agent.iter().map(|r| (r.3, r.2.as_str())).collect();
        let tagged: Vec<(i64, &str, Option<i64>)> =
            agent.iter().map(|r| (r.3, r.2.as_str(), r.4)).collect();
        for (i, day) in out.iter_mut().enumerate() {
            let from = first_day + i as i64 * DAY_MS;
            let to = (from + DAY_MS).min(now);
            if to <= from {
                continue;
            }
            let (busy, available) = live::agent_time(&timeline, from, to);
            match campaign {
                None => {
                    day.0 += busy;
                    day.1 += available;
                }
                Some(c) => {
                    let on = live::agent_busy_by_campaign(&tagged, from, to);
                    if let Some(b) = on.get(&c) {
                        day.0 += b;
                        day.1 += available;
                    }
                }
            }
        }
        start = end;
    }
    Ok(out)
}

/// One carrier trunk's figures over the range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CarrierFigures {
    pub trunk: String,
    pub attempts: u64,
    pub seized: u64,
    pdd_sum: u64,
    pdd_n: u64,
}

impl CarrierFigures {
    /// Answer-seizure ratio: answered attempts over attempts, percent.
    pub fn asr(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.seized as f64 * 100.0 / self.attempts as f64)
    }
    /// Mean post-dial delay, milliseconds.
    pub fn pdd_ms(&self) -> Option<f64> {
        (self.pdd_n > 0).then(|| self.pdd_sum as f64 / self.pdd_n as f64)
    }
}

fn day_of(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The figures of the `days` days ending at `now`, optionally for one campaign.
pub async fn figures(
    store: &Store,
    now: UnixMillis,
    days: i64,
    campaign: Option<i64>,
) -> Result<(Vec<DayFigures>, Vec<CarrierFigures>), sqlx::Error> {
    let days = days.clamp(1, MAX_DAYS);
    let first_day = (now.0 / DAY_MS - (days - 1)) * DAY_MS;
    let mut by_day: BTreeMap<String, DayFigures> = (0..days)
        .map(|i| {
            let d = day_of(first_day + i * DAY_MS);
            (
                d.clone(),
                DayFigures {
                    day: d,
                    ..DayFigures::default()
                },
            )
        })
        .collect();
    let mut carriers: BTreeMap<String, CarrierFigures> = BTreeMap::new();
    let attempts: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT record FROM attempt_results WHERE ended_at >= $1 AND ($2 < 0 OR campaign_id = $2)",
    )
    .bind(first_day)
    .bind(campaign.unwrap_or(-1))
    .fetch_all(store.pool())
    .await?;
    for (blob,) in attempts {
        let Ok(a) = postcard::from_bytes::<AttemptResult>(&blob) else {
            continue;
        };
        use callgate_common::wire::CallOutcome as O;
        let connected = matches!(
            a.outcome,
            O::AnsweredHuman | O::AnsweredMachine | O::Abandoned
        );
        if let Some(d) = by_day.get_mut(&day_of(a.ended_at.0)) {
            d.attempts += 1;
            d.connects += u64::from(connected);
            d.abandons += u64::from(a.outcome == O::Abandoned);
        }
        if let Some(t) = &a.trunk {
            let c = carriers
                .entry(t.to_string())
                .or_insert_with(|| CarrierFigures {
                    trunk: t.to_string(),
                    ..CarrierFigures::default()
                });
            c.attempts += 1;
            c.seized += u64::from(connected);
            if let Some(p) = a.post_dial_delay_ms {
                c.pdd_sum += u64::from(p);
                c.pdd_n += 1;
            }
        }
    }
    let conversion_codes = conversion_codes(store).await?;
    let calls: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT record FROM call_records WHERE ended_at >= $1 AND ($2 < 0 OR campaign_id = $2)",
    )
    .bind(first_day)
    .bind(campaign.unwrap_or(-1))
    .fetch_all(store.pool())
    .await?;
    for (blob,) in calls {
        let Ok(r) = postcard::from_bytes::<CallRecord>(&blob) else {
            continue;
        };
        let Some(d) = by_day.get_mut(&day_of(r.ended_at.0)) else {
            continue;
        };
        if let (Some(_), Some(answered)) = (r.agent, r.answered_at) {
            d.handle_ms += (r.ended_at.0 - answered.0).max(0);
            d.handled += 1;
        }
        if let Some(q) = r.quality {
            d.mos_sum += u64::from(q.mos_x100);
            d.mos_n += 1;
        }
        if let (Some(c), Some(disposition)) = (r.campaign, &r.disposition) {
            let converted = conversion_codes
                .get(&(c.0 as i64))
                .is_some_and(|codes| codes.contains(disposition));
            d.conversions += u64::from(converted);
        }
    }
    let occupancy = daily_occupancy(store, first_day, days, now.0, campaign).await?;
    let mut series: Vec<DayFigures> = by_day.into_values().collect();
    for (d, (busy, available)) in series.iter_mut().zip(occupancy) {
        d.busy_ms = busy;
        d.available_ms = available;
    }
    Ok((series, carriers.into_values().collect()))
}

/// Each campaign's conversion dispositions (campaigns without any are left out).
async fn conversion_codes(store: &Store) -> Result<HashMap<i64, HashSet<String>>, sqlx::Error> {
    let mut out = HashMap::new();
    let mut after = 0;
    loop {
        let page = crate::campaigns::page(store, after, 500)
            .await
            .map_err(|e| match e {
                crate::campaigns::CampaignError::Db(db) => db,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        for c in page {
            if !c.spec.conversion_dispositions.is_empty() {
                out.insert(c.id, c.spec.conversion_dispositions.into_iter().collect());
            }
        }
    }
    Ok(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart as an SVG element: bars or a line over labelled points; gaps where a value is
/// missing. Text is escaped; nothing from the data becomes markup.
pub fn svg_chart(title: &str, unit: &str, points: &[(String, Option<f64>)], bars: bool) -> String {
    const W: f64 = 520.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 28.0;
    const TOP: f64 = 24.0;
    let max = points
        .iter()
        .filter_map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let n = points.len().max(1) as f64;
    let step = (W - LEFT - 8.0) / n;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / max);
    let mut out = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <title>{t}</title><text x=\"{LEFT}\" y=\"16\" font-size=\"13\" font-weight=\"600\">{t}</text>\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{W}\" y2=\"{b}\" stroke=\"#889\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#889\"/>\
         <text x=\"{lx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">{top}</text>\
         <text x=\"{lx}\" y=\"{b}\" font-size=\"10\" text-anchor=\"end\">0</text>",
        t = esc(title),
        b = H - BOTTOM,
        lx = LEFT - 4.0,
        ty = TOP + 4.0,
        top = esc(&format!("{} {unit}", trim(max))),
    );
    let mut line: Vec<String> = Vec::new();
    for (i, (label, v)) in points.iter().enumerate() {
        let x = LEFT + step * i as f64 + step / 2.0;
        if let Some(v) = v {
            if bars {
                out.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3f83f8\"><title>{}: {} {}</title></rect>",
                    x - step * 0.35,
                    y(*v),
                    step * 0.7,
                    (H - BOTTOM) - y(*v),
                    esc(label),
                    trim(*v),
                    esc(unit)
                ));
            } else {
                line.push(format!("{x:.1},{:.1}", y(*v)));
                out.push_str(&format!(
                    "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1c64f2\"><title>{}: {} {}</title></circle>",
                    y(*v),
                    esc(label),
                    trim(*v),
                    esc(unit)
                ));
            }
        } else if !line.is_empty() {
            out.push_str(&polyline(&line));
            line.clear();
        }
        let every = (points.len() / 7).max(1);
        if i % every == 0 {
            out.push_str(&format!(
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
                H - BOTTOM + 14.0,
                esc(label.get(5..).unwrap_or(label))
            ));
        }
    }
    out.push_str(&polyline(&line));
    out.push_str("</svg>");
    out
}

fn polyline(points: &[String]) -> String {
    if points.is_empty() {
        return String::new();
    }
    format!(
        "<polyline fill=\"none\" stroke=\"#1c64f2\" stroke-width=\"2\" points=\"{}\"/>",
        points.join(" ")
    )
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
    }
}

#[derive(Template)]
#[template(path = "console/analytics.html")]
struct AnalyticsPage {
    page: Frame,
    days: i64,
    campaign: String,
    charts: Vec<String>,
    carriers: Vec<(String, u64, String, String)>,
}

#[derive(Deserialize)]
pub struct RangeQuery {
    days: Option<i64>,
    campaign: Option<String>,
}

fn campaign_filter(q: &RangeQuery) -> Option<i64> {
    q.campaign.as_deref().and_then(|c| c.trim().parse().ok())
}

pub async fn page(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Query(q): Query<RangeQuery>,
) -> Page {
    me.require(Permission::View)?;
    let days = q.days.unwrap_or(14).clamp(1, MAX_DAYS);
    let (series, carriers) = figures(&state.store, UnixMillis::now(), days, campaign_filter(&q))
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let pts = |f: &dyn Fn(&DayFigures) -> Option<f64>| -> Vec<(String, Option<f64>)> {
        series.iter().map(|d| (d.day.clone(), f(d))).collect()
    };
    let carrier_pts = |f: &dyn Fn(&CarrierFigures) -> Option<f64>| -> Vec<(String, Option<f64>)> {
        carriers
            .iter()
            .map(|c| (format!("     {}", c.trunk), f(c)))
            .collect()
    };
    let charts = vec![
        svg_chart("Attempts", "", &pts(&|d| Some(d.attempts as f64)), true),
        svg_chart("Connects", "", &pts(&|d| Some(d.connects as f64)), true),
        svg_chart("Answer rate", "%", &pts(&DayFigures::answer_rate), false),
        svg_chart(
            "Average handle time",
            "s",
            &pts(&DayFigures::average_handle_seconds),
            false,
        ),
        svg_chart("Abandons", "", &pts(&|d| Some(d.abandons as f64)), true),
        svg_chart(
            "Conversions",
            "",
            &pts(&|d| Some(d.conversions as f64)),
            true,
        ),
        svg_chart("MOS", "", &pts(&DayFigures::mos), false),
        svg_chart("Agent occupancy", "%", &pts(&DayFigures::occupancy), false),
        svg_chart(
            "ASR per carrier",
            "%",
            &carrier_pts(&CarrierFigures::asr),
            true,
        ),
        svg_chart(
            "PDD per carrier",
            "ms",
            &carrier_pts(&CarrierFigures::pdd_ms),
            true,
        ),
    ];
    Ok(render(
        StatusCode::OK,
        &AnalyticsPage {
            page: me.frame(),
            days,
            campaign: q.campaign.clone().unwrap_or_default(),
            charts,
            carriers: carriers
                .iter()
                .map(|c| {
                    (
                        c.trunk.clone(),
                        c.attempts,
                        c.asr().map_or("–".into(), |v| format!("{v:.1} %")),
                        c.pdd_ms().map_or("–".into(), |v| format!("{v:.0} ms")),
                    )
                })
                .collect(),
        },
    ))
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_default()
}

/// Every table the console shows, as CSV: `daily`, `carriers`, `campaigns`, `lists`,
/// `fleet`, `audit`, `dnc`, `users` (admins only).
pub async fn export(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(table): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Page {
    me.require(Permission::View)?;
    let fail = |e: &dyn std::fmt::Display| failure(me.frame(), e);
    let mut rows: Vec<Vec<String>> = Vec::new();
    match table.as_str() {
        "daily" | "carriers" => {
            let days = q.days.unwrap_or(14);
            let (series, carriers) =
                figures(&state.store, UnixMillis::now(), days, campaign_filter(&q))
                    .await
                    .map_err(|e| fail(&e))?;
            if table == "daily" {
                rows.push(
                    [
                        "day",
                        "attempts",
                        "connects",
                        "answer_rate_percent",
                        "average_handle_seconds",
                        "abandons",
                        "mos",
                        "conversions",
                        "occupancy_percent",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                for d in series {
                    rows.push(vec![
                        d.day.clone(),
                        d.attempts.to_string(),
                        d.connects.to_string(),
                        opt(d.answer_rate()),
                        opt(d.average_handle_seconds()),
                        d.abandons.to_string(),
                        opt(d.mos()),
                        d.conversions.to_string(),
                        opt(d.occupancy()),
                    ]);
                }
            } else {
                rows.push(
                    ["trunk", "attempts", "seized", "asr_percent", "pdd_ms"]
                        .map(String::from)
                        .to_vec(),
                );
                for c in carriers {
                    rows.push(vec![
                        c.trunk.clone(),
                        c.attempts.to_string(),
                        c.seized.to_string(),
                        opt(c.asr()),
                        opt(c.pdd_ms()),
                    ]);
                }
            }
        }
        "campaigns" => {
            rows.push(
                [
                    "id",
                    "name",
                    "state",
                    "kind",
                    "dial_mode",
                    "version",
                    "updated",
                ]
                .map(String::from)
                .to_vec(),
            );
            for c in super::campaign_pages::all_campaigns(&state)
                .await
                .map_err(|e| fail(&e))?
            {
                rows.push(vec![
                    c.id.to_string(),
                    c.spec.name.clone(),
                    c.state.to_string(),
                    format!("{:?}", c.spec.kind).to_lowercase(),
                    format!("{:?}", c.spec.dial_mode).to_lowercase(),
                    c.version.to_string(),
                    when(c.updated_at),
                ]);
            }
        }
        "lists" => {
            rows.push(
                ["id", "name", "default_region", "contacts", "created"]
                    .map(String::from)
                    .to_vec(),
            );
            for l in crate::contacts::page_lists(&state.store, 0, 100_000)
                .await
                .map_err(|e| fail(&e))?
            {
                rows.push(vec![
                    l.id.to_string(),
                    l.name,
                    l.default_region,
                    l.contacts.to_string(),
                    when(l.created_at),
                ]);
            }
        }
        "fleet" | "live" => {
            let s = live::snapshot(&state.store, UnixMillis::now())
                .await
                .map_err(|e| fail(&e))?;
            if table == "fleet" {
                rows.push(
                    [
                        "appliance",
                        "status",
                        "calls",
                        "agents_ready",
                        "attempts_24h",
                        "answer_rate",
                        "occupancy",
                        "outbox_depth",
                        "firmware",
                        "trunks",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                for a in s.appliances {
                    rows.push(vec![
                        a.name,
                        a.status,
                        a.calls.to_string(),
                        a.agents_ready.to_string(),
                        a.attempts_24h.to_string(),
                        a.answer_rate,
                        a.occupancy,
                        a.outbox_depth.to_string(),
                        a.firmware,
                        // One cell: each trunk as the fleet page shows it, `; ` between.
                        a.trunks.join("; "),
                    ]);
                }
            } else {
                rows.push(
                    [
                        "campaign_id",
                        "name",
                        "state",
                        "calls",
                        "on_lease",
                        "attempts_24h",
                        "answer_rate",
                        "abandon_24h",
                        "abandon_30d",
                        "cap",
                        "occupancy",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                for c in s.campaigns {
                    rows.push(vec![
                        c.id.to_string(),
                        c.name,
                        c.state,
                        c.calls.to_string(),
                        c.leased.to_string(),
                        c.attempts_24h.to_string(),
                        c.answer_rate,
                        c.abandon_24h,
                        c.abandon_30d,
                        c.cap,
                        c.occupancy,
                    ]);
                }
            }
        }
        "audit" => {
            me.require(Permission::ReadAudit)?;
            rows.push(
                ["id", "at", "actor", "action", "target", "before", "after"]
                    .map(String::from)
                    .to_vec(),
            );
            for e in super::audit::page(&state.store, &Default::default(), None, 100_000)
                .await
                .map_err(|e| fail(&e))?
            {
                rows.push(vec![
                    e.id.to_string(),
                    when(e.at),
                    e.actor,
                    e.action,
                    e.target,
                    e.before.unwrap_or_default(),
                    e.after.unwrap_or_default(),
                ]);
            }
        }
        "dnc" => {
            rows.push(
                [
                    "id",
                    "number",
                    "campaign_id",
                    "expires",
                    "reason",
                    "created",
                ]
                .map(String::from)
                .to_vec(),
            );
            for d in crate::compliance::page_dnc(&state.store, 0, 100_000)
                .await
                .map_err(|e| fail(&e))?
            {
                rows.push(vec![
                    d.id.to_string(),
                    d.number,
                    d.campaign_id.map(|c| c.to_string()).unwrap_or_default(),
                    d.expires_at.map(when).unwrap_or_default(),
                    d.reason,
                    when(d.created_at),
                ]);
            }
        }
        "users" => {
            me.require(Permission::ManageUsers)?;
            rows.push(
                ["id", "username", "role", "enabled", "created"]
                    .map(String::from)
                    .to_vec(),
            );
            for u in auth::users(&state.store).await.map_err(|e| fail(&e))? {
                rows.push(vec![
                    u.id.to_string(),
                    u.username,
                    u.role.as_str().into(),
                    u.enabled.to_string(),
                    when(u.created_at),
                ]);
            }
        }
        _ => {
            return Err(message(
                StatusCode::NOT_FOUND,
                me.frame(),
                "Not found",
                format!("no table {table:?} to export"),
            )
            .into())
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(r.iter().map(|c| csv_safe(c)))
            .map_err(|e| fail(&e))?;
    }
    let body = w.into_inner().map_err(|e| fail(&e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"callgate-{table}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// A cell that a spreadsheet would run as a formula gets a leading apostrophe.
fn csv_safe(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err() {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_escapes_its_labels_and_leaves_gaps_for_missing_values() {
        let svg = svg_chart(
            "Rate <x>",
            "%",
            &[
                ("2026-11-01".into(), Some(10.0)),
                ("2026-11-02".into(), None),
                ("2026-11-03".into(), Some(20.0)),
            ],
            false,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Rate &lt;x&gt;") && !svg.contains("<x>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "the gap splits the line"
        );
        assert_eq!(svg.matches("<circle").count(), 2);
        let bars = svg_chart(
            "A",
            "",
            &[("d".into(), Some(3.0)), ("e".into(), Some(0.0))],
            true,
        );
        assert_eq!(bars.matches("<rect").count(), 2);
    }

    #[tokio::test]
    async fn an_inbound_call_record_is_stored_and_counted_in_the_days_handle_time_and_quality() {
        use callgate_common::ids::{AgentId, ApplianceId, CallId};
        use callgate_common::wire::{CallOutcome, CallQuality, Direction, Uplink, UplinkEnvelope};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let now = UnixMillis(1_795_000_000_000);
        let record = CallRecord {
            call: CallId::new_v7(),
            attempt: None,
            campaign: None,
            contact: None,
            direction: Direction::Inbound,
            trunk: None,
            remote: Some(
                callgate_common::phone::PhoneNumber::parse("+442079460123", None).unwrap(),
            ),
            agent: Some(AgentId(11)),
            started_at: UnixMillis(now.0 - 100_000),
            answered_at: Some(UnixMillis(now.0 - 99_000)),
            ended_at: UnixMillis(now.0 - 39_000),
            outcome: CallOutcome::AnsweredHuman,
            sip_status: None,
            disposition: Some("resolved".into()),
            recording_segments: 0,
            quality: Some(CallQuality {
                mos_x100: 420,
                loss_ppm: 0,
                jitter_us: 1_000,
                rtt_us: None,
            }),
        };
        let env = UplinkEnvelope::new(
            ApplianceId::new("branch-1").unwrap(),
            1,
            now,
            Uplink::CallRecord(record.clone()),
        );
        crate::sync::apply::apply_uplink(store.pool(), &env, now, 0)
            .await
            .unwrap();
        let (campaign, outcome, disposition, blob): (Option<i64>, String, Option<String>, Vec<u8>) =
            sqlx::query_as(
                "SELECT campaign_id, outcome, disposition, record FROM call_records WHERE call_id = $1",
            )
            .bind(record.call.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            (campaign, outcome.as_str(), disposition.as_deref()),
            (None, "answered_human", Some("resolved"))
        );
        assert_eq!(postcard::from_bytes::<CallRecord>(&blob).unwrap(), record);

        // All campaigns: the inbound call is a handled call of its day, with its quality.
        let (days, _) = figures(&store, now, 1, None).await.unwrap();
        assert_eq!(days[0].average_handle_seconds(), Some(60.0));
        assert_eq!(days[0].mos(), Some(4.2));
        assert_eq!(days[0].attempts, 0, "an inbound call is no dial attempt");
        // One campaign: it belongs to none.
        let (days, _) = figures(&store, now, 1, Some(3)).await.unwrap();
        assert_eq!(days[0].average_handle_seconds(), None);
    }

    #[test]
    fn csv_cells_that_would_run_as_formulas_are_defused() {
        assert_eq!(csv_safe("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_safe("+44 20 7946"), "'+44 20 7946");
        assert_eq!(csv_safe("-3.5"), "-3.5");
        assert_eq!(csv_safe("branch-1"), "branch-1");
    }
}
