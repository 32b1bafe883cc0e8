//! The uplink outbox, persisted in the box's SQLite (`sync_outbox`, `sync_state`).
//!
//! Every decision is the core's (`callgate_common::outbox::Outbox`); this file stores what
//! it decides, in the order that keeps the database the source of truth:
//! - a message is committed (`synchronous=FULL`) before [`UplinkOutbox::send`] returns;
//! - a sequence number is committed before the message is first published;
//! - rows are deleted only when a cumulative ack covers them.
//!
//! After `kill -9` or a power cut, [`UplinkOutbox::open`] rebuilds the core from the table
//! and everything unacknowledged goes out again.

use super::SyncError;
use callgate_common::outbox::{
    Class, EntryId, NewEntry, Outbox, OutboxConfig, OutboxEvent, StoredEntry, Transmit,
};
use callgate_common::time::UnixMillis;
use callgate_common::wire::Uplink;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;
use tokio::sync::{Mutex, Notify};

/// `sync_state` key of the coordinator's cumulative ack.
const UPLINK_ACKED: &str = "uplink_acked";
/// `sync_state` key of the highest applied downlink sequence number.
pub const DOWNLINK_APPLIED: &str = "downlink_applied";

/// `id, class, coalesce_key, length(body), seq` of a stored row.
type OutboxRow = (i64, i64, Option<String>, i64, Option<i64>);

/// Which class an uplink message travels in, and its coalescing key.
pub fn class_of(body: &Uplink) -> (Class, Option<&'static str>) {
    match body {
        Uplink::Telemetry(_) => (Class::Telemetry, Some("telemetry")),
        Uplink::CampaignCalls(_) => (Class::Telemetry, Some("campaign-calls")),
        // Records, attempt results and every kind added later: never coalesced, first.
        _ => (Class::Record, None),
    }
}

/// Extra work to commit in the same transaction as an enqueue (e.g. the caller's own row).
pub type AlsoInTx<'a> = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
        )
            -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>
        + Send
        + 'a,
>;

/// The outbox producers send through: the link replaces it in place after a store failure
/// (see [`super::service::run`]), so a producer reads the current one for every message.
pub type SharedOutbox = std::sync::Arc<tokio::sync::RwLock<std::sync::Arc<UplinkOutbox>>>;

/// The box's uplink outbox.
#[derive(Debug)]
pub struct UplinkOutbox {
    pool: SqlitePool,
    core: Mutex<Outbox>,
    wake: Notify,
}

impl UplinkOutbox {
    /// Loads the outbox from the database, deleting rows a stored ack already covers and
    /// telemetry that a newer unsent report replaced.
    pub async fn open(pool: SqlitePool, config: OutboxConfig) -> Result<UplinkOutbox, SyncError> {
        let acked = read_state(&pool, UPLINK_ACKED).await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, class, coalesce_key, length(body), seq FROM sync_outbox ORDER BY id",
        )
        .fetch_all(&pool)
        .await?;
        let entries = rows
            .into_iter()
            .map(|(id, class, key, size, seq)| StoredEntry {
                id: EntryId(id as u64),
                class: Class::from_i64(class).unwrap_or(Class::Record),
                coalesce_key: key,
                size: size as u64,
                seq: seq.map(|s| s as u64),
            });
        let (core, delete) = Outbox::restore(config, acked, entries)?;
        for id in delete {
            sqlx::query("DELETE FROM sync_outbox WHERE id = $1")
                .bind(id.0 as i64)
                .execute(&pool)
                .await?;
        }
        Ok(UplinkOutbox {
            pool,
            core: Mutex::new(core),
            wake: Notify::new(),
        })
    }

    /// Stores `body` for sending; when this returns `Ok` the message is durable.
    pub async fn send(&self, body: &Uplink) -> Result<EntryId, SyncError> {
        self.send_with(body, Box::new(|_| Box::pin(async { Ok(()) })))
            .await
    }

    /// Like [`UplinkOutbox::send`], committing `also` in the same transaction — e.g. the
    /// call-record row the message reports, so the two can never disagree.
    pub async fn send_with(&self, body: &Uplink, also: AlsoInTx<'_>) -> Result<EntryId, SyncError> {
        let bytes = postcard::to_stdvec(body)
            .map_err(|e| callgate_common::wire::WireError::Malformed(e.to_string()))?;
        let (class, key) = class_of(body);
        let mut core = self.core.lock().await;
        let decided = core.enqueue(NewEntry {
            class,
            coalesce_key: key.map(str::to_string),
            size: bytes.len() as u64,
        })?;
        let stored = async {
            let mut tx = begin_write(&self.pool).await?;
            sqlx::query(
                "INSERT INTO sync_outbox (id, class, coalesce_key, seq, body, created_at) \
                 VALUES ($1, $2, $3, NULL, $4, $5)",
            )
            .bind(decided.id.0 as i64)
            .bind(class.as_i64())
            .bind(key)
            .bind(&bytes)
            .bind(UnixMillis::now().0)
            .execute(&mut *tx)
            .await?;
            if let Some(old) = decided.replaced {
                sqlx::query("DELETE FROM sync_outbox WHERE id = $1 AND seq IS NULL")
                    .bind(old.0 as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            also(&mut tx).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = stored {
            core.cancel(decided.id);
            return Err(e.into());
        }
        drop(core);
        self.wake.notify_one();
        Ok(decided.id)
    }

    /// Resolves when something new was stored.
    pub async fn stored(&self) {
        self.wake.notified().await
    }

    /// The link is up: resend everything unacknowledged first.
    pub async fn connected(&self, now: Instant) {
        self.core.lock().await.handle_connected(now);
    }

    /// The link is down.
    pub async fn disconnected(&self) {
        self.core.lock().await.handle_disconnected();
    }

    /// Drives the resend timer; returns when it next needs driving.
    pub async fn tick(&self, now: Instant) -> Option<Instant> {
        let mut core = self.core.lock().await;
        core.handle_timeout(now);
        core.poll_timeout()
    }

    /// The next message to publish with its body, persisting a newly assigned sequence
    /// number first. An error here leaves core and table possibly apart: the caller must
    /// drop this outbox and [`UplinkOutbox::open`] it again.
    pub async fn next_transmit(&self) -> Result<Option<(Transmit, Uplink)>, SyncError> {
        Ok(self.next_transmits(1).await?.pop())
    }

    /// Up to `max` messages to publish, in order; the sequence numbers newly assigned to
    /// them are committed in one transaction before any is returned.
    pub async fn next_transmits(&self, max: usize) -> Result<Vec<(Transmit, Uplink)>, SyncError> {
        let mut core = self.core.lock().await;
        let due: Vec<Transmit> = std::iter::from_fn(|| core.poll_transmit())
            .take(max)
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        // Resends only read; a newly assigned sequence number is a write.
        let mut tx = if due.iter().any(|t| t.newly_sequenced) {
            begin_write(&self.pool).await?
        } else {
            self.pool.begin().await?
        };
        let mut out = Vec::with_capacity(due.len());
        for t in due {
            if t.newly_sequenced {
                sqlx::query("UPDATE sync_outbox SET seq = $1 WHERE id = $2")
                    .bind(t.seq as i64)
                    .bind(t.id.0 as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            let (bytes,): (Vec<u8>,) = sqlx::query_as("SELECT body FROM sync_outbox WHERE id = $1")
                .bind(t.id.0 as i64)
                .fetch_one(&mut *tx)
                .await?;
            let body: Uplink = postcard::from_bytes(&bytes)
                .map_err(|e| callgate_common::wire::WireError::Malformed(e.to_string()))?;
            out.push((t, body));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A cumulative ack from the coordinator: releases and deletes every row it covers.
    pub async fn acked(&self, now: Instant, up_to: u64) -> Result<usize, SyncError> {
        let mut core = self.core.lock().await;
        let released = core.handle_ack(now, up_to)?;
        if released.is_empty() {
            return Ok(0);
        }
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query("DELETE FROM sync_outbox WHERE seq IS NOT NULL AND seq <= $1")
            .bind(up_to as i64)
            .execute(&mut *tx)
            .await?;
        write_state(&mut tx, UPLINK_ACKED, up_to).await?;
        tx.commit().await?;
        Ok(released.len())
    }

    /// Operator events (quota alarm) since the last call.
    pub async fn events(&self) -> Vec<OutboxEvent> {
        let mut core = self.core.lock().await;
        std::iter::from_fn(|| core.poll_event()).collect()
    }

    /// Messages waiting (sent or not) and the coordinator's last ack.
    pub async fn depth(&self) -> (usize, u64) {
        let core = self.core.lock().await;
        (core.depth(), core.acked())
    }
}

/// Opens a transaction that holds SQLite's write lock from its first statement
/// (`BEGIN IMMEDIATE`). A deferred transaction that reads and then writes fails with
/// `SQLITE_BUSY_SNAPSHOT` (extended code 517, which no busy timeout waits out) when another
/// connection commits between its read and its first write; an immediate one waits its turn
/// (busy timeout) before reading, so its reads are never stale. Use it for every transaction
/// that may write, in this room and in every room that sends through the outbox.
pub async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Reads a `sync_state` counter (0 when absent).
pub async fn read_state(pool: &SqlitePool, key: &str) -> Result<u64, sqlx::Error> {
    let v: Option<(i64,)> = sqlx::query_as("SELECT value FROM sync_state WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    Ok(v.map(|(v,)| v as u64).unwrap_or(0))
}

/// Writes a `sync_state` counter inside a transaction.
pub async fn write_state(
    conn: &mut SqliteConnection,
    key: &str,
    value: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync_state (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value as i64)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use callgate_common::wire::Telemetry;

    fn telemetry(active: u32) -> Uplink {
        Uplink::Telemetry(Telemetry {
            active_calls: active,
            agents_ready: 0,
            trunks: vec![],
            disk_used_percent: 1,
            temperature_decicelsius: None,
            outbox_depth: 0,
        })
    }

    #[tokio::test]
    async fn telemetry_and_campaign_calls_each_keep_their_latest_while_the_link_is_down() {
        use callgate_common::ids::CampaignId;
        use callgate_common::wire::CampaignCalls;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let ob = UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
            .await
            .unwrap();
        let calls = |n| {
            Uplink::CampaignCalls(vec![CampaignCalls {
                campaign: CampaignId(1),
                calls: n,
            }])
        };
        for n in 1..=3 {
            ob.send(&telemetry(n)).await.unwrap();
            ob.send(&calls(n)).await.unwrap();
        }
        ob.connected(Instant::now()).await;
        let sent: Vec<Uplink> = ob
            .next_transmits(10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, body)| body)
            .collect();
        assert_eq!(sent, vec![telemetry(3), calls(3)]);
    }

    #[tokio::test]
    async fn unacked_messages_survive_a_reopen_with_their_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let ob = UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
            .await
            .unwrap();
        let app = callgate_common::ids::ApplianceId::new("b-1").unwrap();
        let records: Vec<Uplink> = (0..3)
            .map(|i| Uplink::CallRecord(super::super::load::call_record(&app, i)))
            .collect();
        for r in &records {
            ob.send(r).await.unwrap();
        }
        ob.send(&telemetry(1)).await.unwrap();
        ob.send(&telemetry(2)).await.unwrap();
        let t0 = Instant::now();
        ob.connected(t0).await;
        let (first, body) = ob.next_transmit().await.unwrap().unwrap();
        assert_eq!((first.seq, &body), (1, &records[0]));
        ob.next_transmit().await.unwrap().unwrap();
        ob.acked(t0, 1).await.unwrap();
        drop(ob);
        store.pool().close().await;

        // As after kill -9: a new process opens the same file.
        let store = Store::open(dir.path()).await.unwrap();
        let ob = UplinkOutbox::open(store.pool().clone(), OutboxConfig::default())
            .await
            .unwrap();
        assert_eq!(
            ob.depth().await,
            (3, 1),
            "2 records and the latest telemetry"
        );
        ob.connected(t0).await;
        let mut sent = Vec::new();
        while let Some((t, body)) = ob.next_transmit().await.unwrap() {
            sent.push((t.seq, t.newly_sequenced, body));
        }
        assert_eq!(sent.len(), 3);
        assert_eq!((sent[0].0, sent[0].1, &sent[0].2), (2, false, &records[1]));
        assert_eq!((sent[1].0, &sent[1].2), (3, &records[2]));
        assert_eq!((sent[2].0, &sent[2].2), (4, &telemetry(2)));
        ob.acked(t0, 4).await.unwrap();
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sync_outbox")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_the_message_and_stores_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let config = OutboxConfig {
            quota_bytes: 300,
            ..OutboxConfig::default()
        };
        let ob = UplinkOutbox::open(store.pool().clone(), config)
            .await
            .unwrap();
        let app = callgate_common::ids::ApplianceId::new("b-1").unwrap();
        let mut accepted = 0;
        let mut refused = None;
        for i in 0..10 {
            match ob
                .send(&Uplink::CallRecord(super::super::load::call_record(
                    &app, i,
                )))
                .await
            {
                Ok(_) => accepted += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(
            refused,
            Some(SyncError::Outbox(
                callgate_common::outbox::OutboxError::QuotaExceeded { .. }
            ))
        ));
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sync_outbox")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, accepted);
        assert!(ob
            .events()
            .await
            .iter()
            .any(|e| matches!(e, OutboxEvent::QuotaAlarmRaised { .. })));
    }

    /// The SQLITE_BUSY_SNAPSHOT race, provoked on purpose: a transaction reads a counter,
    /// the outbox tries to commit a message in between, then the transaction writes. With a
    /// deferred transaction the outbox commits first and the write fails with extended code
    /// 517; with [`begin_write`] the outbox waits for the transaction and both succeed.
    #[tokio::test]
    async fn a_read_then_write_transaction_survives_an_outbox_commit_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pool = store.pool().clone();
        let ob = std::sync::Arc::new(
            UplinkOutbox::open(pool.clone(), OutboxConfig::default())
                .await
                .unwrap(),
        );
        let app = callgate_common::ids::ApplianceId::new("b-1").unwrap();
        for i in 0..5u64 {
            let mut tx = begin_write(&pool).await.unwrap();
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COALESCE((SELECT value FROM sync_state WHERE key = 'race'), 0)",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            let sender = {
                let (ob, record) = (
                    ob.clone(),
                    Uplink::CallRecord(super::super::load::call_record(&app, i)),
                );
                tokio::spawn(async move { ob.send(&record).await })
            };
            // Give the outbox every chance to commit between the read and the write.
            let raced = tokio::time::timeout(std::time::Duration::from_millis(300), async {
                while !sender.is_finished() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(
                raced.is_err(),
                "the outbox committed inside another writer's transaction"
            );
            write_state(&mut tx, "race", n as u64 + 1)
                .await
                .expect("the write after the read is not refused as a stale snapshot");
            tx.commit().await.unwrap();
            sender
                .await
                .unwrap()
                .expect("the outbox's send waited and went through");
        }
        assert_eq!(read_state(&pool, "race").await.unwrap(), 5);
        assert_eq!(ob.depth().await.0, 5);
    }
}
