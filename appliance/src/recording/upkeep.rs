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
    held: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

/// Why new calls are held for `state` of the disk under `settings`, or `None` if they may
/// start.
fn hold_reason(state: DiskState, settings: &ValidRecording) -> Option<String> {
    (state == DiskState::RefuseNewCalls).then(|| {
        let floor_mb = settings.disk.refuse_below_free_bytes / 1_000_000;
        format!(
            "the recordings disk is nearly full (new calls stop at {:.0}% used or under {floor_mb} MB free on {}); free space, raise recording.disk_refuse_percent or lower recording.disk_refuse_free_mb",
            settings.disk.refuse_at * 100.0,
            settings.directory.display()
        )
    })
}

fn publish(
    state: DiskState,
    settings: &ValidRecording,
    disk: &watch::Sender<DiskState>,
    held: &watch::Sender<Option<String>>,
) {
    metrics::gauge!("callgate_recording_disk_state").set(match state {
        DiskState::Healthy => 0.0,
        DiskState::Alarm => 1.0,
        DiskState::RefuseNewCalls => 2.0,
    });
    if disk.send_if_modified(|s| std::mem::replace(s, state) != state) {
        let reason = hold_reason(state, settings);
        held.send_if_modified(|h| std::mem::replace(h, reason.clone()) != reason);
    }
}

impl RecordingUpkeep {
    /// Measures the disk once (so the state read right after this is the real one: no call
    /// starts on a full disk in the first moments), then starts the task, whose first
    /// retention pass runs at once.
    pub fn start(
        settings: ValidRecording,
        store: SqliteSegmentStore,
        rhythm: UpkeepRhythm,
    ) -> RecordingUpkeep {
        let (disk_tx, disk) = watch::channel(DiskState::Healthy);
        let (held_tx, held) = watch::channel(None);
        if let Err(e) = std::fs::create_dir_all(&settings.directory) {
            tracing::error!(directory = %settings.directory.display(), error = %e,
                "recordings directory cannot be created; the disk guard cannot measure it");
        }
        let mut guard = DiskGuard::new(settings.disk);
        match check_disk(&mut guard, &settings.directory) {
            Ok(state) => publish(state, &settings, &disk_tx, &held_tx),
            Err(e) => tracing::error!(error = %e, "recording disk not measured"),
        }
        let task = tokio::spawn(async move {
            let mut disk_tick = tokio::time::interval_at(
                tokio::time::Instant::now() + rhythm.disk_every,
                rhythm.disk_every,
            );
            let mut retention_tick = tokio::time::interval(rhythm.retention_every);
            disk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            retention_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = disk_tick.tick() => match check_disk(&mut guard, &settings.directory) {
                        Ok(state) => publish(state, &settings, &disk_tx, &held_tx),
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
        RecordingUpkeep { disk, held, task }
    }

    /// The disk state as last measured; changes are signalled.
    pub fn disk_state(&self) -> watch::Receiver<DiskState> {
        self.disk.clone()
    }

    /// Why no new call may start because of the recordings disk (`None` while calls may
    /// start), for the dialer and the inbound lines; changes are signalled.
    pub fn new_calls_held(&self) -> watch::Receiver<Option<String>> {
        self.held.clone()
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
            refuse_below_free_bytes: 0,
        };
        v
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
        // Measured before `start` returns: whoever starts calls reads the real state at once.
        assert_eq!(*upkeep.disk_state().borrow(), DiskState::RefuseNewCalls);
        let held = upkeep.new_calls_held().borrow().clone().unwrap_or_default();
        assert!(held.contains("recordings disk is nearly full"), "{held}");
        assert!(held.contains("recording.disk_refuse_percent"), "{held}");
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
        assert_eq!(*upkeep.disk_state().borrow(), DiskState::Healthy);
        assert_eq!(*upkeep.new_calls_held().borrow(), None);
        upkeep.stop().await;
    }
}
