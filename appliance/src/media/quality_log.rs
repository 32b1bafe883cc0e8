//! Per-leg media quality kept with the call in the appliance's SQLite store
//! (`call_leg_quality`): loss and jitter we measured receiving, the RTCP round trip, what the
//! far end reported about our stream, and the E-model R-factor and MOS of every leg.
//!
//! Owns: turning a [`LegReport`] into a [`LegQualityRecord`] and its table. Must not: decide
//! anything about the call (the dialer writes the call record; this is its media annex).

use super::LegReport;
use callgate_common::ids::CallId;
use callgate_common::time::UnixMillis;
use sqlx::SqlitePool;

/// Which side of the call a leg faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    /// The customer (carrier) leg.
    Customer,
    /// The agent's (or robot's) side.
    Agent,
}

impl LegRole {
    fn as_str(self) -> &'static str {
        match self {
            LegRole::Customer => "customer",
            LegRole::Agent => "agent",
        }
    }
}

/// One leg's quality as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LegQualityRecord {
    pub call_id: String,
    /// 0 for the customer's leg, then 1, 2... for agent-side legs in the order connected.
    pub leg_index: u32,
    pub role: String,
    pub packets_received: u64,
    pub packets_expected: u64,
    /// RFC 3550 cumulative loss (negative with duplicates).
    pub packets_lost: i64,
    /// Share of expected packets lost, parts per million.
    pub loss_ppm: u32,
    /// RFC 3550 interarrival jitter, µs.
    pub jitter_us: u32,
    /// RTCP round trip, µs, when the far end echoed one of our sender reports.
    pub rtt_us: Option<u32>,
    /// What the far end last reported about our stream (fraction lost, ppm; jitter, µs).
    pub remote_loss_ppm: Option<u32>,
    pub remote_jitter_us: Option<u32>,
    /// E-model transmission rating and MOS for what we heard on this leg.
    pub r_factor: f64,
    pub mos: f64,
}

impl LegQualityRecord {
    /// The record of one leg's report.
    pub fn of(call: &CallId, leg_index: u32, role: LegRole, report: &LegReport) -> Self {
        let r = &report.receive;
        let loss_ppm = (r.lost.max(0) as u64 * 1_000_000)
            .checked_div(r.expected)
            .unwrap_or(0)
            .min(1_000_000) as u32;
        let remote = report.remote_reception;
        LegQualityRecord {
            call_id: call.to_string(),
            leg_index,
            role: role.as_str().to_owned(),
            packets_received: r.received,
            packets_expected: r.expected,
            packets_lost: r.lost,
            loss_ppm,
            jitter_us: micros(r.jitter_ms),
            rtt_us: remote
                .and_then(|rr| rr.round_trip)
                .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
            remote_loss_ppm: remote.map(|rr| (rr.fraction_lost.clamp(0.0, 1.0) * 1e6) as u32),
            remote_jitter_us: remote.map(|rr| micros(rr.jitter_ms)),
            r_factor: report.quality.r_factor.clamp(0.0, 100.0),
            mos: report.quality.mos.clamp(1.0, 5.0),
        }
    }
}

fn micros(ms: f64) -> u32 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1_000.0).round().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Where a call's legs write their quality when their media ends.
#[derive(Debug, Clone)]
pub struct LegQualityLog {
    pool: SqlitePool,
    call: CallId,
}

impl LegQualityLog {
    /// The log of `call` in the box's store.
    pub fn new(pool: SqlitePool, call: CallId) -> LegQualityLog {
        LegQualityLog { pool, call }
    }

    /// Stores one leg's quality (a repeated leg index replaces the earlier row). A failure is
    /// logged, never fatal to the call: the call record does not depend on it.
    pub async fn record(&self, leg_index: u32, role: LegRole, report: &LegReport) {
        let q = LegQualityRecord::of(&self.call, leg_index, role, report);
        // A busy store (another writer holding the lock past the busy timeout under load) is
        // waited out for a while rather than losing the figures.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match store(&self.pool, &q).await {
                Ok(()) => return,
                Err(e)
                    if crate::web::auth::is_busy(&e)
                        && started.elapsed() + pause < std::time::Duration::from_secs(30) =>
                {
                    tracing::warn!(call = %self.call, leg = leg_index, error = %e, "store busy; storing the leg's quality again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(call = %self.call, leg = leg_index, error = %e, "leg quality not stored");
                    return;
                }
            }
        }
    }
}

async fn store(pool: &SqlitePool, q: &LegQualityRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR REPLACE INTO call_leg_quality (call_id, leg_index, role, packets_received, \
         packets_expected, packets_lost, loss_ppm, jitter_us, rtt_us, remote_loss_ppm, \
         remote_jitter_us, r_factor, mos, recorded_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&q.call_id)
    .bind(i64::from(q.leg_index))
    .bind(&q.role)
    .bind(q.packets_received as i64)
    .bind(q.packets_expected as i64)
    .bind(q.packets_lost)
    .bind(i64::from(q.loss_ppm))
    .bind(i64::from(q.jitter_us))
    .bind(q.rtt_us.map(i64::from))
    .bind(q.remote_loss_ppm.map(i64::from))
    .bind(q.remote_jitter_us.map(i64::from))
    .bind(q.r_factor)
    .bind(q.mos)
    .bind(UnixMillis::now().0)
    .execute(pool)
    .await?;
    Ok(())
}

type Row = (
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    f64,
    f64,
);

/// The stored legs of `call_id`, in leg order.
pub async fn leg_quality(
    pool: &SqlitePool,
    call_id: &str,
) -> Result<Vec<LegQualityRecord>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT call_id, leg_index, role, packets_received, packets_expected, packets_lost, \
         loss_ppm, jitter_us, rtt_us, remote_loss_ppm, remote_jitter_us, r_factor, mos \
         FROM call_leg_quality WHERE call_id = ? ORDER BY leg_index",
    )
    .bind(call_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LegQualityRecord {
            call_id: r.0,
            leg_index: r.1 as u32,
            role: r.2,
            packets_received: r.3 as u64,
            packets_expected: r.4 as u64,
            packets_lost: r.5,
            loss_ppm: r.6 as u32,
            jitter_us: r.7 as u32,
            rtt_us: r.8.map(|v| v as u32),
            remote_loss_ppm: r.9.map(|v| v as u32),
            remote_jitter_us: r.10.map(|v| v as u32),
            r_factor: r.11,
            mos: r.12,
        })
        .collect())
}
