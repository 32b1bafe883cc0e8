//! A do-not-call delta applied through the store in the middle of a campaign (as the sync
//! link applies it) stops those numbers at the very next dial: never dialled, handed back
//! with the rule that refused them.

mod dialer_support;

use callgate_common::compliance::{DncEntry, DncScope};
use callgate_common::ids::ContactId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{DncDelta, Downlink, Uplink};
use dialer_support::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dnc_delta_mid_campaign_stops_its_numbers() {
    const CONTACTS: u64 = 10;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(1, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    let mut invites = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while invites.is_empty() {
        assert!(Instant::now() < deadline, "the campaign did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
        invites.extend(rig.invites());
    }
    // One call at a time: the last five contacts are far from being dialled.
    let blocked: Vec<u64> = (5..CONTACTS).collect();
    rig.feed(Downlink::DncDelta(DncDelta {
        added: blocked
            .iter()
            .map(|i| {
                (
                    number(*i),
                    DncEntry {
                        scope: DncScope::Global,
                        expires_at: None,
                    },
                )
            })
            .collect(),
        cleared: vec![],
    }))
    .await;
    rig.settled(Duration::from_secs(60)).await;
    invites.extend(rig.invites());
    let dialled: BTreeSet<String> = invites.iter().map(|(_, n, _)| n.clone()).collect();
    assert_eq!(dialled.len(), 5, "{dialled:?}");
    for i in &blocked {
        assert!(
            !dialled.contains(&number(*i).e164()),
            "{i} dialled after its DNC entry"
        );
    }
    let mut refused = BTreeSet::new();
    for u in rig.uplinks().await {
        if let Uplink::LeaseReturn {
            contacts, reason, ..
        } = u
        {
            assert_eq!(
                reason,
                "refused at dial: number is on the global do-not-call list"
            );
            refused.extend(contacts);
        }
    }
    assert_eq!(
        refused,
        blocked
            .iter()
            .map(|i| ContactId(*i))
            .collect::<BTreeSet<_>>()
    );
    rig.dialer.take().unwrap().stop().await;
}
