//! The roster and the routing policy in the box's store (`appliance/migrations/0006_agents.sql`).
//!
//! Both arrive from the coordinator as full replacements with a version: a version at or
//! below the stored one is ignored (newest wins, a replay changes nothing). The `apply_*`
//! functions take the caller's transaction so that the sync link records the downlink
//! sequence number in the same commit.

use super::AgentsError;
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::routing::RoutingPolicy;
use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, Downlink};
use sqlx::{SqliteConnection, SqlitePool};

/// `agent_versions` key of the roster.
const ROSTER: &str = "roster";
/// `agent_versions` key of the routing policy.
const POLICY: &str = "routing_policy";

/// What an `apply_*` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The new version replaced the stored one.
    Replaced,
    /// The stored version is the same or newer; nothing changed.
    Stale { stored: u64 },
}

async fn stored_version(
    conn: &mut SqliteConnection,
    kind: &str,
) -> Result<Option<u64>, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT version FROM agent_versions WHERE kind = ?")
        .bind(kind)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(v,)| v as u64))
}

async fn set_version(
    conn: &mut SqliteConnection,
    kind: &str,
    version: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_versions (kind, version) VALUES (?, ?) \
         ON CONFLICT(kind) DO UPDATE SET version = excluded.version",
    )
    .bind(kind)
    .bind(version as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Checks a roster before anything is written: logins unique and non-empty, PHC strings
/// parseable, groups known. The error names the entry at fault.
pub fn validate_roster(roster: &AgentRoster) -> Result<(), AgentsError> {
    let bad = |field: String, reason: &str| AgentsError::InvalidRoster {
        field,
        reason: reason.to_string(),
    };
    let mut groups = std::collections::HashSet::new();
    for (i, g) in roster.groups.iter().enumerate() {
        if !groups.insert(g.group) {
            return Err(bad(format!("groups[{i}].group"), "appears twice"));
        }
        if i64::try_from(g.group.0).is_err() {
            return Err(bad(format!("groups[{i}].group"), "is out of range"));
        }
    }
    let mut logins = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for (i, a) in roster.agents.iter().enumerate() {
        if !ids.insert(a.agent) || i64::try_from(a.agent.0).is_err() {
            return Err(bad(
                format!("agents[{i}].agent"),
                "appears twice or is out of range",
            ));
        }
        if a.login.trim().is_empty() || a.login.len() > 64 {
            return Err(bad(
                format!("agents[{i}].login"),
                "must be 1 to 64 characters",
            ));
        }
        if !logins.insert(a.login.to_lowercase()) {
            return Err(bad(
                format!("agents[{i}].login"),
                "is used by another agent",
            ));
        }
        if argon2::password_hash::PasswordHash::new(&a.password_phc).is_err() {
            return Err(bad(
                format!("agents[{i}].password_phc"),
                "is not a PHC password hash",
            ));
        }
        if let Some(g) = a.groups.iter().find(|g| !groups.contains(g)) {
            return Err(bad(
                format!("agents[{i}].groups"),
                &format!("names group {g}, which the roster does not hold"),
            ));
        }
    }
    Ok(())
}

/// Replaces the stored roster with `roster` unless the stored version is the same or newer.
pub async fn apply_roster(
    conn: &mut SqliteConnection,
    roster: &AgentRoster,
) -> Result<Applied, AgentsError> {
    validate_roster(roster)?;
    Ok(write_roster(conn, roster).await?)
}

/// Applies a downlink message of the agents' kinds (roster, routing policy) in the sync
/// link's transaction; other kinds are left alone. A malformed roster or policy is refused
/// with a logged reason and the stored one stays in force: the message still counts as
/// applied (a replay would be refused the same way). Only store failures are errors.
pub async fn apply_downlink(
    conn: &mut SqliteConnection,
    body: &Downlink,
) -> Result<(), sqlx::Error> {
    match body {
        Downlink::AgentRoster(roster) => match validate_roster(roster) {
            Err(e) => {
                tracing::error!(version = roster.version, error = %e, "agent roster refused; the stored one stays");
            }
            Ok(()) => {
                let applied = write_roster(conn, roster).await?;
                tracing::info!(
                    version = roster.version,
                    agents = roster.agents.len(),
                    ?applied,
                    "agent roster received"
                );
            }
        },
        Downlink::RoutingPolicy { version, policy } => match policy.validate() {
            Err(e) => {
                tracing::error!(version, error = %e, "routing policy refused; the stored one stays");
            }
            Ok(()) => {
                let applied = write_policy(conn, *version, policy).await?;
                tracing::info!(
                    version,
                    rules = policy.rules.len(),
                    ?applied,
                    "routing policy received"
                );
            }
        },
        _ => {}
    }
    Ok(())
}

/// The stored versions of the roster and the policy (0 when none), to notice changes.
pub async fn versions(pool: &SqlitePool) -> Result<(u64, u64), AgentsError> {
    let mut conn = pool.acquire().await?;
    Ok((
        stored_version(&mut conn, ROSTER).await?.unwrap_or(0),
        stored_version(&mut conn, POLICY).await?.unwrap_or(0),
    ))
}

async fn write_roster(
    conn: &mut SqliteConnection,
    roster: &AgentRoster,
) -> Result<Applied, sqlx::Error> {
    if let Some(stored) = stored_version(conn, ROSTER).await? {
        if stored >= roster.version {
            return Ok(Applied::Stale { stored });
        }
    }
    sqlx::query("DELETE FROM agent_membership")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM agent").execute(&mut *conn).await?;
    sqlx::query("DELETE FROM agent_group")
        .execute(&mut *conn)
        .await?;
    for g in &roster.groups {
        sqlx::query("INSERT INTO agent_group (group_id, name) VALUES (?, ?)")
            .bind(g.group.0 as i64)
            .bind(&g.name)
            .execute(&mut *conn)
            .await?;
    }
    for a in &roster.agents {
        sqlx::query(
            "INSERT INTO agent (agent_id, name, login, password_phc, sip_username, skills) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(a.agent.0 as i64)
        .bind(&a.name)
        .bind(&a.login)
        .bind(&a.password_phc)
        .bind(&a.sip_username)
        .bind(serde_json::to_string(&a.skills).expect("a list of strings serialises"))
        .execute(&mut *conn)
        .await?;
        for g in &a.groups {
            sqlx::query("INSERT INTO agent_membership (agent_id, group_id) VALUES (?, ?)")
                .bind(a.agent.0 as i64)
                .bind(g.0 as i64)
                .execute(&mut *conn)
                .await?;
        }
    }
    // Sessions of agents no longer on the roster end with it.
    sqlx::query("DELETE FROM agent_session WHERE agent_id NOT IN (SELECT agent_id FROM agent)")
        .execute(&mut *conn)
        .await?;
    set_version(conn, ROSTER, roster.version).await?;
    Ok(Applied::Replaced)
}

/// Replaces the stored routing policy unless the stored version is the same or newer.
pub async fn apply_routing_policy(
    conn: &mut SqliteConnection,
    version: u64,
    policy: &RoutingPolicy,
) -> Result<Applied, AgentsError> {
    policy.validate().map_err(AgentsError::InvalidPolicy)?;
    Ok(write_policy(conn, version, policy).await?)
}

async fn write_policy(
    conn: &mut SqliteConnection,
    version: u64,
    policy: &RoutingPolicy,
) -> Result<Applied, sqlx::Error> {
    if let Some(stored) = stored_version(conn, POLICY).await? {
        if stored >= version {
            return Ok(Applied::Stale { stored });
        }
    }
    sqlx::query(
        "INSERT INTO routing_policy (id, policy) VALUES (1, ?) \
         ON CONFLICT(id) DO UPDATE SET policy = excluded.policy",
    )
    .bind(serde_json::to_string(policy).expect("a routing policy serialises"))
    .execute(&mut *conn)
    .await?;
    set_version(conn, POLICY, version).await?;
    Ok(Applied::Replaced)
}

/// The stored roster (version 0 and empty when none has arrived).
pub async fn load_roster(pool: &SqlitePool) -> Result<AgentRoster, AgentsError> {
    let mut conn = pool.acquire().await?;
    let version = stored_version(&mut conn, ROSTER).await?.unwrap_or(0);
    let groups: Vec<(i64, String)> =
        sqlx::query_as("SELECT group_id, name FROM agent_group ORDER BY group_id")
            .fetch_all(&mut *conn)
            .await?;
    let rows: Vec<(i64, String, String, String, String, String)> = sqlx::query_as(
        "SELECT agent_id, name, login, password_phc, sip_username, skills FROM agent \
         ORDER BY agent_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let members: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT agent_id, group_id FROM agent_membership ORDER BY agent_id, group_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let agents = rows
        .into_iter()
        .map(
            |(id, name, login, password_phc, sip_username, skills)| AgentBrief {
                agent: AgentId(id as u64),
                name,
                login,
                password_phc,
                sip_username,
                skills: serde_json::from_str(&skills).unwrap_or_default(),
                groups: members
                    .iter()
                    .filter(|(a, _)| *a == id)
                    .map(|(_, g)| AgentGroupId(*g as u64))
                    .collect(),
            },
        )
        .collect();
    Ok(AgentRoster {
        version,
        groups: groups
            .into_iter()
            .map(|(g, name)| AgentGroupBrief {
                group: AgentGroupId(g as u64),
                name,
            })
            .collect(),
        agents,
    })
}

/// The stored routing policy and its version, if one has arrived.
pub async fn load_routing_policy(
    pool: &SqlitePool,
) -> Result<Option<(u64, RoutingPolicy)>, AgentsError> {
    let mut conn = pool.acquire().await?;
    let Some(version) = stored_version(&mut conn, POLICY).await? else {
        return Ok(None);
    };
    let (json,): (String,) = sqlx::query_as("SELECT policy FROM routing_policy WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let policy = serde_json::from_str(&json).map_err(|e| {
        AgentsError::InvalidPolicy(callgate_common::routing::InvalidPolicy {
            field: "stored policy".into(),
            reason: e.to_string(),
        })
    })?;
    Ok(Some((version, policy)))
}

/// The SIP username of the agent's phone, if the agent is on the roster.
pub async fn sip_username(
    pool: &SqlitePool,
    agent: AgentId,
) -> Result<Option<String>, AgentsError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT sip_username FROM agent WHERE agent_id = ?")
            .bind(agent.0 as i64)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(u,)| u))
}

/// The agent whose login and password these are (login compared case-insensitively); the
/// same argon2 work is done for an unknown login, so timing does not reveal logins.
pub async fn verify_login(
    pool: &SqlitePool,
    login: &str,
    password: &str,
) -> Result<Option<AgentId>, AgentsError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT agent_id, password_phc FROM agent WHERE lower(login) = lower(?)")
            .bind(login)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some((id, phc)) => {
            crate::web::auth::verify_password(&phc, password).then_some(AgentId(id as u64))
        }
        None => {
            let _ = crate::web::auth::verify_password(crate::web::auth::dummy_hash(), password);
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn roster(version: u64, agents: &[(u64, &str, &[u64])]) -> AgentRoster {
        AgentRoster {
            version,
            groups: vec![
                AgentGroupBrief {
                    group: AgentGroupId(1),
                    name: "sales".into(),
                },
                AgentGroupBrief {
                    group: AgentGroupId(2),
                    name: "senior".into(),
                },
            ],
            agents: agents
                .iter()
                .map(|(id, login, groups)| AgentBrief {
                    agent: AgentId(*id),
                    name: format!("Agent {id}"),
                    login: (*login).into(),
                    password_phc: crate::web::auth::hash_password("agent password 1"),
                    sip_username: format!("phone{id}"),
                    skills: vec!["french".into()],
                    groups: groups.iter().map(|g| AgentGroupId(*g)).collect(),
                })
                .collect(),
        }
    }

    async fn apply(store: &Store, r: &AgentRoster) -> Result<Applied, AgentsError> {
        let mut tx = store.pool().begin().await.unwrap();
        let out = apply_roster(&mut tx, r).await;
        tx.commit().await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_newer_roster_replaces_and_an_older_or_replayed_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let v2 = roster(2, &[(1, "ann", &[1]), (2, "bob", &[1, 2])]);
        assert_eq!(apply(&store, &v2).await.unwrap(), Applied::Replaced);
        let loaded = load_roster(store.pool()).await.unwrap();
        assert_eq!(loaded, v2);

        // Replay of the same version and an older one: ignored.
        assert_eq!(
            apply(&store, &v2).await.unwrap(),
            Applied::Stale { stored: 2 }
        );
        let v1 = roster(1, &[(9, "old", &[1])]);
        assert_eq!(
            apply(&store, &v1).await.unwrap(),
            Applied::Stale { stored: 2 }
        );
        assert_eq!(load_roster(store.pool()).await.unwrap(), v2);

        // A newer one removes bob.
        let v3 = roster(3, &[(1, "ann", &[2])]);
        assert_eq!(apply(&store, &v3).await.unwrap(), Applied::Replaced);
        assert_eq!(load_roster(store.pool()).await.unwrap(), v3);
    }

    #[tokio::test]
    async fn a_bad_roster_is_refused_naming_the_entry_and_the_stored_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let good = roster(1, &[(1, "ann", &[1])]);
        apply(&store, &good).await.unwrap();

        let mut dup = roster(2, &[(1, "ann", &[1]), (2, "ANN", &[1])]);
        let e = apply(&store, &dup).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "roster agents[1].login: is used by another agent"
        );
        dup.agents[1].login = "bob".into();
        dup.agents[1].password_phc = "plain text".into();
        let e = apply(&store, &dup).await.unwrap_err();
        assert!(e.to_string().contains("agents[1].password_phc"), "{e}");
        dup.agents[1].password_phc = good.agents[0].password_phc.clone();
        dup.agents[1].groups = vec![AgentGroupId(7)];
        let e = apply(&store, &dup).await.unwrap_err();
        assert!(e.to_string().contains("names group 7"), "{e}");
        assert_eq!(load_roster(store.pool()).await.unwrap(), good);
    }

    #[tokio::test]
    async fn agents_log_in_with_roster_credentials_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        apply(&store, &roster(1, &[(4, "ann", &[1])]))
            .await
            .unwrap();
        let pool = store.pool();
        assert_eq!(
            verify_login(pool, "Ann", "agent password 1").await.unwrap(),
            Some(AgentId(4))
        );
        assert_eq!(verify_login(pool, "ann", "wrong").await.unwrap(), None);
        assert_eq!(
            verify_login(pool, "nobody", "agent password 1")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn the_newest_routing_policy_wins() {
        use callgate_common::routing::{Condition, RouteAction, RoutingRule};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let policy = |g| RoutingPolicy {
            rules: vec![RoutingRule {
                name: "all".into(),
                when: Condition::Always,
                then: RouteAction::AgentGroup(g),
            }],
        };
        assert_eq!(load_routing_policy(store.pool()).await.unwrap(), None);
        let mut tx = store.pool().begin().await.unwrap();
        assert_eq!(
            apply_routing_policy(&mut tx, 5, &policy(1)).await.unwrap(),
            Applied::Replaced
        );
        assert_eq!(
            apply_routing_policy(&mut tx, 4, &policy(2)).await.unwrap(),
            Applied::Stale { stored: 5 }
        );
        tx.commit().await.unwrap();
        assert_eq!(
            load_routing_policy(store.pool()).await.unwrap(),
            Some((5, policy(1)))
        );
        let mut bad = policy(3);
        bad.rules[0].name = " ".into();
        let mut tx = store.pool().begin().await.unwrap();
        let e = apply_routing_policy(&mut tx, 6, &bad).await.unwrap_err();
        assert!(e.to_string().contains("rules[0].name"), "{e}");
    }
}
