//! The dialer stopped in the middle of a campaign (calls in flight) and started again on
//! the same store: the interrupted attempts are settled, never dialled again, and the rest
//! of the campaign is dialled once each.

mod dialer_support;

use callgate_common::ids::ContactId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, Uplink};
use dialer_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_campaign_never_dials_a_contact_twice() {
    const CONTACTS: u64 = 80;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    let mut invites = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while invites.len() < 30 {
        assert!(Instant::now() < deadline, "the campaign did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
        invites.extend(rig.invites());
    }
    // Stop with calls in flight, as a crash would leave them, then start again.
    rig.dialer.take().unwrap().abort().await;
    invites.extend(rig.invites());
    let first_run = invites.len();
    let (interrupted,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM dialer_contacts WHERE state = 'dialling' AND result IS NULL",
    )
    .fetch_one(rig.store.pool())
    .await
    .unwrap();
    assert!(interrupted > 0, "some attempts were in flight at the stop");
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    rig.settled(Duration::from_secs(90)).await;
    invites.extend(rig.invites());

    assert_eq!(
        invites.len(),
        CONTACTS as usize,
        "{first_run} before the stop"
    );
    let numbers: BTreeSet<&str> = invites.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(numbers.len(), CONTACTS as usize, "no number dialled twice");
    let mut results: BTreeMap<ContactId, Vec<CallOutcome>> = BTreeMap::new();
    for u in rig.uplinks().await {
        if let Uplink::AttemptResult(r) = u {
            results.entry(r.contact).or_default().push(r.outcome);
        }
    }
    assert_eq!(results.len(), CONTACTS as usize);
    assert!(
        results.values().all(|r| r.len() == 1),
        "exactly one attempt result per contact"
    );
    let failed = results
        .values()
        .filter(|r| r[0] == CallOutcome::Failed)
        .count() as i64;
    assert!(
        failed >= interrupted,
        "interrupted attempts reported as failed"
    );
    rig.dialer.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_and_commits_every_call_and_a_restart_dials_the_rest_once() {
    const CONTACTS: u64 = 60;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    let mut invites = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while invites.len() < 20 {
        assert!(Instant::now() < deadline, "the campaign did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
        invites.extend(rig.invites());
    }
    rig.dialer.take().unwrap().stop().await;
    invites.extend(rig.invites());
    let sent_before_stop = invites.len();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM dialer_contacts GROUP BY state ORDER BY state")
            .fetch_all(rig.store.pool())
            .await
            .unwrap();
    let count = |s: &str| {
        states
            .iter()
            .find(|(n, _)| n == s)
            .map_or(0, |(_, c)| *c as usize)
    };
    assert_eq!(
        count("dialling"),
        0,
        "every call ended and committed: {states:?}"
    );
    assert_eq!(count("done"), sent_before_stop, "{states:?}");
    assert_eq!(count("pending"), CONTACTS as usize - sent_before_stop);
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    rig.settled(Duration::from_secs(90)).await;
    invites.extend(rig.invites());
    let numbers: BTreeSet<&str> = invites.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(invites.len(), CONTACTS as usize);
    assert_eq!(numbers.len(), CONTACTS as usize, "no number dialled twice");
    let results = rig
        .uplinks()
        .await
        .into_iter()
        .filter(|u| matches!(u, Uplink::AttemptResult(_)))
        .count();
    assert_eq!(results, CONTACTS as usize);
    rig.dialer.take().unwrap().stop().await;
}
