//! The appliance's local ops listener: `/healthz` and `/metrics` on loopback by default.
//! The technicians' HTTPS web UI is a separate room (issue 9).
//!
//! Owns the listening socket and graceful shutdown; owns no call handling.

use crate::config::ValidConfig;
use crate::store::Store;
use callgate_common::observe::{self, CheckResult, HealthChecks};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] callgate_common::store::StoreError),
    /// The link to the coordinator could not start.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// The ops address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The listener failed while serving.
    #[error("ops listener failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The program's name in health output and logs.
pub const SERVICE: &str = "callgate-appliance";

/// Opens the store, binds the ops listener and runs until `shutdown` resolves.
pub async fn run(
    config: ValidConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = observe::install_metrics();
    let store = Store::open(&config.raw.appliance.data_dir).await?;
    let sync = crate::sync::service::SyncTask::start(&config, store.pool()).await?;
    let listener = TcpListener::bind(config.ops_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.ops_listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(
        listen = %local,
        appliance = ?config.id,
        data_dir = %config.raw.appliance.data_dir.display(),
        "appliance running; health at http://{local}/healthz"
    );
    let checks: HealthChecks = {
        let store = store.clone();
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move {
                vec![match store.ping().await {
                    Ok(()) => CheckResult::ok("store"),
                    Err(e) => CheckResult::failed("store", e.to_string()),
                }]
            })
        })
    };
    let app = observe::ops_router(SERVICE, env!("CARGO_PKG_VERSION"), checks, metrics);
    metrics::gauge!("callgate_appliance_up").set(1.0);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    sync.stop().await;
    store.pool().close().await;
    tracing::info!("appliance stopped");
    Ok(())
}
