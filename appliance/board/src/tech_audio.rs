//! The technician's audio port (headset/speaker) through ALSA (feature `alsa`).
//!
//! Owns opening and configuring PCM devices at the telephony format (8 kHz, mono, S16): a
//! test tone, a recording, and [`HeadsetPatch`], a live call patched to the headset (the
//! call's audio played, the microphone captured for the call) on threads of its own.
//! Must not block the call engine: the one-shot functions run on a blocking thread, the
//! patch's channels never block the caller (a frame the headset cannot take is dropped).

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

/// The telephony sample rate.
pub const SAMPLE_RATE: u32 = 8_000;

/// Frames per ALSA period: one 20 ms packet time.
const PERIOD_FRAMES: alsa::pcm::Frames = 160;

/// Why the audio port failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TechAudioError {
    /// The device could not be opened or configured.
    #[error("ALSA device `{device}`: {source}")]
    Alsa {
        device: String,
        #[source]
        source: alsa::Error,
    },
}

fn open(device: &str, direction: Direction) -> Result<PCM, TechAudioError> {
    let wrap = |source| TechAudioError::Alsa {
        device: device.to_string(),
        source,
    };
    let pcm = PCM::new(device, direction, false).map_err(wrap)?;
    {
        let hw = HwParams::any(&pcm).map_err(wrap)?;
        hw.set_channels(1).map_err(wrap)?;
        hw.set_rate(SAMPLE_RATE, ValueOr::Nearest).map_err(wrap)?;
        hw.set_format(Format::s16()).map_err(wrap)?;
        hw.set_access(Access::RWInterleaved).map_err(wrap)?;
        // A packet time per period and a short buffer: a live call is heard with little delay
        // (and a `file` plugin writes what it played as it goes).
        hw.set_period_size_near(PERIOD_FRAMES, ValueOr::Nearest)
            .map_err(wrap)?;
        hw.set_buffer_size_near(PERIOD_FRAMES * 10).map_err(wrap)?;
        pcm.hw_params(&hw).map_err(wrap)?;
    }
    Ok(pcm)
}

/// A 1 kHz sine at -6 dBFS, `millis` long, at 8 kHz.
pub fn test_tone(millis: u32) -> Vec<i16> {
    let n = (SAMPLE_RATE as usize * millis as usize) / 1_000;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            (f64::sin(2.0 * std::f64::consts::PI * 1_000.0 * t) * 16_384.0) as i16
        })
        .collect()
}

/// Plays the test tone on `device`; returns the frames written.
pub fn play_test_tone(device: &str, millis: u32) -> Result<usize, TechAudioError> {
    let wrap = |source| TechAudioError::Alsa {
        device: device.to_string(),
        source,
    };
    let pcm = open(device, Direction::Playback)?;
    let samples = test_tone(millis);
    let io = pcm.io_i16().map_err(wrap)?;
    let mut written = 0;
    while written < samples.len() {
        match io.writei(&samples[written..]) {
            Ok(n) => written += n,
            Err(e) => pcm.try_recover(e, true).map_err(wrap)?,
        }
    }
    pcm.drain().map_err(wrap)?;
    Ok(written)
}

/// Records `millis` of audio from `device`.
pub fn record(device: &str, millis: u32) -> Result<Vec<i16>, TechAudioError> {
    let wrap = |source| TechAudioError::Alsa {
        device: device.to_string(),
        source,
    };
    let pcm = open(device, Direction::Capture)?;
    let mut buf = vec![0i16; (SAMPLE_RATE as usize * millis as usize) / 1_000];
    let io = pcm.io_i16().map_err(wrap)?;
    let mut read = 0;
    while read < buf.len() {
        match io.readi(&mut buf[read..]) {
            Ok(n) => read += n,
            Err(e) => pcm.try_recover(e, true).map_err(wrap)?,
        }
    }
    Ok(buf)
}

/// What a patch did before it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchReport {
    /// Frames of the call's audio written to the headset.
    pub frames_played: usize,
    /// Frames captured from the microphone.
    pub frames_captured: usize,
    /// Call frames dropped because the headset fell behind.
    pub frames_dropped: usize,
}

/// A live call patched to the headset: frames given to [`HeadsetPatch::hear`] are played on
/// the playback device, frames captured from the capture device come out of
/// [`HeadsetPatch::speak`], one packet time each. Both devices run on threads of their own
/// until [`HeadsetPatch::stop`]; the call itself is not touched by stopping.
#[derive(Debug)]
pub struct HeadsetPatch {
    to_headset: std::sync::mpsc::SyncSender<Vec<i16>>,
    from_headset: std::sync::mpsc::Receiver<Vec<i16>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    dropped: usize,
    playback: std::thread::JoinHandle<Result<usize, TechAudioError>>,
    /// `None` when only listening (no microphone opened).
    capture: Option<std::thread::JoinHandle<Result<usize, TechAudioError>>>,
}

/// Frames queued towards the headset before new ones are dropped (0.5 s at 20 ms).
const PATCH_QUEUE: usize = 25;

impl HeadsetPatch {
    /// Opens `playback` and `capture` (ALSA device names) and starts the patch with frames
    /// of `frame` samples. An open failure names the device and starts nothing.
    pub fn start(
        playback: &str,
        capture: &str,
        frame: usize,
    ) -> Result<HeadsetPatch, TechAudioError> {
        HeadsetPatch::open(playback, Some(capture), frame)
    }

    /// Opens only `playback`: the headset hears the call and nothing is captured
    /// ([`HeadsetPatch::speak`] never has a frame). An open failure names the device.
    pub fn listen(playback: &str, frame: usize) -> Result<HeadsetPatch, TechAudioError> {
        HeadsetPatch::open(playback, None, frame)
    }

    fn open(
        playback: &str,
        capture: Option<&str>,
        frame: usize,
    ) -> Result<HeadsetPatch, TechAudioError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (to_headset, heard) = mpsc::sync_channel::<Vec<i16>>(PATCH_QUEUE);
        let (spoken, from_headset) = mpsc::sync_channel::<Vec<i16>>(PATCH_QUEUE);
        let (opened_tx, opened) = mpsc::channel::<Result<(), TechAudioError>>();
        let device = playback.to_string();
        let stopping = stop.clone();
        let ready = opened_tx.clone();
        let playback = std::thread::spawn(move || {
            let wrap = |source| TechAudioError::Alsa {
                device: device.clone(),
                source,
            };
            let pcm = match open(&device, Direction::Playback) {
                Ok(p) => {
                    let _ = ready.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Ok(0);
                }
            };
            let io = pcm.io_i16().map_err(wrap)?;
            let mut played = 0;
            loop {
                match heard.recv_timeout(std::time::Duration::from_millis(50)) {
                    Ok(samples) => {
                        let mut written = 0;
                        while written < samples.len() {
                            match io.writei(&samples[written..]) {
                                Ok(n) => written += n,
                                Err(e) => pcm.try_recover(e, true).map_err(wrap)?,
                            }
                        }
                        played += 1;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
            }
            let _ = pcm.drain();
            Ok(played)
        });
        let devices = 1 + usize::from(capture.is_some());
        let Some(device) = capture.map(str::to_string) else {
            drop(opened_tx);
            drop(spoken);
            return HeadsetPatch::opened(
                opened,
                devices,
                to_headset,
                from_headset,
                stop,
                playback,
                None,
            );
        };
        let stopping = stop.clone();
        let capture = std::thread::spawn(move || {
            let wrap = |source| TechAudioError::Alsa {
                device: device.clone(),
                source,
            };
            let pcm = match open(&device, Direction::Capture) {
                Ok(p) => {
                    let _ = opened_tx.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return Ok(0);
                }
            };
            let io = pcm.io_i16().map_err(wrap)?;
            let period =
                std::time::Duration::from_micros(frame as u64 * 1_000_000 / u64::from(SAMPLE_RATE));
            let started = std::time::Instant::now();
            let mut captured = 0usize;
            while !stopping.load(Ordering::Relaxed) {
                let mut buf = vec![0i16; frame];
                let mut read = 0;
                while read < buf.len() {
                    match io.readi(&mut buf[read..]) {
                        Ok(n) => read += n,
                        Err(e) => pcm.try_recover(e, true).map_err(wrap)?,
                    }
                }
                captured += 1;
                // A full queue: the call is not taking the microphone's frames; drop one.
                let _ = spoken.try_send(buf);
                // A sound card blocks for a packet time; a plugin that answers at once
                // (null, file) is paced to real time here.
                let due = started + period * captured as u32;
                if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(captured)
        });
        HeadsetPatch::opened(
            opened,
            devices,
            to_headset,
            from_headset,
            stop,
            playback,
            Some(capture),
        )
    }

    /// Waits for the `devices` threads to say whether their device opened; any failure stops
    /// the patch and is returned.
    fn opened(
        opened: std::sync::mpsc::Receiver<Result<(), TechAudioError>>,
        devices: usize,
        to_headset: std::sync::mpsc::SyncSender<Vec<i16>>,
        from_headset: std::sync::mpsc::Receiver<Vec<i16>>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        playback: std::thread::JoinHandle<Result<usize, TechAudioError>>,
        capture: Option<std::thread::JoinHandle<Result<usize, TechAudioError>>>,
    ) -> Result<HeadsetPatch, TechAudioError> {
        let mut failure = None;
        for _ in 0..devices {
            if let Ok(Err(e)) = opened.recv() {
                failure.get_or_insert(e);
            }
        }
        let patch = HeadsetPatch {
            to_headset,
            from_headset,
            stop,
            dropped: 0,
            playback,
            capture,
        };
        match failure {
            Some(e) => {
                let _ = patch.stop();
                Err(e)
            }
            None => Ok(patch),
        }
    }

    /// Plays a frame of the call's audio on the headset; never blocks (a frame the headset
    /// cannot take now is dropped and counted).
    pub fn hear(&mut self, frame: Vec<i16>) {
        if self.to_headset.try_send(frame).is_err() {
            self.dropped += 1;
        }
    }

    /// The next frame captured from the microphone, if one is ready.
    pub fn speak(&self) -> Option<Vec<i16>> {
        self.from_headset.try_recv().ok()
    }

    /// Stops both devices (the headset hears what was queued) and reports.
    pub fn stop(self) -> Result<PatchReport, TechAudioError> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.to_headset);
        drop(self.from_headset);
        let joined =
            |h: std::thread::JoinHandle<Result<usize, TechAudioError>>| h.join().unwrap_or(Ok(0));
        let frames_played = joined(self.playback)?;
        let frames_captured = match self.capture {
            Some(capture) => joined(capture)?,
            None => 0,
        };
        Ok(PatchReport {
            frames_played,
            frames_captured,
            frames_dropped: self.dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ALSA's `null` plugin accepts playback and gives silence on capture: a real PCM path
    // without a sound card.
    #[test]
    fn plays_a_tone_through_the_alsa_null_device() {
        assert_eq!(play_test_tone("null", 100).unwrap(), 800);
    }

    #[test]
    fn records_silence_from_the_alsa_null_device() {
        let buf = record("null", 50).unwrap();
        assert_eq!(buf.len(), 400);
    }

    // ALSA's `file` plugin (raw, over the `null` slave) keeps every sample played: what
    // the headset heard is read back and compared with the call's audio.
    #[test]
    fn a_patched_call_is_heard_sample_for_sample_and_the_microphone_reaches_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let heard = dir.path().join("heard.raw");
        let device = format!("file:'{}',raw", heard.display());
        let mut patch = HeadsetPatch::start(&device, "null", 160).unwrap();
        let call: Vec<i16> = (0..20 * 160)
            .map(|i| (f64::sin(i as f64 * 0.3) * 8_000.0) as i16)
            .collect();
        for frame in call.chunks(160) {
            patch.hear(frame.to_vec());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The microphone (null: silence) gives packet-time frames for the call.
        let start = std::time::Instant::now();
        let spoken = loop {
            if let Some(f) = patch.speak() {
                break f;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "no frame from the microphone"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(spoken.len(), 160);
        assert!(spoken.iter().all(|s| *s == 0), "null captures silence");
        let report = patch.stop().unwrap();
        assert_eq!(report.frames_played + report.frames_dropped, 20);
        assert_eq!(report.frames_dropped, 0, "{report:?}");
        assert!(report.frames_captured >= 1);
        let bytes = std::fs::read(&heard).unwrap();
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, call, "the headset heard exactly the call's audio");
    }

    #[test]
    fn listening_only_plays_the_call_and_opens_no_microphone() {
        let dir = tempfile::tempdir().unwrap();
        let heard = dir.path().join("heard.raw");
        let device = format!("file:'{}',raw", heard.display());
        let mut patch = HeadsetPatch::listen(&device, 160).unwrap();
        let call: Vec<i16> = (0..5 * 160).map(|i| (i % 300) as i16 - 150).collect();
        for frame in call.chunks(160) {
            patch.hear(frame.to_vec());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(patch.speak(), None, "nothing is captured");
        let report = patch.stop().unwrap();
        assert_eq!(report.frames_played, 5, "{report:?}");
        assert_eq!(report.frames_captured, 0, "{report:?}");
        let bytes = std::fs::read(&heard).unwrap();
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, call);
        let err = HeadsetPatch::listen("no-such-callgate-headset", 160)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-callgate-headset"), "{err}");
    }

    #[test]
    fn a_patch_to_a_missing_device_names_it_and_starts_nothing() {
        let err = HeadsetPatch::start("null", "no-such-callgate-mic", 160)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-callgate-mic"), "{err}");
    }

    #[test]
    fn an_unknown_device_is_named_in_the_error() {
        let err = play_test_tone("no-such-callgate-device", 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-callgate-device"), "{err}");
    }
}
