//! The SIP engine's one error type. Every variant knows the SIP status a server answers
//! with when the error is about a request it received ([`SipError::status`]), and the
//! reason phrase it puts on that status line ([`SipError::reason_phrase`]).

use thiserror::Error;

/// Everything that can go wrong in the SIP core: parsing, admission of a request, the
/// transaction layer and digest authentication.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SipError {
    /// The first line is neither `METHOD SP Request-URI SP SIP-Version` nor
    /// `SIP-Version SP Status-Code SP Reason-Phrase` (extra or missing spaces included).
    #[error("malformed start line: {0}")]
    MalformedStartLine(&'static str),
    /// The Request-URI is not a valid URI for a request line.
    #[error("malformed Request-URI: {0}")]
    BadRequestUri(&'static str),
    /// The request names a SIP version other than SIP/2.0 (answered with 505).
    #[error("SIP version `{0}` is not supported")]
    UnsupportedVersion(String),
    /// A response's status code is not three digits in 100..=699; no response is possible.
    #[error("status code `{0}` is not three digits in 100-699")]
    BadStatusCode(String),
    /// A header line has no colon, an invalid name, or bytes that are not UTF-8 where text
    /// is required.
    #[error("malformed header line: {0}")]
    MalformedHeaderLine(&'static str),
    /// A header we act on has a value that breaks its grammar; `header` is its full name.
    #[error("malformed {header} header: {reason}")]
    MalformedHeader {
        /// The header's canonical (long-form) name.
        header: &'static str,
        /// What was wrong with the value.
        reason: &'static str,
    },
    /// A header that must be present is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that may occur once occurs more than once.
    #[error("{0} header occurs more than once")]
    DuplicateHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method `{cseq}` does not match request method `{request}`")]
    CSeqMethodMismatch {
        /// The method on the request line.
        request: String,
        /// The method in the CSeq header.
        cseq: String,
    },
    /// Content-Length promises more body bytes than the datagram holds.
    #[error("Content-Length {declared} exceeds the {available} body bytes present")]
    BodyTruncated {
        /// The value of Content-Length.
        declared: usize,
        /// How many bytes follow the blank line.
        available: usize,
    },
    /// A message on a stream transport has no Content-Length: framing is impossible.
    #[error("Content-Length is required on a stream transport")]
    MissingContentLength,
    /// The header section does not end with an empty line.
    #[error("header section is not terminated by an empty line")]
    UnterminatedHeaders,
    /// The message (or its header section on a stream) is larger than the configured limit.
    #[error("message exceeds the {limit}-byte limit")]
    MessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The Request-URI's scheme is not one we serve (answered with 416).
    #[error("unsupported URI scheme `{0}`")]
    UnsupportedUriScheme(String),
    /// The request Requires extensions we do not support (answered with 420 and an
    /// Unsupported header listing them).
    #[error("unsupported extensions required: {}", .0.join(", "))]
    BadExtension(Vec<String>),
    /// The body's Content-Type is not one we understand (answered with 415).
    #[error("unsupported media type `{0}`")]
    UnsupportedMediaType(String),
    /// The request's Accept header excludes every body type we could answer with (406).
    #[error("none of the accepted media types can be produced")]
    NotAcceptable,
    /// The request uses an authorization scheme we do not implement (answered with a
    /// fresh challenge, 401).
    #[error("unsupported authorization scheme `{0}`")]
    UnsupportedAuthScheme(String),
    /// A client transaction got no final response in time (Timer B or F fired).
    #[error("transaction timed out")]
    TransactionTimeout,
    /// The transport reported the destination unreachable.
    #[error("transport error: {0}")]
    TransportFailure(String),
    /// A request refers to a dialog or transaction we do not have (481).
    #[error("call leg or transaction does not exist")]
    NoSuchDialog,
    /// A digest challenge could not be answered (unknown algorithm, missing realm/nonce,
    /// or the same credentials were already refused).
    #[error("cannot answer authentication challenge: {0}")]
    AuthenticationFailed(&'static str),
    /// A caller ID to present is not an E.164 number (`+` and 1–15 digits), a national
    /// number (1–16 digits) or `anonymous`; it is refused before any INVITE carries it.
    #[error("caller ID `{value}` refused: {reason}")]
    InvalidCallerId {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl SipError {
    /// The status a UAS answers a request with when this error is about that request;
    /// `None` when no response is to be sent (the error concerns a response, or a core
    /// outcome that is reported, not answered).
    pub fn status(&self) -> Option<u16> {
        use SipError::*;
        match self {
            MalformedStartLine(_)
            | BadRequestUri(_)
            | MalformedHeaderLine(_)
            | MalformedHeader { .. }
            | MissingHeader(_)
            | DuplicateHeader(_)
            | CSeqMethodMismatch { .. }
            | BodyTruncated { .. }
            | MissingContentLength
            | UnterminatedHeaders => Some(400),
            UnsupportedVersion(_) => Some(505),
            BadStatusCode(_) => None,
            MessageTooLarge { .. } => Some(513),
            UnsupportedUriScheme(_) => Some(416),
            BadExtension(_) => Some(420),
            UnsupportedMediaType(_) => Some(415),
            NotAcceptable => Some(406),
            UnsupportedAuthScheme(_) => Some(401),
            TransactionTimeout => Some(408),
            TransportFailure(_) => Some(503),
            NoSuchDialog => Some(481),
            AuthenticationFailed(_) | InvalidCallerId { .. } => None,
        }
    }

    /// The reason phrase for the status line: the standard phrase followed by what was
    /// wrong, e.g. `Bad Request (malformed From header: unterminated quoted string)`.
    pub fn reason_phrase(&self) -> String {
        let standard = match self.status() {
            Some(400) => "Bad Request",
            Some(401) => "Unauthorized",
            Some(406) => "Not Acceptable",
            Some(408) => "Request Timeout",
            Some(415) => "Unsupported Media Type",
            Some(416) => "Unsupported URI Scheme",
            Some(420) => "Bad Extension",
            Some(481) => "Call/Transaction Does Not Exist",
            Some(503) => "Service Unavailable",
            Some(505) => "Version Not Supported",
            Some(513) => "Message Too Large",
            _ => "Error",
        };
        // A reason phrase may not hold CR or LF; a detail copied from input never does
        // because values are unfolded before parsing, but keep the line safe regardless.
        let detail: String = self
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("{standard} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_the_status_a_server_answers_with() {
        assert_eq!(SipError::MissingHeader("To").status(), Some(400));
        assert_eq!(
            SipError::UnsupportedVersion("SIP/7.0".into()).status(),
            Some(505)
        );
        assert_eq!(SipError::BadStatusCode("1".into()).status(), None);
        assert_eq!(SipError::NoSuchDialog.status(), Some(481));
        assert_eq!(SipError::BadExtension(vec!["x".into()]).status(), Some(420));
        assert_eq!(
            SipError::MissingHeader("To").reason_phrase(),
            "Bad Request (missing To header)"
        );
    }
}
