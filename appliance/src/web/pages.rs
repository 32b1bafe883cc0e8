//! The UI's routes, handlers and templates (`appliance/templates/`).

use super::auth::{AccountError, Session};
use super::status::{self, StatusSnapshot};
use super::WebState;
use askama::Template;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use callgate_common::time::UnixMillis;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cg_session";
/// How often the live status is pushed.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(2);

/// The UI's routes over `state`.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/setup", get(setup_form).post(setup_submit))
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
        .route("/status", get(status_page))
        .route("/events", get(live_events))
        .route("/network", get(network_page))
        .route("/system", get(system_page))
        .route("/system/password", post(change_password))
        .route("/system/reboot", post(reboot))
        .route("/system/factory-reset", post(factory_reset))
        .route("/cloud", get(super::cloud::cloud_page))
        .route("/cloud/enroll", post(super::cloud::enroll_submit))
        .route("/logs", get(super::logs::logs_page))
        .route("/diagnostics", get(super::diagnostics::diagnostics_page))
        .route(
            "/diagnostics/call",
            post(super::diagnostics::test_call_submit),
        )
        .route("/diagnostics/trace", post(super::diagnostics::trace_submit))
        .route("/diagnostics/ping", post(super::diagnostics::ping_submit))
        .route("/diagnostics/audio", post(super::diagnostics::audio_submit))
        .route(
            "/diagnostics/listen",
            post(super::diagnostics::listen_submit),
        )
        .route(
            "/diagnostics/headset/stop",
            post(super::diagnostics::headset_stop),
        )
        .route("/logs.txt", get(super::logs::logs_download))
        .route("/trunks", get(super::trunks::trunks_page))
        .route("/trunks/save", post(super::trunks::trunk_save))
        .route("/trunks/remove", post(super::trunks::trunk_remove))
        .route("/phones/save", post(super::trunks::phone_save))
        .route("/phones/remove", post(super::trunks::phone_remove))
        .route("/static/app.css", get(css))
        .route("/static/live.js", get(live_js))
        .merge(super::agent::router())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("strict-transport-security", "max-age=31536000"),
        (
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// What every page's frame shows.
pub(super) struct PageFrame {
    pub(super) box_name: String,
    pub(super) firmware: &'static str,
    pub(super) fingerprint: String,
    pub(super) username: String,
    pub(super) csrf: Option<String>,
    pub(super) error: Option<String>,
    pub(super) notice: Option<String>,
}

impl PageFrame {
    pub(super) fn new(state: &WebState, session: Option<&Session>) -> Self {
        PageFrame {
            box_name: state
                .status
                .appliance
                .clone()
                .unwrap_or_else(|| "callgate appliance".into()),
            firmware: env!("CARGO_PKG_VERSION"),
            fingerprint: state.fingerprint.clone(),
            username: session.map(|s| s.username.clone()).unwrap_or_default(),
            csrf: session.map(|s| s.csrf_token.clone()),
            error: None,
            notice: None,
        }
    }
    pub(super) fn error(mut self, e: impl ToString) -> Self {
        self.error = Some(e.to_string());
        self
    }
    pub(super) fn notice(mut self, n: impl ToString) -> Self {
        self.notice = Some(n.to_string());
        self
    }
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    page: PageFrame,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: PageFrame,
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    page: PageFrame,
    status: StatusSnapshot,
    /// For the form that listens to a call on the headset: its token and the calls.
    csrf: String,
    listenable: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "network.html")]
struct NetworkPage {
    page: PageFrame,
    addresses: Vec<(String, String)>,
    gateway: String,
    dns: Vec<String>,
    ntp: String,
}

#[derive(Template)]
#[template(path = "system.html")]
struct SystemPage {
    page: PageFrame,
    csrf: String,
    reboot_available: bool,
}

pub(crate) fn render(code: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (code, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "page could not be rendered",
            )
                .into_response()
        }
    }
}

fn store_failure(e: AccountError) -> Response {
    tracing::error!(error = %e, "web UI store failure");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the box's store failed: {e}"),
    )
        .into_response()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(&format!("{SESSION_COOKIE}="))
                .map(str::to_string)
        })
}

/// A page behind the login: `Err` carries the response that sends the browser where it must
/// go first (setup, login) or refuses the request; handlers use `?` on the session checks.
pub(super) type Guarded = Result<Response, Response>;

/// The request's session, or the response that sends the browser where it must go first.
pub(super) async fn require_session(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(String, Session), Response> {
    match state.sessions.admin_exists().await {
        Ok(false) => return Err(Redirect::to("/setup").into_response()),
        Err(e) => return Err(store_failure(e)),
        Ok(true) => {}
    }
    let Some(token) = cookie_token(headers) else {
        return Err(Redirect::to("/login").into_response());
    };
    match state.sessions.lookup(UnixMillis::now(), &token).await {
        Ok(Some(s)) => Ok((token, s)),
        Ok(None) => Err(Redirect::to("/login?expired=1").into_response()),
        Err(e) => Err(store_failure(e)),
    }
}

/// A session whose form carried its CSRF token.
pub(super) async fn require_form_session(
    state: &WebState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(String, Session), Response> {
    let (token, session) = require_session(state, headers).await?;
    if !super::auth::constant_time_eq(csrf.as_bytes(), session.csrf_token.as_bytes()) {
        tracing::warn!(user = %session.username, "form without a valid CSRF token refused");
        return Err((
            StatusCode::FORBIDDEN,
            "the form's security token is missing or stale: reload the page",
        )
            .into_response());
    }
    Ok((token, session))
}

async fn root(State(state): State<WebState>) -> Response {
    match state.sessions.admin_exists().await {
        Ok(false) => Redirect::to("/setup").into_response(),
        Ok(true) => Redirect::to("/status").into_response(),
        Err(e) => store_failure(e),
    }
}

async fn setup_form(State(state): State<WebState>) -> Response {
    match state.sessions.admin_exists().await {
        Ok(true) => Redirect::to("/login").into_response(),
        Ok(false) => render(
            StatusCode::OK,
            &SetupPage {
                page: PageFrame::new(&state, None),
            },
        ),
        Err(e) => store_failure(e),
    }
}

#[derive(Deserialize)]
struct SetupForm {
    setup_code: String,
    username: String,
    password: String,
    confirm: String,
}

async fn setup_submit(State(state): State<WebState>, Form(f): Form<SetupForm>) -> Response {
    let result = state
        .sessions
        .create_admin(
            UnixMillis::now(),
            &state.setup_code,
            &f.setup_code,
            &f.username,
            &f.password,
            &f.confirm,
        )
        .await;
    match result {
        Ok(()) => {
            tracing::info!(user = %f.username, "web UI admin account created");
            Redirect::to("/login?created=1").into_response()
        }
        Err(AccountError::AlreadySetUp) => Redirect::to("/login").into_response(),
        Err(e @ AccountError::Store(_)) => store_failure(e),
        Err(e) => {
            let code = if e == AccountError::WrongSetupCode {
                tracing::warn!("first-boot setup with a wrong setup code");
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            render(
                code,
                &SetupPage {
                    page: PageFrame::new(&state, None).error(e),
                },
            )
        }
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    created: Option<String>,
    expired: Option<String>,
}

async fn login_form(State(state): State<WebState>, Query(q): Query<LoginQuery>) -> Response {
    match state.sessions.admin_exists().await {
        Ok(false) => return Redirect::to("/setup").into_response(),
        Err(e) => return store_failure(e),
        Ok(true) => {}
    }
    let mut page = PageFrame::new(&state, None);
    if q.created.is_some() {
        page = page.notice("Account created. Log in with it.");
    } else if q.expired.is_some() {
        page = page.notice("Your session ended. Log in again.");
    }
    render(StatusCode::OK, &LoginPage { page })
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_submit(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let now = UnixMillis::now();
    let source = peer.ip();
    let locked = state
        .throttle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(now, source);
    if let Err(until) = locked {
        tracing::warn!(%source, "login refused: locked after repeated failures");
        let page = PageFrame::new(&state, None).error(format!(
            "Too many failed logins. Try again after {}.",
            status::utc_seconds(until)
        ));
        return render(StatusCode::TOO_MANY_REQUESTS, &LoginPage { page });
    }
    match state.sessions.verify(&f.username, &f.password).await {
        Ok(true) => {
            state
                .throttle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record_success(source);
            match state.sessions.open(now, &f.username).await {
                Ok(token) => {
                    tracing::info!(user = %f.username, %source, "web UI login");
                    let cookie = format!(
                        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict"
                    );
                    ([(header::SET_COOKIE, cookie)], Redirect::to("/status")).into_response()
                }
                Err(e) => store_failure(e),
            }
        }
        Ok(false) => {
            state
                .throttle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record_failure(now, source);
            tracing::warn!(%source, "web UI login failed");
            let page = PageFrame::new(&state, None).error("Wrong username or password.");
            render(StatusCode::UNAUTHORIZED, &LoginPage { page })
        }
        Err(e) => store_failure(e),
    }
}

fn clear_cookie() -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Guarded {
    let (token, session) = require_form_session(&state, &headers, &f.csrf).await?;
    state.sessions.close(&token).await.map_err(store_failure)?;
    tracing::info!(user = %session.username, "web UI logout");
    Ok(([clear_cookie()], Redirect::to("/login")).into_response())
}

async fn status_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let status = state
        .status
        .snapshot_with(UnixMillis::now(), &state.engine)
        .await;
    Ok(render(
        StatusCode::OK,
        &StatusPage {
            page: PageFrame::new(&state, Some(&session)),
            status,
            csrf: session.csrf_token.clone(),
            listenable: super::diagnostics::listenable_calls(),
        },
    ))
}

async fn live_events(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    require_session(&state, &headers).await?;
    let wake = LiveWake {
        campaigns: state.status.campaigns.clone(),
        agents: state.engine.agents.as_ref().and_then(|a| a.agent_changes()),
        test_calls: Some(state.engine.test_calls.subscribe()),
        calls: state.engine.trunks.as_ref().and_then(|t| t.live_calls()),
        inbound_calls: state.engine.inbound_calls.clone(),
    };
    let source = (state.status.clone(), state.engine.clone());
    let stream = futures_util::stream::unfold(
        (source, wake, true),
        |((source, engine), mut wake, first)| async move {
            if !first {
                wake.next().await;
            }
            let snapshot = source.snapshot_with(UnixMillis::now(), &engine).await;
            let event = Event::default()
                .event("status")
                .json_data(&snapshot)
                .unwrap_or_else(|_| Event::default().comment("unserialisable status"));
            Some((Ok::<_, Infallible>(event), ((source, engine), wake, false)))
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What wakes the live stream before [`LIVE_INTERVAL`]: the dialer's campaigns (an
/// attempt starts or ends), the agent desk (an agent changes state), the diagnostics
/// page's test calls and the trunk router's calls (one rings, is answered or ends).
struct LiveWake {
    campaigns: Option<tokio::sync::watch::Receiver<Vec<crate::dialer::executor::DialerStatus>>>,
    agents: Option<tokio::sync::watch::Receiver<u64>>,
    test_calls: Option<tokio::sync::watch::Receiver<Vec<String>>>,
    calls: Option<tokio::sync::watch::Receiver<Vec<crate::sip::live_calls::LiveCall>>>,
    inbound_calls: Option<tokio::sync::watch::Receiver<Vec<crate::sip::live_calls::LiveCall>>>,
}

impl LiveWake {
    /// Waits for a change or the interval, whichever is first; a little later than a change
    /// so that a burst of them makes one update.
    async fn next(&mut self) {
        async fn changed<T>(rx: &mut Option<tokio::sync::watch::Receiver<T>>) {
            let ok = match rx {
                Some(r) => r.changed().await.is_ok(),
                None => false,
            };
            if !ok {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LIVE_INTERVAL) => return,
            () = changed(&mut self.campaigns) => {}
            () = changed(&mut self.agents) => {}
            () = changed(&mut self.test_calls) => {}
            () = changed(&mut self.calls) => {}
            () = changed(&mut self.inbound_calls) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn network_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let addresses = callgate_board::linux::lan_addresses()
        .unwrap_or_default()
        .into_iter()
        .map(|(i, ip)| (i, ip.to_string()))
        .collect();
    let gateway = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| status::default_gateway(&t))
        .unwrap_or_else(|| "none".into());
    let dns = std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| status::dns_servers(&t))
        .unwrap_or_default();
    let ntp = if std::path::Path::new("/run/systemd/timesync/synchronized").exists() {
        "synchronised by systemd-timesyncd".to_string()
    } else {
        format!(
            "not known to be synchronised; box clock reads {}",
            status::utc_seconds(UnixMillis::now())
        )
    };
    Ok(render(
        StatusCode::OK,
        &NetworkPage {
            page: PageFrame::new(&state, Some(&session)),
            addresses,
            gateway,
            dns,
            ntp,
        },
    ))
}

fn system_page_for(state: &WebState, session: &Session) -> SystemPage {
    SystemPage {
        page: PageFrame::new(state, Some(session)),
        csrf: session.csrf_token.clone(),
        reboot_available: !state.reboot_command.is_empty(),
    }
}

async fn system_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    Ok(render(StatusCode::OK, &system_page_for(&state, &session)))
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: String,
    current: String,
    password: String,
    confirm: String,
}

async fn change_password(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Guarded {
    let (token, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let result = state
        .sessions
        .change_password(
            UnixMillis::now(),
            &session.username,
            &f.current,
            &f.password,
            &f.confirm,
            &token,
        )
        .await;
    let mut page = system_page_for(&state, &session);
    Ok(match result {
        Ok(()) => {
            tracing::info!(user = %session.username, "web UI password changed");
            page.page = page
                .page
                .notice("Password changed; other sessions were logged out.");
            render(StatusCode::OK, &page)
        }
        Err(e @ AccountError::Store(_)) => store_failure(e),
        Err(e) => {
            page.page = page.page.error(e);
            render(StatusCode::BAD_REQUEST, &page)
        }
    })
}

#[derive(Deserialize)]
struct ConfirmForm {
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn reboot(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let mut page = system_page_for(&state, &session);
    let Some((program, args)) = state.reboot_command.split_first() else {
        page.page = page.page.error("Reboot is not configured on this box.");
        return Err(render(StatusCode::BAD_REQUEST, &page));
    };
    if f.confirm != "yes" {
        page.page = page.page.error("Tick the box to confirm the reboot.");
        return Err(render(StatusCode::BAD_REQUEST, &page));
    }
    tracing::warn!(user = %session.username, "reboot requested from the web UI");
    Ok(
        match tokio::process::Command::new(program).args(args).spawn() {
            Ok(_) => {
                page.page = page
                    .page
                    .notice("Rebooting. The box will be back in a minute or two.");
                render(StatusCode::OK, &page)
            }
            Err(e) => {
                page.page = page.page.error(format!("Could not run `{program}`: {e}"));
                render(StatusCode::INTERNAL_SERVER_ERROR, &page)
            }
        },
    )
}

async fn factory_reset(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    if f.confirm != "RESET" {
        let mut page = system_page_for(&state, &session);
        page.page = page
            .page
            .error("Type RESET in capitals to confirm the factory reset.");
        return Err(render(StatusCode::BAD_REQUEST, &page));
    }
    tracing::warn!(user = %session.username, "factory reset from the web UI");
    crate::reset::factory_reset(state.status.store.pool(), &state.identity_dir)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "factory reset failed");
            let mut page = system_page_for(&state, &session);
            page.page = page.page.error(format!("Factory reset failed: {e}"));
            render(StatusCode::INTERNAL_SERVER_ERROR, &page)
        })?;
    state.restart.request("factory reset from the web UI");
    Ok(([clear_cookie()], Redirect::to("/setup")).into_response())
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css")],
        include_str!("static/app.css"),
    )
        .into_response()
}

async fn live_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        include_str!("static/live.js"),
    )
        .into_response()
}
