//! The coordinator's HTTP listener: `/healthz` and `/metrics` now; the REST API, the console
//! and enrollment mount here as their issues land.
//!
//! Owns the listening socket and graceful shutdown; owns no business logic.

use crate::config::ValidConfig;
use crate::store::Store;
use callgate_common::observe::{self, CheckResult, HealthChecks};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] callgate_common::store::StoreError),
    /// The sync link could not start.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The REST API could not be set up (number key file, upload directory).
    #[error(transparent)]
    Api(#[from] crate::api::ApiSetupError),
    /// The listener failed while serving.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The program's name in health output and logs.
pub const SERVICE: &str = "callgate-coordinator";

/// Opens the store, binds the listener and serves until `shutdown` resolves.
pub async fn run(
    config: ValidConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = observe::install_metrics();
    let store = Store::open(
        &config.raw.store.data_dir,
        config.raw.store.database_url.as_deref(),
    )
    .await?;
    let sync = crate::sync::SyncTask::start(&store, &config.raw).await?;
    let listener = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.http_listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(
        listen = %local,
        backend = ?store.backend(),
        "coordinator listening; health at http://{local}/healthz"
    );
    let checks: HealthChecks = {
        let store = store.clone();
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move {
                vec![match store.ping().await {
                    Ok(()) => CheckResult::ok("database"),
                    Err(e) => CheckResult::failed("database", e.to_string()),
                }]
            })
        })
    };
    let api = crate::api::ApiState::open(store.clone(), &config.raw.store.data_dir).await?;
    let app = observe::ops_router(SERVICE, env!("CARGO_PKG_VERSION"), checks, metrics)
        .merge(crate::api::router(api));
    metrics::gauge!("callgate_coordinator_up").set(1.0);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    sync.stop().await;
    store.pool().close().await;
    tracing::info!("coordinator stopped");
    Ok(())
}
