//! Routing policy: ordered rules that decide where an answered call goes — an agent group,
//! the agent who spoke to the contact last, or a robot script — authored here, versioned
//! (every save is a new version; the newest is in force) and pushed to appliances, which
//! evaluate it per call with [`RoutingPolicy::decide`].
//!
//! Owns the `routing_policies` table. Must not: pick an individual agent (the appliance
//! does, from who is free), or send anything itself (the sync room pushes versions).
//!
//! The three cases the issue requires are expressible as:
//! - platinum tier → expert group: `{"when": {"field": {"name": "tier", "equals": "platinum"}},
//!   "then": {"agent_group": <expert id>}}`;
//! - last call unresolved → the same agent: `{"when": {"last_outcome": "unresolved"},
//!   "then": {"last_agent": {"fallback_group": <id>}}}`;
//! - complaint → QA group: `{"when": {"tag": "complaint"}, "then": {"agent_group": <qa id>}}`.

use crate::store::Store;
use callgate_common::time::UnixMillis;
use serde::Serialize;

/// Why a routing operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// A rule is unusable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// No policy has been saved yet.
    #[error("no routing policy has been saved yet")]
    NoPolicy,
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<callgate_common::routing::InvalidPolicy> for RoutingError {
    fn from(e: callgate_common::routing::InvalidPolicy) -> Self {
        RoutingError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

pub use callgate_common::routing::{CallFacts, Condition, RouteAction, RoutingPolicy, RoutingRule};

/// A saved version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    pub version: i64,
    pub created_at: i64,
    #[serde(flatten)]
    pub policy: RoutingPolicy,
}

/// Saves `policy` as the newest version, after checking that every group it names exists.
pub async fn save(store: &Store, policy: RoutingPolicy) -> Result<PolicyVersion, RoutingError> {
    let mut tx = store.begin_write().await?;
    let v = save_in(&mut tx, policy).await?;
    tx.commit().await?;
    Ok(v)
}

/// [`save`] inside the caller's transaction (which commits it, or not).
pub async fn save_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    policy: RoutingPolicy,
) -> Result<PolicyVersion, RoutingError> {
    policy.validate()?;
    for (i, r) in policy.rules.iter().enumerate() {
        let group = match &r.then {
            RouteAction::AgentGroup(g) => Some(*g),
            RouteAction::LastAgent { fallback_group } => Some(*fallback_group),
            RouteAction::RobotScript(_) => None,
        };
        if let Some(g) = group {
            let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM agent_groups WHERE id = $1")
                .bind(g)
                .fetch_optional(&mut **tx)
                .await?;
            if found.is_none() {
                return Err(RoutingError::Invalid {
                    field: format!("rules[{i}].then"),
                    reason: format!("agent group {g} does not exist"),
                });
            }
        }
    }
    let now = UnixMillis::now().0;
    let (version,): (i64,) = sqlx::query_as(
        "INSERT INTO routing_policies (body, created_at) VALUES ($1, $2) RETURNING version",
    )
    .bind(serde_json::to_string(&policy).expect("policies serialise"))
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(PolicyVersion {
        version,
        created_at: now,
        policy,
    })
}

/// The policy in force.
pub async fn current(store: &Store) -> Result<PolicyVersion, RoutingError> {
    let mut conn = store.pool().acquire().await?;
    current_in(&mut conn).await
}

/// [`current`] on the caller's connection or transaction.
pub async fn current_in(conn: &mut sqlx::AnyConnection) -> Result<PolicyVersion, RoutingError> {
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT version, body, created_at FROM routing_policies ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let (version, body, created_at) = row.ok_or(RoutingError::NoPolicy)?;
    let policy = serde_json::from_str(&body).map_err(|e| RoutingError::Invalid {
        field: "body".into(),
        reason: format!("stored policy {version} is unreadable: {e}"),
    })?;
    Ok(PolicyVersion {
        version,
        created_at,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RoutingPolicy {
        serde_json::from_value(serde_json::json!({ "rules": [
            { "name": "complaints to QA", "when": { "tag": "complaint" }, "then": { "agent_group": 3 } },
            { "name": "platinum to experts", "when": { "field": { "name": "tier", "equals": "platinum" } },
              "then": { "agent_group": 2 } },
            { "name": "unresolved to same agent", "when": { "last_outcome": "unresolved" },
              "then": { "last_agent": { "fallback_group": 1 } } },
            { "name": "everyone else", "when": "always", "then": { "agent_group": 1 } },
        ]}))
        .unwrap()
    }

    fn facts(tier: &str, tags: &[&str], last: Option<&str>) -> CallFacts {
        CallFacts {
            campaign: Some(9),
            fields: [("tier".to_string(), tier.to_string())]
                .into_iter()
                .collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            last_outcome: last.map(str::to_string),
        }
    }

    #[test]
    fn the_three_required_routes_are_expressible_and_first_match_wins() {
        let p = policy();
        assert_eq!(
            p.decide(&facts("Platinum", &[], None)).unwrap().1,
            &RouteAction::AgentGroup(2)
        );
        assert_eq!(
            p.decide(&facts("gold", &[], Some("UNRESOLVED"))).unwrap().1,
            &RouteAction::LastAgent { fallback_group: 1 }
        );
        // A platinum complaint goes to QA: the complaint rule comes first.
        assert_eq!(
            p.decide(&facts("platinum", &["complaint"], None))
                .unwrap()
                .0,
            "complaints to QA"
        );
        assert_eq!(
            p.decide(&facts("gold", &[], None)).unwrap().1,
            &RouteAction::AgentGroup(1)
        );
        let empty = RoutingPolicy { rules: vec![] };
        assert!(empty.decide(&facts("gold", &[], None)).is_none());
    }

    #[test]
    fn nested_conditions_combine_and_overly_deep_ones_are_refused() {
        let mut c = Condition::Tag("x".into());
        for _ in 0..8 {
            c = Condition::All(vec![c]);
        }
        let p = RoutingPolicy {
            rules: vec![RoutingRule {
                name: "deep".into(),
                when: c,
                then: RouteAction::RobotScript("s".into()),
            }],
        };
        assert!(matches!(p.validate(), Err(e) if e.field == "rules[0].when"));
        let any = Condition::Any(vec![Condition::Campaign(1), Condition::Tag("vip".into())]);
        assert!(any.holds(&facts("", &["VIP"], None)));
        assert!(
            !Condition::All(vec![Condition::Campaign(9), Condition::Tag("no".into())])
                .holds(&facts("", &[], None))
        );
    }
}
