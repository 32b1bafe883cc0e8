//! The technician's audio port (headset/speaker) through ALSA (feature `alsa`).
//!
//! Owns opening and configuring PCM devices at the telephony format (8 kHz, mono, S16);
//! must not block the call engine: callers run it on a blocking thread.

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

/// The telephony sample rate.
pub const SAMPLE_RATE: u32 = 8_000;

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

    #[test]
    fn an_unknown_device_is_named_in_the_error() {
        let err = play_test_tone("no-such-callgate-device", 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-callgate-device"), "{err}");
    }
}
