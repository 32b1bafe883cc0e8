//! A trunk group with no room (every trunk at its channel limit) refuses an attempt before
//! anything is sent (`503 no trunk available` from the router). Such a contact was never
//! dialled: it stays pending and is dialled later, never settled as `failed` and never
//! handed back. SIPp is the carrier; the router allows 2 channels while the grant allows 10.

mod dialer_support;

use callgate_common::wire::{CallOutcome, Uplink};
use dialer_support::*;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_refused_for_want_of_a_free_trunk_stay_pending_and_are_dialled_once() {
    const CONTACTS: u64 = 30;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    rig.trunk_channels = 2;
    rig.start_dialer(carrier.addr, Duration::from_millis(1_500))
        .await;
    let hour = callgate_common::time::UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.settled(Duration::from_secs(180)).await;

    let uplinks = rig.uplinks().await;
    let results: Vec<_> = uplinks
        .iter()
        .filter_map(|u| match u {
            Uplink::AttemptResult(r) => Some(r),
            _ => None,
        })
        .collect();
    let refused_for_room: Vec<_> = results
        .iter()
        .filter(|r| r.outcome == CallOutcome::Failed && r.sip_status == Some(503))
        .collect();
    assert!(
        refused_for_room.is_empty(),
        "{} contacts settled as failed for want of a trunk: {refused_for_room:?}",
        refused_for_room.len()
    );
    let contacts: HashSet<_> = results.iter().map(|r| r.contact).collect();
    assert_eq!(results.len(), CONTACTS as usize, "one result per contact");
    assert_eq!(contacts.len(), CONTACTS as usize, "no contact twice");
    assert!(
        !uplinks
            .iter()
            .any(|u| matches!(u, Uplink::LeaseReturn { .. })),
        "nothing handed back"
    );
    // On the wire: one INVITE per contact, every number once.
    let invites = rig.invites();
    let numbers: HashSet<_> = invites.iter().map(|(_, n, _)| n.clone()).collect();
    assert_eq!(invites.len(), CONTACTS as usize);
    assert_eq!(numbers.len(), CONTACTS as usize);
}
