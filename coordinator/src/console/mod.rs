//! # The HQ web console (HTTPS only)
//!
//! Server-rendered pages (askama templates in `coordinator/templates/console/`, CSS and a
//! little JavaScript embedded from `coordinator/static/console/`: no CDN, no Node), served on
//! its own HTTPS listener (`[console]` in the config) with a configured or self-signed
//! certificate ([`tls`]).
//!
//! Rooms: [`auth`] (users, roles, sessions, login throttling), [`audit`] (the audit log),
//! [`web`] (the frame every page shares: session extraction, CSRF, role checks, rendering),
//! [`pages`] (login, users, audit), [`campaign_pages`] (campaigns, contact uploads),
//! [`fleet`] (appliances), [`live`] (figures and the WebSocket dashboard), [`analytics`]
//! (charts as SVG, CSV export), [`policy_pages`] (routing, DNC, compliance profiles).
//!
//! Must not: own campaign, contact, leasing, routing, compliance or enrollment logic — it
//! calls those rooms' public functions and only reads the sync's stored tables.

pub mod analytics;
pub mod audit;
pub mod auth;
pub mod campaign_pages;
pub mod dnc_upload;
pub mod fleet;
pub mod live;
pub mod pages;
pub mod policy_pages;
pub mod tls;
pub mod web;

use crate::contacts::vault::NumberVault;
use crate::store::Store;
use auth::{LoginThrottle, SessionPolicy, Sessions, ThrottlePolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a console operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// A submitted field holds a value that cannot be used.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The thing asked for does not exist.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl ConsoleError {
    /// A refusal naming the field at fault.
    pub fn invalid(field: &str, reason: impl Into<String>) -> ConsoleError {
        ConsoleError::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleStartError {
    /// The certificate could not be made or loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The number key file is unusable.
    #[error(transparent)]
    Vault(#[from] crate::contacts::vault::VaultError),
    /// The first admin could not be created.
    #[error("creating the first console admin: {0}")]
    FirstAdmin(#[source] ConsoleError),
    /// The compliance profiles could not be seeded.
    #[error("seeding compliance profiles: {0}")]
    Profiles(#[from] crate::compliance::PolicyError),
    /// A directory could not be created.
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The listener could not be bound or failed.
    #[error("console on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How the console is set up (from `[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `listen` is the built-in default rather than configured: when it is taken, the
    /// coordinator runs without the console (and logs why) instead of failing to start.
    pub listen_is_default: bool,
    /// Certificate chain and key files; a self-signed pair is generated when `None`.
    pub certificate_files: Option<(PathBuf, PathBuf)>,
    /// Names and addresses a generated certificate covers.
    pub certificate_names: Vec<String>,
    /// Session lifetimes.
    pub sessions: SessionPolicy,
    /// Where the number key and uploads live.
    pub data_dir: PathBuf,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub(crate) store: Store,
    pub(crate) vault: NumberVault,
    pub(crate) sessions: Sessions,
    pub(crate) throttle: Arc<Mutex<LoginThrottle>>,
    pub(crate) upload_dir: PathBuf,
    pub(crate) fingerprint: String,
    pub(crate) live: live::LiveCache,
}

/// The bound, ready-to-serve console.
pub struct Console {
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: tls::ConsoleCertificate,
    first_admin: Option<(String, String)>,
}

impl Console {
    /// Loads or creates the certificate, creates the first admin when there is no user,
    /// and binds the listener.
    pub async fn bind(
        settings: &ConsoleSettings,
        store: Store,
    ) -> Result<Console, ConsoleStartError> {
        let files = settings
            .certificate_files
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let cert = tls::load_or_create(&settings.data_dir, files, &settings.certificate_names)?;
        let vault = NumberVault::open_or_create(&settings.data_dir.join("contact-numbers.key"))?;
        crate::compliance::ensure_builtin_profiles(&store).await?;
        let upload_dir = settings.data_dir.join("console-uploads");
        std::fs::create_dir_all(&upload_dir).map_err(|source| ConsoleStartError::Dir {
            path: upload_dir.clone(),
            source,
        })?;
        // Bound before the first admin is made, so that an admin is never created on a
        // start that cannot show its password.
        let listener = std::net::TcpListener::bind(settings.listen)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|source| ConsoleStartError::Serve {
                addr: settings.listen,
                source,
            })?;
        let first_admin = auth::ensure_first_admin(&store)
            .await
            .map_err(ConsoleStartError::FirstAdmin)?;
        let state = ConsoleState {
            sessions: Sessions::new(store.clone(), settings.sessions),
            store,
            vault,
            throttle: Arc::new(Mutex::new(LoginThrottle::new(ThrottlePolicy::default()))),
            upload_dir,
            fingerprint: cert.fingerprint.clone(),
            live: live::LiveCache::default(),
        };
        Ok(Console {
            listener,
            app: web::router(state),
            tls: cert,
            first_admin,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.tls.fingerprint
    }

    /// The first admin's name and password when this start created it (show it once).
    pub fn first_admin(&self) -> Option<&(String, String)> {
        self.first_admin.as_ref()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ConsoleStartError> {
        let addr = self
            .local_addr()
            .map_err(|source| ConsoleStartError::Serve {
                addr: ([0, 0, 0, 0], 0).into(),
                source,
            })?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        let config = axum_server::tls_rustls::RustlsConfig::from_config(self.tls.server_config);
        axum_server::from_tcp_rustls(self.listener, config)
            .map_err(|source| ConsoleStartError::Serve { addr, source })?
            .handle(handle)
            .serve(self.app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .map_err(|source| ConsoleStartError::Serve { addr, source })
    }
}
