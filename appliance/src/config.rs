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
    /// `[board]`: the front panel's hardware.
    pub board: BoardConfig,
    /// `[sync]`: the link to the coordinator.
    pub sync: crate::sync::settings::SyncConfig,
    /// `[web]`: the technicians' local HTTPS UI.
    pub web: WebConfig,
    /// `[sip]`: trunks, phones, routes and timers (absent: no SIP engine configured).
    pub sip: Option<crate::sip::config::SipConfig>,
    /// `[recording]`: recipients, segments, retention, disk guard.
    pub recording: crate::recording::RecordingSettings,
    /// `[dialer]`: media ports, ring timeout and the announcement of the campaign executor
    /// (used only when `[sip]` is configured).
    pub dialer: DialerConfig,
}

/// `[dialer]`: how the campaign executor places calls.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialerConfig {
    /// First port of the RTP range (even).
    pub rtp_first_port: u16,
    /// Last port of the RTP range (odd: RTCP of the last pair).
    pub rtp_last_port: u16,
    /// The address offered for media in SDP; default: `sip.listen`'s address (which must then
    /// not be a wildcard).
    pub media_address: Option<String>,
    /// Seconds an unanswered attempt rings before it is cancelled.
    pub ring_timeout_seconds: u32,
    /// The WAV prompt (8 kHz mono µ-law, A-law or PCM16) played to answered calls of
    /// agentless campaigns until robot scripts run them. Absent: a short tone sequence.
    pub announcement: Option<PathBuf>,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            rtp_first_port: 20_000,
            rtp_last_port: 29_999,
            media_address: None,
            ring_timeout_seconds: 30,
            announcement: None,
        }
    }
}

/// `[dialer]`, checked.
#[derive(Debug, Clone)]
pub struct ValidDialer {
    /// The RTP port range.
    pub ports: (u16, u16),
    /// The media address, when set (else the SIP listen address).
    pub media_address: Option<std::net::IpAddr>,
    /// Ring timeout.
    pub ring_timeout: std::time::Duration,
    /// The announcement file.
    pub announcement: Option<PathBuf>,
}

impl DialerConfig {
    /// Checks the values, naming the key at fault.
    pub fn validate(&self) -> Result<ValidDialer, ConfigError> {
        crate::media::RtpPortRange::new(self.rtp_first_port, self.rtp_last_port)
            .map_err(|e| ConfigError::invalid("dialer.rtp_first_port", e.to_string()))?;
        let media_address = match &self.media_address {
            Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| {
                ConfigError::invalid(
                    "dialer.media_address",
                    format!("`{a}` is not an IP address"),
                )
            })?),
            None => None,
        };
        if !(1..=600).contains(&self.ring_timeout_seconds) {
            return Err(ConfigError::invalid(
                "dialer.ring_timeout_seconds",
                format!("{} is not within 1..=600", self.ring_timeout_seconds),
            ));
        }
        if let Some(path) = &self.announcement {
            let bytes = std::fs::read(path).map_err(|e| {
                ConfigError::invalid("dialer.announcement", format!("{}: {e}", path.display()))
            })?;
            callgate_media::prompt::Prompt::from_wav(&bytes).map_err(|e| {
                ConfigError::invalid("dialer.announcement", format!("{}: {e}", path.display()))
            })?;
        }
        Ok(ValidDialer {
            ports: (self.rtp_first_port, self.rtp_last_port),
            media_address,
            ring_timeout: std::time::Duration::from_secs(u64::from(self.ring_timeout_seconds)),
            announcement: self.announcement.clone(),
        })
    }
}

/// `[web]`: the technicians' local HTTPS UI.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the UI at all.
    pub enabled: bool,
    /// Address and port (`0.0.0.0:443` on a box).
    pub listen: String,
    /// The setup code file: on the image a root-only file written at manufacture (the code on
    /// the label); elsewhere created on first start. Default: `<data_dir>/setup-code`.
    pub setup_code_file: Option<PathBuf>,
    /// Host names the certificate covers besides the box's addresses.
    pub certificate_names: Vec<String>,
    /// Minutes of inactivity after which a session ends.
    pub session_idle_minutes: u32,
    /// Hours after which a session ends however active.
    pub session_max_hours: u32,
    /// The command that reboots the box, e.g. `["systemctl", "reboot"]`; empty: not offered.
    pub reboot_command: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: "127.0.0.1:8443".into(),
            setup_code_file: None,
            certificate_names: vec!["callgate.local".into(), "localhost".into()],
            session_idle_minutes: 30,
            session_max_hours: 12,
            reboot_command: Vec::new(),
        }
    }
}

/// `[board]`: which board the daemon drives and where its parts are wired.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// `simulated` (development, the demo, CI), `linux` (a real box) or `none`.
    pub kind: BoardKind,
    /// GPIO chip of the LEDs and button (`linux`).
    pub gpio_chip: PathBuf,
    /// Line offsets of the power, cloud, trunks and recording LEDs (`linux`).
    pub led_lines: Vec<u32>,
    /// Line offset of the button (`linux`).
    pub button_line: u32,
    /// Whether the button reads low when pressed (`linux`).
    pub button_active_low: bool,
    /// I²C bus of the LM75 (`linux`).
    pub i2c_bus: PathBuf,
    /// The LM75's bus address, 0x48 to 0x4f (`linux`).
    pub lm75_address: u8,
    /// `9` (LM75A) or `11` (LM75B) significant bits (`linux`).
    pub lm75_bits: u8,
    /// `/dev/watchdog` to arm the hardware watchdog (`linux`; absent: not armed).
    pub watchdog_device: Option<PathBuf>,
}

/// Which board the daemon drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BoardKind {
    /// No front panel at all.
    None,
    /// The simulated board.
    Simulated,
    /// The real board through the GPIO character device, i2c-dev and /dev/watchdog.
    Linux,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            kind: BoardKind::Simulated,
            gpio_chip: PathBuf::from("/dev/gpiochip0"),
            led_lines: vec![17, 27, 22, 23],
            button_line: 24,
            button_active_low: true,
            i2c_bus: PathBuf::from("/dev/i2c-1"),
            lm75_address: 0x48,
            lm75_bits: 11,
            watchdog_device: None,
        }
    }
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
    /// `web.listen`, parsed.
    pub web_listen: SocketAddr,
    /// `[sip]`, validated, when present.
    pub sip: Option<crate::sip::config::SipSettings>,
    /// `[recording]`, validated, when recipients are configured.
    pub recording: Option<crate::recording::ValidRecording>,
    /// `[dialer]`, validated.
    pub dialer: ValidDialer,
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
        let web_listen = observe::parse_listen("web.listen", &self.web.listen)?;
        if self.web.session_idle_minutes == 0 || self.web.session_max_hours == 0 {
            return Err(ConfigError::invalid(
                "web.session_idle_minutes",
                "session lifetimes must be at least 1",
            ));
        }
        if self.board.led_lines.len() != 4 {
            return Err(ConfigError::invalid(
                "board.led_lines",
                format!(
                    "needs 4 line offsets (power, cloud, trunks, recording), got {}",
                    self.board.led_lines.len()
                ),
            ));
        }
        if !(0x48..=0x4F).contains(&self.board.lm75_address) {
            return Err(ConfigError::invalid(
                "board.lm75_address",
                format!(
                    "{:#04x} is not an LM75 address (0x48 to 0x4f)",
                    self.board.lm75_address
                ),
            ));
        }
        if ![9, 11].contains(&self.board.lm75_bits) {
            return Err(ConfigError::invalid("board.lm75_bits", "must be 9 or 11"));
        }
        self.sync.broker_addr()?;
        if self.appliance.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "appliance.data_dir",
                "must not be empty",
            ));
        }
        let sip = match &self.sip {
            Some(sip) => Some(sip.validate().map_err(|e| match e {
                crate::sip::config::SipConfigError::Invalid { key, reason } => {
                    ConfigError::invalid(key, reason)
                }
                other => ConfigError::invalid("sip", other.to_string()),
            })?),
            None => None,
        };
        let recording = if self.recording.recipients.is_empty() {
            None
        } else {
            Some(self.recording.validate(&self.appliance.data_dir)?)
        };
        let dialer = self.dialer.validate()?;
        if let Some(sip) = &sip {
            if dialer.media_address.is_none() && sip.listen.ip().is_unspecified() {
                return Err(ConfigError::invalid(
                    "dialer.media_address",
                    "required when sip.listen is a wildcard address",
                ));
            }
        }
        Ok(ValidConfig {
            raw: self,
            id,
            ops_listen,
            web_listen,
            sip,
            recording,
            dialer,
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
    fn sip_and_recording_sections_are_validated_by_key() {
        let err = parse("[sip]\nlisten = \"5060\"\n").unwrap_err().to_string();
        assert!(err.contains("sip.listen"), "{err}");
        let err = parse("[recording]\nrecipients = [\"not-a-key\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recording.recipients[0]"), "{err}");
        let ok = parse("[sip]\nlisten = \"127.0.0.1:5070\"\n").unwrap();
        assert!(ok.sip.is_some() && ok.recording.is_none());
    }

    #[test]
    fn dialer_settings_are_validated_by_key() {
        let err = parse("[dialer]\nrtp_first_port = 20001\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialer.rtp_first_port"), "{err}");
        let err = parse("[dialer]\nring_timeout_seconds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialer.ring_timeout_seconds"), "{err}");
        let err = parse("[dialer]\nannouncement = \"/nonexistent/prompt.wav\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialer.announcement"), "{err}");
        let err = parse("[sip]\nlisten = \"0.0.0.0:5060\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialer.media_address"), "{err}");
        let ok =
            parse("[sip]\nlisten = \"0.0.0.0:5060\"\n[dialer]\nmedia_address = \"10.0.0.2\"\n")
                .unwrap();
        assert_eq!(ok.dialer.ring_timeout.as_secs(), 30);
    }

    #[test]
    fn board_wiring_is_validated_by_key() {
        let err = parse("[board]\nled_lines = [1, 2]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("board.led_lines"), "{err}");
        let err = parse("[board]\nlm75_address = 0x20\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("board.lm75_address") && err.contains("0x20"),
            "{err}"
        );
        let err = parse("[board]\nkind = \"raspberry\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("raspberry"), "{err}");
        let ok = parse("[board]\nkind = \"linux\"\nlm75_address = 0x4f\n").unwrap();
        assert_eq!(ok.raw.board.kind, BoardKind::Linux);
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
