//! Start-up recovery of segments a crash left unlisted. A segment file is renamed into
//! place only once complete and synced, and listed in the store just after; a crash
//! between the two leaves a complete age file the store does not know. This scan finds
//! such files and lists them — size and SHA-256 of the ciphertext, and the duration worked
//! out from the age payload length (the box cannot decrypt) — so retention and export see
//! them. `.part` files (the crash came before the rename: incomplete) are reported for the
//! caller to remove, never listed; files that are not age files are reported and left
//! alone.
//!
//! The one place this crate reads the filesystem: the daemon calls it once at start-up,
//! before recording resumes. It never writes, renames or deletes a file.

use super::{RecordingError, SegmentRecord, SegmentStore};
use crate::wav::SAMPLE_RATE;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What the scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentRecovery {
    /// Complete segment files that were unlisted and are now in the store.
    pub listed: Vec<SegmentRecord>,
    /// `.part` files: cut short by the crash, not recoverable, safe to delete.
    pub incomplete: Vec<PathBuf>,
    /// Segment-named files that are not complete age files, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// age's STREAM chunk: 64 KiB of plaintext plus a 16-byte tag.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;
/// The payload nonce after the header.
const NONCE: u64 = 16;
/// The WAV header the segmenter writes before the samples.
const WAV_HEADER: u64 = 44;
/// Bytes per stereo 16-bit frame.
const FRAME_BYTES: u64 = 4;

/// The number of stereo frames in a sealed segment, from its ciphertext alone.
pub fn sealed_frames(ciphertext: &[u8]) -> Result<u64, String> {
    age::Decryptor::new(ciphertext).map_err(|e| format!("not an age file: {e}"))?;
    let mac_line = ciphertext
        .windows(5)
        .position(|w| w == b"\n--- ")
        .ok_or("age header has no MAC line")?;
    let header_end = ciphertext[mac_line + 1..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| mac_line + 1 + p + 1)
        .ok_or("age header MAC line is not terminated")? as u64;
    let payload = (ciphertext.len() as u64)
        .checked_sub(header_end + NONCE)
        .ok_or("age payload is shorter than its nonce")?;
    let chunks = payload.div_ceil(CHUNK + TAG).max(1);
    let last = payload.saturating_sub((chunks - 1) * (CHUNK + TAG));
    if last < TAG {
        return Err("age payload ends inside a chunk tag: truncated".into());
    }
    let plaintext = payload - chunks * TAG;
    let samples = plaintext
        .checked_sub(WAV_HEADER)
        .ok_or("payload too short for a WAV header")?;
    if samples % FRAME_BYTES != 0 {
        return Err("payload length is not a whole number of stereo frames".into());
    }
    Ok(samples / FRAME_BYTES)
}

/// The segment index of a file named `seg-NNNNN.wav.age`.
fn segment_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".wav.age")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Scans the recordings `directory` (one folder per call, as the daemon writes them) and
/// lists in `store` every complete segment file it does not list yet. Run at start-up,
/// before new recordings begin. Reading is blocking (`std::fs`).
pub async fn list_unlisted_segments<S: SegmentStore + Sync>(
    directory: &Path,
    store: &S,
) -> Result<SegmentRecovery, RecordingError> {
    let mut found = SegmentRecovery::default();
    if !directory.exists() {
        return Ok(found);
    }
    let mut calls: Vec<PathBuf> = std::fs::read_dir(directory)
        .map_err(io_err(directory))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    calls.sort();
    for call_dir in calls {
        let Some(call_id) = call_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let mut files: Vec<(u32, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&call_dir).map_err(io_err(&call_dir))? {
            let path = entry.map_err(io_err(&call_dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".part") {
                found.incomplete.push(path.clone());
            } else if let Some(index) = segment_index(name) {
                files.push((index, path.clone()));
            }
        }
        if files.is_empty() {
            continue;
        }
        files.sort();
        let known = store.segments(call_id).await?;
        // Where each segment ends, by index, to place a recovered one after its
        // predecessor.
        let mut ends: std::collections::BTreeMap<u32, u64> = known
            .iter()
            .map(|r| (r.index, r.start_ms + r.duration_ms))
            .collect();
        for (index, path) in files {
            if known.iter().any(|r| r.index == index) {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let frames = match sealed_frames(&bytes) {
                Ok(f) => f,
                Err(reason) => {
                    found.unreadable.push((path, reason));
                    continue;
                }
            };
            let start_ms = ends.range(..index).next_back().map_or(0, |(_, end)| *end);
            let duration_ms = frames * 1_000 / u64::from(SAMPLE_RATE);
            let record = SegmentRecord {
                call_id: call_id.to_owned(),
                index,
                file_name: format!(
                    "{call_id}/{}",
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                ),
                start_ms,
                duration_ms,
                ciphertext_bytes: bytes.len() as u64,
                sha256_hex: Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            };
            store.record_segment(&record).await?;
            ends.insert(index, start_ms + duration_ms);
            found.listed.push(record);
        }
    }
    found.incomplete.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::RecordingSegmenter;
    use std::future::Future;
    use std::sync::Mutex;

    /// Runs a future whose every await is ready at once (the in-memory store's).
    fn ready<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the in-memory store never waits"),
        }
    }

    #[derive(Default)]
    struct MemoryStore(Mutex<Vec<SegmentRecord>>);

    impl SegmentStore for MemoryStore {
        fn record_segment(
            &self,
            record: &SegmentRecord,
        ) -> impl Future<Output = Result<(), RecordingError>> + Send {
            self.0.lock().unwrap().push(record.clone());
            std::future::ready(Ok(()))
        }
        fn segments(
            &self,
            call_id: &str,
        ) -> impl Future<Output = Result<Vec<SegmentRecord>, RecordingError>> + Send {
            let mut v: Vec<SegmentRecord> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.call_id == call_id)
                .cloned()
                .collect();
            v.sort_by_key(|r| r.index);
            std::future::ready(Ok(v))
        }
    }

    /// Three sealed segments of one call (1 s, 1 s, 0.3 s), 70 000+ bytes each so the age
    /// payload spans two chunks.
    fn sealed() -> Vec<crate::recording::SealedSegment> {
        let id = age::x25519::Identity::generate();
        let mut seg =
            RecordingSegmenter::with_segment_frames(vec![id.to_public()], 20_000).unwrap();
        let audio: Vec<i16> = (0..42_400).map(|i| (i % 300) as i16).collect();
        let mut out = seg.push(&audio, &audio).unwrap();
        out.push(seg.finish().unwrap().unwrap());
        out
    }

    #[test]
    fn frames_are_worked_out_from_the_ciphertext_alone() {
        for s in sealed() {
            assert_eq!(sealed_frames(&s.ciphertext), Ok(u64::from(s.frames)));
        }
    }

    #[test]
    fn a_complete_unlisted_segment_is_listed_and_part_files_and_garbage_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let call = "0190f5a2-call";
        std::fs::create_dir_all(dir.path().join(call)).unwrap();
        let segments = sealed();
        let store = MemoryStore::default();
        for s in &segments {
            std::fs::write(dir.path().join(s.file_name(call)), &s.ciphertext).unwrap();
        }
        // The crash: segments 0 and 1 were listed, segment 2 renamed into place but not
        // listed; a fourth was still a .part file; someone left a broken file too.
        for s in &segments[..2] {
            ready(store.record_segment(&s.record(call))).unwrap();
        }
        let part = dir.path().join(call).join("seg-00003.wav.age.part");
        std::fs::write(&part, &segments[0].ciphertext[..100]).unwrap();
        let broken = dir.path().join(call).join("seg-00007.wav.age");
        std::fs::write(&broken, b"not age").unwrap();

        let found = ready(list_unlisted_segments(dir.path(), &store)).unwrap();
        assert_eq!(found.listed, vec![segments[2].record(call)]);
        assert_eq!(found.incomplete, vec![part]);
        assert_eq!(found.unreadable.len(), 1);
        assert_eq!(found.unreadable[0].0, broken);
        assert!(found.unreadable[0].1.contains("not an age file"));
        assert_eq!(
            ready(store.segments(call)).unwrap(),
            segments.iter().map(|s| s.record(call)).collect::<Vec<_>>(),
            "the store now lists every complete segment, exactly as written"
        );
        // A second start lists nothing more.
        let again = ready(list_unlisted_segments(dir.path(), &store)).unwrap();
        assert!(again.listed.is_empty());
    }

    #[test]
    fn a_truncated_age_file_is_not_listed() {
        let s = &sealed()[0];
        let cut = &s.ciphertext[..s.ciphertext.len() - 10];
        assert!(sealed_frames(cut).is_err());
        assert!(sealed_frames(&s.ciphertext[..40]).is_err());
    }

    #[test]
    fn a_missing_directory_is_nothing_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let found = ready(list_unlisted_segments(&dir.path().join("absent"), &store)).unwrap();
        assert_eq!(found, SegmentRecovery::default());
    }
}
