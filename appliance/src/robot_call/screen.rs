//! [`MachineScreen`]: answering-machine detection in the call path, in front of any
//! placement (robot scripts, the agent desk, the announcement).
//!
//! For the first seconds of an answered call the screen owns the customer's leg: it sends
//! silence at the leg's pace (the carrier sees a live stream), decodes what the customer
//! sends and feeds it to a `callgate_robot::CadenceDetector`, recording it (customer left,
//! silence right) when a recorder is given and no consent announcement is still to be played
//! (the inner placement plays it; recording starts after it). Then:
//! - a **person** (or an undecided answer) goes to the inner placement with the same leg —
//!   the detection time is the connect delay this adds;
//! - a **machine** gets [`MachineAnswer`]: a message when the campaign's script has
//!   `on_machine` (after the greeting ends: a run of silence), else the call ends at once.
//!   Either way the attempt's outcome is `AnsweredMachine`.
//!
//! Every screened call is also reported once as a [`ScreenedAnswer`] to whoever listens
//! (the dialer, so its pacer counts machine answers), a hang-up during screening as
//! `Unknown` with `caller_hung_up`. Preview calls (an agent dialled and is on the line) are
//! not screened and not reported.
//!
//! Must not: send SIP, or keep the leg once it hands the call on.

use crate::dialer::placement::{AnsweredCall, AnsweredCallPlacement, Placement};
use crate::dialer::DialerError;
use crate::media::MediaError;
use callgate_common::ids::{AttemptId, CallId, CampaignId};
use callgate_common::wire::CallOutcome;
use callgate_robot::amd::{AmdReason, CadenceSettings, FRAME_SAMPLES};
use callgate_robot::{AmdDecision, AmdVerdict, CadenceDetector, MachineDetector};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Disposition of a machine's call ended without a message.
pub const DISPOSITION_MACHINE: &str = "answering_machine";
/// Disposition of a call the customer hung up while it was being screened.
pub const DISPOSITION_HUNG_UP_IN_SCREEN: &str = "caller_hangup";

/// How the screen listens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScreenSettings {
    /// The detector's thresholds.
    pub amd: CadenceSettings,
    /// Silence that ends a machine's greeting before a message is left, ms.
    pub greeting_end_silence_ms: u32,
    /// The longest wait for a machine's greeting to end, ms; the message starts then anyway.
    pub max_greeting_wait_ms: u32,
}

impl Default for ScreenSettings {
    fn default() -> Self {
        ScreenSettings {
            amd: CadenceSettings::default(),
            greeting_end_silence_ms: 1_200,
            max_greeting_wait_ms: 30_000,
        }
    }
}

/// One screened answer, for the dialer's pacing and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScreenedAnswer {
    /// The call.
    pub call: CallId,
    /// Its attempt.
    pub attempt: AttemptId,
    /// Its campaign.
    pub campaign: CampaignId,
    /// What the detector said.
    pub decision: AmdDecision,
    /// Wall time from the hand-over to the decision, ms (the connect delay the screen adds).
    pub waited_ms: u32,
    /// The customer hung up before a decision (the decision is then `Unknown`).
    pub caller_hung_up: bool,
}

impl ScreenedAnswer {
    /// Whether the dialer should count the answer as a machine's.
    pub fn machine(&self) -> bool {
        self.decision.verdict == AmdVerdict::Machine
    }
}

/// What a machine's call gets.
pub trait MachineAnswer: Send + Sync + 'static {
    /// Whether a message is left on this call (then the screen waits for the greeting to
    /// end before [`MachineAnswer::leave_message`]).
    fn leaves_message(&self, call: &AnsweredCall) -> bool;

    /// Handles the machine's call (leaves the message, or just ends); the placement's
    /// outcome should be `AnsweredMachine`.
    fn leave_message(
        &self,
        call: AnsweredCall,
    ) -> BoxFuture<'static, Result<Placement, DialerError>>;
}

/// Machines get no message: the call ends as soon as one is detected.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndMachineCalls;

impl MachineAnswer for EndMachineCalls {
    fn leaves_message(&self, _call: &AnsweredCall) -> bool {
        false
    }

    fn leave_message(
        &self,
        call: AnsweredCall,
    ) -> BoxFuture<'static, Result<Placement, DialerError>> {
        Box::pin(async move {
            let segments = finish_recording(call.recorder, call.call).await;
            Ok(Placement {
                outcome: CallOutcome::AnsweredMachine,
                agent: None,
                disposition: Some(DISPOSITION_MACHINE.to_owned()),
                recording_segments: segments,
                quality: None,
                wrap_up: None,
            })
        })
    }
}

async fn finish_recording(
    recorder: Option<crate::dialer::placement::Recorder>,
    call: CallId,
) -> u32 {
    match recorder {
        Some(r) => match r.finish().await {
            Ok(all) => all.len() as u32,
            Err(e) => {
                tracing::error!(%call, error = %e, "sealing the last recording segment failed");
                0
            }
        },
        None => 0,
    }
}

/// Answering-machine detection in front of `P`.
pub struct MachineScreen<P> {
    inner: Arc<P>,
    machine: Arc<dyn MachineAnswer>,
    settings: ScreenSettings,
    verdicts: Option<mpsc::UnboundedSender<ScreenedAnswer>>,
}

impl<P> std::fmt::Debug for MachineScreen<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineScreen")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<P: AnsweredCallPlacement> MachineScreen<P> {
    /// People go to `inner`, machines to `machine`.
    pub fn new(inner: P, machine: Arc<dyn MachineAnswer>, settings: ScreenSettings) -> Self {
        MachineScreen {
            inner: Arc::new(inner),
            machine,
            settings,
            verdicts: None,
        }
    }

    /// Sends every decision to `verdicts` (the dialer's pacing listens).
    pub fn with_verdicts(mut self, verdicts: mpsc::UnboundedSender<ScreenedAnswer>) -> Self {
        self.verdicts = Some(verdicts);
        self
    }
}

/// What listening to the customer gave.
enum Heard {
    /// The condition was met (or the time cap passed: `timed_out`).
    Done { timed_out: bool },
    /// The customer hung up (or the call must end).
    HungUp,
}

/// Listens on the call's leg, sending silence at its pace and recording, handing each
/// 20 ms frame of the customer's audio to `done` until it says so, for at most `cap`.
async fn listen(
    call: &mut AnsweredCall,
    cap: Duration,
    mut done: impl FnMut(&[i16]) -> bool,
) -> Result<Heard, MediaError> {
    let format = call.customer.format();
    let ptime = Duration::from_millis((call.frame_samples as u64 / 8).max(10));
    let silence = vec![0i16; call.frame_samples];
    let mut tick = tokio::time::interval(ptime);
    let give_up = tokio::time::sleep(cap);
    tokio::pin!(give_up);
    let mut pending: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES * 2);
    if *call.end_now.borrow() {
        return Ok(Heard::HungUp);
    }
    loop {
        tokio::select! {
            _ = tick.tick() => {
                call.customer.send_audio(&silence).await?;
            }
            received = call.customer.recv() => {
                let r = received?;
                if Some(r.packet.payload_type) == format.telephone_event_pt {
                    continue;
                }
                let mut samples = Vec::with_capacity(r.packet.payload.len());
                format.codec.decode(&r.packet.payload, &mut samples);
                // With a consent announcement still to come nothing is recorded yet.
                if let (Some(rec), None) = (call.recorder.as_mut(), &call.consent) {
                    if let Err(e) = rec.push(&samples, &vec![0; samples.len()]).await {
                        tracing::error!(call = %call.call, error = %e, "recording failed; the call goes on unrecorded");
                        call.recorder = None;
                    }
                }
                pending.extend(samples);
                while pending.len() >= FRAME_SAMPLES {
                    let frame: Vec<i16> = pending.drain(..FRAME_SAMPLES).collect();
                    if done(&frame) {
                        return Ok(Heard::Done { timed_out: false });
                    }
                }
            }
            () = &mut give_up => return Ok(Heard::Done { timed_out: true }),
            changed = call.end_now.changed() => {
                if changed.is_err() || *call.end_now.borrow() {
                    return Ok(Heard::HungUp);
                }
            }
        }
    }
}

/// Ends a greeting at `silence_ms` of silence. A frame is silent when it is 10 dB below the
/// loudest frame heard (listening starts in the middle of the greeting) and either within
/// 8 dB of the quietest frame so far (the line's noise) or quiet in absolute terms.
fn greeting_end(silence_ms: u32) -> impl FnMut(&[i16]) -> bool {
    let (mut floor, mut peak) = (f64::MAX, 0.0f64);
    let mut quiet_ms = 0u32;
    move |frame| {
        let energy =
            frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len().max(1) as f64;
        floor = floor.min(energy).max(1.0);
        peak = peak.max(energy);
        let quiet =
            energy < peak * 0.1 && (energy < floor * 10f64.powf(0.8) || energy < 250.0f64.powi(2));
        if quiet {
            quiet_ms += 20;
        } else {
            quiet_ms = 0;
        }
        quiet_ms >= silence_ms
    }
}

impl<P: AnsweredCallPlacement> AnsweredCallPlacement for MachineScreen<P> {
    fn screens(&self, call: &AnsweredCall) -> bool {
        call.agent.is_none()
    }

    fn place(&self, call: AnsweredCall) -> BoxFuture<'static, Result<Placement, DialerError>> {
        if call.agent.is_some() {
            return self.inner.place(call);
        }
        let (inner, machine, settings, verdicts) = (
            self.inner.clone(),
            self.machine.clone(),
            self.settings,
            self.verdicts.clone(),
        );
        Box::pin(async move {
            let mut call = call;
            let started = Instant::now();
            let mut detector = CadenceDetector::new(settings.amd);
            // The detector decides by its own deadline; the cap only covers a leg that sends
            // no audio at all.
            let cap = Duration::from_millis(u64::from(settings.amd.deadline_ms) + 1_000);
            let heard = listen(&mut call, cap, |frame| {
                detector.handle_frame(frame);
                detector.poll_decision().is_some()
            })
            .await?;
            let hung_up = matches!(heard, Heard::HungUp);
            let decision = detector.poll_decision().unwrap_or(AmdDecision {
                verdict: AmdVerdict::Unknown,
                reason: AmdReason::Deadline,
                after_ms: 0,
            });
            let screened = ScreenedAnswer {
                call: call.call,
                attempt: call.attempt,
                campaign: call.campaign,
                decision,
                waited_ms: started.elapsed().as_millis() as u32,
                caller_hung_up: hung_up,
            };
            // Every screened call reports once, so the dialer can hold its answer report
            // for the verdict.
            if let Some(v) = &verdicts {
                let _ = v.send(screened);
            }
            if hung_up {
                tracing::info!(call = %call.call, "the customer hung up during machine detection");
                let segments = finish_recording(call.recorder.take(), call.call).await;
                return Ok(Placement {
                    outcome: CallOutcome::AnsweredHuman,
                    agent: None,
                    disposition: Some(DISPOSITION_HUNG_UP_IN_SCREEN.to_owned()),
                    recording_segments: segments,
                    quality: None,
                    wrap_up: None,
                });
            }
            tracing::info!(call = %call.call, verdict = ?decision.verdict, reason = ?decision.reason, audio_ms = decision.after_ms, waited_ms = screened.waited_ms, "answer screened");
            metrics::counter!("callgate_robot_amd_total", "verdict" => match decision.verdict {
                AmdVerdict::Human => "human",
                AmdVerdict::Machine => "machine",
                AmdVerdict::Unknown => "unknown",
            })
            .increment(1);
            if decision.verdict != AmdVerdict::Machine {
                return inner.place(call).await;
            }
            if !machine.leaves_message(&call) {
                return EndMachineCalls.leave_message(call).await;
            }
            let wait = Duration::from_millis(u64::from(settings.max_greeting_wait_ms));
            let ended = listen(
                &mut call,
                wait,
                greeting_end(settings.greeting_end_silence_ms),
            )
            .await?;
            match ended {
                Heard::HungUp => {
                    let segments = finish_recording(call.recorder.take(), call.call).await;
                    Ok(Placement {
                        outcome: CallOutcome::AnsweredMachine,
                        agent: None,
                        disposition: Some(DISPOSITION_MACHINE.to_owned()),
                        recording_segments: segments,
                        quality: None,
                        wrap_up: None,
                    })
                }
                Heard::Done { timed_out } => {
                    if timed_out {
                        tracing::info!(call = %call.call, "machine greeting did not end in time; leaving the message anyway");
                    }
                    machine.leave_message(call).await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(level: i16, n: usize) -> Vec<Vec<i16>> {
        (0..n)
            .map(|_| {
                (0..FRAME_SAMPLES)
                    .map(|i| if i % 2 == 0 { level } else { -level })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_greeting_ends_after_the_chosen_run_of_silence() {
        let mut end = greeting_end(1_200);
        for f in frames(5_000, 50) {
            assert!(!end(&f), "speech is not the end");
        }
        let quiet = frames(20, 60);
        let ended_at = quiet.iter().position(|f| end(f)).map(|i| (i + 1) * 20);
        assert_eq!(ended_at, Some(1_200));
    }

    #[test]
    fn a_pause_shorter_than_the_silence_run_does_not_end_the_greeting() {
        let mut end = greeting_end(1_200);
        for f in frames(5_000, 10)
            .into_iter()
            .chain(frames(20, 40))
            .chain(frames(5_000, 10))
            .chain(frames(20, 40))
        {
            assert!(!end(&f));
        }
    }

    #[test]
    fn a_noisy_line_quieter_than_the_greeting_still_counts_as_silence() {
        let mut end = greeting_end(400);
        // Noise at 600 (about -35 dBFS) under speech at 8000.
        let mut noise = frames(600, 5);
        noise.extend(frames(8_000, 20));
        noise.extend(frames(600, 25));
        let hits: Vec<bool> = noise.iter().map(|f| end(f)).collect();
        assert!(!hits[..44].iter().any(|&h| h), "{hits:?}");
        assert!(hits[44], "400 ms after the speech: {hits:?}");
    }
}
