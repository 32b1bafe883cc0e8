//! A bridged call: the customer's leg and the agent's (or robot's) leg relayed to each other
//! packet by packet, with the agent side replaceable mid-call (robot → agent, transfer, hold
//! music) while the customer keeps hearing one continuous stream, and both directions played
//! out through jitter buffers into the call's encrypted recording.
//!
//! When the campaign asks for it, a consent announcement is played to the customer first;
//! recording starts only once it has finished, and the agent side is not heard until then.
//!
//! Relaying never waits for the recording: frames go to a separate recording task over a
//! bounded channel, and a frame that does not fit is counted and logged, never hidden.

use super::leg::LegReport;
use super::{MediaError, RtpLeg};
use crate::recording::CallRecorder;
use callgate_media::bridge::RelayStats;
use callgate_media::jitter::{JitterBuffer, JitterConfig};
use callgate_media::prompt::Prompt;
use callgate_media::recording::{RecordingError, SegmentRecord, SegmentStore};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the call's controller (the SIP/dialer side) can ask of a running bridge.
#[derive(Debug)]
pub enum BridgeCommand {
    /// Connect a new agent-side leg (e.g. the agent after the robot); the old one is closed.
    ReplaceAgentLeg(Box<RtpLeg>),
    /// Play a prompt to the agent side only (the connect beep), mixed over the customer's
    /// audio as it is relayed; while the customer is quiet, the prompt goes alone. The
    /// customer does not hear it, and nothing is held back for it.
    PlayToAgent(Prompt),
    /// End the bridge; the recording is finished and its last segment sealed.
    Hangup,
    /// Copy the call as heard (both sides' played-out frames mixed, one per packet time) to
    /// a listener (the technician's headset, `crate::call_tap`); nothing goes back into the
    /// call. A listener that goes away is forgotten; a new one replaces the old.
    Listen(crate::call_tap::CallListener),
}

/// What a bridge measured by the time it ended.
#[derive(Debug)]
pub struct BridgeReport {
    pub customer: LegReport,
    /// Every agent-side leg in the order they were connected.
    pub agent_legs: Vec<LegReport>,
    /// Packets relayed towards the customer and towards the agent side.
    pub to_customer: RelayStats,
    pub to_agent: RelayStats,
    /// The recording's segments, or why it failed; `None` when the call was not recorded.
    pub recording: Option<Result<Vec<SegmentRecord>, RecordingError>>,
    /// Stereo frames the recording task could not take in time (counted, never hidden).
    pub recording_frames_dropped: u64,
    /// Frames of consent announcement played to the customer before recording started.
    pub consent_frames: u64,
    /// Agent-side packets not passed to the customer while the announcement played.
    pub agent_packets_held_for_consent: u64,
}

/// Frames buffered towards the recording task (2 s).
const RECORDING_QUEUE: usize = 100;

/// How long without a customer packet before a prompt to the agent goes alone (two packets).
const QUIET: Duration = Duration::from_millis(40);

/// Runs a bridge until [`BridgeCommand::Hangup`] or the command channel closes.
pub async fn run_bridge<S>(
    mut customer: RtpLeg,
    mut agent: RtpLeg,
    recorder: Option<CallRecorder<S>>,
    consent: Option<Prompt>,
    mut commands: mpsc::Receiver<BridgeCommand>,
) -> Result<BridgeReport, MediaError>
where
    S: SegmentStore + Send + Sync + 'static,
{
    let frame = 160u32;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let jitter_config = JitterConfig {
        frame_samples: frame,
        ..JitterConfig::default()
    };
    let mut customer_jb = JitterBuffer::new(jitter_config);
    let mut agent_jb = JitterBuffer::new(jitter_config);
    let mut to_agent = agent.relay_onto();
    let mut to_customer = customer.relay_onto();
    let mut agent_reports = Vec::new();
    let (rec_tx, recording_task) = match recorder {
        Some(mut rec) => {
            let (tx, mut rx) = mpsc::channel::<(Vec<i16>, Vec<i16>)>(RECORDING_QUEUE);
            let task = tokio::spawn(async move {
                while let Some((c, a)) = rx.recv().await {
                    rec.push(&c, &a).await?;
                }
                rec.finish().await
            });
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let mut recording_frames_dropped = 0u64;
    let mut consent = consent.map(|p| p.play());
    let (mut consent_frames, mut agent_packets_held_for_consent) = (0u64, 0u64);
    let customer_rtcp = customer.rtcp_socket();
    let mut agent_rtcp = agent.rtcp_socket();
    let (mut c_buf, mut a_buf) = (vec![0u8; 1_500], vec![0u8; 1_500]);
    let mut customer_relayed_at: Option<Instant> = None;
    let mut listener = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let c = customer_jb.pop(now);
                let a = agent_jb.pop(now);
                if listener.is_some() {
                    let heard = crate::call_tap::mixed(
                        c.as_ref().map(|f| &f.samples[..]),
                        a.as_ref().map(|f| &f.samples[..]),
                        frame as usize,
                    );
                    crate::call_tap::offer(&mut listener, heard);
                }
                if let Some(playback) = &mut consent {
                    match playback.next_frame(frame as usize) {
                        Some(f) => {
                            customer.send_audio(&f).await?;
                            consent_frames += 1;
                        }
                        None => {
                            // The announcement is over: the agent side continues the
                            // customer's stream from where the announcement left it.
                            consent = None;
                            to_customer = customer.relay_onto();
                        }
                    }
                }
                if let (Some(tx), None) = (&rec_tx, &consent) {
                    if c.is_some() || a.is_some() {
                        let silence = || vec![0i16; frame as usize];
                        let pair = (
                            c.map_or_else(silence, |f| f.samples),
                            a.map_or_else(silence, |f| f.samples),
                        );
                        if tx.try_send(pair).is_err() {
                            recording_frames_dropped += 1;
                            tracing::warn!(recording_frames_dropped, "recording fell behind; frame not recorded");
                        }
                    }
                }
                // A prompt to the agent goes alone while the customer is quiet.
                if to_agent.playing_over()
                    && customer_relayed_at.is_none_or(|t| now.saturating_duration_since(t) >= QUIET)
                {
                    if let Some(out) = to_agent.overlay_alone(now, frame as usize) {
                        agent.send_packet(&out).await?;
                    }
                }
                customer.send_rtcp_if_due(now).await?;
                agent.send_rtcp_if_due(now).await?;
            }
            received = customer.recv() => {
                let r = received?;
                if let Some(out) = to_agent.relay(r.at, &r.packet, customer.format()) {
                    agent.send_packet(&out).await?;
                    customer_relayed_at = Some(r.at);
                }
                if r.packet.payload_type == customer.format().payload_type {
                    customer_jb.push(r.at, &r.packet, customer.format().codec);
                }
            }
            received = agent.recv() => {
                let r = received?;
                if consent.is_some() {
                    agent_packets_held_for_consent += 1;
                } else if let Some(out) = to_customer.relay(r.at, &r.packet, agent.format()) {
                    customer.send_packet(&out).await?;
                }
                if r.packet.payload_type == agent.format().payload_type {
                    agent_jb.push(r.at, &r.packet, agent.format().codec);
                }
            }
            received = customer_rtcp.recv_from(&mut c_buf) => {
                if let Ok((len, from)) = received {
                    customer.handle_rtcp(Instant::now(), from, &c_buf[..len]);
                }
            }
            received = agent_rtcp.recv_from(&mut a_buf) => {
                if let Ok((len, from)) = received {
                    agent.handle_rtcp(Instant::now(), from, &a_buf[..len]);
                }
            }
            command = commands.recv() => match command {
                Some(BridgeCommand::ReplaceAgentLeg(next)) => {
                    // The agent jitter buffer stays: it carries the recording's right channel
                    // across the change of source without a gap.
                    to_agent = next.relay_onto();
                    let old = std::mem::replace(&mut agent, *next);
                    agent_rtcp = agent.rtcp_socket();
                    agent_reports.push(old.finish(agent_jb.stats(), 0).await);
                }
                Some(BridgeCommand::PlayToAgent(prompt)) => to_agent.play_over(&prompt),
                Some(BridgeCommand::Listen(l)) => listener = Some(l),
                Some(BridgeCommand::Hangup) | None => break,
            },
        }
    }
    drop(rec_tx);
    let recording = match recording_task {
        Some(task) => Some(task.await.unwrap_or_else(|e| {
            Err(RecordingError::Io {
                path: std::path::PathBuf::from("<recording task>"),
                source: std::io::Error::other(e.to_string()),
            })
        })),
        None => None,
    };
    agent_reports.push(agent.finish(agent_jb.stats(), 0).await);
    Ok(BridgeReport {
        customer: customer.finish(customer_jb.stats(), 0).await,
        agent_legs: agent_reports,
        to_customer: to_customer.stats(),
        to_agent: to_agent.stats(),
        recording,
        recording_frames_dropped,
        consent_frames,
        agent_packets_held_for_consent,
    })
}
