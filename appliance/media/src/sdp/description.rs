//! The SDP data model, its parser and its serialiser. Keeps every line it does not interpret
//! (bandwidth, unknown attributes) so a description survives a parse/serialise round trip.

use super::SdpError;
use std::fmt;
use std::net::IpAddr;

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    /// Incremented on every new offer within a session (RFC 3264 §8).
    pub session_version: u64,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    pub address: String,
}

/// A `c=` line: `IN <addr_type> <address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IP4` or `IP6`.
    pub addr_type: String,
    pub address: String,
}

impl Connection {
    /// A connection line for an IP address.
    pub fn for_ip(ip: IpAddr) -> Connection {
        Connection {
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.to_owned(),
            address: ip.to_string(),
        }
    }

    /// The address as an IP, refusing FQDNs, multicast TTL suffixes and mismatched types.
    pub fn ip(&self) -> Result<IpAddr, SdpError> {
        let ip: IpAddr = self
            .address
            .parse()
            .map_err(|_| SdpError::BadAddress(self.address.clone()))?;
        match (self.addr_type.as_str(), ip) {
            ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
            _ => Err(SdpError::BadAddress(format!(
                "{} {}",
                self.addr_type, self.address
            ))),
        }
    }
}

/// An `a=` line: `a=name` or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    /// `a=name:value`.
    pub fn with_value(name: &str, value: impl Into<String>) -> Attribute {
        Attribute {
            name: name.to_owned(),
            value: Some(value.into()),
        }
    }

    /// `a=name`.
    pub fn flag(name: &str) -> Attribute {
        Attribute {
            name: name.to_owned(),
            value: None,
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `image`, ...
    pub media: String,
    /// 0 means the stream is rejected or disabled.
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `udptl`, ...
    pub proto: String,
    /// Payload types (or other format tokens), in the sender's order of preference.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    /// Lines other than `c=` and `a=` (e.g. `b=`), kept verbatim as `(letter, value)`.
    pub other: Vec<(char, String)>,
    pub attributes: Vec<Attribute>,
}

impl MediaDescription {
    /// The value of the first attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .and_then(|a| a.value.as_deref())
    }

    /// Whether a value-less attribute `name` is present.
    pub fn has_flag(&self, name: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The `a=rtpmap` encoding (`name`, `clock rate`) for payload type `pt`.
    pub fn rtpmap(&self, pt: &str) -> Option<(&str, u32)> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("rtpmap"))
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (fmt, enc) = v.split_once(' ')?;
                if fmt != pt {
                    return None;
                }
                let mut parts = enc.trim().split('/');
                let name = parts.next()?;
                let rate = parts.next()?.parse().ok()?;
                Some((name, rate))
            })
    }

    /// The `a=fmtp` parameters for payload type `pt`.
    pub fn fmtp(&self, pt: &str) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("fmtp"))
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (fmt, params) = v.split_once(' ')?;
                (fmt == pt).then_some(params.trim())
            })
    }
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    /// Session-level lines other than `v o s c t a m` (e.g. `b=`, `i=`), verbatim.
    pub other: Vec<(char, String)>,
    /// The `t=` value, `0 0` for a permanent session.
    pub timing: String,
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body. Accepts CRLF or bare LF line ends.
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut version_seen = false;
        let mut origin = None;
        let mut session_name = None;
        let mut timing = None;
        let mut connection = None;
        let mut other = Vec::new();
        let mut attributes = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();

        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let malformed = |reason: &str| SdpError::Malformed {
                line: line_no,
                reason: reason.to_owned(),
            };
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(malformed("expected `<letter>=<value>`"));
            }
            let kind = char::from(bytes[0]);
            let value = &line[2..];
            if !version_seen {
                if kind != 'v' {
                    return Err(malformed("the first line must be `v=0`"));
                }
                if value != "0" {
                    return Err(malformed("only SDP version 0 exists"));
                }
                version_seen = true;
                continue;
            }
            match (kind, media.last_mut()) {
                ('v', _) => return Err(malformed("`v=` appears twice")),
                ('m', _) => media.push(parse_media(value).map_err(|r| malformed(&r))?),
                ('c', Some(m)) => {
                    m.connection = Some(parse_connection(value).map_err(|r| malformed(&r))?)
                }
                ('a', Some(m)) => m.attributes.push(parse_attribute(value)),
                (k, Some(m)) => m.other.push((k, value.to_owned())),
                ('o', None) => origin = Some(parse_origin(value).map_err(|r| malformed(&r))?),
                ('s', None) => session_name = Some(value.to_owned()),
                ('t', None) => timing = Some(value.to_owned()),
                ('c', None) => {
                    connection = Some(parse_connection(value).map_err(|r| malformed(&r))?)
                }
                ('a', None) => attributes.push(parse_attribute(value)),
                (k, None) => other.push((k, value.to_owned())),
            }
        }
        if !version_seen {
            return Err(SdpError::MissingLine('v'));
        }
        Ok(SessionDescription {
            origin: origin.ok_or(SdpError::MissingLine('o'))?,
            session_name: session_name.ok_or(SdpError::MissingLine('s'))?,
            connection,
            other,
            timing: timing.ok_or(SdpError::MissingLine('t'))?,
            attributes,
            media,
        })
    }

    /// The connection that applies to media section `m` (its own, else the session's).
    pub fn connection_for<'a>(&'a self, m: &'a MediaDescription) -> Option<&'a Connection> {
        m.connection.as_ref().or(self.connection.as_ref())
    }
}

fn parse_origin(value: &str) -> Result<Origin, String> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    if f.len() != 6 {
        return Err("`o=` needs 6 fields".to_owned());
    }
    if f[3] != "IN" {
        return Err(format!("`o=` network type `{}` is not IN", f[3]));
    }
    Ok(Origin {
        username: f[0].to_owned(),
        session_id: f[1]
            .parse()
            .map_err(|_| "`o=` session id is not a number")?,
        session_version: f[2]
            .parse()
            .map_err(|_| "`o=` session version is not a number")?,
        addr_type: f[4].to_owned(),
        address: f[5].to_owned(),
    })
}

fn parse_connection(value: &str) -> Result<Connection, String> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    if f.len() != 3 || f[0] != "IN" {
        return Err("`c=` must be `IN <IP4|IP6> <address>`".to_owned());
    }
    Ok(Connection {
        addr_type: f[1].to_owned(),
        address: f[2].to_owned(),
    })
}

fn parse_media(value: &str) -> Result<MediaDescription, String> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    if f.len() < 4 {
        return Err("`m=` needs media, port, proto and at least one format".to_owned());
    }
    let port_field = f[1].split('/').next().unwrap_or(f[1]);
    let port = port_field
        .parse()
        .map_err(|_| format!("`m=` port `{}` is not a number", f[1]))?;
    Ok(MediaDescription {
        media: f[0].to_owned(),
        port,
        proto: f[2].to_owned(),
        formats: f[3..].iter().map(|s| (*s).to_owned()).collect(),
        connection: None,
        other: Vec::new(),
        attributes: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, v)) => Attribute::with_value(name, v),
        None => Attribute::flag(value),
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "a={}:{}\r\n", self.name, v),
            None => write!(f, "a={}\r\n", self.name),
        }
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            o.username, o.session_id, o.session_version, o.addr_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        // RFC 8866 order: i u e p c b t r z a m; the kept extras are i/u/e/p/b/z.
        for (k, v) in self
            .other
            .iter()
            .filter(|(k, _)| matches!(k, 'i' | 'u' | 'e' | 'p'))
        {
            write!(f, "{k}={v}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {}\r\n", c.addr_type, c.address)?;
        }
        for (k, v) in self.other.iter().filter(|(k, _)| k == &'b') {
            write!(f, "{k}={v}\r\n")?;
        }
        write!(f, "t={}\r\n", self.timing)?;
        for (k, v) in self
            .other
            .iter()
            .filter(|(k, _)| !matches!(k, 'i' | 'u' | 'e' | 'p' | 'b'))
        {
            write!(f, "{k}={v}\r\n")?;
        }
        for a in &self.attributes {
            write!(f, "{a}")?;
        }
        for m in &self.media {
            write!(
                f,
                "m={} {} {} {}\r\n",
                m.media,
                m.port,
                m.proto,
                m.formats.join(" ")
            )?;
            for (k, v) in m.other.iter().filter(|(k, _)| k == &'i') {
                write!(f, "{k}={v}\r\n")?;
            }
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {}\r\n", c.addr_type, c.address)?;
            }
            for (k, v) in m.other.iter().filter(|(k, _)| k != &'i') {
                write!(f, "{k}={v}\r\n")?;
            }
            for a in &m.attributes {
                write!(f, "{a}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn parses_a_typical_carrier_offer() {
        let sdp = SessionDescription::parse(SIPP_OFFER).unwrap();
        assert_eq!(sdp.origin.session_version, 2_353_687_637);
        assert_eq!(
            sdp.connection.as_ref().unwrap().ip().unwrap().to_string(),
            "127.0.0.1"
        );
        let m = &sdp.media[0];
        assert_eq!(
            (m.media.as_str(), m.port, m.proto.as_str()),
            ("audio", 6000, "RTP/AVP")
        );
        assert_eq!(m.formats, ["0", "8", "101"]);
        assert_eq!(m.rtpmap("101"), Some(("telephone-event", 8000)));
        assert_eq!(m.fmtp("101"), Some("0-15"));
        assert_eq!(m.attribute("ptime"), Some("20"));
        assert!(m.has_flag("sendrecv"));
    }

    #[test]
    fn serialising_a_parsed_offer_gives_the_same_text() {
        let sdp = SessionDescription::parse(SIPP_OFFER).unwrap();
        assert_eq!(sdp.to_string(), SIPP_OFFER);
    }

    #[test]
    fn keeps_bandwidth_and_unknown_attributes() {
        let text = SIPP_OFFER
            .replace("t=0 0\r\n", "b=AS:64\r\nt=0 0\r\na=tool:x\r\n")
            .replace("101\r\na=rtpmap:0", "101\r\nb=TIAS:64000\r\na=rtpmap:0")
            .replace("a=sendrecv\r\n", "a=sendrecv\r\na=x-custom:1\r\n");
        let sdp = SessionDescription::parse(&text).unwrap();
        assert_eq!(sdp.to_string(), text);
    }

    #[test]
    fn accepts_bare_line_feeds() {
        let sdp = SessionDescription::parse(&SIPP_OFFER.replace("\r\n", "\n")).unwrap();
        assert_eq!(sdp.media.len(), 1);
    }

    #[test]
    fn refuses_a_garbage_line_naming_its_number() {
        let text = SIPP_OFFER.replace("s=-", "this is not sdp");
        let err = SessionDescription::parse(&text).unwrap_err();
        assert_eq!(
            err,
            SdpError::Malformed {
                line: 3,
                reason: "expected `<letter>=<value>`".into()
            }
        );
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn refuses_missing_mandatory_lines() {
        let text = SIPP_OFFER.replace("t=0 0\r\n", "");
        assert_eq!(
            SessionDescription::parse(&text).unwrap_err(),
            SdpError::MissingLine('t')
        );
        assert_eq!(
            SessionDescription::parse("").unwrap_err(),
            SdpError::MissingLine('v')
        );
    }

    #[test]
    fn refuses_a_media_port_that_is_not_a_number() {
        let text = SIPP_OFFER.replace("m=audio 6000", "m=audio sixty");
        assert!(matches!(
            SessionDescription::parse(&text),
            Err(SdpError::Malformed { line: 6, .. })
        ));
    }

    #[test]
    fn connection_refuses_hostnames_and_mismatched_families() {
        let c = Connection {
            addr_type: "IP4".into(),
            address: "pbx.example".into(),
        };
        assert_eq!(c.ip(), Err(SdpError::BadAddress("pbx.example".into())));
        let c = Connection {
            addr_type: "IP4".into(),
            address: "::1".into(),
        };
        assert!(c.ip().is_err());
        let c = Connection {
            addr_type: "IP6".into(),
            address: "::1".into(),
        };
        assert!(c.ip().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(s in "\\PC{0,300}") {
            let _ = SessionDescription::parse(&s);
        }

        #[test]
        fn parser_never_panics_on_sdp_shaped_lines(lines in proptest::collection::vec("[a-z]=[ -~]{0,40}", 0..20)) {
            let text = format!("v=0\r\n{}", lines.join("\r\n"));
            if let Ok(sdp) = SessionDescription::parse(&text) {
                // What parses must re-parse to the same model after serialising.
                let again = SessionDescription::parse(&sdp.to_string()).unwrap();
                proptest::prop_assert_eq!(again.media.len(), sdp.media.len());
            }
        }
    }
}
