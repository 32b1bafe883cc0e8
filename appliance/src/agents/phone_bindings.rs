//! Keeps the registrar's bindings of the branch's phones across a restart, in
//! `phone_bindings`: taken back when the agents' lines start ([`restore`]) and written
//! whenever they changed, checked every [`KEEP_EVERY`] ([`keep`]). Without this a restarted
//! box could not call an agent's phone (nor let its calls in) until that phone registered
//! again, up to its registration interval later (10 minutes by default).
//!
//! A binding made in the last [`KEEP_EVERY`] before a crash may be missing after it: the
//! phone registers again at its next refresh, as it would have without this. TCP/TLS
//! bindings are not kept (their connection ends with the process).
//!
//! Must not: decide what a binding is (the registrar does), or stop the lines on a store
//! failure (it is logged and tried again at the next change).

use crate::sip::engine::AgentSipControl;
use callgate_common::time::UnixMillis;
use callgate_sip::registrar::StoredBinding;
use sqlx::SqlitePool;
use std::time::Duration;
use tokio::sync::watch;

/// How often the registrar is asked whether its bindings changed.
pub const KEEP_EVERY: Duration = Duration::from_secs(1);

/// Reads the kept bindings still live at `now`; rows that cannot be read back (a source
/// that is not an address) are logged and skipped.
pub async fn load(pool: &SqlitePool, now: UnixMillis) -> Result<Vec<StoredBinding>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT account, contact, source, expires_at_ms, call_id, cseq FROM phone_bindings \
         WHERE expires_at_ms > ? ORDER BY account, contact",
    )
    .bind(now.0)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(account, contact, source, expires, call_id, cseq)| {
            let Ok(source) = source.parse() else {
                tracing::warn!(%account, %source, "kept phone binding with an unreadable source; skipped");
                return None;
            };
            Some(StoredBinding {
                account,
                contact,
                source,
                remaining: Duration::from_millis((expires - now.0).max(0) as u64),
                call_id,
                cseq: u32::try_from(cseq).unwrap_or(0),
            })
        })
        .collect())
}

/// Replaces the kept bindings with `bindings`, as they stand at `now`, in one transaction.
pub async fn store(
    pool: &SqlitePool,
    now: UnixMillis,
    bindings: &[StoredBinding],
) -> Result<(), sqlx::Error> {
    let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
    sqlx::query("DELETE FROM phone_bindings")
        .execute(&mut *tx)
        .await?;
    for b in bindings {
        sqlx::query(
            "INSERT INTO phone_bindings (account, contact, source, expires_at_ms, call_id, cseq) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.account)
        .bind(&b.contact)
        .bind(b.source.to_string())
        .bind(now.plus_millis(b.remaining.as_millis() as i64).0)
        .bind(&b.call_id)
        .bind(i64::from(b.cseq))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Gives the agents' registrar the bindings kept before the restart; logs how many came
/// back and each one refused, with why.
pub async fn restore(pool: &SqlitePool, sip: &AgentSipControl) {
    let kept = match load(pool, UnixMillis::now()).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "kept phone bindings unreadable; phones bind again as they register");
            return;
        }
    };
    if kept.is_empty() {
        return;
    }
    let offered = kept.len();
    match sip.restore_bindings(kept).await {
        Ok(refused) => {
            for (b, why) in &refused {
                tracing::warn!(account = %b.account, contact = %b.contact, reason = why, "kept phone binding not taken back");
            }
            tracing::info!(
                restored = offered - refused.len(),
                refused = refused.len(),
                "phone bindings taken back from before the restart"
            );
        }
        Err(e) => tracing::error!(error = %e, "the agents' SIP user agent stopped"),
    }
}

/// Writes the registrar's bindings whenever they changed, until `shutdown` turns true or
/// the user agent stops.
pub async fn keep(pool: SqlitePool, sip: AgentSipControl, mut shutdown: watch::Receiver<bool>) {
    let mut written: Option<u64> = None;
    let mut tick = tokio::time::interval(KEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        let (changes, bindings) = match sip.bindings_to_keep().await {
            Ok(Some(state)) => state,
            Ok(None) | Err(_) => return,
        };
        if written == Some(changes) {
            continue;
        }
        match store(&pool, UnixMillis::now(), &bindings).await {
            Ok(()) => written = Some(changes),
            Err(e) => {
                tracing::warn!(error = %e, "phone bindings not kept; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn binding(account: &str, secs: u64) -> StoredBinding {
        StoredBinding {
            account: account.into(),
            contact: format!("sip:{account}@10.0.0.5:5062"),
            source: "10.0.0.5:5062".parse().unwrap(),
            remaining: Duration::from_secs(secs),
            call_id: format!("reg-{account}"),
            cseq: 7,
        }
    }

    #[tokio::test]
    async fn kept_bindings_come_back_with_their_time_left_and_lapsed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store_ = Store::open(dir.path()).await.unwrap();
        let t0 = UnixMillis(1_800_000_000_000);
        store(
            store_.pool(),
            t0,
            &[binding("desk1", 600), binding("desk2", 30)],
        )
        .await
        .unwrap();
        // 40 s later (a restart): desk2's binding has lapsed, desk1's has 560 s left.
        let back = load(store_.pool(), t0.plus_millis(40_000)).await.unwrap();
        assert_eq!(
            back,
            vec![StoredBinding {
                remaining: Duration::from_secs(560),
                ..binding("desk1", 0)
            }]
        );
        // A later write replaces the set: removed bindings do not come back.
        store(store_.pool(), t0, &[binding("desk2", 600)])
            .await
            .unwrap();
        let back = load(store_.pool(), t0).await.unwrap();
        assert_eq!(back, vec![binding("desk2", 600)]);
    }
}
