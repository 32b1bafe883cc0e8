//! Coordinator replicas sharing one database, as the sync room sees them: the appliance
//! buckets are split between the live replicas and move to the survivor when one falls
//! silent; and only the replica leading the lease scheduler feeds the boxes (rosters,
//! routing, do-not-call deltas). Virtual time: every `now` is passed in.

mod common;

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
