//! The audit log: every change made through the console, with who made it, what it was,
//! when, and the object before and after as JSON. Rows are only ever added.

use super::ConsoleError;
use crate::store::Store;
use callgate_common::time::UnixMillis;
use serde::Serialize;
use sqlx::{Any, Transaction};

/// Who made a change: a console user, or `system` for changes the console makes itself
/// (the first admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The console itself.
    pub fn system() -> Actor {
        Actor("system".into())
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

fn json_of<T: Serialize + ?Sized>(v: Option<&T>) -> Option<String> {
    v.map(|v| serde_json::to_string(v).expect("audited values serialise"))
}

/// Records a change inside the caller's transaction.
pub async fn record<B: Serialize + ?Sized, A: Serialize + ?Sized>(
    tx: &mut Transaction<'_, Any>,
    actor: &Actor,
    action: &str,
    target: &str,
    before: Option<&B>,
    after: Option<&A>,
) -> Result<(), ConsoleError> {
    sqlx::query(
        "INSERT INTO console_audit (at, actor, action, target, before_json, after_json) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(UnixMillis::now().0)
    .bind(&actor.0)
    .bind(action)
    .bind(target)
    .bind(json_of(before))
    .bind(json_of(after))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What the audit page filters on.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only actions starting with this (`campaign.`, `user.create`).
    pub action: Option<String>,
}

/// The newest entries before id `before` (all when `None`), newest first.
pub async fn page(
    store: &Store,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, ConsoleError> {
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, at, actor, action, target, before_json, after_json FROM console_audit \
         WHERE id < $1 AND ($2 = '' OR actor = $2) AND ($3 = '' OR action LIKE $4) \
         ORDER BY id DESC LIMIT $5",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(filter.actor.clone().unwrap_or_default())
    .bind(filter.action.clone().unwrap_or_default())
    .bind(format!("{}%", filter.action.clone().unwrap_or_default()))
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.0,
            at: r.1,
            actor: r.2,
            action: r.3,
            target: r.4,
            before: r.5,
            after: r.6,
        })
        .collect())
}
