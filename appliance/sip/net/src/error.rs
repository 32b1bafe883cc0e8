//! The transport driver's error type. Connection failures at run time are not returned to
//! a caller: they go to the core as transport errors (503) and to the log.

use std::net::SocketAddr;

/// What went wrong in the transport layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A listener or socket could not be bound.
    #[error("binding the SIP {transport} listener on {addr}: {source}")]
    Bind {
        /// UDP, TCP or TLS.
        transport: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A `host[:port]` target that is not one.
    #[error("SIP target {target:?} is not host[:port]: {reason}")]
    BadTarget {
        /// The text given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host name that does not resolve to any address.
    #[error("SIP host {host:?} does not resolve: {reason}")]
    Unresolved {
        /// The name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// TLS listeners were asked for without a certificate, or the PEM given is unusable.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// A connection to a peer failed (refused, reset, handshake, timeout).
    #[error("connection to {peer} failed: {reason}")]
    Connect {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The endpoint task has stopped.
    #[error("the SIP endpoint has stopped")]
    Stopped,
}

impl TransportError {
    /// The SIP status this error stands for, when it ends a request: a failed connection
    /// counts as 503 (RFC 3261 §8.1.3.1).
    pub fn status(&self) -> Option<u16> {
        match self {
            TransportError::Connect { .. } | TransportError::Stopped => Some(503),
            _ => None,
        }
    }
}
