//! Observability and configuration plumbing shared by both binaries (feature `observe`).
//!
//! - [`LogConfig`] / [`init_logging`]: `tracing` to stderr, human-readable on a terminal,
//!   JSON lines when `format = "json"`; `RUST_LOG` overrides the configured level.
//! - [`recent_logs`]: the last lines logged, kept in memory (the appliance's logs page).
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

/// Awaits one stage of a shutdown, logging a warning naming `stage` every 10 s while it is
/// still pending and how long it took once it ends after such a warning. A stop that hangs
/// then says where, instead of leaving only a silent process.
pub async fn shutdown_stage<F: Future>(stage: &str, fut: F) -> F::Output {
    shutdown_stage_every(stage, std::time::Duration::from_secs(10), fut).await
}

/// [`shutdown_stage`] warning every `every`.
async fn shutdown_stage_every<F: Future>(
    stage: &str,
    every: std::time::Duration,
    fut: F,
) -> F::Output {
    let started = std::time::Instant::now();
    let mut fut = std::pin::pin!(fut);
    let mut warned = false;
    loop {
        match tokio::time::timeout(every, fut.as_mut()).await {
            Ok(out) => {
                if warned {
                    tracing::warn!(
                        stage,
                        seconds = started.elapsed().as_secs_f64(),
                        "shutdown stage finished late"
                    );
                }
                return out;
            }
            Err(_) => {
                warned = true;
                tracing::warn!(
                    stage,
                    seconds = started.elapsed().as_secs(),
                    "shutdown: still waiting for this stage"
                );
            }
        }
    }
}

/// Starts logging to stderr and into [`recent_logs`]. Call once, early in `main`.
pub fn init_logging(config: &LogConfig) -> Result<(), ConfigError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(&from_env)
            .map_err(|e| ConfigError::invalid("RUST_LOG", e.to_string()))?,
        _ => EnvFilter::try_new(&config.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?,
    };
    let base = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => from_env,
        _ => config.level.clone(),
    };
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    let _ = LOG_FILTER.set(LogFilterControl {
        base,
        reload: Box::new(move |f| reload.reload(f).map_err(|e| e.to_string())),
    });
    let recent = fmt::layer().with_ansi(false).with_writer(recent_logs());
    let (stderr, recent) = match config.format {
        LogFormat::Text => (
            fmt::layer().with_writer(std::io::stderr).boxed(),
            recent.boxed(),
        ),
        LogFormat::Json => (
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr)
                .boxed(),
            recent.json().flatten_event(true).boxed(),
        ),
    };
    // A second init (tests starting two servers in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(recent)
        .try_init();
    Ok(())
}

/// The running filter's base (config or `RUST_LOG`) and the way to replace it.
struct LogFilterControl {
    base: String,
    #[allow(clippy::type_complexity)]
    reload: Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>,
}

static LOG_FILTER: std::sync::OnceLock<LogFilterControl> = std::sync::OnceLock::new();

/// Adds `directives` (e.g. `callgate_appliance::sip=trace`) to the configured log filter
/// until [`reset_log_filter`]; a second call replaces the first's additions. An error names
/// the directive that does not parse; the running filter then stays as it was.
pub fn extend_log_filter(directives: &str) -> Result<(), ConfigError> {
    let Some(control) = LOG_FILTER.get() else {
        return Err(ConfigError::invalid("log", "logging is not started"));
    };
    let combined = format!("{},{directives}", control.base);
    let filter = tracing_subscriber::EnvFilter::try_new(&combined)
        .map_err(|e| ConfigError::invalid("log filter", format!("`{directives}`: {e}")))?;
    (control.reload)(filter).map_err(|e| ConfigError::invalid("log filter", e))
}

/// Puts the configured log filter back.
pub fn reset_log_filter() -> Result<(), ConfigError> {
    let Some(control) = LOG_FILTER.get() else {
        return Ok(());
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&control.base)
        .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
    (control.reload)(filter).map_err(|e| ConfigError::invalid("log filter", e))
}

/// How many lines [`recent_logs`] keeps.
pub const RECENT_LOG_LINES: usize = 2000;

/// The most recent log lines of this process, oldest first, as they were written (without
/// terminal colours). Bounded: the oldest line goes when a new one arrives at capacity.
#[derive(Debug)]
pub struct RecentLogs {
    lines: std::sync::Mutex<std::collections::VecDeque<String>>,
    capacity: usize,
}

impl RecentLogs {
    /// An empty buffer keeping `capacity` lines.
    pub fn new(capacity: usize) -> RecentLogs {
        RecentLogs {
            lines: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Appends every line of `text`.
    pub fn push(&self, text: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.to_string());
        }
    }

    /// The newest `limit` lines that contain `needle` (case-insensitive; every line when
    /// empty), oldest first.
    pub fn tail(&self, needle: &str, limit: usize) -> Vec<String> {
        let needle = needle.to_lowercase();
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = lines
            .iter()
            .rev()
            .filter(|l| needle.is_empty() || l.to_lowercase().contains(&needle))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// This process's recent log lines (filled once [`init_logging`] ran).
pub fn recent_logs() -> &'static RecentLogs {
    static RECENT: std::sync::OnceLock<RecentLogs> = std::sync::OnceLock::new();
    RECENT.get_or_init(|| RecentLogs::new(RECENT_LOG_LINES))
}

/// One formatted event on its way into [`RecentLogs`]; stored when dropped.
pub struct RecentLogWriter {
    target: &'static RecentLogs,
    buffer: Vec<u8>,
}

impl std::io::Write for RecentLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RecentLogWriter {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.target.push(&String::from_utf8_lossy(&self.buffer));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for &'static RecentLogs {
    type Writer = RecentLogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RecentLogWriter {
            target: self,
            buffer: Vec::new(),
        }
    }
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

    /// Captures what is logged while it is the thread's default subscriber.
    fn capture_logs() -> (
        tracing::subscriber::DefaultGuard,
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    ) {
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = written.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || SharedBuf(sink.clone()))
            .finish();
        (tracing::subscriber::set_default(subscriber), written)
    }

    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stop_stage_still_pending_is_named_until_it_ends() {
        let (_guard, written) = capture_logs();
        let every = std::time::Duration::from_millis(20);
        let out = shutdown_stage_every("dialer", every, async {
            tokio::time::sleep(every * 10).await;
            7
        })
        .await;
        assert_eq!(out, 7);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let waiting: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("still waiting for this stage"))
            .collect();
        assert!(!waiting.is_empty(), "{text}");
        assert!(waiting.iter().all(|l| l.contains("dialer")), "{text}");
        assert!(text.contains("shutdown stage finished late"), "{text}");
    }

    #[tokio::test]
    async fn a_stop_stage_ending_in_time_logs_nothing() {
        let (_guard, written) = capture_logs();
        shutdown_stage("store", std::future::ready(())).await;
        assert!(written.lock().unwrap().is_empty());
    }

    #[test]
    fn recent_logs_keep_the_newest_lines_and_filter_them() {
        let logs = RecentLogs::new(3);
        logs.push("one INFO start\n");
        logs.push("two WARN link down\nthree INFO link up\n\n");
        logs.push("four ERROR store failed");
        assert_eq!(
            logs.tail("", 10),
            vec![
                "two WARN link down",
                "three INFO link up",
                "four ERROR store failed"
            ],
            "the oldest line went, blank lines are not kept"
        );
        assert_eq!(logs.tail("link", 1), vec!["three INFO link up"]);
        assert_eq!(logs.tail("error", 10), vec!["four ERROR store failed"]);
    }

    #[test]
    fn an_event_written_in_pieces_is_stored_once_whole() {
        use std::io::Write;
        use tracing_subscriber::fmt::MakeWriter;
        static LOGS: std::sync::OnceLock<RecentLogs> = std::sync::OnceLock::new();
        let logs: &'static RecentLogs = LOGS.get_or_init(|| RecentLogs::new(10));
        {
            let mut w = logs.make_writer();
            w.write_all(b"2026-11-21 WARN ").unwrap();
            w.write_all(b"link down\n").unwrap();
            assert!(logs.tail("", 10).is_empty(), "nothing until the event ends");
        }
        assert_eq!(logs.tail("", 10), vec!["2026-11-21 WARN link down"]);
    }

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
