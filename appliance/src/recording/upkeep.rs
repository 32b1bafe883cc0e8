//! The recordings' housekeeping in the running daemon: the start-up scan that lists what a
//! crash left unlisted, and the periodic task that applies retention and watches the disk.
//!
//! Owns: when [`recover_at_start`] runs (before any call is recorded) and the rhythm of
//! [`RecordingUpkeep`] (disk guard and retention passes), publishing the disk state for
//! whoever decides to start calls. Must not: delete a complete segment outside retention, or
//! decide on its own to stop a call in progress (calls in progress keep recording).

use super::{apply_retention, check_disk, SqliteSegmentStore, ValidRecording};
use callgate_common::time::UnixMillis;
use callgate_media::recording::{
    list_unlisted_segments, DiskGuard, DiskState, RecordingError, SegmentRecovery,
};
use std::time::Duration;
use tokio::sync::watch;

/// Lists in the store every complete segment a crash left unlisted, and deletes the `.part`
/// files (segments cut short, which cannot be recovered: the box holds no key that reads them
/// and they are not complete age files). Run before recording resumes. Unreadable
/// segment-named files are logged and left in place for an operator.
pub async fn recover_at_start(
    settings: &ValidRecording,
    store: &SqliteSegmentStore,
) -> Result<SegmentRecovery, RecordingError> {
    let found = list_unlisted_segments(&settings.directory, store).await?;
    for record in &found.listed {
        tracing::warn!(
            call = %record.call_id,
            segment = record.index,
            file = %record.file_name,
            "recording segment left unlisted by a crash is now listed"
        );
    }
    for part in &found.incomplete {
        match std::fs::remove_file(part) {
            Ok(()) => tracing::warn!(
                file = %part.display(),
                "unfinished recording segment from before a crash deleted"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RecordingError::Io {
                    path: part.clone(),
                    source,
                })
            }
        }
    }
    for (file, reason) in &found.unreadable {
        tracing::error!(file = %file.display(), %reason,
            "recording file is not a complete age file; left in place for an operator");
    }
    Ok(found)
}

/// How often the upkeep task works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpkeepRhythm {
    /// Between two measurements of the recordings filesystem.
    pub disk_every: Duration,
    /// Between two retention passes.
    pub retention_every: Duration,
}

impl Default for UpkeepRhythm {
    fn default() -> Self {
        UpkeepRhythm {
            disk_every: Duration::from_secs(30),
            retention_every: Duration::from_secs(3_600),
        }
    }
}

/// The running upkeep task: disk guard and retention for the recordings directory.
#[derive(Debug)]
pub struct RecordingUpkeep {
    disk: watch::Receiver<DiskState>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpkeep {
    /// Starts the task; the first disk measurement and retention pass run at once.
    pub fn start(
        settings: ValidRecording,
        store: SqliteSegmentStore,
        rhythm: UpkeepRhythm,
    ) -> RecordingUpkeep {
        let (tx, disk) = watch::channel(DiskState::Healthy);
        let task = tokio::spawn(async move {
            if let Err(e) = std::fs::create_dir_all(&settings.directory) {
                tracing::error!(directory = %settings.directory.display(), error = %e,
                    "recordings directory cannot be created; the disk guard cannot measure it");
            }
            let mut guard = DiskGuard::new(settings.disk);
            let mut disk_tick = tokio::time::interval(rhythm.disk_every);
            let mut retention_tick = tokio::time::interval(rhythm.retention_every);
            disk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            retention_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = disk_tick.tick() => match check_disk(&mut guard, &settings.directory) {
                        Ok(state) => {
                            metrics::gauge!("callgate_recording_disk_state").set(match state {
                                DiskState::Healthy => 0.0,
                                DiskState::Alarm => 1.0,
                                DiskState::RefuseNewCalls => 2.0,
                            });
                            tx.send_if_modified(|s| std::mem::replace(s, state) != state);
                        }
                        Err(e) => tracing::error!(error = %e, "recording disk not measured"),
                    },
                    _ = retention_tick.tick() => {
                        match apply_retention(&store, &settings.directory, UnixMillis::now(), settings.retention_days).await {
                            Ok(r) if r.segments_deleted > 0 => tracing::info!(
                                segments = r.segments_deleted,
                                bytes = r.bytes_freed,
                                days = settings.retention_days,
                                "recording segments past retention deleted"
                            ),
                            Ok(_) => {}
                            Err(e) => tracing::error!(error = %e, "recording retention pass failed"),
                        }
                    }
                }
            }
        });
        RecordingUpkeep { disk, task }
    }

    /// The disk state as last measured; changes are signalled.
    pub fn disk_state(&self) -> watch::Receiver<DiskState> {
        self.disk.clone()
    }

    /// Stops the task.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_media::recording::{DiskThresholds, SegmentRecord, SegmentStore};
    use std::path::Path;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn settings(dir: &Path, alarm: u8, refuse: u8) -> ValidRecording {
        let mut v = super::super::RecordingSettings {
            recipients: vec![RECIPIENT.into()],
            directory: Some(dir.join("recordings")),
            retention_days: 1,
            ..Default::default()
        }
        .validate(dir)
        .unwrap();
        v.disk = DiskThresholds {
            alarm_at: f64::from(alarm) / 100.0,
            refuse_at: f64::from(refuse) / 100.0,
            hysteresis: 0.0,
        };
        v
    }

    async fn wait_for(disk: &mut watch::Receiver<DiskState>, want: DiskState) {
        tokio::time::timeout(Duration::from_secs(60), disk.wait_for(|s| *s == want))
            .await
            .expect("the upkeep task publishes the disk state")
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_disk_refuses_new_calls_and_old_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Store::open(dir.path()).await.unwrap().pool().clone();
        let store = SqliteSegmentStore::new(pool.clone());
        // Thresholds at 0 %: any real filesystem is "full".
        let full = settings(dir.path(), 0, 0);
        let file_name = "call-old/seg-00000.wav.age".to_owned();
        let path = full.directory.join(&file_name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"sealed").unwrap();
        store
            .record_segment(&SegmentRecord {
                call_id: "call-old".into(),
                index: 0,
                file_name,
                start_ms: 0,
                duration_ms: 60_000,
                ciphertext_bytes: 6,
                sha256_hex: "b".repeat(64),
            })
            .await
            .unwrap();
        sqlx::query("UPDATE recording_segments SET finished_at_ms = 0")
            .execute(&pool)
            .await
            .unwrap();
        let upkeep = RecordingUpkeep::start(full, store.clone(), UpkeepRhythm::default());
        wait_for(&mut upkeep.disk_state(), DiskState::RefuseNewCalls).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !store.segments("call-old").await.unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "retention never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!path.exists(), "the file goes with its row");
        upkeep.stop().await;

        // Thresholds above 100 %: healthy.
        let mut relaxed = settings(dir.path(), 98, 99);
        relaxed.disk.alarm_at = 1.01;
        relaxed.disk.refuse_at = 1.02;
        let upkeep = RecordingUpkeep::start(relaxed, store, UpkeepRhythm::default());
        let mut disk = upkeep.disk_state();
        // Give it its first measurement, then it must still say healthy.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*disk.borrow_and_update(), DiskState::Healthy);
        upkeep.stop().await;
    }
}
