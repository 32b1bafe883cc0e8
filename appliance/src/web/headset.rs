//! Listening to a live trunk call on the tech port's headset (diagnostics): the test call
//! placed from the diagnostics page can be patched to the headset — the far end's audio is
//! played on it and the microphone's audio is sent to the far end instead of the test tone
//! — through [`callgate_board::tech_audio::HeadsetPatch`] (feature `alsa`). The technician
//! stops listening with [`HeadsetSwitch`]; the call itself stays up until its hold ends.
//!
//! Must not: touch the dialer's or the agents' calls (their media is not patched here).

use crate::media::LegAudio;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// The running patch's stop switch, shared by the UI's handlers; at most one patch runs.
#[derive(Debug, Clone, Default)]
pub struct HeadsetSwitch {
    running: Arc<Mutex<Option<watch::Sender<bool>>>>,
}

impl HeadsetSwitch {
    /// A patch starts: its stop signal, or `None` when one already runs (one headset).
    pub fn begin(&self) -> Option<watch::Receiver<bool>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        *running = Some(tx);
        Some(rx)
    }

    /// Stops the running patch (the call goes on); `false` when none was running.
    pub fn stop(&self) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(tx) if !tx.is_closed() => tx.send(true).is_ok(),
            _ => false,
        }
    }

    /// Whether a patch runs now.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }
}

/// What a patched call's media did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedCall {
    /// Frames handed to the call's leg in all (the call's hold).
    pub frames_sent: usize,
    /// Of those, frames sent after the patch was stopped (the call stayed up).
    pub frames_after_stop: usize,
    /// The far end's frames played on the headset, or why the patch failed.
    pub played: Result<usize, String>,
}

impl PatchedCall {
    /// One line for the diagnostics page.
    pub fn describe(&self) -> String {
        let heard = match &self.played {
            Ok(n) => format!(
                "{:.1} s of the call played on the headset",
                *n as f64 * 0.02
            ),
            Err(e) => format!("the headset failed: {e}"),
        };
        if self.frames_after_stop > 0 {
            format!(
                "Headset: {heard}; listening stopped, the call went on for another {:.1} s.",
                self.frames_after_stop as f64 * 0.02
            )
        } else {
            format!("Headset: {heard}, until the call's hold ended.")
        }
    }
}

/// Feeds a call's leg for `frames` packet times of `frame` samples through `patch`: the far
/// end's audio (`incoming`) is played on the headset and the microphone's frames go out on
/// `out` (silence when none is ready). When `stop` turns true the patch is stopped and the
/// call goes on, with silence, for the rest of its frames. `out` is paced by the leg that
/// takes from it; dropping it at the end ends the leg.
#[cfg(feature = "alsa")]
pub async fn run_patched(
    patch: callgate_board::tech_audio::HeadsetPatch,
    frame: usize,
    frames: usize,
    out: mpsc::Sender<Vec<i16>>,
    mut incoming: mpsc::Receiver<LegAudio>,
    mut stop: watch::Receiver<bool>,
) -> PatchedCall {
    let mut patch = Some(patch);
    let mut played = Ok(0);
    let mut after_stop = 0;
    for sent in 0..frames {
        while let Ok(audio) = incoming.try_recv() {
            if let (Some(p), LegAudio::Frame(f)) = (patch.as_mut(), audio) {
                p.hear(f.samples);
            }
        }
        if patch.is_some() && *stop.borrow_and_update() {
            if let Some(p) = patch.take() {
                played = finish(p).await;
            }
        }
        let next = patch
            .as_ref()
            .and_then(|p| p.speak())
            .filter(|f| f.len() == frame)
            .unwrap_or_else(|| vec![0; frame]);
        if patch.is_none() {
            after_stop += 1;
        }
        if out.send(next).await.is_err() {
            if let Some(p) = patch.take() {
                played = finish(p).await;
            }
            return PatchedCall {
                frames_sent: sent,
                frames_after_stop: after_stop,
                played,
            };
        }
    }
    if let Some(p) = patch.take() {
        played = finish(p).await;
    }
    PatchedCall {
        frames_sent: frames,
        frames_after_stop: after_stop,
        played,
    }
}

#[cfg(feature = "alsa")]
async fn finish(patch: callgate_board::tech_audio::HeadsetPatch) -> Result<usize, String> {
    match tokio::task::spawn_blocking(move || patch.stop()).await {
        Ok(Ok(report)) => Ok(report.frames_played),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the headset thread failed: {e}")),
    }
}

/// Drains the far end's audio when nothing listens to it.
pub fn discard(mut incoming: mpsc::Receiver<LegAudio>) {
    tokio::spawn(async move { while incoming.recv().await.is_some() {} });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_patch_at_a_time_and_stop_reaches_the_running_one() {
        let switch = HeadsetSwitch::default();
        assert!(!switch.stop(), "nothing to stop");
        let rx = switch.begin().unwrap();
        assert!(switch.is_running());
        assert!(switch.begin().is_none(), "one headset");
        assert!(switch.stop());
        assert!(*rx.borrow());
        drop(rx);
        assert!(!switch.is_running());
        assert!(switch.begin().is_some(), "free again once the call ended");
    }

    /// A call's leg between two real RTP sockets on loopback: the box's test-call leg is
    /// patched to the headset (ALSA `file` plugin keeps what it played, `null` is the
    /// microphone); the far end sends a 440 Hz tone. The headset hears that tone; after the
    /// stop, the call goes on to the end of its hold, the far end still receiving.
    #[cfg(feature = "alsa")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_headset_hears_the_far_end_and_stopping_leaves_the_call_up() {
        use crate::media::{run_audio_leg, RtpLeg};
        use callgate_media::g711::Codec;
        use callgate_media::sdp::{Direction, NegotiatedAudio};
        use callgate_media::tone::ToneGenerator;
        use std::time::Duration;
        let bind = || async {
            loop {
                let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let port = rtp.local_addr().unwrap().port();
                if port % 2 != 0 || port == u16::MAX {
                    continue;
                }
                if let Ok(rtcp) = tokio::net::UdpSocket::bind(("127.0.0.1", port + 1)).await {
                    return (rtp, rtcp);
                }
            }
        };
        let (ours, theirs) = (bind().await, bind().await);
        let audio = |remote| NegotiatedAudio {
            remote: Some(remote),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            srtp: None,
        };
        let ours_addr = ours.0.local_addr().unwrap();
        let theirs_addr = theirs.0.local_addr().unwrap();
        let box_leg = RtpLeg::new(ours, &audio(theirs_addr)).unwrap();
        let far_leg = RtpLeg::new(theirs, &audio(ours_addr)).unwrap();

        // The far end: 3 s of a 440 Hz tone; what it hears is counted by the packet.
        let frames = 150;
        let (far_out, far_out_rx) = mpsc::channel(frames);
        let mut tone = ToneGenerator::new(440.0, 8_000);
        for _ in 0..frames {
            far_out.try_send(tone.next_samples(160)).unwrap();
        }
        drop(far_out);
        let (far_in, far_in_rx) = mpsc::channel(256);
        discard(far_in_rx);
        let far = tokio::spawn(run_audio_leg(far_leg, far_out_rx, far_in));

        let dir = tempfile::tempdir().unwrap();
        let heard = dir.path().join("headset.raw");
        let patch = callgate_board::tech_audio::HeadsetPatch::start(
            &format!("file:'{}',raw", heard.display()),
            "null",
            160,
        )
        .unwrap();
        let switch = HeadsetSwitch::default();
        let stop = switch.begin().unwrap();
        let (out, out_rx) = mpsc::channel(4);
        let (inc, inc_rx) = mpsc::channel(64);
        let leg = tokio::spawn(run_audio_leg(box_leg, out_rx, inc));
        let pump = tokio::spawn(run_patched(patch, 160, frames, out, inc_rx, stop));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(switch.stop());
        let patched = pump.await.unwrap();
        let ours = leg.await.unwrap().unwrap();
        let far = far.await.unwrap().unwrap();

        assert_eq!(patched.frames_sent, frames, "the call ran its whole hold");
        assert!(
            patched.frames_after_stop > 20,
            "the call went on after the stop: {patched:?}"
        );
        assert!(
            ours.packets_sent as usize >= frames - 5,
            "{}",
            ours.packets_sent
        );
        assert!(
            far.receive.received as usize >= frames - 10,
            "the far end kept receiving after the stop: {}",
            far.receive.received
        );
        let played = patched.played.clone().unwrap();
        assert!(played > 20 && played < frames, "{patched:?}");
        // What the headset played is the far end's tone: 440 Hz by its zero crossings, at
        // the tone's level (G.711 and the jitter buffer keep both).
        let bytes = std::fs::read(&heard).unwrap();
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples.len(), played * 160);
        let loud: Vec<i16> = samples
            .chunks(160)
            .filter(|f| f.iter().any(|s| s.unsigned_abs() > 1_000))
            .flatten()
            .copied()
            .collect();
        assert!(
            loud.len() >= 160 * 10,
            "the headset heard the call: {}",
            loud.len()
        );
        let crossings = loud.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
        let hz = crossings / 2.0 / (loud.len() as f64 / 8_000.0);
        assert!((400.0..480.0).contains(&hz), "heard {hz:.0} Hz, not 440");
        let mut reference = ToneGenerator::new(440.0, 8_000);
        let expected = reference.next_samples(8_000);
        let rms = |s: &[i16]| {
            (s.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        let (got, want) = (rms(&loud), rms(&expected));
        assert!(
            (got / want - 1.0).abs() < 0.15,
            "level {got:.0} against the tone's {want:.0}"
        );
    }
}
