//! Agents and agent groups, managed centrally and synced to the appliance of each agent's
//! branch. Login passwords are stored only as argon2id hashes (PHC strings).
//!
//! Owns the `agents`, `agent_groups` and `agent_group_members` tables. `updated_at` only
//! grows, so [`changed_since`] is the delta an appliance needs (a disabled agent is a
//! change); sending it is the sync room's job, not this one's.

use crate::store::Store;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent or group does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A field is unusable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A unique name is taken.
    #[error("{field} {value:?} is taken")]
    Taken { field: &'static str, value: String },
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn invalid(field: &str, reason: &str) -> AgentError {
    AgentError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A new agent, as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: String,
    /// The appliance id of the agent's branch.
    pub branch: String,
    #[serde(default)]
    pub skills: Vec<String>,
    /// The SIP account the agent's phone registers with on the box.
    pub sip_username: String,
    /// Login for the agent page.
    pub login: String,
    /// Clear text on the way in only; stored as an argon2id hash.
    pub password: String,
    #[serde(default)]
    pub groups: Vec<i64>,
}

/// A change to an agent; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub skills: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub password: Option<String>,
    pub groups: Option<Vec<i64>>,
}

/// An agent as the API and the sync show it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    pub branch: String,
    pub skills: Vec<String>,
    pub sip_username: String,
    pub login: String,
    pub enabled: bool,
    pub groups: Vec<i64>,
    pub updated_at: i64,
}

/// An agent group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentGroup {
    pub id: i64,
    pub name: String,
    pub description: String,
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), AgentError> {
    if v.trim().is_empty() || v.len() > max || v.contains('\0') {
        return Err(invalid(field, &format!("must be 1 to {max} characters")));
    }
    Ok(())
}

fn check_password(p: &str) -> Result<(), AgentError> {
    if p.chars().count() < 8 || p.len() > 256 {
        return Err(invalid("password", "must be 8 to 256 characters"));
    }
    Ok(())
}

fn hash_password(p: &str) -> Result<String, AgentError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AgentError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC hash.
pub fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn skills_text(skills: &[String]) -> Result<String, AgentError> {
    for (i, s) in skills.iter().enumerate() {
        if s.trim().is_empty() || s.contains(',') || s.len() > 64 {
            return Err(invalid(
                &format!("skills[{i}]"),
                "1 to 64 characters, no commas",
            ));
        }
    }
    Ok(skills.join(","))
}

async fn check_groups(store: &Store, groups: &[i64]) -> Result<(), AgentError> {
    for (i, g) in groups.iter().enumerate() {
        let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM agent_groups WHERE id = $1")
            .bind(g)
            .fetch_optional(store.pool())
            .await?;
        if found.is_none() {
            return Err(invalid(
                &format!("groups[{i}]"),
                &format!("agent group {g} does not exist"),
            ));
        }
    }
    Ok(())
}

/// Creates a group.
pub async fn create_group(
    store: &Store,
    name: &str,
    description: &str,
) -> Result<AgentGroup, AgentError> {
    check_text("name", name, 100)?;
    if description.len() > 1000 || description.contains('\0') {
        return Err(invalid("description", "at most 1000 characters"));
    }
    let r: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO agent_groups (name, description, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(description)
    .bind(UnixMillis::now().0)
    .fetch_one(store.pool())
    .await;
    match r {
        Ok((id,)) => Ok(AgentGroup {
            id,
            name: name.into(),
            description: description.into(),
        }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AgentError::Taken {
            field: "name",
            value: name.into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// A page of groups.
pub async fn page_groups(
    store: &Store,
    after: i64,
    limit: i64,
) -> Result<Vec<AgentGroup>, AgentError> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, name, description FROM agent_groups WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, description)| AgentGroup {
            id,
            name,
            description,
        })
        .collect())
}

/// Creates an agent.
pub async fn create_agent(store: &Store, a: NewAgent) -> Result<Agent, AgentError> {
    check_text("name", &a.name, 200)?;
    if a.branch
        .parse::<callgate_common::ids::ApplianceId>()
        .is_err()
    {
        return Err(invalid(
            "branch",
            "must be an appliance id (a-z, 0-9, inner -)",
        ));
    }
    check_text("sip_username", &a.sip_username, 64)?;
    if !a
        .sip_username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid("sip_username", "letters, digits, - _ . only"));
    }
    check_text("login", &a.login, 64)?;
    check_password(&a.password)?;
    let skills = skills_text(&a.skills)?;
    check_groups(store, &a.groups).await?;
    for (field, sql, value) in [
        (
            "sip_username",
            "SELECT id FROM agents WHERE sip_username = $1",
            &a.sip_username,
        ),
        ("login", "SELECT id FROM agents WHERE login = $1", &a.login),
    ] {
        let taken: Option<(i64,)> = sqlx::query_as(sql)
            .bind(value)
            .fetch_optional(store.pool())
            .await?;
        if taken.is_some() {
            return Err(AgentError::Taken {
                field,
                value: value.clone(),
            });
        }
    }
    let hash = hash_password(&a.password)?;
    let mut tx = store.pool().begin().await?;
    let r: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO agents (name, branch, skills, sip_username, login, password_hash, enabled, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7) RETURNING id",
    )
    .bind(&a.name)
    .bind(&a.branch)
    .bind(&skills)
    .bind(&a.sip_username)
    .bind(&a.login)
    .bind(&hash)
    .bind(UnixMillis::now().0)
    .fetch_one(&mut *tx)
    .await;
    let id = match r {
        Ok((id,)) => id,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            let field = if e.message().contains("sip_username") {
                "sip_username"
            } else {
                "login"
            };
            let value = if field == "login" {
                a.login.clone()
            } else {
                a.sip_username.clone()
            };
            return Err(AgentError::Taken { field, value });
        }
        Err(e) => return Err(e.into()),
    };
    for g in &a.groups {
        sqlx::query("INSERT INTO agent_group_members (group_id, agent_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(g)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get_agent(store, id).await
}

type AgentRow = (i64, String, String, String, String, String, i64, i64);
const AGENT_COLUMNS: &str =
    "SELECT id, name, branch, skills, sip_username, login, enabled, updated_at FROM agents";

async fn agent_of(store: &Store, r: AgentRow) -> Result<Agent, AgentError> {
    let groups: Vec<(i64,)> = sqlx::query_as(
        "SELECT group_id FROM agent_group_members WHERE agent_id = $1 ORDER BY group_id",
    )
    .bind(r.0)
    .fetch_all(store.pool())
    .await?;
    Ok(Agent {
        id: r.0,
        name: r.1,
        branch: r.2,
        skills: r
            .3
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        sip_username: r.4,
        login: r.5,
        enabled: r.6 != 0,
        groups: groups.into_iter().map(|g| g.0).collect(),
        updated_at: r.7,
    })
}

/// One agent.
pub async fn get_agent(store: &Store, id: i64) -> Result<Agent, AgentError> {
    let row: Option<AgentRow> = sqlx::query_as(&format!("{AGENT_COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    agent_of(
        store,
        row.ok_or_else(|| AgentError::NotFound(format!("agent {id} does not exist")))?,
    )
    .await
}

/// A page of agents.
pub async fn page_agents(store: &Store, after: i64, limit: i64) -> Result<Vec<Agent>, AgentError> {
    let rows: Vec<AgentRow> = sqlx::query_as(&format!(
        "{AGENT_COLUMNS} WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(agent_of(store, r).await?);
    }
    Ok(out)
}

/// Applies a patch; bumps `updated_at` so the branch's appliance picks the change up.
pub async fn update_agent(store: &Store, id: i64, p: AgentPatch) -> Result<Agent, AgentError> {
    let current = get_agent(store, id).await?;
    let name = p.name.unwrap_or(current.name);
    check_text("name", &name, 200)?;
    let skills = skills_text(&p.skills.unwrap_or(current.skills))?;
    let enabled = p.enabled.unwrap_or(current.enabled);
    if let Some(groups) = &p.groups {
        check_groups(store, groups).await?;
    }
    let hash = match &p.password {
        Some(pw) => {
            check_password(pw)?;
            Some(hash_password(pw)?)
        }
        None => None,
    };
    let mut tx = store.pool().begin().await?;
    // Strictly greater than before, even within one millisecond.
    let now = UnixMillis::now().0.max(current.updated_at + 1);
    sqlx::query(
        "UPDATE agents SET name = $1, skills = $2, enabled = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(&name)
    .bind(&skills)
    .bind(i64::from(enabled))
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if let Some(h) = hash {
        sqlx::query("UPDATE agents SET password_hash = $1 WHERE id = $2")
            .bind(h)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(groups) = p.groups {
        sqlx::query("DELETE FROM agent_group_members WHERE agent_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for g in groups {
            sqlx::query("INSERT INTO agent_group_members (group_id, agent_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(g)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    get_agent(store, id).await
}

/// The agents of `branch` changed after `since` (ms), oldest first: what the branch's
/// appliance must apply.
pub async fn changed_since(
    store: &Store,
    branch: &str,
    since: i64,
) -> Result<Vec<Agent>, AgentError> {
    let rows: Vec<AgentRow> = sqlx::query_as(&format!(
        "{AGENT_COLUMNS} WHERE branch = $1 AND updated_at > $2 ORDER BY updated_at, id"
    ))
    .bind(branch)
    .bind(since)
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(agent_of(store, r).await?);
    }
    Ok(out)
}

/// Checks an agent's login; `None` when unknown, disabled or wrong password.
pub async fn verify_login(
    store: &Store,
    login: &str,
    password: &str,
) -> Result<Option<Agent>, AgentError> {
    let row: Option<(i64, String, i64)> =
        sqlx::query_as("SELECT id, password_hash, enabled FROM agents WHERE login = $1")
            .bind(login)
            .fetch_optional(store.pool())
            .await?;
    match row {
        Some((id, hash, enabled)) if enabled != 0 && password_matches(&hash, password) => {
            Ok(Some(get_agent(store, id).await?))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_argon2id_and_only_the_right_one_matches() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "correct horsE"));
        assert!(!password_matches("not a hash", "x"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }
}
