//! Runs the link for the daemon: opens the outbox from the store, runs [`super::link`],
//! and after a store failure reopens the outbox from the table (the source of truth) and
//! starts again.

use super::identity::IdentityDir;
use super::link::{self, LinkSettings};
use super::outbox_store::UplinkOutbox;
use super::SyncError;
use callgate_common::outbox::OutboxConfig;
use sqlx::SqlitePool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The outbox settings for a quota of `quota_mib`.
pub fn outbox_config(quota_mib: u64) -> OutboxConfig {
    OutboxConfig {
        quota_bytes: quota_mib * 1024 * 1024,
        resend_after: Duration::from_secs(5),
        ..OutboxConfig::default()
    }
}

/// Runs the link until `stop` turns true, reopening the outbox after store errors.
/// `outbox` is shared with the producers; it is replaced in place after a failure.
pub async fn run(
    settings: LinkSettings,
    identity: IdentityDir,
    pool: SqlitePool,
    outbox: Arc<tokio::sync::RwLock<Arc<UplinkOutbox>>>,
    config: OutboxConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SyncError> {
    loop {
        let current = outbox.read().await.clone();
        let mut stop_now = stop.clone();
        let stopped = async move {
            let _ = stop_now.wait_for(|s| *s).await;
        };
        match link::run(settings.clone(), &identity, pool.clone(), current, stopped).await {
            Ok(()) => return Ok(()),
            Err(SyncError::Store(e)) => {
                tracing::error!(error = %e, "sync store failed; reopening the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let fresh = UplinkOutbox::open(pool.clone(), config.clone()).await?;
                *outbox.write().await = Arc::new(fresh);
            }
            Err(e) => return Err(e),
        }
        if *stop.borrow_and_update() {
            return Ok(());
        }
    }
}
