//! # callgate-media — the appliance's media cores, sans-IO
//!
//! Everything the box does to call audio, as state machines and pure functions with time passed
//! in. No sockets, no clocks, no tokio: the daemon's drivers (`appliance/src/media/`,
//! `appliance/src/recording/`) own those.
//!
//! Rooms:
//! - [`g711`]: µ-law/A-law samples and transcoding;
//! - [`sdp`]: session descriptions and RFC 3264 offer/answer;
//! - [`rtp`]: RTP packets, receive-side sequence/SSRC state and the send side;
//! - [`jitter`]: the adaptive jitter buffer in front of every audio consumer;
//! - [`wav`]: 8 kHz WAV writing (recordings) and reading (prompts);
//! - [`recording`]: stereo segments sealed as age files, and the segment store contract;
//! - [`tone`]: tone generation, mixing and tone correlation;
//! - [`dtmf`]: RFC 4733 events sent and received, in-band Goertzel detection;
//! - [`bridge`]: relaying a leg with SSRC/sequence/timestamp rewriting and transcoding;
//! - [`prompt`]: WAV prompts and tone sequences, alone or mixed over a live leg;
//! - [`quality`]: E-model R-factor and MOS per leg.
//!
//! Must not: read the clock, open files or sockets on its own, or know about SIP dialogs.

/// The age crate, re-exported so the daemon names recipients with the same types.
pub use age;

pub mod bridge;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod prompt;
pub mod quality;
pub mod recording;
pub mod rtp;
pub mod sdp;
pub mod tone;
pub mod wav;
