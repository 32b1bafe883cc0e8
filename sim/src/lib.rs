//! # callgate-sim — the site simulator and the all-in-one demo
//!
//! A branch's outside world, simulated on Callgate's own SIP (`callgate-sip`) and media
//! (`callgate-media`) cores, so a demo or a test needs no carrier and no people:
//!
//! - [`scenario`]: the scenario file (plain TOML, seeded), validated with the key named;
//! - [`dist`]: the seeded random source and the time distributions scenarios use;
//! - [`voice`]: speech-like audio (a person's talk spurts, an answering machine's long
//!   greeting and beep), sans-IO, 20-ms frames;
//! - [`carrier`]: the simulated carrier: [`carrier::CarrierCore`] (sans-IO: what happens
//!   to each call — busy, no answer, a person, a machine — and when) and its UDP driver
//!   [`carrier::SimCarrier`];
//! - [`rtp`]: the RTP task of one simulated call leg (sends a voice, counts what arrives);
//! - [`sip_loop`]: the small tokio loop that owns one UDP socket for a `UserAgent` core;
//! - [`agents`]: simulated agents: desk phones that register with the appliance and answer
//!   its nailed-up leg, and people who log in on the appliance's agent page over HTTPS and
//!   save dispositions;
//! - [`demo`]: the all-in-one demo (`callgate-demo`): coordinator, enrolled appliances,
//!   simulator, sample contacts and a running campaign on localhost.
//!
//! Must not: reach anything but loopback, or change the appliance's or the coordinator's
//! data other than through their APIs (the demo's setup uses their public functions).

pub mod agents;
pub mod carrier;
pub mod demo;
pub mod dist;
pub mod rtp;
pub mod scenario;
pub mod sip_loop;
pub mod voice;

/// Why the simulator could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario file could not be read.
    #[error("reading scenario {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The scenario is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("scenario {path}: {message}")]
    Syntax {
        /// The file (or `<text>`).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent; `key` names it.
    #[error("scenario key {key}: {reason}")]
    Invalid {
        /// The offending key, e.g. `carrier.answer_probability`.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SIP loop stopped.
    #[error("the simulator's SIP loop has stopped")]
    Stopped,
    /// Talking to the appliance's agent page failed.
    #[error("agent page {url}: {reason}")]
    AgentPage {
        /// The page.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl SimError {
    /// A validation error for `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SimError {
        SimError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
