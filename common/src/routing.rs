//! Routing policy: ordered rules that decide where an answered call goes — an agent group,
//! the agent who spoke to the contact last, or a robot script. The coordinator authors and
//! versions it and pushes it to appliances; the appliance evaluates it per answered call with
//! [`RoutingPolicy::decide`] and then picks the longest-idle free agent of the group itself.
//!
//! Must not: pick an individual agent, read the clock, or touch storage.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A policy whose shape is unusable; `field` names the rule at fault (`rules[2].when`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidPolicy {
    /// The offending field, as a path.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
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
    /// Whether this condition holds for the call `f` describes.
    pub fn holds(&self, f: &CallFacts) -> bool {
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
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if self.rules.len() > 1000 {
            return Err(InvalidPolicy {
                field: "rules".into(),
                reason: "at most 1000 rules".into(),
            });
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.trim().is_empty() || r.name.len() > 200 {
                return Err(InvalidPolicy {
                    field: format!("rules[{i}].name"),
                    reason: "must be 1 to 200 characters".into(),
                });
            }
            if r.when.depth() > 8 {
                return Err(InvalidPolicy {
                    field: format!("rules[{i}].when"),
                    reason: "conditions nest at most 8 deep".into(),
                });
            }
        }
        Ok(())
    }
}
