//! URIs as SIP carries them: `sip:`/`sips:` URIs parsed into parts (user, password, host
//! with IPv6 references, port, parameters, headers), every other scheme kept opaque.
//! Parts are kept in their escaped form as received, so a URI serializes byte for byte;
//! [`SipUri::user_unescaped`] decodes. This file owns URI grammar only, not header syntax.

use crate::cursor::{is_unreserved, tick, Cursor};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A URI: a SIP(S) URI, or any other scheme (`tel:`, `http:`, `isbn:`, ...) kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// Any other absolute URI.
    Other {
        /// The scheme, as written.
        scheme: String,
        /// Everything after the colon, as written.
        opaque: String,
    },
}

impl Uri {
    /// Parses a URI from its full text (no surrounding angle brackets or whitespace).
    pub fn parse(s: &str) -> Result<Uri, &'static str> {
        let mut c = Cursor::new(s);
        let scheme = c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if scheme.is_empty() || !scheme.as_bytes()[0].is_ascii_alphabetic() {
            return Err("URI does not start with a scheme");
        }
        if !c.eat(b':') {
            return Err("URI scheme is not followed by `:`");
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            let secure = scheme.eq_ignore_ascii_case("sips");
            return SipUri::parse_after_scheme(c.rest(), secure).map(Uri::Sip);
        }
        let opaque = c.rest();
        if opaque.is_empty() {
            return Err("URI has nothing after its scheme");
        }
        if opaque
            .bytes()
            .any(|b| b <= b' ' || matches!(b, b'<' | b'>' | b'"' | 0x7f))
        {
            return Err("URI holds whitespace, a control character, `<`, `>` or `\"`");
        }
        Ok(Uri::Other {
            scheme: scheme.to_owned(),
            opaque: opaque.to_owned(),
        })
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }

    /// The scheme in lower case.
    pub fn scheme(&self) -> String {
        match self {
            Uri::Sip(u) if u.secure => "sips".into(),
            Uri::Sip(_) => "sip".into(),
            Uri::Other { scheme, .. } => scheme.to_ascii_lowercase(),
        }
    }
}

impl Uri {
    /// Appends the URI as it is written on the wire.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Uri::Sip(u) => u.write_to(out),
            Uri::Other { scheme, opaque } => {
                out.extend_from_slice(scheme.as_bytes());
                out.push(b':');
                out.extend_from_slice(opaque.as_bytes());
            }
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}

/// A host: a domain name, an IPv4 address or an IPv6 reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name as written.
    Name(String),
    /// A dotted-quad IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written `[...]` in URIs and Via).
    V6(Ipv6Addr),
}

impl Host {
    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }

    pub(crate) fn parse_at(c: &mut Cursor<'_>) -> Result<Host, &'static str> {
        if c.eat(b'[') {
            let inner = c.take_while(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !c.eat(b']') {
                return Err("IPv6 reference is not closed by `]`");
            }
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::V6)
                .map_err(|_| "IPv6 reference is not an IPv6 address");
        }
        let name = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        Host::from_text(name)
    }

    fn from_text(name: &str) -> Result<Host, &'static str> {
        if name.is_empty() {
            return Err("host is empty");
        }
        if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return name
                .parse::<Ipv4Addr>()
                .map(Host::V4)
                .map_err(|_| "host looks like an IPv4 address but is not one");
        }
        if name.starts_with(['-', '.']) || name.contains("..") {
            return Err("host name has an empty or malformed label");
        }
        Ok(Host::Name(name.to_owned()))
    }

    /// Parses a bare host (IPv6 with or without brackets, as `received=` allows).
    pub fn parse(s: &str) -> Result<Host, &'static str> {
        if s.contains(':') && !s.starts_with('[') {
            return s
                .parse::<Ipv6Addr>()
                .map(Host::V6)
                .map_err(|_| "not an IPv6 address");
        }
        let mut c = Cursor::new(s);
        let h = Host::parse_at(&mut c)?;
        if !c.at_end() {
            return Err("unexpected character in host");
        }
        Ok(h)
    }
}

impl Host {
    /// Appends the host as URIs and Via write it (IPv6 in brackets).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Host::Name(n) => out.extend_from_slice(n.as_bytes()),
            Host::V4(a) => crate::wire::put_ipv4(out, *a),
            Host::V6(a) => {
                use std::io::Write as _;
                // Writing into a Vec cannot fail; IPv6 text is rare enough for fmt.
                let _ = write!(out, "[{a}]");
            }
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, escaped as received (may hold `;`, `?`, `%HH`, ...).
    pub user: Option<String>,
    /// The password, escaped as received.
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, when given.
    pub port: Option<u16>,
    /// URI parameters in order, escaped as received.
    pub params: Vec<crate::param::Param>,
    /// The `?`-headers part, escaped as received (not allowed in a Request-URI).
    pub headers: Option<String>,
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/'
        )
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_header_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'%' | b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
        )
}

/// Every `%` starts a two-hex-digit escape.
fn escapes_valid(s: &str) -> bool {
    let b = s.as_bytes();
    tick(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Decodes `%HH` escapes (the input has been validated).
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |x: u8| (x as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

impl SipUri {
    /// A plain `sip:user@host[:port]` URI.
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> SipUri {
        SipUri {
            secure: false,
            user: user.map(str::to_owned),
            password: None,
            host,
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    fn parse_after_scheme(s: &str, secure: bool) -> Result<SipUri, &'static str> {
        // `@` may not appear unescaped anywhere but between userinfo and host, while the
        // user part may hold `;` and `?`: so the first `@` splits them.
        let (userinfo, hostpart) = match s.find('@') {
            Some(at) => (Some(&s[..at]), &s[at + 1..]),
            None => (None, s),
        };
        let (mut user, mut password) = (None, None);
        if let Some(ui) = userinfo {
            let (u, p) = match ui.find(':') {
                Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err("SIP URI has an empty user part before `@`");
            }
            if !u.bytes().all(is_user_char) || !escapes_valid(u) {
                return Err("SIP URI user part holds a character that must be escaped");
            }
            if let Some(p) = p {
                if !p.bytes().all(is_password_char) || !escapes_valid(p) {
                    return Err("SIP URI password holds a character that must be escaped");
                }
                password = Some(p.to_owned());
            }
            user = Some(u.to_owned());
        }
        let mut c = Cursor::new(hostpart);
        let host = Host::parse_at(&mut c)?;
        let mut port = None;
        if c.eat(b':') {
            let digits = c.take_while(|b| b.is_ascii_digit());
            port = Some(
                crate::cursor::parse_decimal(digits)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or("SIP URI port is not a number in 0-65535")?,
            );
        }
        let mut params = Vec::new();
        while c.eat(b';') {
            let name = c.take_while(is_param_char);
            if name.is_empty() {
                return Err("SIP URI has an empty parameter");
            }
            let value = if c.eat(b'=') {
                let v = c.take_while(is_param_char);
                if v.is_empty() {
                    return Err("SIP URI parameter has `=` but no value");
                }
                Some(v)
            } else {
                None
            };
            if !escapes_valid(name) || !value.is_none_or(escapes_valid) {
                return Err("SIP URI parameter has a malformed % escape");
            }
            params.push(crate::param::Param {
                name: name.to_owned(),
                value: value.map(str::to_owned),
            });
        }
        let mut headers = None;
        if c.eat(b'?') {
            let h = c.take_while(is_header_char);
            if h.is_empty() || !escapes_valid(h) {
                return Err("SIP URI headers part is empty or badly escaped");
            }
            headers = Some(h.to_owned());
        }
        if !c.at_end() {
            return Err("SIP URI holds a character that is not allowed here");
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user part with `%HH` escapes decoded (it may hold any byte, even NUL).
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_deref().map(unescape)
    }

    /// The value of URI parameter `name` (case-insensitive); `Some(None)` when it is
    /// present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        crate::param::find(&self.params, name)
    }
}

impl SipUri {
    /// Appends the URI as it is written on the wire.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.secure { b"sips:" } else { b"sip:" });
        if let Some(u) = &self.user {
            out.extend_from_slice(u.as_bytes());
            if let Some(p) = &self.password {
                out.push(b':');
                out.extend_from_slice(p.as_bytes());
            }
            out.push(b'@');
        }
        self.host.write_to(out);
        if let Some(p) = self.port {
            out.push(b':');
            crate::wire::put_decimal(out, u64::from(p));
        }
        crate::param::write_all(&self.params, out);
        if let Some(h) = &self.headers {
            out.push(b'?');
            out.extend_from_slice(h.as_bytes());
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}
