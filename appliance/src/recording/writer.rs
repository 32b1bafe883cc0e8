//! One call's recording: feeds audio to the sealing core and makes each sealed segment
//! durable (file, then directory entry, then the store row), in that order.

use super::ValidRecording;
use callgate_common::ids::CallId;
use callgate_media::recording::{
    RecordingError, RecordingSegmenter, SealedSegment, SegmentRecord, SegmentStore,
};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Records one call into sealed segments under the recordings directory.
#[derive(Debug)]
pub struct CallRecorder<S> {
    call_id: String,
    directory: PathBuf,
    segmenter: RecordingSegmenter,
    store: S,
    finished: Vec<SegmentRecord>,
}

impl<S: SegmentStore + Sync> CallRecorder<S> {
    /// Starts recording `call` with the configured recipients and segment length.
    pub fn start(
        call: CallId,
        settings: &ValidRecording,
        store: S,
    ) -> Result<Self, RecordingError> {
        Ok(CallRecorder {
            call_id: call.to_string(),
            directory: settings.directory.clone(),
            segmenter: RecordingSegmenter::new(
                settings.recipients.clone(),
                settings.segment_seconds,
            )?,
            store,
            finished: Vec::new(),
        })
    }

    /// As [`Self::start`] with the segment length in frames (tests, the `record-tone` tool).
    pub fn start_with_segment_frames(
        call: CallId,
        settings: &ValidRecording,
        segment_frames: u32,
        store: S,
    ) -> Result<Self, RecordingError> {
        Ok(CallRecorder {
            call_id: call.to_string(),
            directory: settings.directory.clone(),
            segmenter: RecordingSegmenter::with_segment_frames(
                settings.recipients.clone(),
                segment_frames,
            )?,
            store,
            finished: Vec::new(),
        })
    }

    /// The call's id as recorded.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Adds customer (left) and agent (right) audio; returns the segments this finished,
    /// each already durable and listed.
    pub async fn push(
        &mut self,
        customer: &[i16],
        agent: &[i16],
    ) -> Result<Vec<SegmentRecord>, RecordingError> {
        let sealed = self.segmenter.push(customer, agent)?;
        let mut done = Vec::with_capacity(sealed.len());
        for segment in sealed {
            let record = persist(&self.directory, &self.call_id, &self.store, segment).await?;
            self.finished.push(record.clone());
            done.push(record);
        }
        Ok(done)
    }

    /// Ends the call's recording: seals and stores the last partial segment. Returns every
    /// segment of the call.
    pub async fn finish(self) -> Result<Vec<SegmentRecord>, RecordingError> {
        let CallRecorder {
            call_id,
            directory,
            segmenter,
            store,
            mut finished,
        } = self;
        if let Some(last) = segmenter.finish()? {
            finished.push(persist(&directory, &call_id, &store, last).await?);
        }
        Ok(finished)
    }
}

/// Makes one sealed segment durable, then lists it.
async fn persist<S: SegmentStore + Sync>(
    directory: &Path,
    call_id: &str,
    store: &S,
    segment: SealedSegment,
) -> Result<SegmentRecord, RecordingError> {
    let record = segment.record(call_id);
    let path = directory.join(&record.file_name);
    let ciphertext = segment.ciphertext;
    let target = path.clone();
    tokio::task::spawn_blocking(move || write_durably(&target, &ciphertext))
        .await
        .map_err(|e| RecordingError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| RecordingError::Io { path, source })?;
    store.record_segment(&record).await?;
    tracing::debug!(call = %call_id, segment = record.index, bytes = record.ciphertext_bytes, "recording segment stored");
    Ok(record)
}

/// Writes `bytes` to `path` so that after a crash the file is either absent or complete:
/// `<path>.part`, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("segment path has no directory"))?;
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut f = File::create(&part)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&part, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Left channel of the test recording: 440 Hz.
pub const TEST_TONE_LEFT_HZ: f64 = 440.0;
/// Right channel of the test recording: 1 kHz.
pub const TEST_TONE_RIGHT_HZ: f64 = 1_000.0;

/// Records `seconds` of a known test tone (440 Hz customer side, 1 kHz agent side) as a call
/// with a new id, as fast as the disk allows, calling `on_segment` after each segment is
/// durable. For technicians checking the recipients end to end, and for crash tests.
pub async fn record_test_tone<S: SegmentStore + Sync>(
    settings: &ValidRecording,
    store: S,
    seconds: u32,
    mut on_segment: impl FnMut(&SegmentRecord),
) -> Result<Vec<SegmentRecord>, RecordingError> {
    use callgate_media::tone::ToneGenerator;
    let mut recorder = CallRecorder::start(CallId::new_v7(), settings, store)?;
    let mut left = ToneGenerator::new(TEST_TONE_LEFT_HZ, 8_000);
    let mut right = ToneGenerator::new(TEST_TONE_RIGHT_HZ, 8_000);
    // 20 ms frames, as the media engine delivers them.
    for _ in 0..seconds * 50 {
        for record in recorder
            .push(&left.next_samples(160), &right.next_samples(160))
            .await?
        {
            on_segment(&record);
        }
    }
    let before = recorder.finished.len();
    let all = recorder.finish().await?;
    for record in &all[before..] {
        on_segment(record);
    }
    Ok(all)
}

/// The `record-tone` command: records the test tone and prints one line per durable segment
/// (`segment <index> <file> <bytes> <sha256>`), then a summary.
pub async fn record_tone_command(
    settings: &ValidRecording,
    store: &crate::store::Store,
    seconds: u32,
) -> Result<Vec<SegmentRecord>, RecordingError> {
    let segments = super::SqliteSegmentStore::new(store.pool().clone());
    let all = record_test_tone(settings, segments, seconds, |r| {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the recording.
        let _ = writeln!(
            out,
            "segment {} {} {} {}",
            r.index, r.file_name, r.ciphertext_bytes, r.sha256_hex
        );
        let _ = out.flush();
    })
    .await?;
    println!(
        "recorded {} segment(s) under {}",
        all.len(),
        settings.directory.display()
    );
    Ok(all)
}
