//! The diagnostics page: a test call through one configured trunk, with the SIP ladder as it
//! happened (the same procedure as `callgate-appliance sip call`, on its own ephemeral
//! port, so it never disturbs the calls the engine carries), and a SIP trace switched on for
//! a few minutes: every SIP message the box sends or receives goes to the log (the Logs page
//! filters it by trunk address or Call-ID), then the configured log level comes back.
//!
//! Must not: change the SIP configuration or touch calls in progress.

use super::pages::{render, require_form_session, require_session, Guarded, PageFrame};
use super::WebState;
use crate::sip::call::{self, TestCall, TestCallOutcome};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use callgate_common::time::UnixMillis;
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
    /// `Some(until)` while the SIP trace is on.
    trace_until: Option<String>,
}

fn page_for(state: &WebState, csrf: &str, frame: PageFrame) -> DiagnosticsPage {
    let trunks: Vec<String> = state
        .sip_settings()
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
        trace_until: state.sip_trace.until().map(super::status::utc_seconds),
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
    let Some(settings) = state.sip_settings() else {
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
    let result = call::run(&settings, &test, |line| ladder.push_str(line)).await;
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

/// The log directives that make the SIP engine log every message.
pub const SIP_TRACE_DIRECTIVES: &str = "callgate_appliance::sip=trace,callgate_sip=trace";

/// Whether the SIP trace is on and until when; each switch-on gets a generation so that an
/// earlier timer does not switch a later trace off.
#[derive(Debug, Clone, Default)]
pub struct SipTraceSwitch {
    inner: std::sync::Arc<std::sync::Mutex<(u64, Option<UnixMillis>)>>,
}

impl SipTraceSwitch {
    /// When the running trace ends, if one runs.
    pub fn until(&self) -> Option<UnixMillis> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Records a trace running until `until`; returns its generation.
    fn start(&self, until: UnixMillis) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        g.1 = Some(until);
        g.0
    }

    /// Ends the trace of `generation` (any trace when `None`); whether one was ended.
    fn stop(&self, generation: Option<u64>) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if generation.is_some_and(|gen| gen != g.0) || g.1.is_none() {
            return false;
        }
        g.1 = None;
        true
    }
}

/// The SIP-trace form.
#[derive(Deserialize)]
pub(super) struct TraceForm {
    csrf: String,
    /// Minutes, 1 to 60; `0` switches it off now.
    minutes: String,
}

/// `POST /diagnostics/trace`: switches the SIP trace on for some minutes, or off.
pub(super) async fn trace_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<TraceForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let frame = PageFrame::new(&state, Some(&session));
    let minutes = match f.minutes.trim().parse::<u64>() {
        Ok(m) if m <= 60 => m,
        _ => {
            let page = page_for(
                &state,
                &session.csrf_token,
                frame.error("Trace minutes: a whole number from 0 (off) to 60."),
            );
            return Err(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    if minutes == 0 {
        if state.sip_trace.stop(None) {
            if let Err(e) = callgate_common::observe::reset_log_filter() {
                tracing::error!(error = %e, "could not restore the log filter");
            }
            tracing::warn!(user = %session.username, "SIP trace switched off");
        }
        let page = page_for(
            &state,
            &session.csrf_token,
            frame.notice("SIP trace is off."),
        );
        return Ok(render(StatusCode::OK, &page));
    }
    if let Err(e) = callgate_common::observe::extend_log_filter(SIP_TRACE_DIRECTIVES) {
        let page = page_for(
            &state,
            &session.csrf_token,
            frame.error(format!("Could not switch the trace on: {e}")),
        );
        return Err(render(StatusCode::INTERNAL_SERVER_ERROR, &page));
    }
    let until = UnixMillis::now().plus_millis(i64::try_from(minutes * 60_000).unwrap_or(i64::MAX));
    let generation = state.sip_trace.start(until);
    tracing::warn!(user = %session.username, minutes, "SIP trace switched on");
    let switch = state.sip_trace.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
        if switch.stop(Some(generation)) {
            if let Err(e) = callgate_common::observe::reset_log_filter() {
                tracing::error!(error = %e, "could not restore the log filter");
            }
            tracing::warn!("SIP trace ended");
        }
    });
    let page = page_for(
        &state,
        &session.csrf_token,
        frame.notice(format!(
            "SIP trace is on for {minutes} minute(s): every SIP message goes to the log."
        )),
    );
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
    fn an_old_timer_does_not_end_a_newer_trace() {
        let switch = SipTraceSwitch::default();
        let first = switch.start(UnixMillis(1_000));
        let second = switch.start(UnixMillis(2_000));
        assert!(
            !switch.stop(Some(first)),
            "the first trace's timer is stale"
        );
        assert_eq!(switch.until(), Some(UnixMillis(2_000)));
        assert!(switch.stop(Some(second)));
        assert_eq!(switch.until(), None);
        assert!(!switch.stop(None), "nothing left to stop");
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
