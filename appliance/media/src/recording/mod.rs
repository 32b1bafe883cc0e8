//! Encrypted call recording: stereo 8 kHz WAV (customer left, agent or robot right), cut into
//! segments of about a minute, each sealed as a complete age file to the organisation's X25519
//! recipients.
//!
//! Owns: turning two channels of linear audio into sealed segments ([`segment`]), the recipient
//! list (public keys only: an identity is refused, the box must never be able to decrypt), and
//! the [`SegmentStore`] contract by which the daemon keeps the segment list, sizes and SHA-256
//! of every ciphertext, and the disk guard ([`disk`]). Talks to: the daemon's recording
//! driver, which writes the ciphertext to disk and implements the store on SQLite. Must not:
//! write files, read the clock or hold any key that decrypts. The one read of the disk is
//! [`recover`], the start-up scan for segments a crash left unlisted.

pub mod disk;
pub mod recover;
pub mod segment;

pub use disk::{DiskGuard, DiskState, DiskThresholds};
pub use recover::{list_unlisted_segments, SegmentRecovery};
pub use segment::{RecordingSegmenter, SealedSegment};

use std::future::Future;
use std::path::PathBuf;

/// Why recording failed or a recording setting was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// No recipient configured: a recording nobody can decrypt is refused.
    #[error("no recording recipients configured")]
    NoRecipients,
    /// A recipient entry is not an `age1...` X25519 public key.
    #[error("recording recipient #{index} `{shown}` is not an age X25519 public key: {reason}")]
    BadRecipient {
        index: usize,
        shown: String,
        reason: String,
    },
    /// An `AGE-SECRET-KEY-...` identity was configured where a recipient belongs.
    #[error("recording recipient #{index} is a secret identity; the box must only hold public recipients")]
    IdentityNotAllowed { index: usize },
    /// Zero-length segments were asked for.
    #[error("segment length must be at least one frame")]
    EmptySegment,
    /// The age library refused to encrypt.
    #[error("encrypting a segment failed: {0}")]
    Encrypt(String),
    /// Writing or syncing a segment file failed; the segment was not recorded as finished.
    #[error("writing recording segment {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The segment store refused the record; the ciphertext is on disk but not listed.
    #[error("recording the segment in the store: {0}")]
    Store(String),
}

/// Parses the configured recipients (`age1...`), naming the first bad one.
pub fn parse_recipients(entries: &[String]) -> Result<Vec<age::x25519::Recipient>, RecordingError> {
    if entries.is_empty() {
        return Err(RecordingError::NoRecipients);
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let entry = entry.trim();
            if entry.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                return Err(RecordingError::IdentityNotAllowed { index });
            }
            entry
                .parse::<age::x25519::Recipient>()
                .map_err(|reason| RecordingError::BadRecipient {
                    index,
                    shown: entry.chars().take(20).collect(),
                    reason: reason.to_owned(),
                })
        })
        .collect()
}

/// One finished segment as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    /// The call this segment belongs to (its `CallId` as text).
    pub call_id: String,
    /// 0-based position within the call.
    pub index: u32,
    /// File name relative to the recordings directory.
    pub file_name: String,
    /// Offset of the first sample from the start of the recording, ms.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Size of the age file.
    pub ciphertext_bytes: u64,
    /// SHA-256 of the age file, lowercase hex.
    pub sha256_hex: String,
}

/// Where the daemon keeps the list of finished segments. Implementations must make a record
/// durable before the future resolves.
pub trait SegmentStore {
    /// Adds a finished segment. Re-recording the same `(call_id, index)` with the same hash is
    /// harmless; with a different hash it is an error.
    fn record_segment(
        &self,
        record: &SegmentRecord,
    ) -> impl Future<Output = Result<(), RecordingError>> + Send;

    /// The finished segments of a call, in order.
    fn segments(
        &self,
        call_id: &str,
    ) -> impl Future<Output = Result<Vec<SegmentRecord>, RecordingError>> + Send;
}
