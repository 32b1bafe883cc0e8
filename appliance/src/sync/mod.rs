//! # sync — the appliance's half of the link to the coordinator (issue 5)
//!
//! Owns: the uplink outbox in SQLite ([`outbox_store`], tables `sync_outbox` and
//! `sync_state`), the MQTT-over-mutual-TLS driver ([`link`]) and its published state
//! ([`status`]), the box's identity files
//! ([`identity`]), the reconnect backoff ([`backoff`]) and a synthetic call-record source for
//! tests and the benchmark ([`load`]), and the telemetry producer ([`telemetry`]).
//!
//! Talks to: the coordinator, only through the broker, only on `callgate/v1/{id}/...`.
//! The delivery decisions (sequence numbers, acks, resends, coalescing, quota) are the
//! sans-IO core in `callgate_common::outbox`; this room persists and transports them.
//!
//! Must not: trust the MQTT client's in-flight queue for durability (the outbox is the
//! source of truth), read the private key anywhere but here, or touch other rooms' tables.

pub mod backoff;
pub mod enroll;
pub mod identity;
pub mod link;
pub mod load;
pub mod outbox_store;
pub mod service;
pub mod settings;
pub mod status;
pub mod telemetry;

use callgate_common::outbox::OutboxError;
use callgate_common::wire::WireError;
use std::path::PathBuf;

/// Why the sync subsystem failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The box's database refused a read or write.
    #[error("sync store: {0}")]
    Store(#[from] sqlx::Error),
    /// The outbox core refused (quota, corrupt rows, impossible ack).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A stored or received payload could not be decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An identity file is missing or unreadable.
    #[error("identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    /// The TLS configuration could not be built from the identity.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The MQTT client refused a request.
    #[error("MQTT client: {0}")]
    Mqtt(String),
}

#[cfg(test)]
mod tests {
    use callgate_common::ids::ApplianceId;
    use callgate_common::time::UnixMillis;
    use callgate_common::wire::{Downlink, DownlinkEnvelope, Uplink, UplinkEnvelope};

    #[test]
    fn the_renewal_messages_round_trip_on_the_wire() {
        let app = ApplianceId::new("branch-1").unwrap();
        let up = UplinkEnvelope::new(
            app.clone(),
            9,
            UnixMillis(1),
            Uplink::CertificateRenewal {
                csr: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            },
        );
        assert_eq!(UplinkEnvelope::decode(&up.encode()).unwrap(), up);
        let down = DownlinkEnvelope::new(
            app,
            3,
            UnixMillis(2),
            Downlink::Certificate {
                pem: "-----BEGIN CERTIFICATE-----".into(),
            },
        );
        assert_eq!(DownlinkEnvelope::decode(&down.encode()).unwrap(), down);
    }
}
