//! The downlink outbox: what the coordinator sends each appliance, stored in the database
//! (`sync_downlink`, `sync_downlink_state`) until the appliance's cumulative ack covers it.
//! One sans-IO [`Outbox`] core per appliance makes every decision (sequence numbers,
//! resend after reconnect or silence); this file persists them and hands the link what to
//! publish. A message is committed before [`DownlinkOutboxes::send`] returns; a sequence
//! number is committed before the message is first published.
//!
//! With coordinator replicas, only the replica owning an appliance ([`BucketOwnership`])
//! keeps its core, sequences and sends: another replica's [`DownlinkOutboxes::send`] (the
//! scheduler's leader feeding a box it does not own) loads the core from the table, stores
//! the row and forgets the core again, and the owner picks such rows up in
//! [`DownlinkOutboxes::refresh`]. Two live cores over one appliance's rows would each
//! sequence and delete them under the other. When the owner and another replica pick the
//! same row id at the same moment, the table's key refuses one row and its sender reloads
//! the core and stores under the next free id.

use super::ownership::BucketOwnership;
use super::SyncError;
use callgate_common::ids::ApplianceId;
use callgate_common::outbox::{
    Class, EntryId, NewEntry, Outbox, OutboxConfig, StoredEntry, Transmit,
};
use callgate_common::time::UnixMillis;
use callgate_common::wire::Downlink;
use sqlx::AnyPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

/// How many times one [`DownlinkOutboxes::send`] takes a fresh id after another replica
/// stored a row under the one it picked, before it gives up and returns the error.
pub const COLLISION_RETRIES: u32 = 8;

/// Every appliance's downlink outbox.
#[derive(Debug)]
pub struct DownlinkOutboxes {
    pool: AnyPool,
    config: OutboxConfig,
    cores: Mutex<HashMap<ApplianceId, Outbox>>,
    wake: Notify,
    ownership: Arc<BucketOwnership>,
}

impl DownlinkOutboxes {
    /// Downlink outboxes over `pool` for a lone coordinator (owning every appliance); each
    /// appliance's is loaded on first use.
    pub fn new(pool: AnyPool) -> DownlinkOutboxes {
        DownlinkOutboxes::owned_by(pool, Arc::new(BucketOwnership::everything()))
    }

    /// Downlink outboxes of a replica: it sends only to the appliances it owns.
    pub fn owned_by(pool: AnyPool, ownership: Arc<BucketOwnership>) -> DownlinkOutboxes {
        DownlinkOutboxes {
            ownership,
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
        let rows: Vec<(i64, Option<i64>, i64)> = sqlx::query_as(
            "SELECT id, seq, LENGTH(body) FROM sync_downlink WHERE appliance = $1 ORDER BY id",
        )
        .bind(app.as_str())
        .fetch_all(&self.pool)
        .await?;
        let entries = rows.into_iter().map(|(id, seq, body)| StoredEntry {
            id: EntryId(id as u64),
            class: Class::Record,
            coalesce_key: None,
            size: body.max(0) as u64,
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
    ///
    /// Two replicas may pick the same entry id for one appliance at the same moment (the
    /// owner from its live core, another from the table as it was a moment ago); the
    /// table's key refuses the second row. That sender reloads the appliance's core from
    /// the table, which now holds the other's row, and stores its message under the next
    /// free id, up to [`COLLISION_RETRIES`] times, so neither message is refused for it.
    pub async fn send(&self, app: &ApplianceId, body: &Downlink) -> Result<(), SyncError> {
        let bytes = postcard::to_stdvec(body).map_err(|e| SyncError::Encoding(e.to_string()))?;
        let mut cores = self.cores.lock().await;
        let mut collisions = 0;
        loop {
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
            .bind(&bytes)
            .bind(UnixMillis::now().0)
            .execute(&self.pool)
            .await;
            match stored {
                Ok(_) => break,
                Err(sqlx::Error::Database(e))
                    if e.is_unique_violation() && collisions < COLLISION_RETRIES =>
                {
                    collisions += 1;
                    tracing::debug!(appliance = %app, id = decided.id.0, "downlink id taken by another replica; reloading");
                    let online = core.is_connected();
                    let mut fresh = self.load(app).await?;
                    if online {
                        fresh.handle_connected(Instant::now());
                    }
                    cores.insert(app.clone(), fresh);
                }
                Err(e) => {
                    core.cancel(decided.id);
                    return Err(e.into());
                }
            }
        }
        if !self.ownership.owns(app.as_str()) {
            // The owner sends it (see `refresh`); a core kept here would go stale.
            cores.remove(app);
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
        if !self.ownership.owns(app.as_str()) {
            return Ok(());
        }
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

    /// Forgets the cores of appliances this replica no longer owns, and reloads those of
    /// owned ones whose table holds rows the core does not know (stored by another
    /// replica), resending what is unacknowledged if the box is online (the box drops what
    /// it already applied). Call it every second or so.
    pub async fn refresh(&self, now: Instant) -> Result<(), SyncError> {
        let mut cores = self.cores.lock().await;
        cores.retain(|app, _| self.ownership.owns(app.as_str()));
        if cores.is_empty() {
            return Ok(());
        }
        // This replica's own sends and acks change rows and core together under the lock
        // held here, so more rows than the core holds means rows stored by another.
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT appliance, COUNT(*) FROM sync_downlink GROUP BY appliance")
                .fetch_all(&self.pool)
                .await?;
        let mut reloaded = false;
        for (app, rows) in counts {
            let Ok(app) = ApplianceId::new(&app) else {
                continue;
            };
            let Some(core) = cores.get(&app) else {
                continue;
            };
            if rows.max(0) as usize <= core.depth() {
                continue;
            }
            let online = core.is_connected();
            let mut fresh = self.load(&app).await?;
            if online {
                fresh.handle_connected(now);
            }
            cores.insert(app, fresh);
            reloaded = true;
        }
        drop(cores);
        if reloaded {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Everything due for publishing now, with sequence numbers persisted first. An
    /// appliance whose rows cannot be read is logged and its core dropped (it is reloaded
    /// from the table when the box is next seen); the others go on.
    pub async fn due(&self) -> Result<Vec<(ApplianceId, Transmit, Downlink)>, SyncError> {
        let mut cores = self.cores.lock().await;
        let mut out = Vec::new();
        let mut broken = Vec::new();
        for (app, core) in cores.iter_mut() {
            while let Some(t) = core.poll_transmit() {
                match self.transmit(app, &t).await {
                    Ok(body) => out.push((app.clone(), t, body)),
                    Err(e) => {
                        tracing::warn!(appliance = %app, seq = t.seq, error = %e, "downlink row unreadable; reloading the outbox");
                        broken.push(app.clone());
                        break;
                    }
                }
            }
        }
        for app in broken {
            cores.remove(&app);
        }
        Ok(out)
    }

    async fn transmit(&self, app: &ApplianceId, t: &Transmit) -> Result<Downlink, SyncError> {
        if t.newly_sequenced {
            sqlx::query("UPDATE sync_downlink SET seq = $1 WHERE appliance = $2 AND id = $3")
                .bind(t.seq as i64)
                .bind(app.as_str())
                .bind(t.id.0 as i64)
                .execute(&self.pool)
                .await?;
        }
        let (bytes,): (Vec<u8>,) =
            sqlx::query_as("SELECT body FROM sync_downlink WHERE appliance = $1 AND id = $2")
                .bind(app.as_str())
                .bind(t.id.0 as i64)
                .fetch_one(&self.pool)
                .await?;
        postcard::from_bytes(&bytes)
            .map_err(|e| SyncError::Encoding(format!("stored downlink {}: {e}", t.id.0)))
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

    fn cert(n: u32) -> Downlink {
        Downlink::Certificate {
            pem: format!("c{n}"),
        }
    }

    async fn sent(out: &DownlinkOutboxes) -> Vec<(u64, Downlink)> {
        out.due()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, t, b)| (t.seq, b))
            .collect()
    }

    #[tokio::test]
    async fn downlink_stored_by_a_replica_not_owning_the_box_goes_out_from_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let ttl = Duration::from_secs(10);
        let (own_a, own_b) = (
            Arc::new(BucketOwnership::replica("a", ttl)),
            Arc::new(BucketOwnership::replica("b", ttl)),
        );
        for (i, o) in [&own_a, &own_b, &own_a, &own_b].into_iter().enumerate() {
            o.round(&store, UnixMillis(1_000 + i as i64)).await.unwrap();
        }
        let app = (0..)
            .map(|i| ApplianceId::new(format!("branch-{i}")).unwrap())
            .find(|x| own_a.owns(x.as_str()))
            .unwrap();
        assert!(!own_b.owns(app.as_str()));
        let a = DownlinkOutboxes::owned_by(store.pool().clone(), own_a);
        let b = DownlinkOutboxes::owned_by(store.pool().clone(), own_b);
        let now = Instant::now();

        b.send(&app, &cert(0)).await.unwrap();
        b.connected(&app, now).await.unwrap();
        assert!(
            sent(&b).await.is_empty(),
            "b never sends to a box it does not own"
        );
        a.connected(&app, now).await.unwrap();
        assert_eq!(sent(&a).await, vec![(1, cert(0))]);
        a.acked(&app, now, 1).await.unwrap();

        // Stored by b while a's core is live: a picks it up at its next refresh.
        b.send(&app, &cert(1)).await.unwrap();
        assert!(sent(&a).await.is_empty());
        a.refresh(now).await.unwrap();
        assert_eq!(sent(&a).await, vec![(2, cert(1))]);
        a.acked(&app, now, 2).await.unwrap();
        // Every row acked and deleted: sequence numbers still go on.
        b.send(&app, &cert(2)).await.unwrap();
        a.refresh(now).await.unwrap();
        assert_eq!(sent(&a).await, vec![(3, cert(2))]);
        assert!(sent(&b).await.is_empty());
    }
}
