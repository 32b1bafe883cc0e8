//! # callgate-appliance — the on-premise gateway daemon
//!
//! Rooms (one folder or file each; later issues add `sip/`, `media/`, `recording/`,
//! `dialer/`, `sync/`, `web/`, `board/`):
//! - [`config`]: the appliance's TOML config, typed and validated at load;
//! - [`store`]: the box's SQLite database (WAL, `synchronous=FULL`) and its migrations;
//! - [`server`]: the local ops listener (health, metrics);
//! - [`media`]: RTP port pairs and the real-time loop of each call leg;
//! - [`recording`]: encrypted call recording (segments on disk, their list in the store);
//! - [`tech_audio`] (feature `alsa`): the technician's audio port.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into these.

pub mod config;
pub mod media;
pub mod recording;
pub mod server;
pub mod store;
#[cfg(feature = "alsa")]
pub mod tech_audio;
