//! Coordinator replicas sharing one database, as the sync room sees them: the appliance
//! buckets are split between the live replicas and move to the survivor when one falls
//! silent; and only the replica leading the lease scheduler feeds the boxes (rosters,
//! routing, do-not-call deltas). Virtual time: every `now` is passed in.

mod common;

use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::Downlink;
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::leasing::scheduler::{DialerFeedConfig, Scheduler};
use callgate_coordinator::store::Store;
use callgate_coordinator::sync::downlink::DownlinkOutboxes;
use callgate_coordinator::sync::feed::{pass, Feed};
use callgate_coordinator::sync::ownership::{BucketOwnership, BUCKETS};
use common::{at, fresh_store, BACKENDS};
use std::sync::Arc;
use std::time::Duration;

const NOON: &str = "2026-05-05T17:00:00Z";

/// The appliances (of 200 names) each of `replicas` owns; panics if one is owned twice.
fn owners(replicas: &[&BucketOwnership]) -> Vec<usize> {
    let mut counts = vec![0; replicas.len()];
    for i in 0..200 {
        let name = format!("branch-{i}");
        let who: Vec<usize> = (0..replicas.len())
            .filter(|r| replicas[*r].owns(&name))
            .collect();
        assert!(who.len() <= 1, "{name} owned by {who:?}");
        if let Some(r) = who.first() {
            counts[*r] += 1;
        }
    }
    counts
}

#[tokio::test]
async fn replicas_split_the_appliance_buckets_and_the_survivor_takes_all_after_the_ttl() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let ttl = Duration::from_secs(10);
        let a = BucketOwnership::replica("a", ttl);
        let b = BucketOwnership::replica("b", ttl);
        let t0 = at(NOON).0;
        let now = |ms: i64| UnixMillis(t0 + ms);

        assert_eq!(
            a.round(&t.store, now(0)).await.unwrap(),
            BUCKETS,
            "{backend:?}: alone, a holds all"
        );
        assert_eq!(owners(&[&a, &b]), vec![200, 0]);
        // b joins: it sees a's buckets held, a gives up b's half, b takes it next round.
        assert_eq!(
            b.round(&t.store, now(1_000)).await.unwrap(),
            0,
            "{backend:?}: held buckets are not taken"
        );
        assert_eq!(a.round(&t.store, now(2_000)).await.unwrap(), BUCKETS / 2);
        assert_eq!(b.round(&t.store, now(3_000)).await.unwrap(), BUCKETS / 2);
        let split = owners(&[&a, &b]);
        assert_eq!(
            split.iter().sum::<usize>(),
            200,
            "{backend:?}: every appliance has an owner"
        );
        assert!(split[0] > 50 && split[1] > 50, "{backend:?}: {split:?}");
        // Rounds go on: nothing moves.
        let epoch = b.epoch();
        a.round(&t.store, now(5_000)).await.unwrap();
        b.round(&t.store, now(6_000)).await.unwrap();
        assert_eq!(owners(&[&a, &b]), split);
        assert_eq!(
            b.epoch(),
            epoch,
            "a steady split does not disturb the apply path"
        );

        // a falls silent at 5 s: until its rows expire b keeps its half, then takes all.
        assert_eq!(b.round(&t.store, now(14_999)).await.unwrap(), BUCKETS / 2);
        assert_eq!(
            b.round(&t.store, now(15_000)).await.unwrap(),
            BUCKETS,
            "{backend:?}"
        );
        assert!(b.epoch() > epoch);
        // a comes back: it holds nothing until b hands its half over.
        assert_eq!(a.round(&t.store, now(15_500)).await.unwrap(), 0);
        assert_eq!(owners(&[&a, &b]), vec![0, 200]);
        b.round(&t.store, now(16_000)).await.unwrap();
        a.round(&t.store, now(16_500)).await.unwrap();
        assert_eq!(
            owners(&[&a, &b]),
            split,
            "{backend:?}: the same split as before"
        );

        // A clean shutdown hands over at once.
        a.release_all(&t.store).await.unwrap();
        assert_eq!(b.round(&t.store, now(17_000)).await.unwrap(), BUCKETS);
    }
}

async fn enrol(store: &Store, name: &str) {
    sqlx::query(
        "INSERT INTO appliances (name, site, state, created_at) VALUES ($1, 'hq', 'enrolled', 0)",
    )
    .bind(name)
    .execute(store.pool())
    .await
    .unwrap();
}

async fn rosters(store: &Store, app: &str) -> Vec<u64> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT body FROM sync_downlink WHERE appliance = $1 ORDER BY id")
            .bind(app)
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter()
        .filter_map(|(b,)| match postcard::from_bytes(&b).unwrap() {
            Downlink::AgentRoster(r) => Some(r.version),
            _ => None,
        })
        .collect()
}

async fn add_agent(store: &Store, login: &str) {
    let agent: callgate_coordinator::agents::NewAgent = serde_json::from_value(serde_json::json!({
        "name": login, "branch": "branch-a", "sip_username": format!("1{}", login.len()),
        "login": login, "password": "correct horse", "groups": []
    }))
    .unwrap();
    callgate_coordinator::agents::create_agent(store, agent)
        .await
        .unwrap();
}

struct Replica {
    scheduler: Scheduler,
    feed: Feed,
}

fn replica(store: &Store, id: &str) -> Replica {
    let vault = NumberVault::from_master_key(&[1; 32]);
    let outboxes = Arc::new(DownlinkOutboxes::new(store.pool().clone()));
    let config = DialerFeedConfig {
        replica_id: Some(id.into()),
        leader_ttl_secs: 30,
        ..DialerFeedConfig::default()
    };
    Replica {
        scheduler: Scheduler::new(store.clone(), vault.clone(), outboxes.clone(), config),
        feed: Feed::new(store.clone(), vault, outboxes),
    }
}

#[tokio::test]
async fn only_the_replica_leading_the_scheduler_feeds_the_boxes() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let t0 = at(NOON);
        enrol(&t.store, "branch-a").await;
        add_agent(&t.store, "ada").await;
        let (a, b) = (replica(&t.store, "a"), replica(&t.store, "b"));

        let led = pass(&a.scheduler, &a.feed, t0).await;
        assert!(led.feed.is_some(), "{backend:?}: the leader feeds");
        assert_eq!(rosters(&t.store, "branch-a").await, vec![1]);

        add_agent(&t.store, "grace").await;
        let follower = pass(&b.scheduler, &b.feed, t0.plus_millis(1_000)).await;
        assert!(!follower.scheduler.unwrap().led);
        assert!(
            follower.feed.is_none(),
            "{backend:?}: a follower does not feed"
        );
        assert_eq!(
            rosters(&t.store, "branch-a").await,
            vec![1],
            "{backend:?}: the roster change waits for the leader"
        );
        pass(&a.scheduler, &a.feed, t0.plus_millis(2_000)).await;
        assert_eq!(rosters(&t.store, "branch-a").await, vec![1, 2]);

        // a falls silent: once its lease has run out, b leads and feeds.
        add_agent(&t.store, "hedy").await;
        let early = pass(&b.scheduler, &b.feed, t0.plus_millis(31_999)).await;
        assert!(early.feed.is_none());
        let took = pass(&b.scheduler, &b.feed, t0.plus_millis(32_000)).await;
        assert!(took.feed.is_some(), "{backend:?}");
        assert_eq!(rosters(&t.store, "branch-a").await, vec![1, 2, 3]);
    }
}

fn cert(n: u32) -> Downlink {
    Downlink::Certificate {
        pem: format!("c{n}"),
    }
}

/// What `out` publishes now, as (sequence number, message).
async fn published(out: &DownlinkOutboxes) -> Vec<(u64, Downlink)> {
    out.due()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, t, b)| (t.seq, b))
        .collect()
}

/// The scheduler's leader storing a message for a box another replica owns, while that
/// owner stores its own: both pick the next free id from what they know, the table's key
/// refuses the second row, and that sender must store under a fresh id instead of failing
/// (or, worse, of losing either message).
#[tokio::test]
async fn an_owner_whose_downlink_id_was_taken_by_another_replica_stores_under_the_next_one() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let ttl = Duration::from_secs(10);
        let (own_a, own_b) = (
            Arc::new(BucketOwnership::replica("a", ttl)),
            Arc::new(BucketOwnership::replica("b", ttl)),
        );
        for (i, o) in [&own_a, &own_b, &own_a, &own_b].into_iter().enumerate() {
            o.round(&t.store, UnixMillis(1_000 + i as i64))
                .await
                .unwrap();
        }
        let app = (0..)
            .map(|i| ApplianceId::new(format!("branch-{i}")).unwrap())
            .find(|x| own_a.owns(x.as_str()))
            .unwrap();
        let a = DownlinkOutboxes::owned_by(t.store.pool().clone(), own_a);
        let b = DownlinkOutboxes::owned_by(t.store.pool().clone(), own_b);
        let now = std::time::Instant::now();
        a.connected(&app, now).await.unwrap();
        a.send(&app, &cert(0)).await.unwrap();
        assert_eq!(published(&a).await, vec![(1, cert(0))], "{backend:?}");

        // b reads the table (id 1) and stores id 2; a's live core still takes 2 for free.
        b.send(&app, &cert(1)).await.unwrap();
        a.send(&app, &cert(2))
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: a collision reached the caller: {e}"));
        let ids: Vec<(i64,)> =
            sqlx::query_as("SELECT id FROM sync_downlink WHERE appliance = $1 ORDER BY id")
                .bind(app.as_str())
                .fetch_all(t.store.pool())
                .await
                .unwrap();
        assert_eq!(ids, vec![(1,), (2,), (3,)], "{backend:?}: both rows stored");

        // Still online after reloading its core: what was in flight may go again under its
        // own sequence number; the other two follow, each once.
        let out = published(&a).await;
        assert!(
            out.iter().all(|m| m.0 != 1 || m.1 == cert(0)),
            "{backend:?}: {out:?}"
        );
        let new: Vec<_> = out.into_iter().filter(|m| m.0 > 1).collect();
        assert_eq!(new, vec![(2, cert(1)), (3, cert(2))], "{backend:?}");
        assert!(published(&b).await.is_empty(), "{backend:?}: b never sends");
        a.acked(&app, now, 3).await.unwrap();
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sync_downlink")
            .fetch_one(t.store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0, "{backend:?}: acked rows are deleted");
    }
}
