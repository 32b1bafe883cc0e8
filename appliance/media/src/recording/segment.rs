//! Cutting a call's two channels into sealed segments.
//!
//! Audio for the current segment is held in memory (16-bit stereo: 32 KB per second, about
//! 1.9 MB for a 60 s segment) because a WAV header states its length up front and an age
//! stream cannot be rewritten; when the segment is full it is encrypted in one go into a
//! complete age file. A crash therefore loses at most the segment in progress.

use super::{RecordingError, SegmentRecord};
use crate::wav::{self, SAMPLE_RATE};
use sha2::{Digest, Sha256};
use std::io::Write;

/// One sealed segment, ready to be written to disk and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub index: u32,
    /// Offset of the first frame from the start of the recording, in samples at 8 kHz.
    pub start_frame: u64,
    pub frames: u32,
    /// The complete age file.
    pub ciphertext: Vec<u8>,
    pub sha256: [u8; 32],
}

impl SealedSegment {
    /// The file name the daemon stores this segment under.
    pub fn file_name(&self, call_id: &str) -> String {
        format!("{call_id}/seg-{:05}.wav.age", self.index)
    }

    /// The record the store keeps for it.
    pub fn record(&self, call_id: &str) -> SegmentRecord {
        let ms = |frames: u64| frames * 1_000 / u64::from(SAMPLE_RATE);
        SegmentRecord {
            call_id: call_id.to_owned(),
            index: self.index,
            file_name: self.file_name(call_id),
            start_ms: ms(self.start_frame),
            duration_ms: ms(u64::from(self.frames)),
            ciphertext_bytes: self.ciphertext.len() as u64,
            sha256_hex: self.sha256.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Accumulates one call's stereo audio and seals a segment every `segment_frames` frames.
pub struct RecordingSegmenter {
    recipients: Vec<age::x25519::Recipient>,
    segment_frames: u32,
    /// Interleaved left/right samples of the segment in progress.
    pending: Vec<i16>,
    next_index: u32,
    frames_sealed: u64,
}

impl std::fmt::Debug for RecordingSegmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSegmenter")
            .field("recipients", &self.recipients.len())
            .field("segment_frames", &self.segment_frames)
            .field("pending_frames", &(self.pending.len() / 2))
            .field("next_index", &self.next_index)
            .finish()
    }
}

impl RecordingSegmenter {
    /// A segmenter sealing to `recipients` every `segment_seconds` of audio.
    pub fn new(
        recipients: Vec<age::x25519::Recipient>,
        segment_seconds: u32,
    ) -> Result<Self, RecordingError> {
        Self::with_segment_frames(recipients, segment_seconds.saturating_mul(SAMPLE_RATE))
    }

    /// As [`Self::new`], with the segment length in frames (for tests and tuning).
    pub fn with_segment_frames(
        recipients: Vec<age::x25519::Recipient>,
        segment_frames: u32,
    ) -> Result<Self, RecordingError> {
        if recipients.is_empty() {
            return Err(RecordingError::NoRecipients);
        }
        if segment_frames == 0 {
            return Err(RecordingError::EmptySegment);
        }
        Ok(RecordingSegmenter {
            recipients,
            segment_frames,
            pending: Vec::with_capacity(segment_frames as usize * 2),
            next_index: 0,
            frames_sealed: 0,
        })
    }

    /// Frames waiting in the segment in progress.
    pub fn pending_frames(&self) -> u32 {
        (self.pending.len() / 2) as u32
    }

    /// Adds audio: `customer` goes left, `agent` right. The shorter side is padded with
    /// silence so the channels stay aligned. Returns the segments this filled, sealed.
    pub fn push(
        &mut self,
        customer: &[i16],
        agent: &[i16],
    ) -> Result<Vec<SealedSegment>, RecordingError> {
        let frames = customer.len().max(agent.len());
        let mut sealed = Vec::new();
        for i in 0..frames {
            self.pending.push(customer.get(i).copied().unwrap_or(0));
            self.pending.push(agent.get(i).copied().unwrap_or(0));
            if self.pending.len() / 2 == self.segment_frames as usize {
                sealed.push(self.seal()?);
            }
        }
        Ok(sealed)
    }

    /// Ends the recording, sealing the partial last segment if it holds any audio.
    pub fn finish(mut self) -> Result<Option<SealedSegment>, RecordingError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        self.seal().map(Some)
    }

    fn seal(&mut self) -> Result<SealedSegment, RecordingError> {
        let frames = (self.pending.len() / 2) as u32;
        let mut plaintext = Vec::with_capacity(44 + self.pending.len() * 2);
        plaintext.extend_from_slice(&wav::pcm16_header(2, frames));
        for s in &self.pending {
            plaintext.extend_from_slice(&s.to_le_bytes());
        }
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| RecordingError::Encrypt(e.to_string()))?;
        let mut ciphertext = Vec::with_capacity(plaintext.len() + plaintext.len() / 4096 + 512);
        let encrypt_err = |e: std::io::Error| RecordingError::Encrypt(e.to_string());
        let mut writer = encryptor
            .wrap_output(&mut ciphertext)
            .map_err(encrypt_err)?;
        writer.write_all(&plaintext).map_err(encrypt_err)?;
        writer.finish().map_err(encrypt_err)?;
        let sha256: [u8; 32] = Sha256::digest(&ciphertext).into();
        let segment = SealedSegment {
            index: self.next_index,
            start_frame: self.frames_sealed,
            frames,
            ciphertext,
            sha256,
        };
        self.next_index += 1;
        self.frames_sealed += u64::from(frames);
        self.pending.clear();
        Ok(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::parse_recipients;
    use std::io::Read;

    fn identity() -> age::x25519::Identity {
        age::x25519::Identity::generate()
    }

    fn decrypt(id: &age::x25519::Identity, ciphertext: &[u8]) -> Vec<u8> {
        let d = age::Decryptor::new(ciphertext).unwrap();
        let mut r = d
            .decrypt(std::iter::once(id as &dyn age::Identity))
            .unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn segments_are_cut_at_the_configured_length_and_each_decrypts_alone() {
        let id = identity();
        let mut seg = RecordingSegmenter::with_segment_frames(vec![id.to_public()], 1_000).unwrap();
        let customer: Vec<i16> = (0..2_500).map(|i| i as i16).collect();
        let agent: Vec<i16> = (0..2_500).map(|i| -(i as i16)).collect();
        let mut sealed = seg.push(&customer, &agent).unwrap();
        assert_eq!(sealed.len(), 2);
        assert_eq!(seg.pending_frames(), 500);
        sealed.push(seg.finish().unwrap().unwrap());
        let mut left = Vec::new();
        let mut right = Vec::new();
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(s.index, i as u32);
            assert_eq!(s.start_frame, 1_000 * i as u64);
            assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&s.ciphertext)));
            let w = wav::read(&decrypt(&id, &s.ciphertext)).unwrap();
            assert_eq!(w.channels, 2);
            left.extend(w.channel(0));
            right.extend(w.channel(1));
        }
        assert_eq!(left, customer);
        assert_eq!(right, agent);
        let rec = sealed[2].record("call-1");
        assert_eq!((rec.start_ms, rec.duration_ms), (250, 62));
        assert_eq!(rec.file_name, "call-1/seg-00002.wav.age");
        assert_eq!(rec.ciphertext_bytes, sealed[2].ciphertext.len() as u64);
    }

    #[test]
    fn every_recipient_can_decrypt_and_no_one_else() {
        let (a, b, stranger) = (identity(), identity(), identity());
        let mut seg =
            RecordingSegmenter::with_segment_frames(vec![a.to_public(), b.to_public()], 10)
                .unwrap();
        let s = seg.push(&[1; 10], &[2; 10]).unwrap().remove(0);
        assert!(wav::read(&decrypt(&a, &s.ciphertext)).is_ok());
        assert!(wav::read(&decrypt(&b, &s.ciphertext)).is_ok());
        let d = age::Decryptor::new(&s.ciphertext[..]).unwrap();
        assert!(d
            .decrypt(std::iter::once(&stranger as &dyn age::Identity))
            .is_err());
    }

    #[test]
    fn the_shorter_channel_is_padded_with_silence() {
        let id = identity();
        let mut seg = RecordingSegmenter::with_segment_frames(vec![id.to_public()], 100).unwrap();
        seg.push(&[7; 3], &[9; 1]).unwrap();
        let s = seg.finish().unwrap().unwrap();
        let w = wav::read(&decrypt(&id, &s.ciphertext)).unwrap();
        assert_eq!(w.samples, [7, 9, 7, 0, 7, 0]);
    }

    #[test]
    fn finishing_an_empty_recording_seals_nothing() {
        let id = identity();
        let seg = RecordingSegmenter::with_segment_frames(vec![id.to_public()], 100).unwrap();
        assert!(seg.finish().unwrap().is_none());
    }

    #[test]
    fn recipients_are_checked_and_identities_refused() {
        let id = identity();
        let public = id.to_public().to_string();
        assert_eq!(
            parse_recipients(std::slice::from_ref(&public))
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            parse_recipients(&[]),
            Err(RecordingError::NoRecipients)
        ));
        let secret = {
            use age::secrecy::ExposeSecret;
            id.to_string().expose_secret().to_owned()
        };
        assert!(matches!(
            parse_recipients(&[public.clone(), secret]),
            Err(RecordingError::IdentityNotAllowed { index: 1 })
        ));
        let err = parse_recipients(&[public, "age1notakey".into()]).unwrap_err();
        assert!(
            matches!(err, RecordingError::BadRecipient { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("#1"));
        assert!(matches!(
            RecordingSegmenter::with_segment_frames(vec![], 10),
            Err(RecordingError::NoRecipients)
        ));
    }
}
