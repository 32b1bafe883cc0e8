//! Who may do what on the embedded broker — the same rules as the generated Mosquitto ACL:
//! the coordinator (`coordinator.callgate`) may use every `callgate/v1/...` topic; an
//! enrolled appliance may publish only its own `up` and `status` and subscribe only to its
//! own `down`; anyone else (unknown or revoked certificate subjects) may not connect.

use crate::enroll::pki::COORDINATOR_IDENTITY;
use callgate_common::topics;
use std::collections::HashSet;

/// The enrolled appliances, refreshed from the database.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    enrolled: HashSet<String>,
}

impl Acl {
    /// An ACL admitting `enrolled` appliances (and the coordinator).
    pub fn new(enrolled: impl IntoIterator<Item = String>) -> Acl {
        Acl {
            enrolled: enrolled.into_iter().collect(),
        }
    }

    /// Whether a client with this certificate subject may connect at all.
    pub fn may_connect(&self, identity: &str) -> bool {
        identity == COORDINATOR_IDENTITY || self.enrolled.contains(identity)
    }

    /// Whether `identity` may publish on `topic`.
    pub fn may_publish(&self, identity: &str, topic: &str) -> bool {
        // Every publish asks: compared piece by piece, nothing allocated.
        let Some(rest) = topic
            .strip_prefix(topics::ROOT)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        if identity == COORDINATOR_IDENTITY {
            return true;
        }
        let own = rest
            .strip_prefix(identity)
            .and_then(|r| r.strip_prefix('/'));
        matches!(own, Some("up" | "status")) && self.enrolled.contains(identity)
    }

    /// Whether `identity` may subscribe to `filter` (a `$share/group/` prefix is looked
    /// through).
    pub fn may_subscribe(&self, identity: &str, filter: &str) -> bool {
        let filter = unshare(filter).1;
        if identity == COORDINATOR_IDENTITY {
            return filter.starts_with(&format!("{}/", topics::ROOT));
        }
        self.enrolled.contains(identity) && filter == format!("{}/{identity}/down", topics::ROOT)
    }
}

/// Splits `$share/{group}/{filter}` into `(Some(group), filter)`.
pub fn unshare(filter: &str) -> (Option<&str>, &str) {
    match filter
        .strip_prefix("$share/")
        .and_then(|r| r.split_once('/'))
    {
        Some((group, f)) => (Some(group), f),
        None => (None, filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_appliance_is_confined_to_its_own_topics_and_unknown_subjects_are_refused() {
        let acl = Acl::new(["branch-1".to_string()]);
        assert!(acl.may_connect("branch-1"));
        assert!(acl.may_connect(COORDINATOR_IDENTITY));
        assert!(!acl.may_connect("branch-2"));
        assert!(acl.may_publish("branch-1", "callgate/v1/branch-1/up"));
        assert!(acl.may_publish("branch-1", "callgate/v1/branch-1/status"));
        assert!(!acl.may_publish("branch-1", "callgate/v1/branch-1/down"));
        assert!(!acl.may_publish("branch-1", "callgate/v1/branch-2/up"));
        assert!(acl.may_subscribe("branch-1", "callgate/v1/branch-1/down"));
        assert!(!acl.may_subscribe("branch-1", "callgate/v1/+/up"));
        assert!(!acl.may_subscribe("branch-1", "#"));
        assert!(acl.may_subscribe(COORDINATOR_IDENTITY, "$share/callgate/callgate/v1/+/up"));
        assert!(!acl.may_publish(COORDINATOR_IDENTITY, "elsewhere/x"));
    }
}
