//! Login, logout, user management and the audit-log page.

use super::audit::{self, AuditEntry, AuditFilter};
use super::auth::{self, Permission, Role, User};
use super::web::{
    failure, field_error, render, when, Fields, Frame, Page, SignedIn, SESSION_COOKIE,
};
use super::ConsoleState;
use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use callgate_common::time::UnixMillis;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    page: Frame,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

pub async fn login_form(
    State(state): State<ConsoleState>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let mut frame = Frame::anonymous(&state);
    if q.expired.is_some() {
        frame = frame.notice("Your session ended; log in again.");
    }
    render(StatusCode::OK, &LoginPage { page: frame })
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

pub async fn login_submit(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let now = UnixMillis::now();
    let locked =
        state
            .throttle
            .lock()
            .expect("throttle lock")
            .check(now, peer.ip(), &form.username);
    if let Err(until) = locked {
        let mins = ((until.0 - now.0) / 60_000).max(1);
        return render(
            StatusCode::TOO_MANY_REQUESTS,
            &LoginPage {
                page: Frame::anonymous(&state)
                    .error(format!("Too many failed logins; try again in {mins} min.")),
            },
        );
    }
    match auth::verify_login(&state.store, &form.username, &form.password).await {
        Ok(Some(user)) => {
            state
                .throttle
                .lock()
                .expect("throttle lock")
                .record_success(peer.ip(), &form.username);
            match state.sessions.open(now, &user).await {
                Ok(token) => (
                    [(
                        header::SET_COOKIE,
                        format!(
                            "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
                        ),
                    )],
                    Redirect::to("/dashboard"),
                )
                    .into_response(),
                Err(e) => failure(Frame::anonymous(&state), e),
            }
        }
        Ok(None) => {
            state
                .throttle
                .lock()
                .expect("throttle lock")
                .record_failure(now, peer.ip(), &form.username);
            render(
                StatusCode::UNAUTHORIZED,
                &LoginPage {
                    page: Frame::anonymous(&state).error("Wrong username or password."),
                },
            )
        }
        Err(e) => failure(Frame::anonymous(&state), e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<CsrfForm>,
) -> Page {
    me.require_form(Permission::View, &f.csrf)?;
    state
        .sessions
        .close(&me.token)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    Ok((
        [(
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/login"),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    page: Frame,
    users: Vec<User>,
    roles: Vec<(&'static str, &'static str)>,
    csrf: String,
    field: String,
}

async fn users_response(
    state: &ConsoleState,
    me: &SignedIn,
    frame: Frame,
    code: StatusCode,
    field: String,
) -> Page {
    let users = auth::users(&state.store)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    Ok(render(
        code,
        &UsersPage {
            page: frame,
            users,
            roles: Role::ALL.iter().map(|r| (r.as_str(), r.label())).collect(),
            csrf: me.session.csrf_token.clone(),
            field,
        },
    ))
}

pub async fn users_page(State(state): State<ConsoleState>, me: SignedIn) -> Page {
    me.require(Permission::ManageUsers)?;
    users_response(&state, &me, me.frame(), StatusCode::OK, String::new()).await
}

pub async fn user_create(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::ManageUsers, f.get("csrf"))?;
    let role = Role::parse(f.get("role"));
    let result = match role {
        None => Err(super::ConsoleError::invalid("role", "choose a role")),
        Some(role) => {
            auth::create_user(
                &state.store,
                &me.actor(),
                f.get("username"),
                role,
                f.get("password"),
            )
            .await
        }
    };
    match result {
        Ok(u) => {
            let frame = me.frame().notice(format!("User {} created.", u.username));
            users_response(&state, &me, frame, StatusCode::OK, String::new()).await
        }
        Err(e @ super::ConsoleError::Db(_)) => Err(failure(me.frame(), e).into()),
        Err(e) => {
            let (field, reason) = field_error(&e);
            let frame = me.frame().error(format!("{field}: {reason}"));
            users_response(&state, &me, frame, StatusCode::BAD_REQUEST, field).await
        }
    }
}

pub async fn user_update(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Page {
    me.require_form(Permission::ManageUsers, f.get("csrf"))?;
    let Some(role) = Role::parse(f.get("role")) else {
        let frame = me.frame().error("role: choose a role");
        return users_response(&state, &me, frame, StatusCode::BAD_REQUEST, "role".into()).await;
    };
    let password = Some(f.get("password")).filter(|p| !p.is_empty());
    match auth::update_user(
        &state.store,
        &me.actor(),
        id,
        role,
        f.checked("enabled"),
        password,
    )
    .await
    {
        Ok(u) => {
            let frame = me.frame().notice(format!("User {} updated.", u.username));
            users_response(&state, &me, frame, StatusCode::OK, String::new()).await
        }
        Err(e @ super::ConsoleError::Db(_)) => Err(failure(me.frame(), e).into()),
        Err(e) => {
            let (field, reason) = field_error(&e);
            let frame = me.frame().error(format!("{field}: {reason}"));
            users_response(&state, &me, frame, StatusCode::BAD_REQUEST, field).await
        }
    }
}

/// One audit row as shown.
struct AuditRow {
    entry: AuditEntry,
    when: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    page: Frame,
    rows: Vec<AuditRow>,
    actor: String,
    action: String,
    next: Option<i64>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    before: Option<i64>,
}

/// Rows per audit page.
const AUDIT_PAGE: i64 = 100;

pub async fn audit_page(
    State(state): State<ConsoleState>,
    me: SignedIn,
    Query(q): Query<AuditQuery>,
) -> Page {
    me.require(Permission::ReadAudit)?;
    let filter = AuditFilter {
        actor: q.actor.clone().filter(|s| !s.is_empty()),
        action: q.action.clone().filter(|s| !s.is_empty()),
    };
    let entries = audit::page(&state.store, &filter, q.before, AUDIT_PAGE)
        .await
        .map_err(|e| failure(me.frame(), e))?;
    let next = (entries.len() as i64 == AUDIT_PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            page: me.frame(),
            rows: entries
                .into_iter()
                .map(|entry| AuditRow {
                    when: when(entry.at),
                    entry,
                })
                .collect(),
            actor: q.actor.unwrap_or_default(),
            action: q.action.unwrap_or_default(),
            next,
        },
    ))
}
