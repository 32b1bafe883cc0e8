//! # broker — the MQTT broker the link runs through (issue 5)
//!
//! Owns: generating an external broker's configuration ([`mosquitto`]: TLS listener with
//! the organisation CA, `require_certificate true`, `use_identity_as_username true`, and an
//! ACL confining each enrolled appliance to its own `callgate/v1/{id}/` topics).
//!
//! Not yet here: the embedded broker (see docs/status/issue-5.md for why rumqttd was not
//! taken and the plan). Must not: grant a revoked appliance anything.

pub mod mosquitto;
