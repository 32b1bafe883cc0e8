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
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// What a rule tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every call.
    Always,
    /// A contact custom field equals a value (case-insensitive).
    Field { name: String, equals: String },
    /// The contact has this tag.
    Tag(String),
    /// The contact's last outcome or disposition equals this (case-insensitive).
    LastOutcome(String),
    /// The call belongs to this campaign.
    Campaign(i64),
    /// All of these hold.
    All(Vec<Condition>),
    /// Any of these holds.
    Any(Vec<Condition>),
}

/// Where the call goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RouteAction {
    /// Any free agent of this group.
    AgentGroup(i64),
    /// The agent who last spoke to this contact; this group when that agent is not free.
    LastAgent { fallback_group: i64 },
    /// A robot script, no agent.
    RobotScript(String),
}

/// One rule: the first whose condition holds decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub name: String,
    pub when: Condition,
    pub then: RouteAction,
}

/// The ordered rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingPolicy {
    pub rules: Vec<RoutingRule>,
}

/// What is known about a call when it is answered.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    pub campaign: Option<i64>,
    pub fields: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub last_outcome: Option<String>,
}

impl Condition {
    fn holds(&self, f: &CallFacts) -> bool {
        match self {
            Condition::Always => true,
            Condition::Field { name, equals } => f
                .fields
                .get(name)
                .is_some_and(|v| v.eq_ignore_ascii_case(equals)),
            Condition::Tag(t) => f.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
            Condition::LastOutcome(o) => f
                .last_outcome
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(o)),
            Condition::Campaign(c) => f.campaign == Some(*c),
            Condition::All(cs) => cs.iter().all(|c| c.holds(f)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(f)),
        }
    }

    fn depth(&self) -> usize {
        match self {
            Condition::All(cs) | Condition::Any(cs) => {
                1 + cs.iter().map(Condition::depth).max().unwrap_or(0)
            }
            _ => 1,
        }
    }
}

impl RoutingPolicy {
    /// The action of the first rule whose condition holds, and that rule's name.
    pub fn decide(&self, facts: &CallFacts) -> Option<(&str, &RouteAction)> {
        self.rules
            .iter()
            .find(|r| r.when.holds(facts))
            .map(|r| (r.name.as_str(), &r.then))
    }

    /// Checks the rules' shape; the error names the rule at fault.
    pub fn validate(&self) -> Result<(), RoutingError> {
        if self.rules.len() > 1000 {
            return Err(RoutingError::Invalid {
                field: "rules".into(),
                reason: "at most 1000 rules".into(),
            });
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.trim().is_empty() || r.name.len() > 200 {
                return Err(RoutingError::Invalid {
                    field: format!("rules[{i}].name"),
                    reason: "must be 1 to 200 characters".into(),
                });
            }
            if r.when.depth() > 8 {
                return Err(RoutingError::Invalid {
                    field: format!("rules[{i}].when"),
                    reason: "conditions nest at most 8 deep".into(),
                });
            }
        }
        Ok(())
    }
}

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
                .fetch_optional(store.pool())
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
    .fetch_one(store.pool())
    .await?;
    Ok(PolicyVersion {
        version,
        created_at: now,
        policy,
    })
}

/// The policy in force.
pub async fn current(store: &Store) -> Result<PolicyVersion, RoutingError> {
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT version, body, created_at FROM routing_policies ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(store.pool())
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
        assert!(
            matches!(p.validate(), Err(RoutingError::Invalid { field, .. }) if field == "rules[0].when")
        );
        let any = Condition::Any(vec![Condition::Campaign(1), Condition::Tag("vip".into())]);
        assert!(any.holds(&facts("", &["VIP"], None)));
        assert!(
            !Condition::All(vec![Condition::Campaign(9), Condition::Tag("no".into())])
                .holds(&facts("", &[], None))
        );
    }
}
