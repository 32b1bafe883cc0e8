//! The cadence detector on synthetic audio with known answers: speech stands in as noise
//! bursts at syllable rate, beeps as pure tones.

use super::*;
use callgate_media::tone::ToneGenerator;

/// Builds test audio piece by piece.
struct Line {
    samples: Vec<i16>,
    seed: u32,
    noise_rms: f64,
}

impl Line {
    fn new(noise_rms: f64) -> Line {
        Line {
            samples: Vec::new(),
            seed: 7,
            noise_rms,
        }
    }

    fn noise(&mut self, rms: f64) -> i16 {
        // Uniform noise: rms = half-range / √3.
        self.seed = self
            .seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let u = f64::from(self.seed >> 8) / f64::from(1u32 << 24) * 2.0 - 1.0;
        (u * rms * 3f64.sqrt()) as i16
    }

    fn silence(mut self, ms: usize) -> Line {
        for _ in 0..ms * 8 {
            let n = self.noise(self.noise_rms);
            self.samples.push(n);
        }
        self
    }

    /// Speech-like: noise bursts of `syllable_ms` with 40 ms dips, for `ms`.
    fn speech(mut self, ms: usize, syllable_ms: usize) -> Line {
        for i in 0..ms * 8 {
            let in_dip = (i / 8) % (syllable_ms + 40) >= syllable_ms;
            let level = if in_dip { 0.0 } else { 3_000.0 };
            let n = self.noise(level) as i32 + self.noise(self.noise_rms) as i32;
            self.samples.push(n.clamp(-32_768, 32_767) as i16);
        }
        self
    }

    fn tone(mut self, hz: f64, ms: usize) -> Line {
        let tone = ToneGenerator::new(hz, 8_000).next_samples(ms * 8);
        for t in tone {
            let n = self.noise(self.noise_rms);
            self.samples.push(t.saturating_add(n));
        }
        self
    }

    fn detect(&self) -> AmdDecision {
        detect(&mut CadenceDetector::default(), &self.samples)
    }
}

#[test]
fn a_short_hello_then_silence_is_a_human() {
    let d = Line::new(30.0)
        .silence(300)
        .speech(600, 200)
        .silence(3_000)
        .detect();
    assert_eq!(d.verdict, AmdVerdict::Human);
    assert_eq!(d.reason, AmdReason::ShortGreetingThenSilence);
    // 300 ms before, 600 ms of hello (ending on a dip), 800 ms of silence.
    assert!((1_600..=1_800).contains(&d.after_ms), "{}", d.after_ms);
}

#[test]
fn a_greeting_that_runs_on_is_a_machine() {
    let d = Line::new(30.0)
        .silence(300)
        .speech(4_000, 220)
        .silence(500)
        .detect();
    assert_eq!(d.verdict, AmdVerdict::Machine);
    assert_eq!(d.reason, AmdReason::LongGreeting);
    assert!((2_000..=2_300).contains(&d.after_ms), "{}", d.after_ms);
}

#[test]
fn many_short_words_are_a_machine() {
    // Five words separated by 150 ms pauses: each pause ends a word, none ends the greeting.
    let mut line = Line::new(30.0).silence(200);
    for _ in 0..5 {
        line = line.speech(200, 200).silence(150);
    }
    let d = line.silence(2_000).detect();
    assert_eq!(d.verdict, AmdVerdict::Machine);
    assert_eq!(d.reason, AmdReason::ManyWords);
}

#[test]
fn a_beep_is_a_machine_within_about_100_ms() {
    let d = Line::new(30.0)
        .silence(500)
        .tone(1_400.0, 500)
        .silence(500)
        .detect();
    assert_eq!(d.verdict, AmdVerdict::Machine);
    assert_eq!(d.reason, AmdReason::Beep);
    assert!((600..=660).contains(&d.after_ms), "{}", d.after_ms);
}

#[test]
fn dead_air_is_unknown_after_the_initial_silence() {
    let d = Line::new(30.0).silence(6_000).detect();
    assert_eq!(d.verdict, AmdVerdict::Unknown);
    assert_eq!(d.reason, AmdReason::InitialSilence);
    assert_eq!(d.after_ms, 2_500);
}

#[test]
fn speech_over_a_noisy_line_still_reads_as_a_short_greeting() {
    let d = Line::new(400.0)
        .silence(500)
        .speech(500, 200)
        .silence(3_000)
        .detect();
    assert_eq!(d.verdict, AmdVerdict::Human, "{d:?}");
}

#[test]
fn the_deadline_bounds_the_decision() {
    let settings = CadenceSettings {
        max_greeting_ms: 60_000,
        max_words: 1_000,
        ..CadenceSettings::default()
    };
    let line = Line::new(30.0).silence(200).speech(8_000, 200);
    let d = detect(&mut CadenceDetector::new(settings), &line.samples);
    assert_eq!(d.verdict, AmdVerdict::Unknown);
    assert_eq!(d.reason, AmdReason::Deadline);
    assert_eq!(d.after_ms, 5_000);
}

#[test]
fn the_decision_never_changes_once_made() {
    let line = Line::new(30.0).silence(300).speech(600, 200).silence(1_000);
    let mut detector = CadenceDetector::default();
    let first = detect(&mut detector, &line.samples);
    let beep = Line::new(0.0).tone(1_000.0, 1_000);
    for frame in beep.samples.chunks(FRAME_SAMPLES) {
        detector.handle_frame(frame);
    }
    assert_eq!(detector.poll_decision(), Some(first));
}

#[test]
fn the_same_audio_gives_the_same_decision() {
    let line = Line::new(100.0)
        .silence(300)
        .speech(2_500, 180)
        .tone(1_000.0, 300);
    assert_eq!(line.detect(), line.detect());
}
