//! The operations: each parses its input, checks the caller's scope, calls one domain
//! room, and shapes the answer.

use super::problem::ApiError;
use super::tokens::Caller;
use super::{parse_json, path_id, ApiState, Page, PageQuery};
use crate::campaigns::{self, CampaignAction, CampaignSpec};
use crate::compliance::{self, NewDnc};
use crate::contacts::{self, import, ContactListId};
use crate::leasing;
use crate::{agents, call_tasks, routing};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use callgate_common::compliance::ComplianceProfile;
use callgate_common::ids::{AttemptId, CampaignId, ContactId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AttemptResult, CallOutcome};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

type PathArg = Result<Path<String>, PathRejection>;
type PageArg = Result<Query<PageQuery>, QueryRejection>;

fn id_of(p: PathArg, name: &str) -> Result<i64, ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request(Some(name), e.body_text()))?;
    path_id(&raw, name)
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

// ---- contact lists and contacts

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewList {
    name: String,
    default_region: String,
}

pub(super) async fn create_list(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("contacts:write")?;
    let req: NewList = parse_json(&body)?;
    if req.name.trim().is_empty() || req.name.len() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    Ok(created(
        contacts::create_list(&s.store, &req.name, &req.default_region).await?,
    ))
}

pub(super) async fn list_lists(
    State(s): State<ApiState>,
    caller: Caller,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("contacts:read")?;
    let (after, limit) = PageQuery::parse(q)?;
    let items = contacts::page_lists(&s.store, after, limit).await?;
    Ok(Json(Page::of(items, limit, |l| l.id)).into_response())
}

pub(super) async fn get_list(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("contacts:read")?;
    let id = id_of(p, "id")?;
    Ok(Json(contacts::get_list(&s.store, id).await?).into_response())
}

pub(super) async fn list_contacts(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("contacts:read")?;
    let id = id_of(p, "id")?;
    let (after, limit) = PageQuery::parse(q)?;
    let reveal = caller.may("contacts:reveal");
    let items = contacts::page_contacts(&s.store, &s.vault, id, after, limit, reveal).await?;
    Ok(Json(Page::of(items, limit, |c| c.id)).into_response())
}

pub(super) async fn get_contact(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("contacts:read")?;
    let id = id_of(p, "id")?;
    let reveal = caller.may("contacts:reveal");
    Ok(Json(contacts::get_contact(&s.store, &s.vault, id, reveal).await?).into_response())
}

/// Largest CSV body the API accepts (the command-line import has no limit).
pub(super) const MAX_UPLOAD_BYTES: u64 = 2 << 30;

/// Streams a request body to a new file under the upload directory (constant memory,
/// at most [`MAX_UPLOAD_BYTES`]); answers the file and its size.
async fn save_upload(s: &ApiState, mut body: Body) -> Result<(std::path::PathBuf, u64), ApiError> {
    let path = s
        .upload_dir
        .join(format!("import-{}.csv", uuid::Uuid::new_v4()));
    let io = |e: std::io::Error| ApiError::Internal(format!("upload file: {e}"));
    let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&path).await;
                return Err(ApiError::bad_request(Some("body"), e.to_string()));
            }
        };
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
            if total > MAX_UPLOAD_BYTES {
                drop(file);
                let _ = tokio::fs::remove_file(&path).await;
                return Err(ApiError::TooLarge(format!(
                    "a CSV upload may be at most {} MiB; split the file or use \
                     `callgate-coordinator import-contacts`",
                    MAX_UPLOAD_BYTES >> 20
                )));
            }
            file.write_all(data).await.map_err(io)?;
        }
    }
    file.flush().await.map_err(io)?;
    Ok((path, total))
}

/// Query of `POST /api/v1/dnc/import`: what applies to rows that do not say otherwise.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DncImportQuery {
    default_region: Option<String>,
    campaign_id: Option<i64>,
    expires_at: Option<i64>,
    reason: Option<String>,
}

/// Bulk do-not-call import: the CSV body is streamed to a file, then read a row at a time;
/// answers the rows stored and every refused row's line and reason.
pub(super) async fn import_dnc(
    State(s): State<ApiState>,
    caller: Caller,
    q: Result<axum::extract::Query<DncImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require("compliance:write")?;
    let axum::extract::Query(q) = q.map_err(|e| ApiError::bad_request(None, e.body_text()))?;
    let (path, _) = save_upload(&s, body).await?;
    let file = std::fs::File::open(&path);
    let _ = std::fs::remove_file(&path);
    let file = file.map_err(|e| ApiError::Internal(format!("upload file: {e}")))?;
    let report = crate::compliance::dnc_csv::import_dnc_csv(
        &s.store,
        &s.vault,
        std::io::BufReader::new(file),
        crate::compliance::dnc_csv::DncDefaults {
            default_region: q.default_region.map(|r| r.to_ascii_uppercase()),
            campaign_id: q.campaign_id,
            expires_at: q.expires_at,
            reason: q.reason.unwrap_or_default(),
        },
    )
    .await?;
    Ok(Json(report).into_response())
}

/// Streams the CSV body to a file (constant memory), then imports it in the background;
/// answers 202 with the import's id at once. Progress at `GET /api/v1/imports/{id}`.
pub(super) async fn start_import(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require("contacts:write")?;
    let list = ContactListId(id_of(p, "id")?);
    contacts::get_list(&s.store, list.0).await?;
    let (path, total) = save_upload(&s, body).await?;
    let import_id = import::begin_import(&s.store, list, Some(total)).await?;
    let state = s.clone();
    tokio::spawn(async move {
        let result = match std::fs::File::open(&path) {
            Ok(f) => import::run_import(
                &state.store,
                &state.vault,
                list,
                import_id,
                std::io::BufReader::new(f),
                Some(total),
                |_| {},
            )
            .await
            .map(|_| ()),
            Err(e) => Err(contacts::ContactError::BadCsv(e.to_string())),
        };
        if let Err(e) = result {
            tracing::warn!(import_id, error = %e, "contact import failed");
        }
        let _ = std::fs::remove_file(&path);
    });
    let status = contacts::import_status(&s.store, import_id)
        .await?
        .ok_or_else(|| ApiError::Internal("import vanished".into()))?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

pub(super) async fn get_import(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("contacts:read")?;
    let id = id_of(p, "id")?;
    match contacts::import_status(&s.store, id).await? {
        Some(st) => Ok(Json(st).into_response()),
        None => Err(ApiError::NotFound(format!("import {id} does not exist"))),
    }
}

// ---- compliance

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewProfile {
    name: String,
    #[serde(flatten)]
    profile: ComplianceProfile,
}

pub(super) async fn create_profile(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("compliance:write")?;
    let req: NewProfile = parse_json(&body)?;
    Ok(created(
        compliance::create_profile(&s.store, &req.name, req.profile).await?,
    ))
}

pub(super) async fn list_profiles(
    State(s): State<ApiState>,
    caller: Caller,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("compliance:read")?;
    let (after, limit) = PageQuery::parse(q)?;
    let items = compliance::page_profiles(&s.store, after, limit).await?;
    Ok(Json(Page::of(items, limit, |p| p.id)).into_response())
}

pub(super) async fn get_profile(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("compliance:read")?;
    let id = id_of(p, "id")?;
    Ok(Json(compliance::get_profile(&s.store, id).await?).into_response())
}

pub(super) async fn add_dnc(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("compliance:write")?;
    let entries: Vec<NewDnc> = parse_json(&body)?;
    if entries.is_empty() || entries.len() > 10_000 {
        return Err(ApiError::invalid("body", "send 1 to 10000 entries"));
    }
    let items = compliance::add_dnc(&s.store, &s.vault, &entries).await?;
    Ok(created(serde_json::json!({ "items": items })))
}

pub(super) async fn list_dnc(
    State(s): State<ApiState>,
    caller: Caller,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("compliance:read")?;
    let (after, limit) = PageQuery::parse(q)?;
    let items = compliance::page_dnc(&s.store, after, limit).await?;
    Ok(Json(Page::of(items, limit, |d| d.id)).into_response())
}

pub(super) async fn remove_dnc(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("compliance:write")?;
    let id = id_of(p, "id")?;
    if !compliance::remove_dnc(&s.store, id).await? {
        return Err(ApiError::NotFound(format!(
            "do-not-call entry {id} does not exist"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- campaigns

pub(super) async fn create_campaign(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("campaigns:write")?;
    let spec: CampaignSpec = parse_json(&body)?;
    Ok(created(campaigns::create(&s.store, spec).await?))
}

pub(super) async fn list_campaigns(
    State(s): State<ApiState>,
    caller: Caller,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("campaigns:read")?;
    let (after, limit) = PageQuery::parse(q)?;
    let items = campaigns::page(&s.store, after, limit).await?;
    Ok(Json(Page::of(items, limit, |c| c.id)).into_response())
}

pub(super) async fn get_campaign(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("campaigns:read")?;
    let id = id_of(p, "id")?;
    Ok(Json(campaigns::get(&s.store, id).await?).into_response())
}

pub(super) async fn edit_campaign(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("campaigns:write")?;
    let id = id_of(p, "id")?;
    let spec: CampaignSpec = parse_json(&body)?;
    Ok(Json(campaigns::edit(&s.store, id, spec).await?).into_response())
}

pub(super) async fn campaign_action(
    State(s): State<ApiState>,
    caller: Caller,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require("campaigns:write")?;
    let Path((raw, action)) = p.map_err(|e| ApiError::bad_request(Some("id"), e.body_text()))?;
    let id = path_id(&raw, "id")?;
    let action: CampaignAction = action.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "no campaign action {action:?}; use schedule, pause, resume, stop or archive"
        ))
    })?;
    Ok(Json(campaigns::apply(&s.store, id, action).await?).into_response())
}

// ---- dialer: leases, grants, attempt results

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LeaseRequest {
    appliance: String,
    max_contacts: u32,
    #[serde(default = "default_ttl")]
    ttl_seconds: u32,
}

fn default_ttl() -> u32 {
    900
}

pub(super) async fn lease(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("dialer")?;
    let id = id_of(p, "id")?;
    let req: LeaseRequest = parse_json(&body)?;
    if req
        .appliance
        .parse::<callgate_common::ids::ApplianceId>()
        .is_err()
    {
        return Err(ApiError::invalid(
            "appliance",
            "must be an appliance id (a-z, 0-9, inner -)",
        ));
    }
    let lease = leasing::lease_contacts(
        &s.store,
        &s.vault,
        id,
        &req.appliance,
        req.max_contacts,
        i64::from(req.ttl_seconds) * 1000,
        UnixMillis::now(),
    )
    .await?;
    Ok(created(lease))
}

pub(super) async fn return_lease(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("dialer")?;
    let id = id_of(p, "id")?;
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM contact_leases WHERE id = $1")
        .bind(id)
        .fetch_optional(s.store.pool())
        .await?;
    if found.is_none() {
        return Err(ApiError::NotFound(format!("lease {id} does not exist")));
    }
    leasing::return_lease(&s.store, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantQuery {
    appliance: String,
    #[serde(default = "default_concurrent")]
    max_concurrent: u32,
    #[serde(default = "default_per_minute")]
    max_attempts_per_minute: u32,
}

fn default_concurrent() -> u32 {
    10
}
fn default_per_minute() -> u32 {
    60
}

pub(super) async fn grant(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    q: Result<Query<GrantQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require("dialer")?;
    let id = id_of(p, "id")?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(Some("query"), e.body_text()))?;
    if q.max_concurrent > 10_000 || q.max_attempts_per_minute > 100_000 {
        return Err(ApiError::invalid(
            "max_concurrent",
            "at most 10000 concurrent and 100000 per minute",
        ));
    }
    let g = leasing::pacing_grant(
        &s.store,
        id,
        &q.appliance,
        q.max_concurrent,
        q.max_attempts_per_minute,
        60_000,
        UnixMillis::now(),
    )
    .await?;
    Ok(Json(g).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum OutcomeIn {
    AnsweredHuman,
    AnsweredMachine,
    Busy,
    NoAnswer,
    Rejected,
    Failed,
    Abandoned,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttemptIn {
    appliance: String,
    attempt_id: uuid::Uuid,
    campaign_id: i64,
    contact_id: i64,
    lease_id: i64,
    outcome: OutcomeIn,
    started_at: i64,
    ended_at: i64,
    #[serde(default)]
    sip_status: Option<u16>,
}

pub(super) async fn attempt_result(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("dialer")?;
    let a: AttemptIn = parse_json(&body)?;
    for (field, v) in [
        ("campaign_id", a.campaign_id),
        ("contact_id", a.contact_id),
        ("lease_id", a.lease_id),
    ] {
        if v <= 0 {
            return Err(ApiError::invalid(field, "must be a positive id"));
        }
    }
    if a.ended_at < a.started_at || a.started_at < 0 {
        return Err(ApiError::invalid(
            "ended_at",
            "must not be before started_at (both Unix ms, not negative)",
        ));
    }
    let r = AttemptResult {
        attempt: AttemptId(a.attempt_id),
        call: None,
        campaign: CampaignId(a.campaign_id as u64),
        contact: ContactId(a.contact_id as u64),
        lease: LeaseId(a.lease_id as u64),
        trunk: None,
        started_at: UnixMillis(a.started_at),
        ended_at: UnixMillis(a.ended_at),
        outcome: match a.outcome {
            OutcomeIn::AnsweredHuman => CallOutcome::AnsweredHuman,
            OutcomeIn::AnsweredMachine => CallOutcome::AnsweredMachine,
            OutcomeIn::Busy => CallOutcome::Busy,
            OutcomeIn::NoAnswer => CallOutcome::NoAnswer,
            OutcomeIn::Rejected => CallOutcome::Rejected,
            OutcomeIn::Failed => CallOutcome::Failed,
            OutcomeIn::Abandoned => CallOutcome::Abandoned,
        },
        sip_status: a.sip_status,
        post_dial_delay_ms: None,
    };
    Ok(Json(leasing::record_attempt(&s.store, &a.appliance, &r).await?).into_response())
}

// ---- agents and groups

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

pub(super) async fn create_group(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("agents:write")?;
    let g: NewGroup = parse_json(&body)?;
    Ok(created(
        agents::create_group(&s.store, &g.name, &g.description).await?,
    ))
}

pub(super) async fn list_groups(
    State(s): State<ApiState>,
    caller: Caller,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("agents:read")?;
    let (after, limit) = PageQuery::parse(q)?;
    let items = agents::page_groups(&s.store, after, limit).await?;
    Ok(Json(Page::of(items, limit, |g| g.id)).into_response())
}

pub(super) async fn create_agent(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("agents:write")?;
    let a: agents::NewAgent = parse_json(&body)?;
    Ok(created(agents::create_agent(&s.store, a).await?))
}

pub(super) async fn list_agents(
    State(s): State<ApiState>,
    caller: Caller,
    q: PageArg,
) -> Result<Response, ApiError> {
    caller.require("agents:read")?;
    let (after, limit) = PageQuery::parse(q)?;
    let items = agents::page_agents(&s.store, after, limit).await?;
    Ok(Json(Page::of(items, limit, |a| a.id)).into_response())
}

pub(super) async fn get_agent(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("agents:read")?;
    let id = id_of(p, "id")?;
    Ok(Json(agents::get_agent(&s.store, id).await?).into_response())
}

pub(super) async fn update_agent(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("agents:write")?;
    let id = id_of(p, "id")?;
    let patch: agents::AgentPatch = parse_json(&body)?;
    Ok(Json(agents::update_agent(&s.store, id, patch).await?).into_response())
}

// ---- routing policy

pub(super) async fn get_routing(
    State(s): State<ApiState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require("routing:read")?;
    Ok(Json(routing::current(&s.store).await?).into_response())
}

pub(super) async fn put_routing(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("routing:write")?;
    let policy: routing::RoutingPolicy = parse_json(&body)?;
    Ok(Json(routing::save(&s.store, policy).await?).into_response())
}

// ---- call tasks

pub(super) async fn create_call_task(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("call-tasks:write")?;
    let t: call_tasks::NewCallTask = parse_json(&body)?;
    Ok(created(call_tasks::create(&s.store, t).await?))
}

pub(super) async fn get_call_task(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
) -> Result<Response, ApiError> {
    caller.require("call-tasks:read")?;
    let id = id_of(p, "id")?;
    Ok(Json(call_tasks::get(&s.store, id).await?).into_response())
}

pub(super) async fn call_task_result(
    State(s): State<ApiState>,
    caller: Caller,
    p: PathArg,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("dialer")?;
    let id = id_of(p, "id")?;
    let r: call_tasks::TaskResult = parse_json(&body)?;
    Ok(Json(call_tasks::record_result(&s.store, id, r).await?).into_response())
}
