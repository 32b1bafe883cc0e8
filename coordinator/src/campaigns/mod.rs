//! Campaigns: their settings ([`CampaignSpec`]), their lifecycle ([`CampaignState`] and
//! [`CampaignAction`]), and each contact's progress in them (`campaign_contacts`).
//!
//! Owns the `campaigns`, `campaign_lists` and `campaign_contacts` tables. Must not decide
//! compliance (that is `callgate_common::compliance` via [`crate::compliance`]) or hand
//! contacts to appliances (that is [`crate::leasing`]).

use crate::store::Store;
use callgate_common::compliance::CallingWindow;
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Why a campaign operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The campaign does not exist.
    #[error("campaign {0} does not exist")]
    NotFound(i64),
    /// A field holds a value the campaign cannot run with.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The action is not allowed from the campaign's current state.
    #[error("cannot {action} a campaign that is {state}")]
    BadTransition {
        state: CampaignState,
        action: CampaignAction,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn invalid(field: &str, reason: impl Into<String>) -> CampaignError {
    CampaignError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// What the campaign is for (regulators treat them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    Marketing,
    Service,
    Collections,
}

/// How the appliance dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialMode {
    /// An agent sees the contact first and starts the call.
    Preview,
    /// One call per free agent.
    Progressive,
    /// Dials ahead of free agents; may abandon, so the abandon budget applies.
    Predictive,
    /// Robot scripts only, no agents.
    Agentless,
}

impl DialMode {
    /// Whether calls in this mode can be abandoned (answered with no agent free).
    pub fn may_abandon(self) -> bool {
        matches!(self, DialMode::Predictive)
    }
}

/// How one outcome is retried: `delay_seconds * backoff^(attempt-1)`, at most
/// `max_attempts` attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    pub delay_seconds: u32,
    #[serde(default = "one")]
    pub backoff: f64,
    pub max_attempts: u32,
}

fn one() -> f64 {
    1.0
}

impl RetryRule {
    /// When to try again after the `attempts`-th attempt ended at `at`, or `None` when no
    /// attempt is left.
    pub fn next_after(&self, attempts: u32, at: UnixMillis) -> Option<UnixMillis> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(30) as i32;
        let delay = f64::from(self.delay_seconds) * 1000.0 * self.backoff.powi(exp);
        Some(at.plus_millis(delay.min(365.0 * 86_400_000.0) as i64))
    }
}

/// Retries per outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub busy: RetryRule,
    pub no_answer: RetryRule,
    pub failed: RetryRule,
    pub machine: RetryRule,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let r = |delay_seconds, max_attempts| RetryRule {
            delay_seconds,
            backoff: 2.0,
            max_attempts,
        };
        RetryPolicy {
            busy: r(300, 3),
            no_answer: r(3600, 3),
            failed: r(600, 2),
            machine: r(14_400, 2),
        }
    }
}

/// Weights of the priority inputs: `urgency * urgency_weight + customer_value * value_weight`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityWeights {
    pub urgency: f64,
    pub customer_value: f64,
}

impl Default for PriorityWeights {
    fn default() -> Self {
        PriorityWeights {
            urgency: 0.6,
            customer_value: 0.4,
        }
    }
}

/// One appliance (branch) working the campaign and its share of the contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceShare {
    pub appliance: String,
    pub share: u32,
}

/// Everything a campaign is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    pub kind: CampaignKind,
    pub dial_mode: DialMode,
    /// The compliance profile (jurisdiction) it runs under.
    pub compliance_profile_id: i64,
    /// First day (`YYYY-MM-DD`, UTC) it may dial.
    #[serde(default)]
    pub starts_on: Option<String>,
    /// Last day (`YYYY-MM-DD`, UTC) it may dial.
    #[serde(default)]
    pub ends_on: Option<String>,
    /// Daily calling window and holidays, in the contact's own time zone.
    pub calling_window: CallingWindow,
    /// Caller ID presented, E.164.
    pub caller_id: String,
    #[serde(default)]
    pub script: String,
    #[serde(default)]
    pub disposition_codes: Vec<String>,
    /// The disposition codes (of `disposition_codes`) that count as a conversion in the
    /// analytics (a sale, a booked appointment...).
    #[serde(default)]
    pub conversion_dispositions: Vec<String>,
    #[serde(default)]
    pub wrap_up_seconds: u32,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub priority_weights: PriorityWeights,
    #[serde(default)]
    pub appliances: Vec<ApplianceShare>,
    #[serde(default)]
    pub contact_lists: Vec<i64>,
    /// Whether calls open with the recording consent announcement.
    #[serde(default)]
    pub recording_consent_announcement: bool,
}

impl CampaignSpec {
    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), CampaignError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        let date =
            |field: &str, v: &Option<String>| -> Result<Option<jiff::civil::Date>, CampaignError> {
                v.as_deref()
                    .map(|s| {
                        s.parse::<jiff::civil::Date>()
                            .map_err(|_| invalid(field, format!("{s:?} is not a YYYY-MM-DD date")))
                    })
                    .transpose()
            };
        let (start, end) = (
            date("starts_on", &self.starts_on)?,
            date("ends_on", &self.ends_on)?,
        );
        if let (Some(s), Some(e)) = (start, end) {
            if e < s {
                return Err(invalid("ends_on", "is before starts_on"));
            }
        }
        self.calling_window
            .validate()
            .map_err(|e| invalid("calling_window", e.to_string()))?;
        if self.calling_window.days.iter().any(|d| *d > 6) {
            return Err(invalid(
                "calling_window.days",
                "days are 0 (Monday) to 6 (Sunday)",
            ));
        }
        for (i, h) in self.calling_window.holidays.iter().enumerate() {
            if h.parse::<jiff::civil::Date>().is_err() {
                return Err(invalid(
                    &format!("calling_window.holidays[{i}]"),
                    format!("{h:?} is not a YYYY-MM-DD date"),
                ));
            }
        }
        PhoneNumber::parse(&self.caller_id, None)
            .map_err(|e| invalid("caller_id", format!("{e} (write it as +<country><number>)")))?;
        if self.wrap_up_seconds > 3600 {
            return Err(invalid("wrap_up_seconds", "at most 3600"));
        }
        for (name, r) in [
            ("busy", &self.retry.busy),
            ("no_answer", &self.retry.no_answer),
            ("failed", &self.retry.failed),
            ("machine", &self.retry.machine),
        ] {
            if !(1.0..=10.0).contains(&r.backoff) {
                return Err(invalid(&format!("retry.{name}.backoff"), "must be 1 to 10"));
            }
            if r.max_attempts > 50 {
                return Err(invalid(&format!("retry.{name}.max_attempts"), "at most 50"));
            }
        }
        let w = self.priority_weights;
        if !(w.urgency.is_finite() && w.customer_value.is_finite())
            || w.urgency < 0.0
            || w.customer_value < 0.0
        {
            return Err(invalid(
                "priority_weights",
                "weights must be finite and not negative",
            ));
        }
        for (i, a) in self.appliances.iter().enumerate() {
            if a.appliance
                .parse::<callgate_common::ids::ApplianceId>()
                .is_err()
            {
                return Err(invalid(
                    &format!("appliances[{i}].appliance"),
                    "must be an appliance id (a-z, 0-9, inner -)",
                ));
            }
            if a.share == 0 || a.share > 1000 {
                return Err(invalid(
                    &format!("appliances[{i}].share"),
                    "must be 1 to 1000",
                ));
            }
        }
        for (i, code) in self.disposition_codes.iter().enumerate() {
            if code.trim().is_empty() || code.len() > 64 {
                return Err(invalid(
                    &format!("disposition_codes[{i}]"),
                    "must be 1 to 64 characters",
                ));
            }
        }
        for (i, code) in self.conversion_dispositions.iter().enumerate() {
            if !self.disposition_codes.contains(code) {
                return Err(invalid(
                    &format!("conversion_dispositions[{i}]"),
                    format!("{code:?} is not one of the campaign's disposition codes"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `today` (UTC) is inside the date range.
    pub fn in_date_range(&self, now: UnixMillis) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(now.0) else {
            return false;
        };
        let today = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
        let ok = |v: &Option<String>, after: bool| match v
            .as_deref()
            .and_then(|s| s.parse::<jiff::civil::Date>().ok())
        {
            None => true,
            Some(d) if after => today >= d,
            Some(d) => today <= d,
        };
        ok(&self.starts_on, true) && ok(&self.ends_on, false)
    }
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Being set up; never dials.
    Draft,
    /// Dials inside its date range and calling windows.
    Scheduled,
    /// Temporarily not dialing; leases stop being issued.
    Paused,
    /// Finished for good; outstanding leases are returned.
    Stopped,
    /// Kept for reporting only.
    Archived,
}

impl std::fmt::Display for CampaignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CampaignState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Scheduled => "scheduled",
            CampaignState::Paused => "paused",
            CampaignState::Stopped => "stopped",
            CampaignState::Archived => "archived",
        }
    }

    fn parse(s: &str) -> CampaignState {
        match s {
            "scheduled" => CampaignState::Scheduled,
            "paused" => CampaignState::Paused,
            "stopped" => CampaignState::Stopped,
            "archived" => CampaignState::Archived,
            _ => CampaignState::Draft,
        }
    }

    /// Whether the campaign's settings may still change.
    pub fn editable(self) -> bool {
        matches!(
            self,
            CampaignState::Draft | CampaignState::Scheduled | CampaignState::Paused
        )
    }

    /// The state `action` leads to, or why it is not allowed.
    pub fn after(self, action: CampaignAction) -> Result<CampaignState, CampaignError> {
        use CampaignAction as A;
        use CampaignState as S;
        match (self, action) {
            (S::Draft, A::Schedule) => Ok(S::Scheduled),
            (S::Scheduled, A::Pause) => Ok(S::Paused),
            (S::Paused, A::Resume) => Ok(S::Scheduled),
            (S::Scheduled | S::Paused, A::Stop) => Ok(S::Stopped),
            (S::Draft | S::Stopped, A::Archive) => Ok(S::Archived),
            (state, action) => Err(CampaignError::BadTransition { state, action }),
        }
    }
}

/// A lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignAction {
    Schedule,
    Pause,
    Resume,
    Stop,
    Archive,
}

impl std::fmt::Display for CampaignAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CampaignAction::Schedule => "schedule",
            CampaignAction::Pause => "pause",
            CampaignAction::Resume => "resume",
            CampaignAction::Stop => "stop",
            CampaignAction::Archive => "archive",
        })
    }
}

impl std::str::FromStr for CampaignAction {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "schedule" => CampaignAction::Schedule,
            "pause" => CampaignAction::Pause,
            "resume" => CampaignAction::Resume,
            "stop" => CampaignAction::Stop,
            "archive" => CampaignAction::Archive,
            _ => return Err(()),
        })
    }
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub id: i64,
    pub state: CampaignState,
    /// Bumped on every change; appliances compare it to what they hold.
    pub version: i64,
    #[serde(flatten)]
    pub spec: CampaignSpec,
    pub created_at: i64,
    pub updated_at: i64,
}

async fn check_references(
    conn: &mut sqlx::AnyConnection,
    spec: &CampaignSpec,
) -> Result<(), CampaignError> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM compliance_profiles WHERE id = $1")
        .bind(spec.compliance_profile_id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(invalid(
            "compliance_profile_id",
            format!(
                "compliance profile {} does not exist",
                spec.compliance_profile_id
            ),
        ));
    }
    for (i, list) in spec.contact_lists.iter().enumerate() {
        let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM contact_lists WHERE id = $1")
            .bind(list)
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(invalid(
                &format!("contact_lists[{i}]"),
                format!("contact list {list} does not exist"),
            ));
        }
    }
    Ok(())
}

fn body_of(spec: &CampaignSpec) -> String {
    serde_json::to_string(spec).expect("a campaign spec always serialises")
}

/// Creates a campaign in the draft state.
pub async fn create(store: &Store, spec: CampaignSpec) -> Result<Campaign, CampaignError> {
    let mut tx = store.begin_write().await?;
    let c = create_in(&mut tx, spec).await?;
    tx.commit().await?;
    Ok(c)
}

/// [`create`] inside the caller's transaction (which commits it, or not).
pub async fn create_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    spec: CampaignSpec,
) -> Result<Campaign, CampaignError> {
    spec.validate()?;
    check_references(tx, &spec).await?;
    let now = UnixMillis::now().0;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO campaigns (name, state, profile_id, body, version, created_at, updated_at) \
         VALUES ($1, 'draft', $2, $3, 1, $4, $4) RETURNING id",
    )
    .bind(&spec.name)
    .bind(spec.compliance_profile_id)
    .bind(body_of(&spec))
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    set_lists(tx, id, &spec.contact_lists).await?;
    get_in(tx, id).await
}

async fn set_lists(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    lists: &[i64],
) -> Result<(), CampaignError> {
    sqlx::query("DELETE FROM campaign_lists WHERE campaign_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for list in lists {
        sqlx::query(
            "INSERT INTO campaign_lists (campaign_id, list_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(list)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

type CampaignRow = (i64, String, String, i64, i64, i64);

fn campaign_of(r: CampaignRow) -> Result<Campaign, CampaignError> {
    let spec: CampaignSpec = serde_json::from_str(&r.2).map_err(|e| {
        invalid(
            "body",
            format!("stored campaign {} is unreadable: {e}", r.0),
        )
    })?;
    Ok(Campaign {
        id: r.0,
        state: CampaignState::parse(&r.1),
        version: r.3,
        spec,
        created_at: r.4,
        updated_at: r.5,
    })
}

/// One campaign.
pub async fn get(store: &Store, id: i64) -> Result<Campaign, CampaignError> {
    let mut conn = store.pool().acquire().await?;
    get_in(&mut conn, id).await
}

/// [`get`] on the caller's connection or transaction.
pub async fn get_in(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Campaign, CampaignError> {
    let row: Option<CampaignRow> = sqlx::query_as(
        "SELECT id, state, body, version, created_at, updated_at FROM campaigns WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    campaign_of(row.ok_or(CampaignError::NotFound(id))?)
}

/// A page of campaigns after `after`, by id.
pub async fn page(store: &Store, after: i64, limit: i64) -> Result<Vec<Campaign>, CampaignError> {
    let rows: Vec<CampaignRow> = sqlx::query_as(
        "SELECT id, state, body, version, created_at, updated_at FROM campaigns \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(campaign_of).collect()
}

/// Replaces a campaign's settings (draft, scheduled or paused only).
pub async fn edit(store: &Store, id: i64, spec: CampaignSpec) -> Result<Campaign, CampaignError> {
    let mut tx = store.begin_write().await?;
    let c = edit_in(&mut tx, id, spec).await?;
    tx.commit().await?;
    Ok(c)
}

/// [`edit`] inside the caller's transaction (which commits it, or not).
pub async fn edit_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    spec: CampaignSpec,
) -> Result<Campaign, CampaignError> {
    spec.validate()?;
    check_references(tx, &spec).await?;
    let current = get_in(tx, id).await?;
    if !current.state.editable() {
        return Err(invalid(
            "state",
            format!("a {} campaign can no longer be edited", current.state),
        ));
    }
    sqlx::query(
        "UPDATE campaigns SET name = $1, profile_id = $2, body = $3, version = version + 1, \
         updated_at = $4 WHERE id = $5",
    )
    .bind(&spec.name)
    .bind(spec.compliance_profile_id)
    .bind(body_of(&spec))
    .bind(UnixMillis::now().0)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    set_lists(tx, id, &spec.contact_lists).await?;
    if current.state == CampaignState::Scheduled {
        enrol_contacts_in(tx, id).await?;
    }
    get_in(tx, id).await
}

/// Applies a lifecycle step. Scheduling enrols the campaign's lists' contacts; stopping
/// returns every outstanding lease.
pub async fn apply(
    store: &Store,
    id: i64,
    action: CampaignAction,
) -> Result<Campaign, CampaignError> {
    let mut tx = store.begin_write().await?;
    let c = apply_in(&mut tx, id, action).await?;
    tx.commit().await?;
    after_apply(store, &c).await?;
    Ok(c)
}

/// The state change and enrolment of [`apply`] inside the caller's transaction; once that
/// commits, the caller runs [`after_apply`].
pub async fn apply_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    action: CampaignAction,
) -> Result<Campaign, CampaignError> {
    let current = get_in(tx, id).await?;
    let next = current.state.after(action)?;
    let changed = sqlx::query(
        "UPDATE campaigns SET state = $1, version = version + 1, updated_at = $2 \
         WHERE id = $3 AND state = $4",
    )
    .bind(next.as_str())
    .bind(UnixMillis::now().0)
    .bind(id)
    .bind(current.state.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        // Someone else moved it meanwhile: report against the state it is in now.
        let now_state = get_in(tx, id).await?.state;
        return Err(CampaignError::BadTransition {
            state: now_state,
            action,
        });
    }
    if next == CampaignState::Scheduled {
        enrol_contacts_in(tx, id).await?;
    }
    get_in(tx, id).await
}

/// What a lifecycle step does once its transaction has committed: a stopped campaign's
/// outstanding leases are returned.
pub async fn after_apply(store: &Store, c: &Campaign) -> Result<(), CampaignError> {
    if c.state == CampaignState::Stopped {
        crate::leasing::return_campaign_leases(store, c.id, UnixMillis::now().0)
            .await
            .map_err(|e| invalid("leases", e.to_string()))?;
    }
    Ok(())
}

/// Adds every contact of the campaign's lists that it does not track yet, ready now, with
/// its priority from the campaign's weights.
pub async fn enrol_contacts(store: &Store, id: i64) -> Result<u64, CampaignError> {
    let mut conn = store.pool().acquire().await?;
    enrol_contacts_in(&mut conn, id).await
}

/// [`enrol_contacts`] on the caller's connection or transaction.
pub async fn enrol_contacts_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<u64, CampaignError> {
    let c = get_in(conn, id).await?;
    let w = c.spec.priority_weights;
    let done = sqlx::query(
        "INSERT INTO campaign_contacts (campaign_id, contact_id, state, priority, attempts, \
         next_attempt_at) \
         SELECT DISTINCT $1, c.id, 'ready', c.urgency * $2 + c.customer_value * $3, 0, 0 \
         FROM contacts c JOIN contact_list_members m ON m.contact_id = c.id \
         JOIN campaign_lists l ON l.list_id = m.list_id WHERE l.campaign_id = $4 \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(w.urgency)
    .bind(w.customer_value)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> CampaignSpec {
        CampaignSpec {
            name: "spring".into(),
            kind: CampaignKind::Service,
            dial_mode: DialMode::Progressive,
            compliance_profile_id: 1,
            starts_on: Some("2026-03-01".into()),
            ends_on: Some("2026-03-31".into()),
            calling_window: CallingWindow::us_default(),
            caller_id: "+14155550100".into(),
            script: "Hello {name}".into(),
            disposition_codes: vec!["sale".into()],
            conversion_dispositions: Vec::new(),
            wrap_up_seconds: 30,
            retry: RetryPolicy::default(),
            priority_weights: PriorityWeights::default(),
            appliances: vec![ApplianceShare {
                appliance: "branch-1".into(),
                share: 1,
            }],
            contact_lists: vec![],
            recording_consent_announcement: true,
        }
    }

    #[test]
    fn every_lifecycle_step_is_allowed_only_from_its_states() {
        use CampaignAction as A;
        use CampaignState as S;
        let all_s = [S::Draft, S::Scheduled, S::Paused, S::Stopped, S::Archived];
        let all_a = [A::Schedule, A::Pause, A::Resume, A::Stop, A::Archive];
        let mut allowed = Vec::new();
        for s in all_s {
            for a in all_a {
                if let Ok(n) = s.after(a) {
                    allowed.push((s, a, n));
                }
            }
        }
        assert_eq!(
            allowed,
            vec![
                (S::Draft, A::Schedule, S::Scheduled),
                (S::Draft, A::Archive, S::Archived),
                (S::Scheduled, A::Pause, S::Paused),
                (S::Scheduled, A::Stop, S::Stopped),
                (S::Paused, A::Resume, S::Scheduled),
                (S::Paused, A::Stop, S::Stopped),
                (S::Stopped, A::Archive, S::Archived),
            ]
        );
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let field = |s: CampaignSpec| match s.validate() {
            Err(CampaignError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(spec().validate().is_ok());
        assert_eq!(
            field(CampaignSpec {
                name: " ".into(),
                ..spec()
            }),
            "name"
        );
        assert_eq!(
            field(CampaignSpec {
                ends_on: Some("2026-02-01".into()),
                ..spec()
            }),
            "ends_on"
        );
        assert_eq!(
            field(CampaignSpec {
                caller_id: "call me".into(),
                ..spec()
            }),
            "caller_id"
        );
        let mut s = spec();
        s.retry.machine.backoff = 0.5;
        assert_eq!(field(s), "retry.machine.backoff");
        let mut s = spec();
        s.appliances[0].appliance = "Bad/Name".into();
        assert_eq!(field(s), "appliances[0].appliance");
        let mut s = spec();
        s.calling_window.holidays = vec!["christmas".into()];
        assert_eq!(field(s), "calling_window.holidays[0]");
    }

    #[test]
    fn retries_back_off_exponentially_and_stop_at_max_attempts() {
        let r = RetryRule {
            delay_seconds: 60,
            backoff: 2.0,
            max_attempts: 3,
        };
        let t = UnixMillis(0);
        assert_eq!(r.next_after(1, t), Some(UnixMillis(60_000)));
        assert_eq!(r.next_after(2, t), Some(UnixMillis(120_000)));
        assert_eq!(r.next_after(3, t), None);
    }

    #[test]
    fn the_date_range_is_inclusive_at_both_ends() {
        let s = spec();
        let day = |d: &str| {
            let ts: jiff::Timestamp = format!("{d}T12:00:00Z").parse().unwrap();
            UnixMillis(ts.as_millisecond())
        };
        assert!(!s.in_date_range(day("2026-02-28")));
        assert!(s.in_date_range(day("2026-03-01")));
        assert!(s.in_date_range(day("2026-03-31")));
        assert!(!s.in_date_range(day("2026-04-01")));
    }
}
