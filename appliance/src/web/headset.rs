//! Listening to a live trunk call on the tech port's headset (diagnostics), through
//! [`callgate_board::tech_audio::HeadsetPatch`] (feature `alsa`):
//! - the test call placed from the diagnostics page can be patched to the headset — the far
//!   end's audio is played on it and the microphone's audio is sent to the far end instead of
//!   the test tone ([`run_patched`]);
//! - any call in progress whose media the box relays (the dialer's and the agents' calls,
//!   `crate::call_tap`) can be listened to: both sides mixed are played on the headset;
//!   nothing from the headset reaches that call ([`run_listening`]): a customer is never
//!   spoken to by someone the agent does not know is there.
//!
//! The technician stops with [`HeadsetSwitch`] (one patch at a time); the call itself goes
//! on. A listened-to call ending ends the listening.
//!
//! Must not: change a call's media or end a call.

use crate::media::LegAudio;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// The running patch's stop switch, shared by the UI's handlers; at most one patch runs.
#[derive(Debug, Clone, Default)]
pub struct HeadsetSwitch {
    running: Arc<Mutex<Option<watch::Sender<bool>>>>,
    /// What the headset does or last did, for the diagnostics page.
    note: Arc<Mutex<Option<String>>>,
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

    /// Says what the headset does now (or last did).
    pub fn set_note(&self, note: String) {
        *self.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
    }

    /// Says how a patch ended, unless another one has started meanwhile (its note stands).
    pub fn set_ended_note(&self, note: String) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return;
        }
        *self.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
    }

    /// What the headset does now (or last did), if anything was patched since the start.
    pub fn note(&self) -> Option<String> {
        self.note.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

/// How listening to a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenEnd {
    /// The technician stopped; the call went on.
    Stopped,
    /// The call's media ended (the call ended, or moved where it cannot be heard).
    CallEnded,
}

/// What listening to a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listened {
    /// Why it ended.
    pub end: ListenEnd,
    /// The call's frames played on the headset, or why the headset failed.
    pub played: Result<usize, String>,
}

impl Listened {
    /// One line for the diagnostics page about listening to `call` (its label).
    pub fn describe(&self, call: &str) -> String {
        let heard = match &self.played {
            Ok(n) => format!("{:.1} s played on the headset", *n as f64 * 0.02),
            Err(e) => format!("the headset failed: {e}"),
        };
        match self.end {
            ListenEnd::Stopped => {
                format!("Stopped listening to {call} ({heard}); the call goes on.")
            }
            ListenEnd::CallEnded => {
                format!("The call ended: stopped listening to {call} ({heard}).")
            }
        }
    }
}

/// Plays a call's mixed frames (`heard`, from `crate::call_tap::CallTaps::listen`) on the
/// headset until the call's media ends (`heard` closes) or `stop` turns true (the receiver is
/// dropped: the call's media forgets the listener and goes on).
#[cfg(feature = "alsa")]
pub async fn run_listening(
    mut patch: callgate_board::tech_audio::HeadsetPatch,
    mut heard: mpsc::Receiver<Vec<i16>>,
    mut stop: watch::Receiver<bool>,
) -> Listened {
    let end = loop {
        tokio::select! {
            frame = heard.recv() => match frame {
                Some(f) => patch.hear(f),
                None => break ListenEnd::CallEnded,
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break ListenEnd::Stopped;
                }
            }
        }
    };
    drop(heard);
    Listened {
        end,
        played: finish(patch).await,
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
        let second = switch.begin();
        assert!(second.is_some(), "free again once the call ended");
        // A patch that ended does not overwrite the note of one started meanwhile.
        switch.set_note("Listening to the second call.".into());
        switch.set_ended_note("The call ended: stopped listening to the first.".into());
        assert_eq!(
            switch.note().as_deref(),
            Some("Listening to the second call.")
        );
        drop(second);
        switch.set_ended_note("Stopped listening to the second call.".into());
        assert_eq!(
            switch.note().as_deref(),
            Some("Stopped listening to the second call.")
        );
    }

    /// A real bridge between two RTP legs on loopback, with a customer sending 440 Hz and an
    /// agent sending 1 kHz: listening to it (through the call's tap point) plays both on the
    /// headset (ALSA `file` plugin); stopping leaves the bridge relaying; the bridge ending
    /// (the call ended) ends the listening.
    #[cfg(feature = "alsa")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listening_to_a_bridged_call_hears_both_sides_and_the_calls_end_ends_it() {
        use crate::media::{run_audio_leg, run_bridge, BridgeCommand, RtpLeg};
        use callgate_common::ids::CallId;
        use callgate_media::g711::Codec;
        use callgate_media::sdp::{Direction, NegotiatedAudio};
        use callgate_media::tone::{tone_correlation, ToneGenerator};
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
        let audio = |remote| NegotiatedAudio {
            remote: Some(remote),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event_pt: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            srtp: None,
        };
        // Four sockets: the customer's phone and the box's customer leg, the agent's phone
        // and the box's agent leg.
        let (phone_c, box_c, phone_a, box_a) =
            (bind().await, bind().await, bind().await, bind().await);
        let addr = |p: &(tokio::net::UdpSocket, tokio::net::UdpSocket)| p.0.local_addr().unwrap();
        let (pc, bc, pa, ba) = (addr(&phone_c), addr(&box_c), addr(&phone_a), addr(&box_a));
        let customer_phone = RtpLeg::new(phone_c, &audio(bc)).unwrap();
        let agent_phone = RtpLeg::new(phone_a, &audio(ba)).unwrap();
        let customer_leg = RtpLeg::new(box_c, &audio(pc)).unwrap();
        let agent_leg = RtpLeg::new(box_a, &audio(pa)).unwrap();
        // Each phone talks for 6 s: the customer at 440 Hz, the agent at 1 kHz (quieter).
        let talk = |hz: f64, amplitude: i16, leg: RtpLeg| {
            let (tx, rx) = mpsc::channel(400);
            let mut tone = ToneGenerator::new(hz, amplitude);
            for _ in 0..300 {
                tx.try_send(tone.next_samples(160)).unwrap();
            }
            drop(tx);
            let (heard, heard_rx) = mpsc::channel(512);
            discard(heard_rx);
            tokio::spawn(run_audio_leg(leg, rx, heard))
        };
        let customer = talk(440.0, 8_000, customer_phone);
        let agent = talk(1_000.0, 4_000, agent_phone);
        let (commands, commands_rx) = mpsc::channel(4);
        let call = CallId::new_v7();
        let taps = crate::call_tap::CallTaps::default();
        let weak = commands.downgrade();
        let point = taps.register(call, "bridged", move |l| {
            weak.upgrade()
                .is_some_and(|c| c.try_send(BridgeCommand::Listen(l)).is_ok())
        });
        let bridge = tokio::spawn(run_bridge::<crate::recording::SqliteSegmentStore>(
            customer_leg,
            agent_leg,
            None,
            None,
            commands_rx,
        ));

        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| dir.path().join(name);
        let device = |name: &str| format!("file:'{}',raw", file(name).display());
        let samples = |name: &str| -> Vec<i16> {
            std::fs::read(file(name))
                .unwrap()
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect()
        };

        // Listen for 1.5 s, then stop: the headset heard both sides.
        let switch = HeadsetSwitch::default();
        let stop = switch.begin().unwrap();
        let patch =
            callgate_board::tech_audio::HeadsetPatch::listen(&device("first.raw"), 160).unwrap();
        let first = tokio::spawn(run_listening(patch, taps.listen(call).unwrap(), stop));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(switch.stop());
        let listened = first.await.unwrap();
        assert_eq!(listened.end, ListenEnd::Stopped);
        let played = listened.played.clone().unwrap();
        assert!(played > 40, "{listened:?}");
        let heard = samples("first.raw");
        assert_eq!(heard.len(), played * 160);
        // Each side's share of the second half, packet by packet (the jitter buffers may
        // shift the streams between packets): the customer ~0.9, the agent ~0.45.
        let talking = &heard[heard.len() / 2..];
        let share = |hz: f64| {
            let windows: Vec<f64> = talking
                .chunks_exact(160)
                .map(|w| tone_correlation(w, hz))
                .collect();
            windows.iter().sum::<f64>() / windows.len() as f64
        };
        let (c440, c1k, c700) = (share(440.0), share(1_000.0), share(700.0));
        assert!(c440 > 0.6, "the customer is heard: {c440:.2}");
        assert!(c1k > 0.25, "the agent is heard: {c1k:.2}");
        assert!(c700 < 0.2, "nothing else: {c700:.2}");

        // The bridge went on relaying after the stop; listening again, then the call ends.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stop = switch.begin().unwrap();
        let patch =
            callgate_board::tech_audio::HeadsetPatch::listen(&device("second.raw"), 160).unwrap();
        let second = tokio::spawn(run_listening(patch, taps.listen(call).unwrap(), stop));
        tokio::time::sleep(Duration::from_millis(500)).await;
        commands.send(BridgeCommand::Hangup).await.unwrap();
        let report = bridge.await.unwrap().unwrap();
        drop(point);
        let listened = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the call's end ends the listening")
            .unwrap();
        assert_eq!(listened.end, ListenEnd::CallEnded);
        assert!(listened.played.unwrap() > 10);
        assert!(!switch.is_running(), "the headset is free again");
        assert!(
            report.to_agent.relayed > 80 && report.to_customer.relayed > 80,
            "the bridge relayed throughout: {report:?}"
        );
        customer.abort();
        agent.abort();
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
