//! Sine tones at 8 kHz: the agent's connect beep, test tones, and the reference signals the
//! recording checks correlate against.
//!
//! Owns only sample generation and mixing arithmetic. Must not: know about legs or packets.

use crate::wav::SAMPLE_RATE;

/// A continuous sine, phase kept across calls so consecutive frames join without clicks.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl ToneGenerator {
    /// A tone of `frequency_hz` at `amplitude` (peak, in 16-bit units).
    pub fn new(frequency_hz: f64, amplitude: i16) -> ToneGenerator {
        ToneGenerator {
            step: 2.0 * std::f64::consts::PI * frequency_hz / f64::from(SAMPLE_RATE),
            phase: 0.0,
            amplitude: f64::from(amplitude),
        }
    }

    /// The next `n` samples.
    pub fn next_samples(&mut self, n: usize) -> Vec<i16> {
        (0..n)
            .map(|_| {
                let s = (self.phase.sin() * self.amplitude).round() as i16;
                self.phase = (self.phase + self.step) % (2.0 * std::f64::consts::PI);
                s
            })
            .collect()
    }
}

/// Adds `overlay` onto `base` sample by sample, saturating at the 16-bit limits.
pub fn mix_into(base: &mut [i16], overlay: &[i16]) {
    for (b, o) in base.iter_mut().zip(overlay) {
        *b = b.saturating_add(*o);
    }
}

/// Normalised correlation of `signal` with a sine of `frequency_hz` (any phase): 1.0 for a
/// pure tone at that frequency, near 0 for silence or other frequencies.
pub fn tone_correlation(signal: &[i16], frequency_hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * frequency_hz / f64::from(SAMPLE_RATE);
    let (mut i, mut q, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for (n, &s) in signal.iter().enumerate() {
        let x = f64::from(s);
        i += x * (w * n as f64).cos();
        q += x * (w * n as f64).sin();
        energy += x * x;
    }
    if energy == 0.0 || signal.is_empty() {
        return 0.0;
    }
    // For a pure tone, i² + q² = (N·A/2)² and energy = N·A²/2, so the ratio is 1.
    ((i * i + q * q) * 2.0 / (energy * signal.len() as f64)).sqrt()
}

/// The share of consecutive `window`-sample windows of `signal` whose [`tone_correlation`]
/// with `frequency_hz` exceeds 0.9: robust to the time shifts a jitter buffer makes when it
/// adapts (a shift breaks phase coherence across the whole signal, not within a window).
pub fn tone_presence(signal: &[i16], frequency_hz: f64, window: usize) -> f64 {
    let windows: Vec<&[i16]> = signal.chunks_exact(window.max(1)).collect();
    if windows.is_empty() {
        return 0.0;
    }
    let hits = windows
        .iter()
        .filter(|w| tone_correlation(w, frequency_hz) > 0.9)
        .count();
    hits as f64 / windows.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_tone_correlates_with_its_frequency_only() {
        let mut g = ToneGenerator::new(440.0, 8_000);
        let mut s = g.next_samples(4_000);
        s.extend(g.next_samples(4_000));
        assert!(tone_correlation(&s, 440.0) > 0.99);
        assert!(tone_correlation(&s, 1_000.0) < 0.05);
        assert_eq!(tone_correlation(&[0; 100], 440.0), 0.0);
    }

    #[test]
    fn presence_tolerates_a_time_shift_that_breaks_global_correlation() {
        let mut g = ToneGenerator::new(440.0, 8_000);
        let mut s = g.next_samples(6_000);
        // Three frames of silence, then the tone continues out of phase.
        s.extend(vec![0; 480]);
        s.extend(g.next_samples(6_000));
        assert!(tone_correlation(&s, 440.0) < 0.9);
        let p = tone_presence(&s, 440.0, 400);
        assert!(p > 0.85, "presence {p}");
        assert!(tone_presence(&s, 1_000.0, 400) < 0.05);
        assert_eq!(tone_presence(&[], 440.0, 400), 0.0);
    }

    #[test]
    fn frames_join_without_a_phase_jump() {
        let mut g = ToneGenerator::new(1_000.0, 10_000);
        let a = g.next_samples(7);
        let b = g.next_samples(1);
        let whole = ToneGenerator::new(1_000.0, 10_000).next_samples(8);
        assert_eq!([a, b].concat(), whole);
    }

    #[test]
    fn mixing_saturates_instead_of_wrapping() {
        let mut base = [30_000, -30_000, 5];
        mix_into(&mut base, &[10_000, -10_000, 5]);
        assert_eq!(base, [i16::MAX, i16::MIN, 10]);
    }
}
