//! Scheduler leadership across coordinator replicas: a lease row with an expiry.
//!
//! Every replica runs the scheduler loop, but a pass does its work only while the replica
//! holds the `scheduler_leader` row for the role: `holder` is the replica's id and
//! `expires_at` lies ahead. Taking or renewing the row is one conditional upsert (the
//! database serialises it), so at any instant at most one replica holds an unexpired row.
//! A replica that stops renewing (crashed, cut off from the database) loses the role when
//! its lease expires and another takes over on its next pass; `term` grows on every change
//! of holder. Works the same on SQLite (one process) and PostgreSQL (many).
//!
//! A pass that outlives the lease could overlap the next leader's first pass; the lease
//! lasts many passes (`leader_ttl_secs`, default 30 s against 1 s passes), and the holds on
//! contacts stay conditional in the database, so even then no contact is leased twice.
//!
//! Owns the `scheduler_leader` table. Must not: decide what a pass does.

use crate::store::Store;
use callgate_common::time::UnixMillis;

/// One replica's claim on a role.
#[derive(Debug, Clone)]
pub struct LeaderLease {
    role: String,
    holder: String,
    ttl_ms: i64,
}

/// Who holds a role, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// Whether the asking replica holds it now.
    pub held: bool,
    /// The holder's id.
    pub holder: String,
    /// Grows with every change of holder.
    pub term: i64,
    /// When the holder's lease runs out unless renewed.
    pub expires_at: i64,
}

impl LeaderLease {
    /// A claim on `role` by `holder` (unique per replica), renewed for `ttl_ms` per pass.
    pub fn new(role: &str, holder: &str, ttl_ms: i64) -> LeaderLease {
        LeaderLease {
            role: role.to_string(),
            holder: holder.to_string(),
            ttl_ms: ttl_ms.max(1),
        }
    }

    /// A claim under a fresh random holder id.
    pub fn random(role: &str, ttl_ms: i64) -> LeaderLease {
        LeaderLease::new(role, &uuid::Uuid::new_v4().to_string(), ttl_ms)
    }

    /// This replica's id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the role if it is free or expired, renews it if this replica holds it, and
    /// says who holds it afterwards.
    pub async fn acquire(&self, store: &Store, now: UnixMillis) -> Result<Leadership, sqlx::Error> {
        let until = now.0.saturating_add(self.ttl_ms);
        let won: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO scheduler_leader (role, holder, term, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (role) DO UPDATE SET \
             term = CASE WHEN scheduler_leader.holder = excluded.holder \
                    THEN scheduler_leader.term ELSE scheduler_leader.term + 1 END, \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE scheduler_leader.holder = excluded.holder OR scheduler_leader.expires_at <= $4 \
             RETURNING term, expires_at",
        )
        .bind(&self.role)
        .bind(&self.holder)
        .bind(until)
        .bind(now.0)
        .fetch_optional(store.pool())
        .await?;
        if let Some((term, expires_at)) = won {
            return Ok(Leadership {
                held: true,
                holder: self.holder.clone(),
                term,
                expires_at,
            });
        }
        let (holder, term, expires_at): (String, i64, i64) =
            sqlx::query_as("SELECT holder, term, expires_at FROM scheduler_leader WHERE role = $1")
                .bind(&self.role)
                .fetch_one(store.pool())
                .await?;
        Ok(Leadership {
            held: false,
            holder,
            term,
            expires_at,
        })
    }

    /// Gives the role up at once (a clean shutdown), if this replica holds it.
    pub async fn release(&self, store: &Store) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE scheduler_leader SET expires_at = 0 WHERE role = $1 AND holder = $2")
            .bind(&self.role)
            .bind(&self.holder)
            .execute(store.pool())
            .await?;
        Ok(())
    }
}
