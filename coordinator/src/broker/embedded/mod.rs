//! # broker::embedded — the MQTT broker inside `callgate-coordinator all-in-one`
//!
//! So that a small deployment needs nothing else installed: MQTT 3.1.1 over TLS with
//! client certificates from the organisation CA required (identity = the certificate's CN),
//! and per-client topic isolation by the same rules as the generated Mosquitto ACL
//! ([`acl`]), refreshed from the `appliances` table so revocation takes effect.
//!
//! [`router`] is the sans-IO core; [`driver`] owns the listener, the TLS handshakes and one
//! task per connection. Must not: accept a client without a certificate from the org CA.

pub mod acl;
pub mod driver;
pub mod router;
