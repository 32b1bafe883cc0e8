//! The Via header: `SIP/2.0/transport sent-by *(;param)`, whitespace allowed around the
//! slashes and colon (RFC 3261 §25.1 SLASH/COLON), with branch, received and RFC 3581
//! rport checked.

use crate::cursor::{is_token, parse_decimal, Cursor};
use crate::param::{self, parse_header_params, Param};
use crate::uri::Host;
use std::fmt;

/// The transport named in a Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP.
    Sctp,
    /// Anything else, upper-cased.
    Other(String),
}

impl Transport {
    fn from_token(t: &str) -> Transport {
        match t.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            other => Transport::Other(other.to_owned()),
        }
    }

    /// Whether the transport is unreliable (retransmissions apply).
    pub fn is_unreliable(&self) -> bool {
        matches!(self, Transport::Udp)
    }
}

impl Transport {
    /// The token as a Via writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Other(o) => o,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The magic cookie that marks an RFC 3261 branch.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport.
    pub transport: Transport,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port.
    pub port: Option<u16>,
    /// Parameters (branch, received, rport, maddr, ttl, others) in order.
    pub params: Vec<Param>,
}

impl Via {
    /// A Via for a request we send: `SIP/2.0/transport host:port;branch=..;rport`.
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport,
            host,
            port,
            params: vec![
                Param::new("branch", Some(branch)),
                Param::new("rport", None),
            ],
        }
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        param::find(&self.params, "branch").flatten()
    }

    /// Whether the branch carries the RFC 3261 cookie with something after it, so it can
    /// identify a transaction (RFC 4475 `badbranch` has the bare cookie).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > BRANCH_COOKIE.len() && b.starts_with(BRANCH_COOKIE))
    }

    /// The `received` address.
    pub fn received(&self) -> Option<&str> {
        param::find(&self.params, "received").flatten()
    }

    /// RFC 3581 `rport`: `Some(None)` when requested without a value, `Some(Some(p))` when
    /// filled in by the server.
    pub fn rport(&self) -> Option<Option<u16>> {
        param::find(&self.params, "rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Sets a parameter, replacing an existing one of the same name.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value.map(str::to_owned),
            None => self.params.push(Param::new(name, value)),
        }
    }

    pub(crate) fn parse_at(c: &mut Cursor<'_>) -> Result<Via, &'static str> {
        c.skip_ws();
        let proto = c.take_while(is_token);
        c.skip_ws();
        if !proto.eq_ignore_ascii_case("SIP") || !c.eat(b'/') {
            return Err("sent-protocol is not `SIP/2.0/transport`");
        }
        c.skip_ws();
        let version = c.take_while(is_token);
        c.skip_ws();
        if version != "2.0" || !c.eat(b'/') {
            return Err("sent-protocol is not `SIP/2.0/transport`");
        }
        c.skip_ws();
        let transport = c.take_while(is_token);
        if transport.is_empty() {
            return Err("sent-protocol has no transport");
        }
        if !c.skip_ws() {
            return Err("no whitespace between transport and sent-by");
        }
        let host = Host::parse_at(c)?;
        let save = c.clone();
        c.skip_ws();
        let port = if c.eat(b':') {
            c.skip_ws();
            Some(
                parse_decimal(c.take_while(|b| b.is_ascii_digit()))
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or("sent-by port is not a number in 0-65535")?,
            )
        } else {
            *c = save;
            None
        };
        let params = parse_header_params(c)?;
        let via = Via {
            transport: Transport::from_token(transport),
            host,
            port,
            params,
        };
        if let Some(r) = param::find(&via.params, "received") {
            let r = r.ok_or("received has no value")?;
            if Host::parse(r).ok().and_then(|h| h.ip()).is_none() {
                return Err("received is not an IP address");
            }
        }
        if let Some(Some(p)) = param::find(&via.params, "rport") {
            parse_decimal(p)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("rport is not a port number")?;
        }
        if let Some(t) = param::find(&via.params, "ttl") {
            t.and_then(parse_decimal)
                .filter(|t| *t <= 255)
                .ok_or("ttl is not a number in 0-255")?;
        }
        if let Some(b) = param::find(&via.params, "branch") {
            if b.is_none_or(|b| !b.bytes().all(is_token)) {
                return Err("branch is not a token");
            }
        }
        Ok(via)
    }
}

impl Via {
    /// Appends the Via value as it is written on the wire.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"SIP/2.0/");
        out.extend_from_slice(self.transport.as_str().as_bytes());
        out.push(b' ');
        self.host.write_to(out);
        if let Some(p) = self.port {
            out.push(b':');
            crate::wire::put_decimal(out, u64::from(p));
        }
        param::write_all(&self.params, out);
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}
