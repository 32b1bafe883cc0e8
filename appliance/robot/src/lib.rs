//! # callgate-robot — robot scripts for answered calls, sans-IO
//!
//! What an agentless campaign (or an overflowing queue) does with a call once it is answered:
//!
//! - [`script`]: the declarative, versioned robot-script format (TOML) and its validation at
//!   load; [`RobotScript`] is a script that passed.
//! - [`call`]: [`RobotCall`], the interpreter for one call, a sans-IO state machine: the daemon
//!   feeds it prompt-finished, DTMF and timer events with the time, and polls
//!   [`RobotAction`]s (play, say, collect, transfer, hang up).
//! - [`tts`]: the [`TextToSpeech`] trait behind `say`, with espeak-ng ([`EspeakNg`]) as the
//!   local engine, producing 8 kHz audio ready for G.711 frames.
//! - [`amd`]: answering-machine detection from the first seconds of audio
//!   ([`MachineDetector`], [`CadenceDetector`]), its labelled test set and its benchmark.
//!
//! Must not: open sockets, read the clock, or touch SIP dialogs and RTP sessions (the daemon's
//! drivers do, and carry out the actions).

pub mod amd;
pub mod call;
pub mod script;
pub mod tts;

pub use amd::{AmdDecision, AmdVerdict, CadenceDetector, MachineDetector};
pub use call::{PlaybackId, RobotAction, RobotCall, RobotOutcome};
pub use script::{RobotScript, ScriptError};
pub use tts::{EspeakNg, Speech, SpeechStyle, TextToSpeech, TtsError};
