//! The robot-script file as written (TOML, format 1), before validation.
//!
//! Owns the serde shape only: every table refuses unknown keys, so a typo is an error and
//! not a silently ignored setting. Must not: check meaning (see [`super::RobotScript::parse`]).
//!
//! ```toml
//! format = 1                 # the file format; only 1 exists
//! name = "Payment reminder"
//! version = 3                # the script's own version, raised with every edit
//! start = "greet"
//! voice = "en-us"            # optional: TTS voice for every `say`
//! max_steps = 100            # optional: steps one call may run (default 200)
//! on_machine = "voicemail"   # optional: where an answering machine's call starts (after
//!                            # its greeting); without it a machine's call is ended
//!
//! [defaults]                 # optional: values for contact fields a contact lacks
//! first_name = "there"
//!
//! [steps.greet]
//! kind = "say"
//! text = "Hello {{first_name}}, this is Acme Energy."
//! next = "ask_consent"
//!
//! [steps.ask_consent]
//! kind = "collect"
//! prompt = { play = "consent.wav" }     # or { say = "Press 1 ..." }
//! max_digits = 1
//! timeout_ms = 5000
//! retries = 2
//! valid = ["1", "2"]
//! into = "consent"
//! next = "route"
//! on_no_input = "goodbye"
//! on_invalid = "goodbye"
//!
//! [steps.route]
//! kind = "branch"
//! on = "consent"
//! cases = { "1" = "to_agent", "2" = "declined" }
//! default = "goodbye"
//!
//! [steps.to_agent]
//! kind = "transfer"
//! group = 2
//! on_no_agent = "goodbye"
//!
//! [steps.declined]
//! kind = "hangup"
//! disposition = "declined"
//!
//! [steps.voicemail]
//! kind = "say"
//! text = "Hello {{first_name}}, Acme Energy here. Please call us back."
//! next = "left_message"
//!
//! [steps.left_message]
//! kind = "hangup"
//! disposition = "machine_message_left"
//!
//! [steps.goodbye]
//! kind = "hangup"
//! disposition = "no_response"
//! ```

use callgate_common::ids::AgentGroupId;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A whole script file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptFile {
    /// The file format version; only 1 exists.
    pub format: u32,
    /// A name for people.
    pub name: String,
    /// The script's own version, raised with every edit.
    pub version: u64,
    /// The first step.
    pub start: String,
    /// TTS voice for every `say` (the engine's default when absent).
    #[serde(default)]
    pub voice: Option<String>,
    /// Steps one call may run before it is hung up (default 200).
    #[serde(default)]
    pub max_steps: Option<u32>,
    /// The step an answering machine's call starts at (after its greeting), to leave a
    /// message; without it a machine's call is ended.
    #[serde(default)]
    pub on_machine: Option<String>,
    /// Values for variables a contact lacks.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// The steps by id.
    pub steps: BTreeMap<String, StepSpec>,
}

/// One step, by its `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepSpec {
    /// Play a WAV prompt.
    Play(PlaySpec),
    /// Speak a text through the TTS engine.
    Say(SaySpec),
    /// Ask for DTMF digits.
    Collect(CollectSpec),
    /// Go to a step chosen by a variable's value.
    Branch(BranchSpec),
    /// Set a variable.
    Set(SetSpec),
    /// Hand the call to an agent group.
    Transfer(TransferSpec),
    /// End the call with a disposition.
    Hangup(HangupSpec),
}

/// `kind = "play"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaySpec {
    /// The WAV file, relative to the script's prompt folder.
    pub file: String,
    /// The step after it.
    pub next: String,
}

/// `kind = "say"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaySpec {
    /// The text, with `{{variable}}` holes.
    pub text: String,
    /// A voice for this step only.
    #[serde(default)]
    pub voice: Option<String>,
    /// The step after it.
    pub next: String,
}

/// What a collect step (or its retry notice) plays.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AnnouncementSpec {
    /// `{ play = "file.wav" }`.
    Play(String),
    /// `{ say = "text with {{variables}}" }`.
    Say(String),
}

/// `kind = "collect"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectSpec {
    /// The question.
    pub prompt: AnnouncementSpec,
    /// Input ends when this many digits are in (1..=32).
    pub max_digits: u32,
    /// Fewer digits than this are invalid input (default 1).
    #[serde(default)]
    pub min_digits: Option<u32>,
    /// A key that ends input early (not part of it), e.g. `"#"`.
    #[serde(default)]
    pub terminator: Option<String>,
    /// Milliseconds to wait for the first digit after the question, and between digits
    /// (1000..=60000).
    pub timeout_ms: u32,
    /// Times the question is asked again after no or invalid input (0..=5).
    pub retries: u32,
    /// When present, the only inputs accepted.
    #[serde(default)]
    pub valid: Option<Vec<String>>,
    /// A variable that receives the input (it is always in `input` too).
    #[serde(default)]
    pub into: Option<String>,
    /// Played before asking again after no input.
    #[serde(default)]
    pub no_input_prompt: Option<AnnouncementSpec>,
    /// Played before asking again after invalid input.
    #[serde(default)]
    pub invalid_prompt: Option<AnnouncementSpec>,
    /// The step after valid input.
    pub next: String,
    /// The step when the retries are used up without input.
    pub on_no_input: String,
    /// The step when the retries are used up with invalid input last.
    pub on_invalid: String,
}

/// `kind = "branch"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// The variable to look at (`input` is the last collected input).
    pub on: String,
    /// Value → step.
    #[serde(default)]
    pub cases: BTreeMap<String, String>,
    /// The step when no case matches.
    pub default: String,
}

/// `kind = "set"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    /// The variable.
    pub var: String,
    /// Its new value, with `{{variable}}` holes.
    pub value: String,
    /// The step after it.
    pub next: String,
}

/// `kind = "transfer"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSpec {
    /// The agent group.
    pub group: AgentGroupId,
    /// Where the script goes on when the daemon finds no agent (else the call is hung up
    /// with the `transfer_failed` disposition).
    #[serde(default)]
    pub on_no_agent: Option<String>,
}

/// `kind = "hangup"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupSpec {
    /// The call's disposition.
    pub disposition: String,
}
