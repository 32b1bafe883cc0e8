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
//! drivers do, and carry out the actions). The only I/O here is reading a script and its
//! prompts at load ([`RobotScript::load`]) and running espeak-ng ([`EspeakNg`]).
//!
//! ## Wiring it into the daemon
//!
//! 1. At campaign load, `RobotScript::parse(&toml_text, prompt_folder)` (or
//!    [`RobotScript::load`]) once; refuse the campaign with the [`ScriptError`] (it names the
//!    step and field). Share the script between calls as `Arc<RobotScript>`.
//! 2. When a call is answered, feed the first seconds of decoded audio, 20 ms at a time, to a
//!    [`CadenceDetector`] (`handle_frame`, then `poll_decision`); a machine gets the campaign's
//!    machine handling, a human or unknown the script.
//! 3. `RobotCall::start(now, script, contact.fields)`, then after every input drain
//!    `poll_action()` and carry each [`RobotAction`] out in order:
//!    - `Play { playback, prompt, .. }`: play `prompt` (a `callgate_media::prompt::Prompt`)
//!      on the leg; at its end call `handle_playback_finished(now, playback)`;
//!    - `Say { playback, text, voice, .. }`: on a blocking thread,
//!      `tts.synthesize(&text, &SpeechStyle { voice, ..Default::default() })`, play
//!      `speech.to_prompt()` (or send `speech.g711_frames(codec)`), then
//!      `handle_playback_finished`; on a [`TtsError`], log it and call
//!      `handle_playback_failed(now, playback)`;
//!    - `StopPlayback { playback }`: stop it at once (no "finished" expected);
//!    - `StartCollecting` / `StopCollecting`: pass DTMF digits (RFC 4733 or in-band,
//!      `callgate_media::dtmf`) to `handle_digit(now, digit)` between the two;
//!    - `Transfer { group, .. }`: route the call to the agent group; if no agent takes it,
//!      `handle_transfer_failed(now)`;
//!    - `Hangup { disposition, .. }`: end the call and record the disposition.
//! 4. Keep one timer at `poll_timeout()` and call `handle_timeout(now)` when it fires; call
//!    `handle_caller_hangup(now)` on BYE. `outcome()` gives the call record's disposition.

pub mod amd;
pub mod call;
pub mod script;
pub mod tts;

pub use amd::{AmdDecision, AmdVerdict, CadenceDetector, MachineDetector};
pub use call::{PlaybackId, RobotAction, RobotCall, RobotOutcome};
pub use script::{RobotScript, ScriptError};
pub use tts::{EspeakNg, Speech, SpeechStyle, TextToSpeech, TtsError};
