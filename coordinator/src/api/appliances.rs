//! `/api/v1/appliances`: list (with presence, firmware and last telemetry), get one,
//! register one (answered with its one-time claim code), revoke one, and read or set its
//! trunk limits (split into its pacing grants, `crate::leasing::limits`). The registry itself
//! is `crate::enroll::registry`; this file only shapes requests and answers.

use super::problem::ApiError;
use super::tokens::Caller;
use super::{parse_json, ApiState, PageQuery};
use crate::enroll::registry::{self, ApplianceView, CLAIM_TTL_MS};
use crate::enroll::EnrollError;
use crate::leasing::limits::{self, ApplianceLimits};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> Self {
        match e {
            EnrollError::UnknownAppliance(_) => ApiError::NotFound(e.to_string()),
            EnrollError::AlreadyEnrolled(_) | EnrollError::Revoked(_) => ApiError::Conflict {
                field: Some("name".into()),
                detail: e.to_string(),
            },
            EnrollError::BadName(err) => ApiError::invalid("name", err.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn name_of(p: Result<Path<String>, PathRejection>) -> Result<ApplianceId, ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request(Some("name"), e.body_text()))?;
    raw.parse::<ApplianceId>()
        .map_err(|e| ApiError::invalid("name", e.to_string()))
}

/// A page of appliances by name; `next_after` is the last name on it (pass it as `after`).
#[derive(Debug, Serialize)]
pub(super) struct AppliancePage {
    items: Vec<ApplianceView>,
    next_after: Option<String>,
}

/// `?after=NAME&limit=N`: appliances are keyed by name, so the cursor is a name.
#[derive(Debug, Deserialize)]
pub(super) struct AppliancePageQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

pub(super) async fn list_appliances(
    State(s): State<ApiState>,
    caller: Caller,
    q: Result<Query<AppliancePageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require("appliances:read")?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(Some("query"), e.body_text()))?;
    let limit = PageQuery::check_limit(q.limit)?;
    let items = registry::page(s.store.pool(), q.after.as_deref(), limit).await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.name.clone()))
        .flatten();
    Ok(Json(AppliancePage { items, next_after }).into_response())
}

pub(super) async fn get_appliance(
    State(s): State<ApiState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require("appliances:read")?;
    let name = name_of(p)?;
    match registry::view(s.store.pool(), name.as_str()).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no appliance `{name}` is registered"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAppliance {
    name: String,
    site: String,
}

/// A registered appliance and the claim code its installer types in (shown once).
#[derive(Serialize)]
pub(super) struct Registered {
    #[serde(flatten)]
    appliance: ApplianceView,
    claim_code: String,
    claim_expires_at: i64,
}

pub(super) async fn register_appliance(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("appliances:write")?;
    let req: NewAppliance = parse_json(&body)?;
    let name = req
        .name
        .parse::<ApplianceId>()
        .map_err(|e| ApiError::invalid("name", e.to_string()))?;
    if req.site.trim().is_empty() || req.site.len() > 200 {
        return Err(ApiError::invalid("site", "must be 1 to 200 characters"));
    }
    let now = UnixMillis::now();
    let code = registry::register(s.store.pool(), &name, &req.site, now).await?;
    let appliance = registry::view(s.store.pool(), name.as_str())
        .await?
        .ok_or_else(|| ApiError::Internal("registered appliance vanished".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            appliance,
            claim_code: code,
            claim_expires_at: now.0 + CLAIM_TTL_MS,
        }),
    )
        .into_response())
}

pub(super) async fn revoke_appliance(
    State(s): State<ApiState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require("appliances:write")?;
    let name = name_of(p)?;
    registry::revoke(s.store.pool(), &name).await?;
    tracing::info!(appliance = %name, "appliance revoked over the API");
    let v = registry::view(s.store.pool(), name.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no appliance `{name}` is registered")))?;
    Ok(Json(v).into_response())
}

/// An appliance's trunk limits and whether they are its own or the defaults.
#[derive(Serialize)]
pub(super) struct LimitsView {
    appliance: String,
    max_concurrent: u32,
    max_attempts_per_minute: u32,
    /// `false`: no limits were set; the `[sync.dialer]` defaults apply.
    custom: bool,
}

async fn limits_view(s: &ApiState, name: &ApplianceId) -> Result<LimitsView, ApiError> {
    if registry::view(s.store.pool(), name.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "no appliance `{name}` is registered"
        )));
    }
    let own = limits::get(&s.store, name.as_str()).await?;
    let defaults = crate::leasing::scheduler::DialerFeedConfig::default();
    let l = own.unwrap_or(ApplianceLimits {
        max_concurrent: defaults.grant_max_concurrent,
        max_attempts_per_minute: defaults.grant_max_attempts_per_minute,
    });
    Ok(LimitsView {
        appliance: name.to_string(),
        max_concurrent: l.max_concurrent,
        max_attempts_per_minute: l.max_attempts_per_minute,
        custom: own.is_some(),
    })
}

pub(super) async fn get_limits(
    State(s): State<ApiState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require("appliances:read")?;
    let name = name_of(p)?;
    Ok(Json(limits_view(&s, &name).await?).into_response())
}

pub(super) async fn set_limits(
    State(s): State<ApiState>,
    caller: Caller,
    p: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("appliances:write")?;
    let name = name_of(p)?;
    let req: ApplianceLimits = parse_json(&body)?;
    if let Some((field, reason)) = req.invalid_field() {
        return Err(ApiError::invalid(field, reason));
    }
    limits_view(&s, &name).await?;
    limits::set(&s.store, name.as_str(), req, UnixMillis::now()).await?;
    tracing::info!(appliance = %name, max_concurrent = req.max_concurrent, max_attempts_per_minute = req.max_attempts_per_minute, "appliance trunk limits set");
    Ok(Json(limits_view(&s, &name).await?).into_response())
}
