//! Runs the link for the daemon: opens the outbox from the store, runs [`super::link`],
//! and after a store failure reopens the outbox from the table (the source of truth) and
//! starts again.

use super::identity::IdentityDir;
use super::link::{self, LinkSettings};
use super::outbox_store::{SharedOutbox, UplinkOutbox};
use super::status::{LinkStatus, LinkStatusCell};
use super::SyncError;
use callgate_common::outbox::OutboxConfig;
use sqlx::SqlitePool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// This box's id and broker: from the config when set there, else from what enrollment
/// stored. A config id that disagrees with the certificate's is refused.
pub fn link_target(
    config: &crate::config::ValidConfig,
) -> Result<(callgate_common::ids::ApplianceId, String, u16), SyncError> {
    let identity = IdentityDir::in_data_dir(&config.raw.appliance.data_dir);
    let enrolled = super::enroll::Enrollment::load(&identity);
    let enrolled_id = enrolled
        .as_ref()
        .and_then(|e| callgate_common::ids::ApplianceId::new(e.appliance.as_str()).ok());
    let appliance = match (&config.id, enrolled_id) {
        (Some(a), Some(b)) if *a != b => {
            return Err(SyncError::Identity {
                path: super::enroll::Enrollment::path(&identity),
                reason: format!("enrolled as `{b}` but appliance.id says `{a}`"),
            })
        }
        (Some(a), _) => a.clone(),
        (None, Some(b)) => b,
        (None, None) => {
            return Err(SyncError::Identity {
                path: identity.cert_path(),
                reason: "not enrolled and appliance.id is not set".into(),
            })
        }
    };
    let mut sync = config.raw.sync.clone();
    if sync.broker.is_none() {
        sync.broker = enrolled.and_then(|e| e.broker);
    }
    let (host, port) = sync
        .broker_addr()
        .map_err(|e| SyncError::Mqtt(e.to_string()))?
        .ok_or_else(|| SyncError::Mqtt("no broker: set sync.broker or enroll".into()))?;
    Ok((appliance, host, port))
}

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
    outbox: SharedOutbox,
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
            Ok(link::LinkExit::Stopped) => return Ok(()),
            Ok(link::LinkExit::IdentityRenewed) => {}
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

/// The link as the daemon runs it, stopped with [`SyncTask::stop`].
#[derive(Debug)]
pub struct SyncTask {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The outbox other rooms send through (`None` while the box is not enrolled).
    pub outbox: Option<SharedOutbox>,
    /// The link's state, for the status page.
    pub status: LinkStatusCell,
    /// The telemetry producer, once started.
    telemetry: Option<tokio::task::JoinHandle<()>>,
    /// `sync.telemetry_secs`.
    telemetry_every: Duration,
}

impl SyncTask {
    /// Starts the link when the box is enrolled (or configured) with a broker; otherwise
    /// logs why not and does nothing.
    pub async fn start(
        config: &crate::config::ValidConfig,
        pool: &SqlitePool,
    ) -> Result<SyncTask, SyncError> {
        let (stop, stop_rx) = watch::channel(false);
        let identity = IdentityDir::in_data_dir(&config.raw.appliance.data_dir);
        if !identity.is_enrolled() {
            tracing::info!("not enrolled: the link to the coordinator is off");
            return Ok(SyncTask {
                stop,
                task: None,
                outbox: None,
                status: LinkStatusCell::new(LinkStatus::not_enrolled()),
                telemetry: None,
                telemetry_every: Duration::ZERO,
            });
        }
        let (appliance, host, port) = link_target(config)?;
        let mut settings = LinkSettings::new(appliance, host, port);
        settings.renew_before = Duration::from_secs(config.raw.sync.renew_before_days * 86_400);
        let status = settings.status.clone();
        let outbox_config = outbox_config(config.raw.sync.outbox_quota_mib);
        let outbox = Arc::new(UplinkOutbox::open(pool.clone(), outbox_config.clone()).await?);
        let shared = Arc::new(tokio::sync::RwLock::new(outbox));
        let task = tokio::spawn(run(
            settings,
            identity,
            pool.clone(),
            shared.clone(),
            outbox_config,
            stop_rx,
        ));
        let task = tokio::spawn(async move {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the link to the coordinator stopped"),
                Err(e) => tracing::error!(error = %e, "the link task failed"),
            }
        });
        Ok(SyncTask {
            stop,
            task: Some(task),
            outbox: Some(shared),
            status,
            telemetry: None,
            telemetry_every: Duration::from_secs(config.raw.sync.telemetry_secs),
        })
    }

    /// Starts the telemetry producer ([`super::telemetry`]) on `sources`, stopped with the
    /// link. Does nothing when the box is not enrolled, when `sync.telemetry_secs` is 0, or
    /// when it already runs.
    pub fn start_telemetry(&mut self, sources: super::telemetry::TelemetrySources) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        if self.telemetry.is_some() || self.telemetry_every.is_zero() {
            return;
        }
        self.telemetry = Some(tokio::spawn(super::telemetry::run(
            sources,
            outbox.clone(),
            self.telemetry_every,
            Duration::from_secs(5).min(self.telemetry_every),
            self.stop.subscribe(),
        )));
    }

    /// Stops the link and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.telemetry.take() {
            let _ = t.await;
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
