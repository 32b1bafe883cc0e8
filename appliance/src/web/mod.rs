//! # The local web UI for field technicians (HTTPS only)
//!
//! Served on the box's LAN address with a certificate generated at first boot ([`tls`]); no
//! default password: the admin account is created with the setup code from the box's label
//! ([`auth`]). Every page but `/setup` and `/login` needs a session; every form carries the
//! session's CSRF token; responses carry strict security headers. The status page is kept
//! live by Server-Sent Events (`/events`).
//!
//! The same server serves the agent page under `/agent` ([`agent`]) when the daemon gives it
//! the agent desk ([`WebUi::bind_with_agents`]).
//!
//! Rooms: [`auth`] (accounts, sessions, login throttling), [`tls`] (the certificate),
//! [`status`] (what the pages show), [`pages`] (the handlers and templates), [`cloud`]
//! (the cloud-link page and enrollment by claim code), [`logs`] (recent log lines),
//! [`diagnostics`] (a test call with its SIP ladder), [`headset`] (the test call patched to
//! the tech port's headset), [`trunks`] (the trunk and phone
//! editor, written as a config overlay and applied to the running engine).
//! Must not: change call handling or the store's call data; it reads the daemon's state and
//! calls its documented controls only.

pub mod agent;
pub mod auth;
pub mod cloud;
pub mod diagnostics;
pub mod headset;
pub mod logs;
pub mod pages;
pub mod status;
pub mod tls;
pub mod trunks;

use auth::{LoginThrottle, SessionPolicy, Sessions, SetupCode, ThrottlePolicy};
use status::StatusSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why the web UI could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The certificate could not be made or loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The setup code file could not be read or created.
    #[error("setup code file {path}: {source}")]
    SetupCode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The listener could not be bound or failed.
    #[error("web UI on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub(crate) sessions: Sessions,
    pub(crate) throttle: Arc<Mutex<LoginThrottle>>,
    pub(crate) setup_code: SetupCode,
    pub(crate) status: StatusSource,
    pub(crate) fingerprint: String,
    pub(crate) reboot_command: Vec<String>,
    pub(crate) identity_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) restart: crate::restart::RestartSwitch,
    pub(crate) sip: Option<crate::sip::config::SipSettings>,
    pub(crate) sip_trace: diagnostics::SipTraceSwitch,
    pub(crate) headset: headset::HeadsetSwitch,
    pub(crate) agents: Option<crate::agents::service::AgentDeskService>,
    pub(crate) agent_throttle: Arc<Mutex<LoginThrottle>>,
    pub(crate) engine: status::LiveEngine,
    pub(crate) sip_editor: Option<Arc<trunks::SipEditor>>,
}

impl WebState {
    /// The SIP settings in force now (after the trunk editor's last change).
    pub(crate) fn sip_settings(&self) -> Option<crate::sip::config::SipSettings> {
        match &self.sip_editor {
            Some(editor) => Some(editor.settings()),
            None => self.sip.clone(),
        }
    }
}

/// How the UI is set up (from `[web]` in the config).
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The setup code file (the label's stand-in).
    pub setup_code_file: PathBuf,
    /// Names and addresses the certificate covers.
    pub certificate_names: Vec<String>,
    /// Session lifetimes.
    pub sessions: SessionPolicy,
    /// The command that reboots the box (empty: reboot not offered).
    pub reboot_command: Vec<String>,
    /// What a factory reset removes besides the UI account: the enrollment identity.
    pub identity_dir: PathBuf,
    /// Pulled after an enrollment or a factory reset from the UI.
    pub restart: crate::restart::RestartSwitch,
    /// The box's SIP settings, for the diagnostics page's test call.
    pub sip: Option<crate::sip::config::SipSettings>,
}

/// The bound, ready-to-serve UI.
pub struct WebUi {
    listener: std::net::TcpListener,
    state: WebState,
    tls: tls::WebCertificate,
}

impl WebUi {
    /// Loads or creates the certificate and setup code and binds the listener.
    pub fn bind(settings: &WebSettings, status: StatusSource) -> Result<WebUi, WebError> {
        WebUi::bind_with_agents(settings, status, None)
    }

    /// Like [`WebUi::bind`], also serving the agent page (`/agent`) over `agents`.
    pub fn bind_with_agents(
        settings: &WebSettings,
        status: StatusSource,
        agents: Option<crate::agents::service::AgentDeskService>,
    ) -> Result<WebUi, WebError> {
        let cert = tls::load_or_create(&status.data_dir, &settings.certificate_names)?;
        let setup_code =
            SetupCode::load_or_create(&settings.setup_code_file).map_err(|source| {
                WebError::SetupCode {
                    path: settings.setup_code_file.clone(),
                    source,
                }
            })?;
        let listener = std::net::TcpListener::bind(settings.listen)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|source| WebError::Serve {
                addr: settings.listen,
                source,
            })?;
        let data_dir = status.data_dir.clone();
        let state = WebState {
            sessions: Sessions::new(status.store.pool().clone(), settings.sessions),
            throttle: Arc::new(Mutex::new(LoginThrottle::new(ThrottlePolicy::default()))),
            setup_code,
            status,
            fingerprint: cert.fingerprint.clone(),
            reboot_command: settings.reboot_command.clone(),
            identity_dir: settings.identity_dir.clone(),
            data_dir,
            restart: settings.restart.clone(),
            sip: settings.sip.clone(),
            sip_trace: diagnostics::SipTraceSwitch::default(),
            headset: headset::HeadsetSwitch::default(),
            engine: status::LiveEngine {
                agents: agents
                    .clone()
                    .map(|a| Arc::new(a) as Arc<dyn status::AgentSource>),
                ..Default::default()
            },
            agents,
            agent_throttle: Arc::new(Mutex::new(LoginThrottle::new(ThrottlePolicy::default()))),
            sip_editor: None,
        };
        Ok(WebUi {
            listener,
            state,
            tls: cert,
        })
    }

    /// Shows the call engine's live parts on the status page (an agent source left `None`
    /// keeps the desk given to [`WebUi::bind_with_agents`]) and, with `sip` (the `[sip]`
    /// section in force), lets the technician edit trunks and phones: changes are written to
    /// `<data_dir>/sip-overlay.toml` ([`trunks::OVERLAY_FILE`]) and applied to the running
    /// engine through `control` (router, dialer, agents' SIP side).
    pub fn with_engine(
        mut self,
        engine: status::LiveEngine,
        sip: Option<crate::sip::config::SipConfig>,
        control: trunks::SipControls,
    ) -> WebUi {
        let agents = engine.agents.clone().or(self.state.engine.agents.take());
        let inbound_calls = engine
            .inbound_calls
            .clone()
            .or_else(|| control.agents.as_ref().map(|a| a.calls()));
        self.state.engine = status::LiveEngine {
            agents,
            inbound_calls,
            test_calls: self.state.engine.test_calls.clone(),
            ..engine
        };
        self.state.sip_editor = sip.and_then(|sip| {
            match trunks::SipEditor::new(&self.state.data_dir, sip, control) {
                Ok(editor) => Some(Arc::new(editor)),
                Err(e) => {
                    tracing::error!(error = %e, "the trunk editor is off: the [sip] section in force does not validate");
                    None
                }
            }
        });
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.tls.fingerprint
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let addr = self.local_addr().map_err(|source| WebError::Serve {
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
            .map_err(|source| WebError::Serve { addr, source })?
            .handle(handle)
            .serve(pages::router(self.state).into_make_service_with_connect_info::<SocketAddr>())
            .await
            .map_err(|source| WebError::Serve { addr, source })
    }
}
