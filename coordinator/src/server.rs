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
    /// The HQ console could not start.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleStartError),
    /// The listener failed while serving.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The program's name in health output and logs.
pub const SERVICE: &str = "callgate-coordinator";

/// Binds the HQ console (on by default; see [`crate::config::ConsoleConfig::listen`]) and
/// serves it until `stop`; prints the first admin's password when this start created it.
async fn start_console(
    config: &ValidConfig,
    store: &Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<
    Option<tokio::task::JoinHandle<Result<(), crate::console::ConsoleStartError>>>,
    ServerError,
> {
    let settings = config
        .raw
        .console
        .settings(&config.raw.store.data_dir)
        .expect("validated at load");
    let Some(settings) = settings else {
        return Ok(None);
    };
    let console = match crate::console::Console::bind(&settings, store.clone()).await {
        Ok(c) => c,
        Err(crate::console::ConsoleStartError::Serve { addr, source })
            if settings.listen_is_default =>
        {
            tracing::warn!(
                listen = %addr,
                error = %source,
                "the HQ console's default address is taken: running without the console \
                 (set [console] listen to another address, or \"off\")"
            );
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let addr = console.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(
        listen = %addr,
        fingerprint = console.fingerprint(),
        "HQ console at https://{addr}/"
    );
    if let Some((user, password)) = console.first_admin() {
        tracing::warn!(
            user,
            "created the first console admin; its password follows on stderr, shown once"
        );
        eprintln!("callgate console: first admin {user:?} with password {password:?} (change it after logging in)");
    }
    Ok(Some(tokio::spawn(console.serve(async move {
        let _ = stop.wait_for(|s| *s).await;
    }))))
}

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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let console = start_console(&config, &store, stop_rx.clone()).await?;
    let webhooks = tokio::spawn(crate::call_tasks::run_deliveries(
        store.clone(),
        crate::call_tasks::DeliverySchedule::default(),
        std::time::Duration::from_millis(250),
        stop_rx.clone(),
    ));
    metrics::gauge!("callgate_coordinator_up").set(1.0);
    let mut api_stop = stop_rx;
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = api_stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(ServerError::Serve)?;
    if let Some(console) = console {
        if let Ok(Err(e)) = observe::shutdown_stage("console", console).await {
            tracing::error!(error = %e, "the console stopped with an error");
        }
    }
    let _ = observe::shutdown_stage("webhooks", webhooks).await;
    observe::shutdown_stage("sync", sync.stop()).await;
    observe::shutdown_stage("database", store.pool().close()).await;
    tracing::info!("coordinator stopped");
    Ok(())
}
