//! The appliance's configuration: one TOML file (`/etc/callgate/appliance.toml` on the box),
//! parsed into typed structs with `deny_unknown_fields` and validated at load with errors that
//! name the key. A bad file is refused whole; the running config stays.

use callgate_common::ids::ApplianceId;
use callgate_common::observe::{self, ConfigError, LogConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplianceConfig {
    /// `[appliance]`: identity and data directory.
    pub appliance: IdentityConfig,
    /// `[log]`: level and format.
    pub log: LogConfig,
    /// `[ops]`: the local health/metrics listener.
    pub ops: OpsConfig,
    /// `[sync]`: the link to the coordinator.
    pub sync: crate::sync::settings::SyncConfig,
}

/// `[appliance]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The appliance's id before enrollment sets it from the certificate.
    pub id: Option<String>,
    /// Directory for the SQLite store and recordings; created if missing.
    pub data_dir: PathBuf,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            id: None,
            data_dir: PathBuf::from("callgate-appliance-data"),
        }
    }
}

/// `[ops]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Where `/healthz` and `/metrics` listen; loopback by default.
    pub listen: String,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

/// A config that passed validation, with its values already parsed.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The raw config.
    pub raw: ApplianceConfig,
    /// `appliance.id`, parsed.
    pub id: Option<ApplianceId>,
    /// `ops.listen`, parsed.
    pub ops_listen: SocketAddr,
}

impl ApplianceConfig {
    /// Loads `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<ValidConfig, ConfigError> {
        let raw: ApplianceConfig = match path {
            Some(p) => observe::load_toml(p)?,
            None => ApplianceConfig::default(),
        };
        raw.validate()
    }

    /// Checks every value and parses the ones that need it.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let id = match &self.appliance.id {
            Some(s) => Some(
                ApplianceId::new(s.as_str())
                    .map_err(|e| ConfigError::invalid("appliance.id", e.to_string()))?,
            ),
            None => None,
        };
        let ops_listen = observe::parse_listen("ops.listen", &self.ops.listen)?;
        self.sync.broker_addr()?;
        if self.appliance.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "appliance.data_dir",
                "must not be empty",
            ));
        }
        Ok(ValidConfig {
            raw: self,
            id,
            ops_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        observe::parse_toml::<ApplianceConfig>(Path::new("a.toml"), text)?.validate()
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../config/appliance.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.id.unwrap().as_str(), "branch-example");
    }

    #[test]
    fn a_bad_appliance_id_names_the_key() {
        let err = parse("[appliance]\nid = \"Branch/1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("appliance.id"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused() {
        let err = parse("[ops]\nlisten = \"9090\"\n").unwrap_err().to_string();
        assert!(err.contains("ops.listen"), "{err}");
        let err = parse("[appliance]\ndatadir = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("datadir"), "{err}");
    }
}
