//! The cloud's half of the dialer: contact leases and pacing grants.
//!
//! - [`lease_contacts`] picks a campaign's next contacts by priority and retry time, keeps
//!   only those the compliance rules allow now, and leases them as one [`ContactLease`] to
//!   one appliance with an expiry. A contact is held by at most one lease — of any campaign,
//!   to any appliance — at a time: the hold is a conditional update on the contact row, so
//!   two schedulers racing cannot both win.
//! - [`expire_leases`] returns the contacts of leases past their expiry.
//! - [`record_attempt`] applies an appliance's attempt result (idempotent by attempt id):
//!   the contact's state, its retry time from the campaign's retry policy, the attempt log
//!   the per-number caps and the abandon budget are computed from, and the UK lockout.
//! - [`pacing_grant`] computes what an appliance may dial for a campaign right now.
//! - [`push`] turns held leases into wire messages for the sync link (chunked to the
//!   payload limit), settles attempt results that arrived over the link, and
//!   [`scheduler`] keeps each appliance's leases, grants and campaign briefs current.
//!
//! Owns the `contact_leases` and `attempts` tables and the lease columns of `contacts` and
//! `campaign_contacts`. Must not: publish to appliances (the scheduler only stores messages
//! in the sync room's downlink outbox), or judge compliance other than through
//! `callgate_common::compliance`.

use crate::campaigns::{self, CampaignError, CampaignState};
use crate::compliance;
use crate::contacts::vault::{NumberVault, VaultError};
use crate::store::Store;
use callgate_common::compliance::{check_dial, ComplianceError, DialFacts, DncScope};
use callgate_common::ids::CampaignId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AttemptResult, CallOutcome};
use serde::Serialize;

pub mod leader;
pub mod limits;
pub mod push;
pub mod scheduler;

/// Why leasing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The campaign is missing or unusable.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The campaign is not in a state that dials.
    #[error("campaign {id} is {state}; only scheduled campaigns lease contacts")]
    NotDialing { id: i64, state: CampaignState },
    /// The appliance is not one the campaign is worked by.
    #[error("appliance {0:?} does not work this campaign")]
    NotAssigned(String),
    /// The result names a contact the campaign does not hold.
    #[error("contact {contact} is not in campaign {campaign}")]
    UnknownContact { campaign: i64, contact: i64 },
    /// A request field is out of range.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A profile could not be read.
    #[error(transparent)]
    Policy(#[from] compliance::PolicyError),
    /// A number could not be decrypted for the appliance.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One contact handed to an appliance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeasedContact {
    pub contact_id: i64,
    /// E.164: the appliance dials it.
    pub number: String,
    pub time_zones: Vec<String>,
    pub attempts: i64,
    /// Custom fields, for script variables.
    pub fields: serde_json::Value,
    pub tags: Vec<String>,
}

/// A batch of contacts leased to one appliance for one campaign until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactLease {
    pub id: i64,
    pub campaign_id: i64,
    pub appliance: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub contacts: Vec<LeasedContact>,
    /// Candidates skipped because a compliance rule refused them now.
    pub refused: u64,
}

/// How many candidates are read per contact wanted, so compliance refusals still fill a
/// lease.
const OVERFETCH: i64 = 3;

/// Leases up to `max` contacts of `campaign` to `appliance` for `ttl_ms`, handed over in
/// the return value (the REST path): the lease counts as delivered.
pub async fn lease_contacts(
    store: &Store,
    vault: &NumberVault,
    campaign: i64,
    appliance: &str,
    max: u32,
    ttl_ms: i64,
    now: UnixMillis,
) -> Result<ContactLease, LeaseError> {
    hold_contacts(store, vault, campaign, appliance, max, ttl_ms, now, true).await
}

/// Like [`lease_contacts`], for the scheduler that pushes leases over the sync link: the
/// lease stays marked unsent until [`mark_lease_sent`], so a crash between the hold and the
/// send is caught up by the next pass.
pub async fn lease_contacts_to_push(
    store: &Store,
    vault: &NumberVault,
    campaign: i64,
    appliance: &str,
    max: u32,
    ttl_ms: i64,
    now: UnixMillis,
) -> Result<ContactLease, LeaseError> {
    hold_contacts(store, vault, campaign, appliance, max, ttl_ms, now, false).await
}

#[allow(clippy::too_many_arguments)]
async fn hold_contacts(
    store: &Store,
    vault: &NumberVault,
    campaign: i64,
    appliance: &str,
    max: u32,
    ttl_ms: i64,
    now: UnixMillis,
    delivered: bool,
) -> Result<ContactLease, LeaseError> {
    if max == 0 || max > 10_000 {
        return Err(LeaseError::Invalid {
            field: "max_contacts".into(),
            reason: "must be 1 to 10000".into(),
        });
    }
    if !(1_000..=7 * 86_400_000).contains(&ttl_ms) {
        return Err(LeaseError::Invalid {
            field: "ttl_seconds".into(),
            reason: "must be 1 second to 7 days".into(),
        });
    }
    let c = campaigns::get(store, campaign).await?;
    if c.state != CampaignState::Scheduled || !c.spec.in_date_range(now) {
        return Err(LeaseError::NotDialing {
            id: campaign,
            state: c.state,
        });
    }
    if !c.spec.appliances.is_empty() && !c.spec.appliances.iter().any(|a| a.appliance == appliance)
    {
        return Err(LeaseError::NotAssigned(appliance.into()));
    }
    expire_leases(store, now).await?;
    let profile = compliance::get_profile(store, c.spec.compliance_profile_id).await?;
    let mut tx = store.pool().begin().await?;
    let expires_at = now.0 + ttl_ms;
    let (lease_id,): (i64,) = sqlx::query_as(
        "INSERT INTO contact_leases (campaign_id, appliance, issued_at, expires_at, state, \
         sent_at) VALUES ($1, $2, $3, $4, 'active', $5) RETURNING id",
    )
    .bind(campaign)
    .bind(appliance)
    .bind(now.0)
    .bind(expires_at)
    .bind(delivered.then_some(now.0))
    .fetch_one(&mut *tx)
    .await?;
    let may_abandon = c.spec.dial_mode.may_abandon();
    let tally =
        compliance::abandon_tally(&mut tx, campaign, profile.profile.abandon.window_ms, now)
            .await?;
    type Candidate = (i64, Vec<u8>, Vec<u8>, String, i64, String, String);
    // On PostgreSQL, concurrent schedulers skip each other's candidate rows instead of
    // all reading the same top of the queue (SQLite serialises writers anyway).
    let skip_locked = match store.backend() {
        callgate_common::store::Backend::Postgres => " FOR UPDATE OF cc SKIP LOCKED",
        callgate_common::store::Backend::Sqlite => "",
    };
    let candidates: Vec<Candidate> = sqlx::query_as(&format!(
        "SELECT c.id, c.number_index, c.number_cipher, c.time_zones, cc.attempts, c.fields, c.tags \
         FROM campaign_contacts cc JOIN contacts c ON c.id = cc.contact_id \
         WHERE cc.campaign_id = $1 AND cc.state = 'ready' AND cc.next_attempt_at <= $2 \
         AND (c.lease_id IS NULL OR c.lease_expires_at <= $3) \
         ORDER BY cc.priority DESC, cc.next_attempt_at, cc.contact_id LIMIT $4{skip_locked}"
    ))
    .bind(campaign)
    .bind(now.0)
    .bind(now.0)
    .bind(i64::from(max) * OVERFETCH)
    .fetch_all(&mut *tx)
    .await?;
    let indexes: Vec<Vec<u8>> = candidates.iter().map(|c| c.1.clone()).collect();
    let dnc = compliance::dnc_of_many(&mut tx, &indexes).await?;
    let earlier = compliance::recent_attempts_many(&mut tx, &indexes, now).await?;
    let mut chosen = Vec::new();
    let mut blocked = Vec::new();
    let mut refused = 0;
    for cand in candidates {
        if chosen.len() as u32 >= max {
            break;
        }
        let zones: Vec<String> = cand.3.split(',').map(str::to_string).collect();
        let facts = DialFacts {
            campaign: CampaignId(campaign as u64),
            dnc: dnc.get(&cand.1).map(Vec::as_slice).unwrap_or(&[]),
            zones: &zones,
            earlier_attempts: earlier.get(&cand.1).map(Vec::as_slice).unwrap_or(&[]),
            abandon: tally,
            may_abandon,
        };
        match check_dial(&profile.profile, &c.spec.calling_window, &facts, now) {
            Ok(()) => chosen.push((cand, zones)),
            Err(ComplianceError::DoNotCallGlobal | ComplianceError::DoNotCallCampaign(_)) => {
                // Permanent: the contact leaves the campaign's queue.
                blocked.push(cand.0);
                refused += 1;
            }
            Err(ComplianceError::AbandonBudgetSpent { .. }) => {
                // Campaign-wide: nothing more can be leased for predictive dialing now.
                refused += 1;
                break;
            }
            Err(_) => refused += 1,
        }
    }
    if !blocked.is_empty() {
        let sql = format!(
            "UPDATE campaign_contacts SET state = 'blocked' WHERE campaign_id = $1 \
             AND contact_id IN ({})",
            numbered(2, blocked.len())
        );
        let mut q = sqlx::query(&sql).bind(campaign);
        for id in &blocked {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    let mut held = std::collections::HashSet::new();
    if !chosen.is_empty() {
        // The hold: only rows no live lease holds are taken, whoever races us.
        let sql = format!(
            "UPDATE contacts SET lease_id = $1, lease_expires_at = $2 \
             WHERE (lease_id IS NULL OR lease_expires_at <= $3) AND id IN ({}) RETURNING id",
            numbered(4, chosen.len())
        );
        let mut q = sqlx::query_as::<_, (i64,)>(&sql)
            .bind(lease_id)
            .bind(expires_at)
            .bind(now.0);
        for (cand, _) in &chosen {
            q = q.bind(cand.0);
        }
        held = q
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect();
    }
    if !held.is_empty() {
        let sql = format!(
            "UPDATE campaign_contacts SET state = 'leased', lease_id = $1 WHERE campaign_id = $2 \
             AND contact_id IN ({})",
            numbered(3, held.len())
        );
        let mut q = sqlx::query(&sql).bind(lease_id).bind(campaign);
        for id in &held {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    let mut contacts = Vec::with_capacity(held.len());
    for ((id, _, cipher, _, attempts, fields, tags), zones) in chosen {
        if !held.contains(&id) {
            continue;
        }
        contacts.push(LeasedContact {
            contact_id: id,
            number: vault.open(&cipher)?.e164(),
            time_zones: zones,
            attempts,
            fields: serde_json::from_str(&fields).unwrap_or(serde_json::Value::Null),
            tags: tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    tx.commit().await?;
    metrics::counter!("callgate_contacts_leased_total").increment(contacts.len() as u64);
    tracing::debug!(
        lease = lease_id,
        campaign,
        appliance,
        contacts = contacts.len(),
        refused,
        "contact lease issued"
    );
    Ok(ContactLease {
        id: lease_id,
        campaign_id: campaign,
        appliance: appliance.into(),
        issued_at: now.0,
        expires_at,
        contacts,
        refused,
    })
}

/// Returns the contacts of every lease that expired by `now`; how many leases expired.
pub async fn expire_leases(store: &Store, now: UnixMillis) -> Result<u64, sqlx::Error> {
    let expired: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM contact_leases WHERE state = 'active' AND expires_at <= $1")
            .bind(now.0)
            .fetch_all(store.pool())
            .await?;
    for (id,) in &expired {
        end_lease(store, *id, "expired").await?;
    }
    Ok(expired.len() as u64)
}

/// Ends one lease (`state` = `expired` or `returned`) and puts its untried contacts back.
async fn end_lease(store: &Store, lease: i64, state: &str) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let changed =
        sqlx::query("UPDATE contact_leases SET state = $1 WHERE id = $2 AND state = 'active'")
            .bind(state)
            .bind(lease)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if changed == 1 {
        sqlx::query(
            "UPDATE campaign_contacts SET state = 'ready', lease_id = NULL \
             WHERE lease_id = $1 AND state = 'leased'",
        )
        .bind(lease)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE contacts SET lease_id = NULL, lease_expires_at = NULL WHERE lease_id = $1",
        )
        .bind(lease)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Returns a lease early (the appliance is done with it or the campaign stopped).
pub async fn return_lease(store: &Store, lease: i64) -> Result<(), sqlx::Error> {
    end_lease(store, lease, "returned").await
}

/// Takes a lease back early (campaign paused or stopped, share removed): its contacts
/// return to the queue and, if it was delivered, the sync room tells the appliance
/// (`state = 'revoked'`, `revoke_sent_at` NULL until then).
pub async fn revoke_lease(store: &Store, lease: i64) -> Result<(), sqlx::Error> {
    end_lease(store, lease, "revoked").await
}

/// Revokes every active lease of a campaign.
pub async fn return_campaign_leases(
    store: &Store,
    campaign: i64,
    _now: i64,
) -> Result<(), sqlx::Error> {
    let leases: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM contact_leases WHERE campaign_id = $1 AND state = 'active'")
            .bind(campaign)
            .fetch_all(store.pool())
            .await?;
    for (id,) in leases {
        revoke_lease(store, id).await?;
    }
    Ok(())
}

/// What applying an attempt result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttemptApplied {
    /// False when this attempt id was applied before (a replay): nothing changed.
    pub applied: bool,
    /// The contact's state in the campaign afterwards.
    pub contact_state: &'static str,
    /// When it will be tried again, if it will.
    pub next_attempt_at: Option<i64>,
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

/// Applies one attempt result from `appliance`. Idempotent: a replayed attempt id changes
/// nothing and reports `applied: false`.
pub async fn record_attempt(
    store: &Store,
    appliance: &str,
    r: &AttemptResult,
) -> Result<AttemptApplied, LeaseError> {
    let campaign = r.campaign.0 as i64;
    let contact = r.contact.0 as i64;
    let c = campaigns::get(store, campaign).await?;
    let profile = compliance::get_profile(store, c.spec.compliance_profile_id).await?;
    let mut tx = store.pool().begin().await?;
    type Row = (i64, Vec<u8>, String, String, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT cc.attempts, c.number_index, c.number_masked, cc.state, cc.lease_id \
         FROM campaign_contacts cc JOIN contacts c ON c.id = cc.contact_id \
         WHERE cc.campaign_id = $1 AND cc.contact_id = $2",
    )
    .bind(campaign)
    .bind(contact)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((attempts, index, masked, queue_state, holder)) = row else {
        return Err(LeaseError::UnknownContact { campaign, contact });
    };
    // A late result under a lease that expired, after the contact was leased again to
    // someone else: the attempt still counts (caps, abandon budget), but the contact's
    // place in the queue belongs to the current holder.
    let superseded = queue_state == "leased" && holder != Some(r.lease.0 as i64);
    let live = matches!(
        r.outcome,
        CallOutcome::AnsweredHuman | CallOutcome::Abandoned
    );
    let abandoned = r.outcome == CallOutcome::Abandoned;
    let inserted = sqlx::query(
        "INSERT INTO attempts (attempt_uuid, campaign_id, contact_id, number_index, appliance, \
         outcome, live, abandoned, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (attempt_uuid) DO NOTHING",
    )
    .bind(r.attempt.to_string())
    .bind(campaign)
    .bind(contact)
    .bind(index.clone())
    .bind(appliance)
    .bind(outcome_name(r.outcome))
    .bind(i64::from(live))
    .bind(i64::from(abandoned))
    .bind(r.started_at.0)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.commit().await?;
        let (state, next): (String, i64) = sqlx::query_as(
            "SELECT state, next_attempt_at FROM campaign_contacts WHERE campaign_id = $1 AND contact_id = $2",
        )
        .bind(campaign)
        .bind(contact)
        .fetch_one(store.pool())
        .await?;
        return Ok(AttemptApplied {
            applied: false,
            contact_state: state_name(&state),
            next_attempt_at: (state == "ready").then_some(next),
        });
    }
    if superseded {
        sqlx::query(
            "UPDATE campaign_contacts SET attempts = attempts + 1, last_outcome = $1 \
             WHERE campaign_id = $2 AND contact_id = $3",
        )
        .bind(outcome_name(r.outcome))
        .bind(campaign)
        .bind(contact)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if abandoned {
            if let Some(entry) = profile.profile.lockout_after_abandon(r.ended_at) {
                compliance::add_lockout(store, &index, &masked, entry, "abandoned call lockout")
                    .await?;
            }
        }
        return Ok(AttemptApplied {
            applied: true,
            contact_state: "leased",
            next_attempt_at: None,
        });
    }
    let attempts = attempts as u32 + 1;
    let rule = match r.outcome {
        CallOutcome::Busy => Some(c.spec.retry.busy),
        CallOutcome::NoAnswer => Some(c.spec.retry.no_answer),
        CallOutcome::Failed | CallOutcome::Rejected => Some(c.spec.retry.failed),
        CallOutcome::AnsweredMachine => Some(c.spec.retry.machine),
        CallOutcome::AnsweredHuman | CallOutcome::Abandoned => None,
    };
    let mut next = rule.and_then(|rule| rule.next_after(attempts, r.ended_at));
    let mut state = match (rule, next) {
        (None, _) => "done",
        (Some(_), Some(_)) => "ready",
        (Some(_), None) => "exhausted",
    };
    // A call task dialled through this entry is settled by this attempt, or retried.
    let task = crate::call_tasks::on_attempt_in(
        &mut tx,
        campaign,
        contact,
        outcome_name(r.outcome),
        r.outcome == CallOutcome::AnsweredHuman,
        state == "ready",
        r.ended_at,
    )
    .await
    .map_err(|e| match e {
        crate::call_tasks::CallTaskError::Db(db) => LeaseError::Db(db),
        other => LeaseError::Db(sqlx::Error::Protocol(other.to_string())),
    })?;
    if task == crate::call_tasks::TaskAttempt::Settled(crate::call_tasks::TaskOutcome::Failed) {
        state = "exhausted";
        next = None;
    }
    sqlx::query(
        "UPDATE campaign_contacts SET state = $1, attempts = $2, next_attempt_at = $3, \
         last_outcome = $4, lease_id = NULL WHERE campaign_id = $5 AND contact_id = $6",
    )
    .bind(state)
    .bind(i64::from(attempts))
    .bind(next.map(|t| t.0).unwrap_or(0))
    .bind(outcome_name(r.outcome))
    .bind(campaign)
    .bind(contact)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE contacts SET lease_id = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_id = $2",
    )
    .bind(contact)
    .bind(r.lease.0 as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if abandoned {
        if let Some(entry) = profile.profile.lockout_after_abandon(r.ended_at) {
            debug_assert_eq!(entry.scope, DncScope::Global);
            compliance::add_lockout(store, &index, &masked, entry, "abandoned call lockout")
                .await?;
        }
    }
    Ok(AttemptApplied {
        applied: true,
        contact_state: state,
        next_attempt_at: next.map(|t| t.0),
    })
}

fn state_name(s: &str) -> &'static str {
    match s {
        "ready" => "ready",
        "leased" => "leased",
        "done" => "done",
        "blocked" => "blocked",
        _ => "exhausted",
    }
}

/// What an appliance may dial for a campaign until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PacingGrant {
    pub campaign_id: i64,
    pub max_concurrent: u32,
    pub max_attempts_per_minute: u32,
    /// Calls it may still abandon (predictive only; its share of the campaign's budget).
    pub abandon_budget: u64,
    pub expires_at: i64,
}

/// Computes the grant for `appliance` on `campaign` at `now`, from the appliance's trunk
/// limits (`max_concurrent`, `max_per_minute`), its share of the campaign, and the
/// campaign's remaining abandon budget.
pub async fn pacing_grant(
    store: &Store,
    campaign: i64,
    appliance: &str,
    trunk_concurrent: u32,
    trunk_per_minute: u32,
    ttl_ms: i64,
    now: UnixMillis,
) -> Result<PacingGrant, LeaseError> {
    let c = campaigns::get(store, campaign).await?;
    let total: u64 = c.spec.appliances.iter().map(|a| u64::from(a.share)).sum();
    let share = match c.spec.appliances.iter().find(|a| a.appliance == appliance) {
        Some(a) => u64::from(a.share),
        None if c.spec.appliances.is_empty() => 1,
        None => return Err(LeaseError::NotAssigned(appliance.into())),
    };
    let total = total.max(share);
    let dialing = c.state == CampaignState::Scheduled && c.spec.in_date_range(now);
    let profile = compliance::get_profile(store, c.spec.compliance_profile_id).await?;
    let mut conn = store.pool().acquire().await?;
    let tally =
        compliance::abandon_tally(&mut conn, campaign, profile.profile.abandon.window_ms, now)
            .await?;
    let budget = if c.spec.dial_mode.may_abandon() {
        profile.profile.abandon.remaining(tally) * share / total
    } else {
        0
    };
    let (concurrent, per_minute) = if dialing {
        (trunk_concurrent, trunk_per_minute)
    } else {
        (0, 0)
    };
    Ok(PacingGrant {
        campaign_id: campaign,
        max_concurrent: concurrent,
        max_attempts_per_minute: per_minute,
        abandon_budget: budget,
        expires_at: now.0 + ttl_ms,
    })
}

fn numbered(first: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}
