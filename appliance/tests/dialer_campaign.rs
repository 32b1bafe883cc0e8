//! A 200-contact agentless campaign against SIPp as the carrier (random busy, no answer,
//! answered, customer hang-ups): every contact is accounted for exactly once, nobody is
//! dialled twice, and contacts whose calling window is closed are never dialled and are
//! handed back with the reason.

mod dialer_support;

use callgate_common::ids::ContactId;
use callgate_common::time::UnixMillis;
use callgate_common::wire::{CallOutcome, Uplink};
use dialer_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_contact_agentless_campaign_accounts_for_every_contact_once() {
    const CONTACTS: u64 = 200;
    // Every tenth contact lives twelve hours away, where the window is closed now.
    let closed = |i: u64| i % 10 == 3;
    let dialable = (0..CONTACTS).filter(|i| !closed(*i)).count();
    // SIPp's own call limit is not used to end the test: an INVITE retransmission crossing
    // a fast final response makes SIPp count a second "call" for one INVITE, so the store
    // and the wire log are what is counted.
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(agentless_brief(window_around_now_utc())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, closed)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    // The grant arrives last, while the dialer runs: dialling starts on it.
    rig.feed(grant(20, hour)).await;
    rig.settled(Duration::from_secs(150)).await;

    let uplinks = rig.uplinks().await;
    let mut results: BTreeMap<ContactId, Vec<CallOutcome>> = BTreeMap::new();
    let mut records = 0;
    let mut returned: BTreeMap<ContactId, String> = BTreeMap::new();
    for u in &uplinks {
        match u {
            Uplink::AttemptResult(r) => results.entry(r.contact).or_default().push(r.outcome),
            Uplink::CallRecord(r) => {
                records += 1;
                assert!(r.attempt.is_some() && r.contact.is_some());
            }
            Uplink::LeaseReturn {
                contacts, reason, ..
            } => {
                for c in contacts {
                    assert!(
                        returned.insert(*c, reason.clone()).is_none(),
                        "{c} returned twice"
                    );
                }
            }
            other => panic!("unexpected uplink {other:?}"),
        }
    }
    // Exactly one attempt result per dialable contact, none for the others.
    assert_eq!(results.len(), dialable);
    assert!(results.values().all(|r| r.len() == 1), "one result each");
    assert_eq!(records, dialable, "one call record per attempt");
    for i in 0..CONTACTS {
        let c = ContactId(i);
        if closed(i) {
            assert!(!results.contains_key(&c), "{c} dialled outside its window");
            assert_eq!(
                returned.get(&c).map(String::as_str),
                Some("refused at dial: outside calling hours in Etc/GMT-12")
            );
        } else {
            assert!(results.contains_key(&c), "{c} never dialled");
            assert!(!returned.contains_key(&c));
        }
    }
    // The carrier's random mix shows in the outcomes.
    let mut mix: BTreeMap<String, usize> = BTreeMap::new();
    for o in results.values().flatten() {
        *mix.entry(format!("{o:?}")).or_default() += 1;
    }
    for o in ["AnsweredHuman", "Busy", "NoAnswer"] {
        assert!(mix.get(o).copied().unwrap_or(0) > 5, "{o} in {mix:?}");
    }
    assert_eq!(mix.values().sum::<usize>(), dialable, "{mix:?}");
    // On the wire: one INVITE per dialable contact, every number once, none of the closed.
    let invites = rig.invites();
    assert_eq!(invites.len(), dialable);
    let numbers: BTreeSet<&str> = invites.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(numbers.len(), dialable, "no number dialled twice");
    for i in (0..CONTACTS).filter(|i| closed(*i)) {
        assert!(!numbers.contains(number(i).e164().as_str()));
    }
    let status = rig.dialer.as_ref().unwrap().status().borrow().clone();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].dialled, status[0].refused, status[0].pending),
        (dialable as u32, (CONTACTS as usize - dialable) as u32, 0)
    );
    rig.dialer.take().unwrap().stop().await;
    let errors = carrier.errors();
    if !errors.is_empty() {
        eprintln!("SIPp reported (not asserted, see the comment above):\n{errors}");
    }
}
