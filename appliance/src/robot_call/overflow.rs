//! Inbound overflow: what a queued caller gets when no agent took the call in time — a robot
//! script ([`ScriptOverflow`]) or voicemail ([`Voicemail`]), behind [`InboundOverflow`].
//!
//! The agents' lines (`crate::agents::lines`, route `OverflowRoute::Robot`) hand the
//! caller's media leg over as an [`OverflowCall`] and hang the caller up when the returned
//! future resolves; `end_now` turns true when the caller hangs up first.
//!
//! A script's `transfer` step goes to the agent desk through the hook the lines pass in
//! (`OverflowCall::transfer`, the dialer's desk transfer): the group's agent talks to the
//! caller like a campaign transfer's; without the hook it follows `on_no_agent`.
//!
//! Must not: send SIP, or route to agents itself (the desk chooses).

use super::driver::{run_robot_call, RobotRun};
use super::speech::SpeechCache;
use super::RobotCallError;
use crate::dialer::placement::{start_recorder, Recorder};
use crate::media::{run_audio_leg, LegAudio, RtpLeg};
use crate::recording::{SqliteSegmentStore, ValidRecording};
use callgate_common::ids::{AgentGroupId, AgentId, CallId};
use callgate_common::phone::PhoneNumber;
use callgate_common::time::UnixMillis;
use callgate_media::prompt::Prompt;
use callgate_robot::{RobotCall, RobotScript};
use futures_util::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What a voicemail call's tap point is called in the headset's list of calls.
pub const VOICEMAIL_TAP: &str = "voicemail";

/// Disposition of an overflowed call that left a voicemail message.
pub const DISPOSITION_VOICEMAIL: &str = "voicemail";

/// An inbound caller handed over at overflow.
pub struct OverflowCall {
    /// The call.
    pub call: CallId,
    /// The agent group it waited for.
    pub group: AgentGroupId,
    /// The caller's number, when the From header carried one.
    pub caller: Option<PhoneNumber>,
    /// The caller's media leg.
    pub customer: RtpLeg,
    /// Samples per packet time on it.
    pub frame_samples: usize,
    /// Turns true when the caller hung up.
    pub end_now: watch::Receiver<bool>,
    /// Where a script's `transfer` steps go (the agent desk); `None`: they find no agent.
    pub transfer: Option<Arc<dyn super::AgentTransfer>>,
}

impl std::fmt::Debug for OverflowCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowCall")
            .field("call", &self.call)
            .field("group", &self.group)
            .field("caller", &self.caller)
            .field("transfer", &self.transfer.is_some())
            .finish_non_exhaustive()
    }
}

/// How an overflowed call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowReport {
    /// The script's disposition, or [`DISPOSITION_VOICEMAIL`].
    pub disposition: String,
    /// The agent a script's `transfer` reached, with the code that agent saved by the end
    /// of the conversation (a later one is the call record's business: the agent's lines
    /// wait for the wrap-up).
    pub agent: Option<(AgentId, Option<String>)>,
    /// Recording segments sealed for the call (the voicemail message is in them).
    pub recording_segments: u32,
}

/// Takes an overflowing inbound caller.
pub trait InboundOverflow: Send + Sync + 'static {
    /// Runs the caller's call; resolves when the caller may be hung up.
    fn take_call(&self, call: OverflowCall) -> BoxFuture<'static, OverflowReport>;
}

/// An [`InboundOverflow`] as the agents' `OverflowRoute` carries it (compared by identity).
#[derive(Clone)]
pub struct OverflowTarget(pub Arc<dyn InboundOverflow>);

impl std::fmt::Debug for OverflowTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverflowTarget(..)")
    }
}

impl PartialEq for OverflowTarget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OverflowTarget {}

/// Where finished overflow calls are reported (the log has them too).
pub type OverflowReports = mpsc::UnboundedSender<(CallId, OverflowReport)>;

fn report(reports: &Option<OverflowReports>, call: CallId, r: OverflowReport) -> OverflowReport {
    tracing::info!(%call, disposition = %r.disposition, segments = r.recording_segments, "overflowed call done");
    if let Some(tx) = reports {
        let _ = tx.send((call, r.clone()));
    }
    r
}

/// Recording for overflowed calls: the box's settings and segment store.
pub type OverflowRecording = (ValidRecording, SqliteSegmentStore);

fn recorder_for(call: CallId, recording: &Option<OverflowRecording>) -> Option<Recorder> {
    recording
        .as_ref()
        .and_then(|(settings, store)| start_recorder(call, settings, store.clone()))
}

/// Overflowed callers run a robot script (no agent transfer: its `on_no_agent` is taken).
pub struct ScriptOverflow {
    script: Arc<RobotScript>,
    speech: Arc<SpeechCache>,
    recording: Option<OverflowRecording>,
    reports: Option<OverflowReports>,
}

impl ScriptOverflow {
    /// Runs `script` for every overflowed caller; the caller's number is the variable
    /// `caller` and the group's id `group`.
    pub fn new(
        script: Arc<RobotScript>,
        speech: Arc<SpeechCache>,
        recording: Option<OverflowRecording>,
    ) -> ScriptOverflow {
        ScriptOverflow {
            script,
            speech,
            recording,
            reports: None,
        }
    }

    /// Also sends each finished call's report to `reports`.
    pub fn with_reports(mut self, reports: OverflowReports) -> ScriptOverflow {
        self.reports = Some(reports);
        self
    }
}

impl InboundOverflow for ScriptOverflow {
    fn take_call(&self, call: OverflowCall) -> BoxFuture<'static, OverflowReport> {
        let fields = vec![
            (
                "caller".to_owned(),
                call.caller.as_ref().map(|n| n.e164()).unwrap_or_default(),
            ),
            ("group".to_owned(), call.group.to_string()),
        ];
        let robot = RobotCall::start(UnixMillis::now(), self.script.clone(), fields);
        let run = RobotRun {
            call: call.call,
            campaign: None,
            contact: None,
            customer: call.customer,
            frame_samples: call.frame_samples,
            end_now: call.end_now,
            recorder: recorder_for(call.call, &self.recording),
            speech: self.speech.clone(),
            transfer: call.transfer,
        };
        let id = call.call;
        let reports = self.reports.clone();
        Box::pin(async move {
            let r = match run_robot_call(robot, run).await {
                Ok(report) => OverflowReport {
                    disposition: report
                        .outcome
                        .map(|o| o.disposition().to_owned())
                        .unwrap_or_else(|| "caller_hangup".to_owned()),
                    // The agent's wrap-up future is dropped: the agents' lines wait for the
                    // desk's code themselves (the call record is theirs).
                    agent: report.agent.map(|a| (a, report.agent_disposition)),
                    recording_segments: report.recording_segments,
                },
                Err(e) => {
                    tracing::warn!(call = %id, error = %e, "overflow robot call's media failed");
                    OverflowReport {
                        disposition: "media_failed".to_owned(),
                        agent: None,
                        recording_segments: 0,
                    }
                }
            };
            report(&reports, id, r)
        })
    }
}

/// Overflowed callers hear a greeting and a beep, then leave a message: it is recorded
/// (through the box's encrypted recording) until they hang up or `max_message` passes.
pub struct Voicemail {
    greeting: Prompt,
    max_message: Duration,
    recording: OverflowRecording,
    reports: Option<OverflowReports>,
}

impl Voicemail {
    /// Voicemail with `greeting` (an 8 kHz WAV's prompt) and messages up to `max_message`.
    pub fn new(greeting: Prompt, max_message: Duration, recording: OverflowRecording) -> Voicemail {
        Voicemail {
            greeting,
            max_message,
            recording,
            reports: None,
        }
    }

    /// Also sends each finished call's report to `reports`.
    pub fn with_reports(mut self, reports: OverflowReports) -> Voicemail {
        self.reports = Some(reports);
        self
    }

    /// Loads the greeting from an 8 kHz WAV file.
    pub fn from_wav_file(
        path: &std::path::Path,
        max_message: Duration,
        recording: OverflowRecording,
    ) -> Result<Voicemail, RobotCallError> {
        let bad = |reason: String| RobotCallError::Prompt {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let greeting = Prompt::from_wav(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Voicemail::new(greeting, max_message, recording))
    }
}

impl InboundOverflow for Voicemail {
    fn take_call(&self, call: OverflowCall) -> BoxFuture<'static, OverflowReport> {
        let greeting = self.greeting.clone();
        let max_message = self.max_message;
        let recorder = recorder_for(call.call, &Some(self.recording.clone()));
        let (id, reports) = (call.call, self.reports.clone());
        Box::pin(async move {
            let r = take_message(call, greeting, max_message, recorder).await;
            report(&reports, id, r)
        })
    }
}

async fn take_message(
    call: OverflowCall,
    greeting: Prompt,
    max_message: Duration,
    mut recorder: Option<Recorder>,
) -> OverflowReport {
    let OverflowCall {
        call: id,
        customer,
        frame_samples: frame,
        mut end_now,
        ..
    } = call;
    if recorder.is_none() {
        tracing::warn!(call = %id, "voicemail without a working recorder: the message is not kept");
    }
    let (out_tx, out_rx) = mpsc::channel::<Vec<i16>>(2);
    let (in_tx, mut in_rx) = mpsc::channel::<LegAudio>(50);
    let leg = tokio::spawn(run_audio_leg(customer, out_rx, in_tx));
    let beep = Prompt::tones(&[(0.0, 0, 200), (1_000.0, 400, 0)], 8_000);
    let mut playing = Some(greeting.play());
    let mut beeping = beep.play();
    let mut message_frames = 0u64;
    let max_frames = max_message.as_millis() as u64 / (frame as u64 / 8).max(1);
    let mut heard: VecDeque<Vec<i16>> = VecDeque::new();
    let mut segments = 0u32;
    // A technician may listen in (`crate::call_tap`): the caller and the greeting, mixed.
    let (listen_tx, mut listen_rx) = mpsc::unbounded_channel();
    let _tap =
        crate::call_tap::live().register(id, VOICEMAIL_TAP, move |l| listen_tx.send(l).is_ok());
    let mut listener: Option<crate::call_tap::CallListener> = None;
    loop {
        tokio::select! {
            Some(l) = listen_rx.recv() => listener = Some(l),
            permit = out_tx.reserve() => {
                let Ok(permit) = permit else { break };
                let ours = match playing.as_mut().and_then(|p| p.next_frame(frame)) {
                    Some(f) => f,
                    None => {
                        playing = None;
                        match beeping.next_frame(frame) {
                            Some(f) => f,
                            None => {
                                message_frames += 1;
                                vec![0; frame]
                            }
                        }
                    }
                };
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
                            tracing::error!(call = %id, error = %e, "voicemail recording failed");
                            recorder = None;
                        }
                    }
                }
                permit.send(ours);
                if message_frames >= max_frames {
                    break;
                }
            }
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
            changed = end_now.changed() => {
                if changed.is_err() || *end_now.borrow() {
                    break;
                }
            }
        }
    }
    drop(out_tx);
    let _ = leg.await;
    if let Some(r) = recorder {
        match r.finish().await {
            Ok(all) => segments = all.len() as u32,
            Err(e) => {
                tracing::error!(call = %id, error = %e, "sealing the voicemail's last segment failed")
            }
        }
    }
    tracing::info!(call = %id, segments, seconds = message_frames * (frame as u64) / 8_000, "voicemail message taken");
    OverflowReport {
        disposition: DISPOSITION_VOICEMAIL.to_owned(),
        agent: None,
        recording_segments: segments,
    }
}
