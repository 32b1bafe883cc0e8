//! # callgate-sip-net — the SIP engine's transports
//!
//! The thin tokio driver under the sans-IO cores of `callgate-sip`: it owns UDP sockets,
//! TCP and TLS listeners (IPv4 and IPv6), the connections (reused both ways: a peer that
//! connected to us is answered and called on its own connection; our connection to a
//! trunk carries every request to it), the timer, and host-name resolution for trunks.
//! The core decides everything SIP: which transport a destination takes
//! (`UserAgent::set_transport`), what to send and when. A connection that cannot be made
//! or breaks is reported to the core as a transport error (RFC 3261 §8.1.3.1: 503), which
//! moves a call to the next trunk.
//!
//! Rooms:
//! - [`error`]: the one error type of this crate;
//! - [`resolve`]: `host[:port]` targets and A/AAAA resolution through the system resolver;
//! - [`tls`]: rustls (ring) client and server settings from PEM;
//! - [`liveness`]: stream connection upkeep (RFC 5626 keep-alives, idle closing, the
//!   per-source cap), sans-IO;
//! - [`trace`]: the scoped SIP trace (one trunk or one call, logged in full for a while);
//! - [`endpoint`]: the driver task and its handle.
//!
//! This crate must not make SIP decisions (no parsing beyond framing, no timers of its own
//! beyond the core's deadline and a connect timeout), and must not touch the daemon's
//! config or store.

pub mod endpoint;
pub mod error;
pub mod liveness;
pub mod resolve;
pub mod tls;
pub mod trace;

pub use endpoint::{Bound, CoreHandle, EndpointConfig, SipCore, SipEndpoint, WireRecord};
pub use error::TransportError;
pub use liveness::StreamPolicy;
pub use resolve::{default_port, resolve, SipTarget};
pub use tls::TlsSettings;
