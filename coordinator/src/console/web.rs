//! What every console page shares: the routes, the session extractor ([`SignedIn`]) with its
//! role and CSRF checks, the page frame, rendering, the embedded static assets and the
//! security headers.

use super::audit::Actor;
use super::auth::{Permission, Role, Session};
use super::{ConsoleError, ConsoleState};
use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use callgate_common::time::UnixMillis;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cg_console";

/// A handler's outcome: `Err` carries the response that refuses or redirects.
pub type Page = Result<Response, Refusal>;

/// A response that refuses a request (boxed: handlers pass it up with `?`).
#[derive(Debug)]
pub struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(r: Response) -> Self {
        Refusal(Box::new(r))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The console's routes over `state`.
pub fn router(state: ConsoleState) -> Router {
    use super::{
        analytics, campaign_pages as cp, dnc_upload, fleet, live, pages, policy_pages as pp,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(live::dashboard))
        .route("/routing", get(pp::routing_page).post(pp::routing_save))
        .route("/routing/preview", post(pp::routing_preview))
        .route("/dnc", get(pp::dnc_page).post(pp::dnc_add))
        .route("/dnc/{id}/remove", post(pp::dnc_remove))
        .route(
            "/dnc/upload",
            post(dnc_upload::upload).layer(axum::extract::DefaultBodyLimit::max(
                dnc_upload::MAX_DNC_UPLOAD_BYTES + 64 * 1024,
            )),
        )
        .route("/profiles", get(pp::profiles_page).post(pp::profile_create))
        .route("/profiles/{id}", post(pp::profile_update))
        .route("/analytics", get(analytics::page))
        .route("/export/{table}", get(analytics::export))
        .route("/fleet", get(fleet::page).post(fleet::register))
        .route("/fleet/{name}/revoke", post(fleet::revoke))
        .route("/live", get(live::socket))
        .route("/login", get(pages::login_form).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route("/users", get(pages::users_page).post(pages::user_create))
        .route("/users/{id}", post(pages::user_update))
        .route("/audit", get(pages::audit_page))
        .route("/campaigns", get(cp::list).post(cp::create))
        .route("/campaigns/new", get(cp::new_form))
        .route("/campaigns/{id}", get(cp::detail).post(cp::edit))
        .route("/campaigns/{id}/action", post(cp::action))
        .route(
            "/lists",
            get(cp::lists)
                .post(cp::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    cp::MAX_UPLOAD_BYTES as usize + 64 * 1024,
                )),
        )
        .route("/imports/{id}", get(cp::import_page))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("strict-transport-security", "max-age=31536000"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/console/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/console/console.js"),
    )
        .into_response()
}

/// What every page's frame shows.
pub struct Frame {
    pub username: String,
    pub role: String,
    pub csrf: Option<String>,
    pub fingerprint: String,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub can_users: bool,
    pub can_audit: bool,
}

impl Frame {
    /// The frame of a page seen by nobody logged in (the login page).
    pub fn anonymous(state: &ConsoleState) -> Frame {
        Frame {
            username: String::new(),
            role: String::new(),
            csrf: None,
            fingerprint: state.fingerprint.clone(),
            error: None,
            notice: None,
            can_users: false,
            can_audit: false,
        }
    }
    /// With an error message.
    pub fn error(mut self, e: impl ToString) -> Self {
        self.error = Some(e.to_string());
        self
    }
    /// With a notice.
    pub fn notice(mut self, n: impl ToString) -> Self {
        self.notice = Some(n.to_string());
        self
    }
}

/// Renders `page` with `code`.
pub fn render(code: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (code, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a console page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage {
    page: Frame,
    title: String,
}

/// A page saying what went wrong, with `code`.
pub fn message(code: StatusCode, frame: Frame, title: &str, text: impl ToString) -> Response {
    render(
        code,
        &MessagePage {
            page: frame.error(text),
            title: title.to_string(),
        },
    )
}

/// Maps a store failure to a 503 page.
pub fn failure(frame: Frame, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console store failure");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        frame,
        "Unavailable",
        format!("the coordinator's store failed: {e}"),
    )
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

/// A request with a live session; every page but `/login` takes one.
pub struct SignedIn {
    /// The session's cookie value.
    pub token: String,
    /// The session.
    pub session: Session,
    /// For the frame.
    pub fingerprint: String,
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(Redirect::to("/login").into_response());
        };
        match state.sessions.lookup(UnixMillis::now(), &token).await {
            Ok(Some(session)) => Ok(SignedIn {
                token,
                session,
                fingerprint: state.fingerprint.clone(),
            }),
            Ok(None) => Err(Redirect::to("/login?expired=1").into_response()),
            Err(e) => Err(failure(Frame::anonymous(state), e)),
        }
    }
}

impl SignedIn {
    /// The user's role.
    pub fn role(&self) -> Role {
        self.session.user.role
    }

    /// Who is acting, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor(self.session.user.username.clone())
    }

    /// This user's page frame.
    pub fn frame(&self) -> Frame {
        Frame {
            username: self.session.user.username.clone(),
            role: self.role().label().to_string(),
            csrf: Some(self.session.csrf_token.clone()),
            fingerprint: self.fingerprint.clone(),
            error: None,
            notice: None,
            can_users: self.role().may(Permission::ManageUsers),
            can_audit: self.role().may(Permission::ReadAudit),
        }
    }

    /// Whether the user may do `p`.
    pub fn may(&self, p: Permission) -> bool {
        self.role().may(p)
    }

    /// `Err(403 page)` unless the user's role may do `p`.
    pub fn require(&self, p: Permission) -> Result<(), Refusal> {
        if self.may(p) {
            Ok(())
        } else {
            Err(message(
                StatusCode::FORBIDDEN,
                self.frame(),
                "Not allowed",
                format!("a {} may not do this", self.role().label()),
            )
            .into())
        }
    }

    /// `Err(403 page)` unless `p` is allowed and `csrf` is this session's token.
    pub fn require_form(&self, p: Permission, csrf: &str) -> Result<(), Refusal> {
        if !super::auth::constant_time_eq(csrf.as_bytes(), self.session.csrf_token.as_bytes()) {
            return Err(message(
                StatusCode::FORBIDDEN,
                self.frame(),
                "Form expired",
                "the form's security token does not match your session; reload the page and try again",
            )
            .into());
        }
        self.require(p)
    }
}

/// A submitted form as name/value pairs (repeated names kept, in order).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Whether a checkbox `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a millisecond timestamp.
pub fn when(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// A field error to show next to the field, or a page-wide one.
pub fn field_error(e: &ConsoleError) -> (String, String) {
    match e {
        ConsoleError::Invalid { field, reason } => (field.clone(), reason.clone()),
        other => (String::new(), other.to_string()),
    }
}
