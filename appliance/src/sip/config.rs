//! The `[sip]` section of the appliance's TOML config: listener, timers, trunks, probing,
//! inbound policy and the inbound route table. Parsed with `deny_unknown_fields` and
//! validated at load with errors that name the key (`sip.trunks[1].address: ...`).
//! Turns into the engine's types (`Trunk`, `InboundPolicy`, ...); owns no runtime state.

use callgate_sip::digest::DigestCredentials;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::registrar::PhoneAccount;
use callgate_sip::transaction::TimerConfig;
use callgate_sip::trunk::router::RouterConfig;
use callgate_sip::trunk::{ProbePolicy, Trunk};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Why a SIP config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SipConfigError {
    /// The file could not be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The TOML does not parse or has unknown/mistyped keys.
    #[error("{0}")]
    Syntax(String),
    /// A value is out of range or inconsistent; `key` names it.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `sip.trunks[0].max_channels`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SipConfigError {
    SipConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// User part of our From/Contact.
    #[serde(default = "default_user")]
    pub user: String,
    /// Timer T1 in milliseconds (RTT estimate).
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    /// Timer T2 in milliseconds.
    #[serde(default = "default_t2")]
    pub t2_ms: u64,
    /// Give up a trunk that sends no provisional response within this many ms.
    #[serde(default = "default_answer_wait")]
    pub answer_wait_ms: u64,
    /// Session timer (RFC 4028) to ask carriers for, in seconds; omit for none.
    pub session_expires_s: Option<u32>,
    /// `[sip.probe]`: OPTIONS probing; omit to disable.
    pub probe: Option<ProbeConfig>,
    /// `[sip.inbound]`.
    #[serde(default)]
    pub inbound: InboundConfig,
    /// `[[sip.trunks]]`.
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    /// `[[sip.routes]]`: called number → target.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[[sip.phones]]`: the desk phones that may register (agents' phones among them; an
    /// agent's roster entry names its phone by `username`).
    #[serde(default)]
    pub phones: Vec<PhoneConfig>,
}

/// `[[sip.phones]]`: one desk phone's registrar credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    /// The user part of the phone's address and its digest username.
    pub username: String,
    /// Its digest password.
    pub password: String,
}

fn default_listen() -> String {
    "0.0.0.0:5060".into()
}
fn default_user() -> String {
    "callgate".into()
}
fn default_t1() -> u64 {
    500
}
fn default_t2() -> u64 {
    4000
}
fn default_answer_wait() -> u64 {
    4000
}

/// `[sip.probe]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Seconds between probes.
    pub interval_s: u64,
    /// Failed probes in a row that mark a trunk down.
    pub failures_to_down: u32,
    /// Answered probes in a row that mark it up.
    pub successes_to_up: u32,
}

/// `[sip.inbound]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// `"reject"` (403) or `"ignore"` (silence) for unknown sources.
    pub unknown_source: String,
    /// Requests per second per source.
    pub per_source_rate: u32,
    /// Burst per source.
    pub per_source_burst: u32,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            unknown_source: "ignore".into(),
            per_source_rate: 20,
            per_source_burst: 40,
        }
    }
}

/// `[[sip.trunks]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Unique name.
    pub name: String,
    /// The carrier's `IP:port`.
    pub address: String,
    /// Host for Request-URIs; defaults to the address's IP.
    pub domain: Option<String>,
    /// Digest username (with `password`).
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// Concurrent calls.
    pub max_channels: u32,
    /// New calls per second.
    pub max_cps: u32,
    /// Lower first.
    #[serde(default)]
    pub priority: u32,
    /// Share among equal priorities.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `[[sip.routes]]`: exactly one of `phone`, `agent_group`, `trunk`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Called number, or prefix ending in `*`.
    pub number: String,
    /// A registered phone account.
    pub phone: Option<String>,
    /// An agent group.
    pub agent_group: Option<String>,
    /// A trunk (by name).
    pub trunk: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SipFile {
    sip: SipConfig,
}

/// The engine's view of a validated config.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Our user part.
    pub user: String,
    /// Protocol timers.
    pub timers: TimerConfig,
    /// Router behaviour.
    pub router: RouterConfig,
    /// Trunks.
    pub trunks: Vec<Trunk>,
    /// Inbound policy (allowed sources are the trunks' addresses).
    pub inbound: InboundPolicy,
    /// The phones the registrar accepts.
    pub phones: Vec<PhoneAccount>,
}

impl SipConfig {
    /// Parses a file holding a `[sip]` table and validates it.
    pub fn load(path: &Path) -> Result<SipSettings, SipConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| SipConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses TOML text holding a `[sip]` table and validates it.
    pub fn parse(text: &str) -> Result<SipSettings, SipConfigError> {
        let file: SipFile =
            toml::from_str(text).map_err(|e| SipConfigError::Syntax(e.to_string()))?;
        file.sip.validate()
    }

    /// Checks every value and builds the engine's settings.
    pub fn validate(&self) -> Result<SipSettings, SipConfigError> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| invalid("sip.listen", format!("`{}` is not IP:port", self.listen)))?;
        if self.user.is_empty()
            || !self
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        {
            return Err(invalid("sip.user", "must be a non-empty SIP user token"));
        }
        if !(10..=10_000).contains(&self.t1_ms) {
            return Err(invalid("sip.t1_ms", "must be 10-10000"));
        }
        if self.t2_ms < self.t1_ms {
            return Err(invalid("sip.t2_ms", "must not be below t1_ms"));
        }
        let timers = TimerConfig {
            t1: Duration::from_millis(self.t1_ms),
            t2: Duration::from_millis(self.t2_ms),
            t4: TimerConfig::default().t4,
        };
        let probe = match &self.probe {
            None => None,
            Some(p) => {
                if p.interval_s == 0 {
                    return Err(invalid("sip.probe.interval_s", "must be at least 1"));
                }
                if p.failures_to_down == 0 {
                    return Err(invalid("sip.probe.failures_to_down", "must be at least 1"));
                }
                if p.successes_to_up == 0 {
                    return Err(invalid("sip.probe.successes_to_up", "must be at least 1"));
                }
                Some(ProbePolicy {
                    interval: Duration::from_secs(p.interval_s),
                    failures_to_down: p.failures_to_down,
                    successes_to_up: p.successes_to_up,
                })
            }
        };
        if self.session_expires_s.is_some_and(|s| s < 90) {
            return Err(invalid(
                "sip.session_expires_s",
                "must be at least 90 (RFC 4028 Min-SE)",
            ));
        }
        let mut trunks = Vec::new();
        for (i, t) in self.trunks.iter().enumerate() {
            let key = |f: &str| format!("sip.trunks[{i}].{f}");
            if t.name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            if trunks.iter().any(|x: &Trunk| x.name == t.name) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is used by another trunk", t.name),
                ));
            }
            let address: SocketAddr = t.address.parse().map_err(|_| {
                invalid(
                    key("address"),
                    format!("`{}` is not IP:port (names are not resolved)", t.address),
                )
            })?;
            if t.max_channels == 0 {
                return Err(invalid(key("max_channels"), "must be at least 1"));
            }
            if t.max_cps == 0 {
                return Err(invalid(key("max_cps"), "must be at least 1"));
            }
            if t.weight == 0 {
                return Err(invalid(key("weight"), "must be at least 1"));
            }
            let credentials = match (&t.username, &t.password) {
                (Some(u), Some(p)) => Some(DigestCredentials {
                    username: u.clone(),
                    password: p.clone(),
                    realm: None,
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(invalid(key("password"), "username given without password"))
                }
                (None, Some(_)) => {
                    return Err(invalid(key("username"), "password given without username"))
                }
            };
            trunks.push(Trunk {
                name: t.name.clone(),
                address,
                domain: t.domain.clone().unwrap_or_else(|| address.ip().to_string()),
                credentials,
                max_channels: t.max_channels,
                max_cps: t.max_cps,
                priority: t.priority,
                weight: t.weight,
            });
        }
        let unknown_source = match self.inbound.unknown_source.as_str() {
            "reject" => UnknownSource::Reject,
            "ignore" => UnknownSource::Ignore,
            other => {
                return Err(invalid(
                    "sip.inbound.unknown_source",
                    format!("`{other}` is neither \"reject\" nor \"ignore\""),
                ))
            }
        };
        if self.inbound.per_source_rate == 0 {
            return Err(invalid("sip.inbound.per_source_rate", "must be at least 1"));
        }
        if self.inbound.per_source_burst == 0 {
            return Err(invalid(
                "sip.inbound.per_source_burst",
                "must be at least 1",
            ));
        }
        let mut routes = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = |f: &str| format!("sip.routes[{i}].{f}");
            if r.number.is_empty() {
                return Err(invalid(key("number"), "must not be empty"));
            }
            let target = match (&r.phone, &r.agent_group, &r.trunk) {
                (Some(p), None, None) => RouteTarget::Phone(p.clone()),
                (None, Some(g), None) => RouteTarget::AgentGroup(g.clone()),
                (None, None, Some(t)) => {
                    if !trunks.iter().any(|x| &x.name == t) {
                        return Err(invalid(key("trunk"), format!("no trunk is named `{t}`")));
                    }
                    RouteTarget::Trunk(t.clone())
                }
                _ => {
                    return Err(invalid(
                        key("number"),
                        "give exactly one of phone, agent_group, trunk",
                    ))
                }
            };
            routes.push(InboundRoute {
                number: r.number.clone(),
                target,
            });
        }
        let mut phones: Vec<PhoneAccount> = Vec::new();
        for (i, p) in self.phones.iter().enumerate() {
            let key = |f: &str| format!("sip.phones[{i}].{f}");
            let token = |s: &str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
            };
            if !token(&p.username) {
                return Err(invalid(
                    key("username"),
                    "must be 1 to 64 letters, digits or `-_.+`",
                ));
            }
            if phones.iter().any(|x| x.username == p.username) {
                return Err(invalid(
                    key("username"),
                    format!("`{}` is used by another phone", p.username),
                ));
            }
            if p.password.len() < 8 {
                return Err(invalid(key("password"), "must be at least 8 characters"));
            }
            phones.push(PhoneAccount {
                username: p.username.clone(),
                password: p.password.clone(),
            });
        }
        let allowed_sources: Vec<IpAddr> = trunks.iter().map(|t| t.address.ip()).collect();
        Ok(SipSettings {
            phones,
            listen,
            user: self.user.clone(),
            timers,
            router: RouterConfig {
                probe,
                answer_wait: Duration::from_millis(self.answer_wait_ms),
                session_expires: self.session_expires_s,
                ..RouterConfig::default()
            },
            trunks,
            inbound: InboundPolicy {
                allowed_sources,
                unknown_source,
                per_source_rate: self.inbound.per_source_rate,
                per_source_burst: self.inbound.per_source_burst,
                routes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[sip]
listen = "127.0.0.1:5060"
t1_ms = 250

[sip.probe]
interval_s = 30
failures_to_down = 2
successes_to_up = 2

[sip.inbound]
unknown_source = "reject"
per_source_rate = 10
per_source_burst = 20

[[sip.trunks]]
name = "carrier-a"
address = "192.0.2.10:5060"
username = "branch7"
password = "s3cret"
max_channels = 30
max_cps = 5
priority = 1

[[sip.trunks]]
name = "carrier-b"
address = "192.0.2.20:5060"
max_channels = 10
max_cps = 2
priority = 2

[[sip.routes]]
number = "4930*"
agent_group = "berlin"

[[sip.routes]]
number = "*"
trunk = "carrier-b"
"#;

    #[test]
    fn a_good_config_becomes_engine_settings() {
        let s = SipConfig::parse(GOOD).unwrap();
        assert_eq!(s.trunks.len(), 2);
        assert_eq!(
            s.trunks[0].credentials.as_ref().unwrap().username,
            "branch7"
        );
        assert_eq!(s.trunks[1].domain, "192.0.2.20");
        assert_eq!(s.timers.t1, Duration::from_millis(250));
        assert_eq!(s.inbound.allowed_sources.len(), 2);
        assert_eq!(
            s.inbound.routes[1].target,
            RouteTarget::Trunk("carrier-b".into())
        );
        assert_eq!(s.router.probe.unwrap().interval, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_key_that_is_wrong() {
        let cases = [
            (
                GOOD.replace("192.0.2.20:5060", "carrier.example"),
                "sip.trunks[1].address",
            ),
            (
                GOOD.replace("max_channels = 10", "max_channels = 0"),
                "sip.trunks[1].max_channels",
            ),
            (
                GOOD.replace("trunk = \"carrier-b\"", "trunk = \"carrier-z\""),
                "sip.routes[1].trunk",
            ),
            (
                GOOD.replace("\"reject\"", "\"maybe\""),
                "sip.inbound.unknown_source",
            ),
            (
                GOOD.replace("name = \"carrier-b\"", "name = \"carrier-a\""),
                "sip.trunks[1].name",
            ),
            (
                GOOD.replace("password = \"s3cret\"\n", ""),
                "sip.trunks[0].password",
            ),
            (
                GOOD.replace("interval_s = 30", "interval_s = 0"),
                "sip.probe.interval_s",
            ),
        ];
        for (text, key) in cases {
            match SipConfig::parse(&text) {
                Err(SipConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn desk_phones_become_registrar_accounts_and_bad_ones_are_named() {
        let phones = "\n[[sip.phones]]\nusername = \"desk1\"\npassword = \"pw-desk-1\"\n\
                      \n[[sip.phones]]\nusername = \"desk2\"\npassword = \"pw-desk-2\"\n";
        let s = SipConfig::parse(&format!("{GOOD}{phones}")).unwrap();
        assert_eq!(
            s.phones,
            vec![
                PhoneAccount {
                    username: "desk1".into(),
                    password: "pw-desk-1".into()
                },
                PhoneAccount {
                    username: "desk2".into(),
                    password: "pw-desk-2".into()
                },
            ]
        );
        assert!(SipConfig::parse(GOOD).unwrap().phones.is_empty());
        for (bad, key) in [
            (phones.replace("desk2", "desk1"), "sip.phones[1].username"),
            (
                phones.replace("pw-desk-1", "short"),
                "sip.phones[0].password",
            ),
            (phones.replace("desk2", "desk 2"), "sip.phones[1].username"),
        ] {
            match SipConfig::parse(&format!("{GOOD}{bad}")) {
                Err(SipConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = GOOD.replace("max_cps = 2", "max_cps = 2\nmax_cpz = 3");
        let Err(SipConfigError::Syntax(msg)) = SipConfig::parse(&text) else {
            panic!()
        };
        assert!(msg.contains("max_cpz"), "{msg}");
    }
}
