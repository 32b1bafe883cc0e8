//! What a user agent server decides about a request that parsed: the checks of RFC 3261
//! §8.2.2-8.2.3 that RFC 4475 §3.3 exercises (URI scheme, Require, Content-Type, Accept,
//! authorization scheme) and the response each failure gets. Also the UAC rule of §8.1.3.3
//! (a response with more than one Via is discarded). Pure functions; no state.

use crate::error::SipError;
use crate::header::{Header, MediaType};
use crate::message::{response_to, Method, Request, Response};

/// What this user agent can handle.
#[derive(Debug, Clone)]
pub struct UasCapabilities {
    /// URI schemes we route (lower case).
    pub uri_schemes: Vec<String>,
    /// Option tags we support (for Require).
    pub extensions: Vec<String>,
    /// Body types we understand (`application/sdp`).
    pub body_types: Vec<(String, String)>,
}

impl Default for UasCapabilities {
    fn default() -> Self {
        UasCapabilities {
            uri_schemes: vec!["sip".into(), "sips".into(), "tel".into()],
            extensions: vec!["100rel".into(), "timer".into(), "replaces".into()],
            body_types: vec![("application".into(), "sdp".into())],
        }
    }
}

/// Checks a received request; `Err` carries the reason and (through its status) the
/// response to send.
pub fn admit_request(req: &Request, caps: &UasCapabilities) -> Result<(), SipError> {
    let scheme = req.uri.scheme();
    if !caps.uri_schemes.contains(&scheme) {
        return Err(SipError::UnsupportedUriScheme(scheme));
    }
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unknown: Vec<String> = req
            .headers
            .require()
            .into_iter()
            .filter(|t| !caps.extensions.iter().any(|e| e.eq_ignore_ascii_case(t)))
            .map(str::to_owned)
            .collect();
        if !unknown.is_empty() {
            return Err(SipError::BadExtension(unknown));
        }
    }
    if !req.body.is_empty() {
        if let Some(ct) = req.headers.content_type() {
            if !caps.body_types.iter().any(|(t, s)| ct.is(t, s)) {
                return Err(SipError::UnsupportedMediaType(format!(
                    "{}/{}",
                    ct.mtype, ct.subtype
                )));
            }
        }
    }
    if req.method == Method::Invite {
        let ranges: Vec<&MediaType> = req.headers.accept().flatten().collect();
        let any_accept = req.headers.accept().next().is_some();
        if any_accept
            && !ranges
                .iter()
                .any(|r| caps.body_types.iter().any(|(t, s)| r.covers(t, s)))
        {
            return Err(SipError::NotAcceptable);
        }
    }
    if req.method == Method::Register {
        if let Some(a) = req.headers.authorization().find(|a| !a.is_digest()) {
            return Err(SipError::UnsupportedAuthScheme(a.scheme.clone()));
        }
    }
    Ok(())
}

/// The response for a request refused by [`admit_request`]: the error's status and
/// reason, plus the header that status calls for (Unsupported for 420, Accept for 415).
pub fn rejection(req: &Request, err: &SipError, to_tag: &str) -> Option<Response> {
    let status = err.status()?;
    let mut resp = response_to(req, status, &err.reason_phrase(), Some(to_tag));
    match err {
        SipError::BadExtension(tags) => resp.headers.push(Header::Unsupported(tags.clone())),
        SipError::UnsupportedMediaType(_) | SipError::NotAcceptable => {
            resp.headers.push(Header::Accept(vec![MediaType {
                mtype: "application".into(),
                subtype: "sdp".into(),
                params: Vec::new(),
            }]))
        }
        _ => {}
    }
    Some(resp)
}

/// RFC 3261 §8.1.3.3: a UAC discards a response with more than one Via.
pub fn uac_accepts_response(resp: &Response) -> bool {
    resp.headers.vias().count() == 1
}
