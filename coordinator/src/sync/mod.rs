//! # sync — the coordinator's half of the link to the appliances (issue 5)
//!
//! Owns: applying uplink messages idempotently ([`apply`]: the effect and the appliance's
//! high-water sequence number in one transaction, tables `sync_uplink_state`,
//! `call_records`, `attempt_results`, `appliance_telemetry`), and the MQTT driver that
//! receives uplink and sends cumulative acks ([`link`]).
//!
//! Talks to: the broker (embedded or external) as `coordinator.callgate`; the `enroll` room
//! to refuse revoked appliances. Must not: trust a message's envelope over its topic (the
//! broker vouches for the topic), or ack anything before it is committed.

pub mod apply;
pub mod link;
pub mod settings;

/// Why the sync subsystem failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The database refused.
    #[error("sync store: {0}")]
    Store(#[from] sqlx::Error),
    /// The CA or the coordinator's broker identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] crate::enroll::EnrollError),
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The running link, stopped with [`SyncTask::stop`].
#[derive(Debug)]
pub struct SyncTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SyncTask {
    /// Starts the link when `[sync].broker` is set (the organisation CA is created on first
    /// use under `{data_dir}/pki/`); a no-op task otherwise.
    pub fn start(
        store: &crate::store::Store,
        config: &crate::config::CoordinatorConfig,
    ) -> Result<SyncTask, SyncError> {
        if config.sync.broker.is_none() {
            return Ok(SyncTask {
                stop: None,
                task: None,
            });
        }
        let ca = crate::enroll::pki::OrgCa::load_or_create(&config.store.data_dir.join("pki"))?;
        link::client_tls(&ca)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store = store.clone();
        let sync = config.sync.clone();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            if let Err(e) = link::run(store, &ca, &sync, stopped).await {
                tracing::error!(error = %e, "sync link stopped");
            }
        });
        Ok(SyncTask {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops the link and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
