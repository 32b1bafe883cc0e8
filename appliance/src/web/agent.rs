//! The agent page (`/agent/...`): agents log in with the roster's credentials, see their
//! state, the screen-pop of the call (customer, masked number, fields, the script with its
//! variables filled in) and a call timer, pushed live over Server-Sent Events
//! (`/agent/events`), and pause with a reason, get ready or save a disposition.
//!
//! Sessions live in the store (`agent_session`, the SHA-256 of the cookie only) apart from
//! the technicians'; every form carries the session's CSRF token. What an agent may do is the
//! desk's decision ([`AgentDeskService`]); this file only renders and forwards.

use super::auth::{constant_time_eq, random_hex, token_hash, write_retrying, LoginThrottle};
use super::pages::render;
use super::WebState;
use crate::agents::desk::AgentView;
use crate::agents::service::AgentDeskService;
use crate::agents::{roster, AgentsError};
use askama::Template;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use callgate_common::ids::AgentId;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The agent session cookie's name.
pub const AGENT_COOKIE: &str = "cg_agent";
/// Agent sessions end after this long without a request (the live stream counts).
const IDLE_MS: i64 = 12 * 3600 * 1000;
/// A session's last-seen time is written at most this often: an agent's clicks do not each
/// cost a store write (the idle limit is hours).
const SEEN_EVERY_MS: i64 = 60 * 1000;

/// The agent page's routes (merged into the UI's router).
pub fn router() -> Router<WebState> {
    Router::new()
        .route("/agent", get(desk_page))
        .route("/agent/login", get(login_form).post(login_submit))
        .route("/agent/events", get(live_view))
        .route("/agent/pause", post(pause))
        .route("/agent/ready", post(ready))
        .route("/agent/disposition", post(disposition))
        .route("/agent/hangup", post(hang_up))
        .route("/agent/preview", post(preview_next))
        .route("/agent/preview/dial", post(preview_dial))
        .route("/agent/logout", post(logout))
        .route("/static/agent.js", get(agent_js))
}

/// A logged-in agent.
#[derive(Debug, Clone)]
struct AgentSession {
    agent: AgentId,
    csrf: String,
}

async fn open_session(
    pool: &SqlitePool,
    now: UnixMillis,
    agent: AgentId,
) -> Result<String, sqlx::Error> {
    let token = random_hex(32);
    let (hash, csrf) = (token_hash(&token), random_hex(16));
    write_retrying(pool, "agent session", |c| {
        let (hash, csrf) = (hash.clone(), csrf.clone());
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO agent_session (token_hash, agent_id, csrf_token, created_at_ms, last_seen_ms) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(hash)
            .bind(agent.0 as i64)
            .bind(csrf)
            .bind(now.0)
            .bind(now.0)
            .execute(c)
            .await
        })
    })
    .await?;
    Ok(token)
}

async fn lookup_session(
    pool: &SqlitePool,
    now: UnixMillis,
    token: &str,
) -> Result<Option<AgentSession>, sqlx::Error> {
    let hash = token_hash(token);
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT agent_id, csrf_token, last_seen_ms FROM agent_session WHERE token_hash = ?",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    let Some((agent, csrf, seen)) = row else {
        return Ok(None);
    };
    if now.0 - seen > IDLE_MS {
        close_session(pool, token).await?;
        return Ok(None);
    }
    if now.0 - seen >= SEEN_EVERY_MS {
        write_retrying(pool, "agent session seen", |c| {
            let hash = hash.clone();
            Box::pin(async move {
                sqlx::query("UPDATE agent_session SET last_seen_ms = ? WHERE token_hash = ?")
                    .bind(now.0)
                    .bind(hash)
                    .execute(c)
                    .await
            })
        })
        .await?;
    }
    Ok(Some(AgentSession {
        agent: AgentId(agent as u64),
        csrf,
    }))
}

async fn close_session(pool: &SqlitePool, token: &str) -> Result<(), sqlx::Error> {
    let hash = token_hash(token);
    write_retrying(pool, "agent logout", |c| {
        let hash = hash.clone();
        Box::pin(async move {
            sqlx::query("DELETE FROM agent_session WHERE token_hash = ?")
                .bind(hash)
                .execute(c)
                .await
        })
    })
    .await?;
    Ok(())
}

#[derive(Template)]
#[template(path = "agent_login.html")]
struct LoginPage {
    box_name: String,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct DeskPage {
    box_name: String,
    csrf: String,
    view: AgentView,
    state_label: &'static str,
    error: Option<String>,
    /// Preview campaigns the agent may ask a contact of: id and name.
    preview_campaigns: Vec<(u64, String)>,
    /// The contact on screen for preview.
    preview: Option<crate::agents::service::PreviewCard>,
}

/// The words the page shows for a state (the script uses the same).
fn state_label(state: &str) -> &'static str {
    match state {
        "connecting" => "Connecting your phone",
        "ready" => "Ready",
        "reserved" => "Incoming call",
        "talking" => "Talking",
        "wrap_up" => "Wrap-up",
        "paused" => "Paused",
        _ => "Logged out",
    }
}

/// What the live stream sends: the agent's view and the box's clock (for the call timer).
#[derive(Serialize)]
struct LiveView<'a> {
    now_ms: i64,
    #[serde(flatten)]
    view: &'a AgentView,
}

fn box_name(state: &WebState) -> String {
    state
        .status
        .appliance
        .clone()
        .unwrap_or_else(|| "callgate appliance".into())
}

/// The refusal when the daemon runs no agent desk.
fn no_desk() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent desk is not running on this box",
    )
        .into_response()
}

fn store_failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "agent page store failure");
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
                .strip_prefix(&format!("{AGENT_COOKIE}="))
                .map(str::to_string)
        })
}

fn clear_cookie() -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{AGENT_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    )
}

/// The request's agent session, or the response that sends the browser to the login form.
async fn require_agent(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(AgentDeskService, String, AgentSession), Response> {
    let desk = state.agents.clone().ok_or_else(no_desk)?;
    let Some(token) = cookie_token(headers) else {
        return Err(Redirect::to("/agent/login").into_response());
    };
    match lookup_session(desk.pool(), UnixMillis::now(), &token).await {
        Ok(Some(s)) => Ok((desk, token, s)),
        Ok(None) => Err(Redirect::to("/agent/login?ended=1").into_response()),
        Err(e) => Err(store_failure(e)),
    }
}

/// A session whose form carried its CSRF token.
async fn require_agent_form(
    state: &WebState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(AgentDeskService, String, AgentSession), Response> {
    let (desk, token, session) = require_agent(state, headers).await?;
    if !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
        tracing::warn!(agent = %session.agent, "agent form without a valid CSRF token refused");
        return Err((
            StatusCode::FORBIDDEN,
            "the form's security token is missing or stale: reload the page",
        )
            .into_response());
    }
    Ok((desk, token, session))
}

/// The status an agent operation's refusal maps to.
fn refusal_status(e: &AgentsError) -> StatusCode {
    match e {
        AgentsError::Store(_) | AgentsError::Outbox(_) => StatusCode::SERVICE_UNAVAILABLE,
        AgentsError::OnCall { .. }
        | AgentsError::PhoneNotConnected(_)
        | AgentsError::WrapUpPending(_)
        | AgentsError::NoCallToDispose(_)
        | AgentsError::AlreadyDisposed(_)
        | AgentsError::NoCallToHangUp(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The desk page for `session`, with `error` shown; a logged-out agent goes to the login.
fn desk_response(
    state: &WebState,
    desk: &AgentDeskService,
    token: &str,
    session: &AgentSession,
    error: Option<(StatusCode, String)>,
) -> Response {
    let Some(view) = desk.view(session.agent) else {
        return Redirect::to("/agent/login?ended=1").into_response();
    };
    if view.state == "logged_out" {
        let pool = desk.pool().clone();
        let token = token.to_string();
        tokio::spawn(async move {
            if let Err(e) = close_session(&pool, &token).await {
                tracing::warn!(error = %e, "closing an ended agent session failed");
            }
        });
        return ([clear_cookie()], Redirect::to("/agent/login?ended=1")).into_response();
    }
    let (code, error) = match error {
        Some((c, e)) => (c, Some(e)),
        None => (StatusCode::OK, None),
    };
    render(
        code,
        &DeskPage {
            box_name: box_name(state),
            csrf: session.csrf.clone(),
            state_label: state_label(view.state),
            preview_campaigns: desk
                .preview_campaigns()
                .into_iter()
                .map(|(c, name)| (c.0, name))
                .collect(),
            preview: desk.preview_card(session.agent),
            view,
            error,
        },
    )
}

/// Runs `f` on the agent page's login throttle.
fn with_throttle<R>(state: &WebState, f: impl FnOnce(&mut LoginThrottle) -> R) -> R {
    f(&mut state
        .agent_throttle
        .lock()
        .unwrap_or_else(|p| p.into_inner()))
}

#[derive(Deserialize)]
struct LoginQuery {
    ended: Option<String>,
}

async fn login_form(State(state): State<WebState>, Query(q): Query<LoginQuery>) -> Response {
    if state.agents.is_none() {
        return no_desk();
    }
    render(
        StatusCode::OK,
        &LoginPage {
            box_name: box_name(&state),
            error: None,
            notice: q
                .ended
                .map(|_| "You are logged out. Log in again to take calls.".to_string()),
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    login: String,
    password: String,
}

async fn login_submit(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let Some(desk) = state.agents.clone() else {
        return no_desk();
    };
    let now = UnixMillis::now();
    let source = peer.ip();
    let page = |code, error: String| {
        render(
            code,
            &LoginPage {
                box_name: box_name(&state),
                error: Some(error),
                notice: None,
            },
        )
    };
    let locked = with_throttle(&state, |t| t.check(now, source));
    if let Err(until) = locked {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed logins. Try again after {}.",
                super::status::utc_seconds(until)
            ),
        );
    }
    if f.login.trim().is_empty() || f.password.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            "Enter your login and your password.".into(),
        );
    }
    let agent = match roster::verify_login(desk.pool(), f.login.trim(), &f.password).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            with_throttle(&state, |t| t.record_failure(now, source));
            tracing::warn!(%source, "agent login failed");
            return page(StatusCode::UNAUTHORIZED, "Wrong login or password.".into());
        }
        Err(e) => return store_failure(e),
    };
    with_throttle(&state, |t| t.record_success(source));
    if let Err(e) = desk.log_in(agent).await {
        return page(refusal_status(&e), e.to_string());
    }
    match open_session(desk.pool(), now, agent).await {
        Ok(token) => {
            tracing::info!(%agent, %source, "agent logged in on the agent page");
            let cookie =
                format!("{AGENT_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/agent")).into_response()
        }
        Err(e) => store_failure(e),
    }
}

async fn desk_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match require_agent(&state, &headers).await {
        Ok((desk, token, session)) => desk_response(&state, &desk, &token, &session, None),
        Err(r) => r,
    }
}

async fn live_view(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let (desk, _, session) = match require_agent(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let changes = desk.changes();
    let agent = session.agent;
    let stream = futures_util::stream::unfold(
        (desk, changes, None::<AgentView>, true),
        move |(desk, mut changes, last, first)| async move {
            loop {
                if !first || last.is_some() {
                    // Wake on a change, or every 15 s to refresh the clock.
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(15), changes.changed())
                            .await;
                }
                let view = desk.view(agent)?;
                if last.as_ref() == Some(&view) && !first {
                    continue;
                }
                let event = Event::default()
                    .event("agent")
                    .json_data(LiveView {
                        now_ms: UnixMillis::now().0,
                        view: &view,
                    })
                    .unwrap_or_else(|_| Event::default().comment("unserialisable view"));
                return Some((
                    Ok::<_, Infallible>(event),
                    (desk, changes, Some(view), false),
                ));
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

#[derive(Deserialize)]
struct PauseForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct DispositionForm {
    csrf: String,
    #[serde(default)]
    code: String,
}

/// Runs an agent operation; success goes back to the desk page, a refusal shows it there.
async fn act(
    state: &WebState,
    headers: &HeaderMap,
    csrf: &str,
    op: impl AsyncFnOnce(&AgentDeskService, AgentId) -> Result<(), AgentsError>,
) -> Response {
    let (desk, token, session) = match require_agent_form(state, headers, csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match op(&desk, session.agent).await {
        Ok(()) => Redirect::to("/agent").into_response(),
        Err(e) => {
            tracing::info!(agent = %session.agent, error = %e, "agent request refused");
            desk_response(
                state,
                &desk,
                &token,
                &session,
                Some((refusal_status(&e), e.to_string())),
            )
        }
    }
}

async fn pause(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<PauseForm>,
) -> Response {
    let reason = f.reason;
    act(&state, &headers, &f.csrf, async |d, a| {
        d.pause(a, &reason).await
    })
    .await
}

async fn ready(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    act(&state, &headers, &f.csrf, async |d, a| d.ready(a).await).await
}

async fn disposition(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<DispositionForm>,
) -> Response {
    let code = f.code;
    act(&state, &headers, &f.csrf, async |d, a| {
        d.dispose(a, &code).await
    })
    .await
}

/// The agent ends the call it is talking on.
async fn hang_up(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    act(&state, &headers, &f.csrf, async |d, a| d.hang_up(a)).await
}

#[derive(Deserialize)]
struct PreviewForm {
    csrf: String,
    #[serde(default)]
    campaign: String,
}

/// Preview: the next contact of the chosen campaign goes on the agent's screen.
async fn preview_next(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<PreviewForm>,
) -> Response {
    let campaign = f.campaign.trim().parse::<u64>();
    act(&state, &headers, &f.csrf, async |d, a| {
        let campaign =
            campaign.map_err(|_| AgentsError::Preview("choose a preview campaign".into()))?;
        d.preview_next(a, callgate_common::ids::CampaignId(campaign))
            .await
    })
    .await
}

/// Preview: the agent dials the contact on its screen.
async fn preview_dial(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    act(&state, &headers, &f.csrf, async |d, a| {
        d.preview_dial(a).await
    })
    .await
}

async fn logout(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (desk, token, session) = match require_agent_form(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = desk
        .log_out(session.agent, "logged out on the agent page")
        .await
    {
        return desk_response(
            &state,
            &desk,
            &token,
            &session,
            Some((refusal_status(&e), e.to_string())),
        );
    }
    if let Err(e) = close_session(desk.pool(), &token).await {
        return store_failure(e);
    }
    tracing::info!(agent = %session.agent, "agent logged out on the agent page");
    ([clear_cookie()], Redirect::to("/agent/login")).into_response()
}

async fn agent_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        include_str!("static/agent.js"),
    )
        .into_response()
}
