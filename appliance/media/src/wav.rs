//! RIFF/WAVE at 8 kHz: writing the stereo 16-bit recordings and reading prompts (µ-law,
//! A-law or 16-bit PCM, mono or stereo) into linear samples.
//!
//! Owns only the byte layout. Must not: resample (prompts must already be 8 kHz; anything
//! else is refused by name) or touch files.

use crate::g711::Codec;

/// The only sample rate the appliance records and plays.
pub const SAMPLE_RATE: u32 = 8_000;

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_MULAW: u16 = 7;

/// Why a WAV file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// Not a RIFF/WAVE file, or a chunk runs past the end.
    #[error("not a WAV file: {0}")]
    NotWav(&'static str),
    /// A format other than 16-bit PCM, µ-law or A-law.
    #[error("WAV format tag {tag} with {bits} bits per sample is not 16-bit PCM, µ-law or A-law")]
    UnsupportedFormat { tag: u16, bits: u16 },
    /// A sample rate other than 8000 Hz.
    #[error("WAV sample rate {0} Hz is not 8000 Hz")]
    UnsupportedRate(u32),
    /// Zero channels or more than two.
    #[error("WAV with {0} channels; prompts are mono or stereo")]
    UnsupportedChannels(u16),
}

/// The 44-byte header of a 16-bit PCM, 8 kHz WAV with `channels` channels and `frames`
/// sample frames.
pub fn pcm16_header(channels: u16, frames: u32) -> [u8; 44] {
    let block_align = channels * 2;
    let data_len = frames * u32::from(block_align);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&FORMAT_PCM.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(SAMPLE_RATE * u32::from(block_align)).to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// A decoded WAV: linear samples, interleaved when stereo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl Wav {
    /// The samples of one channel (0 = left).
    pub fn channel(&self, index: u16) -> Vec<i16> {
        self.samples
            .iter()
            .skip(usize::from(index))
            .step_by(usize::from(self.channels.max(1)))
            .copied()
            .collect()
    }

    /// A mono mixdown (the average of the channels).
    pub fn mono(&self) -> Vec<i16> {
        if self.channels == 1 {
            return self.samples.clone();
        }
        self.samples
            .chunks(usize::from(self.channels))
            .map(|f| (f.iter().map(|&s| i32::from(s)).sum::<i32>() / f.len() as i32) as i16)
            .collect()
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads an 8 kHz WAV (16-bit PCM, µ-law or A-law; mono or stereo).
pub fn read(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav("missing RIFF/WAVE signature"));
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32_at(bytes, at + 4) as usize;
        let body = at + 8;
        let end = body
            .checked_add(len)
            .ok_or(WavError::NotWav("chunk length overflows"))?;
        if id == b"fmt " {
            if len < 16 || end > bytes.len() {
                return Err(WavError::NotWav("`fmt ` chunk is truncated"));
            }
            format = Some((
                u16_at(bytes, body),
                u16_at(bytes, body + 2),
                u32_at(bytes, body + 4),
                u16_at(bytes, body + 14),
            ));
        } else if id == b"data" {
            let (tag, channels, rate, bits) =
                format.ok_or(WavError::NotWav("`data` before `fmt `"))?;
            if rate != SAMPLE_RATE {
                return Err(WavError::UnsupportedRate(rate));
            }
            if channels == 0 || channels > 2 {
                return Err(WavError::UnsupportedChannels(channels));
            }
            // A writer that never fixed up its length leaves it at 0 or too large: take what
            // is there.
            let data = &bytes[body..end.min(bytes.len())];
            let samples = match (tag, bits) {
                (FORMAT_PCM, 16) => data
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
                (FORMAT_MULAW, 8) | (FORMAT_ALAW, 8) => {
                    let codec = if tag == FORMAT_MULAW {
                        Codec::Pcmu
                    } else {
                        Codec::Pcma
                    };
                    let mut out = Vec::with_capacity(data.len());
                    codec.decode(data, &mut out);
                    out
                }
                _ => return Err(WavError::UnsupportedFormat { tag, bits }),
            };
            return Ok(Wav { channels, samples });
        }
        // Chunks are padded to an even length.
        at = end + (len & 1);
    }
    Err(WavError::NotWav("no `data` chunk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo_file(frames: &[(i16, i16)]) -> Vec<u8> {
        let mut b = pcm16_header(2, frames.len() as u32).to_vec();
        for (l, r) in frames {
            b.extend_from_slice(&l.to_le_bytes());
            b.extend_from_slice(&r.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_written_stereo_file_reads_back_channel_by_channel() {
        let b = stereo_file(&[(1, -1), (2, -2), (3, -3)]);
        assert_eq!(u32_at(&b, 4) as usize, b.len() - 8, "RIFF length");
        let w = read(&b).unwrap();
        assert_eq!(w.channel(0), [1, 2, 3]);
        assert_eq!(w.channel(1), [-1, -2, -3]);
        assert_eq!(w.mono(), [0, 0, 0]);
    }

    #[test]
    fn mulaw_and_alaw_prompts_decode() {
        for (tag, codec) in [(FORMAT_MULAW, Codec::Pcmu), (FORMAT_ALAW, Codec::Pcma)] {
            let mut b = pcm16_header(1, 0).to_vec();
            b[20..22].copy_from_slice(&tag.to_le_bytes());
            b[34..36].copy_from_slice(&8u16.to_le_bytes());
            b[40..44].copy_from_slice(&2u32.to_le_bytes());
            b.extend_from_slice(&[codec.encode_sample(1000), codec.encode_sample(-1000)]);
            let w = read(&b).unwrap();
            assert_eq!(w.samples.len(), 2);
            assert!((i32::from(w.samples[0]) - 1000).abs() < 64);
            assert!((i32::from(w.samples[1]) + 1000).abs() < 64);
        }
    }

    #[test]
    fn a_44k_file_is_refused_naming_its_rate() {
        let mut b = pcm16_header(1, 1).to_vec();
        b[24..28].copy_from_slice(&44_100u32.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        assert_eq!(read(&b), Err(WavError::UnsupportedRate(44_100)));
    }

    #[test]
    fn garbage_is_not_a_wav() {
        assert!(matches!(read(b"hello"), Err(WavError::NotWav(_))));
        let mut b = pcm16_header(1, 1).to_vec();
        b[16..20].copy_from_slice(&4u32.to_le_bytes());
        assert!(read(&b).is_err());
    }

    proptest::proptest! {
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
            b.extend(bytes);
            let _ = read(&b);
        }
    }
}
