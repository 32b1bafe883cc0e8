//! [`RobotSession`]: the robot driver's pure logic, sans-IO and paced by frames.
//!
//! Wraps one [`RobotCall`] and turns its actions into audio: the driver asks for the next
//! outgoing frame once per packet time ([`RobotSession::next_frame`], with the time), and
//! tells it about key presses, finished speech synthesis, the transfer's result and the
//! caller's hang-up. The session plays prompts frame by frame, plays silence while speech
//! is being synthesised or nothing is due, stops a prompt at once on barge-in, fires the
//! script's timers on the first frame at or after their deadline (so timers have the packet
//! time's granularity), and queues what the driver must do outside the audio path
//! ([`SessionOutput`]: synthesise a text, transfer the call).
//!
//! Must not: read the clock, run TTS, or touch sockets — the driver in
//! [`super::driver`] does.

use callgate_common::ids::AgentGroupId;
use callgate_common::time::UnixMillis;
use callgate_media::dtmf::DtmfReport;
use callgate_media::prompt::{Playback, Prompt};
use callgate_robot::{PlaybackId, RobotAction, RobotCall, RobotOutcome};
use std::collections::VecDeque;

/// What the driver must do outside the audio path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Synthesise `text` with `voice`; answer with [`RobotSession::handle_speech`].
    Synthesize {
        playback: PlaybackId,
        text: String,
        voice: Option<String>,
    },
    /// Offer the call to an agent group; answer with [`RobotSession::handle_transferred`]
    /// or [`RobotSession::handle_transfer_failed`]. Silence plays meanwhile.
    Transfer { group: AgentGroupId },
}

/// What plays now.
#[derive(Debug)]
enum Playout {
    /// Nothing: silence.
    Idle,
    /// A `say` waiting for its synthesis: silence until it arrives.
    Synthesizing(PlaybackId),
    /// A prompt (or synthesised speech) playing.
    Playing(PlaybackId, Playback),
}

/// One robot call's audio-side state.
#[derive(Debug)]
pub struct RobotSession {
    call: RobotCall,
    frame: usize,
    playout: Playout,
    collecting: bool,
    transferring: Option<AgentGroupId>,
    outputs: VecDeque<SessionOutput>,
    /// The script said hang up (or the caller did, or the transfer was taken).
    over: bool,
    /// Digits the caller pressed that reached the script.
    digits_taken: u32,
}

impl RobotSession {
    /// Wraps a started call; `frame` is the leg's samples per packet time.
    pub fn new(now: UnixMillis, call: RobotCall, frame: usize) -> RobotSession {
        let mut s = RobotSession {
            call,
            frame: frame.max(1),
            playout: Playout::Idle,
            collecting: false,
            transferring: None,
            outputs: VecDeque::new(),
            over: false,
            digits_taken: 0,
        };
        s.drain(now);
        s
    }

    /// The next outgoing frame (`frame` samples): the playing prompt's, else silence. Call
    /// once per packet time; fires the script's timer when due and moves past prompts that
    /// end.
    pub fn next_frame(&mut self, now: UnixMillis) -> Vec<i16> {
        if !self.over {
            if let Some(due) = self.call.poll_timeout() {
                if due <= now {
                    self.call.handle_timeout(now);
                    self.drain(now);
                }
            }
        }
        // A prompt that ends hands over to what follows within the same frame time, so
        // back-to-back prompts play without a gap; bounded by the script's step budget.
        for _ in 0..4 {
            let Playout::Playing(id, playback) = &mut self.playout else {
                break;
            };
            if let Some(frame) = playback.next_frame(self.frame) {
                return frame;
            }
            let id = *id;
            self.playout = Playout::Idle;
            self.call.handle_playback_finished(now, id);
            self.drain(now);
        }
        vec![0; self.frame]
    }

    /// A key report from the leg (RFC 4733 or in-band). Presses reach the script only while
    /// it collects; releases are ignored.
    pub fn handle_dtmf(&mut self, now: UnixMillis, report: DtmfReport) {
        if let DtmfReport::Pressed(digit) = report {
            if self.collecting && !self.over {
                self.digits_taken += 1;
                self.call.handle_digit(now, digit);
                self.drain(now);
            }
        }
    }

    /// The synthesis of `playback` finished: its audio plays from the next frame, or, on
    /// failure, the script is told the playback failed. A result for a playback no longer
    /// wanted (stopped by barge-in) is dropped.
    pub fn handle_speech(
        &mut self,
        now: UnixMillis,
        playback: PlaybackId,
        speech: Result<Prompt, String>,
    ) {
        if !matches!(self.playout, Playout::Synthesizing(id) if id == playback) {
            return;
        }
        match speech {
            Ok(prompt) => self.playout = Playout::Playing(playback, prompt.play()),
            Err(reason) => {
                tracing::warn!(%reason, "robot speech could not be synthesised");
                self.playout = Playout::Idle;
                self.call.handle_playback_failed(now, playback);
                self.drain(now);
            }
        }
    }

    /// An agent took the transferred call: the script is over.
    pub fn handle_transferred(&mut self, _now: UnixMillis) {
        if self.transferring.take().is_some() {
            self.over = true;
        }
    }

    /// No agent took the transfer: the script goes on at `on_no_agent` (or hangs up).
    pub fn handle_transfer_failed(&mut self, now: UnixMillis) {
        if self.transferring.take().is_some() {
            self.call.handle_transfer_failed(now);
            self.drain(now);
        }
    }

    /// The caller hung up.
    pub fn handle_caller_hangup(&mut self, now: UnixMillis) {
        if !self.over {
            self.call.handle_caller_hangup(now);
            self.transferring = None;
            self.playout = Playout::Idle;
            self.over = true;
            self.outputs.clear();
        }
    }

    /// The next thing for the driver to do outside the audio path.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    /// Whether the script is over (hung up, transferred, or the caller left); the driver
    /// lets the last queued frames play out and returns.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The group a transfer is being offered to.
    pub fn transferring(&self) -> Option<AgentGroupId> {
        self.transferring
    }

    /// How the call left the script (the disposition is `outcome().disposition()`).
    pub fn outcome(&self) -> Option<&RobotOutcome> {
        self.call.outcome()
    }

    /// Key presses the script received.
    pub fn digits_taken(&self) -> u32 {
        self.digits_taken
    }

    /// The interpreter (variables, steps run).
    pub fn call(&self) -> &RobotCall {
        &self.call
    }

    fn drain(&mut self, _now: UnixMillis) {
        while let Some(action) = self.call.poll_action() {
            match action {
                RobotAction::Play {
                    playback, prompt, ..
                } => self.playout = Playout::Playing(playback, prompt.play()),
                RobotAction::Say {
                    playback,
                    text,
                    voice,
                    ..
                } => {
                    self.playout = Playout::Synthesizing(playback);
                    self.outputs.push_back(SessionOutput::Synthesize {
                        playback,
                        text,
                        voice,
                    });
                }
                RobotAction::StopPlayback { playback } => {
                    let current = match &self.playout {
                        Playout::Playing(id, _) | Playout::Synthesizing(id) => Some(*id),
                        Playout::Idle => None,
                    };
                    if current == Some(playback) {
                        self.playout = Playout::Idle;
                    }
                }
                RobotAction::StartCollecting { .. } => self.collecting = true,
                RobotAction::StopCollecting { .. } => self.collecting = false,
                RobotAction::Transfer { group, .. } => {
                    self.collecting = false;
                    self.playout = Playout::Idle;
                    self.transferring = Some(group);
                    self.outputs.push_back(SessionOutput::Transfer { group });
                }
                RobotAction::Hangup { .. } => {
                    self.collecting = false;
                    self.playout = Playout::Idle;
                    self.over = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
