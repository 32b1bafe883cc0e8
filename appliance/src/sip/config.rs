//! The `[sip]` section of the appliance's TOML config: listeners (UDP, TCP, TLS; IPv4 and
//! IPv6), TLS settings, timers, trunks (each with its transport and a host name or
//! literal), probing, inbound policy and the inbound route table. Parsed with
//! `deny_unknown_fields` and validated at load with errors that name the key
//! (`sip.trunks[1].host: ...`); trunk host names are resolved here, once, through the
//! system resolver. Turns into the engine's types (`Trunk`, `InboundPolicy`,
//! `EndpointConfig`, ...); owns no runtime state and opens no socket.

use callgate_sip::digest::DigestCredentials;
use callgate_sip::header::Transport;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::registrar::PhoneAccount;
use callgate_sip::transaction::TimerConfig;
use callgate_sip::trunk::presentation::{CallerId, CallerIdHeader, Presentation};
use callgate_sip::trunk::router::RouterConfig;
use callgate_sip::trunk::{ProbePolicy, Trunk};
use callgate_sip::uri::Host;
use callgate_sip_net::{EndpointConfig, SipTarget, TlsSettings};
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
    /// More UDP listen addresses (e.g. an IPv6 one for IPv6 trunks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_udp_listen: Vec<String>,
    /// TCP listen addresses (none: TCP is only used outbound, to TCP trunks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_listen: Vec<String>,
    /// TLS listen addresses (need `[sip.tls]` with `cert_file` and `key_file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_listen: Vec<String>,
    /// `[sip.tls]`: certificates for TLS trunks and listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `[sip.connections]`: keep-alives and limits of TCP/TLS connections.
    #[serde(default)]
    pub connections: ConnectionsConfig,
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

/// `[sip.tls]`. Certificates of TLS trunks are always verified (against the trunk's host
/// name, or `tls_server_name`); there is no switch to turn that off.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities trusted for TLS trunks; omitted: the
    /// system's store.
    pub ca_file: Option<String>,
    /// PEM certificate chain presented by the TLS listeners, and to TLS trunks whose
    /// carrier asks for a client certificate (mutual TLS; for a carrier that checks its
    /// purpose, the certificate's extended key usage must include clientAuth).
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
}

/// `[sip.connections]`: upkeep of TCP/TLS connections (RFC 5626 keep-alives).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Seconds without traffic from a trunk before its connection gets a CRLF ping;
    /// 0 sends none.
    pub ping_interval_s: u64,
    /// Seconds a pong may take, once the trunk has shown it answers pings (RFC 5626: 10).
    pub pong_timeout_s: u64,
    /// Seconds without traffic after which an inbound connection is closed; 0 never.
    pub idle_timeout_s: u64,
    /// Inbound connections allowed at once from one source address.
    pub max_per_source: u32,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        let p = callgate_sip_net::StreamPolicy::default();
        let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs());
        ConnectionsConfig {
            ping_interval_s: secs(p.ping_interval),
            pong_timeout_s: p.pong_timeout.as_secs(),
            idle_timeout_s: secs(p.idle_timeout),
            max_per_source: p.max_per_source as u32,
        }
    }
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
    /// The carrier's `IP:port` (a literal); give this or `host`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The carrier's host: a DNS name (resolved at load, A/AAAA) or an IP literal, with
    /// an optional `:port`; give this or `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The port with `host` (default 5060, 5061 for TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `"udp"` (default), `"tcp"` or `"tls"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The name a TLS trunk's certificate must carry; default: `host` when it is a name
    /// (an IP literal is checked as an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Register at the carrier asking for this many seconds (refreshed at half of what
    /// it grants; digest with `username`/`password`); omit for IP authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_expires_s: Option<u32>,
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
    /// Where the campaign's caller ID goes: `"from"` (default: the From user), `"pai"`
    /// (P-Asserted-Identity only, for carriers that trust us; From stays `[sip] user`) or
    /// `"both"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id_header: Option<String>,
    /// A fixed number presented instead of the campaign's (carriers that accept only
    /// their own DDIs): `+` and digits, or national digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id_override: Option<String>,
    /// Mark presented numbers with `;user=phone` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id_user_phone: Option<bool>,
    /// The host of From / P-Asserted-Identity (default: our address in From, the trunk's
    /// `domain` in P-Asserted-Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_domain: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// A trunk's caller-ID settings, each mistake named by its key.
fn trunk_presentation(
    t: &TrunkConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<Presentation, SipConfigError> {
    let header = match t.caller_id_header.as_deref() {
        None => CallerIdHeader::default(),
        Some(h) => CallerIdHeader::parse(h).ok_or_else(|| {
            invalid(
                key("caller_id_header"),
                format!("`{h}` is not \"from\", \"pai\" or \"both\""),
            )
        })?,
    };
    let fixed_number = match t.caller_id_override.as_deref() {
        None => None,
        Some(n) => match CallerId::parse(n) {
            Ok(CallerId::Number(n)) => Some(n),
            Ok(CallerId::Withheld) => {
                return Err(invalid(
                    key("caller_id_override"),
                    "must be a number; a campaign withholds its caller ID itself (`anonymous`)",
                ))
            }
            Err(e) => return Err(invalid(key("caller_id_override"), e.to_string())),
        },
    };
    let from_domain = match t.from_domain.as_deref() {
        None => None,
        Some(d) => Some(Host::parse(d).map_err(|e| {
            invalid(
                key("from_domain"),
                format!("`{d}` is not a host name or IP address: {e}"),
            )
        })?),
    };
    Ok(Presentation {
        header,
        fixed_number,
        from_domain,
        user_phone: t.caller_id_user_phone.unwrap_or(false),
    })
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

/// How the engine reaches one trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkLink {
    /// The trunk's name.
    pub name: String,
    /// Its resolved address.
    pub address: SocketAddr,
    /// Its transport.
    pub transport: Transport,
    /// Register at the carrier for this many seconds (`None`: IP authentication).
    pub register_expires: Option<u32>,
    /// How calls on it present their caller ID.
    pub presentation: Presentation,
}

/// The engine's view of a validated config.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// Where to listen (UDP; the first of `endpoint.udp`).
    pub listen: SocketAddr,
    /// Every listener and the TLS settings, for the transport driver.
    pub endpoint: EndpointConfig,
    /// The transport of each trunk.
    pub links: Vec<TrunkLink>,
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
    /// The box's `[sip.tls]` certificate and key, ready to serve, whenever both are
    /// configured (whether or not `[sip]` itself uses TLS): the agents' TLS listener for
    /// desk phones (`agents.sip_tls_listen`) presents it. It trusts no root for TLS
    /// connections of its own: phones are called back on the connection they registered
    /// over.
    pub tls_identity: Option<TlsSettings>,
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
        let addrs = |list: &[String], name: &str| -> Result<Vec<SocketAddr>, SipConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse().map_err(|_| {
                        invalid(format!("sip.{name}[{i}]"), format!("`{a}` is not IP:port"))
                    })
                })
                .collect()
        };
        let mut udp = vec![listen];
        udp.extend(addrs(&self.extra_udp_listen, "extra_udp_listen")?);
        let tcp = addrs(&self.tcp_listen, "tcp_listen")?;
        let tls_listen = addrs(&self.tls_listen, "tls_listen")?;
        let c = &self.connections;
        if c.pong_timeout_s == 0 {
            return Err(invalid(
                "sip.connections.pong_timeout_s",
                "must be at least 1",
            ));
        }
        if c.max_per_source == 0 {
            return Err(invalid(
                "sip.connections.max_per_source",
                "must be at least 1",
            ));
        }
        let nonzero = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let streams = callgate_sip_net::StreamPolicy {
            ping_interval: nonzero(c.ping_interval_s),
            pong_timeout: Duration::from_secs(c.pong_timeout_s),
            idle_timeout: nonzero(c.idle_timeout_s),
            max_per_source: c.max_per_source as usize,
        };
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
        let mut links = Vec::new();
        let mut tls_names = std::collections::HashMap::new();
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
            let transport = match t.transport.as_deref() {
                None | Some("udp") => Transport::Udp,
                Some("tcp") => Transport::Tcp,
                Some("tls") => Transport::Tls,
                Some(other) => {
                    return Err(invalid(
                        key("transport"),
                        format!("`{other}` is not \"udp\", \"tcp\" or \"tls\""),
                    ))
                }
            };
            let (address, tls_name) = trunk_address(t, &transport, &udp, &key)?;
            if transport == Transport::Tls {
                if let Some(name) = &tls_name {
                    tls_names.insert(address, name.clone());
                }
            }
            if t.register_expires_s
                .is_some_and(|e| !(60..=86_400).contains(&e))
            {
                return Err(invalid(key("register_expires_s"), "must be 60-86400"));
            }
            let presentation = trunk_presentation(t, &key)?;
            links.push(TrunkLink {
                name: t.name.clone(),
                address,
                transport,
                register_expires: t.register_expires_s,
                presentation,
            });
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
        let trunk_names: Vec<(IpAddr, String)> = trunks
            .iter()
            .map(|t| (t.address.ip(), t.name.clone()))
            .collect();
        let needs_tls =
            !tls_listen.is_empty() || links.iter().any(|l| l.transport == Transport::Tls);
        let tls_config = self.tls.clone().unwrap_or_default();
        let identity = tls_identity(&tls_config)?;
        let tls_settings = if needs_tls {
            Some(tls_settings(
                &tls_config,
                identity.as_ref(),
                !tls_listen.is_empty(),
            )?)
        } else {
            None
        };
        let tls_identity = match &identity {
            Some((cert, key)) => Some(
                TlsSettings::serving((cert, key))
                    .map_err(|e| invalid(identity_key(&e.to_string()), e.to_string()))?,
            ),
            None => None,
        };
        Ok(SipSettings {
            phones,
            tls_identity,
            listen,
            endpoint: EndpointConfig {
                udp,
                tcp,
                tls: tls_listen,
                tls_settings,
                tls_names,
                streams,
                ..EndpointConfig::default()
            },
            links,
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
                trunk_names,
                unknown_source,
                per_source_rate: self.inbound.per_source_rate,
                per_source_burst: self.inbound.per_source_burst,
                routes,
            },
        })
    }
}

/// A trunk's address (from `address`, or `host` resolved now) and the name its TLS
/// certificate must carry.
fn trunk_address(
    t: &TrunkConfig,
    transport: &Transport,
    udp: &[SocketAddr],
    key: &dyn Fn(&str) -> String,
) -> Result<(SocketAddr, Option<String>), SipConfigError> {
    let (address, host_name) = match (&t.host, t.address.is_empty()) {
        (None, true) => return Err(invalid(key("host"), "give `host` (or `address`)")),
        (Some(_), false) => {
            return Err(invalid(
                key("address"),
                "give `host` or `address`, not both",
            ))
        }
        (None, false) => {
            if t.port.is_some() {
                return Err(invalid(
                    key("port"),
                    "goes with `host`; `address` has its port",
                ));
            }
            let a: SocketAddr = t.address.parse().map_err(|_| {
                invalid(
                    key("address"),
                    format!("`{}` is not IP:port (put a host name in `host`)", t.address),
                )
            })?;
            (a, None)
        }
        (Some(host), true) => {
            let mut target =
                SipTarget::parse(host).map_err(|e| invalid(key("host"), e.to_string()))?;
            match (target.port, t.port) {
                (Some(_), Some(_)) => {
                    return Err(invalid(key("port"), "the port is already in `host`"))
                }
                (None, Some(p)) => target.port = Some(p),
                _ => {}
            }
            let found = target
                .resolve_blocking(callgate_sip_net::default_port(transport))
                .map_err(|e| invalid(key("host"), e.to_string()))?;
            // Over UDP, an address of a family we have a socket for.
            let usable = |a: &&SocketAddr| {
                *transport != Transport::Udp || udp.iter().any(|u| u.is_ipv6() == a.is_ipv6())
            };
            let Some(a) = found.iter().find(usable).copied() else {
                return Err(invalid(
                    key("host"),
                    format!(
                        "`{}` resolves only to {:?}, and no UDP listen address is of that \
                         family (add one to sip.extra_udp_listen)",
                        target.host, found
                    ),
                ));
            };
            let name = target
                .host
                .parse::<IpAddr>()
                .is_err()
                .then(|| target.host.clone());
            (a, name)
        }
    };
    if address.port() == 0 {
        return Err(invalid(key("port"), "must not be 0"));
    }
    Ok((address, t.tls_server_name.clone().or(host_name)))
}

/// `[sip.tls]`'s certificate chain and private key, as PEM.
type IdentityPem = (Vec<u8>, Vec<u8>);

/// Reads `[sip.tls]`'s certificate and key files (PEM), when both are given; one without
/// the other is refused by key.
fn tls_identity(cfg: &TlsConfig) -> Result<Option<IdentityPem>, SipConfigError> {
    let read = |path: &str, key: &str| {
        std::fs::read(path).map_err(|e| invalid(key, format!("reading `{path}`: {e}")))
    };
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Ok(Some((
            read(c, "sip.tls.cert_file")?,
            read(k, "sip.tls.key_file")?,
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "sip.tls.key_file",
            "cert_file given without key_file",
        )),
        (None, Some(_)) => Err(invalid(
            "sip.tls.cert_file",
            "key_file given without cert_file",
        )),
    }
}

/// The `[sip.tls]` key a TLS settings error is about.
fn identity_key(message: &str) -> &'static str {
    match message {
        m if m.contains("root") => "sip.tls.ca_file",
        m if m.contains("private key") => "sip.tls.key_file",
        _ => "sip.tls.cert_file",
    }
}

/// Builds `[sip]`'s TLS settings: the roots for TLS trunks (`ca_file`, or the system's
/// store) and the identity read by [`tls_identity`], which TLS listeners need.
fn tls_settings(
    cfg: &TlsConfig,
    identity: Option<&IdentityPem>,
    listener: bool,
) -> Result<TlsSettings, SipConfigError> {
    if listener && identity.is_none() {
        return Err(invalid(
            "sip.tls.cert_file",
            "TLS listeners (sip.tls_listen) need cert_file and key_file",
        ));
    }
    let identity_ref = identity.map(|(c, k)| (c.as_slice(), k.as_slice()));
    let result = match &cfg.ca_file {
        Some(path) => {
            let roots = std::fs::read(path)
                .map_err(|e| invalid("sip.tls.ca_file", format!("reading `{path}`: {e}")))?;
            TlsSettings::new(&roots, identity_ref)
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            TlsSettings::with_roots(native.certs, identity_ref)
        }
    };
    result.map_err(|e| invalid(identity_key(&e.to_string()), e.to_string()))
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
        let names: Vec<&str> = s
            .inbound
            .trunk_names
            .iter()
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(names, vec![s.trunks[0].name.as_str(), "carrier-b"]);
        assert_eq!(s.inbound.trunk_names[1].0, s.trunks[1].address.ip());
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

    fn one_trunk(trunk: &str, more: &str) -> String {
        format!(
            "[sip]\nlisten = \"127.0.0.1:5060\"\n{more}\n[[sip.trunks]]\nname = \"t\"\n\
             max_channels = 1\nmax_cps = 1\n{trunk}\n"
        )
    }

    fn key_of(text: &str) -> (String, String) {
        match SipConfig::parse(text) {
            Err(SipConfigError::Invalid { key, reason }) => (key, reason),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_trunk_host_name_is_resolved_at_load_with_its_transport_and_default_port() {
        let s =
            SipConfig::parse(&one_trunk("host = \"localhost\"\ntransport = \"tcp\"", "")).unwrap();
        let a = s.trunks[0].address;
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(a.port(), 5060);
        assert_eq!(
            s.links,
            vec![TrunkLink {
                name: "t".into(),
                address: a,
                transport: Transport::Tcp,
                register_expires: None,
                presentation: Presentation::default(),
            }]
        );
        assert_eq!(s.inbound.allowed_sources, vec![a.ip()]);
        let s = SipConfig::parse(&one_trunk(
            "host = \"127.0.0.1\"\nport = 5099\ntransport = \"tcp\"",
            "",
        ))
        .unwrap();
        assert_eq!(s.trunks[0].address, "127.0.0.1:5099".parse().unwrap());
    }

    #[test]
    fn a_host_that_does_not_resolve_is_refused_naming_the_key_and_the_host() {
        let (key, reason) = key_of(&one_trunk("host = \"no-such-carrier.invalid\"", ""));
        assert_eq!(key, "sip.trunks[0].host");
        assert!(reason.contains("no-such-carrier.invalid"), "{reason}");
    }

    #[test]
    fn an_ipv6_udp_trunk_needs_an_ipv6_udp_listener() {
        let (key, reason) = key_of(&one_trunk("host = \"[::1]:5070\"", ""));
        assert_eq!(key, "sip.trunks[0].host");
        assert!(reason.contains("extra_udp_listen"), "{reason}");
        let s = SipConfig::parse(&one_trunk(
            "host = \"[::1]:5070\"",
            "extra_udp_listen = [\"[::1]:5060\"]",
        ))
        .unwrap();
        assert_eq!(s.trunks[0].address, "[::1]:5070".parse().unwrap());
        assert_eq!(s.endpoint.udp.len(), 2);
        // Over TCP no UDP socket of the family is needed.
        SipConfig::parse(&one_trunk("host = \"::1\"\ntransport = \"tcp\"", "")).unwrap();
    }

    #[test]
    fn caller_id_presentation_is_read_per_trunk_and_mistakes_are_refused_by_key() {
        let s = SipConfig::parse(&one_trunk(
            "address = \"127.0.0.1:5070\"\ncaller_id_header = \"both\"\n\
             caller_id_override = \"+441134960000\"\ncaller_id_user_phone = true\n\
             from_domain = \"callgate.example\"",
            "",
        ))
        .unwrap();
        assert_eq!(
            s.links[0].presentation,
            Presentation {
                header: CallerIdHeader::Both,
                fixed_number: Some("+441134960000".into()),
                from_domain: Some(Host::Name("callgate.example".into())),
                user_phone: true,
            }
        );
        let plain = SipConfig::parse(&one_trunk("address = \"127.0.0.1:5070\"", "")).unwrap();
        assert_eq!(plain.links[0].presentation, Presentation::default());
        for (trunk, want, says) in [
            (
                "caller_id_header = \"PAI\"",
                "caller_id_header",
                "`PAI` is not",
            ),
            (
                "caller_id_override = \"+44 113 496 0000\"",
                "caller_id_override",
                "no spaces, letters",
            ),
            (
                "caller_id_override = \"+4411349600001234\"",
                "caller_id_override",
                "at most 15 digits",
            ),
            (
                "caller_id_override = \"anonymous\"",
                "caller_id_override",
                "must be a number",
            ),
            ("from_domain = \"call gate\"", "from_domain", "`call gate`"),
        ] {
            let (key, reason) = key_of(&one_trunk(
                &format!("address = \"127.0.0.1:5070\"\n{trunk}"),
                "",
            ));
            assert_eq!(key, format!("sip.trunks[0].{want}"), "{trunk}");
            assert!(reason.contains(says), "{trunk}: {reason}");
        }
    }

    #[test]
    fn transport_and_tls_mistakes_are_refused_by_key() {
        for (trunk, more, want) in [
            (
                "host = \"localhost\"\ntransport = \"sctp\"",
                "",
                "sip.trunks[0].transport",
            ),
            (
                "address = \"127.0.0.1:5060\"\nhost = \"localhost\"",
                "",
                "sip.trunks[0].address",
            ),
            ("", "", "sip.trunks[0].host"),
            (
                "address = \"127.0.0.1:5060\"\nport = 5070",
                "",
                "sip.trunks[0].port",
            ),
            (
                "host = \"localhost:5070\"\nport = 5071",
                "",
                "sip.trunks[0].port",
            ),
            (
                "host = \"localhost\"",
                "tcp_listen = [\"nowhere\"]",
                "sip.tcp_listen[0]",
            ),
            (
                "host = \"localhost\"",
                "[sip.connections]\nping_interval_s = 30\npong_timeout_s = 10\nidle_timeout_s = 0\nmax_per_source = 0",
                "sip.connections.max_per_source",
            ),
            (
                "host = \"localhost\"",
                "tls_listen = [\"127.0.0.1:5061\"]\n[sip.tls]\nca_file = \"/dev/null\"",
                "sip.tls.cert_file",
            ),
            (
                "host = \"localhost\"\ntransport = \"tls\"",
                "[sip.tls]\nca_file = \"/nonexistent/ca.pem\"",
                "sip.tls.ca_file",
            ),
            (
                "host = \"localhost\"\ntransport = \"tls\"",
                "[sip.tls]\nca_file = \"/dev/null\"",
                "sip.tls.ca_file",
            ),
        ] {
            assert_eq!(key_of(&one_trunk(trunk, more)).0, want, "{trunk} / {more}");
        }
    }

    #[test]
    fn a_tls_trunk_is_checked_against_its_host_name_or_the_name_given() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let tls = format!(
            "tls_listen = [\"127.0.0.1:0\"]\n[sip.tls]\nca_file = \"{c}\"\ncert_file = \"{c}\"\nkey_file = \"{k}\"",
            c = cert.display(),
            k = key.display()
        );
        let s = SipConfig::parse(&one_trunk(
            "host = \"localhost:5071\"\ntransport = \"tls\"",
            &tls,
        ))
        .unwrap();
        let a = s.trunks[0].address;
        assert_eq!(a.port(), 5071);
        assert_eq!(
            s.endpoint.tls_names.get(&a).map(String::as_str),
            Some("localhost")
        );
        assert!(s.endpoint.tls_settings.is_some());
        assert_eq!(s.endpoint.tls.len(), 1);
        let s = SipConfig::parse(&one_trunk(
            "host = \"127.0.0.1\"\ntransport = \"tls\"\ntls_server_name = \"sbc.carrier.example\"",
            &tls,
        ))
        .unwrap();
        let a = s.trunks[0].address;
        assert_eq!(a.port(), 5061);
        assert_eq!(
            s.endpoint.tls_names.get(&a).map(String::as_str),
            Some("sbc.carrier.example")
        );
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
