//! Headers: the typed values of the headers the engine acts on, the table of their names
//! (long and compact forms), and the dispatch from a header line's unfolded value to its
//! typed form. Headers we do not act on stay [`Header::Other`], byte for byte. This room
//! knows header grammar only; message framing lives in `parse.rs`.

mod addr;
mod auth;
mod via;

pub use addr::{Contact, NameAddr};
pub use auth::AuthValue;
pub use via::{Transport, Via, BRANCH_COOKIE};

use crate::cursor::{is_token, parse_decimal, Cursor};
use crate::error::SipError;
use crate::message::Method;
use crate::param::{self, parse_header_params, Param};
use std::fmt;

/// `CSeq: number method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number (< 2^31).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

/// A media type with parameters (`application/sdp`, `multipart/mixed;boundary=x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// The type (`application`), as written.
    pub mtype: String,
    /// The subtype (`sdp`), as written.
    pub subtype: String,
    /// Parameters.
    pub params: Vec<Param>,
}

impl MediaType {
    /// Whether this is `mtype/subtype` (case-insensitive), ignoring parameters.
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this media range (which may hold `*`) covers `mtype/subtype`.
    pub fn covers(&self, mtype: &str, subtype: &str) -> bool {
        (self.mtype == "*" || self.mtype.eq_ignore_ascii_case(mtype))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

impl MediaType {
    /// Appends `type/subtype*(;param)`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.mtype.as_bytes());
        out.push(b'/');
        out.extend_from_slice(self.subtype.as_bytes());
        param::write_all(&self.params, out);
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}

/// `RAck: rseq cseq method` (RFC 3262).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    /// The RSeq of the reliable provisional response being acknowledged.
    pub rseq: u32,
    /// The CSeq number of the INVITE.
    pub cseq: u32,
    /// The CSeq method (INVITE).
    pub method: Method,
}

/// A value with parameters: `Session-Expires: delta;refresher=uac`, `Reason: SIP;cause=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueWithParams<T> {
    /// The value.
    pub value: T,
    /// Parameters.
    pub params: Vec<Param>,
}

impl<T> ValueWithParams<T> {
    /// Parameter `name`, unquoted.
    pub fn param(&self, name: &str) -> Option<String> {
        param::find(&self.params, name)
            .flatten()
            .map(param::unquote)
    }
}

impl<T: fmt::Display> fmt::Display for ValueWithParams<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)?;
        for p in &self.params {
            write!(f, ";{p}")?;
        }
        Ok(())
    }
}

/// A header we do not act on, kept exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherHeader {
    /// The name as written.
    pub name: String,
    /// The value's bytes as received (leading/trailing whitespace trimmed, any line
    /// folding kept).
    pub value: Vec<u8>,
}

/// One header field value. Comma-joined list headers (Via, Contact, Route, ...) give one
/// `Header` per element; repeated lines keep their order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Header {
    /// Via (`v`).
    Via(Via),
    /// From (`f`).
    From(NameAddr),
    /// To (`t`).
    To(NameAddr),
    /// Call-ID (`i`).
    CallId(String),
    /// CSeq.
    CSeq(CSeq),
    /// Contact (`m`).
    Contact(Contact),
    /// Route.
    Route(NameAddr),
    /// Record-Route.
    RecordRoute(NameAddr),
    /// Max-Forwards (0-255).
    MaxForwards(u8),
    /// Content-Length (`l`).
    ContentLength(usize),
    /// Content-Type (`c`).
    ContentType(MediaType),
    /// Accept (media ranges; may be empty).
    Accept(Vec<MediaType>),
    /// WWW-Authenticate.
    WwwAuthenticate(AuthValue),
    /// Proxy-Authenticate.
    ProxyAuthenticate(AuthValue),
    /// Authorization.
    Authorization(AuthValue),
    /// Proxy-Authorization.
    ProxyAuthorization(AuthValue),
    /// Expires (delta-seconds).
    Expires(u32),
    /// Supported (`k`).
    Supported(Vec<String>),
    /// Require.
    Require(Vec<String>),
    /// Proxy-Require.
    ProxyRequire(Vec<String>),
    /// Unsupported.
    Unsupported(Vec<String>),
    /// RSeq (RFC 3262).
    RSeq(u32),
    /// RAck (RFC 3262).
    RAck(RAck),
    /// Session-Expires (`x`, RFC 4028).
    SessionExpires(ValueWithParams<u32>),
    /// Min-SE (RFC 4028).
    MinSe(u32),
    /// P-Asserted-Identity (RFC 3325).
    PAssertedIdentity(NameAddr),
    /// Reason (RFC 3326): protocol with cause/text parameters.
    Reason(ValueWithParams<String>),
    /// Date (RFC 1123 form, GMT), as written.
    Date(String),
    /// Any other header.
    Other(OtherHeader),
}

/// The headers this engine types, by canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    Route,
    RecordRoute,
    MaxForwards,
    ContentLength,
    ContentType,
    Accept,
    WwwAuthenticate,
    ProxyAuthenticate,
    Authorization,
    ProxyAuthorization,
    Expires,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    RSeq,
    RAck,
    SessionExpires,
    MinSe,
    PAssertedIdentity,
    Reason,
    Date,
}

const NAMES: &[(&str, Option<&str>, Kind)] = &[
    ("Via", Some("v"), Kind::Via),
    ("From", Some("f"), Kind::From),
    ("To", Some("t"), Kind::To),
    ("Call-ID", Some("i"), Kind::CallId),
    ("CSeq", None, Kind::CSeq),
    ("Contact", Some("m"), Kind::Contact),
    ("Route", None, Kind::Route),
    ("Record-Route", None, Kind::RecordRoute),
    ("Max-Forwards", None, Kind::MaxForwards),
    ("Content-Length", Some("l"), Kind::ContentLength),
    ("Content-Type", Some("c"), Kind::ContentType),
    ("Accept", None, Kind::Accept),
    ("WWW-Authenticate", None, Kind::WwwAuthenticate),
    ("Proxy-Authenticate", None, Kind::ProxyAuthenticate),
    ("Authorization", None, Kind::Authorization),
    ("Proxy-Authorization", None, Kind::ProxyAuthorization),
    ("Expires", None, Kind::Expires),
    ("Supported", Some("k"), Kind::Supported),
    ("Require", None, Kind::Require),
    ("Proxy-Require", None, Kind::ProxyRequire),
    ("Unsupported", None, Kind::Unsupported),
    ("RSeq", None, Kind::RSeq),
    ("RAck", None, Kind::RAck),
    ("Session-Expires", Some("x"), Kind::SessionExpires),
    ("Min-SE", None, Kind::MinSe),
    ("P-Asserted-Identity", None, Kind::PAssertedIdentity),
    ("Reason", None, Kind::Reason),
    ("Date", None, Kind::Date),
];

impl Kind {
    /// The kind of a header name (long or compact form, any case).
    /// Every header line of every message comes through here: one pass to lower-case
    /// the name and one `match` (length, then bytes), not a walk over [`NAMES`]. The
    /// test `every_name_in_the_table_is_recognised_in_any_case` keeps the two in step.
    pub(crate) fn of(name: &str) -> Option<Kind> {
        crate::cursor::tick(name.len());
        // No name we type is longer than this ("Proxy-Authorization", 19).
        let mut lower = [0u8; 20];
        let bytes = name.as_bytes();
        if bytes.len() > lower.len() {
            return None;
        }
        for (l, b) in lower.iter_mut().zip(bytes) {
            *l = b.to_ascii_lowercase();
        }
        Some(match &lower[..bytes.len()] {
            b"via" | b"v" => Kind::Via,
            b"from" | b"f" => Kind::From,
            b"to" | b"t" => Kind::To,
            b"call-id" | b"i" => Kind::CallId,
            b"cseq" => Kind::CSeq,
            b"contact" | b"m" => Kind::Contact,
            b"route" => Kind::Route,
            b"record-route" => Kind::RecordRoute,
            b"max-forwards" => Kind::MaxForwards,
            b"content-length" | b"l" => Kind::ContentLength,
            b"content-type" | b"c" => Kind::ContentType,
            b"accept" => Kind::Accept,
            b"www-authenticate" => Kind::WwwAuthenticate,
            b"proxy-authenticate" => Kind::ProxyAuthenticate,
            b"authorization" => Kind::Authorization,
            b"proxy-authorization" => Kind::ProxyAuthorization,
            b"expires" => Kind::Expires,
            b"supported" | b"k" => Kind::Supported,
            b"require" => Kind::Require,
            b"proxy-require" => Kind::ProxyRequire,
            b"unsupported" => Kind::Unsupported,
            b"rseq" => Kind::RSeq,
            b"rack" => Kind::RAck,
            b"session-expires" | b"x" => Kind::SessionExpires,
            b"min-se" => Kind::MinSe,
            b"p-asserted-identity" => Kind::PAssertedIdentity,
            b"reason" => Kind::Reason,
            b"date" => Kind::Date,
            _ => return None,
        })
    }

    /// The canonical name.
    pub(crate) fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, _, k)| *k == self)
            .map(|(n, _, _)| *n)
            .unwrap_or("?")
    }

    /// Headers that may appear at most once.
    pub(crate) fn single(self) -> bool {
        matches!(
            self,
            Kind::From
                | Kind::To
                | Kind::CallId
                | Kind::CSeq
                | Kind::MaxForwards
                | Kind::ContentLength
                | Kind::ContentType
                | Kind::Expires
                | Kind::RSeq
                | Kind::RAck
                | Kind::SessionExpires
                | Kind::MinSe
                | Kind::Date
        )
    }
}

impl Header {
    /// The header's name: canonical long form for typed headers, as written otherwise.
    pub fn name(&self) -> &str {
        match self {
            Header::Other(o) => &o.name,
            typed => typed.kind().map(Kind::name).unwrap_or("?"),
        }
    }

    pub(crate) fn kind(&self) -> Option<Kind> {
        Some(match self {
            Header::Via(_) => Kind::Via,
            Header::From(_) => Kind::From,
            Header::To(_) => Kind::To,
            Header::CallId(_) => Kind::CallId,
            Header::CSeq(_) => Kind::CSeq,
            Header::Contact(_) => Kind::Contact,
            Header::Route(_) => Kind::Route,
            Header::RecordRoute(_) => Kind::RecordRoute,
            Header::MaxForwards(_) => Kind::MaxForwards,
            Header::ContentLength(_) => Kind::ContentLength,
            Header::ContentType(_) => Kind::ContentType,
            Header::Accept(_) => Kind::Accept,
            Header::WwwAuthenticate(_) => Kind::WwwAuthenticate,
            Header::ProxyAuthenticate(_) => Kind::ProxyAuthenticate,
            Header::Authorization(_) => Kind::Authorization,
            Header::ProxyAuthorization(_) => Kind::ProxyAuthorization,
            Header::Expires(_) => Kind::Expires,
            Header::Supported(_) => Kind::Supported,
            Header::Require(_) => Kind::Require,
            Header::ProxyRequire(_) => Kind::ProxyRequire,
            Header::Unsupported(_) => Kind::Unsupported,
            Header::RSeq(_) => Kind::RSeq,
            Header::RAck(_) => Kind::RAck,
            Header::SessionExpires(_) => Kind::SessionExpires,
            Header::MinSe(_) => Kind::MinSe,
            Header::PAssertedIdentity(_) => Kind::PAssertedIdentity,
            Header::Reason(_) => Kind::Reason,
            Header::Date(_) => Kind::Date,
            Header::Other(_) => return None,
        })
    }

    /// Appends `Name: value\r\n` to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name().as_bytes());
        out.extend_from_slice(b": ");
        self.write_value(out);
        out.extend_from_slice(b"\r\n");
    }

    /// Writes the value straight into `out` (no text per header on the way: serialising
    /// is on every message's path).
    fn write_value(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        fn list<T: std::fmt::Display>(out: &mut Vec<u8>, items: &[T]) {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                // Writing into a Vec cannot fail.
                let _ = write!(out, "{item}");
            }
        }
        // Writing into a Vec cannot fail. The headers on every call's path are written
        // without `core::fmt` (see `crate::wire`).
        let _ = match self {
            Header::Via(v) => {
                v.write_to(out);
                Ok(())
            }
            Header::From(a)
            | Header::To(a)
            | Header::Route(a)
            | Header::RecordRoute(a)
            | Header::PAssertedIdentity(a) => {
                a.write_to(out);
                Ok(())
            }
            Header::CallId(s) | Header::Date(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            Header::CSeq(c) => {
                crate::wire::put_decimal(out, u64::from(c.seq));
                out.push(b' ');
                out.extend_from_slice(c.method.as_str().as_bytes());
                Ok(())
            }
            Header::Contact(c) => {
                c.write_to(out);
                Ok(())
            }
            Header::MaxForwards(n) => {
                crate::wire::put_decimal(out, u64::from(*n));
                Ok(())
            }
            Header::ContentLength(n) => {
                crate::wire::put_decimal(out, *n as u64);
                Ok(())
            }
            Header::ContentType(m) => {
                m.write_to(out);
                Ok(())
            }
            Header::Accept(v) => {
                list(out, v);
                Ok(())
            }
            Header::WwwAuthenticate(a)
            | Header::ProxyAuthenticate(a)
            | Header::Authorization(a)
            | Header::ProxyAuthorization(a) => write!(out, "{a}"),
            Header::Expires(n) | Header::RSeq(n) | Header::MinSe(n) => {
                crate::wire::put_decimal(out, u64::from(*n));
                Ok(())
            }
            Header::Supported(v)
            | Header::Require(v)
            | Header::ProxyRequire(v)
            | Header::Unsupported(v) => {
                list(out, v);
                Ok(())
            }
            Header::RAck(r) => write!(out, "{} {} {}", r.rseq, r.cseq, r.method),
            Header::SessionExpires(s) => write!(out, "{s}"),
            Header::Reason(r) => write!(out, "{r}"),
            Header::Other(o) => {
                out.extend_from_slice(&o.value);
                Ok(())
            }
        };
    }

    /// The value as text (an unknown header's bytes decoded lossily).
    pub fn value_text(&self) -> String {
        let mut out = Vec::new();
        self.write_value(&mut out);
        match String::from_utf8(out) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

fn bad(header: Kind, reason: &'static str) -> SipError {
    SipError::MalformedHeader {
        header: header.name(),
        reason,
    }
}

fn number(c: &mut Cursor<'_>, max: u64) -> Option<u64> {
    parse_decimal(c.take_while(|b| b.is_ascii_digit())).filter(|n| *n <= max)
}

const MAX_31: u64 = (1 << 31) - 1;

/// Calls `each` for every element of a comma-separated list; an empty element is an
/// error, an empty list is allowed only when `allow_empty`.
fn comma_list<'a>(
    c: &mut Cursor<'a>,
    allow_empty: bool,
    mut each: impl FnMut(&mut Cursor<'a>) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    c.skip_ws();
    if c.at_end() {
        return if allow_empty {
            Ok(())
        } else {
            Err("empty value")
        };
    }
    loop {
        c.skip_ws();
        if c.at_end() || c.peek() == Some(b',') {
            return Err("empty element in a comma-separated list");
        }
        each(c)?;
        c.skip_ws();
        if c.at_end() {
            return Ok(());
        }
        if !c.eat(b',') {
            return Err("unexpected character after a value (expected `,` or end)");
        }
    }
}

fn media_type(c: &mut Cursor<'_>) -> Result<MediaType, &'static str> {
    c.skip_ws();
    let mtype = c.take_while(is_token);
    c.skip_ws();
    if mtype.is_empty() || !c.eat(b'/') {
        return Err("media type is not `type/subtype`");
    }
    c.skip_ws();
    let subtype = c.take_while(is_token);
    if subtype.is_empty() {
        return Err("media type has no subtype");
    }
    let params = parse_header_params(c)?;
    Ok(MediaType {
        mtype: mtype.to_owned(),
        subtype: subtype.to_owned(),
        params,
    })
}

fn method_token(c: &mut Cursor<'_>) -> Option<Method> {
    let m = c.take_while(is_token);
    (!m.is_empty()).then(|| Method::from_token(m))
}

/// RFC 1123 date in GMT: `Fri, 01 Jan 2010 16:00:00 GMT`.
fn valid_date(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p: Vec<&str> = s.split(' ').collect();
    let digits = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_digit());
    let time_ok = |t: &str| {
        let f: Vec<&str> = t.split(':').collect();
        f.len() == 3 && f.iter().all(|x| digits(x, 2))
    };
    p.len() == 6
        && p[0].len() == 4
        && p[0].ends_with(',')
        && DAYS.contains(&&p[0][..3])
        && digits(p[1], 2)
        && MONTHS.contains(&p[2])
        && digits(p[3], 4)
        && time_ok(p[4])
        && p[5] == "GMT"
}

/// Parses the unfolded, trimmed value of a typed header and appends its element(s).
pub(crate) fn parse_typed(kind: Kind, value: &str, out: &mut Vec<Header>) -> Result<(), SipError> {
    let mut c = Cursor::new(value);
    let c = &mut c;
    let r: Result<(), &'static str> = match kind {
        Kind::Via => comma_list(c, false, |c| {
            out.push(Header::Via(Via::parse_at(c)?));
            Ok(())
        }),
        Kind::Contact => {
            if value == "*" {
                out.push(Header::Contact(Contact::Wildcard));
                Ok(())
            } else {
                comma_list(c, false, |c| {
                    out.push(Header::Contact(Contact::Address(addr::parse_name_addr(
                        c, true, false,
                    )?)));
                    Ok(())
                })
            }
        }
        Kind::Route | Kind::RecordRoute | Kind::PAssertedIdentity => comma_list(c, false, |c| {
            let a = addr::parse_name_addr(c, true, kind != Kind::PAssertedIdentity)?;
            out.push(match kind {
                Kind::Route => Header::Route(a),
                Kind::RecordRoute => Header::RecordRoute(a),
                _ => Header::PAssertedIdentity(a),
            });
            Ok(())
        }),
        Kind::From | Kind::To => addr::parse_name_addr(c, false, false).and_then(|a| {
            c.skip_ws();
            if !c.at_end() {
                return Err("unexpected character after the address");
            }
            out.push(if kind == Kind::From {
                Header::From(a)
            } else {
                Header::To(a)
            });
            Ok(())
        }),
        Kind::CallId => {
            let id = c.take_while(|b| crate::cursor::is_word(b) || b == b'@');
            let ok = !id.is_empty()
                && c.at_end()
                && id.matches('@').count() <= 1
                && !id.starts_with('@')
                && !id.ends_with('@');
            if ok {
                out.push(Header::CallId(id.to_owned()));
                Ok(())
            } else {
                Err("not `word [@ word]`")
            }
        }
        Kind::CSeq => (|| {
            let seq = number(c, MAX_31).ok_or("sequence number is not a number below 2^31")?;
            if !c.skip_ws() {
                return Err("no whitespace between number and method");
            }
            let method = method_token(c).ok_or("no method")?;
            c.skip_ws();
            if !c.at_end() {
                return Err("unexpected character after the method");
            }
            out.push(Header::CSeq(CSeq {
                seq: seq as u32,
                method,
            }));
            Ok(())
        })(),
        Kind::MaxForwards | Kind::ContentLength | Kind::Expires | Kind::RSeq | Kind::MinSe => {
            let max = match kind {
                Kind::MaxForwards => 255,
                Kind::ContentLength => u64::from(u32::MAX),
                Kind::RSeq => MAX_31,
                _ => u64::from(u32::MAX),
            };
            match number(c, max).filter(|_| c.at_end()) {
                Some(n) => {
                    out.push(match kind {
                        Kind::MaxForwards => Header::MaxForwards(n as u8),
                        Kind::ContentLength => Header::ContentLength(n as usize),
                        Kind::Expires => Header::Expires(n as u32),
                        Kind::RSeq => Header::RSeq(n as u32),
                        _ => Header::MinSe(n as u32),
                    });
                    Ok(())
                }
                None => Err(match kind {
                    Kind::MaxForwards => "not a number in 0-255",
                    Kind::ContentLength => "not a non-negative number below 2^32",
                    Kind::RSeq => "not a number in 1-2^31",
                    _ => "not a number of seconds below 2^32",
                }),
            }
        }
        Kind::ContentType => media_type(c).and_then(|m| {
            if !c.at_end() {
                return Err("unexpected character after the media type");
            }
            out.push(Header::ContentType(m));
            Ok(())
        }),
        Kind::Accept => {
            let mut v = Vec::new();
            comma_list(c, true, |c| {
                v.push(media_type(c)?);
                Ok(())
            })
            .map(|()| out.push(Header::Accept(v)))
        }
        Kind::Supported | Kind::Require | Kind::ProxyRequire | Kind::Unsupported => {
            let mut v = Vec::new();
            comma_list(c, kind == Kind::Supported, |c| {
                let t = c.take_while(is_token);
                if t.is_empty() {
                    return Err("option tag is not a token");
                }
                v.push(t.to_owned());
                Ok(())
            })
            .map(|()| {
                out.push(match kind {
                    Kind::Supported => Header::Supported(v),
                    Kind::Require => Header::Require(v),
                    Kind::ProxyRequire => Header::ProxyRequire(v),
                    _ => Header::Unsupported(v),
                })
            })
        }
        Kind::WwwAuthenticate
        | Kind::ProxyAuthenticate
        | Kind::Authorization
        | Kind::ProxyAuthorization => AuthValue::parse(value).map(|a| {
            out.push(match kind {
                Kind::WwwAuthenticate => Header::WwwAuthenticate(a),
                Kind::ProxyAuthenticate => Header::ProxyAuthenticate(a),
                Kind::Authorization => Header::Authorization(a),
                _ => Header::ProxyAuthorization(a),
            })
        }),
        Kind::RAck => (|| {
            let rseq = number(c, MAX_31).ok_or("RSeq number missing")?;
            c.skip_ws();
            let cseq = number(c, MAX_31).ok_or("CSeq number missing")?;
            c.skip_ws();
            let method = method_token(c).ok_or("no method")?;
            if !c.at_end() {
                return Err("unexpected character after the method");
            }
            out.push(Header::RAck(RAck {
                rseq: rseq as u32,
                cseq: cseq as u32,
                method,
            }));
            Ok(())
        })(),
        Kind::SessionExpires => (|| {
            let delta = number(c, u64::from(u32::MAX)).ok_or("not a number of seconds")?;
            let params = parse_header_params(c)?;
            if !c.at_end() {
                return Err("unexpected character after the parameters");
            }
            out.push(Header::SessionExpires(ValueWithParams {
                value: delta as u32,
                params,
            }));
            Ok(())
        })(),
        Kind::Reason => comma_list(c, false, |c| {
            let proto = c.take_while(is_token);
            if proto.is_empty() {
                return Err("protocol is not a token");
            }
            let params = parse_header_params(c)?;
            out.push(Header::Reason(ValueWithParams {
                value: proto.to_owned(),
                params,
            }));
            Ok(())
        }),
        Kind::Date => {
            if valid_date(value) {
                out.push(Header::Date(value.to_owned()));
                Ok(())
            } else {
                Err("not an RFC 1123 date in GMT (`Fri, 01 Jan 2010 16:00:00 GMT`)")
            }
        }
    };
    r.map_err(|reason| bad(kind, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_in_the_table_is_recognised_in_any_case() {
        for (long, short, kind) in NAMES {
            for name in [
                long.to_string(),
                long.to_ascii_lowercase(),
                long.to_ascii_uppercase(),
            ] {
                assert_eq!(Kind::of(&name), Some(*kind), "{name}");
            }
            if let Some(short) = short {
                assert_eq!(Kind::of(short), Some(*kind), "{short}");
                assert_eq!(
                    Kind::of(&short.to_ascii_uppercase()),
                    Some(*kind),
                    "{short}"
                );
            }
            assert_eq!(kind.name(), *long);
        }
        for other in [
            "",
            "X-Custom",
            "Vias",
            "Call",
            "Subject",
            "s",
            "e",
            "Proxy-Authorizations",
            "Content-Length-Extra-Long-Name",
        ] {
            assert_eq!(Kind::of(other), None, "{other}");
        }
    }
}
