//! The tokio driver of one robot call: a [`RobotSession`] over the customer's media leg.
//!
//! Runs the leg's real-time loop ([`run_audio_leg`]: it paces our frames, plays out the
//! customer's audio through the jitter buffer and reports key presses, RFC 4733 or in-band),
//! hands the session one frame request per packet time, synthesises `say` texts on blocking
//! threads through the [`SpeechCache`], offers transfers to the [`AgentTransfer`] hook
//! (relaying the customer's audio to it while an agent talks), records customer (left) and
//! robot or agent (right) when a recorder is given, and ends at the script's hang-up, the
//! end of the agent's conversation, or `end_now` (the caller hung up or the box stops).
//!
//! Must not: send SIP (whoever called it hangs up) or decide anything the script decides.

use super::session::{RobotSession, SessionOutput};
use super::speech::SpeechCache;
use super::transfer::{AgentAudio, AgentTransfer, TransferRequest, TransferResult};
use crate::dialer::placement::{Recorder, WrapUp};
use crate::media::{run_audio_leg, LegAudio, LegReport, MediaError, RtpLeg};
use callgate_common::ids::{AgentId, CallId, CampaignId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::LeasedContact;
use callgate_media::prompt::Prompt;
use callgate_robot::{PlaybackId, RobotCall, RobotOutcome};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long the last queued frames may take to play out after the script hangs up.
const PLAY_OUT_GRACE: Duration = Duration::from_millis(500);
/// How long the transfer hook may take to let go after the caller hung up.
const HOOK_RELEASE_GRACE: Duration = Duration::from_secs(5);

/// What one robot call runs on.
pub struct RobotRun {
    /// The call.
    pub call: CallId,
    /// The campaign, for an outbound call.
    pub campaign: Option<CampaignId>,
    /// The contact, for an outbound call.
    pub contact: Option<LeasedContact>,
    /// The customer's media leg.
    pub customer: RtpLeg,
    /// Samples per packet time on it.
    pub frame_samples: usize,
    /// Turns true when the caller hung up or the call must end.
    pub end_now: watch::Receiver<bool>,
    /// Records customer (left) and robot or agent (right).
    pub recorder: Option<Recorder>,
    /// The TTS engine with its cache.
    pub speech: Arc<SpeechCache>,
    /// Where `transfer` steps go; `None`: every transfer finds no agent.
    pub transfer: Option<Arc<dyn AgentTransfer>>,
}

/// How a robot call went.
#[derive(Debug)]
pub struct RobotRunReport {
    /// How the call left the script (`None` only if the leg failed first).
    pub outcome: Option<RobotOutcome>,
    /// The agent a transfer reached.
    pub agent: Option<AgentId>,
    /// That agent's disposition code.
    pub agent_disposition: Option<String>,
    /// That agent's wrap-up, when the disposition is still to come.
    pub agent_wrap_up: Option<WrapUp>,
    /// Recording segments sealed for the call.
    pub recording_segments: u32,
    /// The customer leg's report (quality), when its loop ended cleanly.
    pub leg: Option<LegReport>,
    /// Steps the script ran.
    pub steps_run: u32,
    /// Key presses the script received.
    pub digits: u32,
}

/// An agent conversation in progress (the hook's future runs as its own task and reports on
/// the driver's transfer channel).
struct Transferring {
    from_agent: mpsc::Receiver<Vec<i16>>,
    to_agent: mpsc::Sender<LegAudio>,
}

/// Runs `robot` (already started) on the customer's leg until it is over.
pub async fn run_robot_call(robot: RobotCall, run: RobotRun) -> Result<RobotRunReport, MediaError> {
    let RobotRun {
        call,
        campaign,
        contact,
        customer,
        frame_samples: frame,
        mut end_now,
        mut recorder,
        speech,
        transfer,
    } = run;
    if !robot.missing_variables().is_empty() {
        tracing::warn!(%call, missing = ?robot.missing_variables(), "robot script reads fields this contact lacks; they read as empty");
    }
    let (out_tx, out_rx) = mpsc::channel::<Vec<i16>>(2);
    let (in_tx, mut in_rx) = mpsc::channel::<LegAudio>(50);
    let leg = tokio::spawn(run_audio_leg(customer, out_rx, in_tx));
    // A technician may listen in (`crate::call_tap`): the customer and the script, mixed.
    // During a transfer the agent's relay registers the call itself; once it lets go the
    // script's tap point is registered again.
    let (listen_tx, mut listen_rx) = mpsc::unbounded_channel();
    let robot_tap = move || {
        let listen_tx = listen_tx.clone();
        crate::call_tap::live().register(call, "robot script call", move |l| {
            listen_tx.send(l).is_ok()
        })
    };
    let mut _tap = robot_tap();
    let mut listener: Option<crate::call_tap::CallListener> = None;
    let mut session = RobotSession::new(UnixMillis::now(), robot, frame);
    let (speech_tx, mut speech_rx) =
        mpsc::unbounded_channel::<(PlaybackId, Result<Prompt, String>)>();
    let mut heard: VecDeque<Vec<i16>> = VecDeque::new();
    let mut segments = 0u32;
    let mut agent: Option<(AgentId, Option<String>)> = None;
    let mut agent_wrap_up: Option<WrapUp> = None;
    let mut talking: Option<Transferring> = None;
    let (transfer_tx, mut transfer_rx) = mpsc::unbounded_channel::<TransferResult>();
    let mut caller_gone = *end_now.borrow();
    let hook_release = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(hook_release);
    let mut leg_ended = false;
    if caller_gone {
        session.handle_caller_hangup(UnixMillis::now());
    }
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                SessionOutput::Synthesize {
                    playback,
                    text,
                    voice,
                } => {
                    let (speech, tx) = (speech.clone(), speech_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send((playback, speech.speak(text, voice).await));
                    });
                }
                SessionOutput::Transfer { group } => match &transfer {
                    Some(hook) => {
                        let (to_customer, from_agent) = mpsc::channel(4);
                        let (to_agent, from_customer) = mpsc::channel(50);
                        tracing::info!(%call, %group, "robot script transfers the call");
                        let result = hook.transfer(TransferRequest {
                            call,
                            campaign,
                            group,
                            contact: contact.clone(),
                            variables: session.call().variables().clone(),
                            audio: AgentAudio {
                                to_customer,
                                from_customer,
                            },
                            end_now: end_now.clone(),
                        });
                        let tx = transfer_tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(result.await);
                        });
                        talking = Some(Transferring {
                            from_agent,
                            to_agent,
                        });
                    }
                    None => {
                        tracing::info!(%call, %group, "robot transfer: no agent desk connected; the script goes on");
                        session.handle_transfer_failed(UnixMillis::now());
                    }
                },
            }
        }
        if (session.is_over() && talking.is_none()) || leg_ended {
            break;
        }
        tokio::select! {
            permit = out_tx.reserve() => {
                let Ok(permit) = permit else { break };
                let ours = match &mut talking {
                    Some(t) => {
                        t.from_agent.try_recv().unwrap_or_else(|_| vec![0; frame])
                    }
                    _ => session.next_frame(UnixMillis::now()),
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
                            tracing::error!(%call, error = %e, "recording failed; the call goes on unrecorded");
                            recorder = None;
                        }
                    }
                }
                permit.send(ours);
            }
            audio = in_rx.recv() => match audio {
                Some(a) => {
                    if let Some(t) = &talking {
                        let _ = t.to_agent.try_send(a.clone());
                    }
                    match a {
                        LegAudio::Frame(f) => {
                            let mut samples = f.samples;
                            samples.resize(frame, 0);
                            heard.push_back(samples);
                            while heard.len() > 10 {
                                heard.pop_front();
                            }
                        }
                        LegAudio::Dtmf(report) => session.handle_dtmf(UnixMillis::now(), report),
                    }
                }
                None => leg_ended = true,
            },
            Some((playback, result)) = speech_rx.recv() => {
                session.handle_speech(UnixMillis::now(), playback, result);
            }
            Some(l) = listen_rx.recv() => listener = Some(l),
            Some(result) = transfer_rx.recv() => {
                talking = None;
                // The agent's relay has let go of the call: the script's tap point again.
                _tap = robot_tap();
                match result {
                    TransferResult::Talked { agent: a, disposition } => {
                        tracing::info!(%call, agent = %a, "transferred call ended");
                        agent = Some((a, disposition));
                        session.handle_transferred(UnixMillis::now());
                    }
                    TransferResult::WrappingUp(wrap_up) => {
                        tracing::info!(%call, agent = %wrap_up.agent, "transferred call ended; the agent wraps up");
                        agent = Some((wrap_up.agent, None));
                        agent_wrap_up = Some(wrap_up);
                        session.handle_transferred(UnixMillis::now());
                    }
                    TransferResult::NoAgent => {
                        tracing::info!(%call, "robot transfer: no agent took the call; the script goes on");
                        session.handle_transfer_failed(UnixMillis::now());
                    }
                }
                if caller_gone {
                    break;
                }
            }
            () = &mut hook_release, if caller_gone => {
                tracing::warn!(%call, "the transfer hook did not let go of a call whose customer hung up");
                break;
            }
            changed = end_now.changed(), if !caller_gone => {
                if changed.is_err() || *end_now.borrow() {
                    caller_gone = true;
                    session.handle_caller_hangup(UnixMillis::now());
                    if talking.is_none() {
                        break;
                    }
                    hook_release.as_mut().reset(tokio::time::Instant::now() + HOOK_RELEASE_GRACE);
                }
            }
        }
    }
    // Let the last frames (a goodbye's tail) reach the customer.
    if !caller_gone && !leg_ended {
        let deadline = tokio::time::Instant::now() + PLAY_OUT_GRACE;
        while out_tx.capacity() < out_tx.max_capacity() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(out_tx);
    let report = match leg.await {
        Ok(Ok(report)) => Some(report),
        Ok(Err(e)) => return Err(e),
        Err(e) => {
            tracing::error!(%call, error = %e, "robot call's media task failed");
            None
        }
    };
    if let Some(r) = recorder {
        match r.finish().await {
            Ok(all) => segments = all.len() as u32,
            Err(e) => {
                tracing::error!(%call, error = %e, "sealing the last recording segment failed")
            }
        }
    }
    let (agent, agent_disposition) = match agent {
        Some((a, d)) => (Some(a), d),
        None => (None, None),
    };
    Ok(RobotRunReport {
        outcome: session.outcome().cloned(),
        agent,
        agent_disposition,
        agent_wrap_up,
        recording_segments: segments,
        leg: report,
        steps_run: session.call().steps_run(),
        digits: session.digits_taken(),
    })
}
