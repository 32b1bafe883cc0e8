//! The downlink outbox: what the coordinator sends each appliance, stored in the database
//! (`sync_downlink`, `sync_downlink_state`) until the appliance's cumulative ack covers it.
//! One sans-IO [`Outbox`] core per appliance makes every decision (sequence numbers,
//! resend after reconnect or silence); this file persists them and hands the link what to
//! publish. A message is committed before [`DownlinkOutboxes::send`] returns; a sequence
//! number is committed before the message is first published.

use super::SyncError;
use callgate_common::ids::ApplianceId;
use callgate_common::outbox::{
    Class, EntryId, NewEntry, Outbox, OutboxConfig, StoredEntry, Transmit,
};
use callgate_common::time::UnixMillis;
use callgate_common::wire::Downlink;
use sqlx::AnyPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

/// Every appliance's downlink outbox.
#[derive(Debug)]
pub struct DownlinkOutboxes {
    pool: AnyPool,
    config: OutboxConfig,
    cores: Mutex<HashMap<ApplianceId, Outbox>>,
    wake: Notify,
}

impl DownlinkOutboxes {
    /// Downlink outboxes over `pool`; each appliance's is loaded on first use.
    pub fn new(pool: AnyPool) -> DownlinkOutboxes {
        DownlinkOutboxes {
            pool,
            config: OutboxConfig {
                resend_after: Duration::from_secs(5),
                quota_bytes: 64 * 1024 * 1024,
                ..OutboxConfig::default()
            },
            cores: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    async fn load(&self, app: &ApplianceId) -> Result<Outbox, SyncError> {
        let acked: Option<(i64,)> =
            sqlx::query_as("SELECT acked FROM sync_downlink_state WHERE appliance = $1")
                .bind(app.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let acked = acked.map_or(0, |(a,)| a as u64);
        let rows: Vec<(i64, Option<i64>, Vec<u8>)> = sqlx::query_as(
            "SELECT id, seq, body FROM sync_downlink WHERE appliance = $1 ORDER BY id",
        )
        .bind(app.as_str())
        .fetch_all(&self.pool)
        .await?;
        let entries = rows.into_iter().map(|(id, seq, body)| StoredEntry {
            id: EntryId(id as u64),
            class: Class::Record,
            coalesce_key: None,
            size: body.len() as u64,
            seq: seq.map(|s| s as u64),
        });
        let (core, delete) = Outbox::restore(self.config.clone(), acked, entries)?;
        for id in delete {
            sqlx::query("DELETE FROM sync_downlink WHERE appliance = $1 AND id = $2")
                .bind(app.as_str())
                .bind(id.0 as i64)
                .execute(&self.pool)
                .await?;
        }
        Ok(core)
    }

    /// Stores `body` for `app`; durable when this returns `Ok`.
    pub async fn send(&self, app: &ApplianceId, body: &Downlink) -> Result<(), SyncError> {
        let bytes = postcard::to_stdvec(body).map_err(|e| SyncError::Encoding(e.to_string()))?;
        let mut cores = self.cores.lock().await;
        if !cores.contains_key(app) {
            let core = self.load(app).await?;
            cores.insert(app.clone(), core);
        }
        let core = cores.get_mut(app).expect("loaded above");
        let decided = core.enqueue(NewEntry {
            class: Class::Record,
            coalesce_key: None,
            size: bytes.len() as u64,
        })?;
        let stored = sqlx::query(
            "INSERT INTO sync_downlink (appliance, id, seq, body, created_at) \
             VALUES ($1, $2, NULL, $3, $4)",
        )
        .bind(app.as_str())
        .bind(decided.id.0 as i64)
        .bind(bytes)
        .bind(UnixMillis::now().0)
        .execute(&self.pool)
        .await;
        if let Err(e) = stored {
            core.cancel(decided.id);
            return Err(e.into());
        }
        drop(cores);
        self.wake.notify_one();
        Ok(())
    }

    /// Resolves when something was stored.
    pub async fn stored(&self) {
        self.wake.notified().await
    }

    /// Marks `app` online unless it already is — for evidence of presence that is not a
    /// (re)connection (its uplink, its retained `online` status after our own restart).
    pub async fn seen(&self, app: &ApplianceId, now: Instant) -> Result<(), SyncError> {
        let known_up = self
            .cores
            .lock()
            .await
            .get(app)
            .is_some_and(|c| c.is_connected());
        if known_up {
            return Ok(());
        }
        self.connected(app, now).await
    }

    /// `app` is (back) online: everything unacknowledged goes again.
    pub async fn connected(&self, app: &ApplianceId, now: Instant) -> Result<(), SyncError> {
        let mut cores = self.cores.lock().await;
        if !cores.contains_key(app) {
            let core = self.load(app).await?;
            cores.insert(app.clone(), core);
        }
        cores
            .get_mut(app)
            .expect("loaded above")
            .handle_connected(now);
        drop(cores);
        self.wake.notify_one();
        Ok(())
    }

    /// `app` went offline.
    pub async fn disconnected(&self, app: &ApplianceId) {
        if let Some(core) = self.cores.lock().await.get_mut(app) {
            core.handle_disconnected();
        }
    }

    /// `app` acknowledged every downlink message up to `up_to`.
    pub async fn acked(
        &self,
        app: &ApplianceId,
        now: Instant,
        up_to: u64,
    ) -> Result<(), SyncError> {
        let mut cores = self.cores.lock().await;
        let Some(core) = cores.get_mut(app) else {
            return Ok(());
        };
        let released = match core.handle_ack(now, up_to) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(appliance = %app, error = %e, "ignoring impossible downlink ack");
                return Ok(());
            }
        };
        if released.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM sync_downlink WHERE appliance = $1 AND seq IS NOT NULL AND seq <= $2",
        )
        .bind(app.as_str())
        .bind(up_to as i64)
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query("UPDATE sync_downlink_state SET acked = $1 WHERE appliance = $2")
            .bind(up_to as i64)
            .bind(app.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            sqlx::query("INSERT INTO sync_downlink_state (appliance, acked) VALUES ($1, $2)")
                .bind(app.as_str())
                .bind(up_to as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drives every resend timer; returns the earliest next deadline.
    pub async fn tick(&self, now: Instant) -> Option<Instant> {
        let mut cores = self.cores.lock().await;
        cores
            .values_mut()
            .filter_map(|c| {
                c.handle_timeout(now);
                c.poll_timeout()
            })
            .min()
    }

    /// Everything due for publishing now, with sequence numbers persisted first.
    pub async fn due(&self) -> Result<Vec<(ApplianceId, Transmit, Downlink)>, SyncError> {
        let mut cores = self.cores.lock().await;
        let mut out = Vec::new();
        for (app, core) in cores.iter_mut() {
            while let Some(t) = core.poll_transmit() {
                if t.newly_sequenced {
                    sqlx::query(
                        "UPDATE sync_downlink SET seq = $1 WHERE appliance = $2 AND id = $3",
                    )
                    .bind(t.seq as i64)
                    .bind(app.as_str())
                    .bind(t.id.0 as i64)
                    .execute(&self.pool)
                    .await?;
                }
                let (bytes,): (Vec<u8>,) = sqlx::query_as(
                    "SELECT body FROM sync_downlink WHERE appliance = $1 AND id = $2",
                )
                .bind(app.as_str())
                .bind(t.id.0 as i64)
                .fetch_one(&self.pool)
                .await?;
                let body: Downlink = postcard::from_bytes(&bytes)
                    .map_err(|e| SyncError::Encoding(format!("stored downlink {}: {e}", t.id.0)))?;
                out.push((app.clone(), t, body));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn downlink_messages_survive_a_restart_and_go_again_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let app = ApplianceId::new("branch-1").unwrap();
        let t0 = Instant::now();
        let out = DownlinkOutboxes::new(store.pool().clone());
        for n in 0..3 {
            out.send(
                &app,
                &Downlink::Certificate {
                    pem: format!("c{n}"),
                },
            )
            .await
            .unwrap();
        }
        assert!(out.due().await.unwrap().is_empty(), "offline: nothing goes");
        out.connected(&app, t0).await.unwrap();
        let sent: Vec<u64> = out
            .due()
            .await
            .unwrap()
            .iter()
            .map(|(_, t, _)| t.seq)
            .collect();
        assert_eq!(sent, vec![1, 2, 3]);
        out.acked(&app, t0, 1).await.unwrap();
        drop(out);

        // A new coordinator process over the same database; the box is still connected,
        // so presence is only *seen* (its uplink), never announced by a Hello.
        let out = DownlinkOutboxes::new(store.pool().clone());
        out.seen(&app, t0).await.unwrap();
        let again: Vec<(u64, Downlink)> = out
            .due()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, t, b)| (t.seq, b))
            .collect();
        assert_eq!(
            again,
            vec![
                (2, Downlink::Certificate { pem: "c1".into() }),
                (3, Downlink::Certificate { pem: "c2".into() })
            ]
        );
        out.seen(&app, t0).await.unwrap();
        assert!(
            out.due().await.unwrap().is_empty(),
            "seeing it again does not resend"
        );
        out.acked(&app, t0, 3).await.unwrap();
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sync_downlink")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
