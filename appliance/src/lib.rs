//! # callgate-appliance — the on-premise gateway daemon
//!
//! Rooms (one folder or file each; later issues add `sip/`, `media/`, `recording/`,
//! `dialer/`, `sync/`, `web/`, `board/`):
//! - [`config`]: the appliance's TOML config, typed and validated at load;
//! - [`store`]: the box's SQLite database (WAL, `synchronous=FULL`) and its migrations;
//! - [`server`]: the local ops listener (health, metrics) and the daemon's lifecycle;
//! - [`board`]: the thread that drives the front panel (LEDs, button, sensor, watchdog);
//! - [`call_tap`]: live calls' tap points, for listening in on the tech port's headset;
//! - [`sip`]: glue to the SIP engine (`callgate-sip`) and the technician's `sip` tools;
//! - [`sync`]: the link to the coordinator (outbox, MQTT over mutual TLS, identity);
//! - [`web`]: the technicians' local HTTPS UI;
//! - [`media`]: RTP port pairs and the real-time loop of each call leg;
//! - [`recording`]: encrypted call recording (segments on disk, their list in the store);
//! - [`reset`]: the factory reset (web UI and front-panel button);
//! - [`restart`]: a request to restart the daemon in place (after enrollment or reset);
//! - [`dialer`]: the campaign executor (holdings, compliance gate, dial modes, calls);
//! - [`agents`]: the roster, agent states, routing of answered calls, the inbound queue;
//! - [`robot_call`]: robot scripts and answering-machine detection on answered calls;
//!
//! The board (LEDs, button, sensor, watchdog, tech audio port) is its own crate,
//! `callgate-board` (`appliance/board/`), so the acceptance suite can use it without the
//! daemon. The binary (`src/main.rs`) only parses the command line and calls into these.

pub mod agents;
pub mod board;
pub mod call_tap;
pub mod config;
pub mod dialer;
pub mod media;
pub mod recording;
pub mod reset;
pub mod restart;
pub mod robot_call;
pub mod server;
pub mod sip;
pub mod store;
pub mod sync;
pub mod web;
