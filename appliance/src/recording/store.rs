//! The segment list in the appliance's SQLite store (`recording_segments`).

use callgate_common::time::UnixMillis;
use callgate_media::recording::{RecordingError, SegmentRecord, SegmentStore};
use sqlx::SqlitePool;

/// [`SegmentStore`] on the box's database. Each insert commits on its own with the pool's
/// `synchronous=FULL`, so a listed segment survives a power cut.
#[derive(Debug, Clone)]
pub struct SqliteSegmentStore {
    pool: SqlitePool,
}

impl SqliteSegmentStore {
    /// A store on the appliance's pool (migrations already applied by `Store::open`).
    pub fn new(pool: SqlitePool) -> SqliteSegmentStore {
        SqliteSegmentStore { pool }
    }
}

fn store_err(e: sqlx::Error) -> RecordingError {
    RecordingError::Store(e.to_string())
}

impl SqliteSegmentStore {
    /// Puts a call on legal hold: retention keeps its segments until the hold is released.
    pub async fn place_legal_hold(
        &self,
        call_id: &str,
        reason: &str,
    ) -> Result<(), RecordingError> {
        sqlx::query(
            "INSERT INTO recording_holds (call_id, reason, placed_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (call_id) DO UPDATE SET reason = excluded.reason",
        )
        .bind(call_id)
        .bind(reason)
        .bind(UnixMillis::now().0)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    /// Releases a legal hold; the call's segments then age out normally.
    pub async fn release_legal_hold(&self, call_id: &str) -> Result<(), RecordingError> {
        sqlx::query("DELETE FROM recording_holds WHERE call_id = ?")
            .bind(call_id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Segments finished before `cutoff` whose call is not on legal hold.
    pub async fn expired_segments(
        &self,
        cutoff: UnixMillis,
    ) -> Result<Vec<SegmentRecord>, RecordingError> {
        let rows: Vec<(String, i64, String, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT s.call_id, s.segment_index, s.file_name, s.start_ms, s.duration_ms, \
             s.ciphertext_bytes, s.sha256_hex FROM recording_segments s \
             WHERE s.finished_at_ms < ? \
             AND NOT EXISTS (SELECT 1 FROM recording_holds h WHERE h.call_id = s.call_id) \
             ORDER BY s.finished_at_ms",
        )
        .bind(cutoff.0)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(rows.into_iter().map(row_to_record).collect())
    }

    /// Removes a segment's row (after its file is gone).
    pub async fn forget_segment(&self, call_id: &str, index: u32) -> Result<(), RecordingError> {
        sqlx::query("DELETE FROM recording_segments WHERE call_id = ? AND segment_index = ?")
            .bind(call_id)
            .bind(i64::from(index))
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }
}

type SegmentRow = (String, i64, String, i64, i64, i64, String);

fn row_to_record(
    (call_id, index, file_name, start_ms, duration_ms, bytes, sha): SegmentRow,
) -> SegmentRecord {
    SegmentRecord {
        call_id,
        index: index as u32,
        file_name,
        start_ms: start_ms as u64,
        duration_ms: duration_ms as u64,
        ciphertext_bytes: bytes as u64,
        sha256_hex: sha,
    }
}

impl SegmentStore for SqliteSegmentStore {
    async fn record_segment(&self, r: &SegmentRecord) -> Result<(), RecordingError> {
        let inserted = sqlx::query(
            "INSERT INTO recording_segments (call_id, segment_index, file_name, start_ms, \
             duration_ms, ciphertext_bytes, sha256_hex, finished_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, segment_index) DO NOTHING",
        )
        .bind(&r.call_id)
        .bind(i64::from(r.index))
        .bind(&r.file_name)
        .bind(r.start_ms as i64)
        .bind(r.duration_ms as i64)
        .bind(r.ciphertext_bytes as i64)
        .bind(&r.sha256_hex)
        .bind(UnixMillis::now().0)
        .execute(&self.pool)
        .await
        .map_err(store_err)?
        .rows_affected();
        if inserted == 0 {
            let (existing,): (String,) = sqlx::query_as(
                "SELECT sha256_hex FROM recording_segments WHERE call_id = ? AND segment_index = ?",
            )
            .bind(&r.call_id)
            .bind(i64::from(r.index))
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?;
            if existing != r.sha256_hex {
                return Err(RecordingError::Store(format!(
                    "segment {} of call {} is already recorded with a different SHA-256",
                    r.index, r.call_id
                )));
            }
        }
        Ok(())
    }

    async fn segments(&self, call_id: &str) -> Result<Vec<SegmentRecord>, RecordingError> {
        let rows: Vec<(String, i64, String, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT call_id, segment_index, file_name, start_ms, duration_ms, ciphertext_bytes, \
             sha256_hex FROM recording_segments WHERE call_id = ? ORDER BY segment_index",
        )
        .bind(call_id)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(rows.into_iter().map(row_to_record).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn record(index: u32, sha: char) -> SegmentRecord {
        SegmentRecord {
            call_id: "0192f0c0-0000-7000-8000-000000000001".into(),
            index,
            file_name: format!("c/seg-{index:05}.wav.age"),
            start_ms: u64::from(index) * 60_000,
            duration_ms: 60_000,
            ciphertext_bytes: 1_920_300,
            sha256_hex: sha.to_string().repeat(64),
        }
    }

    #[tokio::test]
    async fn segments_come_back_in_order_and_a_replay_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteSegmentStore::new(Store::open(dir.path()).await.unwrap().pool().clone());
        store.record_segment(&record(1, 'b')).await.unwrap();
        store.record_segment(&record(0, 'a')).await.unwrap();
        store.record_segment(&record(0, 'a')).await.unwrap();
        let got = store.segments(&record(0, 'a').call_id).await.unwrap();
        assert_eq!(got, vec![record(0, 'a'), record(1, 'b')]);
    }

    #[tokio::test]
    async fn the_same_segment_with_another_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteSegmentStore::new(Store::open(dir.path()).await.unwrap().pool().clone());
        store.record_segment(&record(0, 'a')).await.unwrap();
        let err = store.record_segment(&record(0, 'c')).await.unwrap_err();
        assert!(err.to_string().contains("different SHA-256"), "{err}");
        assert_eq!(
            store.segments(&record(0, 'a').call_id).await.unwrap(),
            vec![record(0, 'a')]
        );
    }
}
