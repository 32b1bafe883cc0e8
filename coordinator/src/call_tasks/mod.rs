//! One-off call tasks (`POST /api/v1/call-tasks`) and the signed webhook that reports each
//! task's result to its `callback_url`.
//!
//! - A task is created `queued` with a fresh per-task signing secret, returned once.
//! - When its result arrives, the task is `completed` (or `failed`) and a webhook delivery
//!   is queued in the same transaction, so a result is never recorded without its
//!   delivery.
//! - [`DeliverySchedule`] (pure) says when to retry: exponential backoff until the receiver
//!   answers 2xx or the attempts run out (`given_up`). [`deliver_due`] is the thin driver
//!   that sends what is due; [`run_deliveries`] calls it in a loop.
//! - Either way the delivery's state, attempts and last error are visible in the API.
//!
//! Deliveries go over http:// or https:// ([`webhook_client`]: rustls with ring, the
//! system's CA bundle).
//!
//! The signature header is `X-Callgate-Signature: t=<unix ms>,v1=<hex>` where `<hex>` is
//! HMAC-SHA-256 over `<t>.<body>` with the task's secret.
//!
//! Dialling goes through the lease path ([`schedule_due`]): once a task's
//! `preferred_time` has come, its `customer_id` is looked up as a contact's `external_id`
//! and the contact is put at the head of the queue of the scheduled campaign whose script
//! is the task's `script_id` (table `call_task_contacts` links them). The campaign's
//! leases carry it to an appliance like any contact; each attempt result for that entry
//! ([`on_attempt_in`], called by `crate::leasing::record_attempt` in its transaction)
//! settles the task: `completed` when a person answered, `failed` once `max_retries`
//! retries are used (or the campaign's retry policy gives up) — with its webhook queued in
//! the same transaction. A task that cannot be placed (no such contact, no scheduled
//! campaign with that script) fails at once, saying why.
//!
//! Owns the `call_tasks`, `call_task_contacts` and `webhook_deliveries` tables. Must not
//! dial (the appliances do).

use crate::campaigns::{self, CampaignState};
use crate::store::Store;
use callgate_common::time::UnixMillis;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};
use std::time::Duration;

/// Why a call-task operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallTaskError {
    /// The task does not exist.
    #[error("call task {0} does not exist")]
    NotFound(i64),
    /// A field is unusable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The task already has its result.
    #[error("call task {0} already has a result")]
    AlreadyDone(i64),
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn invalid(field: &str, reason: &str) -> CallTaskError {
    CallTaskError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A request for a one-off call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCallTask {
    pub customer_id: String,
    pub script_id: String,
    /// Where the result is POSTed (http:// or https://).
    pub callback_url: String,
    #[serde(default)]
    pub max_retries: u32,
    /// Unix ms; `None`: as soon as possible.
    #[serde(default)]
    pub preferred_time: Option<i64>,
}

/// The result an appliance (or the dialer) reports for a task.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    /// `completed` when the call reached the customer, `failed` otherwise.
    pub outcome: TaskOutcome,
    /// Free-form detail (disposition, reason).
    #[serde(default)]
    pub detail: String,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    Completed,
    Failed,
}

/// A webhook delivery's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryView {
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallTask {
    pub id: i64,
    pub customer_id: String,
    pub script_id: String,
    pub callback_url: String,
    pub max_retries: i64,
    pub preferred_time: Option<i64>,
    pub state: String,
    pub result: Option<serde_json::Value>,
    pub created_at: i64,
    pub delivery: Option<DeliveryView>,
    /// Only in the answer to the creating request: verify webhook signatures with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
}

fn check_text(field: &str, v: &str) -> Result<(), CallTaskError> {
    if v.trim().is_empty() || v.len() > 200 || v.contains('\0') {
        return Err(invalid(field, "must be 1 to 200 characters"));
    }
    Ok(())
}

/// Creates a queued task with a new signing secret.
pub async fn create(store: &Store, t: NewCallTask) -> Result<CallTask, CallTaskError> {
    check_text("customer_id", &t.customer_id)?;
    check_text("script_id", &t.script_id)?;
    let url = t.callback_url.trim();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok
        || url.len() > 2000
        || reqwest::Url::parse(url)
            .map(|u| u.host().is_none())
            .unwrap_or(true)
    {
        return Err(invalid(
            "callback_url",
            "must be an http:// or https:// URL with a host",
        ));
    }
    if t.max_retries > 20 {
        return Err(invalid("max_retries", "at most 20"));
    }
    if t.preferred_time.is_some_and(|p| p < 0) {
        return Err(invalid("preferred_time", "Unix milliseconds, not negative"));
    }
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| CallTaskError::Random)?;
    let secret = hex::encode(secret);
    let now = UnixMillis::now().0;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO call_tasks (customer_id, script_id, callback_url, callback_secret, \
         max_retries, preferred_time, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7) RETURNING id",
    )
    .bind(&t.customer_id)
    .bind(&t.script_id)
    .bind(url)
    .bind(&secret)
    .bind(i64::from(t.max_retries))
    .bind(t.preferred_time)
    .bind(now)
    .fetch_one(store.pool())
    .await?;
    let mut task = get(store, id).await?;
    task.callback_secret = Some(secret);
    Ok(task)
}

type TaskRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    String,
    Option<String>,
    i64,
);
type DeliveryRow = (String, i64, i64, Option<i64>, Option<String>, Option<i64>);

/// One task with its delivery.
pub async fn get(store: &Store, id: i64) -> Result<CallTask, CallTaskError> {
    let row: Option<TaskRow> = sqlx::query_as(
        "SELECT id, customer_id, script_id, callback_url, max_retries, preferred_time, state, \
         result, created_at FROM call_tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?;
    let r = row.ok_or(CallTaskError::NotFound(id))?;
    let d: Option<DeliveryRow> = sqlx::query_as(
        "SELECT state, attempts, next_attempt_at, last_status, last_error, delivered_at \
         FROM webhook_deliveries WHERE task_id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?;
    Ok(CallTask {
        id: r.0,
        customer_id: r.1,
        script_id: r.2,
        callback_url: r.3,
        max_retries: r.4,
        preferred_time: r.5,
        state: r.6,
        result: r.7.and_then(|t| serde_json::from_str(&t).ok()),
        created_at: r.8,
        delivery: d.map(|d| DeliveryView {
            next_attempt_at: (d.0 == "pending").then_some(d.2),
            state: d.0,
            attempts: d.1,
            last_status: d.3,
            last_error: d.4,
            delivered_at: d.5,
        }),
        callback_secret: None,
    })
}

/// Records the task's result and queues its webhook, in one transaction.
pub async fn record_result(
    store: &Store,
    id: i64,
    result: TaskResult,
) -> Result<CallTask, CallTaskError> {
    if result.detail.len() > 2000 || result.detail.contains('\0') {
        return Err(invalid("detail", "at most 2000 characters"));
    }
    let mut tx = store.pool().begin().await?;
    if !record_result_in(&mut tx, id, &result, UnixMillis::now()).await? {
        drop(tx);
        get(store, id).await?;
        return Err(CallTaskError::AlreadyDone(id));
    }
    tx.commit().await?;
    get(store, id).await
}

/// [`record_result`] inside the caller's transaction; `false` when the task is not
/// queued (unknown, or already settled).
pub async fn record_result_in(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    result: &TaskResult,
    now: UnixMillis,
) -> Result<bool, CallTaskError> {
    let now = now.0;
    let state = match result.outcome {
        TaskOutcome::Completed => "completed",
        TaskOutcome::Failed => "failed",
    };
    let changed = sqlx::query(
        "UPDATE call_tasks SET state = $1, result = $2, updated_at = $3 WHERE id = $4 AND state = 'queued'",
    )
    .bind(state)
    .bind(serde_json::to_string(result).expect("results serialise"))
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (task_id, state, attempts, next_attempt_at) \
         VALUES ($1, 'pending', 0, $2)",
    )
    .bind(id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE call_task_contacts SET settled = 1 WHERE task_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// A task's queue entry goes ahead of every contact scored by the campaign's priority
/// weights (whose scores are far below this).
pub const TASK_PRIORITY: f64 = 1.0e9;

/// What one [`schedule_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleReport {
    /// Tasks put at the head of a campaign's queue.
    pub enrolled: u64,
    /// Tasks failed because they cannot be placed (no contact, no campaign).
    pub refused: u64,
}

/// Places the queued tasks whose `preferred_time` (none: at once) has come at `now`: each
/// becomes the head of the queue of the scheduled campaign that runs its script, for the
/// contact whose `external_id` is its `customer_id`, due at its preferred time. A task that
/// cannot be placed fails with the reason (and its webhook).
pub async fn schedule_due(store: &Store, now: UnixMillis) -> Result<ScheduleReport, CallTaskError> {
    let due: Vec<(i64, String, String, Option<i64>)> = sqlx::query_as(
        "SELECT t.id, t.customer_id, t.script_id, t.preferred_time FROM call_tasks t \
         WHERE t.state = 'queued' AND (t.preferred_time IS NULL OR t.preferred_time <= $1) \
         AND NOT EXISTS (SELECT 1 FROM call_task_contacts l WHERE l.task_id = t.id) \
         ORDER BY t.id LIMIT 500",
    )
    .bind(now.0)
    .fetch_all(store.pool())
    .await?;
    let mut report = ScheduleReport::default();
    if due.is_empty() {
        return Ok(report);
    }
    let mut running = Vec::new();
    let mut after = 0;
    loop {
        let page = campaigns::page(store, after, 500)
            .await
            .map_err(|e| match e {
                campaigns::CampaignError::Db(db) => CallTaskError::Db(db),
                other => CallTaskError::Db(sqlx::Error::Protocol(other.to_string())),
            })?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        running.extend(
            page.into_iter()
                .filter(|c| c.state == CampaignState::Scheduled)
                .map(|c| (c.id, c.spec.script)),
        );
    }
    for (task, customer, script, preferred) in due {
        let mut tx = store.pool().begin().await?;
        let contact: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM contacts WHERE external_id = $1 ORDER BY id LIMIT 1")
                .bind(&customer)
                .fetch_optional(&mut *tx)
                .await?;
        let campaign = running
            .iter()
            .find(|(_, s)| *s == script)
            .map(|(id, _)| *id);
        let refusal = match (contact, campaign) {
            (None, _) => Some(format!("no contact has external_id {customer:?}")),
            (_, None) => Some(format!("no scheduled campaign runs script {script:?}")),
            (Some((contact,)), Some(campaign)) => {
                let at = preferred.unwrap_or(now.0).max(0);
                sqlx::query(
                    "INSERT INTO campaign_contacts (campaign_id, contact_id, state, priority, \
                     attempts, next_attempt_at) VALUES ($1, $2, 'ready', $3, 0, $4) \
                     ON CONFLICT (campaign_id, contact_id) DO UPDATE SET state = 'ready', \
                     priority = $3, next_attempt_at = $4 WHERE campaign_contacts.state <> 'leased'",
                )
                .bind(campaign)
                .bind(contact)
                .bind(TASK_PRIORITY)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO call_task_contacts (task_id, campaign_id, contact_id) \
                     VALUES ($1, $2, $3)",
                )
                .bind(task)
                .bind(campaign)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
                None
            }
        };
        match refusal {
            None => report.enrolled += 1,
            Some(detail) => {
                let result = TaskResult {
                    outcome: TaskOutcome::Failed,
                    detail,
                    attempts: 0,
                };
                record_result_in(&mut tx, task, &result, now).await?;
                report.refused += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(report)
}

/// What an attempt result means for the task dialled through that queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAttempt {
    /// No open task is dialled through this entry.
    NoTask,
    /// The task waits for its next attempt.
    Retrying,
    /// The task is settled (its webhook queued); the entry must not be dialled again for it.
    Settled(TaskOutcome),
}

/// Called for every new attempt result on (`campaign`, `contact`) inside the transaction
/// that records it: counts the attempt for the open task dialled through that entry and
/// settles it — completed when `answered` by a person; failed when `retry_scheduled` is
/// false (the campaign gives up) or the task's `max_retries` are used up.
pub async fn on_attempt_in(
    tx: &mut Transaction<'_, Any>,
    campaign: i64,
    contact: i64,
    outcome: &str,
    answered: bool,
    retry_scheduled: bool,
    now: UnixMillis,
) -> Result<TaskAttempt, CallTaskError> {
    let open: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT l.task_id, l.attempts, t.max_retries FROM call_task_contacts l \
         JOIN call_tasks t ON t.id = l.task_id \
         WHERE l.campaign_id = $1 AND l.contact_id = $2 AND l.settled = 0 \
         ORDER BY l.task_id LIMIT 1",
    )
    .bind(campaign)
    .bind(contact)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((task, attempts, max_retries)) = open else {
        return Ok(TaskAttempt::NoTask);
    };
    let attempts = attempts + 1;
    sqlx::query("UPDATE call_task_contacts SET attempts = $1 WHERE task_id = $2")
        .bind(attempts)
        .bind(task)
        .execute(&mut **tx)
        .await?;
    let outcome_of = if answered {
        Some(TaskOutcome::Completed)
    } else if !retry_scheduled || attempts > max_retries {
        Some(TaskOutcome::Failed)
    } else {
        None
    };
    let Some(task_outcome) = outcome_of else {
        return Ok(TaskAttempt::Retrying);
    };
    let result = TaskResult {
        outcome: task_outcome,
        detail: format!("last attempt: {outcome}"),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    };
    record_result_in(tx, task, &result, now).await?;
    Ok(TaskAttempt::Settled(task_outcome))
}

/// When to retry a webhook: `base * 2^(attempts-1)`, capped, for at most `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySchedule {
    pub base_ms: i64,
    pub cap_ms: i64,
    pub max_attempts: u32,
}

impl Default for DeliverySchedule {
    fn default() -> Self {
        DeliverySchedule {
            base_ms: 1_000,
            cap_ms: 3_600_000,
            max_attempts: 12,
        }
    }
}

impl DeliverySchedule {
    /// After `attempts` failed tries ending at `now`: when to try next, or `None` to give up.
    pub fn next_after(&self, attempts: u32, now: UnixMillis) -> Option<UnixMillis> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(40);
        let delay = self.base_ms.saturating_mul(1i64 << exp).min(self.cap_ms);
        Some(now.plus_millis(delay))
    }
}

/// The signature header's value for `body` sent at `t` with `secret`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Sends every delivery due at `now` once; returns how many were attempted.
pub async fn deliver_due(
    store: &Store,
    http: &reqwest::Client,
    schedule: DeliverySchedule,
    now: UnixMillis,
) -> Result<usize, sqlx::Error> {
    type Due = (
        i64,
        i64,
        i64,
        String,
        String,
        String,
        Option<String>,
        String,
        String,
    );
    let due: Vec<Due> = sqlx::query_as(
        "SELECT d.id, d.attempts, t.id, t.callback_url, t.callback_secret, t.state, t.result, \
         t.customer_id, t.script_id FROM webhook_deliveries d JOIN call_tasks t ON t.id = d.task_id \
         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT 50",
    )
    .bind(now.0)
    .fetch_all(store.pool())
    .await?;
    for (delivery, attempts, task, url, secret, state, result, customer, script) in &due {
        let body = serde_json::to_vec(&serde_json::json!({
            "task_id": task,
            "customer_id": customer,
            "script_id": script,
            "state": state,
            "result": result.as_deref().and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()),
        }))
        .expect("webhook bodies serialise");
        let sent_at = UnixMillis::now().0;
        let outcome = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-callgate-signature", signature(secret, sent_at, &body))
            .header("x-callgate-delivery", delivery.to_string())
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let attempts = *attempts as u32 + 1;
        let (status, error) = match &outcome {
            Ok(resp) => (Some(i64::from(resp.status().as_u16())), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = outcome.as_ref().is_ok_and(|r| r.status().is_success());
        let end = UnixMillis::now();
        let (next_state, next_at, delivered) = if ok {
            ("delivered", end.0, Some(end.0))
        } else {
            match schedule.next_after(attempts, end) {
                Some(t) => ("pending", t.0, None),
                None => ("given_up", end.0, None),
            }
        };
        let error =
            error.or_else(|| (!ok).then(|| format!("receiver answered {}", status.unwrap_or(0))));
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, \
             last_status = $4, last_error = $5, delivered_at = $6 WHERE id = $7",
        )
        .bind(next_state)
        .bind(i64::from(attempts))
        .bind(next_at)
        .bind(status)
        .bind(error)
        .bind(delivered)
        .bind(delivery)
        .execute(store.pool())
        .await?;
        tracing::info!(
            task,
            attempts,
            state = next_state,
            "call-task webhook attempt"
        );
    }
    Ok(due.len())
}

/// The system's CA bundles, where Debian-like and Red Hat-like systems keep them.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The HTTP client webhooks go out through: http:// and https:// (rustls with ring),
/// trusting the system's CA bundle plus `extra_roots_pem` (PEM certificates, e.g. a
/// private CA the receivers use). Redirects are not followed: a delivery is acknowledged
/// by the URL it was sent to.
pub fn webhook_client(extra_roots_pem: Option<&[u8]>) -> Result<reqwest::Client, CallTaskError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15));
    let bad = |what: &str, e: reqwest::Error| invalid("webhook_ca", &format!("{what}: {e}"));
    for path in SYSTEM_CA_BUNDLES {
        let Ok(pem) = std::fs::read(path) else {
            continue;
        };
        // A certificate the parser refuses is skipped: one odd entry must not cost the rest.
        if let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem) {
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        break;
    }
    if let Some(pem) = extra_roots_pem {
        for c in
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| bad("CA certificates", e))?
        {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| bad("HTTP client", e))
}

/// Delivers due webhooks, checking every `tick`, until `stop` turns true (or its sender is
/// gone). A pass already under way finishes first, so the server can close the database
/// only after this returns.
pub async fn run_deliveries(
    store: Store,
    schedule: DeliverySchedule,
    tick: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let http = match webhook_client(None) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no webhook client; call-task results are not delivered");
            return;
        }
    };
    while !*stop.borrow() {
        if let Err(e) = deliver_due(&store, &http, schedule, UnixMillis::now()).await {
            tracing::warn!(error = %e, "webhook delivery pass failed");
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_back_off_exponentially_up_to_a_cap_then_give_up() {
        let s = DeliverySchedule {
            base_ms: 1_000,
            cap_ms: 5_000,
            max_attempts: 5,
        };
        let t = UnixMillis(0);
        let delays: Vec<Option<i64>> = (1..=5).map(|a| s.next_after(a, t).map(|x| x.0)).collect();
        assert_eq!(
            delays,
            vec![Some(1_000), Some(2_000), Some(4_000), Some(5_000), None]
        );
    }

    #[test]
    fn the_signature_covers_time_and_body_with_the_tasks_secret() {
        let a = signature("s3cret", 1000, b"{}");
        assert!(a.starts_with("t=1000,v1="));
        assert_eq!(a.len(), "t=1000,v1=".len() + 64);
        assert_ne!(a, signature("s3cret", 1001, b"{}"));
        assert_ne!(a, signature("s3cret", 1000, b"{ }"));
        assert_ne!(a, signature("other", 1000, b"{}"));
        assert_eq!(a, signature("s3cret", 1000, b"{}"));
    }
}
