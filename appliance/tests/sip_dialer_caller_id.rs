//! A campaign whose caller ID is malformed (spaces) never reaches the wire: the dialer
//! refuses each attempt before anything is recorded or sent, and hands the contacts back
//! to the coordinator with the reason — none is lost or settled as failed. SIPp is the
//! carrier and sees no INVITE.

mod dialer_support;

use callgate_common::wire::{Downlink, Uplink};
use dialer_support::*;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_campaign_caller_id_is_refused_and_its_contacts_are_handed_back_unsent() {
    const CONTACTS: u64 = 3;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    rig.start_dialer(carrier.addr, Duration::from_millis(1_500))
        .await;
    let hour = callgate_common::time::UnixMillis::now().plus_millis(3_600_000);
    let Downlink::Campaign(mut brief) = agentless_brief(all_day()) else {
        panic!("a campaign brief")
    };
    brief.caller_id = "+44 20 7946 0000".into();
    rig.feed(Downlink::Campaign(brief)).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.settled(Duration::from_secs(120)).await;

    let uplinks = rig.uplinks().await;
    let mut returned = HashSet::new();
    for u in &uplinks {
        match u {
            Uplink::LeaseReturn {
                contacts, reason, ..
            } => {
                assert!(
                    reason.contains("caller ID `+44 20 7946 0000` refused")
                        && reason.contains("no spaces"),
                    "the reason names the caller ID and its fault: {reason}"
                );
                returned.extend(contacts.iter().copied());
            }
            Uplink::AttemptResult(r) => panic!("nothing was dialled, yet: {r:?}"),
            _ => {}
        }
    }
    assert_eq!(returned.len(), CONTACTS as usize, "{uplinks:?}");
    assert!(rig.invites().is_empty(), "no INVITE left the box");
}
