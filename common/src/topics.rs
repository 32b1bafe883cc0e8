//! Every MQTT topic name, built here and nowhere else.
//!
//! - `callgate/v1/{appliance}/up`: everything the appliance sends, in order;
//! - `callgate/v1/{appliance}/down`: everything the coordinator sends to it;
//! - `callgate/v1/{appliance}/status`: retained `online`/`offline`, with a last will.
//!
//! Coordinator replicas share the uplink with `$share/callgate/callgate/v1/+/up`.

use crate::ids::ApplianceId;

/// The root of every Callgate topic, versioned with the wire protocol's major.
pub const ROOT: &str = "callgate/v1";
/// The shared-subscription group coordinator replicas join.
pub const SHARE_GROUP: &str = "callgate";

/// Which of an appliance's topics a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Appliance → coordinator.
    Up,
    /// Coordinator → appliance.
    Down,
    /// Retained presence.
    Status,
}

impl TopicKind {
    fn suffix(self) -> &'static str {
        match self {
            TopicKind::Up => "up",
            TopicKind::Down => "down",
            TopicKind::Status => "status",
        }
    }
}

/// The topic of `kind` for `appliance`.
pub fn topic(appliance: &ApplianceId, kind: TopicKind) -> String {
    format!("{ROOT}/{appliance}/{}", kind.suffix())
}

/// `callgate/v1/{appliance}/up`.
pub fn uplink(appliance: &ApplianceId) -> String {
    topic(appliance, TopicKind::Up)
}

/// `callgate/v1/{appliance}/down`.
pub fn downlink(appliance: &ApplianceId) -> String {
    topic(appliance, TopicKind::Down)
}

/// `callgate/v1/{appliance}/status`.
pub fn status(appliance: &ApplianceId) -> String {
    topic(appliance, TopicKind::Status)
}

/// The filter a single coordinator uses for every appliance's uplink.
pub fn all_uplinks() -> String {
    format!("{ROOT}/+/up")
}

/// The shared-subscription filter that spreads uplink across coordinator replicas.
pub fn shared_uplinks() -> String {
    format!("$share/{SHARE_GROUP}/{ROOT}/+/up")
}

/// The filter for every appliance's status topic.
pub fn all_statuses() -> String {
    format!("{ROOT}/+/status")
}

/// The ACL pattern a broker applies per client: `%u` is the certificate subject.
pub fn acl_prefix_pattern() -> String {
    format!("{ROOT}/%u/#")
}

/// Splits a topic name into its appliance and kind; `None` for anything that is not exactly
/// one of an appliance's three topics.
pub fn parse(topic: &str) -> Option<(ApplianceId, TopicKind)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let (appliance, suffix) = rest.split_once('/')?;
    let kind = match suffix {
        "up" => TopicKind::Up,
        "down" => TopicKind::Down,
        "status" => TopicKind::Status,
        _ => return None,
    };
    Some((ApplianceId::new(appliance).ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_each_topic() {
        let a = ApplianceId::new("branch-7").unwrap();
        for kind in [TopicKind::Up, TopicKind::Down, TopicKind::Status] {
            let t = topic(&a, kind);
            assert_eq!(parse(&t), Some((a.clone(), kind)));
        }
        assert_eq!(uplink(&a), "callgate/v1/branch-7/up");
        assert_eq!(shared_uplinks(), "$share/callgate/callgate/v1/+/up");
    }

    #[test]
    fn parse_refuses_foreign_and_malformed_topics() {
        for t in [
            "callgate/v1/branch-7/up/extra",
            "callgate/v2/branch-7/up",
            "callgate/v1/Branch/up",
            "callgate/v1//up",
            "callgate/v1/branch-7/sideways",
            "other/branch-7/up",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
    }
}
