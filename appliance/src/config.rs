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
    /// `[agents]`: the agents' SIP side (desk phones, inbound calls for agent groups), their
    /// media ports and the safe-harbour message (used only when `[sip]` is configured).
    pub agents: AgentsConfig,
}

/// `[agents]`: the LAN side of the box's SIP — the agents' user agent.
///
/// The box runs two SIP sockets, like a session border controller's two sides: the trunk
/// router on `sip.listen` places the dialer's calls to the carriers, and the agents' user
/// agent on `agents.sip_listen` is the registrar of the desk phones (`[[sip.phones]]`),
/// calls their nailed-up legs and answers the inbound calls that `[[sip.routes]]` send to
/// agent groups (carriers deliver those numbers to this address; `[sip.inbound]` gates
/// their sources).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// The agents' SIP address; absent: no agents (no agent page, no phones).
    pub sip_listen: Option<String>,
    /// A TCP listener for desk phones besides `sip_listen` (UDP), IP:port. A phone that
    /// registers over TCP is called over TCP.
    pub sip_tcp_listen: Option<String>,
    /// A TLS listener for desk phones, IP:port. It presents the box's `[sip.tls]`
    /// certificate (`cert_file`, `key_file` are then required). A phone that registers
    /// over TLS is called over TLS, on its own connection.
    pub sip_tls_listen: Option<String>,
    /// The address offered for the agents' media; default: `sip_listen`'s address.
    pub media_address: Option<String>,
    /// First port of the agents' RTP range (even); must not overlap `[dialer]`'s.
    pub rtp_first_port: u16,
    /// Last port of the agents' RTP range.
    pub rtp_last_port: u16,
    /// Seconds an agent's phone may ring at login before the login fails.
    pub phone_ring_timeout_seconds: u32,
    /// Encrypt the agents' phone legs: the nailed-up call to each desk phone offers SRTP
    /// (RTP/SAVP with SDES keys, AES_CM_128_HMAC_SHA1_80) and a phone answering plain RTP
    /// is not used. Off by default (many desk phones need SRTP switched on first).
    pub phone_srtp: bool,
    /// Digest algorithms the registrar challenges desk phones with, in order (`SHA-256`,
    /// `MD5`; older phones only know MD5 and may take the first).
    pub digest_algorithms: Vec<String>,
    /// The recorded safe-harbour message (8 kHz WAV) played when no agent is free within
    /// 2 s of an answer. Absent: a tone sequence (record the real message for production).
    pub safe_harbour_prompt: Option<PathBuf>,
    /// Wrap-up seconds after an inbound call.
    pub inbound_wrap_up_seconds: u32,
    /// A queued inbound call overflows after this many seconds.
    pub queue_overflow_seconds: u32,
    /// Queued callers hear their position this often (seconds).
    pub position_every_seconds: u32,
    /// Where a queued inbound call goes after `queue_overflow_seconds`: `"hangup"`
    /// (default), `"robot"` (the script `overflow_script`) or `"voicemail"` (greeting
    /// `voicemail_greeting`, message recorded; needs `[recording]`).
    pub overflow: String,
    /// The robot script (TOML) overflowing callers run when `overflow = "robot"`; its prompt
    /// files are looked up in `<data_dir>/prompts`.
    pub overflow_script: Option<PathBuf>,
    /// The voicemail greeting (8 kHz WAV) when `overflow = "voicemail"`.
    pub voicemail_greeting: Option<PathBuf>,
    /// The longest voicemail message, seconds.
    pub voicemail_max_seconds: u32,
}

/// Where overflowing inbound callers go, checked.
#[derive(Debug, Clone)]
pub enum ValidOverflow {
    /// The call ends.
    HangUp,
    /// The caller runs this robot script.
    Robot(std::sync::Arc<callgate_robot::RobotScript>),
    /// The caller leaves a recorded message after the greeting.
    Voicemail {
        /// The greeting file (a valid 8 kHz WAV).
        greeting: PathBuf,
        /// The longest message.
        max_message: std::time::Duration,
    },
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            sip_listen: None,
            sip_tcp_listen: None,
            sip_tls_listen: None,
            media_address: None,
            rtp_first_port: 30_000,
            rtp_last_port: 30_999,
            phone_ring_timeout_seconds: 20,
            phone_srtp: false,
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            safe_harbour_prompt: None,
            inbound_wrap_up_seconds: 30,
            queue_overflow_seconds: 120,
            position_every_seconds: 30,
            overflow: "hangup".into(),
            overflow_script: None,
            voicemail_greeting: None,
            voicemail_max_seconds: 120,
        }
    }
}

/// `[agents]`, checked (present when `agents.sip_listen` is set).
#[derive(Debug, Clone)]
pub struct ValidAgents {
    /// The agents' SIP address.
    pub sip_listen: SocketAddr,
    /// The agents' TCP listener, if any.
    pub sip_tcp_listen: Option<SocketAddr>,
    /// The agents' TLS listener, if any, with the settings it serves (`[sip.tls]`'s
    /// certificate).
    pub sip_tls_listen: Option<(SocketAddr, callgate_sip_net::TlsSettings)>,
    /// The agents' media address.
    pub media_address: std::net::IpAddr,
    /// The agents' RTP range.
    pub ports: (u16, u16),
    /// How long a phone rings at login.
    pub phone_ring_timeout: std::time::Duration,
    /// SRTP on the phones' legs.
    pub phone_srtp: bool,
    /// Registrar digest algorithms.
    pub digest_algorithms: Vec<String>,
    /// The safe-harbour prompt file.
    pub safe_harbour_prompt: Option<PathBuf>,
    /// How the desk behaves.
    pub desk: crate::agents::desk::DeskSettings,
    /// Where overflowing inbound callers go.
    pub overflow: ValidOverflow,
}

impl ValidAgents {
    /// Where the agents' user agent listens for desk phones.
    pub fn phone_listeners(&self) -> crate::agents::lines::PhoneListeners {
        crate::agents::lines::PhoneListeners {
            udp: self.sip_listen,
            tcp: self.sip_tcp_listen,
            tls: self.sip_tls_listen.clone(),
        }
    }
}

impl AgentsConfig {
    /// Checks the values against `[sip]` and `[dialer]`, naming the key at fault.
    pub fn validate(
        &self,
        sip: Option<&crate::sip::config::SipSettings>,
        dialer: &ValidDialer,
        recording: bool,
        prompts: &Path,
    ) -> Result<Option<ValidAgents>, ConfigError> {
        let Some(listen) = &self.sip_listen else {
            return Ok(None);
        };
        let sip_listen: SocketAddr = listen.parse().map_err(|_| {
            ConfigError::invalid("agents.sip_listen", format!("`{listen}` is not IP:port"))
        })?;
        let Some(sip) = sip else {
            return Err(ConfigError::invalid(
                "agents.sip_listen",
                "agents need the SIP engine: add a [sip] section",
            ));
        };
        if sip_listen.port() == sip.listen.port()
            && (sip_listen.ip() == sip.listen.ip()
                || sip_listen.ip().is_unspecified()
                || sip.listen.ip().is_unspecified())
        {
            return Err(ConfigError::invalid(
                "agents.sip_listen",
                format!(
                    "{sip_listen} collides with sip.listen ({}): the agents' side needs its own socket",
                    sip.listen
                ),
            ));
        }
        let collides = |a: &SocketAddr, b: &SocketAddr| {
            a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        let stream_listen = |key: &str, value: &str| -> Result<SocketAddr, ConfigError> {
            let addr: SocketAddr = value
                .parse()
                .map_err(|_| ConfigError::invalid(key, format!("`{value}` is not IP:port")))?;
            // TCP and TLS listeners share the TCP port space.
            for (other_key, others) in [
                ("sip.tcp_listen", &sip.endpoint.tcp),
                ("sip.tls_listen", &sip.endpoint.tls),
            ] {
                if let Some(other) = others.iter().find(|o| collides(o, &addr)) {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{addr} collides with {other_key} ({other})"),
                    ));
                }
            }
            Ok(addr)
        };
        let sip_tcp_listen = self
            .sip_tcp_listen
            .as_deref()
            .map(|a| stream_listen("agents.sip_tcp_listen", a))
            .transpose()?;
        let sip_tls_listen = match self.sip_tls_listen.as_deref() {
            None => None,
            Some(a) => {
                let tls = stream_listen("agents.sip_tls_listen", a)?;
                if let Some(tcp) = sip_tcp_listen.filter(|t| collides(t, &tls)) {
                    return Err(ConfigError::invalid(
                        "agents.sip_tls_listen",
                        format!("{tls} collides with agents.sip_tcp_listen ({tcp})"),
                    ));
                }
                let Some(identity) = sip.tls_identity.clone() else {
                    return Err(ConfigError::invalid(
                        "agents.sip_tls_listen",
                        "the phones' TLS listener presents the box's certificate: \
                         set sip.tls.cert_file and sip.tls.key_file",
                    ));
                };
                Some((tls, identity))
            }
        };
        let media_address = match &self.media_address {
            Some(a) => a.parse::<std::net::IpAddr>().map_err(|_| {
                ConfigError::invalid(
                    "agents.media_address",
                    format!("`{a}` is not an IP address"),
                )
            })?,
            None if sip_listen.ip().is_unspecified() => {
                return Err(ConfigError::invalid(
                    "agents.media_address",
                    "required when agents.sip_listen is a wildcard address",
                ))
            }
            None => sip_listen.ip(),
        };
        crate::media::RtpPortRange::new(self.rtp_first_port, self.rtp_last_port)
            .map_err(|e| ConfigError::invalid("agents.rtp_first_port", e.to_string()))?;
        let (first, last) = dialer.ports;
        if self.rtp_first_port <= last && first <= self.rtp_last_port {
            return Err(ConfigError::invalid(
                "agents.rtp_first_port",
                format!(
                    "{}..={} overlaps the dialer's RTP range {first}..={last}",
                    self.rtp_first_port, self.rtp_last_port
                ),
            ));
        }
        if !(1..=120).contains(&self.phone_ring_timeout_seconds) {
            return Err(ConfigError::invalid(
                "agents.phone_ring_timeout_seconds",
                format!("{} is not within 1..=120", self.phone_ring_timeout_seconds),
            ));
        }
        if self.digest_algorithms.is_empty() {
            return Err(ConfigError::invalid(
                "agents.digest_algorithms",
                "name at least one of SHA-256, MD5",
            ));
        }
        for (i, a) in self.digest_algorithms.iter().enumerate() {
            if a != "SHA-256" && a != "MD5" {
                return Err(ConfigError::invalid(
                    format!("agents.digest_algorithms[{i}]"),
                    format!("`{a}` is not SHA-256 or MD5"),
                ));
            }
        }
        if let Some(path) = &self.safe_harbour_prompt {
            let bytes = std::fs::read(path).map_err(|e| {
                ConfigError::invalid(
                    "agents.safe_harbour_prompt",
                    format!("{}: {e}", path.display()),
                )
            })?;
            callgate_media::prompt::Prompt::from_wav(&bytes).map_err(|e| {
                ConfigError::invalid(
                    "agents.safe_harbour_prompt",
                    format!("{}: {e}", path.display()),
                )
            })?;
        }
        for (key, value) in [
            (
                "agents.inbound_wrap_up_seconds",
                self.inbound_wrap_up_seconds,
            ),
            ("agents.queue_overflow_seconds", self.queue_overflow_seconds),
            ("agents.position_every_seconds", self.position_every_seconds),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{value} is not within 1..=3600"),
                ));
            }
        }
        let overflow = self.overflow_route(recording, prompts)?;
        Ok(Some(ValidAgents {
            overflow,
            sip_listen,
            sip_tcp_listen,
            sip_tls_listen,
            media_address,
            ports: (self.rtp_first_port, self.rtp_last_port),
            phone_ring_timeout: std::time::Duration::from_secs(u64::from(
                self.phone_ring_timeout_seconds,
            )),
            phone_srtp: self.phone_srtp,
            digest_algorithms: self.digest_algorithms.clone(),
            safe_harbour_prompt: self.safe_harbour_prompt.clone(),
            desk: crate::agents::desk::DeskSettings {
                inbound_wrap_up_ms: i64::from(self.inbound_wrap_up_seconds) * 1000,
                queue_overflow_after_ms: i64::from(self.queue_overflow_seconds) * 1000,
                position_every_ms: i64::from(self.position_every_seconds) * 1000,
                ..crate::agents::desk::DeskSettings::default()
            },
        }))
    }
}

impl AgentsConfig {
    /// Checks `overflow` and the keys it needs, naming the key at fault.
    fn overflow_route(
        &self,
        recording: bool,
        prompts: &Path,
    ) -> Result<ValidOverflow, ConfigError> {
        let unused = |key: &str, value: &Option<PathBuf>| match value {
            Some(_) => Err(ConfigError::invalid(
                key,
                format!(
                    "only used with another agents.overflow (it is \"{}\")",
                    self.overflow
                ),
            )),
            None => Ok(()),
        };
        match self.overflow.as_str() {
            "hangup" => {
                unused("agents.overflow_script", &self.overflow_script)?;
                unused("agents.voicemail_greeting", &self.voicemail_greeting)?;
                Ok(ValidOverflow::HangUp)
            }
            "robot" => {
                unused("agents.voicemail_greeting", &self.voicemail_greeting)?;
                let Some(path) = &self.overflow_script else {
                    return Err(ConfigError::invalid(
                        "agents.overflow_script",
                        "required with agents.overflow = \"robot\"",
                    ));
                };
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        "agents.overflow_script",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                let script = callgate_robot::RobotScript::parse(&text, prompts).map_err(|e| {
                    ConfigError::invalid(
                        "agents.overflow_script",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                Ok(ValidOverflow::Robot(std::sync::Arc::new(script)))
            }
            "voicemail" => {
                unused("agents.overflow_script", &self.overflow_script)?;
                if !recording {
                    return Err(ConfigError::invalid(
                        "agents.overflow",
                        "voicemail records the callers' messages: configure [recording] recipients",
                    ));
                }
                let Some(path) = &self.voicemail_greeting else {
                    return Err(ConfigError::invalid(
                        "agents.voicemail_greeting",
                        "required with agents.overflow = \"voicemail\"",
                    ));
                };
                let bytes = std::fs::read(path).map_err(|e| {
                    ConfigError::invalid(
                        "agents.voicemail_greeting",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                callgate_media::prompt::Prompt::from_wav(&bytes).map_err(|e| {
                    ConfigError::invalid(
                        "agents.voicemail_greeting",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                if !(1..=600).contains(&self.voicemail_max_seconds) {
                    return Err(ConfigError::invalid(
                        "agents.voicemail_max_seconds",
                        format!("{} is not within 1..=600", self.voicemail_max_seconds),
                    ));
                }
                Ok(ValidOverflow::Voicemail {
                    greeting: path.clone(),
                    max_message: std::time::Duration::from_secs(u64::from(
                        self.voicemail_max_seconds,
                    )),
                })
            }
            other => Err(ConfigError::invalid(
                "agents.overflow",
                format!("`{other}` is not one of \"hangup\", \"robot\", \"voicemail\""),
            )),
        }
    }
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
    /// Which answered calls are screened for an answering machine: `"off"` (default),
    /// `"agentless"` (agentless campaigns) or `"all"` (every call but previewed ones).
    pub machine_detection: String,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            rtp_first_port: 20_000,
            rtp_last_port: 29_999,
            media_address: None,
            ring_timeout_seconds: 30,
            announcement: None,
            machine_detection: "off".into(),
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
    /// Which answered calls are screened for an answering machine.
    pub machine_detection: crate::dialer::dispatch::MachineDetection,
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
        use crate::dialer::dispatch::MachineDetection;
        let machine_detection = match self.machine_detection.as_str() {
            "off" => MachineDetection::Off,
            "agentless" => MachineDetection::Agentless,
            "all" => MachineDetection::All,
            other => {
                return Err(ConfigError::invalid(
                    "dialer.machine_detection",
                    format!("`{other}` is not one of \"off\", \"agentless\", \"all\""),
                ))
            }
        };
        Ok(ValidDialer {
            machine_detection,
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
    /// `[agents]`, validated, when `agents.sip_listen` is set.
    pub agents: Option<ValidAgents>,
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
        let agents = self.agents.validate(
            sip.as_ref(),
            &dialer,
            recording.is_some(),
            &self.appliance.data_dir.join("prompts"),
        )?;
        Ok(ValidConfig {
            raw: self,
            id,
            ops_listen,
            web_listen,
            sip,
            recording,
            dialer,
            agents,
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
        let err = parse("[dialer]\nmachine_detection = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dialer.machine_detection") && err.contains("sometimes"),
            "{err}"
        );
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
    fn the_inbound_overflow_route_is_chosen_and_validated_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let base =
            "[sip]\nlisten = \"127.0.0.1:5060\"\n[agents]\nsip_listen = \"127.0.0.1:5062\"\n";
        let ok = parse(base).unwrap();
        assert!(matches!(ok.agents.unwrap().overflow, ValidOverflow::HangUp));
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err().to_string();
        let e = err("overflow = \"operator\"\n");
        assert!(
            e.contains("agents.overflow") && e.contains("operator"),
            "{e}"
        );
        let e = err("overflow = \"robot\"\n");
        assert!(
            e.contains("agents.overflow_script") && e.contains("required"),
            "{e}"
        );
        // A script with a broken step is refused naming the key, the file and the step.
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "format = 1\nname = \"after-hours\"\nversion = 1\nstart = \"bye\"\n\n[steps.bye]\nkind = \"hangup\"\ndisposition = \"done\"\nnext = \"nowhere\"\n",
        )
        .unwrap();
        let e = err(&format!(
            "overflow = \"robot\"\noverflow_script = {:?}\n",
            bad
        ));
        assert!(
            e.contains("agents.overflow_script") && e.contains("bad.toml") && e.contains("bye"),
            "{e}"
        );
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "format = 1\nname = \"after-hours\"\nversion = 1\nstart = \"bye\"\n\n[steps.bye]\nkind = \"hangup\"\ndisposition = \"done\"\n",
        )
        .unwrap();
        let ok = parse(&format!(
            "{base}overflow = \"robot\"\noverflow_script = {:?}\n",
            good
        ))
        .unwrap();
        match ok.agents.unwrap().overflow {
            ValidOverflow::Robot(script) => assert_eq!(script.name(), "after-hours"),
            other => panic!("{other:?}"),
        }
        let e = err(&format!("overflow_script = {:?}\n", good));
        assert!(
            e.contains("agents.overflow_script") && e.contains("hangup"),
            "{e}"
        );
        // Voicemail records messages: it needs [recording] and a greeting.
        let e = err("overflow = \"voicemail\"\n");
        assert!(
            e.contains("agents.overflow") && e.contains("[recording]"),
            "{e}"
        );
    }

    #[test]
    fn agent_settings_are_validated_by_key() {
        let sip = "[sip]\nlisten = \"127.0.0.1:5060\"\n";
        let err = parse("[agents]\nsip_listen = \"127.0.0.1:5062\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agents.sip_listen") && err.contains("[sip]"),
            "{err}"
        );
        let err = parse(&format!("{sip}[agents]\nsip_listen = \"5062\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agents.sip_listen"), "{err}");
        let err = parse(&format!("{sip}[agents]\nsip_listen = \"0.0.0.0:5060\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agents.sip_listen") && err.contains("collides with sip.listen"),
            "{err}"
        );
        let err = parse(&format!("{sip}[agents]\nsip_listen = \"0.0.0.0:5062\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agents.media_address"), "{err}");
        let err = parse(&format!(
            "{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\nrtp_first_port = 29000\nrtp_last_port = 29999\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.rtp_first_port") && err.contains("overlaps"),
            "{err}"
        );
        let err = parse(&format!(
            "{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\ndigest_algorithms = [\"MD5\", \"SHA-1\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("agents.digest_algorithms[1]"), "{err}");
        let err = parse(&format!(
            "{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\nsafe_harbour_prompt = \"/nonexistent.wav\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("agents.safe_harbour_prompt"), "{err}");
        let err = parse(&format!(
            "{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\nqueue_overflow_seconds = 0\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("agents.queue_overflow_seconds"), "{err}");
        let err = parse(&format!(
            "{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\nsip_tcp_listen = \"tcp:5062\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.sip_tcp_listen") && err.contains("`tcp:5062`"),
            "{err}"
        );
        let err = parse(
            "[sip]\nlisten = \"127.0.0.1:5060\"\ntcp_listen = [\"127.0.0.1:5063\"]\n\
             [agents]\nsip_listen = \"127.0.0.1:5062\"\nsip_tcp_listen = \"0.0.0.0:5063\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.sip_tcp_listen") && err.contains("collides with sip.tcp_listen"),
            "{err}"
        );
        let tcp = parse(&format!(
            "{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\nsip_tcp_listen = \"127.0.0.1:5062\"\n"
        ))
        .unwrap();
        assert_eq!(
            tcp.agents.unwrap().sip_tcp_listen,
            Some("127.0.0.1:5062".parse().unwrap())
        );
        let ok = parse(&format!("{sip}[agents]\nsip_listen = \"127.0.0.1:5062\"\n")).unwrap();
        let agents = ok.agents.unwrap();
        assert_eq!(agents.sip_listen.port(), 5062);
        assert_eq!(agents.sip_tcp_listen, None);
        assert_eq!(agents.desk.safe_harbour_after_ms, 2_000);
        assert!(parse(sip).unwrap().agents.is_none());
    }

    #[test]
    fn the_phones_tls_listener_needs_the_boxs_certificate_and_a_port_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["branch.example".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.display(), key.display());
        let sip = "[sip]\nlisten = \"127.0.0.1:5060\"\n";
        let identity = format!("[sip.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n");
        let agents = "[agents]\nsip_listen = \"127.0.0.1:5062\"\n";
        // No identity at all, or only the roots for TLS trunks: refused naming both keys.
        for tls in ["", "[sip.tls]\nca_file = \"/dev/null\"\n"] {
            let err = parse(&format!(
                "{sip}{tls}{agents}sip_tls_listen = \"127.0.0.1:5063\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("agents.sip_tls_listen")
                    && err.contains("sip.tls.cert_file")
                    && err.contains("sip.tls.key_file"),
                "{err}"
            );
        }
        let err = parse(&format!(
            "{sip}{identity}{agents}sip_tls_listen = \"tls:5063\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.sip_tls_listen") && err.contains("`tls:5063`"),
            "{err}"
        );
        let err = parse(&format!(
            "{sip}{identity}{agents}sip_tcp_listen = \"127.0.0.1:5063\"\nsip_tls_listen = \"0.0.0.0:5063\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.sip_tls_listen")
                && err.contains("collides with agents.sip_tcp_listen (127.0.0.1:5063)"),
            "{err}"
        );
        let err = parse(&format!(
            "{sip}tls_listen = [\"127.0.0.1:5061\"]\n{identity}ca_file = \"{cert}\"\n{agents}sip_tls_listen = \"127.0.0.1:5061\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.sip_tls_listen") && err.contains("collides with sip.tls_listen"),
            "{err}"
        );
        let err = parse(&format!(
            "{sip}tcp_listen = [\"0.0.0.0:5061\"]\n{identity}{agents}sip_tls_listen = \"127.0.0.1:5061\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agents.sip_tls_listen") && err.contains("collides with sip.tcp_listen"),
            "{err}"
        );
        // A certificate that cannot be read is refused by its key, even when only the
        // phones would use it.
        let err = parse(&format!(
            "{sip}[sip.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"{key}\"\n{agents}sip_tls_listen = \"127.0.0.1:5063\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("sip.tls.cert_file"), "{err}");
        // The box's certificate serves the phones even when [sip] itself uses no TLS.
        let ok = parse(&format!(
            "{sip}{identity}{agents}sip_tcp_listen = \"127.0.0.1:5062\"\nsip_tls_listen = \"127.0.0.1:5063\"\n"
        ))
        .unwrap();
        assert!(ok.sip.as_ref().unwrap().endpoint.tls_settings.is_none());
        let agents = ok.agents.unwrap();
        let (addr, tls) = agents.sip_tls_listen.unwrap();
        assert_eq!(addr, "127.0.0.1:5063".parse().unwrap());
        assert!(tls.can_serve());
        assert_eq!(
            agents.sip_tcp_listen,
            Some("127.0.0.1:5062".parse().unwrap())
        );
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
