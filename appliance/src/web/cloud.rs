//! The cloud page: the link to the coordinator as the box sees it (online or "offline since
//! …", the outbox, the identity), and enrollment by claim code for a box that has none.
//!
//! Enrollment calls the same procedure as `callgate-appliance enroll`
//! ([`crate::sync::enroll::enroll`]); on success the daemon restarts in place so the link
//! starts with the new identity. Must not: write identity files itself.

use super::pages::{render, require_form_session, require_session, Guarded, PageFrame};
use super::status::{describe_link, utc_seconds};
use super::WebState;
use crate::sync::enroll::{enroll, Enrollment};
use crate::sync::identity::IdentityDir;
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use callgate_common::time::UnixMillis;
use serde::Deserialize;

/// What the page shows about this box's identity.
struct IdentityView {
    appliance: String,
    broker: String,
    certificate_until: String,
}

#[derive(Template)]
#[template(path = "cloud.html")]
struct CloudPage {
    page: PageFrame,
    csrf: String,
    link: String,
    last_downlink: String,
    identity: Option<IdentityView>,
    /// The form's values, kept after a refusal (never the claim code).
    coordinator: String,
}

fn identity_view(identity: &IdentityDir) -> Option<IdentityView> {
    if !identity.is_enrolled() {
        return None;
    }
    let enrolled = Enrollment::load(identity);
    Some(IdentityView {
        appliance: enrolled
            .as_ref()
            .map(|e| e.appliance.clone())
            .unwrap_or_else(|| "(set by appliance.id)".into()),
        broker: enrolled
            .and_then(|e| e.broker)
            .unwrap_or_else(|| "(set by sync.broker)".into()),
        certificate_until: match identity.not_after() {
            Ok(secs) => utc_seconds(UnixMillis(secs.saturating_mul(1000))),
            Err(e) => format!("unreadable: {e}"),
        },
    })
}

fn cloud_page_for(state: &WebState, csrf: &str, frame: PageFrame) -> CloudPage {
    let now = UnixMillis::now();
    let status = state.status.link.current();
    CloudPage {
        page: frame,
        csrf: csrf.to_string(),
        link: describe_link(&status.state, now),
        last_downlink: status
            .last_downlink
            .map(utc_seconds)
            .unwrap_or_else(|| "never".into()),
        identity: identity_view(&IdentityDir::in_data_dir(&state.data_dir)),
        coordinator: String::new(),
    }
}

/// `GET /cloud`.
pub(super) async fn cloud_page(State(state): State<WebState>, headers: HeaderMap) -> Guarded {
    let (_, session) = require_session(&state, &headers).await?;
    let frame = PageFrame::new(&state, Some(&session));
    Ok(render(
        StatusCode::OK,
        &cloud_page_for(&state, &session.csrf_token, frame),
    ))
}

/// The enrollment form.
#[derive(Deserialize)]
pub(super) struct EnrollForm {
    csrf: String,
    coordinator: String,
    claim: String,
    #[serde(default)]
    ca_pem: String,
}

/// `POST /cloud/enroll`: enroll with a claim code, then restart to connect.
pub(super) async fn enroll_submit(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<EnrollForm>,
) -> Guarded {
    let (_, session) = require_form_session(&state, &headers, &f.csrf).await?;
    let refuse = |code: StatusCode, message: String| {
        let frame = PageFrame::new(&state, Some(&session)).error(message);
        let mut page = cloud_page_for(&state, &session.csrf_token, frame);
        page.coordinator = f.coordinator.trim().to_string();
        render(code, &page)
    };
    let coordinator = f.coordinator.trim();
    let claim = f.claim.trim();
    if coordinator.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Coordinator URL: required (e.g. https://hq.example.com:8443).".into(),
        ));
    }
    if claim.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Claim code: required (HQ gives it when it registers this box).".into(),
        ));
    }
    let ca_pem = f.ca_pem.trim();
    let ca_file = if ca_pem.is_empty() {
        None
    } else {
        if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Organisation CA: not a PEM certificate (it starts with -----BEGIN CERTIFICATE-----).".into(),
            ));
        }
        let path = state.data_dir.join("enroll-ca.pem");
        if let Err(e) = std::fs::write(&path, ca_pem) {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Could not store the CA for enrollment: {e}"),
            ));
        }
        Some(path)
    };
    let result = enroll(
        &state.data_dir,
        coordinator,
        claim,
        ca_file.as_deref(),
        None,
    )
    .await;
    if let Some(path) = &ca_file {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(enrolled) => {
            tracing::warn!(user = %session.username, appliance = %enrolled.appliance, "enrolled from the web UI");
            state.restart.request("enrolled from the web UI");
            let frame = PageFrame::new(&state, Some(&session)).notice(format!(
                "Enrolled as {}. The service restarts now and connects to the cloud; reload this page in a few seconds.",
                enrolled.appliance
            ));
            Ok(render(
                StatusCode::OK,
                &cloud_page_for(&state, &session.csrf_token, frame),
            ))
        }
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Enrollment refused: {e}"),
        )),
    }
}
