//! The logs page: the daemon's most recent log lines (kept in memory by
//! [`callgate_common::observe::recent_logs`]), filtered by a search term, and the same lines
//! as a plain-text download for a support ticket.
//!
//! Must not: read log files from disk or show anything but this process's own log.

use super::pages::{render, require_session, Guarded, PageFrame};
use super::WebState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use callgate_common::observe::recent_logs;
use serde::Deserialize;

/// Lines shown on the page at most.
pub const PAGE_LINES: usize = 500;

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    page: PageFrame,
    query: String,
    lines: Vec<String>,
    limit: usize,
}

/// `?q=` filters the lines.
#[derive(Deserialize, Default)]
pub(super) struct LogsQuery {
    #[serde(default)]
    q: String,
}

/// `GET /logs`.
pub(super) async fn logs_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(query): Query<LogsQuery>,
) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let needle = query.q.trim().to_string();
    let page = LogsPage {
        page: PageFrame::new(&state, Some(&session)),
        lines: recent_logs().tail(&needle, PAGE_LINES),
        query: needle,
        limit: PAGE_LINES,
    };
    Ok(render(StatusCode::OK, &page))
}

/// `GET /logs.txt`: every kept line that matches, as a download.
pub(super) async fn logs_download(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(query): Query<LogsQuery>,
) -> Guarded {
    require_session(&state, &headers).await?;
    let mut text = recent_logs()
        .tail(query.q.trim(), callgate_common::observe::RECENT_LOG_LINES)
        .join("\n");
    text.push('\n');
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"callgate-appliance.log\"",
            ),
        ],
        text,
    )
        .into_response())
}
