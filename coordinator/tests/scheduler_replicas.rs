//! Coordinator replicas sharing one database: the scheduler's leader lease lets one replica
//! at a time issue briefs, grants and leases; a silent leader is replaced once its lease
//! runs out; and with two schedulers racing on one PostgreSQL no contact is ever leased
//! twice and nothing is issued twice.

mod common;

use callgate_common::ids::{ApplianceId, ContactId};
use callgate_common::store::Backend;
use callgate_common::time::UnixMillis;
use callgate_common::wire::Downlink;
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::leasing::leader::LeaderLease;
use callgate_coordinator::leasing::scheduler::{DialerFeedConfig, Scheduler};
use callgate_coordinator::store::Store;
use callgate_coordinator::sync::downlink::DownlinkOutboxes;
use callgate_coordinator::sync::presence;
use common::{at, fresh_store, scheduled_campaign, BACKENDS};
use std::collections::HashMap;
use std::sync::Arc;

const NOON_CHICAGO: &str = "2026-05-05T17:00:00Z";

#[tokio::test]
async fn one_replica_leads_at_a_time_and_a_silent_leader_is_replaced_after_its_ttl() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let a = LeaderLease::new("role", "replica-a", 30_000);
        let b = LeaderLease::new("role", "replica-b", 30_000);
        let t0 = at(NOON_CHICAGO).0;
        let first = a.acquire(&t.store, UnixMillis(t0)).await.unwrap();
        assert!(first.held, "{backend:?}: a free role is taken");
        assert_eq!(first.term, 1);
        let other = b.acquire(&t.store, UnixMillis(t0)).await.unwrap();
        assert!(!other.held, "{backend:?}: a held role is refused");
        assert_eq!(other.holder, "replica-a");
        // A renews before its lease runs out; B's try at the old expiry still fails.
        assert!(
            a.acquire(&t.store, UnixMillis(t0 + 20_000))
                .await
                .unwrap()
                .held
        );
        assert!(
            !b.acquire(&t.store, UnixMillis(t0 + 30_000))
                .await
                .unwrap()
                .held,
            "{backend:?}: a renewed lease holds past its first expiry"
        );
        // A falls silent: B takes over the moment the renewed lease expires, not before.
        assert!(
            !b.acquire(&t.store, UnixMillis(t0 + 49_999))
                .await
                .unwrap()
                .held
        );
        let taken = b.acquire(&t.store, UnixMillis(t0 + 50_000)).await.unwrap();
        assert!(taken.held, "{backend:?}");
        assert_eq!(taken.term, 2, "a change of holder is a new term");
        let back = a.acquire(&t.store, UnixMillis(t0 + 50_001)).await.unwrap();
        assert!(
            !back.held,
            "{backend:?}: the old leader does not get it back"
        );
        assert_eq!(back.holder, "replica-b");
        // A clean release hands it over at once.
        b.release(&t.store).await.unwrap();
        let again = a.acquire(&t.store, UnixMillis(t0 + 50_002)).await.unwrap();
        assert!(again.held && again.term == 3, "{backend:?}: {again:?}");
    }
}

fn csv(n: usize) -> String {
    let mut s = String::from("phone,timezone\n");
    for i in 0..n {
        s.push_str(&format!("+1312555{:04},America/Chicago\n", 1000 + i));
    }
    s
}

async fn enrol(store: &Store, name: &str, now: UnixMillis) {
    sqlx::query(
        "INSERT INTO appliances (name, site, state, created_at) VALUES ($1, 'hq', 'enrolled', 0)",
    )
    .bind(name)
    .execute(store.pool())
    .await
    .unwrap();
    presence::hello(store.pool(), &ApplianceId::new(name).unwrap(), "1.0.0", now)
        .await
        .unwrap();
}

/// A coordinator replica: its own connection pool on the shared database, its own
/// outboxes handle and scheduler.
async fn replica(url: Option<&str>, shared: &Store, name: &str) -> (Store, Scheduler) {
    let store = match url {
        Some(url) => {
            let dir = tempfile::tempdir().unwrap().keep();
            Store::open(&dir, Some(url)).await.unwrap()
        }
        None => shared.clone(),
    };
    let config = DialerFeedConfig {
        lease_pool: 40,
        lease_ttl_secs: 120,
        replica_id: Some(name.into()),
        ..DialerFeedConfig::default()
    };
    let outboxes = Arc::new(DownlinkOutboxes::new(store.pool().clone()));
    let vault = NumberVault::from_master_key(&[1; 32]);
    let s = Scheduler::new(store.clone(), vault, outboxes, config);
    (store, s)
}

async fn outbox(store: &Store, app: &str) -> Vec<Downlink> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT body FROM sync_downlink WHERE appliance = $1 ORDER BY id")
            .bind(app)
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter()
        .map(|(b,)| postcard::from_bytes(&b).unwrap())
        .collect()
}

#[tokio::test]
async fn two_coordinators_on_one_database_never_lease_a_contact_twice() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let url = match backend {
            Backend::Postgres => Some(t.store.pool().connect_options().database_url.to_string()),
            Backend::Sqlite => None,
        };
        let vault = NumberVault::from_master_key(&[1; 32]);
        scheduled_campaign(&t.store, &vault, "us", &csv(400), |_| {}).await;
        enrol(&t.store, "branch-a", now).await;
        enrol(&t.store, "branch-b", now).await;
        let (_sa, a) = replica(url.as_deref(), &t.store, "replica-a").await;
        let (_sb, b) = replica(url.as_deref(), &t.store, "replica-b").await;

        // Both replicas run every pass at the same moment; a lease of 120 s over 2 minutes
        // of passes, with results settling nothing: every contact may be leased once only.
        let mut leaders = HashMap::new();
        for i in 0..60 {
            let at = UnixMillis(now.0 + i * 1_000);
            let (ra, rb) = tokio::join!(a.tick(at), b.tick(at));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert!(
                !(ra.led && rb.led),
                "{backend:?}: both replicas led the pass at {i} s"
            );
            assert!(
                ra.led || rb.led,
                "{backend:?}: nobody led the pass at {i} s"
            );
            *leaders.entry(ra.led).or_insert(0) += 1;
        }
        assert_eq!(
            leaders.len(),
            1,
            "{backend:?}: the leader held on: {leaders:?}"
        );

        // The leader (last renewed at 59 s) goes silent; the other takes over when its
        // lease (30 s) runs out.
        let a_led = leaders.contains_key(&true);
        let follower = if a_led { &b } else { &a };
        for i in 60..=100 {
            let r = follower.tick(UnixMillis(now.0 + i * 1_000)).await.unwrap();
            assert_eq!(r.led, i >= 89, "{backend:?}: the follower at {i} s");
        }

        let mut seen: HashMap<ContactId, usize> = HashMap::new();
        for (app, share_of_pool) in [("branch-a", 10), ("branch-b", 30)] {
            let msgs = outbox(&t.store, app).await;
            let briefs = msgs
                .iter()
                .filter(|m| matches!(m, Downlink::Campaign(_)))
                .count();
            assert_eq!(briefs, 1, "{backend:?}: {app} got its brief once");
            let mut leased = 0;
            for m in &msgs {
                if let Downlink::ContactLease(l) = m {
                    for c in &l.contacts {
                        *seen.entry(c.contact).or_default() += 1;
                        leased += 1;
                    }
                }
            }
            // Shares 1:3 of a pool of 40, topped up once: two replicas topping up at the
            // same moment would each have leased the full share.
            assert_eq!(leased, share_of_pool, "{backend:?}: {app}");
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{backend:?}: leased twice: {twice:?}");
        let (active, distinct): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT contact_id) FROM campaign_contacts \
             WHERE state = 'leased'",
        )
        .fetch_one(t.store.pool())
        .await
        .unwrap();
        assert_eq!(active, distinct, "{backend:?}");
        assert_eq!(active as usize, seen.len(), "{backend:?}");
    }
}
