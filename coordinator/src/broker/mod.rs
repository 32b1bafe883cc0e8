//! # broker — the MQTT broker the link runs through (issue 5)
//!
//! Owns: generating an external broker's configuration ([`mosquitto`]: TLS listener with
//! the organisation CA, `require_certificate true`, `use_identity_as_username true`, and an
//! ACL confining each enrolled appliance to its own `callgate/v1/{id}/` topics).
//!
//! Owns also the embedded broker ([`embedded`]) that `all-in-one` runs when
//! `sync.embedded_broker` is set (rumqttd was evaluated and not taken: see
//! docs/status/issue-5.md). Must not: grant a revoked appliance anything.

pub mod embedded;
pub mod mosquitto;
