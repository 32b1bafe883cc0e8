//! Factory reset: one procedure for the web UI's confirmed reset and the front-panel button
//! held at boot.
//!
//! Removes the technicians' UI account and every session (the next visitor sets the box up
//! again with the label's setup code) and the enrollment identity (key, certificate, CA and
//! broker address: the box must be enrolled again). Keeps the call data: the uplink outbox
//! and the recording segments stay where they are, because they are records already
//! accepted that the coordinator has not acknowledged, and recordings are sealed to the
//! organisation's keys, which the box never held.
//!
//! Must not: touch call data, the config file, or anything outside the data directory.

use sqlx::SqlitePool;
use std::path::{Path, PathBuf};

/// Why a factory reset did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// The accounts could not be erased from the store.
    #[error("erasing the UI account: {0}")]
    Store(#[from] sqlx::Error),
    /// The identity directory could not be removed.
    #[error("removing the enrollment identity {path}: {source}")]
    Identity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the reset removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Whether an enrollment identity was there to remove.
    pub identity_removed: bool,
}

/// Performs the factory reset over the store `pool` and the identity in `identity_dir`.
/// Idempotent: a second reset finds nothing to remove and succeeds.
pub async fn factory_reset(
    pool: &SqlitePool,
    identity_dir: &Path,
) -> Result<ResetReport, ResetError> {
    let mut tx = crate::sync::outbox_store::begin_write(pool).await?;
    sqlx::query("DELETE FROM web_session")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM web_admin")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let identity_removed = match std::fs::remove_dir_all(identity_dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(ResetError::Identity {
                path: identity_dir.to_path_buf(),
                source,
            })
        }
    };
    tracing::warn!(identity_removed, "factory reset done");
    Ok(ResetReport { identity_removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn a_reset_erases_accounts_and_identity_and_keeps_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pool = store.pool();
        sqlx::query(
            "INSERT INTO web_admin (username, password_hash, created_at_ms, updated_at_ms) \
             VALUES ('tech', 'x', 0, 0)",
        )
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO sync_outbox (class, seq, body, created_at) VALUES (0, 1, x'00', 0)",
        )
        .execute(pool)
        .await
        .unwrap();
        let identity = dir.path().join("identity");
        std::fs::create_dir_all(&identity).unwrap();
        std::fs::write(identity.join("key.pem"), "secret").unwrap();

        let report = factory_reset(pool, &identity).await.unwrap();
        assert!(report.identity_removed);
        assert!(!identity.exists());
        let admins: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM web_admin")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(admins.0, 0);
        let kept: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sync_outbox")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(kept.0, 1, "records not yet acknowledged survive the reset");

        let again = factory_reset(pool, &identity).await.unwrap();
        assert!(!again.identity_removed, "a second reset is a no-op");
    }
}
