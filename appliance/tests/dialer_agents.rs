//! Agent availability and preview requests reach the executor through the running dialer:
//! a progressive campaign never has more attempts in flight than ready agents, and a preview
//! agent's contact is dialled once, when the agent asks.

mod dialer_support;

use callgate_common::ids::{AgentId, ContactId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{DialMode, Uplink};
use callgate_pacing::AgentState;
use dialer_support::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progressive_campaign_keeps_one_attempt_per_ready_agent() {
    const CONTACTS: u64 = 12;
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(brief(DialMode::Progressive, all_day())).await;
    rig.feed(lease(1, 0..CONTACTS, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rig.invites().is_empty(), "no agent ready, nothing dialled");
    let dialer = rig.dialer.as_ref().unwrap();
    dialer.agent(AgentId(1), AgentState::Ready).unwrap();
    dialer.agent(AgentId(2), AgentState::Ready).unwrap();
    let status = dialer.status();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut most = 0;
    loop {
        let s = status.borrow().clone();
        most = most.max(s[0].in_flight);
        if s[0].pending == 0 && s[0].in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "campaign not finished: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most, 2, "two ready agents: two attempts at a time");
    rig.settled(Duration::from_secs(10)).await;
    assert_eq!(rig.invites().len(), CONTACTS as usize);
    rig.dialer.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_contact_is_dialled_once_when_the_agent_asks() {
    let carrier = Carrier::start();
    let mut rig = Rig::new().await;
    let hour = UnixMillis::now().plus_millis(3_600_000);
    rig.feed(brief(DialMode::Preview, all_day())).await;
    rig.feed(lease(1, 0..3, hour, |_| false)).await;
    rig.feed(grant(10, hour)).await;
    rig.start_dialer(carrier.addr, Duration::from_millis(2_500))
        .await;
    let dialer = rig.dialer.take().unwrap();
    dialer.agent(AgentId(7), AgentState::Ready).unwrap();
    let (_, shown) = dialer
        .request_preview(AgentId(7), CAMPAIGN)
        .await
        .unwrap()
        .expect("a contact to preview");
    assert_eq!(shown.contact, ContactId(0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rig.invites().is_empty(),
        "nothing dialled before the agent asks"
    );
    dialer.dial_preview(AgentId(7)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let results: Vec<_> = rig
            .uplinks()
            .await
            .into_iter()
            .filter_map(|u| match u {
                Uplink::AttemptResult(r) => Some(r),
                _ => None,
            })
            .collect();
        if !results.is_empty() {
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].contact, ContactId(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the previewed call did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let invites = rig.invites();
    assert_eq!(invites.len(), 1);
    assert_eq!(invites[0].1, number(0).e164());
    dialer.stop().await;
}
