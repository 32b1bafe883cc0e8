//! Which coordinator replica applies which appliances' uplink.
//!
//! Appliances fall into [`BUCKETS`] hash buckets ([`bucket_of`]). Each replica (`sync.replica`
//! set) keeps a liveness row `sync-replica/{id}` and holds some buckets, each as a lease row
//! `sync-bucket/{k}` in the scheduler's leader table (`scheduler_leader`, through
//! [`LeaderLease`]: one conditional upsert, so at most one replica holds an unexpired row).
//! Every replica receives every appliance's messages and applies the sequenced uplink only
//! of the appliances in its buckets; the others' it leaves alone (no apply, no ack), so each
//! stream has one applier and one acker instead of two replicas taking turns message by
//! message (what `$share` does, and what stalled every stream behind gaps).
//!
//! Who should hold what is decided by [`plan`] (sans-IO): the live replicas sorted by id,
//! bucket `k` preferred by the `k mod n`-th. A replica takes and renews the buckets it is
//! preferred for and gives the others up, so a replica that joins gets its share within a
//! round or two, and the buckets of one that stops renewing (killed, cut off) go to the live
//! ones once its rows expire (`sync.ownership_ttl_secs`).
//!
//! Correctness does not rest on this: the database's conditional high-water update still
//! decides what is applied, so during a hand-over (two replicas briefly applying one
//! appliance) nothing is applied twice. Ownership only keeps the replicas out of each
//! other's way.
//!
//! Owns the `sync-replica/*` and `sync-bucket/*` rows of `scheduler_leader`. Must not: apply
//! or acknowledge anything (the link does), or touch the scheduler's own role.

use crate::leasing::leader::LeaderLease;
use crate::store::Store;
use callgate_common::time::UnixMillis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many buckets the appliances are hashed into (at most 64: one bit each).
pub const BUCKETS: u32 = 32;

const REPLICA_ROLE: &str = "sync-replica/";
const BUCKET_ROLE: &str = "sync-bucket/";

/// The bucket of an appliance id (FNV-1a, stable across builds and replicas).
pub fn bucket_of(appliance: &str) -> u32 {
    (super::link::shard_hash(appliance) % u64::from(BUCKETS)) as u32
}

/// What one replica should do with the bucket leases this round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    /// Buckets to take or renew (this replica is their preferred holder).
    pub take: Vec<u32>,
    /// Buckets this replica holds but another live replica is preferred for.
    pub give_up: Vec<u32>,
}

/// A row of the lease table as [`plan`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `sync-replica/{id}` or `sync-bucket/{k}`.
    pub role: String,
    /// The replica holding it.
    pub holder: String,
    /// When it runs out (Unix ms).
    pub expires_at: i64,
}

/// Decides, for replica `me` at `now`, which buckets to take and which to give up. The live
/// replicas are `me` and the holders of unexpired `sync-replica/*` rows, sorted; bucket `k`
/// belongs to the `k mod n`-th of them.
pub fn plan(me: &str, now: i64, rows: &[LeaseRow]) -> Claims {
    let mut live: Vec<&str> = rows
        .iter()
        .filter(|r| r.role.starts_with(REPLICA_ROLE) && r.expires_at > now)
        .map(|r| r.holder.as_str())
        .chain(std::iter::once(me))
        .collect();
    live.sort_unstable();
    live.dedup();
    let held_by_me = |k: u32| {
        let role = format!("{BUCKET_ROLE}{k}");
        rows.iter()
            .any(|r| r.role == role && r.holder == me && r.expires_at > now)
    };
    let mut claims = Claims::default();
    for k in 0..BUCKETS {
        if live[k as usize % live.len()] == me {
            claims.take.push(k);
        } else if held_by_me(k) {
            claims.give_up.push(k);
        }
    }
    claims
}

/// This process's share of the appliances, read by the apply path on every message.
#[derive(Debug)]
pub struct BucketOwnership {
    /// `None`: a single coordinator, owning every appliance without any lease.
    me: Option<String>,
    ttl_ms: i64,
    mask: AtomicU64,
    epoch: AtomicU64,
}

impl BucketOwnership {
    /// A lone coordinator: every appliance is its own, nothing is stored.
    pub fn everything() -> BucketOwnership {
        BucketOwnership {
            me: None,
            ttl_ms: 0,
            mask: AtomicU64::new(u64::MAX),
            epoch: AtomicU64::new(0),
        }
    }

    /// Replica `me`, owning nothing until its first [`BucketOwnership::round`]; its leases
    /// last `ttl` unless renewed.
    pub fn replica(me: &str, ttl: Duration) -> BucketOwnership {
        BucketOwnership {
            me: Some(me.to_string()),
            ttl_ms: ttl.as_millis().max(1) as i64,
            mask: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Whether this process applies `appliance`'s uplink now.
    pub fn owns(&self, appliance: &str) -> bool {
        self.mask.load(Ordering::Acquire) & (1 << bucket_of(appliance)) != 0
    }

    /// How many buckets this process holds.
    pub fn held(&self) -> u32 {
        (self.mask.load(Ordering::Acquire) & all_buckets()).count_ones()
    }

    /// Grows whenever the set of owned buckets changes: receive state cached under an
    /// older epoch may be behind what another replica applied meanwhile.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// One round at `now`: renews this replica's liveness row, reads every replica's and
    /// bucket's row, takes or renews the buckets [`plan`] gives it and gives up the others.
    /// Returns the number of buckets held afterwards. A lone coordinator does nothing.
    pub async fn round(&self, store: &Store, now: UnixMillis) -> Result<u32, sqlx::Error> {
        let Some(me) = &self.me else {
            return Ok(BUCKETS);
        };
        LeaderLease::new(&format!("{REPLICA_ROLE}{me}"), me, self.ttl_ms)
            .acquire(store, now)
            .await?;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT role, holder, expires_at FROM scheduler_leader WHERE role LIKE 'sync-%'",
        )
        .fetch_all(store.pool())
        .await?;
        let rows: Vec<LeaseRow> = rows
            .into_iter()
            .map(|(role, holder, expires_at)| LeaseRow {
                role,
                holder,
                expires_at,
            })
            .collect();
        let claims = plan(me, now.0, &rows);
        let mut mask = 0u64;
        for k in claims.take {
            let lease = LeaderLease::new(&format!("{BUCKET_ROLE}{k}"), me, self.ttl_ms);
            if lease.acquire(store, now).await?.held {
                mask |= 1 << k;
            }
        }
        // Stop applying before the row is freed, so the next holder starts after us.
        self.set(mask);
        for k in claims.give_up {
            LeaderLease::new(&format!("{BUCKET_ROLE}{k}"), me, self.ttl_ms)
                .release(store)
                .await?;
        }
        Ok(mask.count_ones())
    }

    /// Gives every bucket and the liveness row up at once (a clean shutdown), so the
    /// other replicas take over without waiting for the leases to run out.
    pub async fn release_all(&self, store: &Store) -> Result<(), sqlx::Error> {
        let Some(me) = &self.me else {
            return Ok(());
        };
        self.set(0);
        sqlx::query(
            "UPDATE scheduler_leader SET expires_at = 0 WHERE holder = $1 AND role LIKE 'sync-%'",
        )
        .bind(me)
        .execute(store.pool())
        .await?;
        Ok(())
    }

    fn set(&self, mask: u64) {
        if self.mask.swap(mask, Ordering::AcqRel) != mask {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            tracing::info!(buckets = mask.count_ones(), "uplink ownership changed");
            metrics::gauge!("callgate_sync_owned_buckets").set(f64::from(mask.count_ones()));
        }
    }

    /// Runs rounds every third of the lease's lifetime until `shutdown`, then releases.
    pub async fn run(&self, store: Store, shutdown: impl std::future::Future<Output = ()>) {
        if self.me.is_none() {
            return;
        }
        tokio::pin!(shutdown);
        let every = Duration::from_millis((self.ttl_ms / 3).max(100) as u64);
        loop {
            if let Err(e) = self.round(&store, UnixMillis::now()).await {
                tracing::warn!(error = %e, "uplink ownership round failed; the next one retries");
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        if let Err(e) = self.release_all(&store).await {
            tracing::warn!(error = %e, "releasing uplink ownership failed; it lapses by itself");
        }
    }
}

fn all_buckets() -> u64 {
    if BUCKETS >= 64 {
        u64::MAX
    } else {
        (1u64 << BUCKETS) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(role: &str, holder: &str, expires_at: i64) -> LeaseRow {
        LeaseRow {
            role: role.into(),
            holder: holder.into(),
            expires_at,
        }
    }

    #[test]
    fn a_lone_replica_takes_every_bucket() {
        let c = plan("a", 1_000, &[row("sync-replica/a", "a", 2_000)]);
        assert_eq!(c.take, (0..BUCKETS).collect::<Vec<_>>());
        assert!(c.give_up.is_empty());
    }

    #[test]
    fn two_live_replicas_split_the_buckets_disjointly_and_completely() {
        let mut rows = vec![
            row("sync-replica/a", "a", 2_000),
            row("sync-replica/b", "b", 2_000),
        ];
        // a held everything before b came.
        rows.extend((0..BUCKETS).map(|k| row(&format!("sync-bucket/{k}"), "a", 2_000)));
        let a = plan("a", 1_000, &rows);
        let b = plan("b", 1_000, &rows);
        assert_eq!(a.take.len() + b.take.len(), BUCKETS as usize);
        assert!(a.take.iter().all(|k| !b.take.contains(k)), "{a:?} {b:?}");
        assert_eq!(a.take.len(), b.take.len(), "an even split");
        assert_eq!(a.give_up, b.take, "a gives up exactly what b is to take");
        assert!(b.give_up.is_empty());
    }

    #[test]
    fn a_replica_whose_liveness_row_expired_counts_as_gone() {
        let rows = vec![
            row("sync-replica/a", "a", 5_000),
            row("sync-replica/b", "b", 999),
            row("sync-bucket/1", "b", 999),
        ];
        let a = plan("a", 1_000, &rows);
        assert_eq!(a.take.len(), BUCKETS as usize, "b's buckets go to a");
        // Until b's row expires, b still counts and keeps its half.
        let before = plan("a", 998, &rows);
        assert_eq!(before.take.len(), BUCKETS as usize / 2);
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of("branch-1"), bucket_of("branch-1"));
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| bucket_of(&format!("branch-{i}")))
            .collect();
        assert!(used.len() > BUCKETS as usize / 2, "{used:?}");
        assert!(used.iter().all(|k| *k < BUCKETS));
    }

    #[test]
    fn a_lone_coordinator_owns_everything_and_a_replica_nothing_before_its_first_round() {
        assert!(BucketOwnership::everything().owns("branch-1"));
        let r = BucketOwnership::replica("a", Duration::from_secs(10));
        assert!(!r.owns("branch-1"));
        assert_eq!(r.held(), 0);
    }
}
