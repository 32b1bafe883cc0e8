//! The coordinator's configuration: one TOML file, parsed into typed structs with
//! `deny_unknown_fields` and validated at load with errors that name the key.
//!
//! Every field has an embedded default, so `callgate-coordinator all-in-one` runs with no
//! file at all: HTTP on `127.0.0.1:8080`, data in `./callgate-data`.

use callgate_common::observe::{self, ConfigError, LogConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// `[log]`: level and format.
    pub log: LogConfig,
    /// `[http]`: where the API, console, health and metrics listen.
    pub http: HttpConfig,
    /// `[store]`: where data lives.
    pub store: StoreConfig,
    /// `[sync]`: the MQTT link to the appliances.
    pub sync: crate::sync::settings::SyncConfig,
    /// `[console]`: the HQ web console's HTTPS listener.
    pub console: ConsoleConfig,
}

/// Where the console listens when `[console] listen` is absent (not 8443: the appliance's
/// local web UI defaults to that, and a demo runs both on one machine).
pub const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:9443";

/// `[console]`: the HQ web console, on its own HTTPS listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// `ip:port` to serve the console on (HTTPS only). When absent, the built-in
    /// [`DEFAULT_CONSOLE_LISTEN`] — and if that port is taken the coordinator runs without
    /// the console and says so in its log; an address given here must be free. `""` or
    /// `"off"`: no console.
    pub listen: Option<String>,
    /// PEM certificate chain; with `key_file`. A self-signed certificate is generated into
    /// `data_dir/console/` when both are absent.
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of `certificate_file`.
    pub key_file: Option<PathBuf>,
    /// Names and addresses a generated certificate covers.
    pub certificate_names: Vec<String>,
    /// Minutes of inactivity after which a session ends.
    pub session_idle_minutes: u32,
    /// Hours after which a session ends however active.
    pub session_max_hours: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: None,
            certificate_file: None,
            key_file: None,
            certificate_names: vec!["localhost".into(), "127.0.0.1".into()],
            session_idle_minutes: 30,
            session_max_hours: 12,
        }
    }
}

impl ConsoleConfig {
    /// `listen`, parsed.
    /// `listen`, parsed (the default when absent); `None` when the console is off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.listen.as_deref().map(str::trim) {
            Some("" | "off") => Ok(None),
            Some(l) => observe::parse_listen("console.listen", l).map(Some),
            None => observe::parse_listen("console.listen", DEFAULT_CONSOLE_LISTEN).map(Some),
        }
    }

    /// The console's settings, when it is on.
    pub fn settings(
        &self,
        data_dir: &Path,
    ) -> Result<Option<crate::console::ConsoleSettings>, ConfigError> {
        let Some(listen) = self.listen_addr()? else {
            return Ok(None);
        };
        let certificate_files = match (&self.certificate_file, &self.key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "console.key_file",
                    "is required with console.certificate_file",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "console.certificate_file",
                    "is required with console.key_file",
                ))
            }
        };
        if self.session_idle_minutes == 0 || self.session_max_hours == 0 {
            return Err(ConfigError::invalid(
                "console.session_idle_minutes",
                "session lifetimes must be at least 1",
            ));
        }
        Ok(Some(crate::console::ConsoleSettings {
            listen,
            listen_is_default: self.listen.is_none(),
            certificate_files,
            certificate_names: self.certificate_names.clone(),
            sessions: crate::console::auth::SessionPolicy {
                idle_ms: i64::from(self.session_idle_minutes) * 60_000,
                absolute_ms: i64::from(self.session_max_hours) * 3_600_000,
            },
            data_dir: data_dir.to_path_buf(),
        }))
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port, e.g. `127.0.0.1:8080` or `[::]:8443`.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory for the SQLite database and other local data; created if missing.
    pub data_dir: PathBuf,
    /// `postgres://user:password@host/db` to use PostgreSQL instead of SQLite.
    pub database_url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("callgate-data"),
            database_url: None,
        }
    }
}

/// A config that passed validation, with its values already parsed.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The raw config.
    pub raw: CoordinatorConfig,
    /// `http.listen`, parsed.
    pub http_listen: SocketAddr,
}

impl CoordinatorConfig {
    /// Loads `path`, or the embedded defaults when `path` is `None`; a `database_url` from
    /// the command line overrides the file's.
    pub fn load(
        path: Option<&Path>,
        database_url: Option<String>,
    ) -> Result<ValidConfig, ConfigError> {
        let mut raw: CoordinatorConfig = match path {
            Some(p) => observe::load_toml(p)?,
            None => CoordinatorConfig::default(),
        };
        if database_url.is_some() {
            raw.store.database_url = database_url;
        }
        raw.validate()
    }

    /// Checks every value and parses the ones that need it.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let http_listen = observe::parse_listen("http.listen", &self.http.listen)?;
        if let Some(url) = &self.store.database_url {
            if callgate_common::store::Backend::of_url(url).is_none() {
                return Err(ConfigError::invalid(
                    "store.database_url",
                    "must start with sqlite:// or postgres://",
                ));
            }
        }
        self.sync.broker_addr()?;
        self.sync.enroll_addr()?;
        self.sync.embedded_addr()?;
        self.sync.check_replication()?;
        self.console.settings(&self.store.data_dir)?;
        if self.store.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("store.data_dir", "must not be empty"));
        }
        Ok(ValidConfig {
            raw: self,
            http_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        observe::parse_toml::<CoordinatorConfig>(Path::new("c.toml"), text)?.validate()
    }

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.raw.store.data_dir, PathBuf::from("callgate-data"));
    }

    #[test]
    fn a_bad_listen_address_names_the_key() {
        let err = parse("[http]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.listen") && err.contains("localhost"),
            "{err}"
        );
    }

    #[test]
    fn a_database_url_of_another_engine_names_the_key() {
        let err = parse("[store]\ndatabase_url = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.database_url"), "{err}");
        assert!(parse("[store]\ndatabase_url = \"postgres://h/db\"\n").is_ok());
    }

    #[test]
    fn the_console_is_on_by_default_off_when_asked_and_its_settings_name_the_key_at_fault() {
        let c = parse("").unwrap();
        let s = c.raw.console.settings(Path::new("d")).unwrap().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_CONSOLE_LISTEN);
        assert!(s.listen_is_default);
        for off in ["", "off"] {
            let c = parse(&format!("[console]\nlisten = {off:?}\n")).unwrap();
            assert!(c.raw.console.settings(Path::new("d")).unwrap().is_none());
        }
        let c = parse("[console]\nlisten = \"127.0.0.1:8443\"\n").unwrap();
        let s = c.raw.console.settings(Path::new("d")).unwrap().unwrap();
        assert_eq!(s.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(s.certificate_files.is_none());
        let err = parse("[console]\nlisten = \"127.0.0.1:8443\"\ncertificate_file = \"c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("console.key_file"), "{err}");
        let err = parse("[console]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("console.listen"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse("[http]\nlisten = \"127.0.0.1:1\"\nport = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = parse("[htttp]\n").unwrap_err().to_string();
        assert!(err.contains("htttp"), "{err}");
    }
}
