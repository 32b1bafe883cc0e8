//! The API's one error type, [`ApiError`], and its wire form: RFC 9457
//! `application/problem+json` with a `field` member naming the input at fault.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why an API request failed. Each variant knows its HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed (unparsable JSON, query or path).
    #[error("{detail}")]
    BadRequest {
        field: Option<String>,
        detail: String,
    },
    /// 401: no valid API token.
    #[error("a valid API token is required (Authorization: Bearer ...)")]
    Unauthenticated,
    /// 403: the token lacks the scope this operation needs.
    #[error("this operation needs the `{0}` scope")]
    MissingScope(&'static str),
    /// 404: the resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the resource's state.
    #[error("{detail}")]
    Conflict {
        field: Option<String>,
        detail: String,
    },
    /// 413: the body is larger than the operation accepts.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed, but a field's value is unacceptable.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// 500: a failure on our side (logged; the detail is not shown).
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// A 400 naming `field`.
    pub fn bad_request(field: Option<&str>, detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: field.map(str::to_string),
            detail: detail.into(),
        }
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::MissingScope(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad-request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::MissingScope(_) => "missing-scope",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::TooLarge(_) => "too-large",
            ApiError::Invalid { .. } => "invalid-field",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Conflict { field, .. } => {
                field.as_deref()
            }
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The problem document.
#[derive(Debug, Serialize)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(why) = &self {
            tracing::error!(error = %why, "API request failed");
        }
        let problem = Problem {
            kind: format!("urn:callgate:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            detail: self.to_string(),
            field: self.field(),
        };
        let body = serde_json::to_vec(&problem).expect("a problem serialises");
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<crate::contacts::ContactError> for ApiError {
    fn from(e: crate::contacts::ContactError) -> Self {
        use crate::contacts::ContactError as E;
        match e {
            E::NoSuchList(_) | E::NoSuchContact(_) => ApiError::NotFound(e.to_string()),
            E::DuplicateList(_) => ApiError::Conflict {
                field: Some("name".into()),
                detail: e.to_string(),
            },
            E::BadRegion(_) => ApiError::invalid("default_region", e.to_string()),
            E::BadCsv(_) => ApiError::invalid("body", e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::campaigns::CampaignError> for ApiError {
    fn from(e: crate::campaigns::CampaignError) -> Self {
        use crate::campaigns::CampaignError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Invalid { field, reason } if field == "state" => ApiError::Conflict {
                field: Some(field),
                detail: reason,
            },
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            E::BadTransition { .. } => ApiError::Conflict {
                field: Some("state".into()),
                detail: e.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::compliance::PolicyError> for ApiError {
    fn from(e: crate::compliance::PolicyError) -> Self {
        use crate::compliance::PolicyError as E;
        match e {
            E::NoSuchProfile(_) => ApiError::NotFound(e.to_string()),
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            E::DuplicateProfile(_) => ApiError::Conflict {
                field: Some("name".into()),
                detail: e.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::leasing::LeaseError> for ApiError {
    fn from(e: crate::leasing::LeaseError) -> Self {
        use crate::leasing::LeaseError as E;
        match e {
            E::Campaign(c) => c.into(),
            E::Policy(p) => p.into(),
            E::NotDialing { .. } => ApiError::Conflict {
                field: Some("state".into()),
                detail: e.to_string(),
            },
            E::NotAssigned(_) => ApiError::invalid("appliance", e.to_string()),
            E::UnknownContact { .. } => ApiError::invalid("contact_id", e.to_string()),
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::agents::AgentError> for ApiError {
    fn from(e: crate::agents::AgentError) -> Self {
        use crate::agents::AgentError as E;
        match e {
            E::NotFound(m) => ApiError::NotFound(m),
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            E::Taken { field, .. } => ApiError::Conflict {
                field: Some(field.into()),
                detail: e.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::routing::RoutingError> for ApiError {
    fn from(e: crate::routing::RoutingError) -> Self {
        use crate::routing::RoutingError as E;
        match e {
            E::NoPolicy => ApiError::NotFound(e.to_string()),
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::call_tasks::CallTaskError> for ApiError {
    fn from(e: crate::call_tasks::CallTaskError) -> Self {
        use crate::call_tasks::CallTaskError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            E::AlreadyDone(_) => ApiError::Conflict {
                field: Some("state".into()),
                detail: e.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}
