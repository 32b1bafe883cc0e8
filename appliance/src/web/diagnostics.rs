//! The diagnostics page: a test call through one configured trunk, with the SIP ladder as it
//! happened (the same procedure as `callgate-appliance sip call`, on its own ephemeral
//! port, so it never disturbs the calls the engine carries).
//!
//! Must not: change the SIP configuration or touch calls in progress.

use super::pages::{render, require_form_session, require_session, Guarded, PageFrame};
use super::WebState;
use crate::sip::call::{self, TestCall, TestCallOutcome};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::time::Duration;

#[derive(Template)]
#[template(path = "diagnostics.html")]
struct DiagnosticsPage {
    page: PageFrame,
    csrf: String,
    /// Configured trunk names (empty: SIP is not configured).
    trunks: Vec<String>,
    /// The form's values, kept after a run or a refusal.
    trunk: String,
    to: String,
    ring_seconds: String,
    hold_seconds: String,
    /// The last run's result line and ladder.
    outcome: Option<String>,
    ladder: String,
}

fn page_for(state: &WebState, csrf: &str, frame: PageFrame) -> DiagnosticsPage {
    let trunks: Vec<String> = state
        .sip
        .as_ref()
        .map(|s| s.trunks.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default();
    DiagnosticsPage {
        page: frame,
        csrf: csrf.to_string(),
        trunk: trunks.first().cloned().unwrap_or_default(),
        trunks,
        to: String::new(),
        ring_seconds: "20".into(),
        hold_seconds: "2".into(),
        outcome: None,
        ladder: String::new(),
    }
}

/// `GET /diagnostics`.
pub(super) async fn diagnostics_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let frame = PageFrame::new(&state, Some(&session));
    Ok(render(
        StatusCode::OK,
        &page_for(&state, &session.csrf_token, frame),
    ))
}

/// The test-call form.
#[derive(Deserialize)]
pub(super) struct TestCallForm {
    csrf: String,
    trunk: String,
    to: String,
    ring_seconds: String,
    hold_seconds: String,
}

/// The test call the form asks for, or the message naming the field at fault.
fn parse_form(f: &TestCallForm, trunks: &[String]) -> Result<TestCall, String> {
    if !trunks.iter().any(|t| t == &f.trunk) {
        return Err(format!(
            "Trunk: no trunk named `{}` is configured.",
            f.trunk
        ));
    }
    let to = f.to.trim();
    let digits = to.strip_prefix('+').unwrap_or(to);
    if digits.is_empty() || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(
            "Number: digits only, optionally starting with +, at most 20 (e.g. +442079460958)."
                .into(),
        );
    }
    let seconds = |name: &str, value: &str, max: u64| -> Result<u64, String> {
        match value.trim().parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "{name}: a whole number of seconds from 0 to {max}."
            )),
        }
    };
    let ring = seconds("Ring timeout", &f.ring_seconds, 60)?;
    if ring == 0 {
        return Err("Ring timeout: at least 1 second.".into());
    }
    let hold = seconds("Hold", &f.hold_seconds, 30)?;
    Ok(TestCall {
        trunk: f.trunk.clone(),
        to: to.to_string(),
        ring_timeout: Duration::from_secs(ring),
        hold: Duration::from_secs(hold),
        trace: false,
    })
}

/// `POST /diagnostics/call`: places the test call and shows its ladder.
pub(super) async fn test_call_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<TestCallForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let mut page = page_for(
        &state,
        &session.csrf_token,
        PageFrame::new(&state, Some(&session)),
    );
    page.trunk = f.trunk.clone();
    page.to = f.to.trim().to_string();
    page.ring_seconds = f.ring_seconds.trim().to_string();
    page.hold_seconds = f.hold_seconds.trim().to_string();
    let Some(settings) = state.sip.as_ref() else {
        page.page = page
            .page
            .error("SIP is not configured on this box (no [sip] section).");
        return Err(render(StatusCode::BAD_REQUEST, &page));
    };
    let test = match parse_form(&f, &page.trunks) {
        Ok(t) => t,
        Err(message) => {
            page.page = page.page.error(message);
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    tracing::info!(user = %session.username, trunk = %test.trunk, "test call from the web UI");
    let mut ladder = String::new();
    let result = call::run(settings, &test, |line| ladder.push_str(line)).await;
    page.ladder = ladder;
    page.outcome = Some(match result {
        Ok(TestCallOutcome::Completed) => "Answered and completed.".into(),
        Ok(TestCallOutcome::Failed(status, reason)) => {
            format!("Not answered: {status} {reason}.")
        }
        Err(e) => format!("The test call could not run: {e}."),
    });
    Ok(render(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(trunk: &str, to: &str, ring: &str, hold: &str) -> TestCallForm {
        TestCallForm {
            csrf: String::new(),
            trunk: trunk.into(),
            to: to.into(),
            ring_seconds: ring.into(),
            hold_seconds: hold.into(),
        }
    }

    #[test]
    fn a_bad_test_call_form_is_refused_naming_the_field() {
        let trunks = vec!["carrier-a".to_string()];
        let err = |f: TestCallForm| parse_form(&f, &trunks).unwrap_err();
        assert!(err(form("carrier-b", "123", "20", "2")).starts_with("Trunk:"));
        assert!(err(form("carrier-a", "12a3", "20", "2")).starts_with("Number:"));
        assert!(err(form("carrier-a", "+", "20", "2")).starts_with("Number:"));
        assert!(err(form("carrier-a", "123", "0", "2")).starts_with("Ring timeout:"));
        assert!(err(form("carrier-a", "123", "61", "2")).starts_with("Ring timeout:"));
        assert!(err(form("carrier-a", "123", "20", "-1")).starts_with("Hold:"));
        let ok = parse_form(&form("carrier-a", " +4930555 ", "20", "0"), &trunks).unwrap();
        assert_eq!(ok.to, "+4930555");
        assert_eq!(ok.ring_timeout, Duration::from_secs(20));
        assert_eq!(ok.hold, Duration::ZERO);
    }
}
