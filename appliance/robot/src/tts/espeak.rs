//! [`EspeakNg`]: the local TTS engine, the `espeak-ng` program run once per text with
//! `--stdout` (a 16-bit mono WAV, 22 050 Hz) and converted to 8 kHz.
//!
//! Owns the command line, the reading of espeak-ng's streamed WAV (its length fields are
//! placeholders) and the mapping of its failures onto [`TtsError`]. The text goes through
//! stdin, never the command line, so no text can be read as an option. Must not: cache or
//! play audio.

use super::{resample, Speech, SpeechStyle, TextToSpeech, TtsError};
use callgate_media::wav::SAMPLE_RATE;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The longest text spoken in one call, in bytes.
pub const MAX_TEXT_BYTES: usize = 8_192;

/// The espeak-ng engine. `EspeakNg::default()` runs `espeak-ng` from `PATH`.
#[derive(Debug, Clone)]
pub struct EspeakNg {
    program: PathBuf,
    default_style: SpeechStyle,
}

impl Default for EspeakNg {
    fn default() -> Self {
        EspeakNg::new("espeak-ng")
    }
}

impl EspeakNg {
    /// The engine at `program` (a name looked up in `PATH`, or a path).
    pub fn new(program: impl Into<PathBuf>) -> EspeakNg {
        EspeakNg {
            program: program.into(),
            default_style: SpeechStyle::default(),
        }
    }

    /// Uses `style` for whatever a request leaves unset.
    pub fn with_default_style(mut self, style: SpeechStyle) -> EspeakNg {
        self.default_style = style;
        self
    }

    /// The program it runs.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

/// Whether a voice name is one espeak-ng could have: `en`, `en-us`, `en-gb-x-rp+f3`, ...
fn plausible_voice(voice: &str) -> bool {
    !voice.is_empty()
        && voice.len() <= 64
        && !voice.starts_with('-')
        && voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
}

impl TextToSpeech for EspeakNg {
    fn synthesize(&self, text: &str, style: &SpeechStyle) -> Result<Speech, TtsError> {
        if text.trim().is_empty() {
            return Err(TtsError::EmptyText);
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(TtsError::TextTooLong {
                len: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let mut command = Command::new(&self.program);
        command.arg("--stdout");
        let voice = style.voice.as_ref().or(self.default_style.voice.as_ref());
        if let Some(voice) = voice {
            if !plausible_voice(voice) {
                return Err(TtsError::VoiceNotFound {
                    voice: voice.clone(),
                });
            }
            command.arg("-v").arg(voice);
        }
        if let Some(wpm) = style
            .words_per_minute
            .or(self.default_style.words_per_minute)
        {
            command.arg("-s").arg(wpm.clamp(80, 450).to_string());
        }
        if let Some(pitch) = style.pitch.or(self.default_style.pitch) {
            command.arg("-p").arg(pitch.min(99).to_string());
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                TtsError::EngineMissing {
                    program: self.program.clone(),
                }
            }
            _ => TtsError::EngineFailed {
                program: self.program.clone(),
                status: "not started".into(),
                stderr: e.to_string(),
            },
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // At most MAX_TEXT_BYTES: fits the pipe, so writing cannot block on a child
            // that has not started reading. A child that exits early reports below.
            let _ = stdin.write_all(text.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|e| TtsError::EngineFailed {
                program: self.program.clone(),
                status: "lost".into(),
                stderr: e.to_string(),
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.contains("voice does not exist") {
            return Err(TtsError::VoiceNotFound {
                voice: voice.cloned().unwrap_or_default(),
            });
        }
        if !output.status.success() {
            return Err(TtsError::EngineFailed {
                program: self.program.clone(),
                status: output.status.to_string(),
                stderr,
            });
        }
        let (rate, samples) = read_streamed_wav(&output.stdout)?;
        Ok(Speech::from_samples(resample(&samples, rate, SAMPLE_RATE)))
    }
}

/// Reads a 16-bit mono WAV whose length fields may be placeholders (espeak-ng streams it):
/// the `data` chunk runs to the end. Returns the rate and the samples.
pub(crate) fn read_streamed_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), TtsError> {
    let bad = |reason: &str| TtsError::BadAudio {
        reason: reason.to_owned(),
    };
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE stream"));
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32_at(at + 4) as usize;
        let body = at + 8;
        if id == b"fmt " {
            if len < 16 || body + 16 > bytes.len() {
                return Err(bad("truncated `fmt ` chunk"));
            }
            format = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or_else(|| bad("`data` before `fmt `"))?;
            if (tag, channels, bits) != (1, 1, 16) || rate == 0 {
                return Err(TtsError::BadAudio {
                    reason: format!(
                        "format {tag}, {channels} channels, {bits} bits at {rate} Hz; expected 16-bit mono PCM"
                    ),
                });
            }
            let samples = bytes[body..]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Ok((rate, samples));
        }
        at = body.saturating_add(len).saturating_add(len & 1);
    }
    Err(bad("no `data` chunk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rate: u32, samples: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data\x00\xf0\xff\x7f");
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_streamed_wav_with_placeholder_lengths_reads_to_its_end() {
        let (rate, samples) = read_streamed_wav(&stream(22_050, &[1, -2, 3])).unwrap();
        assert_eq!(rate, 22_050);
        assert_eq!(samples, [1, -2, 3]);
    }

    #[test]
    fn unusable_output_is_a_bad_audio_error() {
        assert!(matches!(
            read_streamed_wav(b"not audio at all"),
            Err(TtsError::BadAudio { .. })
        ));
        let mut stereo = stream(22_050, &[0, 0]);
        stereo[22] = 2;
        assert!(matches!(
            read_streamed_wav(&stereo),
            Err(TtsError::BadAudio { reason }) if reason.contains("2 channels")
        ));
    }

    #[test]
    fn a_missing_program_is_engine_missing() {
        let tts = EspeakNg::new("/nonexistent/espeak-ng");
        assert_eq!(
            tts.synthesize("hello", &SpeechStyle::default()),
            Err(TtsError::EngineMissing {
                program: "/nonexistent/espeak-ng".into()
            })
        );
    }

    #[test]
    fn empty_text_and_odd_voice_names_are_refused_before_running_anything() {
        let tts = EspeakNg::new("/nonexistent/espeak-ng");
        assert_eq!(
            tts.synthesize("  ", &SpeechStyle::default()),
            Err(TtsError::EmptyText)
        );
        assert_eq!(
            tts.synthesize("hi", &SpeechStyle::voice("--help")),
            Err(TtsError::VoiceNotFound {
                voice: "--help".into()
            })
        );
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            tts.synthesize(&long, &SpeechStyle::default()),
            Err(TtsError::TextTooLong { .. })
        ));
    }
}
