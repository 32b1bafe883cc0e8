//! Appliance presence (`appliance_presence`): online or offline since when, the firmware
//! from its last Hello, when it was last heard. Written by the link; read by the scheduler
//! (leases and grants go only to online boxes) and the appliances API.

use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use sqlx::AnyPool;
use std::collections::HashSet;

/// The box said Hello (it is online; `firmware` is what it runs).
pub async fn hello(
    pool: &AnyPool,
    app: &ApplianceId,
    firmware: &str,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO appliance_presence (appliance, firmware, online, since, last_seen_at) \
         VALUES ($1, $2, 1, $3, $4) ON CONFLICT (appliance) DO UPDATE SET \
         firmware = excluded.firmware, last_seen_at = excluded.last_seen_at, \
         since = CASE WHEN appliance_presence.online = 1 THEN appliance_presence.since \
         ELSE excluded.since END, online = 1",
    )
    .bind(app.as_str())
    .bind(firmware)
    .bind(now.0)
    .bind(now.0)
    .execute(pool)
    .await?;
    Ok(())
}

/// The box's retained status or last will said `online` (true) or `offline` (false), or
/// a message from it arrived (`online`, true).
pub async fn status(
    pool: &AnyPool,
    app: &ApplianceId,
    online: bool,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    let flag = i64::from(online);
    sqlx::query(
        "INSERT INTO appliance_presence (appliance, firmware, online, since, last_seen_at) \
         VALUES ($1, NULL, $2, $3, $4) ON CONFLICT (appliance) DO UPDATE SET \
         since = CASE WHEN appliance_presence.online = excluded.online \
         THEN appliance_presence.since ELSE excluded.since END, \
         online = excluded.online, \
         last_seen_at = CASE WHEN excluded.online = 1 THEN excluded.last_seen_at \
         ELSE appliance_presence.last_seen_at END",
    )
    .bind(app.as_str())
    .bind(flag)
    .bind(now.0)
    .bind(if online { now.0 } else { 0 })
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks every appliance offline: called when the coordinator (re)connects to the broker,
/// whose retained statuses and the boxes' Hellos then mark the live ones online again, so
/// a box that vanished while the coordinator was down is not left "online".
pub async fn all_offline(pool: &AnyPool, now: UnixMillis) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE appliance_presence SET online = 0, since = $1 WHERE online = 1")
        .bind(now.0)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every appliance currently online.
pub async fn online(pool: &AnyPool) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT appliance FROM appliance_presence WHERE online = 1")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// One appliance's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub online: bool,
    /// Since when it has been online / offline.
    pub since: i64,
    pub last_seen_at: Option<i64>,
    pub firmware: Option<String>,
}

/// The presence of `app`, if it was ever seen.
pub async fn of(pool: &AnyPool, app: &str) -> Result<Option<Presence>, sqlx::Error> {
    let row: Option<(i64, i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT online, since, last_seen_at, firmware FROM appliance_presence \
         WHERE appliance = $1",
    )
    .bind(app)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(online, since, seen, firmware)| Presence {
        online: online == 1,
        since,
        last_seen_at: (seen > 0).then_some(seen),
        firmware,
    }))
}
