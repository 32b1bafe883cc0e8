//! Text to speech for `say` steps: the [`TextToSpeech`] trait, the [`Speech`] it returns (8 kHz
//! mono 16-bit PCM, ready to cut into G.711 frames or play as a prompt), and the local engine
//! [`EspeakNg`] (the `espeak-ng` program, run as a subprocess).
//!
//! Owns turning text into call audio. An HTTP engine can implement the same trait later. Must
//! not: know about calls or RTP sessions (the daemon's robot driver plays the [`Speech`]).

mod espeak;
mod resample;

pub use espeak::{EspeakNg, MAX_TEXT_BYTES};
pub use resample::resample;

use callgate_media::g711::Codec;
use callgate_media::prompt::Prompt;
use callgate_media::wav::{self, SAMPLE_RATE};
use std::path::PathBuf;

/// Samples in one 20 ms RTP frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// Why speech could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtsError {
    /// The engine's program is not installed (or not at the configured path).
    #[error("TTS engine {} is not installed (Debian package `espeak-ng`)", program.display())]
    EngineMissing { program: PathBuf },
    /// The engine does not know the voice.
    #[error("TTS voice {voice:?} does not exist")]
    VoiceNotFound { voice: String },
    /// There was nothing to say.
    #[error("nothing to say: the text is empty")]
    EmptyText,
    /// The text is longer than the engine accepts in one go.
    #[error("text of {len} bytes is longer than {max} bytes")]
    TextTooLong { len: usize, max: usize },
    /// The engine ran but failed.
    #[error("TTS engine {} failed ({status}): {stderr}", program.display())]
    EngineFailed {
        program: PathBuf,
        status: String,
        stderr: String,
    },
    /// The engine's output was not audio we can use.
    #[error("TTS engine gave unusable audio: {reason}")]
    BadAudio { reason: String },
}

/// How to speak: each `None` leaves the engine's own default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SpeechStyle {
    /// The engine's voice name (espeak-ng: `en-us`, `en-gb+f3`, ...).
    pub voice: Option<String>,
    /// Speaking rate.
    pub words_per_minute: Option<u32>,
    /// Pitch, 0..=99.
    pub pitch: Option<u8>,
}

impl SpeechStyle {
    /// A style with only a voice.
    pub fn voice(voice: impl Into<String>) -> SpeechStyle {
        SpeechStyle {
            voice: Some(voice.into()),
            ..SpeechStyle::default()
        }
    }
}

/// A text-to-speech engine. `synthesize` blocks (a subprocess or a request): the daemon calls
/// it on a blocking thread.
pub trait TextToSpeech: Send + Sync {
    /// Speaks `text` in `style` as 8 kHz mono audio.
    fn synthesize(&self, text: &str, style: &SpeechStyle) -> Result<Speech, TtsError>;
}

/// Synthesised speech: 8 kHz mono 16-bit linear PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    samples: Vec<i16>,
}

impl Speech {
    /// Speech from 8 kHz mono samples.
    pub fn from_samples(samples: Vec<i16>) -> Speech {
        Speech { samples }
    }

    /// The 8 kHz samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Takes the samples.
    pub fn into_samples(self) -> Vec<i16> {
        self.samples
    }

    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1_000 / u64::from(SAMPLE_RATE)
    }

    /// Root-mean-square level in 16-bit units (0 for silence).
    pub fn rms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let energy: f64 = self.samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (energy / self.samples.len() as f64).sqrt()
    }

    /// A 16-bit PCM 8 kHz mono WAV file of the speech.
    pub fn to_wav(&self) -> Vec<u8> {
        let mut bytes = wav::pcm16_header(1, self.samples.len() as u32).to_vec();
        for s in &self.samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        bytes
    }

    /// The speech as a prompt the media layer plays like a WAV prompt.
    pub fn to_prompt(&self) -> Prompt {
        Prompt::from_wav(&self.to_wav()).expect("a WAV we wrote ourselves is valid")
    }

    /// G.711 payloads of 20 ms each, the last padded with silence: what goes into RTP.
    pub fn g711_frames(&self, codec: Codec) -> Vec<Vec<u8>> {
        self.samples
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut frame = Vec::with_capacity(FRAME_SAMPLES);
                codec.encode(chunk, &mut frame);
                frame.resize(FRAME_SAMPLES, codec.silence());
                frame
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_media::tone::ToneGenerator;

    #[test]
    fn speech_cuts_into_padded_g711_frames_that_decode_back() {
        let tone = ToneGenerator::new(700.0, 8_000).next_samples(400);
        let speech = Speech::from_samples(tone.clone());
        assert_eq!(speech.duration_ms(), 50);
        let frames = speech.g711_frames(Codec::Pcmu);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == FRAME_SAMPLES));
        assert!(frames[2][80..].iter().all(|&b| b == Codec::Pcmu.silence()));
        let mut decoded = Vec::new();
        for f in &frames {
            Codec::Pcmu.decode(f, &mut decoded);
        }
        let worst = tone
            .iter()
            .zip(&decoded)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!(worst < 300, "µ-law error {worst}");
    }

    #[test]
    fn speech_plays_as_a_prompt_of_the_same_length() {
        let speech = Speech::from_samples(vec![100; 1_000]);
        let prompt = speech.to_prompt();
        assert_eq!(prompt.len(), 1_000);
        assert!((speech.rms() - 100.0).abs() < 1e-9);
        assert_eq!(Speech::from_samples(Vec::new()).rms(), 0.0);
    }
}
