//! # callgate-sip — the appliance's SIP engine core
//!
//! A sans-IO SIP stack: it never touches a socket, a clock or tokio. Bytes and the current
//! time go in; messages, transmissions and timer deadlines come out. The tokio drivers
//! (`callgate-sip-net` for UDP/TCP/TLS, and the daemon's UDP driver in
//! `appliance/src/sip/`) own sockets and timers.
//!
//! Rooms:
//! - [`message`], [`header`], [`uri`], [`param`]: the message model and serialization;
//! - [`parse`]: parsing one message (datagram rules) and answering unparseable requests;
//! - [`framing`]: cutting TCP/TLS streams into messages by Content-Length, keep-alives;
//! - [`transaction`]: RFC 3261 §17 client/server transactions, timers, retransmission;
//! - [`dialog`]: dialog state and in-dialog requests (loose routing, ACK for 2xx);
//! - [`agent`]: the user agent: outbound call legs, CANCEL/BYE/re-INVITE, OPTIONS;
//! - [`digest`]: answering 401/407 challenges (MD5, SHA-256);
//! - [`trunk`]: carrier trunks, groups, probing health, limits, figures, failover routing;
//! - [`inbound`]: who may call in (allow-list, 403/silence, per-source rate) and routes;
//! - [`registrar`]: the registrar for local phones (digest, bindings, expiry);
//! - [`admission`]: what a UAS answers a request that parsed but cannot be served;
//! - [`error`]: the one error type, which knows its SIP status.
//!
//! This crate must not do I/O, read the clock, spawn tasks or log.

pub mod admission;
pub mod agent;
mod cursor;
pub mod dialog;
pub mod digest;
pub mod error;
pub mod framing;
pub mod header;
mod id_map;
pub mod inbound;
pub mod message;
pub mod param;
pub mod parse;
pub mod registrar;
pub mod transaction;
pub mod trunk;
pub mod uri;
mod wire;

pub use error::SipError;
pub use message::{Method, Request, Response, SipMessage};
pub use parse::{parse_datagram, parse_message, respond_to_invalid, Incoming};
