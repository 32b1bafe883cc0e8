//! The coordinator's side of compliance policy: stored jurisdiction profiles, the
//! do-not-call lists (global, per campaign, time-limited), and the facts the rules in
//! `callgate_common::compliance` need about a number (its DNC entries, its earlier attempts
//! across every campaign and branch, its campaign's abandon tally).
//!
//! Owns the `compliance_profiles` and `dnc_entries` tables and reads `attempts`. Must not
//! evaluate rules itself: that is the shared code in common, so that the appliance judges
//! exactly the same way.

pub mod dnc_csv;

use crate::contacts::vault::NumberVault;
use crate::store::Store;
use callgate_common::compliance::{AbandonTally, ComplianceProfile, DncEntry, DncScope, DAY_MS};
use callgate_common::ids::CampaignId;
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Why a compliance operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The profile does not exist.
    #[error("compliance profile {0} does not exist")]
    NoSuchProfile(i64),
    /// A field is unusable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A profile of that name exists.
    #[error("a compliance profile named {0:?} exists already")]
    DuplicateProfile(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredProfile {
    pub id: i64,
    pub name: String,
    #[serde(flatten)]
    pub profile: ComplianceProfile,
}

/// Adds the built-in `us` and `uk` profiles when missing.
pub async fn ensure_builtin_profiles(store: &Store) -> Result<(), PolicyError> {
    for (name, p) in [
        ("us", ComplianceProfile::us()),
        ("uk", ComplianceProfile::uk()),
    ] {
        sqlx::query(
            "INSERT INTO compliance_profiles (name, body, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(serde_json::to_string(&p).expect("profiles serialise"))
        .bind(UnixMillis::now().0)
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

fn check_profile(p: &ComplianceProfile) -> Result<(), PolicyError> {
    let bad = |field: &str, reason: &str| PolicyError::Invalid {
        field: field.into(),
        reason: reason.into(),
    };
    p.window
        .validate()
        .map_err(|e| bad("window", &e.to_string()))?;
    if p.abandon.cap_permille > 1000 {
        return Err(bad("abandon.cap_permille", "at most 1000 (100 %)"));
    }
    if p.abandon.window_ms < 60_000 || p.abandon.window_ms > 366 * DAY_MS {
        return Err(bad("abandon.window_ms", "from one minute to one year"));
    }
    if p.lockout_after_abandon_ms
        .is_some_and(|l| !(0..=366 * DAY_MS).contains(&l))
    {
        return Err(bad("lockout_after_abandon_ms", "from 0 to one year"));
    }
    if p.caps.per_day == 0 || p.caps.per_week < p.caps.per_day {
        return Err(bad(
            "caps.per_week",
            "per_day must be at least 1 and per_week at least per_day",
        ));
    }
    if p.window.days.iter().any(|d| *d > 6) {
        return Err(bad("window.days", "days are 0 (Monday) to 6 (Sunday)"));
    }
    Ok(())
}

/// Stores a new profile.
pub async fn create_profile(
    store: &Store,
    name: &str,
    profile: ComplianceProfile,
) -> Result<StoredProfile, PolicyError> {
    let mut tx = store.begin_write().await?;
    let p = create_profile_in(&mut tx, name, profile).await?;
    tx.commit().await?;
    Ok(p)
}

fn check_profile_name(name: &str) -> Result<(), PolicyError> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(PolicyError::Invalid {
            field: "name".into(),
            reason: "must be 1 to 100 characters".into(),
        });
    }
    Ok(())
}

/// [`create_profile`] inside the caller's transaction (which commits it, or not).
pub async fn create_profile_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
    profile: ComplianceProfile,
) -> Result<StoredProfile, PolicyError> {
    check_profile_name(name)?;
    check_profile(&profile)?;
    let r: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO compliance_profiles (name, body, updated_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(serde_json::to_string(&profile).expect("profiles serialise"))
    .bind(UnixMillis::now().0)
    .fetch_one(&mut **tx)
    .await;
    match r {
        Ok((id,)) => Ok(StoredProfile {
            id,
            name: name.into(),
            profile,
        }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(PolicyError::DuplicateProfile(name.into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces profile `id`'s name and rules; returns it as it was before and after.
/// Boxes working a campaign under it get the new rules in a new brief at the scheduler's
/// next pass (`sync.dialer.tick_ms`): the brief carries the profile and is re-sent when
/// its digest changes.
pub async fn update_profile(
    store: &Store,
    id: i64,
    name: &str,
    profile: ComplianceProfile,
) -> Result<(StoredProfile, StoredProfile), PolicyError> {
    let mut tx = store.begin_write().await?;
    let p = update_profile_in(&mut tx, id, name, profile).await?;
    tx.commit().await?;
    Ok(p)
}

/// [`update_profile`] inside the caller's transaction (which commits it, or not).
pub async fn update_profile_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    name: &str,
    profile: ComplianceProfile,
) -> Result<(StoredProfile, StoredProfile), PolicyError> {
    check_profile_name(name)?;
    check_profile(&profile)?;
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, body FROM compliance_profiles WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let before = profile_of(row.ok_or(PolicyError::NoSuchProfile(id))?)?;
    let r = sqlx::query(
        "UPDATE compliance_profiles SET name = $1, body = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(name)
    .bind(serde_json::to_string(&profile).expect("profiles serialise"))
    .bind(UnixMillis::now().0)
    .bind(id)
    .execute(&mut **tx)
    .await;
    match r {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(PolicyError::DuplicateProfile(name.into()))
        }
        Err(e) => return Err(e.into()),
    }
    let after = StoredProfile {
        id,
        name: name.into(),
        profile,
    };
    Ok((before, after))
}

fn profile_of((id, name, body): (i64, String, String)) -> Result<StoredProfile, PolicyError> {
    let profile = serde_json::from_str(&body).map_err(|e| PolicyError::Invalid {
        field: "body".into(),
        reason: format!("stored profile {id} is unreadable: {e}"),
    })?;
    Ok(StoredProfile { id, name, profile })
}

/// One profile.
pub async fn get_profile(store: &Store, id: i64) -> Result<StoredProfile, PolicyError> {
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, body FROM compliance_profiles WHERE id = $1")
            .bind(id)
            .fetch_optional(store.pool())
            .await?;
    profile_of(row.ok_or(PolicyError::NoSuchProfile(id))?)
}

/// A page of profiles after `after`.
pub async fn page_profiles(
    store: &Store,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredProfile>, PolicyError> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, name, body FROM compliance_profiles WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(profile_of).collect()
}

/// A do-not-call entry as the API shows it (number masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DncView {
    pub id: i64,
    pub number: String,
    pub campaign_id: Option<i64>,
    pub expires_at: Option<i64>,
    pub reason: String,
    pub created_at: i64,
}

/// A request to add one number to a do-not-call list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDnc {
    /// The number, E.164 (`+...`).
    pub number: String,
    /// `None`: the global list.
    #[serde(default)]
    pub campaign_id: Option<i64>,
    /// `None`: permanent.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub reason: String,
}

/// Adds entries in one transaction; refuses the whole batch, naming the entry, if one is
/// bad, so that a bulk import either lands entirely or not at all.
pub async fn add_dnc(
    store: &Store,
    vault: &NumberVault,
    entries: &[NewDnc],
) -> Result<Vec<DncView>, PolicyError> {
    let parsed = check_dnc(entries)?;
    let mut tx = store.begin_write().await?;
    let out = insert_dnc(&mut tx, vault, entries, parsed).await?;
    tx.commit().await?;
    Ok(out)
}

/// [`add_dnc`] inside the caller's transaction (which commits it, or not).
pub async fn add_dnc_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vault: &NumberVault,
    entries: &[NewDnc],
) -> Result<Vec<DncView>, PolicyError> {
    let parsed = check_dnc(entries)?;
    insert_dnc(tx, vault, entries, parsed).await
}

fn check_dnc(entries: &[NewDnc]) -> Result<Vec<PhoneNumber>, PolicyError> {
    let mut parsed = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let number = PhoneNumber::parse(&e.number, None).map_err(|err| PolicyError::Invalid {
            field: format!("[{i}].number"),
            reason: err.to_string(),
        })?;
        if e.reason.len() > 500 {
            return Err(PolicyError::Invalid {
                field: format!("[{i}].reason"),
                reason: "at most 500 characters".into(),
            });
        }
        parsed.push(number);
    }
    Ok(parsed)
}

async fn insert_dnc(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vault: &NumberVault,
    entries: &[NewDnc],
    parsed: Vec<PhoneNumber>,
) -> Result<Vec<DncView>, PolicyError> {
    let now = UnixMillis::now().0;
    let mut out = Vec::with_capacity(entries.len());
    for (e, number) in entries.iter().zip(parsed) {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO dnc_entries (number_index, number_masked, campaign_id, expires_at, \
             reason, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(vault.blind_index(&number))
        .bind(number.masked())
        .bind(e.campaign_id)
        .bind(e.expires_at)
        .bind(&e.reason)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        note_dnc_change(
            tx,
            &vault.blind_index(&number),
            "added",
            e.campaign_id,
            e.expires_at,
            now,
        )
        .await?;
        out.push(DncView {
            id,
            number: number.masked(),
            campaign_id: e.campaign_id,
            expires_at: e.expires_at,
            reason: e.reason.clone(),
            created_at: now,
        });
    }
    Ok(out)
}

/// Adds a time-limited global entry for a number by its blind index (the UK lockout after
/// an abandoned call).
pub async fn add_lockout(
    store: &Store,
    number_index: &[u8],
    masked: &str,
    entry: DncEntry,
    reason: &str,
) -> Result<(), PolicyError> {
    let campaign = match entry.scope {
        DncScope::Global => None,
        DncScope::Campaign(c) => Some(c.0 as i64),
    };
    let now = UnixMillis::now().0;
    let mut tx = store.pool().begin().await?;
    sqlx::query(
        "INSERT INTO dnc_entries (number_index, number_masked, campaign_id, expires_at, \
         reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(number_index.to_vec())
    .bind(masked)
    .bind(campaign)
    .bind(entry.expires_at.map(|t| t.0))
    .bind(reason)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let expires = entry.expires_at.map(|t| t.0);
    note_dnc_change(&mut tx, number_index, "added", campaign, expires, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Logs a do-not-call change in `dnc_changes`, in the caller's transaction: the sync room
/// turns the log into deltas for the appliances that hold the number.
async fn note_dnc_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    number_index: &[u8],
    change: &str,
    campaign: Option<i64>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dnc_changes (number_index, change, campaign_id, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(number_index.to_vec())
    .bind(change)
    .bind(campaign)
    .bind(expires_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes one do-not-call entry; `false` when there is no entry `id`.
pub async fn remove_dnc(store: &Store, id: i64) -> Result<bool, PolicyError> {
    let mut tx = store.begin_write().await?;
    let removed = remove_dnc_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(removed)
}

/// [`remove_dnc`] inside the caller's transaction (which commits it, or not).
pub async fn remove_dnc_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
) -> Result<bool, PolicyError> {
    let now = UnixMillis::now().0;
    let row: Option<(Vec<u8>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT number_index, campaign_id, expires_at FROM dnc_entries WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((index, campaign, expires)) = row else {
        return Ok(false);
    };
    sqlx::query("DELETE FROM dnc_entries WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    note_dnc_change(tx, &index, "removed", campaign, expires, now).await?;
    Ok(true)
}

/// A page of do-not-call entries after `after` (ids only grow, so this is also the delta
/// feed: everything added since the last id a reader saw).
pub async fn page_dnc(store: &Store, after: i64, limit: i64) -> Result<Vec<DncView>, PolicyError> {
    type Row = (i64, String, Option<i64>, Option<i64>, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, number_masked, campaign_id, expires_at, reason, created_at FROM dnc_entries \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DncView {
            id: r.0,
            number: r.1,
            campaign_id: r.2,
            expires_at: r.3,
            reason: r.4,
            created_at: r.5,
        })
        .collect())
}

/// The do-not-call entries of a number.
pub async fn dnc_of(
    conn: &mut sqlx::AnyConnection,
    number_index: &[u8],
) -> Result<Vec<DncEntry>, sqlx::Error> {
    let rows: Vec<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT campaign_id, expires_at FROM dnc_entries WHERE number_index = $1")
            .bind(number_index.to_vec())
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(campaign, expires)| DncEntry {
            scope: match campaign {
                None => DncScope::Global,
                Some(c) => DncScope::Campaign(CampaignId(c as u64)),
            },
            expires_at: expires.map(UnixMillis),
        })
        .collect())
}

/// When the number was attempted in the last 7 days, across campaigns and branches.
pub async fn recent_attempts(
    conn: &mut sqlx::AnyConnection,
    number_index: &[u8],
    now: UnixMillis,
) -> Result<Vec<UnixMillis>, sqlx::Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT started_at FROM attempts WHERE number_index = $1 AND started_at > $2",
    )
    .bind(number_index.to_vec())
    .bind(now.0 - 7 * DAY_MS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| UnixMillis(r.0)).collect())
}

/// The campaign's live-answered and abandoned calls in the window ending at `now`.
pub async fn abandon_tally(
    conn: &mut sqlx::AnyConnection,
    campaign: i64,
    window_ms: i64,
    now: UnixMillis,
) -> Result<AbandonTally, sqlx::Error> {
    let (live, abandoned): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT CAST(SUM(live) AS BIGINT), CAST(SUM(abandoned) AS BIGINT) FROM attempts WHERE campaign_id = $1 AND started_at > $2",
    )
    .bind(campaign)
    .bind(now.0 - window_ms)
    .fetch_one(&mut *conn)
    .await?;
    Ok(AbandonTally {
        live_answered: live.unwrap_or(0).max(0) as u64,
        abandoned: abandoned.unwrap_or(0).max(0) as u64,
    })
}

fn in_list(first: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`dnc_of`] for many numbers in one query, keyed by blind index.
pub async fn dnc_of_many(
    conn: &mut sqlx::AnyConnection,
    indexes: &[Vec<u8>],
) -> Result<std::collections::HashMap<Vec<u8>, Vec<DncEntry>>, sqlx::Error> {
    let mut out: std::collections::HashMap<Vec<u8>, Vec<DncEntry>> = Default::default();
    if indexes.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT number_index, campaign_id, expires_at FROM dnc_entries WHERE number_index IN ({})",
        in_list(1, indexes.len())
    );
    let mut q = sqlx::query_as::<_, (Vec<u8>, Option<i64>, Option<i64>)>(&sql);
    for i in indexes {
        q = q.bind(i.clone());
    }
    for (index, campaign, expires) in q.fetch_all(&mut *conn).await? {
        out.entry(index).or_default().push(DncEntry {
            scope: match campaign {
                None => DncScope::Global,
                Some(c) => DncScope::Campaign(CampaignId(c as u64)),
            },
            expires_at: expires.map(UnixMillis),
        });
    }
    Ok(out)
}

/// [`recent_attempts`] for many numbers in one query, keyed by blind index.
pub async fn recent_attempts_many(
    conn: &mut sqlx::AnyConnection,
    indexes: &[Vec<u8>],
    now: UnixMillis,
) -> Result<std::collections::HashMap<Vec<u8>, Vec<UnixMillis>>, sqlx::Error> {
    let mut out: std::collections::HashMap<Vec<u8>, Vec<UnixMillis>> = Default::default();
    if indexes.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT number_index, started_at FROM attempts WHERE started_at > $1 AND number_index IN ({})",
        in_list(2, indexes.len())
    );
    let mut q = sqlx::query_as::<_, (Vec<u8>, i64)>(&sql).bind(now.0 - 7 * DAY_MS);
    for i in indexes {
        q = q.bind(i.clone());
    }
    for (index, at) in q.fetch_all(&mut *conn).await? {
        out.entry(index).or_default().push(UnixMillis(at));
    }
    Ok(out)
}
