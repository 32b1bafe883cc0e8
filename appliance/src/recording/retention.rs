//! Retention and the disk guard on the box: deleting segments older than the configured days
//! unless their call is on legal hold, and measuring the recordings filesystem.

use super::SqliteSegmentStore;
use callgate_common::time::UnixMillis;
use callgate_media::recording::{DiskGuard, DiskState, RecordingError};
use std::path::Path;

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: u64,
    pub bytes_freed: u64,
}

/// Deletes every segment finished more than `retention_days` before `now` whose call is not on
/// legal hold: the file first, then its row, so a crash in between leaves a row whose file is
/// already gone, which the next pass clears.
pub async fn apply_retention(
    store: &SqliteSegmentStore,
    directory: &Path,
    now: UnixMillis,
    retention_days: u32,
) -> Result<RetentionReport, RecordingError> {
    let cutoff = now.plus_millis(-i64::from(retention_days) * 86_400_000);
    let mut report = RetentionReport::default();
    for segment in store.expired_segments(cutoff).await? {
        let path = directory.join(&segment.file_name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => report.bytes_freed += segment.ciphertext_bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RecordingError::Io { path, source }),
        }
        store
            .forget_segment(&segment.call_id, segment.index)
            .await?;
        report.segments_deleted += 1;
    }
    Ok(report)
}

/// Bytes used and total on the filesystem holding `directory`.
pub fn filesystem_usage(directory: &Path) -> Result<(u64, u64), RecordingError> {
    let st = rustix::fs::statvfs(directory).map_err(|e| RecordingError::Io {
        path: directory.to_path_buf(),
        source: e.into(),
    })?;
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    // What an unprivileged writer can still use counts as free.
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    Ok((total.saturating_sub(free), total))
}

/// Measures the recordings filesystem and updates `guard`, logging each change of state.
pub fn check_disk(guard: &mut DiskGuard, directory: &Path) -> Result<DiskState, RecordingError> {
    let (used, total) = filesystem_usage(directory)?;
    if let Some(state) = guard.observe(used, total) {
        match state {
            DiskState::Healthy => tracing::info!(used, total, "recording disk healthy again"),
            DiskState::Alarm => {
                tracing::warn!(used, total, "recording disk above its high-water mark")
            }
            DiskState::RefuseNewCalls => {
                tracing::error!(
                    used,
                    total,
                    "recording disk nearly full: no new calls start"
                )
            }
        }
    }
    Ok(guard.state())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_media::recording::{DiskThresholds, SegmentRecord, SegmentStore};

    async fn seed(store: &SqliteSegmentStore, dir: &Path, call: &str, index: u32) {
        let file_name = format!("{call}/seg-{index:05}.wav.age");
        let path = dir.join(&file_name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"age-encryption.org/v1\n...").unwrap();
        store
            .record_segment(&SegmentRecord {
                call_id: call.into(),
                index,
                file_name,
                start_ms: 0,
                duration_ms: 60_000,
                ciphertext_bytes: 25,
                sha256_hex: "a".repeat(64),
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn old_segments_go_unless_their_call_is_on_legal_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteSegmentStore::new(Store::open(dir.path()).await.unwrap().pool().clone());
        let rec = dir.path().join("recordings");
        seed(&store, &rec, "call-a", 0).await;
        seed(&store, &rec, "call-a", 1).await;
        seed(&store, &rec, "call-held", 0).await;
        store
            .place_legal_hold("call-held", "case 42")
            .await
            .unwrap();

        // Within the retention period nothing goes.
        let r = apply_retention(&store, &rec, UnixMillis::now(), 30)
            .await
            .unwrap();
        assert_eq!(r, RetentionReport::default());

        // 31 days on, the unheld call's segments go, files and rows.
        let later = UnixMillis::now().plus_millis(31 * 86_400_000);
        let r = apply_retention(&store, &rec, later, 30).await.unwrap();
        assert_eq!((r.segments_deleted, r.bytes_freed), (2, 50));
        assert!(store.segments("call-a").await.unwrap().is_empty());
        assert!(!rec.join("call-a/seg-00000.wav.age").exists());
        assert_eq!(store.segments("call-held").await.unwrap().len(), 1);
        assert!(rec.join("call-held/seg-00000.wav.age").exists());

        // Released, it ages out too.
        store.release_legal_hold("call-held").await.unwrap();
        let r = apply_retention(&store, &rec, later, 30).await.unwrap();
        assert_eq!(r.segments_deleted, 1);
    }

    #[tokio::test]
    async fn a_row_whose_file_is_already_gone_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteSegmentStore::new(Store::open(dir.path()).await.unwrap().pool().clone());
        let rec = dir.path().join("recordings");
        seed(&store, &rec, "call-b", 0).await;
        std::fs::remove_file(rec.join("call-b/seg-00000.wav.age")).unwrap();
        let later = UnixMillis::now().plus_millis(2 * 86_400_000);
        let r = apply_retention(&store, &rec, later, 1).await.unwrap();
        assert_eq!((r.segments_deleted, r.bytes_freed), (1, 0));
        assert!(store.segments("call-b").await.unwrap().is_empty());
    }

    #[test]
    fn the_real_filesystem_is_measured_and_judged() {
        let dir = tempfile::tempdir().unwrap();
        let (used, total) = filesystem_usage(dir.path()).unwrap();
        assert!(total > 0 && used <= total, "{used}/{total}");
        // Thresholds at 0 % make any real disk "full": the guard must say so.
        let mut strict = DiskGuard::new(DiskThresholds {
            alarm_at: 0.0,
            refuse_at: 0.0,
            hysteresis: 0.0,
            refuse_below_free_bytes: 0,
        });
        assert_eq!(
            check_disk(&mut strict, dir.path()).unwrap(),
            DiskState::RefuseNewCalls
        );
        let mut relaxed = DiskGuard::new(DiskThresholds {
            alarm_at: 1.01,
            refuse_at: 1.02,
            hysteresis: 0.0,
            refuse_below_free_bytes: 0,
        });
        assert_eq!(
            check_disk(&mut relaxed, dir.path()).unwrap(),
            DiskState::Healthy
        );
        assert!(filesystem_usage(&dir.path().join("missing")).is_err());
    }
}
