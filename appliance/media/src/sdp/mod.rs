//! SDP (RFC 8866) as the appliance speaks it, and RFC 3264 offer/answer for G.711 audio.
//!
//! Owns: parsing and serialising session descriptions ([`description`]), and deciding what a
//! call leg sends and receives ([`negotiate`]): codec (PCMU/PCMA), `telephone-event`, ptime,
//! direction (sendrecv/sendonly/recvonly/inactive, i.e. hold) and the remote RTP address.
//! Talks to: the SIP layer, which carries the bodies and turns an [`SdpError`] into a response
//! (status code plus `Warning`). Must not: open sockets or allocate RTP ports (the caller passes
//! its local address and port in).

pub mod description;
pub mod negotiate;

pub use description::{Attribute, Connection, MediaDescription, Origin, SessionDescription};
pub use negotiate::{
    accept_answer, answer_offer, create_offer, Direction, LocalMedia, NegotiatedAudio, OfferAnswer,
    SrtpKeys, TELEPHONE_EVENT_PT,
};

/// Why a session description was refused. Each variant knows the SIP status and, for offers
/// we cannot accept, the RFC 3261 §20.43 warning code the response carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// A line is not `<letter>=<value>` or a required field is missing or malformed.
    /// Maps to 400 (the body cannot be understood at all).
    #[error("SDP line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    /// A mandatory line (`v=`, `o=`, `s=`, `t=`) is absent. Maps to 400.
    #[error("SDP lacks its mandatory `{0}=` line")]
    MissingLine(char),
    /// Audio was offered only with codecs we do not carry. Maps to 488, warning 305.
    #[error("incompatible media format: offered {offered}, we accept PCMU and PCMA")]
    NoCommonCodec { offered: String },
    /// SRTP was offered only with crypto suites we do not speak, or we hold no key for this
    /// leg. Maps to 488, warning 305.
    #[error("incompatible SRTP crypto: offered {offered}, we accept AES_CM_128_HMAC_SHA1_80")]
    NoCommonCrypto { offered: String },
    /// No audio stream with a transport we speak (RTP/AVP) was offered. Maps to 488, warning 304.
    #[error("media type not available: offered {offered}, we accept audio over RTP/AVP")]
    NoAudioStream { offered: String },
    /// The connection address is not IPv4/IPv6 or cannot be parsed. Maps to 488, warning 301.
    #[error("incompatible network address: `{0}`")]
    BadAddress(String),
    /// An answer does not correspond to our offer (different stream count, codec not offered).
    /// Maps to 488, warning 399 (we end the call; the peer broke RFC 3264).
    #[error("answer does not match our offer: {0}")]
    AnswerMismatch(String),
}

/// A `Warning` header value (RFC 3261 §20.43).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The three-digit warning code (3xx).
    pub code: u16,
    /// Human-readable text.
    pub text: String,
}

impl Warning {
    /// The header value as it goes on the wire: `305 host "text"`.
    pub fn header_value(&self, agent: &str) -> String {
        let text = self.text.replace('"', "'");
        format!("{} {agent} \"{text}\"", self.code)
    }
}

impl SdpError {
    /// The SIP status code a request carrying this SDP is answered with.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Malformed { .. } | SdpError::MissingLine(_) => 400,
            SdpError::NoCommonCodec { .. }
            | SdpError::NoCommonCrypto { .. }
            | SdpError::NoAudioStream { .. }
            | SdpError::BadAddress(_)
            | SdpError::AnswerMismatch(_) => 488,
        }
    }

    /// The `Warning` for a 488, naming what we could not accept.
    pub fn warning(&self) -> Option<Warning> {
        let code = match self {
            SdpError::Malformed { .. } | SdpError::MissingLine(_) => return None,
            SdpError::NoCommonCodec { .. } | SdpError::NoCommonCrypto { .. } => 305,
            SdpError::NoAudioStream { .. } => 304,
            SdpError::BadAddress(_) => 301,
            SdpError::AnswerMismatch(_) => 399,
        };
        Some(Warning {
            code,
            text: self.to_string(),
        })
    }
}
