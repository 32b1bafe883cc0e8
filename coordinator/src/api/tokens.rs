//! API tokens: random bearer secrets stored only as SHA-256 hashes, each with a set of
//! scopes. `admin` grants every scope.

use super::problem::ApiError;
use crate::store::Store;
use callgate_common::time::UnixMillis;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Every scope an operation can require.
pub const SCOPES: &[&str] = &[
    "admin",
    "contacts:read",
    "contacts:write",
    "contacts:reveal",
    "campaigns:read",
    "campaigns:write",
    "compliance:read",
    "compliance:write",
    "dialer",
    "agents:read",
    "agents:write",
    "routing:read",
    "routing:write",
    "call-tasks:read",
    "call-tasks:write",
    "appliances:read",
    "appliances:write",
];

/// The caller behind a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: i64,
    pub scopes: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `scope` (or `admin`).
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }

    /// `Ok` when the caller holds `scope`, else the 403.
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.may(scope) {
            Ok(())
        } else {
            Err(ApiError::MissingScope(scope))
        }
    }
}

fn hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A scope this build does not know.
    #[error("unknown scope {0:?}; known scopes: {list}", list = SCOPES.join(", "))]
    UnknownScope(String),
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Creates a token named `name` with `scopes` and returns the secret (shown once).
pub async fn create_token(
    store: &Store,
    name: &str,
    scopes: &[String],
) -> Result<String, TokenError> {
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(TokenError::UnknownScope(bad.clone()));
    }
    let mut secret = [0u8; 24];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| TokenError::Random)?;
    let token = format!("cgt_{}", hex::encode(secret));
    sqlx::query(
        "INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(name)
    .bind(hash(&token))
    .bind(scopes.join(" "))
    .bind(UnixMillis::now().0)
    .execute(store.pool())
    .await?;
    Ok(token)
}

/// The caller a bearer token belongs to, if it is valid and not revoked.
pub async fn authenticate(store: &Store, token: &str) -> Result<Option<Caller>, sqlx::Error> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, scopes FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(|(token_id, scopes)| Caller {
        token_id,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
    }))
}
