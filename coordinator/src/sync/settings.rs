//! `[sync]` in the coordinator's config: where the MQTT broker is and how to use it.

use callgate_common::observe::ConfigError;
use serde::{Deserialize, Serialize};

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// `host:port` of the broker's mutual-TLS listener; the link is off when absent. The
    /// host must be a name or IP the broker's certificate carries.
    pub broker: Option<String>,
    /// Subscribe to the uplink with `$share/callgate/...` (a lone coordinator behind a
    /// broker shared with other consumers). Replicas split the uplink by appliance
    /// ownership instead (`replica`); the two exclude each other.
    pub shared_subscription: bool,
    /// Clock skew (seconds) beyond which an appliance's clock raises the alarm.
    pub clock_skew_alarm_secs: u64,
    /// `ip:port` of the HTTPS enrollment listener (certificate from the organisation CA);
    /// off when absent.
    pub enroll_listen: Option<String>,
    /// Extra DNS names for the enrollment listener's and the embedded broker's certificates.
    pub enroll_names: Vec<String>,
    /// The broker address handed to enrolling boxes; `broker` when absent.
    pub public_broker: Option<String>,
    /// `ip:port` for the embedded MQTT broker (mutual TLS, per-appliance isolation); off
    /// when absent. With no `broker` set, the link connects to it.
    pub embedded_broker: Option<String>,
    /// This replica's name when several coordinators share one database: its MQTT client id
    /// is `coordinator.callgate-{replica}`, and it applies the uplink of the appliances in
    /// the hash buckets it holds (`sync::ownership`). Unique per replica. Absent: a lone
    /// coordinator (`coordinator.callgate`) applying everything. Excludes
    /// `shared_subscription`.
    pub replica: Option<String>,
    /// How long a replica's hold on its appliance buckets lasts unless renewed (renewed
    /// every third of it); a replica silent this long loses them to the live ones.
    pub ownership_ttl_secs: u64,
    /// How many tasks apply uplink concurrently (appliances are split between them by id;
    /// each appliance's messages stay in order on one). 0: automatic — 1 on SQLite (one
    /// writer; a task commits many appliances per transaction), 4 on PostgreSQL.
    pub apply_shards: usize,
    /// `[sync.dialer]`: leases, grants and campaign briefs pushed to the appliances.
    pub dialer: crate::leasing::scheduler::DialerFeedConfig,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            broker: None,
            shared_subscription: false,
            clock_skew_alarm_secs: 5,
            enroll_listen: None,
            enroll_names: Vec::new(),
            public_broker: None,
            embedded_broker: None,
            replica: None,
            ownership_ttl_secs: 10,
            apply_shards: 0,
            dialer: Default::default(),
        }
    }
}

impl SyncConfig {
    /// The number of apply tasks for a store on `backend` (see `apply_shards`).
    pub fn apply_shards(&self, backend: callgate_common::store::Backend) -> usize {
        match (self.apply_shards, backend) {
            (0, callgate_common::store::Backend::Sqlite) => 1,
            (0, _) => 4,
            (n, _) => n,
        }
    }

    /// Refuses settings that cannot work together.
    pub fn check_replication(&self) -> Result<(), ConfigError> {
        if self.replica.is_some() && self.shared_subscription {
            return Err(ConfigError::invalid(
                "sync.shared_subscription",
                "cannot be used with sync.replica: replicas split the uplink by appliance \
                 (each applies the appliances it owns), a $share subscription would hand a \
                 replica messages of appliances it does not own",
            ));
        }
        if self.replica.as_deref().is_some_and(|r| {
            r.is_empty()
                || !r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(ConfigError::invalid(
                "sync.replica",
                "must be a non-empty name of letters, digits, '-' and '_'",
            ));
        }
        Ok(())
    }

    /// `embedded_broker`, parsed.
    pub fn embedded_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.embedded_broker
            .as_deref()
            .map(|l| callgate_common::observe::parse_listen("sync.embedded_broker", l))
            .transpose()
    }

    /// `enroll_listen`, parsed.
    pub fn enroll_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.enroll_listen
            .as_deref()
            .map(|l| callgate_common::observe::parse_listen("sync.enroll_listen", l))
            .transpose()
    }

    /// `broker` split into host and port, or `None` when the link is off.
    pub fn broker_addr(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let Some(b) = &self.broker else {
            return Ok(None);
        };
        let (host, port) = b
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::invalid("sync.broker", "must be host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| ConfigError::invalid("sync.broker", "port must be 1-65535"))?;
        if host.is_empty() || port == 0 {
            return Err(ConfigError::invalid("sync.broker", "must be host:port"));
        }
        Ok(Some((host.trim_matches(['[', ']']).to_string(), port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_without_a_port_is_refused_by_key() {
        let c = SyncConfig {
            broker: Some("localhost".into()),
            ..SyncConfig::default()
        };
        assert!(c
            .broker_addr()
            .unwrap_err()
            .to_string()
            .contains("sync.broker"));
        let c = SyncConfig {
            broker: Some("127.0.0.1:8883".into()),
            ..SyncConfig::default()
        };
        assert_eq!(c.broker_addr().unwrap(), Some(("127.0.0.1".into(), 8883)));
    }

    #[test]
    fn a_replica_on_a_shared_subscription_or_with_an_odd_name_is_refused_by_key() {
        let both = SyncConfig {
            replica: Some("a".into()),
            shared_subscription: true,
            ..SyncConfig::default()
        };
        let e = both.check_replication().unwrap_err().to_string();
        assert!(e.contains("sync.shared_subscription"), "{e}");
        let odd = SyncConfig {
            replica: Some("a/b".into()),
            ..SyncConfig::default()
        };
        let e = odd.check_replication().unwrap_err().to_string();
        assert!(e.contains("sync.replica"), "{e}");
        let fine = SyncConfig {
            replica: Some("replica-2".into()),
            ..SyncConfig::default()
        };
        fine.check_replication().unwrap();
    }
}
