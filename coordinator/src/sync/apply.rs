//! Idempotent apply of uplink messages: one database transaction stores a message's effect
//! and advances that appliance's high-water sequence number, so a replay (after a resend,
//! a reconnect, a restart of either side) is recognised and dropped, and a message ahead of
//! a gap waits for the sender to resend from the gap. Portable SQL (`$n`, integers, text,
//! blobs) for SQLite and PostgreSQL alike.

use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AgentState, CallOutcome, Uplink, UplinkEnvelope};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::{BTreeMap, HashMap};

/// What applying an envelope did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored; the appliance's high-water mark is now `seq`.
    Stored { seq: u64 },
    /// Already applied before; nothing changed. `high_water` is the mark to ack.
    Replay { high_water: u64 },
    /// Ahead of a gap; nothing changed; the sender will resend from `expected`.
    Gap { expected: u64, high_water: u64 },
}

/// The appliance's high-water mark (0 when none was applied yet).
pub async fn high_water(pool: &AnyPool, appliance: &ApplianceId) -> Result<u64, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT high_water FROM sync_uplink_state WHERE appliance = $1")
            .bind(appliance.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map_or(0, |(h,)| h as u64))
}

/// Applies one sequenced envelope (seq > 0), whose appliance the caller has checked
/// against the topic. `skew_ms` is the measured clock skew, recorded with the mark.
pub async fn apply_uplink(
    pool: &AnyPool,
    env: &UplinkEnvelope,
    now: UnixMillis,
    skew_ms: i64,
) -> Result<Applied, sqlx::Error> {
    apply_batch(
        pool,
        &env.appliance,
        std::slice::from_ref(env),
        now,
        skew_ms,
    )
    .await
}

/// Applies consecutive envelopes of one appliance in ONE transaction: each in-order one's
/// effect is stored, replays are skipped, the batch stops at a gap, and the high-water mark
/// moves to the last applied — all or nothing. [`Applied::Stored`] carries the new mark.
pub async fn apply_batch(
    pool: &AnyPool,
    appliance: &ApplianceId,
    envs: &[UplinkEnvelope],
    now: UnixMillis,
    skew_ms: i64,
) -> Result<Applied, sqlx::Error> {
    let batch = ApplianceBatch {
        appliance: appliance.clone(),
        envs: envs.to_vec(),
        skew_ms,
    };
    let mut tx = pool.begin().await?;
    let (applied, _) = apply_in(&mut tx, &[&batch], now).await?[0];
    match applied {
        Applied::Stored { .. } => tx.commit().await?,
        Applied::Replay { .. } | Applied::Gap { .. } => tx.rollback().await?,
    }
    Ok(applied)
}

/// One appliance's consecutive envelopes, with the clock skew measured on them.
#[derive(Debug, Clone)]
pub struct ApplianceBatch {
    /// The appliance (checked against the topic by the caller).
    pub appliance: ApplianceId,
    /// Its envelopes in arrival order.
    pub envs: Vec<UplinkEnvelope>,
    /// Clock skew recorded with the mark.
    pub skew_ms: i64,
}

/// What [`apply_many`] did with one appliance's batch.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The appliance.
    pub appliance: ApplianceId,
    /// What applying its batch did (an error rolled back its savepoint only).
    pub applied: Result<Applied, sqlx::Error>,
    /// Its mark before: with [`Applied::Stored`], the messages `before < seq <= stored`
    /// were applied by this call.
    pub before: u64,
}

/// Applies the batches of several appliances in ONE transaction (one commit, one fsync):
/// every appliance's effects and its high-water mark move together, and an appliance whose
/// effect fails is rolled back alone (its error is returned in its slot) while the others
/// commit. Appliances are taken in id order (the order of the results), so two replicas
/// applying overlapping sets lock the mark rows in the same order and cannot deadlock.
/// The outer error means the commit failed: nothing of the call was stored.
///
/// The whole call first goes as a handful of statements (the marks of all appliances read
/// and locked in one, one multi-row `INSERT` per table, the marks advanced in one): each
/// statement is a round trip to the database's thread or server, so their number, not the
/// rows, sets the rate. If any effect fails, that attempt is rolled back and every
/// appliance is applied again in its own savepoint, so the failing one is found and
/// rolled back alone.
pub async fn apply_many(
    pool: &AnyPool,
    batches: &[ApplianceBatch],
    now: UnixMillis,
) -> Result<Vec<BatchOutcome>, sqlx::Error> {
    use sqlx::Acquire;
    let mut order: Vec<&ApplianceBatch> = batches.iter().collect();
    order.sort_by(|a, b| a.appliance.as_str().cmp(b.appliance.as_str()));
    let mut tx = pool.begin().await?;
    match apply_in(&mut tx, &order, now).await {
        Ok(applied) => {
            if applied
                .iter()
                .any(|(a, _)| matches!(a, Applied::Stored { .. }))
            {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            return Ok(order
                .iter()
                .zip(applied)
                .map(|(b, (applied, before))| BatchOutcome {
                    appliance: b.appliance.clone(),
                    applied: Ok(applied),
                    before,
                })
                .collect());
        }
        Err(e) => {
            tx.rollback().await?;
            tracing::debug!(error = %e, "an uplink batch failed as a whole; applying each appliance alone");
        }
    }
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(order.len());
    for b in order {
        let mut savepoint = (&mut tx).begin().await?;
        let applied = apply_in(&mut savepoint, &[b], now)
            .await
            .map(|mut v| v.remove(0));
        match &applied {
            Ok((Applied::Stored { .. }, _)) => savepoint.commit().await?,
            _ => savepoint.rollback().await?,
        }
        results.push(match applied {
            Ok((applied, before)) => BatchOutcome {
                appliance: b.appliance.clone(),
                applied: Ok(applied),
                before,
            },
            Err(e) => BatchOutcome {
                appliance: b.appliance.clone(),
                applied: Err(e),
                before: 0,
            },
        });
    }
    tx.commit().await?;
    Ok(results)
}

/// SQLite's cap on bound parameters in one statement (PostgreSQL's is 65,535): a
/// multi-row statement is cut into chunks of at most this many parameters.
pub const MAX_BIND_PARAMS: usize = 32_766;

/// The body of [`apply_many`] inside `tx`, for `batches` sorted by appliance (one
/// appliance may have several, applied in turn); one `(applied, mark before)` per batch.
///
/// Its first statement writes every appliance's mark row (an upsert that changes nothing)
/// and returns the marks, so the transaction holds the write lock (SQLite) or the row locks
/// (PostgreSQL, taken in id order) before it reads them: no `SQLITE_BUSY_SNAPSHOT` when
/// another writer commits meanwhile, and a second replica applying the same appliance
/// waits for the first to commit and then reads the mark it left. Then the effects of
/// every in-order message (one multi-row statement per table), then the marks of the
/// appliances that moved (one statement). A mark row this call created for an appliance
/// that stored nothing is removed again.
async fn apply_in(
    tx: &mut Transaction<'_, Any>,
    batches: &[&ApplianceBatch],
    now: UnixMillis,
) -> Result<Vec<(Applied, u64)>, sqlx::Error> {
    let mut locks = Rows::new(
        "INSERT INTO sync_uplink_state \
         (appliance, high_water, applied_count, last_seen_at, clock_skew_ms) VALUES ",
        &["", "0", "0", "", ""],
        " ON CONFLICT (appliance) DO UPDATE SET high_water = sync_uplink_state.high_water \
         RETURNING appliance, high_water",
    );
    let mut last: Option<&str> = None;
    for b in batches {
        let app = b.appliance.as_str();
        if last != Some(app) {
            locks.push([
                Param::Text(app.to_string()),
                Param::Int(now.0),
                Param::Int(b.skew_ms),
            ]);
            last = Some(app);
        }
    }
    let mut marks: HashMap<String, u64> = HashMap::new();
    for row in locks.fetch(tx).await? {
        let (app, hw): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        marks.insert(app, hw as u64);
    }
    let start = marks.clone();
    let mut effects = Effects::default();
    let mut results = Vec::with_capacity(batches.len());
    // Per appliance that moved: its final mark, how many it applied, the skew to record.
    let mut moved: BTreeMap<&str, (u64, u64, i64)> = BTreeMap::new();
    for b in batches {
        let app = b.appliance.as_str();
        let hw = marks.get(app).copied().ok_or_else(|| {
            sqlx::Error::Protocol(format!("no high-water mark returned for `{app}`"))
        })?;
        let mut mark = hw;
        for env in &b.envs {
            if env.seq <= mark {
                continue;
            }
            if env.seq != mark + 1 {
                break;
            }
            effects.add(env, now);
            mark = env.seq;
        }
        if mark == hw {
            let first = b.envs.iter().map(|e| e.seq).find(|s| *s > hw);
            let applied = match first {
                Some(_) => Applied::Gap {
                    expected: hw + 1,
                    high_water: hw,
                },
                None => Applied::Replay { high_water: hw },
            };
            results.push((applied, hw));
            continue;
        }
        let entry = moved.entry(app).or_insert((mark, 0, b.skew_ms));
        *entry = (mark, entry.1 + (mark - hw), b.skew_ms);
        marks.insert(app.to_string(), mark);
        results.push((Applied::Stored { seq: mark }, hw));
    }
    effects.write(tx, now).await?;
    if !moved.is_empty() {
        let mut advance = Rows::new(
            "INSERT INTO sync_uplink_state \
             (appliance, high_water, applied_count, last_seen_at, clock_skew_ms) VALUES ",
            &["", "", "", "", ""],
            " ON CONFLICT (appliance) DO UPDATE SET high_water = excluded.high_water, \
             applied_count = sync_uplink_state.applied_count + excluded.applied_count, \
             last_seen_at = excluded.last_seen_at, clock_skew_ms = excluded.clock_skew_ms",
        );
        for (app, (mark, count, skew_ms)) in &moved {
            advance.push([
                Param::Text((*app).to_string()),
                Param::Int(*mark as i64),
                Param::Int(*count as i64),
                Param::Int(now.0),
                Param::Int(*skew_ms),
            ]);
        }
        advance.execute(tx).await?;
    }
    for (app, hw) in &start {
        if *hw == 0 && !moved.contains_key(app.as_str()) {
            sqlx::query("DELETE FROM sync_uplink_state WHERE appliance = $1 AND high_water = 0")
                .bind(app.as_str())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(results)
}

/// A value bound into a multi-row statement.
enum Param {
    Int(i64),
    MaybeInt(Option<i64>),
    Text(String),
    MaybeText(Option<String>),
    Bytes(Vec<u8>),
}

impl Param {
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Param::Int(v) => q.bind(v),
            Param::MaybeInt(v) => q.bind(v),
            Param::Text(v) => q.bind(v),
            Param::MaybeText(v) => q.bind(v),
            Param::Bytes(v) => q.bind(v),
        }
    }
}

/// The rows of one multi-row statement `{head}(…), (…){tail}`, sent in as few statements
/// as [`MAX_BIND_PARAMS`] allows.
struct Rows {
    head: &'static str,
    /// Per column: `""` for a bound parameter, else a literal SQL value.
    columns: &'static [&'static str],
    tail: &'static str,
    params: Vec<Param>,
    rows: usize,
}

impl Rows {
    fn new(head: &'static str, columns: &'static [&'static str], tail: &'static str) -> Self {
        Rows {
            head,
            columns,
            tail,
            params: Vec::new(),
            rows: 0,
        }
    }

    /// Parameters per row.
    fn width(&self) -> usize {
        self.columns.iter().filter(|c| c.is_empty()).count()
    }

    fn push<const N: usize>(&mut self, row: [Param; N]) {
        debug_assert_eq!(N, self.width(), "one parameter per bound column");
        self.params.extend(row);
        self.rows += 1;
    }

    /// The statements, each with the parameters it binds, in row order. PostgreSQL gets
    /// numbered placeholders (`$n`, all it accepts); SQLite gets anonymous ones (`?`): it
    /// keeps named and numbered placeholders in a list it searches once per placeholder
    /// when it parses a statement and again when each one is bound, so a statement with
    /// thousands of `$n` takes quadratic time (a 2,048-row insert took longer than all of
    /// its rows' writes).
    fn statements(self, numbered: bool) -> Vec<(String, Vec<Param>)> {
        let width = self.width().max(1);
        let per = (MAX_BIND_PARAMS / width).max(1);
        let mut params = self.params.into_iter();
        let mut out = Vec::new();
        let mut left = self.rows;
        while left > 0 {
            let n = left.min(per);
            let mut sql = String::with_capacity(self.head.len() + n * 8 * self.columns.len());
            sql.push_str(self.head);
            let mut k = 0;
            for r in 0..n {
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for (c, literal) in self.columns.iter().enumerate() {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    if literal.is_empty() && numbered {
                        k += 1;
                        sql.push('$');
                        sql.push_str(&k.to_string());
                    } else if literal.is_empty() {
                        sql.push('?');
                    } else {
                        sql.push_str(literal);
                    }
                }
                sql.push(')');
            }
            sql.push_str(self.tail);
            out.push((sql, params.by_ref().take(n * width).collect()));
            left -= n;
        }
        out
    }

    async fn execute(self, tx: &mut Transaction<'_, Any>) -> Result<(), sqlx::Error> {
        for (sql, params) in self.statements(numbered_placeholders(tx)) {
            let q = params.into_iter().fold(sqlx::query(&sql), |q, p| p.bind(q));
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn fetch(self, tx: &mut Transaction<'_, Any>) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut rows = Vec::new();
        for (sql, params) in self.statements(numbered_placeholders(tx)) {
            let q = params.into_iter().fold(sqlx::query(&sql), |q, p| p.bind(q));
            rows.extend(q.fetch_all(&mut **tx).await?);
        }
        Ok(rows)
    }
}

/// Whether `tx`'s database wants `$n` placeholders rather than `?` (see [`Rows::statements`]).
fn numbered_placeholders(tx: &Transaction<'_, Any>) -> bool {
    use sqlx::Database;
    tx.backend_name() != sqlx::Sqlite::NAME
}

/// The effects of one transaction's in-order messages: rows for the append-only tables
/// (one multi-row statement each), the latest telemetry per appliance, and the effects
/// that read or replace rows, run one by one in message order.
#[derive(Default)]
struct Effects<'e> {
    calls: Vec<[Param; 9]>,
    attempts: Vec<[Param; 9]>,
    agent_events: Vec<[Param; 8]>,
    /// Latest wins, as on the wire (and one row per appliance, as an upsert needs).
    telemetry: BTreeMap<&'e str, [Param; 5]>,
    serial: Vec<Serial<'e>>,
}

/// An effect applied on its own, in message order.
enum Serial<'e> {
    /// Who last spoke to a contact and what they set: routing inputs of its next lease.
    Contact {
        agent: Option<i64>,
        disposition: Option<String>,
        contact: i64,
    },
    /// A lease return, a campaign calls report, or a kind with no stored effect.
    Message(&'e UplinkEnvelope),
}

impl<'e> Effects<'e> {
    fn add(&mut self, env: &'e UplinkEnvelope, now: UnixMillis) {
        let app = env.appliance.as_str();
        let seq = env.seq as i64;
        match &env.body {
            Uplink::CallRecord(r) => {
                self.calls.push([
                    Param::Text(r.call.to_string()),
                    Param::Text(app.to_string()),
                    Param::Int(seq),
                    Param::MaybeInt(r.campaign.map(|c| c.0 as i64)),
                    Param::Text(outcome_name(r.outcome).to_string()),
                    Param::Int(r.started_at.0),
                    Param::Int(r.ended_at.0),
                    Param::MaybeText(r.disposition.clone()),
                    Param::Bytes(encode(r)),
                ]);
                if let (Some(contact), Some(_)) = (r.contact, r.answered_at) {
                    self.serial.push(Serial::Contact {
                        agent: r.agent.map(|a| a.0 as i64),
                        disposition: r.disposition.clone(),
                        contact: contact.0 as i64,
                    });
                }
            }
            Uplink::AttemptResult(a) => self.attempts.push([
                Param::Text(a.attempt.to_string()),
                Param::Text(app.to_string()),
                Param::Int(seq),
                Param::Int(a.campaign.0 as i64),
                Param::Int(a.contact.0 as i64),
                Param::Int(a.lease.0 as i64),
                Param::Text(outcome_name(a.outcome).to_string()),
                Param::Int(a.ended_at.0),
                Param::Bytes(encode(a)),
            ]),
            Uplink::Telemetry(t) => {
                self.telemetry.insert(
                    app,
                    [
                        Param::Text(app.to_string()),
                        Param::Int(now.0),
                        Param::Int(i64::from(t.active_calls)),
                        Param::Int(t.outbox_depth as i64),
                        Param::Bytes(encode(t)),
                    ],
                );
            }
            Uplink::AgentEvent(e) => {
                let (state, reason) = agent_state(&e.state);
                self.agent_events.push([
                    Param::Text(app.to_string()),
                    Param::Int(seq),
                    Param::Int(e.agent.0 as i64),
                    Param::Text(state.to_string()),
                    Param::MaybeText(reason),
                    Param::Int(e.at.0),
                    Param::MaybeText(e.call.map(|c| c.to_string())),
                    Param::MaybeInt(e.campaign.map(|c| c.0 as i64)),
                ]);
            }
            Uplink::CertificateRenewal { .. } => {
                // Answered by the link once this commits (a new certificate on the downlink).
            }
            _ => self.serial.push(Serial::Message(env)),
        }
    }

    async fn write(
        self,
        tx: &mut Transaction<'_, Any>,
        now: UnixMillis,
    ) -> Result<(), sqlx::Error> {
        if !self.calls.is_empty() {
            let mut rows = Rows::new(
                "INSERT INTO call_records (call_id, appliance, uplink_seq, campaign_id, outcome, \
                 started_at, ended_at, disposition, record) VALUES ",
                &["", "", "", "", "", "", "", "", ""],
                "",
            );
            self.calls.into_iter().for_each(|r| rows.push(r));
            rows.execute(tx).await?;
        }
        if !self.attempts.is_empty() {
            let mut rows = Rows::new(
                "INSERT INTO attempt_results (attempt_id, appliance, uplink_seq, campaign_id, \
                 contact_id, lease_id, outcome, ended_at, record) VALUES ",
                &["", "", "", "", "", "", "", "", ""],
                "",
            );
            self.attempts.into_iter().for_each(|r| rows.push(r));
            rows.execute(tx).await?;
        }
        if !self.agent_events.is_empty() {
            let mut rows = Rows::new(
                "INSERT INTO agent_events (appliance, uplink_seq, agent_id, state, reason, at, \
                 call_id, campaign_id) VALUES ",
                &["", "", "", "", "", "", "", ""],
                "",
            );
            self.agent_events.into_iter().for_each(|r| rows.push(r));
            rows.execute(tx).await?;
        }
        if !self.telemetry.is_empty() {
            let mut rows = Rows::new(
                "INSERT INTO appliance_telemetry \
                 (appliance, received_at, active_calls, outbox_depth, record) VALUES ",
                &["", "", "", "", ""],
                " ON CONFLICT (appliance) DO UPDATE SET received_at = excluded.received_at, \
                 active_calls = excluded.active_calls, outbox_depth = excluded.outbox_depth, \
                 record = excluded.record",
            );
            self.telemetry.into_values().for_each(|r| rows.push(r));
            rows.execute(tx).await?;
        }
        for effect in self.serial {
            match effect {
                Serial::Contact {
                    agent,
                    disposition,
                    contact,
                } => {
                    sqlx::query(
                        "UPDATE contacts SET last_agent_id = COALESCE($1, last_agent_id), \
                         last_disposition = COALESCE($2, last_disposition) WHERE id = $3",
                    )
                    .bind(agent)
                    .bind(disposition)
                    .bind(contact)
                    .execute(&mut **tx)
                    .await?;
                }
                Serial::Message(env) => store_serial(tx, env, now).await?,
            }
        }
        Ok(())
    }
}

fn outcome_name(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::AnsweredHuman => "answered_human",
        CallOutcome::AnsweredMachine => "answered_machine",
        CallOutcome::Busy => "busy",
        CallOutcome::NoAnswer => "no_answer",
        CallOutcome::Rejected => "rejected",
        CallOutcome::Failed => "failed",
        CallOutcome::Abandoned => "abandoned",
    }
}

/// The effects that read or replace rows, for one message.
async fn store_serial(
    tx: &mut Transaction<'_, Any>,
    env: &UplinkEnvelope,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    let app = env.appliance.as_str();
    match &env.body {
        Uplink::LeaseReturn {
            lease,
            contacts,
            reason,
        } => {
            let back =
                crate::leasing::push::return_from_appliance(tx, app, lease.0 as i64, contacts)
                    .await?;
            tracing::info!(appliance = app, lease = lease.0, returned = back, %reason, "appliance returned leased contacts");
        }
        Uplink::CampaignCalls(calls) => {
            // The report is the whole picture: campaigns it leaves out have no call up.
            sqlx::query("DELETE FROM appliance_campaign_calls WHERE appliance = $1")
                .bind(app)
                .execute(&mut **tx)
                .await?;
            for c in calls {
                sqlx::query(
                    "INSERT INTO appliance_campaign_calls (appliance, campaign_id, calls, received_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (appliance, campaign_id) \
                     DO UPDATE SET calls = excluded.calls, received_at = excluded.received_at",
                )
                .bind(app)
                .bind(c.campaign.0 as i64)
                .bind(i64::from(c.calls))
                .bind(now.0)
                .execute(&mut **tx)
                .await?;
            }
        }
        other => {
            // Hello and Ack travel unsequenced; a kind this build has no table for yet still
            // advances the mark (it was received and understood) and is logged.
            tracing::info!(appliance = app, seq = env.seq, kind = ?std::mem::discriminant(other), "uplink kind with no stored effect");
        }
    }
    Ok(())
}

/// An agent state's stored name and, for a pause, its reason.
fn agent_state(s: &AgentState) -> (&'static str, Option<String>) {
    match s {
        AgentState::Ready => ("ready", None),
        AgentState::Reserved => ("reserved", None),
        AgentState::Talking => ("talking", None),
        AgentState::WrapUp => ("wrap_up", None),
        AgentState::Paused { reason } => ("paused", Some(reason.clone())),
        AgentState::LoggedOut => ("logged_out", None),
    }
}

/// postcard bytes of a body, for the `record` columns.
fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("postcard encoding to a Vec is infallible")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_common::ids::{CallId, TrunkId};
    use callgate_common::wire::{CallRecord, Direction};

    fn record(i: u64) -> Uplink {
        Uplink::CallRecord(CallRecord {
            call: CallId(uuid::Uuid::from_u64_pair(7, i)),
            attempt: None,
            campaign: None,
            contact: None,
            direction: Direction::Inbound,
            trunk: Some(TrunkId::new("t").unwrap()),
            remote: None,
            agent: None,
            started_at: UnixMillis(i as i64),
            answered_at: None,
            ended_at: UnixMillis(i as i64 + 5),
            outcome: CallOutcome::Busy,
            sip_status: Some(486),
            disposition: None,
            recording_segments: 0,
            quality: None,
        })
    }

    pub(crate) async fn replay_is_harmless_and_gaps_wait(pool: &AnyPool) {
        let app = ApplianceId::new("branch-1").unwrap();
        let env = |seq| UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(seq));
        let now = UnixMillis(1);
        assert_eq!(
            apply_uplink(pool, &env(2), now, 0).await.unwrap(),
            Applied::Gap {
                expected: 1,
                high_water: 0
            }
        );
        assert_eq!(
            apply_uplink(pool, &env(1), now, 0).await.unwrap(),
            Applied::Stored { seq: 1 }
        );
        assert_eq!(
            apply_uplink(pool, &env(1), now, 0).await.unwrap(),
            Applied::Replay { high_water: 1 }
        );
        assert_eq!(
            apply_uplink(pool, &env(2), now, 0).await.unwrap(),
            Applied::Stored { seq: 2 }
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        let (hw, count): (i64, i64) = sqlx::query_as(
            "SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = $1",
        )
        .bind("branch-1")
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!((hw, count), (2, 2));
    }

    #[tokio::test]
    async fn on_sqlite_a_replay_is_harmless_and_a_message_after_a_gap_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        replay_is_harmless_and_gaps_wait(store.pool()).await;
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_skips_replays_stops_at_a_gap_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let app = ApplianceId::new("branch-1").unwrap();
        let env = |seq| UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(seq));
        let now = UnixMillis(1);
        apply_uplink(pool, &env(1), now, 0).await.unwrap();
        let batch = vec![env(1), env(2), env(3), env(5), env(6)];
        assert_eq!(
            apply_batch(pool, &app, &batch, now, 0).await.unwrap(),
            Applied::Stored { seq: 3 }
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(rows, 3);
        // A batch whose second message cannot be stored leaves nothing of the first either.
        let poisoned = vec![
            env(4),
            UplinkEnvelope::new(app.clone(), 5, UnixMillis(0), record(1)),
        ];
        assert!(apply_batch(pool, &app, &poisoned, now, 0).await.is_err());
        assert_eq!(high_water(pool, &app).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn each_campaign_calls_report_replaces_the_boxs_previous_one_whole() {
        use callgate_common::ids::CampaignId;
        use callgate_common::wire::CampaignCalls;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let report = |app: &str, seq, calls: &[(u64, u32)]| {
            UplinkEnvelope::new(
                ApplianceId::new(app).unwrap(),
                seq,
                UnixMillis(0),
                Uplink::CampaignCalls(
                    calls
                        .iter()
                        .map(|&(c, n)| CampaignCalls {
                            campaign: CampaignId(c),
                            calls: n,
                        })
                        .collect(),
                ),
            )
        };
        let rows = || async {
            sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT appliance, campaign_id, calls FROM appliance_campaign_calls \
                 ORDER BY appliance, campaign_id",
            )
            .fetch_all(pool)
            .await
            .unwrap()
        };
        let now = UnixMillis(10);
        apply_uplink(pool, &report("branch-1", 1, &[(1, 3), (2, 1)]), now, 0)
            .await
            .unwrap();
        apply_uplink(pool, &report("branch-2", 1, &[(1, 2)]), now, 0)
            .await
            .unwrap();
        // branch-1's campaign 2 ended its call: the next report leaves it out.
        apply_uplink(pool, &report("branch-1", 2, &[(1, 4)]), now, 0)
            .await
            .unwrap();
        assert_eq!(
            rows().await,
            vec![
                ("branch-1".to_string(), 1, 4),
                ("branch-2".to_string(), 1, 2)
            ]
        );
        // A replayed older report changes nothing.
        apply_uplink(pool, &report("branch-1", 1, &[(1, 3), (2, 1)]), now, 0)
            .await
            .unwrap();
        assert_eq!(rows().await.len(), 2);
        apply_uplink(pool, &report("branch-1", 3, &[]), now, 0)
            .await
            .unwrap();
        assert_eq!(rows().await, vec![("branch-2".to_string(), 1, 2)]);
    }

    #[tokio::test]
    async fn an_effect_that_fails_leaves_the_high_water_mark_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let app = ApplianceId::new("branch-1").unwrap();
        let first = UplinkEnvelope::new(app.clone(), 1, UnixMillis(0), record(1));
        apply_uplink(pool, &first, UnixMillis(0), 0).await.unwrap();
        // Same call id under a new sequence number: the insert fails, the mark must not move.
        let clash = UplinkEnvelope::new(app.clone(), 2, UnixMillis(0), record(1));
        assert!(apply_uplink(pool, &clash, UnixMillis(0), 0).await.is_err());
        assert_eq!(high_water(pool, &app).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn several_appliances_commit_together_and_a_failing_one_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool();
        let (a, b) = (
            ApplianceId::new("branch-a").unwrap(),
            ApplianceId::new("branch-b").unwrap(),
        );
        let rec = |app: &ApplianceId, seq, call| {
            UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(call))
        };
        apply_uplink(pool, &rec(&a, 1, 1), UnixMillis(0), 0)
            .await
            .unwrap();
        let batches = vec![
            ApplianceBatch {
                appliance: b.clone(),
                envs: vec![rec(&b, 1, 10), rec(&b, 2, 11)],
                skew_ms: 0,
            },
            // Its second record reuses a call id already stored: the insert fails.
            ApplianceBatch {
                appliance: a.clone(),
                envs: vec![rec(&a, 2, 2), rec(&a, 3, 1)],
                skew_ms: 0,
            },
        ];
        let results = apply_many(pool, &batches, UnixMillis(1)).await.unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].appliance, a, "taken in id order");
        assert!(results[0].applied.is_err());
        assert_eq!(results[1].appliance, b);
        assert_eq!(
            (results[1].applied.as_ref().unwrap(), results[1].before),
            (&Applied::Stored { seq: 2 }, 0)
        );
        assert_eq!(
            high_water(pool, &a).await.unwrap(),
            1,
            "a rolled back alone"
        );
        assert_eq!(high_water(pool, &b).await.unwrap(), 2);
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            rows, 3,
            "a's first record, b's two; nothing of a's failed batch"
        );
    }

    /// Two appliers (as two replicas on a shared subscription) apply the same messages at
    /// once while a third writer commits: every message is stored once, neither meets a
    /// stale snapshot, and the mark ends where the messages end.
    #[tokio::test]
    async fn concurrent_appliers_of_one_appliance_store_each_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let pool = store.pool().clone();
        let app = ApplianceId::new("branch-1").unwrap();
        let envs: Vec<UplinkEnvelope> = (1..=60)
            .map(|seq| UplinkEnvelope::new(app.clone(), seq, UnixMillis(0), record(seq)))
            .collect();
        let applier = |pool: AnyPool, envs: Vec<UplinkEnvelope>| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut stored = 0u64;
                for pair in envs.chunks(2) {
                    loop {
                        match apply_batch(&pool, &app, pair, UnixMillis(1), 0)
                            .await
                            .unwrap()
                        {
                            Applied::Stored { seq } => {
                                stored += seq - pair[0].seq + 1;
                                break;
                            }
                            Applied::Replay { .. } => break,
                            Applied::Gap { .. } => tokio::task::yield_now().await,
                        }
                    }
                }
                stored
            })
        };
        let other = {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    sqlx::query(
                        "INSERT INTO appliance_telemetry \
                         (appliance, received_at, active_calls, outbox_depth, record) \
                         VALUES ('other', $1, 0, 0, x'00') ON CONFLICT (appliance) \
                         DO UPDATE SET received_at = excluded.received_at",
                    )
                    .bind(i as i64)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            })
        };
        let first = applier(pool.clone(), envs.clone());
        let second = applier(pool.clone(), envs);
        let total = first.await.unwrap() + second.await.unwrap();
        other.await.unwrap();
        assert!(
            total >= 60,
            "every message stored by one applier or the other"
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM call_records")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 60);
        let (hw, count): (i64, i64) = sqlx::query_as(
            "SELECT high_water, applied_count FROM sync_uplink_state WHERE appliance = $1",
        )
        .bind("branch-1")
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((hw, count), (60, 60));
    }
}
