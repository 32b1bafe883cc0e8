//! Beep detection for [`super::CadenceDetector`]: a bank of Goertzel filters every 25 Hz from
//! 350 to 2 150 Hz over each 20 ms frame. A frame is "tonal" when one filter holds most (60 %
//! or more) of the frame's energy, which a machine's beep does even under line noise and
//! speech (energy spread over many harmonics and formants) does not.
//!
//! Owns only the filter bank and the run of tonal frames. Must not: decide the verdict.

use crate::amd::FRAME_SAMPLES;
use callgate_media::wav::SAMPLE_RATE;

const LOWEST_HZ: f64 = 350.0;
const STEP_HZ: f64 = 25.0;
const BANDS: usize = 73;
/// The share of a frame's energy one filter must hold for the frame to count as a beep.
const TONAL_SHARE: f64 = 0.6;

/// Counts consecutive tonal frames at a steady frequency.
#[derive(Debug, Clone)]
pub(crate) struct BeepFinder {
    coefficients: [f64; BANDS],
    /// The band of the current run and its length in frames.
    run: Option<(usize, u32)>,
}

impl BeepFinder {
    pub(crate) fn new() -> BeepFinder {
        let mut coefficients = [0.0; BANDS];
        for (i, c) in coefficients.iter_mut().enumerate() {
            let hz = LOWEST_HZ + STEP_HZ * i as f64;
            *c = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE)).cos();
        }
        BeepFinder {
            coefficients,
            run: None,
        }
    }

    /// The share of `frame`'s energy (`energy` = mean square) at the band with `coefficient`.
    fn share(frame: &[i16], energy: f64, coefficient: f64) -> f64 {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in frame {
            let s0 = f64::from(x) + coefficient * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
        let n = frame.len() as f64;
        // A pure tone of amplitude A: power = (N·A/2)², energy = A²/2, so the share is 1.
        2.0 * power / (n * n * energy)
    }

    /// Feeds one frame; returns how many frames in a row have been tonal at the same band
    /// (give or take one band).
    pub(crate) fn feed(&mut self, frame: &[i16], energy: f64, voiced: bool) -> u32 {
        if !voiced || frame.len() != FRAME_SAMPLES || energy <= 0.0 {
            self.run = None;
            return 0;
        }
        let (band, share) = self
            .coefficients
            .iter()
            .enumerate()
            .map(|(i, &c)| (i, BeepFinder::share(frame, energy, c)))
            .fold((0, 0.0), |best, b| if b.1 > best.1 { b } else { best });
        if share < TONAL_SHARE {
            self.run = None;
            return 0;
        }
        let length = match self.run {
            Some((previous, n)) if previous.abs_diff(band) <= 1 => n + 1,
            _ => 1,
        };
        self.run = Some((band, length));
        length
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_media::tone::ToneGenerator;

    fn energy(frame: &[i16]) -> f64 {
        frame.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / frame.len() as f64
    }

    #[test]
    fn common_beep_frequencies_are_tonal_frame_after_frame() {
        for hz in [440.0, 850.0, 1_000.0, 1_400.0, 2_000.0, 1_333.0] {
            let mut finder = BeepFinder::new();
            let mut tone = ToneGenerator::new(hz, 6_000);
            let mut run = 0;
            for _ in 0..5 {
                let f = tone.next_samples(FRAME_SAMPLES);
                run = finder.feed(&f, energy(&f), true);
            }
            assert_eq!(run, 5, "{hz} Hz");
        }
    }

    #[test]
    fn a_chord_or_noise_is_not_tonal_and_breaks_the_run() {
        let mut finder = BeepFinder::new();
        let mut a = ToneGenerator::new(600.0, 5_000);
        let mut b = ToneGenerator::new(1_300.0, 5_000);
        let mut c = ToneGenerator::new(1_900.0, 5_000);
        let f = a.next_samples(FRAME_SAMPLES);
        assert_eq!(finder.feed(&f, energy(&f), true), 1);
        let mut chord = a.next_samples(FRAME_SAMPLES);
        callgate_media::tone::mix_into(&mut chord, &b.next_samples(FRAME_SAMPLES));
        callgate_media::tone::mix_into(&mut chord, &c.next_samples(FRAME_SAMPLES));
        assert_eq!(finder.feed(&chord, energy(&chord), true), 0);
        let mut seed = 1u32;
        let noise: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 20) as i16 - 2_048
            })
            .collect();
        assert_eq!(finder.feed(&noise, energy(&noise), true), 0);
    }
}
