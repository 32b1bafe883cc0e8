//! [`RobotCall`]: one answered call running a [`RobotScript`], as a sans-IO state machine.
//!
//! The daemon's robot driver owns the RTP leg, the TTS engine and the timer. It tells the call
//! what happened — [`RobotCall::handle_playback_finished`], [`RobotCall::handle_digit`],
//! [`RobotCall::handle_timeout`], [`RobotCall::handle_transfer_failed`],
//! [`RobotCall::handle_caller_hangup`] — always with the time `now`, and after each call
//! drains [`RobotCall::poll_action`] and re-arms its timer from [`RobotCall::poll_timeout`].
//!
//! Never loops forever: every step entered (re-asking a question included) counts against
//! the script's `max_steps`; at the limit the call is hung up with
//! [`DISPOSITION_STEP_BUDGET`]. Must not: read the clock, play audio or run TTS itself.

use crate::script::{Announcement, Collect, RobotScript, StepIndex, StepKind};
use callgate_common::ids::AgentGroupId;
use callgate_common::time::UnixMillis;
use callgate_media::dtmf::Digit;
use callgate_media::prompt::Prompt;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// Disposition of a call hung up because it ran out of steps.
pub const DISPOSITION_STEP_BUDGET: &str = "robot_step_budget";
/// Disposition of a call hung up because a transfer found no agent and the step had no
/// `on_no_agent`.
pub const DISPOSITION_TRANSFER_FAILED: &str = "transfer_failed";
/// Disposition of a call hung up because a prompt or TTS could not be played.
pub const DISPOSITION_PLAYBACK_FAILED: &str = "robot_playback_failed";

/// Names one playback, so a late "finished" for a playback already stopped is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlaybackId(pub u32);

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RobotAction {
    /// Play a decoded WAV prompt; report [`RobotCall::handle_playback_finished`] at its end.
    Play {
        playback: PlaybackId,
        step: String,
        file: PathBuf,
        prompt: Prompt,
    },
    /// Speak `text` (variables already filled) with `voice` (the engine's default when
    /// `None`); report [`RobotCall::handle_playback_finished`] at its end.
    Say {
        playback: PlaybackId,
        step: String,
        text: String,
        voice: Option<String>,
    },
    /// Stop a playback at once (the caller pressed a key over it); no "finished" is expected.
    StopPlayback { playback: PlaybackId },
    /// Start passing DTMF digits to [`RobotCall::handle_digit`].
    StartCollecting {
        step: String,
        max_digits: usize,
        terminator: Option<Digit>,
    },
    /// Digits are no longer wanted.
    StopCollecting { step: String },
    /// Hand the call to an agent group; report [`RobotCall::handle_transfer_failed`] if no
    /// agent takes it.
    Transfer { step: String, group: AgentGroupId },
    /// End the call with this disposition.
    Hangup { step: String, disposition: String },
}

/// How the call left the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RobotOutcome {
    /// A hangup step (or a system disposition) ended it.
    HungUp { step: String, disposition: String },
    /// It was handed to an agent group.
    Transferred { step: String, group: AgentGroupId },
    /// The caller hung up first.
    CallerHungUp { step: String },
}

impl RobotOutcome {
    /// The disposition for the call record: the hangup's, `transferred`, or `caller_hangup`.
    pub fn disposition(&self) -> &str {
        match self {
            RobotOutcome::HungUp { disposition, .. } => disposition,
            RobotOutcome::Transferred { .. } => "transferred",
            RobotOutcome::CallerHungUp { .. } => "caller_hangup",
        }
    }
}

/// Where a collect step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    /// The question (or a retry notice) is playing; a key press interrupts it.
    Prompting(PlaybackId),
    /// Waiting for a key until the deadline.
    Waiting(UnixMillis),
}

/// Why an input attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    NoInput,
    Invalid,
}

#[derive(Debug, Clone)]
enum State {
    /// A play or say step is playing.
    Playing {
        step: StepIndex,
        playback: PlaybackId,
    },
    /// A collect step.
    Collecting {
        step: StepIndex,
        digits: String,
        misses: u32,
        asking: Asking,
        /// A retry notice is playing; the question follows it.
        notice: bool,
    },
    /// Waiting for the daemon to place the call with an agent.
    Transferring { step: StepIndex },
    /// The call has left the script.
    Ended,
}

/// One call running a script. Create with [`RobotCall::start`], then drain
/// [`RobotCall::poll_action`].
#[derive(Debug)]
pub struct RobotCall {
    script: Arc<RobotScript>,
    vars: BTreeMap<String, String>,
    state: State,
    actions: VecDeque<RobotAction>,
    steps_run: u32,
    next_playback: u32,
    outcome: Option<RobotOutcome>,
    missing: Vec<String>,
}

impl RobotCall {
    /// Starts `script` for a contact with these fields (`{{name}}` variables; the script's
    /// defaults fill those it lacks). The first actions are ready to poll.
    pub fn start(
        now: UnixMillis,
        script: Arc<RobotScript>,
        contact_fields: impl IntoIterator<Item = (String, String)>,
    ) -> RobotCall {
        let start = script.start;
        RobotCall::start_at(now, script, contact_fields, start)
    }

    /// Starts the script's `on_machine` step for a call an answering machine took (once its
    /// greeting is over); `None` when the script leaves no message on machines.
    pub fn start_on_machine(
        now: UnixMillis,
        script: Arc<RobotScript>,
        contact_fields: impl IntoIterator<Item = (String, String)>,
    ) -> Option<RobotCall> {
        let start = script.on_machine?;
        Some(RobotCall::start_at(now, script, contact_fields, start))
    }

    fn start_at(
        now: UnixMillis,
        script: Arc<RobotScript>,
        contact_fields: impl IntoIterator<Item = (String, String)>,
        start: StepIndex,
    ) -> RobotCall {
        let mut vars = script.defaults().clone();
        vars.extend(contact_fields);
        let missing = script
            .contact_variables()
            .into_iter()
            .filter(|v| !vars.contains_key(v))
            .collect();
        let mut call = RobotCall {
            script,
            vars,
            state: State::Ended,
            actions: VecDeque::new(),
            steps_run: 0,
            next_playback: 0,
            outcome: None,
            missing,
        };
        call.run_from(now, start);
        call
    }

    /// Variables the script reads that neither the contact nor the defaults gave: they read
    /// as empty. For the driver to log.
    pub fn missing_variables(&self) -> &[String] {
        &self.missing
    }

    /// The call's variables now (contact fields, defaults, `set` and collected input).
    pub fn variables(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// How the call left the script, once it has.
    pub fn outcome(&self) -> Option<&RobotOutcome> {
        self.outcome.as_ref()
    }

    /// Steps entered so far (re-asked questions included).
    pub fn steps_run(&self) -> u32 {
        self.steps_run
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<RobotAction> {
        self.actions.pop_front()
    }

    /// When [`RobotCall::handle_timeout`] must be called, if a timer is running.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        match &self.state {
            State::Collecting {
                asking: Asking::Waiting(deadline),
                ..
            } => Some(*deadline),
            _ => None,
        }
    }

    /// A `Play` or `Say` playback reached its end. Unknown or stopped playbacks are ignored.
    pub fn handle_playback_finished(&mut self, now: UnixMillis, playback: PlaybackId) {
        match self.state.clone() {
            State::Playing { step, playback: p } if p == playback => {
                let next = match &self.script.steps[step].kind {
                    StepKind::Play { next, .. } | StepKind::Say { next, .. } => *next,
                    _ => return,
                };
                self.run_from(now, next);
            }
            State::Collecting {
                step,
                asking: Asking::Prompting(p),
                notice,
                ..
            } if p == playback => {
                if notice {
                    self.ask(step);
                } else {
                    let timeout = self.collect(step).timeout_ms;
                    self.set_asking(Asking::Waiting(now.plus_millis(timeout)));
                }
            }
            _ => {}
        }
    }

    /// A prompt or TTS could not be played (missing engine, bad audio): the call is hung up
    /// with [`DISPOSITION_PLAYBACK_FAILED`].
    pub fn handle_playback_failed(&mut self, _now: UnixMillis, playback: PlaybackId) {
        let step = match &self.state {
            State::Playing { step, playback: p } if *p == playback => *step,
            State::Collecting {
                step,
                asking: Asking::Prompting(p),
                ..
            } if *p == playback => {
                let id = self.script.steps[*step].id.clone();
                self.actions
                    .push_back(RobotAction::StopCollecting { step: id });
                *step
            }
            _ => return,
        };
        self.hang_up(step, DISPOSITION_PLAYBACK_FAILED.to_owned());
    }

    /// The caller pressed a key. Outside a collect step it is ignored.
    pub fn handle_digit(&mut self, now: UnixMillis, digit: Digit) {
        let (step, asking) = match &self.state {
            State::Collecting { step, asking, .. } => (*step, *asking),
            _ => return,
        };
        if let Asking::Prompting(playback) = asking {
            // Barge-in: the key interrupts the question (or the retry notice).
            self.actions
                .push_back(RobotAction::StopPlayback { playback });
        }
        let script = Arc::clone(&self.script);
        let StepKind::Collect(collect) = &script.steps[step].kind else {
            return;
        };
        if Some(digit) == collect.terminator {
            self.finish_input(now, step);
            return;
        }
        let State::Collecting { digits, .. } = &mut self.state else {
            return;
        };
        digits.push(digit.as_char());
        if digits.chars().count() >= collect.max_digits {
            self.finish_input(now, step);
        } else {
            self.set_asking(Asking::Waiting(now.plus_millis(collect.timeout_ms)));
        }
    }

    /// The timer from [`RobotCall::poll_timeout`] fired; early or stale calls are ignored.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        let State::Collecting {
            step,
            digits,
            asking: Asking::Waiting(deadline),
            ..
        } = &self.state
        else {
            return;
        };
        if now < *deadline {
            return;
        }
        let step = *step;
        if digits.is_empty() {
            self.missed(now, step, Miss::NoInput);
        } else {
            self.finish_input(now, step);
        }
    }

    /// The daemon found no agent for a `Transfer`: the script goes on at the step's
    /// `on_no_agent`, or hangs up with [`DISPOSITION_TRANSFER_FAILED`].
    pub fn handle_transfer_failed(&mut self, now: UnixMillis) {
        let State::Transferring { step } = self.state else {
            return;
        };
        self.outcome = None;
        match &self.script.steps[step].kind {
            StepKind::Transfer {
                on_no_agent: Some(next),
                ..
            } => {
                let next = *next;
                self.run_from(now, next);
            }
            _ => self.hang_up(step, DISPOSITION_TRANSFER_FAILED.to_owned()),
        }
    }

    /// The caller hung up. Nothing more is done; the outcome says where they left.
    pub fn handle_caller_hangup(&mut self, _now: UnixMillis) {
        let step = match &self.state {
            State::Playing { step, .. }
            | State::Collecting { step, .. }
            | State::Transferring { step } => *step,
            State::Ended => return,
        };
        self.actions.clear();
        self.outcome = Some(RobotOutcome::CallerHungUp {
            step: self.script.steps[step].id.clone(),
        });
        self.state = State::Ended;
    }

    fn collect(&self, step: StepIndex) -> &Collect {
        match &self.script.steps[step].kind {
            StepKind::Collect(c) => c,
            _ => unreachable!("collecting state always holds a collect step"),
        }
    }

    fn set_asking(&mut self, to: Asking) {
        if let State::Collecting { asking, notice, .. } = &mut self.state {
            *asking = to;
            if matches!(to, Asking::Waiting(_)) {
                *notice = false;
            }
        }
    }

    fn playback_id(&mut self) -> PlaybackId {
        self.next_playback += 1;
        PlaybackId(self.next_playback)
    }

    /// Queues playing `announcement` for `step` and returns its playback.
    fn announce(&mut self, step: StepIndex, announcement: &Announcement) -> PlaybackId {
        let playback = self.playback_id();
        let id = self.script.steps[step].id.clone();
        self.actions.push_back(match announcement {
            Announcement::Play { file, prompt } => RobotAction::Play {
                playback,
                step: id,
                file: file.clone(),
                prompt: prompt.clone(),
            },
            Announcement::Say(text) => RobotAction::Say {
                playback,
                step: id,
                text: text.render(&self.vars),
                voice: self.script.voice().map(str::to_owned),
            },
        });
        playback
    }

    /// Counts a step against the budget; false (and the call hung up) when it is spent.
    fn spend_step(&mut self, step: StepIndex) -> bool {
        self.steps_run += 1;
        if self.steps_run > self.script.max_steps() {
            self.hang_up(step, DISPOSITION_STEP_BUDGET.to_owned());
            return false;
        }
        true
    }

    /// (Re-)asks a collect step's question.
    fn ask(&mut self, step: StepIndex) {
        let script = Arc::clone(&self.script);
        let collect = match &script.steps[step].kind {
            StepKind::Collect(c) => c,
            _ => return,
        };
        let playback = self.announce(step, &collect.prompt);
        if let State::Collecting {
            digits,
            asking,
            notice,
            ..
        } = &mut self.state
        {
            digits.clear();
            *asking = Asking::Prompting(playback);
            *notice = false;
        }
    }

    /// The caller's input is complete: valid input moves on, anything else is a miss.
    fn finish_input(&mut self, now: UnixMillis, step: StepIndex) {
        let State::Collecting { digits, .. } = &self.state else {
            return;
        };
        let input = digits.clone();
        let collect = self.collect(step);
        let ok = input.chars().count() >= collect.min_digits
            && collect.valid.as_ref().is_none_or(|v| v.contains(&input));
        if !ok {
            let miss = if input.is_empty() {
                Miss::NoInput
            } else {
                Miss::Invalid
            };
            self.missed(now, step, miss);
            return;
        }
        let (into, next) = (collect.into.clone(), collect.next);
        self.vars.insert("input".to_owned(), input.clone());
        if let Some(into) = into {
            self.vars.insert(into, input);
        }
        self.actions.push_back(RobotAction::StopCollecting {
            step: self.script.steps[step].id.clone(),
        });
        self.run_from(now, next);
    }

    fn missed(&mut self, now: UnixMillis, step: StepIndex, miss: Miss) {
        let script = Arc::clone(&self.script);
        let collect = match &script.steps[step].kind {
            StepKind::Collect(c) => c,
            _ => return,
        };
        let State::Collecting { misses, .. } = &mut self.state else {
            return;
        };
        *misses += 1;
        if *misses > collect.retries {
            self.actions.push_back(RobotAction::StopCollecting {
                step: script.steps[step].id.clone(),
            });
            let next = match miss {
                Miss::NoInput => collect.on_no_input,
                Miss::Invalid => collect.on_invalid,
            };
            self.run_from(now, next);
            return;
        }
        if !self.spend_step(step) {
            return;
        }
        let notice = match miss {
            Miss::NoInput => collect.no_input_prompt.as_ref(),
            Miss::Invalid => collect.invalid_prompt.as_ref(),
        };
        match notice {
            Some(n) => {
                let playback = self.announce(step, n);
                if let State::Collecting {
                    digits,
                    asking,
                    notice,
                    ..
                } = &mut self.state
                {
                    digits.clear();
                    *asking = Asking::Prompting(playback);
                    *notice = true;
                }
            }
            None => self.ask(step),
        }
    }

    fn hang_up(&mut self, step: StepIndex, disposition: String) {
        let id = self.script.steps[step].id.clone();
        self.actions.push_back(RobotAction::Hangup {
            step: id.clone(),
            disposition: disposition.clone(),
        });
        self.outcome = Some(RobotOutcome::HungUp {
            step: id,
            disposition,
        });
        self.state = State::Ended;
    }

    /// Runs steps from `from` until one waits for the caller or the daemon.
    fn run_from(&mut self, _now: UnixMillis, from: StepIndex) {
        let script = Arc::clone(&self.script);
        let mut at = from;
        loop {
            if !self.spend_step(at) {
                return;
            }
            let step = &script.steps[at];
            match &step.kind {
                StepKind::Play { file, prompt, .. } => {
                    let playback = self.playback_id();
                    self.actions.push_back(RobotAction::Play {
                        playback,
                        step: step.id.clone(),
                        file: file.clone(),
                        prompt: prompt.clone(),
                    });
                    self.state = State::Playing { step: at, playback };
                    return;
                }
                StepKind::Say { text, voice, .. } => {
                    let playback = self.playback_id();
                    self.actions.push_back(RobotAction::Say {
                        playback,
                        step: step.id.clone(),
                        text: text.render(&self.vars),
                        voice: voice.clone().or_else(|| script.voice().map(str::to_owned)),
                    });
                    self.state = State::Playing { step: at, playback };
                    return;
                }
                StepKind::Collect(c) => {
                    self.actions.push_back(RobotAction::StartCollecting {
                        step: step.id.clone(),
                        max_digits: c.max_digits,
                        terminator: c.terminator,
                    });
                    self.state = State::Collecting {
                        step: at,
                        digits: String::new(),
                        misses: 0,
                        asking: Asking::Prompting(PlaybackId(0)),
                        notice: false,
                    };
                    self.ask(at);
                    return;
                }
                StepKind::Branch { on, cases, default } => {
                    let value = self.vars.get(on).map_or("", String::as_str);
                    at = cases.get(value).copied().unwrap_or(*default);
                }
                StepKind::Set { var, value, next } => {
                    let v = value.render(&self.vars);
                    self.vars.insert(var.clone(), v);
                    at = *next;
                }
                StepKind::Transfer { group, .. } => {
                    self.actions.push_back(RobotAction::Transfer {
                        step: step.id.clone(),
                        group: *group,
                    });
                    self.outcome = Some(RobotOutcome::Transferred {
                        step: step.id.clone(),
                        group: *group,
                    });
                    self.state = State::Transferring { step: at };
                    return;
                }
                StepKind::Hangup { disposition } => {
                    self.hang_up(at, disposition.clone());
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
