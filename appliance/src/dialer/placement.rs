//! Where an answered call goes: the [`AnsweredCallPlacement`] step the driver hands every
//! answered attempt to, with the customer's media leg ready to run.
//!
//! When the campaign asks for it, every placement plays the recording-consent announcement
//! first ([`play_consent`], or the bridge's own for agent calls) and records only what comes
//! after it.
//!
//! Implementations: [`Announcement`] (play a WAV prompt, then the driver hangs up) — what
//! agentless campaigns use until robot scripts land, and the safe-harbour message. The agent
//! desk (bridge to a nailed-up agent leg) and robot scripts implement the same trait.
//!
//! A placement owns the media leg for the call's life and must return when `end_now` turns
//! true (the customer hung up, or the dialer is stopping). It never sends SIP: the driver commits the attempt
//! result and call record, then hangs up.

use crate::media::{run_audio_leg, LegAudio, LegReport, RtpLeg};
use crate::recording::CallRecorder;
use callgate_common::ids::{AgentId, AttemptId, CallId, CampaignId};
use callgate_common::wire::{CallOutcome, CallQuality, DialMode, LeasedContact};
use callgate_media::prompt::Prompt;
use callgate_media::recording::SegmentStore;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

use super::DialerError;

/// The recorder type the driver hands to placements.
pub type Recorder = CallRecorder<crate::recording::SqliteSegmentStore>;

/// An answered outbound call, handed over with its media.
#[derive(Debug)]
pub struct AnsweredCall {
    /// The call.
    pub call: CallId,
    /// The attempt it came from.
    pub attempt: AttemptId,
    /// The campaign.
    pub campaign: CampaignId,
    /// How the campaign dials (agentless calls never wait for an agent).
    pub mode: DialMode,
    /// The contact (fields for scripts and screen-pop).
    pub contact: LeasedContact,
    /// The agent who previewed and dialled it, if any.
    pub agent: Option<AgentId>,
    /// The customer's media leg, negotiated and latched to the carrier's address.
    pub customer: RtpLeg,
    /// Samples per packet time on that leg (8 kHz × ptime).
    pub frame_samples: usize,
    /// Turns true when the call must end now (the customer hung up, or the dialer is
    /// stopping): return promptly.
    pub end_now: watch::Receiver<bool>,
    /// The call's recorder when `[recording]` is configured (customer left, our side right).
    pub recorder: Option<Recorder>,
    /// The robot script the routing policy chose for this call (`RouteAction::RobotScript`),
    /// by name; `None`: the campaign's own script.
    pub robot_script: Option<String>,
    /// Where the call's legs store their quality when their media ends.
    pub quality_log: Option<crate::media::LegQualityLog>,
    /// The recording-consent announcement, when the campaign asks for it: the customer
    /// hears it first, and nothing of the call is recorded before it has ended (the
    /// announcement itself is not recorded).
    pub consent: Option<Arc<Prompt>>,
}

/// What a placement did with the call.
#[derive(Debug)]
pub struct Placement {
    /// How the call ended, as the attempt result reports it.
    pub outcome: CallOutcome,
    /// The agent who talked, if any.
    pub agent: Option<AgentId>,
    /// The agent's disposition code, if any.
    pub disposition: Option<String>,
    /// Recording segments sealed for the call.
    pub recording_segments: u32,
    /// The customer leg's quality.
    pub quality: Option<CallQuality>,
    /// The agent's wrap-up, when the conversation is over but the agent has not saved a
    /// disposition yet: the driver commits the attempt result and releases the call at once,
    /// and the call record waits for this (its `disposition` stands when none comes).
    pub wrap_up: Option<WrapUp>,
}

/// An agent's wrap-up after a call: resolves with the disposition the agent saves, or `None`
/// when the wrap-up ends without one (its time is up, or the agent went ready, paused or
/// logged out). Bounded: it never outlives [`WRAP_UP_WAIT_MAX`].
pub struct WrapUp {
    /// The agent in wrap-up.
    pub agent: AgentId,
    /// When the desk ends the agent's wrap-up (kept with the record: a restart waits until
    /// then for the agent's code).
    pub until: Option<callgate_common::time::UnixMillis>,
    /// The disposition to come.
    pub disposition: BoxFuture<'static, Option<String>>,
}

impl std::fmt::Debug for WrapUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrapUp")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

/// The longest a call record waits for an agent's disposition after the call, whatever the
/// campaign's wrap-up time says.
pub const WRAP_UP_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes an answered call from the moment it is answered until the box may hang up.
pub trait AnsweredCallPlacement: Send + Sync + 'static {
    /// Runs the call; returns when the box should hang up (or the customer has).
    fn place(&self, call: AnsweredCall) -> BoxFuture<'static, Result<Placement, DialerError>>;

    /// Whether this placement screens `call` for an answering machine and reports the
    /// verdict itself (on the channel given with `ControlReceiver::with_verdicts`): the
    /// driver then holds the attempt's `Answered` report for that verdict.
    fn screens(&self, _call: &AnsweredCall) -> bool {
        false
    }
}

/// Plays a prompt to the customer, then hands the call back to be hung up.
#[derive(Debug, Clone)]
pub struct Announcement {
    prompt: Arc<Prompt>,
    outcome: CallOutcome,
}

impl Announcement {
    /// A prompt whose calls count as `outcome` (answered by a person for agentless
    /// campaigns; abandoned for the safe-harbour message).
    pub fn new(prompt: Prompt, outcome: CallOutcome) -> Announcement {
        Announcement {
            prompt: Arc::new(prompt),
            outcome,
        }
    }

    /// Loads an 8 kHz WAV prompt (µ-law, A-law or 16-bit PCM).
    pub fn from_wav_file(
        path: &std::path::Path,
        outcome: CallOutcome,
    ) -> Result<Announcement, DialerError> {
        let bad = |reason: String| DialerError::Prompt {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let prompt = Prompt::from_wav(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Announcement::new(prompt, outcome))
    }

    /// How long the prompt plays, in 8 kHz samples.
    pub fn samples(&self) -> usize {
        self.prompt.len()
    }
}

impl AnsweredCallPlacement for Announcement {
    fn place(&self, call: AnsweredCall) -> BoxFuture<'static, Result<Placement, DialerError>> {
        let prompt = self.prompt.clone();
        let outcome = self.outcome;
        Box::pin(play(prompt, outcome, call))
    }
}

/// Plays the call's recording-consent announcement (when it has one) to the customer,
/// paced at the leg's packet time, before anything else happens on the call. What the
/// customer sends meanwhile is received and not recorded. Returns `false` when the call must
/// end before the announcement finished (the customer hung up, or the dialer is stopping).
pub async fn play_consent(call: &mut AnsweredCall) -> Result<bool, DialerError> {
    let Some(prompt) = call.consent.take() else {
        return Ok(true);
    };
    if *call.end_now.borrow() {
        return Ok(false);
    }
    let frame = call.frame_samples.max(1);
    let mut playback = prompt.play();
    let mut tick =
        tokio::time::interval(std::time::Duration::from_micros(frame as u64 * 1_000 / 8));
    loop {
        tokio::select! {
            _ = tick.tick() => match playback.next_frame(frame) {
                Some(f) => {
                    call.customer.send_audio(&f).await?;
                }
                None => return Ok(true),
            },
            received = call.customer.recv() => {
                received?;
            }
            changed = call.end_now.changed() => {
                if changed.is_err() || *call.end_now.borrow() {
                    return Ok(false);
                }
            }
        }
    }
}

/// The placement of a call that ended during its consent announcement: nothing recorded.
pub fn ended_during_consent(call: &AnsweredCall, outcome: CallOutcome) -> Placement {
    tracing::info!(call = %call.call, "the call ended during the recording-consent announcement");
    Placement {
        outcome,
        agent: call.agent,
        disposition: None,
        recording_segments: 0,
        quality: None,
        wrap_up: None,
    }
}

async fn play(
    prompt: Arc<Prompt>,
    outcome: CallOutcome,
    mut call: AnsweredCall,
) -> Result<Placement, DialerError> {
    if !play_consent(&mut call).await? {
        return Ok(ended_during_consent(&call, outcome));
    }
    // A technician may listen in (`crate::call_tap`): the customer and the prompt, mixed.
    let (listen_tx, mut listen_rx) = mpsc::unbounded_channel();
    let _tap = crate::call_tap::live().register(
        call.call,
        "outbound call hearing the announcement",
        move |l| listen_tx.send(l).is_ok(),
    );
    let mut listener = None;
    let AnsweredCall {
        customer,
        mut end_now,
        mut recorder,
        agent,
        frame_samples: frame,
        quality_log,
        ..
    } = call;
    // A small queue paces the prompt: the leg takes one frame per packet time.
    let (out_tx, out_rx) = mpsc::channel::<Vec<i16>>(2);
    let (in_tx, mut in_rx) = mpsc::channel::<LegAudio>(50);
    let leg = tokio::spawn(run_audio_leg(customer, out_rx, in_tx));
    let mut playback = prompt.play();
    // The customer's latest played-out frames, recorded beside the prompt frame by frame.
    let mut heard: std::collections::VecDeque<Vec<i16>> = Default::default();
    let mut segments = 0u32;
    let mut feed_done = false;
    loop {
        tokio::select! {
            permit = out_tx.reserve(), if !feed_done => match (permit, playback.next_frame(frame)) {
                (Ok(permit), Some(ours)) => {
                    let theirs = heard.pop_front();
                    if listener.is_some() {
                        let mix = crate::call_tap::mixed(theirs.as_deref(), Some(&ours), frame);
                        crate::call_tap::offer(&mut listener, mix);
                    }
                    if let Some(r) = recorder.as_mut() {
                        let theirs = theirs.unwrap_or_else(|| vec![0; frame]);
                        match r.push(&theirs, &ours).await {
                            Ok(sealed) => segments += sealed.len() as u32,
                            Err(e) => {
                                tracing::error!(error = %e, "recording failed; the call goes on unrecorded");
                                recorder = None;
                            }
                        }
                    }
                    permit.send(ours);
                }
                _ => feed_done = true,
            },
            audio = in_rx.recv() => match audio {
                Some(LegAudio::Frame(f)) => {
                    let mut samples = f.samples;
                    samples.resize(frame, 0);
                    heard.push_back(samples);
                    while heard.len() > 10 {
                        heard.pop_front();
                    }
                }
                Some(LegAudio::Dtmf(_)) => {}
                None => break,
            },
            Some(l) = listen_rx.recv() => listener = Some(l),
            () = tokio::time::sleep(std::time::Duration::from_millis(20)), if feed_done => {}
            changed = end_now.changed() => {
                if changed.is_err() || *end_now.borrow() {
                    break;
                }
            }
        }
        // The prompt has been handed over and played out (the queue is drained).
        if feed_done && out_tx.capacity() == out_tx.max_capacity() {
            break;
        }
    }
    drop(out_tx);
    let report = match leg.await {
        Ok(Ok(report)) => Some(report),
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "media leg task failed");
            None
        }
    };
    if let (Some(log), Some(r)) = (&quality_log, &report) {
        log.record(0, crate::media::LegRole::Customer, r).await;
    }
    if let Some(r) = recorder {
        match r.finish().await {
            Ok(all) => segments = all.len() as u32,
            Err(e) => tracing::error!(error = %e, "sealing the last recording segment failed"),
        }
    }
    Ok(Placement {
        outcome,
        agent,
        disposition: None,
        recording_segments: segments,
        quality: report.as_ref().map(quality_of),
        wrap_up: None,
    })
}

/// The customer leg's quality as the call record carries it.
pub fn quality_of(report: &LegReport) -> CallQuality {
    let r = &report.receive;
    let loss_ppm = (r.lost.max(0) as u64 * 1_000_000)
        .checked_div(r.expected)
        .unwrap_or(0) as u32;
    CallQuality {
        mos_x100: (report.quality.mos * 100.0).round() as u16,
        loss_ppm,
        jitter_us: (r.jitter_ms * 1000.0).round() as u32,
        rtt_us: report
            .remote_reception
            .and_then(|rr| rr.round_trip)
            .map(|d| d.as_micros() as u32),
    }
}

/// Recorders need a segment store; the driver passes the box's.
pub fn start_recorder<S: SegmentStore + Sync>(
    call: CallId,
    settings: &crate::recording::ValidRecording,
    store: S,
) -> Option<CallRecorder<S>> {
    match CallRecorder::start(call, settings, store) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, %call, "cannot start recording; the call goes unrecorded");
            None
        }
    }
}
