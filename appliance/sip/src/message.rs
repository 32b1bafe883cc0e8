//! SIP messages: requests and responses, their ordered header list with typed accessors,
//! and serialization to bytes. Parsing lives in `parse.rs`; this file never reads input.

use crate::header::{AuthValue, CSeq, Contact, Header, MediaType, NameAddr, Via};
use crate::uri::Uri;
use std::fmt;

/// A request method. Methods are case-sensitive; unknown ones are kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// OPTIONS.
    Options,
    /// REGISTER.
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// UPDATE (RFC 3311).
    Update,
    /// INFO.
    Info,
    /// REFER.
    Refer,
    /// NOTIFY.
    Notify,
    /// SUBSCRIBE.
    Subscribe,
    /// MESSAGE.
    Message,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method for a token.
    pub fn from_token(t: &str) -> Method {
        match t {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ordered header fields of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

macro_rules! single {
    ($fn:ident, $variant:ident, $ty:ty) => {
        #[doc = concat!("The ", stringify!($variant), " header, if present.")]
        pub fn $fn(&self) -> Option<&$ty> {
            self.0.iter().find_map(|h| match h {
                Header::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

macro_rules! multi {
    ($fn:ident, $variant:ident, $ty:ty) => {
        #[doc = concat!("Every ", stringify!($variant), " value, in order.")]
        pub fn $fn(&self) -> impl Iterator<Item = &$ty> {
            self.0.iter().filter_map(|h| match h {
                Header::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl Headers {
    single!(from, From, NameAddr);
    single!(to, To, NameAddr);
    single!(call_id, CallId, String);
    single!(cseq, CSeq, CSeq);
    single!(content_type, ContentType, MediaType);
    single!(max_forwards, MaxForwards, u8);
    single!(expires, Expires, u32);
    single!(rseq, RSeq, u32);
    multi!(vias, Via, Via);
    multi!(contacts, Contact, Contact);
    multi!(routes, Route, NameAddr);
    multi!(record_routes, RecordRoute, NameAddr);
    multi!(www_authenticate, WwwAuthenticate, AuthValue);
    multi!(proxy_authenticate, ProxyAuthenticate, AuthValue);
    multi!(authorization, Authorization, AuthValue);
    multi!(accept, Accept, Vec<MediaType>);

    /// The first (topmost) Via.
    pub fn top_via(&self) -> Option<&Via> {
        self.vias().next()
    }

    /// The topmost Via, mutable (the transport layer sets received/rport on it).
    pub fn top_via_mut(&mut self) -> Option<&mut Via> {
        self.0.iter_mut().find_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
    }

    /// The To header, mutable.
    pub fn to_mut(&mut self) -> Option<&mut NameAddr> {
        self.0.iter_mut().find_map(|h| match h {
            Header::To(v) => Some(v),
            _ => None,
        })
    }

    /// Option tags of every Require header.
    pub fn require(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|h| match h {
                Header::Require(v) => Some(v.iter().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Option tags of every Supported header.
    pub fn supported(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|h| match h {
                Header::Supported(v) => Some(v.iter().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The raw value of the first header named `name` (case-insensitive, as written for
    /// unknown headers, canonical for typed ones).
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .map(Header::value_text)
    }

    /// An empty list with room for `n` headers (messages we build have about a dozen;
    /// growing from empty regrew the list three times per message).
    pub fn with_capacity(n: usize) -> Headers {
        Headers(Vec::with_capacity(n))
    }

    /// Appends a header.
    pub fn push(&mut self, h: Header) {
        self.0.push(h);
    }

    fn write_to(&self, out: &mut Vec<u8>, body_len: usize) {
        // Content-Length is always the body's length: written where the header stands,
        // or appended when there is none.
        let mut wrote_length = false;
        for h in &self.0 {
            match h {
                Header::ContentLength(_) if wrote_length => {}
                Header::ContentLength(_) => {
                    Header::ContentLength(body_len).write_to(out);
                    wrote_length = true;
                }
                h => h.write_to(out),
            }
        }
        if !wrote_length {
            Header::ContentLength(body_len).write_to(out);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The headers.
    pub headers: Headers,
    /// The body (exactly Content-Length bytes).
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100-699.
    pub status: u16,
    /// The reason phrase (UTF-8, may be empty).
    pub reason: String,
    /// The headers.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Request {
    /// Serializes the request. Content-Length always states the body's length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        self.uri.write_to(&mut out);
        out.extend_from_slice(b" SIP/2.0\r\n");
        self.headers.write_to(&mut out, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

impl Response {
    /// Serializes the response. Content-Length always states the body's length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(b"SIP/2.0 ");
        crate::wire::put_decimal(&mut out, u64::from(self.status));
        out.push(b' ');
        // A line break in the reason would end the status line early.
        out.extend(
            self.reason
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
        self.headers.write_to(&mut out, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }

    /// Whether this is a provisional (1xx) response.
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }
}

impl SipMessage {
    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

/// Room for the headers of a message the engine builds (see [`Headers::with_capacity`]).
pub(crate) const BUILT_HEADERS: usize = 14;

/// Builds a response to `req` (RFC 3261 §8.2.6): copies Via, From, To, Call-ID and CSeq;
/// adds `to_tag` to To when given and To has none.
pub fn response_to(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::with_capacity(BUILT_HEADERS);
    for h in &req.headers.0 {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(t) => {
                let mut t = t.clone();
                if let (Some(tag), None) = (to_tag, t.tag()) {
                    t.set_tag(tag);
                }
                headers.push(Header::To(t));
            }
            _ => {}
        }
    }
    Response {
        status,
        reason: reason.to_owned(),
        headers,
        body: Vec::new(),
    }
}

/// Convenience: the Contact URI of the first Contact address.
pub fn first_contact_uri(h: &Headers) -> Option<&Uri> {
    h.contacts().find_map(|c| match c {
        Contact::Address(a) => Some(&a.uri),
        Contact::Wildcard => None,
    })
}
