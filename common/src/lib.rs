//! # callgate-common — the contract between the appliance and the coordinator
//!
//! Owns the vocabulary both halves share and nothing else:
//! - [`compliance`]: the compliance rules both halves evaluate before a dial;
//! - [`ids`]: typed identifiers (`ApplianceId`, `CampaignId`, `CallId`, ...);
//! - [`phone`]: validated E.164 numbers that never print in full by accident;
//! - [`time`]: wall-clock instants as they travel on the wire;
//! - [`wire`]: the postcard-encoded envelopes and the message enums per direction;
//! - [`topics`]: every MQTT topic name, built in one place;
//! - [`store`] (feature `store`): the storage convention both halves follow;
//! - [`observe`] (feature `observe`): logs, metrics, health endpoints and TOML config loading,
//!   the same for both binaries.
//!
//! Must not: open sockets, read clocks on its own (callers pass time in), or depend on
//! anything appliance- or coordinator-specific.

pub mod bench;
pub mod compliance;
pub mod ids;
#[cfg(feature = "observe")]
pub mod observe;
pub mod outbox;
pub mod phone;
pub mod routing;
#[cfg(feature = "store")]
pub mod store;
pub mod time;
pub mod topics;
pub mod wire;
