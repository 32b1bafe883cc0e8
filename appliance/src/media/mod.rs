//! The tokio side of call media: UDP sockets from the configured RTP port range and one task
//! per leg that sends and receives audio in real time around the `callgate_media` cores.
//!
//! Owns: port allocation ([`RtpPortRange`]), the per-leg socket loop with symmetric RTP and
//! latching ([`RtpLeg`], [`run_audio_leg`]), bridged calls with recording ([`run_bridge`]), each leg's quality kept with
//! the call ([`LegQualityLog`]), and the [`MediaError`] enum. Talks to: the SIP
//! layer (which supplies the negotiated SDP) and recording (which receives played-out frames).
//! Must not: parse SIP, or put protocol logic here that belongs in a sans-IO core.

pub mod bench;
mod bridge;
mod leg;
mod ports;
pub mod quality_log;

pub use bridge::{run_bridge, BridgeCommand, BridgeReport};
pub use leg::{
    fresh_srtp_key, run_audio_leg, run_audio_leg_with_keys, KeyPress, LegAudio, LegReport,
    ReceivedPacket, RtpLeg,
};
pub use ports::RtpPortRange;
pub use quality_log::{LegQualityLog, LegRole};

use std::net::SocketAddr;

/// Why media on a leg failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The configured port range is empty, odd-aligned or reversed.
    #[error("RTP port range {first}-{last} is invalid: {reason}")]
    BadPortRange {
        first: u16,
        last: u16,
        reason: &'static str,
    },
    /// Every port pair in the range is in use: the call cannot get media.
    #[error("no free RTP port pair in {first}-{last}")]
    PortsExhausted { first: u16, last: u16 },
    /// Binding a socket failed for a reason other than the port being taken.
    #[error("binding RTP socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The socket failed while sending or receiving.
    #[error("RTP socket I/O on port {port}: {source}")]
    Socket {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}
