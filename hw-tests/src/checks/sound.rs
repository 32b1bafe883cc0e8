//! The tech audio port: a test tone is played and audio captured through ALSA.

use crate::report::Outcome;

/// Plays 300 ms of tone and records 200 ms on `device`.
#[cfg(feature = "alsa")]
pub fn check(device: &str) -> Outcome {
    use callgate_board::tech_audio;
    let played = match tech_audio::play_test_tone(device, 300) {
        Ok(n) => n,
        Err(e) => return Outcome::Fail(format!("playback: {e}")),
    };
    match tech_audio::record(device, 200) {
        Ok(samples) if samples.len() == 1_600 => Outcome::Pass(format!(
            "played {played} frames and captured {} on `{device}`",
            samples.len()
        )),
        Ok(samples) => Outcome::Fail(format!("captured {} frames, expected 1600", samples.len())),
        Err(e) => Outcome::Fail(format!("capture: {e}")),
    }
}

/// Without the `alsa` feature there is no audio path to test.
#[cfg(not(feature = "alsa"))]
pub fn check(_device: &str) -> Outcome {
    Outcome::Skip("built without the `alsa` feature".into())
}
