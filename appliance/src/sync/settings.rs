//! `[sync]` in the appliance's config: the broker to reach the coordinator through.

use callgate_common::observe::ConfigError;
use serde::{Deserialize, Serialize};

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// `host:port` of the broker's mutual-TLS listener (enrollment fills it in); the link
    /// is off when absent. The host must be a name or IP the broker's certificate carries.
    pub broker: Option<String>,
    /// Disk quota of the outbox, MiB; the alarm rises at 80 % of it.
    pub outbox_quota_mib: u64,
    /// Ask the coordinator for a new certificate when this many days are left (appliance
    /// certificates last 90 days).
    pub renew_before_days: u64,
    /// Telemetry: at least one report per this many seconds, more often when calls or
    /// agents change (at most one per 5 s). 0 turns the producer off.
    pub telemetry_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            broker: None,
            outbox_quota_mib: 512,
            renew_before_days: 30,
            telemetry_secs: 60,
        }
    }
}

impl SyncConfig {
    /// `broker` split into host and port, or `None` when the link is off.
    pub fn broker_addr(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let Some(b) = &self.broker else {
            return Ok(None);
        };
        let bad = || ConfigError::invalid("sync.broker", format!("`{b}` is not host:port"));
        let (host, port) = b.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        if self.outbox_quota_mib == 0 {
            return Err(ConfigError::invalid(
                "sync.outbox_quota_mib",
                "must be at least 1",
            ));
        }
        Ok(Some((host.trim_matches(['[', ']']).to_string(), port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_that_is_not_host_port_is_refused_by_key() {
        for bad in ["broker", "h:x", ":8883", "h:0"] {
            let c = SyncConfig {
                broker: Some(bad.into()),
                ..SyncConfig::default()
            };
            let err = c.broker_addr().unwrap_err().to_string();
            assert!(err.contains("sync.broker"), "{bad}: {err}");
        }
    }
}
