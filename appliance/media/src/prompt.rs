//! Prompts and tones played into a leg: recorded announcements (consent, safe-harbour,
//! hold music) from 8 kHz WAV files, and tone sequences such as the agent's connect beep,
//! either alone or mixed over the live audio of the leg.
//!
//! Owns: decoding a prompt once, cutting it into frames, and mixing. Must not: read files
//! (the caller passes the bytes) or pace itself (the caller pulls one frame per packet time).

use crate::tone::{mix_into, ToneGenerator};
use crate::wav::{self, WavError};
use std::sync::Arc;

/// A decoded prompt, shareable between calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    samples: Arc<[i16]>,
}

impl Prompt {
    /// Decodes an 8 kHz WAV (µ-law, A-law or 16-bit PCM; stereo is mixed down to mono).
    pub fn from_wav(bytes: &[u8]) -> Result<Prompt, WavError> {
        Ok(Prompt {
            samples: wav::read(bytes)?.mono().into(),
        })
    }

    /// A prompt made of a tone sequence: `(frequency Hz, on ms, off ms)` steps at `amplitude`.
    pub fn tones(steps: &[(f64, u32, u32)], amplitude: i16) -> Prompt {
        let mut samples = Vec::new();
        for &(hz, on_ms, off_ms) in steps {
            samples.extend(ToneGenerator::new(hz, amplitude).next_samples(on_ms as usize * 8));
            samples.extend(std::iter::repeat_n(0, off_ms as usize * 8));
        }
        Prompt {
            samples: samples.into(),
        }
    }

    /// The agent's connect beep: two short 440 Hz beeps.
    pub fn connect_beep() -> Prompt {
        Prompt::tones(&[(440.0, 120, 80), (440.0, 120, 0)], 6_000)
    }

    /// Length in samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the prompt holds no audio.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Starts playing from the beginning.
    pub fn play(&self) -> Playback {
        Playback {
            prompt: self.clone(),
            position: 0,
        }
    }
}

/// One playing of a prompt.
#[derive(Debug, Clone)]
pub struct Playback {
    prompt: Prompt,
    position: usize,
}

impl Playback {
    /// The next `frame` samples (the last frame padded with silence), or `None` when done.
    pub fn next_frame(&mut self, frame: usize) -> Option<Vec<i16>> {
        let rest = self.prompt.samples.get(self.position..)?;
        if rest.is_empty() {
            return None;
        }
        let take = rest.len().min(frame);
        let mut out = rest[..take].to_vec();
        out.resize(frame, 0);
        self.position += take;
        Some(out)
    }

    /// Mixes the next frame over `live` (the leg's own audio); returns `false` once finished,
    /// leaving `live` untouched.
    pub fn mix_over(&mut self, live: &mut [i16]) -> bool {
        match self.next_frame(live.len()) {
            Some(f) => {
                mix_into(live, &f);
                true
            }
            None => false,
        }
    }

    /// Whether every sample has been played.
    pub fn finished(&self) -> bool {
        self.position >= self.prompt.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::Codec;
    use crate::tone::tone_correlation;

    fn mulaw_wav(samples: &[i16]) -> Vec<u8> {
        let mut b = wav::pcm16_header(1, 0).to_vec();
        b[20..22].copy_from_slice(&7u16.to_le_bytes());
        b[34..36].copy_from_slice(&8u16.to_le_bytes());
        b[32..34].copy_from_slice(&1u16.to_le_bytes());
        b[40..44].copy_from_slice(&(samples.len() as u32).to_le_bytes());
        Codec::Pcmu.encode(samples, &mut b);
        b
    }

    #[test]
    fn a_mulaw_prompt_plays_in_frames_with_a_padded_tail() {
        let tone = ToneGenerator::new(500.0, 8_000).next_samples(400);
        let prompt = Prompt::from_wav(&mulaw_wav(&tone)).unwrap();
        let mut p = prompt.play();
        let frames: Vec<Vec<i16>> = std::iter::from_fn(|| p.next_frame(160)).collect();
        assert_eq!(frames.len(), 3);
        assert!(frames[2][80..].iter().all(|&s| s == 0), "tail padded");
        assert!(p.finished());
        let played: Vec<i16> = frames.concat()[..400].to_vec();
        assert!(tone_correlation(&played, 500.0) > 0.99);
    }

    #[test]
    fn a_prompt_mixed_over_a_live_leg_carries_both() {
        let beep = Prompt::connect_beep();
        assert_eq!(beep.len(), (120 + 80 + 120) * 8);
        let mut playback = beep.play();
        let mut live_tone = ToneGenerator::new(1_000.0, 6_000);
        let mut heard = Vec::new();
        let mut frames = 0;
        loop {
            let mut live = live_tone.next_samples(160);
            if !playback.mix_over(&mut live) {
                break;
            }
            frames += 1;
            heard.extend(live);
        }
        assert_eq!(frames, 16);
        let first_beep = &heard[..960];
        assert!(tone_correlation(first_beep, 440.0) > 0.6);
        assert!(tone_correlation(first_beep, 1_000.0) > 0.6);
        let gap = &heard[960..1_600];
        assert!(
            tone_correlation(gap, 440.0) < 0.1,
            "the live leg alone between beeps"
        );
    }

    #[test]
    fn a_44k_prompt_is_refused() {
        let mut b = mulaw_wav(&[0; 10]);
        b[24..28].copy_from_slice(&44_100u32.to_le_bytes());
        assert_eq!(Prompt::from_wav(&b), Err(WavError::UnsupportedRate(44_100)));
    }
}
