//! Trunk targets: `host[:port]` as written in config (IPv4, `[IPv6]`, or a name) and their
//! resolution to socket addresses through the system resolver (A and AAAA via
//! `getaddrinfo`, which also reads `/etc/hosts`), in the resolver's preference order.
//! SRV/NAPTR (RFC 3263) are not looked up: trunks name their port and transport in config.

use crate::error::TransportError;
use callgate_sip::header::Transport;
use std::net::{IpAddr, SocketAddr};

/// The port a transport uses when a target names none (5060, or 5061 for TLS).
pub fn default_port(transport: &Transport) -> u16 {
    match transport {
        Transport::Tls => 5061,
        _ => 5060,
    }
}

/// A target as written: a host (name or IP literal) and maybe a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTarget {
    /// The host: a name, an IPv4 literal or an IPv6 literal without brackets.
    pub host: String,
    /// The port, when written.
    pub port: Option<u16>,
}

impl SipTarget {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` (a bare IPv6 literal is taken as a
    /// host without port).
    pub fn parse(text: &str) -> Result<SipTarget, TransportError> {
        let bad = |reason| TransportError::BadTarget {
            target: text.to_owned(),
            reason,
        };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = text_trimmed.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(bad("unclosed '['"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside [...]"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or(bad("text after ']' that is not :port"))?
                        .parse::<u16>()
                        .map_err(|_| bad("port is not a number from 0 to 65535"))?,
                ),
            };
            return Ok(SipTarget {
                host: host.to_owned(),
                port,
            });
        }
        if text_trimmed.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(SipTarget {
                host: text_trimmed.to_owned(),
                port: None,
            });
        }
        let (host, port) = match text_trimmed.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| bad("port is not a number from 0 to 65535"))?,
                ),
            ),
            None => (text_trimmed, None),
        };
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !name_ok {
            return Err(bad("host is not an IP address or a DNS name"));
        }
        Ok(SipTarget {
            host: host.to_owned(),
            port,
        })
    }

    /// Resolves the target: IP literals as they are, names through the system resolver
    /// (A and AAAA). `default_port` applies when the target names none.
    pub async fn resolve(&self, default_port: u16) -> Result<Vec<SocketAddr>, TransportError> {
        let target = self.clone();
        tokio::task::spawn_blocking(move || target.resolve_blocking(default_port))
            .await
            .map_err(|e| TransportError::Unresolved {
                host: self.host.clone(),
                reason: e.to_string(),
            })?
    }

    /// [`Self::resolve`] on the calling thread (`getaddrinfo` may block): for loading
    /// config before the driver runs.
    pub fn resolve_blocking(&self, default_port: u16) -> Result<Vec<SocketAddr>, TransportError> {
        use std::net::ToSocketAddrs;
        let port = self.port.unwrap_or(default_port);
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found = (self.host.as_str(), port).to_socket_addrs().map_err(|e| {
            TransportError::Unresolved {
                host: self.host.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            return Err(TransportError::Unresolved {
                host: self.host.clone(),
                reason: "no A or AAAA record".into(),
            });
        }
        Ok(addrs)
    }
}

/// Parses and resolves a `host[:port]` target in one step (see [`SipTarget`]).
pub async fn resolve(target: &str, default_port: u16) -> Result<Vec<SocketAddr>, TransportError> {
    SipTarget::parse(target)?.resolve(default_port).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,80}") {
            if let Ok(t) = SipTarget::parse(&text) {
                prop_assert!(!t.host.is_empty());
            }
        }

        #[test]
        fn written_targets_parse_back(host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}", port in proptest::option::of(any::<u16>())) {
            let text = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            prop_assert_eq!(SipTarget::parse(&text).unwrap(), SipTarget { host, port });
        }
    }

    #[test]
    fn targets_parse_names_literals_and_ports() {
        let t = |s: &str| SipTarget::parse(s).unwrap();
        assert_eq!(t("carrier.example").port, None);
        assert_eq!(t("carrier.example:5080").port, Some(5080));
        assert_eq!(t("127.0.0.1:5060").host, "127.0.0.1");
        assert_eq!(t("[::1]:5061").host, "::1");
        assert_eq!(t("[::1]:5061").port, Some(5061));
        assert_eq!(t("[2001:db8::1]").port, None);
        assert_eq!(t("::1").host, "::1");
    }

    #[test]
    fn malformed_targets_are_refused_naming_the_fault() {
        for (text, fault) in [
            ("", "empty"),
            ("[::1", "unclosed"),
            ("[nope]:5060", "not an IPv6"),
            ("[::1]5060", "after ']'"),
            ("host:99999", "port"),
            ("bad_host:5060", "not an IP address or a DNS name"),
            ("sip:carrier", "port"),
        ] {
            let e = SipTarget::parse(text).unwrap_err().to_string();
            assert!(e.contains(fault), "{text:?}: {e}");
            assert!(e.contains(&format!("{text:?}")), "names the target: {e}");
        }
    }
}
