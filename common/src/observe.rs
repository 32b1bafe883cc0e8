//! Observability and configuration plumbing shared by both binaries (feature `observe`).
//!
//! - [`LogConfig`] / [`init_logging`]: `tracing` to stderr, human-readable on a terminal,
//!   JSON lines when `format = "json"`; `RUST_LOG` overrides the configured level.
//! - [`install_metrics`]: the process-wide `metrics` recorder with a Prometheus renderer.
//! - [`ops_router`]: `GET /healthz` (JSON, 503 when a check fails) and `GET /metrics`.
//! - [`load_toml`]: reads one TOML config file into typed structs and reports the file, the
//!   line and the key at fault.
//!
//! Must not: know about SIP, campaigns or anything else domain-specific.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for production log shipping.
    Json,
}

/// The `[log]` section of either program's config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `callgate_appliance::sip=trace,info`, ...
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Why configuration could not be loaded or logging started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type. The message from the TOML
    /// parser names the line, the column and the key.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value that parses but makes no sense.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Parses TOML text into `T`, attributing errors to `path`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads and parses the TOML file at `path`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(path, &text)
}

/// Parses a listen address (`127.0.0.1:8080`, `[::]:5060`) for config `key`.
pub fn parse_listen(key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("`{value}` is not an address:port such as 127.0.0.1:8080"),
        )
    })
}

/// Resolves on Ctrl-C or SIGTERM: the signal both daemons stop cleanly on.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

/// Starts logging. Call once, early in `main`.
pub fn init_logging(config: &LogConfig) -> Result<(), ConfigError> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(&from_env)
            .map_err(|e| ConfigError::invalid("RUST_LOG", e.to_string()))?,
        _ => EnvFilter::try_new(&config.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests starting two servers in one process) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// Installs the Prometheus recorder for this process, or returns the one already installed.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Only fails when another recorder was installed first; ours then stays unused
            // and /metrics shows what this handle has, which is still valid output.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok();
            handle
        })
        .clone()
}

/// The result of one health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked (`database`, `broker`, ...).
    pub name: String,
    /// `None` when healthy, otherwise what is wrong.
    pub error: Option<String>,
}

impl CheckResult {
    /// A passing check.
    pub fn ok(name: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            error: None,
        }
    }
    /// A failing check.
    pub fn failed(name: impl Into<String>, error: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            error: Some(error.into()),
        }
    }
}

/// Runs the program's health checks; called on every `GET /healthz`.
pub type HealthChecks =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<CheckResult>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    service: &'static str,
    version: &'static str,
    checks: HealthChecks,
    metrics: PrometheusHandle,
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    service: &'static str,
    version: &'static str,
    checks: Vec<CheckResult>,
}

/// `GET /healthz` and `GET /metrics` for `service` at `version`.
pub fn ops_router(
    service: &'static str,
    version: &'static str,
    checks: HealthChecks,
    metrics: PrometheusHandle,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState {
            service,
            version,
            checks,
            metrics,
        })
}

async fn healthz(State(state): State<OpsState>) -> Response {
    let checks = (state.checks)().await;
    let healthy = checks.iter().all(|c| c.error.is_none());
    let body = HealthBody {
        status: if healthy { "ok" } else { "unhealthy" },
        service: state.service,
        version: state.version,
        checks,
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        log: LogConfig,
    }

    #[test]
    fn config_errors_name_the_file_and_the_key() {
        let path = Path::new("x.toml");
        let err = parse_toml::<Sample>(path, "[log]\nlevle = \"info\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml") && msg.contains("levle"), "{msg}");
        let err = parse_toml::<Sample>(path, "[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
        let ok = parse_toml::<Sample>(path, "[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(ok.log.format, LogFormat::Json);
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let err = load_toml::<Sample>(Path::new("/no/such/callgate.toml")).unwrap_err();
        assert!(err.to_string().contains("/no/such/callgate.toml"), "{err}");
    }

    fn checks(result: Vec<CheckResult>) -> HealthChecks {
        Arc::new(move || {
            let r = result.clone();
            Box::pin(async move { r })
        })
    }

    async fn get_status(router: Router, uri: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_reports_503_with_the_failing_check() {
        let m = install_metrics();
        let router = ops_router(
            "svc",
            "1.0",
            checks(vec![
                CheckResult::ok("a"),
                CheckResult::failed("db", "locked"),
            ]),
            m.clone(),
        );
        let (status, body) = get_status(router, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("\"locked\"") && body.contains("unhealthy"),
            "{body}"
        );

        let router = ops_router("svc", "1.0", checks(vec![CheckResult::ok("a")]), m);
        let (status, body) = get_status(router, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"status\":\"ok\""), "{body}");
    }

    #[tokio::test]
    async fn metrics_endpoint_renders_recorded_values() {
        let m = install_metrics();
        metrics::counter!("callgate_observe_test_total").increment(3);
        let router = ops_router("svc", "1.0", checks(vec![]), m);
        let (status, body) = get_status(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("callgate_observe_test_total 3"), "{body}");
    }
}
