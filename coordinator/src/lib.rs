//! # callgate-coordinator — the cloud half of Callgate
//!
//! Rooms (one folder or file each):
//! - [`config`]: the coordinator's TOML config, typed and validated at load;
//! - [`console`]: the HQ web console over HTTPS (users, roles, audit, campaigns, fleet, live);
//! - [`store`]: the coordinator's database (SQLite by default) and its migrations;
//! - [`agents`]: agents (argon2 passwords) and agent groups, with per-branch deltas;
//! - [`api`]: the REST API under `/api` (tokens, problem+json, OpenAPI document);
//! - [`call_tasks`]: one-off call tasks and their signed, retried result webhooks;
//! - [`campaigns`]: campaign settings, lifecycle and each contact's progress;
//! - [`compliance`]: stored jurisdiction profiles, do-not-call lists, rule inputs;
//! - [`contacts`]: contact lists, streaming CSV import, numbers encrypted at rest;
//! - [`leasing`]: contact leases, attempt results and pacing grants;
//! - [`routing`]: versioned routing policy (ordered rules → group, last agent, robot);
//! - [`server`]: the HTTP listener: health, metrics, and (with later issues) the REST API
//!   and console.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into these.

pub mod agents;
pub mod api;
pub mod broker;
pub mod call_tasks;
pub mod campaigns;
pub mod compliance;
pub mod config;
pub mod console;
pub mod contacts;
pub mod enroll;
pub mod leasing;
pub mod routing;
pub mod server;
pub mod store;
pub mod sync;
