//! The REST API under `/api`: JSON in and out, bearer tokens with scopes ([`tokens`]),
//! cursor pagination (`?after=<id>&limit=<n>`, answered with `items` and `next_after`),
//! errors as `application/problem+json` naming the field at fault ([`problem`]), and the
//! OpenAPI document at `/api/openapi.json` ([`openapi`]).
//!
//! Owns HTTP concerns only: parsing, authorisation, status codes. Business rules live in
//! the domain rooms ([`crate::contacts`], [`crate::campaigns`], [`crate::compliance`],
//! [`crate::leasing`]); this room must not query tables those rooms own.

mod appliances;
mod handlers;
pub mod openapi;
pub mod problem;
pub mod tokens;

use crate::contacts::vault::NumberVault;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use problem::ApiError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokens::Caller;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub vault: NumberVault,
    /// Where uploaded CSV files wait while they import.
    pub upload_dir: PathBuf,
}

impl ApiState {
    /// State over `store`, with the number key file and uploads under `data_dir`. The
    /// call-task webhook worker ([`crate::call_tasks::run_deliveries`]) is the server's to
    /// start and stop, so that it ends before the database closes.
    pub async fn open(store: Store, data_dir: &std::path::Path) -> Result<ApiState, ApiSetupError> {
        let vault = NumberVault::open_or_create(&data_dir.join("contact-numbers.key"))?;
        crate::compliance::ensure_builtin_profiles(&store).await?;
        let upload_dir = data_dir.join("uploads");
        std::fs::create_dir_all(&upload_dir).map_err(|source| ApiSetupError::Uploads {
            path: upload_dir.clone(),
            source,
        })?;
        Ok(ApiState {
            store,
            vault,
            upload_dir,
        })
    }
}

/// Why the API could not be set up at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiSetupError {
    /// The number key file is unusable.
    #[error(transparent)]
    Vault(#[from] crate::contacts::vault::VaultError),
    /// The built-in compliance profiles could not be stored.
    #[error(transparent)]
    Policy(#[from] crate::compliance::PolicyError),
    /// The upload directory could not be created.
    #[error("cannot create upload directory {path}: {source}")]
    Uploads {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The API's routes, to be merged into the server's router.
pub fn router(state: ApiState) -> Router {
    use handlers::*;
    Router::new()
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/v1/contact-lists", get(list_lists).post(create_list))
        .route("/api/v1/contact-lists/{id}", get(get_list))
        .route("/api/v1/contact-lists/{id}/contacts", get(list_contacts))
        .route("/api/v1/contact-lists/{id}/imports", post(start_import))
        .route("/api/v1/imports/{id}", get(get_import))
        .route("/api/v1/contacts/{id}", get(get_contact))
        .route(
            "/api/v1/compliance-profiles",
            get(list_profiles).post(create_profile),
        )
        .route("/api/v1/compliance-profiles/{id}", get(get_profile))
        .route("/api/v1/dnc", get(list_dnc).post(add_dnc))
        .route("/api/v1/dnc/{id}", axum::routing::delete(remove_dnc))
        .route("/api/v1/dnc/import", post(import_dnc))
        .route(
            "/api/v1/appliances",
            get(appliances::list_appliances).post(appliances::register_appliance),
        )
        .route("/api/v1/appliances/{name}", get(appliances::get_appliance))
        .route(
            "/api/v1/appliances/{name}/limits",
            get(appliances::get_limits).put(appliances::set_limits),
        )
        .route(
            "/api/v1/appliances/{name}/revoke",
            post(appliances::revoke_appliance),
        )
        .route(
            "/api/v1/campaigns",
            get(list_campaigns).post(create_campaign),
        )
        .route(
            "/api/v1/campaigns/{id}",
            get(get_campaign).put(edit_campaign),
        )
        .route(
            "/api/v1/campaigns/{id}/actions/{action}",
            post(campaign_action),
        )
        .route("/api/v1/campaigns/{id}/leases", post(lease))
        .route("/api/v1/campaigns/{id}/grant", get(grant))
        .route("/api/v1/leases/{id}/return", post(return_lease))
        .route("/api/v1/attempt-results", post(attempt_result))
        .route("/api/v1/agent-groups", get(list_groups).post(create_group))
        .route("/api/v1/agents", get(list_agents).post(create_agent))
        .route("/api/v1/agents/{id}", get(get_agent).patch(update_agent))
        .route("/api/v1/routing-policy", get(get_routing).put(put_routing))
        .route("/api/v1/call-tasks", post(create_call_task))
        .route("/api/v1/call-tasks/{id}", get(get_call_task))
        .route("/api/v1/call-tasks/{id}/result", post(call_task_result))
        .with_state(state)
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthenticated)?;
        tokens::authenticate(&state.store, token)
            .await?
            .ok_or(ApiError::Unauthenticated)
    }
}

/// Cursor pagination parameters.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    pub after: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Largest page.
pub const MAX_PAGE: i64 = 500;

impl PageQuery {
    fn parse(
        q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<(i64, i64), ApiError> {
        let Query(q) = q.map_err(|e| ApiError::bad_request(Some("query"), e.body_text()))?;
        let limit = PageQuery::check_limit(q.limit)?;
        Ok((q.after.unwrap_or(0).max(0), limit))
    }

    /// The page size asked for (default 50), refused outside 1 to [`MAX_PAGE`].
    fn check_limit(limit: Option<i64>) -> Result<i64, ApiError> {
        let limit = limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be 1 to {MAX_PAGE}"),
            ));
        }
        Ok(limit)
    }
}

/// A page of items and the cursor for the next one.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `null` when this was the last.
    pub next_after: Option<i64>,
}

impl<T> Page<T> {
    fn of(items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
        let next_after = (items.len() as i64 == limit)
            .then(|| items.last().map(&id))
            .flatten();
        Page { items, next_after }
    }
}

/// Parses a JSON body, naming the field at fault on error; strings with NUL characters
/// are refused (PostgreSQL cannot store them).
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(Some("body"), format!("body is not JSON: {e}")))?;
    if let Some(path) = nul_path(&value, String::new()) {
        return Err(ApiError::invalid(path, "must not contain NUL characters"));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "body".to_string(),
            (p, Some(name)) => format!("{p}.{name}"),
            (p, None) => p.to_string(),
        };
        ApiError::invalid(field, inner)
    })
}

fn nul_path(v: &serde_json::Value, at: String) -> Option<String> {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x, format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                return Some(if at.is_empty() {
                    "body".into()
                } else {
                    at.clone()
                });
            }
            let p = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            nul_path(x, p)
        }),
        _ => None,
    }
}

/// Parses a path id.
fn path_id(raw: &str, name: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(Some(name), format!("{name} must be a positive integer"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Vec<Inner>,
    }

    fn field(body: &str) -> String {
        match parse_json::<Outer>(&Bytes::from(body.to_string())) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_nested_field_at_fault() {
        assert_eq!(
            field(r#"{"name":"a","inner":[{"count":1},{"count":-1}]}"#),
            "inner[1].count"
        );
        assert_eq!(field(r#"{"name":7,"inner":[]}"#), "name");
        assert_eq!(field(r#"{"name":"a\u0000b","inner":[]}"#), "name");
        assert_eq!(field(r#"{"inner":[]}"#), "name");
        assert_eq!(field(r#"{"name":"a","inner":[{}]}"#), "inner[0].count");
        assert_eq!(field(r#"[]"#), "body");
        assert!(matches!(
            parse_json::<Outer>(&Bytes::from_static(b"{nope")),
            Err(ApiError::BadRequest { .. })
        ));
    }

    #[test]
    fn path_ids_must_be_positive_integers() {
        assert_eq!(path_id("12", "id").unwrap(), 12);
        for bad in ["0", "-1", "x", "99999999999999999999"] {
            assert!(path_id(bad, "id").is_err(), "{bad}");
        }
    }
}
