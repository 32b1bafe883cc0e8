//! # sync — the coordinator's half of the link to the appliances (issue 5)
//!
//! Owns: applying uplink messages idempotently ([`apply`]: the effect and the appliance's
//! high-water sequence number in one transaction, tables `sync_uplink_state`,
//! `call_records`, `attempt_results`, `appliance_telemetry`), and the MQTT driver that
//! receives uplink and sends cumulative acks ([`link`]).
//!
//! Also owns the feed of the appliances' dialers ([`feed`]: do-not-call deltas, routing
//! policy, agent rosters, and the task that runs it with `crate::leasing::scheduler`) and
//! presence ([`presence`]: online/offline, firmware), and which replica applies which
//! appliances' uplink ([`ownership`]). The feed runs only on the replica that leads the
//! lease scheduler.
//!
//! Talks to: the broker (embedded or external) as `coordinator.callgate`; the `enroll` room
//! to refuse revoked appliances. Must not: trust a message's envelope over its topic (the
//! broker vouches for the topic), or ack anything before it is committed.

pub mod apply;
pub mod downlink;
pub mod feed;
pub mod link;
pub mod ownership;
pub mod presence;
pub mod settings;

/// The embedded broker's socket for this coordinator's own link, in its data directory.
pub const LOCAL_BROKER_SOCKET: &str = "broker.sock";

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
    /// The downlink outbox refused (quota, corrupt rows).
    #[error(transparent)]
    Outbox(#[from] callgate_common::outbox::OutboxError),
    /// A stored downlink message could not be encoded or decoded.
    #[error("downlink encoding: {0}")]
    Encoding(String),
    /// The embedded broker could not start.
    #[error(transparent)]
    Broker(#[from] crate::broker::embedded::driver::BrokerError),
    /// The contact number key file is unusable (the dialer feed decrypts numbers).
    #[error(transparent)]
    Vault(#[from] crate::contacts::vault::VaultError),
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The running link and enrollment listener, stopped with [`SyncTask::stop`].
#[derive(Debug)]
pub struct SyncTask {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where other rooms send downlink messages (leases, grants, config): durable and
    /// delivered in order, exactly once, when the appliance is online.
    pub downlink: std::sync::Arc<downlink::DownlinkOutboxes>,
    broker: Option<crate::broker::embedded::driver::EmbeddedBroker>,
}

impl SyncTask {
    /// Starts the link when `[sync].broker` is set and the HTTPS enrollment listener when
    /// `[sync].enroll_listen` is (the organisation CA is created on first use under
    /// `{data_dir}/pki/`).
    pub async fn start(
        store: &crate::store::Store,
        config: &crate::config::CoordinatorConfig,
    ) -> Result<SyncTask, SyncError> {
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut sync = config.sync.clone();
        let ownership = std::sync::Arc::new(match &sync.replica {
            Some(r) => ownership::BucketOwnership::replica(
                r,
                std::time::Duration::from_secs(sync.ownership_ttl_secs.max(1)),
            ),
            None => ownership::BucketOwnership::everything(),
        });
        let downlink = std::sync::Arc::new(downlink::DownlinkOutboxes::owned_by(
            store.pool().clone(),
            ownership.clone(),
        ));
        if sync.dialer.replica_id.is_none() {
            // Replicas on one host must not share the scheduler's leader identity.
            sync.dialer.replica_id = sync.replica.clone();
        }
        let enroll_addr = sync
            .enroll_addr()
            .map_err(|e| SyncError::Tls(e.to_string()))?;
        let embedded_addr = sync
            .embedded_addr()
            .map_err(|e| SyncError::Tls(e.to_string()))?;
        if sync.broker.is_none() && enroll_addr.is_none() && embedded_addr.is_none() {
            return Ok(SyncTask {
                stop,
                tasks,
                downlink,
                broker: None,
            });
        }
        let ca = std::sync::Arc::new(crate::enroll::pki::OrgCa::load_or_create(
            &config.store.data_dir.join("pki"),
        )?);
        let mut local_broker = None;
        let broker = match embedded_addr {
            Some(addr) => {
                let b = crate::broker::embedded::driver::EmbeddedBroker::start(
                    &ca,
                    addr,
                    &sync.enroll_names,
                    store.pool().clone(),
                )
                .await?;
                if sync.broker.is_none() {
                    sync.broker = Some(b.local_addr().to_string());
                }
                // Our own link to our own broker: through the local socket, not TLS to
                // ourselves over loopback.
                let local = b.local_addr();
                if sync
                    .broker_addr()
                    .ok()
                    .flatten()
                    .is_some_and(|(host, port)| {
                        port == local.port()
                            && (host == local.ip().to_string()
                                || (host == "localhost" && local.ip().is_loopback()))
                    })
                {
                    let path = config.store.data_dir.join(LOCAL_BROKER_SOCKET);
                    match b.serve_local(&path) {
                        Ok(()) => local_broker = Some(path),
                        // E.g. a path over the 108 bytes a socket address holds: TLS it is.
                        Err(e) => tracing::warn!(error = %e, "own link goes over TLS instead"),
                    }
                }
                Some(b)
            }
            None => None,
        };
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Some(addr) = enroll_addr {
            let listener = crate::enroll::http::bind_tls(&ca, addr, &sync.enroll_names).await?;
            let app = crate::enroll::http::router(crate::enroll::http::EnrollState {
                store: store.clone(),
                ca: ca.clone(),
                broker: sync.public_broker.clone().or_else(|| sync.broker.clone()),
            });
            tracing::info!(listen = %addr, "enrollment listening on HTTPS");
            let rx = stop.subscribe();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped(rx))
                    .await
                {
                    tracing::error!(error = %e, "enrollment listener failed");
                }
            }));
        }
        if sync.broker.is_some() {
            link::client_tls(&ca)?;
            let vault = crate::contacts::vault::NumberVault::open_or_create(
                &config.store.data_dir.join("contact-numbers.key"),
            )?;
            let scheduler = crate::leasing::scheduler::Scheduler::new(
                store.clone(),
                vault.clone(),
                downlink.clone(),
                sync.dialer.clone(),
            );
            let feed = feed::Feed::new(store.clone(), vault, downlink.clone());
            tasks.push(tokio::spawn(feed::run(
                scheduler,
                feed,
                sync.dialer.clone(),
                stopped(stop.subscribe()),
            )));
            let (o, s, rx) = (ownership.clone(), store.clone(), stop.subscribe());
            tasks.push(tokio::spawn(async move { o.run(s, stopped(rx)).await }));
            let store = store.clone();
            let rx = stop.subscribe();
            let downlink = downlink.clone();
            tasks.push(tokio::spawn(async move {
                let local = local_broker.as_deref();
                if let Err(e) =
                    link::run(store, ca, downlink, ownership, &sync, local, stopped(rx)).await
                {
                    tracing::error!(error = %e, "sync link stopped");
                }
            }));
        }
        Ok(SyncTask {
            stop,
            tasks,
            downlink,
            broker,
        })
    }

    /// Stops the link and the enrollment listener and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(b) = self.broker {
            b.stop();
        }
    }
}
