//! Sample-rate conversion of TTS output (espeak-ng speaks at 22 050 Hz) to the 8 kHz of
//! telephone audio: band-limited (windowed-sinc) interpolation, so nothing above 4 kHz folds
//! back into the band.
//!
//! Owns only the arithmetic. Must not: know where the audio comes from.

/// Zero crossings of the interpolation kernel on each side.
const ZERO_CROSSINGS: f64 = 12.0;

/// Converts mono `input` at `from_hz` to `to_hz`, keeping frequencies below 0.9 × the lower
/// Nyquist frequency.
pub fn resample(input: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    if from_hz == to_hz || input.is_empty() || from_hz == 0 || to_hz == 0 {
        return input.to_vec();
    }
    let ratio = f64::from(from_hz) / f64::from(to_hz);
    // Cut-off as a fraction of the input rate.
    let cutoff = 0.9 * 0.5 * f64::from(from_hz.min(to_hz)) / f64::from(from_hz);
    let half_width = ZERO_CROSSINGS / (2.0 * cutoff);
    let out_len = (input.len() as f64 / ratio).floor() as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let centre = n as f64 * ratio;
        let first = (centre - half_width).ceil().max(0.0) as usize;
        let last = ((centre + half_width).floor() as usize).min(input.len() - 1);
        let mut acc = 0.0;
        for (k, &x) in input.iter().enumerate().take(last + 1).skip(first) {
            let d = k as f64 - centre;
            acc += f64::from(x) * kernel(d, cutoff, half_width);
        }
        out.push(acc.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16);
    }
    out
}

/// Low-pass sinc at `cutoff` (cycles per input sample) under a Blackman window.
fn kernel(d: f64, cutoff: f64, half_width: f64) -> f64 {
    let x = 2.0 * cutoff * d;
    let sinc = if x.abs() < 1e-12 {
        1.0
    } else {
        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
    };
    let phase = std::f64::consts::PI * d / half_width;
    let blackman = 0.42 + 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
    2.0 * cutoff * sinc * blackman.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_media::tone::tone_correlation;

    fn sine(hz: f64, rate: u32, n: usize, amplitude: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    #[test]
    fn a_tone_in_the_band_survives_22k_to_8k_at_its_level() {
        let input = sine(1_000.0, 22_050, 22_050, 10_000.0);
        let out = resample(&input, 22_050, 8_000);
        assert_eq!(out.len(), 8_000);
        let middle = &out[400..7_600];
        assert!(tone_correlation(middle, 1_000.0) > 0.99);
        let level = rms(middle);
        assert!(
            (level - 10_000.0 / 2f64.sqrt()).abs() < 150.0,
            "rms {level}"
        );
    }

    #[test]
    fn a_tone_above_4khz_is_removed_not_folded_back() {
        let input = sine(6_000.0, 22_050, 22_050, 10_000.0);
        let out = resample(&input, 22_050, 8_000);
        let level = rms(&out[400..7_600]);
        assert!(level < 150.0, "6 kHz would alias to 2 kHz; rms {level}");
    }

    #[test]
    fn the_same_rate_is_a_copy() {
        assert_eq!(resample(&[1, 2, 3], 8_000, 8_000), [1, 2, 3]);
        assert!(resample(&[], 22_050, 8_000).is_empty());
    }
}
