//! A cloud outage in the middle of a campaign: the holdings were fed through the store (no
//! coordinator runs at all), the lease expires mid-campaign, dialling goes on until then
//! and not one INVITE leaves after the expiry; the undialled rest is handed back.

mod dialer_support;

use callgate_common::time::UnixMillis;
use callgate_common::wire::Uplink;
use dialer_support::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_continues_until_the_lease_expires_and_not_one_invite_after() {
    const CONTACTS: u64 = 400;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    // The instant and the wall clock together, to place the expiry on the wire log's clock.
    let (i0, u0) = (Instant::now(), UnixMillis::now());
    let expires = u0.plus_millis(6_000);
    let expiry_instant = i0 + Duration::from_millis(6_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, expires, |_| false)).await;
    rig.feed(grant(8, u0.plus_millis(3_600_000))).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    // Well past the expiry: calls in flight at the expiry finish (2.5 s ring timeout at most).
    tokio::time::sleep(Duration::from_secs(6)).await;
    rig.settled(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let invites = rig.invites();
    assert!(
        invites.len() >= 16,
        "dialling went on until the expiry: {} INVITEs",
        invites.len()
    );
    assert!((invites.len() as u64) < CONTACTS, "the lease ran out first");
    let last = invites.iter().map(|(at, _, _)| *at).max().unwrap();
    assert!(
        last < expiry_instant,
        "an INVITE left {:?} after the lease expired",
        last - expiry_instant
    );
    // Dialling was still going on in the last two seconds before the expiry.
    assert!(
        invites
            .iter()
            .any(|(at, _, _)| *at + Duration::from_secs(2) > expiry_instant),
        "dialling stopped early"
    );
    let uplinks = rig.uplinks().await;
    let results: Vec<_> = uplinks
        .iter()
        .filter_map(|u| match u {
            Uplink::AttemptResult(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), invites.len(), "one result per INVITE");
    assert!(results.iter().all(|r| r.started_at < expires));
    let returned: Vec<_> = uplinks
        .iter()
        .filter_map(|u| match u {
            Uplink::LeaseReturn {
                contacts, reason, ..
            } => Some((contacts.len(), reason.clone())),
            _ => None,
        })
        .collect();
    let handed_back: usize = returned.iter().map(|(n, _)| n).sum();
    assert_eq!(
        handed_back + results.len(),
        CONTACTS as usize,
        "{returned:?}"
    );
    assert!(
        returned.iter().all(|(_, r)| r.contains("lease expired")
            || r.contains("expires before the INVITE")
            || r.contains("expired while the attempt")),
        "{returned:?}"
    );
    let status = rig.dialer.as_ref().unwrap().status().borrow().clone();
    assert_eq!(status[0].pending, 0);
    assert_eq!(status[0].in_flight, 0);
    rig.dialer.take().unwrap().stop().await;
    let errors = carrier.errors();
    if !errors.is_empty() {
        eprintln!("SIPp reported (counted on the dialer's side instead):\n{errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_stops_the_campaign_and_the_status_says_why() {
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let u0 = UnixMillis::now();
    let grant_expires = u0.plus_millis(4_000);
    let expiry_instant = Instant::now() + Duration::from_millis(4_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..300, u0.plus_millis(3_600_000), |_| false))
        .await;
    rig.feed(grant(4, grant_expires)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    rig.settled(Duration::from_secs(30)).await;
    let invites = rig.invites();
    assert!(!invites.is_empty());
    assert!(invites.iter().all(|(at, _, _)| *at < expiry_instant));
    let status = rig.dialer.as_ref().unwrap().status().borrow().clone();
    match &status[0].run {
        callgate_appliance::dialer::CampaignRun::Stopped(why) => {
            assert!(why.contains("pacing grant expired"), "{why}")
        }
        other => panic!("campaign not stopped: {other:?}"),
    }
    assert_eq!(
        status[0].returned as usize + invites.len(),
        300,
        "{status:?}"
    );
    rig.dialer.take().unwrap().stop().await;
}
