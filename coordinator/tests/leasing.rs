//! Leases and attempt results on both backends: priority order, one appliance per contact,
//! expiry returns contacts, retries follow the campaign's policy, compliance refuses.

mod common;

use callgate_common::ids::{AttemptId, CampaignId, ContactId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AttemptResult, CallOutcome};
use callgate_coordinator::compliance::{self, NewDnc};
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::leasing::{self, LeaseError};
use common::{at, fresh_store, scheduled_campaign, BACKENDS};

const FIVE: &str = "phone,timezone,urgency,customer_value\n\
+13125550101,America/Chicago,1,0\n\
+13125550102,America/Chicago,9,0\n\
+13125550103,America/Chicago,5,5\n\
+13125550104,America/Chicago,0,1\n\
+13125550105,America/Chicago,3,0\n";

const NOON_CHICAGO: &str = "2026-05-05T17:00:00Z";

fn result(
    campaign: i64,
    contact: i64,
    lease: i64,
    outcome: CallOutcome,
    t: UnixMillis,
) -> AttemptResult {
    AttemptResult {
        attempt: AttemptId::new_v7(),
        call: None,
        campaign: CampaignId(campaign as u64),
        contact: ContactId(contact as u64),
        lease: LeaseId(lease as u64),
        trunk: None,
        started_at: t,
        ended_at: t.plus_millis(20_000),
        outcome,
        sip_status: None,
        post_dial_delay_ms: None,
    }
}

#[tokio::test]
async fn leases_go_by_priority_never_to_two_appliances_and_expiry_returns_them() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[1; 32]);
        let id = scheduled_campaign(&t.store, &vault, "us", FIVE, |_| {}).await;
        let now = at(NOON_CHICAGO);
        let a = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 3, 60_000, now)
            .await
            .unwrap();
        // Priorities 0.6u + 0.4v: 102 → 5.4, 103 → 5.0, 105 → 1.8, 101 → 0.6, 104 → 0.4.
        let numbers: Vec<&str> = a.contacts.iter().map(|c| c.number.as_str()).collect();
        assert_eq!(
            numbers,
            ["+13125550102", "+13125550103", "+13125550105"],
            "{backend:?}"
        );
        let b = leasing::lease_contacts(&t.store, &vault, id, "branch-b", 10, 600_000, now)
            .await
            .unwrap();
        assert_eq!(
            b.contacts.len(),
            2,
            "{backend:?}: only what A does not hold"
        );
        assert!(b
            .contacts
            .iter()
            .all(|c| !numbers.contains(&c.number.as_str())));
        let none = leasing::lease_contacts(&t.store, &vault, id, "branch-b", 10, 60_000, now)
            .await
            .unwrap();
        assert!(none.contacts.is_empty());
        // A's lease expires: its contacts come back, B can take them.
        let later = now.plus_millis(60_000);
        let again = leasing::lease_contacts(&t.store, &vault, id, "branch-b", 10, 60_000, later)
            .await
            .unwrap();
        let mut got: Vec<_> = again.contacts.iter().map(|c| c.number.clone()).collect();
        got.sort();
        let mut want: Vec<_> = numbers.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{backend:?}");
        let err = leasing::lease_contacts(&t.store, &vault, id, "branch-z", 1, 60_000, now)
            .await
            .unwrap_err();
        assert!(matches!(err, LeaseError::NotAssigned(_)), "{err}");
    }
}

#[tokio::test]
async fn concurrent_schedulers_never_lease_one_contact_twice() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[1; 32]);
        let mut csv = String::from("phone,timezone\n");
        for i in 0..60 {
            csv.push_str(&format!("+1312555{:04},America/Chicago\n", 1000 + i));
        }
        let id = scheduled_campaign(&t.store, &vault, "us", &csv, |_| {}).await;
        let now = at(NOON_CHICAGO);
        let mut tasks = Vec::new();
        for n in 0..6 {
            let store = t.store.clone();
            let vault = vault.clone();
            let appliance = if n % 2 == 0 { "branch-a" } else { "branch-b" };
            tasks.push(tokio::spawn(async move {
                leasing::lease_contacts(&store, &vault, id, appliance, 15, 60_000, now).await
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(l) => all.extend(l.contacts.into_iter().map(|c| c.contact_id)),
                // SQLite may report a busy writer under contention; a refused lease is
                // safe, a double lease is not.
                Err(LeaseError::Db(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "{backend:?}: a contact was leased twice");
        assert!(n >= 15, "{backend:?}: at least one lease succeeded");
    }
}

#[tokio::test]
async fn results_schedule_retries_by_outcome_and_a_replay_changes_nothing() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[2; 32]);
        let id = scheduled_campaign(&t.store, &vault, "us", FIVE, |s| {
            s.retry.busy.delay_seconds = 600;
            s.retry.busy.backoff = 2.0;
            s.retry.busy.max_attempts = 2;
        })
        .await;
        let now = at(NOON_CHICAGO);
        let lease = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 1, 60_000, now)
            .await
            .unwrap();
        let contact = lease.contacts[0].contact_id;
        let busy = result(id, contact, lease.id, CallOutcome::Busy, now);
        let applied = leasing::record_attempt(&t.store, "branch-a", &busy)
            .await
            .unwrap();
        assert!(applied.applied);
        assert_eq!(applied.contact_state, "ready");
        let retry_at = busy.ended_at.plus_millis(600_000);
        assert_eq!(applied.next_attempt_at, Some(retry_at.0), "{backend:?}");
        let replay = leasing::record_attempt(&t.store, "branch-a", &busy)
            .await
            .unwrap();
        assert!(!replay.applied, "{backend:?}");
        let (attempts,): (i64,) =
            sqlx::query_as("SELECT attempts FROM campaign_contacts WHERE contact_id = $1")
                .bind(contact)
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        assert_eq!(attempts, 1, "{backend:?}: a replay must not count twice");
        // Not leasable before its retry time, leasable after.
        let before = leasing::lease_contacts(
            &t.store,
            &vault,
            id,
            "branch-b",
            10,
            60_000,
            now.plus_millis(30_000),
        )
        .await
        .unwrap();
        assert!(before.contacts.iter().all(|c| c.contact_id != contact));
        let after = leasing::lease_contacts(
            &t.store,
            &vault,
            id,
            "branch-a",
            10,
            60_000,
            retry_at.plus_millis(70_000),
        )
        .await
        .unwrap();
        let again = after
            .contacts
            .iter()
            .find(|c| c.contact_id == contact)
            .expect("retried");
        assert_eq!(again.attempts, 1);
        let second = result(
            id,
            contact,
            after.id,
            CallOutcome::Busy,
            retry_at.plus_millis(70_000),
        );
        let done = leasing::record_attempt(&t.store, "branch-a", &second)
            .await
            .unwrap();
        assert_eq!(
            done.contact_state, "exhausted",
            "{backend:?}: max_attempts 2 reached"
        );
        let other = after
            .contacts
            .iter()
            .find(|c| c.contact_id != contact)
            .unwrap();
        let human = result(
            id,
            other.contact_id,
            after.id,
            CallOutcome::AnsweredHuman,
            retry_at,
        );
        let r = leasing::record_attempt(&t.store, "branch-a", &human)
            .await
            .unwrap();
        assert_eq!((r.contact_state, r.next_attempt_at), ("done", None));
    }
}

#[tokio::test]
async fn dnc_hours_caps_and_the_uk_lockout_are_enforced_when_leasing() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[3; 32]);
        let id = scheduled_campaign(&t.store, &vault, "uk", FIVE, |_| {}).await;
        compliance::add_dnc(
            &t.store,
            &vault,
            &[NewDnc {
                number: "+13125550102".into(),
                campaign_id: None,
                expires_at: None,
                reason: "asked".into(),
            }],
        )
        .await
        .unwrap();
        // 03:00 in Chicago: outside hours, nothing leases.
        let night = at("2026-05-05T08:00:00Z");
        let l = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 10, 60_000, night)
            .await
            .unwrap();
        assert!(l.contacts.is_empty(), "{backend:?}");
        assert!(l.refused > 0);
        let now = at(NOON_CHICAGO);
        let l = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 10, 60_000, now)
            .await
            .unwrap();
        assert_eq!(
            l.contacts.len(),
            4,
            "{backend:?}: the DNC number is withheld"
        );
        assert!(l.contacts.iter().all(|c| c.number != "+13125550102"));
        // One call abandoned: the UK profile locks the number out for 72 h.
        let victim = l.contacts[0].contact_id;
        leasing::record_attempt(
            &t.store,
            "branch-a",
            &result(id, victim, l.id, CallOutcome::Abandoned, now),
        )
        .await
        .unwrap();
        sqlx::query("UPDATE campaign_contacts SET state = 'ready', next_attempt_at = 0")
            .execute(t.store.pool())
            .await
            .unwrap();
        // Another: no answer twice (UK cap 2 per 24 h) for the second contact.
        let capped = l.contacts[1].contact_id;
        for k in 0..2 {
            leasing::record_attempt(
                &t.store,
                "branch-a",
                &result(
                    id,
                    capped,
                    l.id,
                    CallOutcome::NoAnswer,
                    now.plus_millis(k * 1000),
                ),
            )
            .await
            .unwrap();
        }
        sqlx::query("UPDATE campaign_contacts SET state = 'ready', next_attempt_at = 0 WHERE state <> 'blocked'")
            .execute(t.store.pool())
            .await
            .unwrap();
        leasing::return_lease(&t.store, l.id).await.unwrap();
        let soon = now.plus_millis(3_600_000);
        let l2 = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 10, 60_000, soon)
            .await
            .unwrap();
        let ids: Vec<i64> = l2.contacts.iter().map(|c| c.contact_id).collect();
        assert!(
            !ids.contains(&victim),
            "{backend:?}: locked out after abandon"
        );
        assert!(!ids.contains(&capped), "{backend:?}: daily cap reached");
        assert_eq!(ids.len(), 2, "{backend:?}");
        // 73 h later (at noon again, 3 days on) the lockout is over and the cap rolled off.
        let later = now.plus_millis(73 * 3_600_000 + 23 * 3_600_000);
        leasing::return_lease(&t.store, l2.id).await.unwrap();
        let l3 = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 10, 60_000, later)
            .await
            .unwrap();
        let ids: Vec<i64> = l3.contacts.iter().map(|c| c.contact_id).collect();
        assert!(
            ids.contains(&victim) && ids.contains(&capped),
            "{backend:?}: {ids:?}"
        );
    }
}

#[tokio::test]
async fn pacing_grants_split_the_abandon_budget_by_share_and_stop_when_paused() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[4; 32]);
        let mut csv = String::from("phone,timezone\n");
        for i in 0..100 {
            csv.push_str(&format!("+1312555{:04},America/Chicago\n", 2000 + i));
        }
        let id = scheduled_campaign(&t.store, &vault, "us", &csv, |s| {
            s.dial_mode = callgate_coordinator::campaigns::DialMode::Predictive;
        })
        .await;
        let now = at(NOON_CHICAGO);
        let l = leasing::lease_contacts(&t.store, &vault, id, "branch-b", 100, 60_000, now)
            .await
            .unwrap();
        assert_eq!(l.contacts.len(), 100);
        for c in &l.contacts {
            leasing::record_attempt(
                &t.store,
                "branch-b",
                &result(id, c.contact_id, l.id, CallOutcome::AnsweredHuman, now),
            )
            .await
            .unwrap();
        }
        // 100 live answers at 3 %: 3 abandons allowed; branch-b holds 3 of 4 shares.
        let g = leasing::pacing_grant(&t.store, id, "branch-b", 30, 60, 30_000, now)
            .await
            .unwrap();
        assert_eq!((g.max_concurrent, g.max_attempts_per_minute), (30, 60));
        assert_eq!(g.abandon_budget, 2, "{backend:?}: floor(3 * 3/4)");
        assert_eq!(g.expires_at, now.0 + 30_000);
        callgate_coordinator::campaigns::apply(
            &t.store,
            id,
            callgate_coordinator::campaigns::CampaignAction::Pause,
        )
        .await
        .unwrap();
        let g = leasing::pacing_grant(&t.store, id, "branch-a", 30, 60, 30_000, now)
            .await
            .unwrap();
        assert_eq!(
            g.max_concurrent, 0,
            "{backend:?}: a paused campaign grants nothing"
        );
    }
}

#[tokio::test]
async fn a_late_result_from_an_expired_lease_counts_but_does_not_free_the_new_holder() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[5; 32]);
        let id = scheduled_campaign(&t.store, &vault, "us", FIVE, |_| {}).await;
        let now = at(NOON_CHICAGO);
        let old = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 1, 60_000, now)
            .await
            .unwrap();
        let contact = old.contacts[0].contact_id;
        let later = now.plus_millis(61_000);
        let new = leasing::lease_contacts(&t.store, &vault, id, "branch-b", 1, 600_000, later)
            .await
            .unwrap();
        assert_eq!(
            new.contacts[0].contact_id, contact,
            "{backend:?}: re-leased after expiry"
        );
        let late = result(id, contact, old.id, CallOutcome::NoAnswer, now);
        let applied = leasing::record_attempt(&t.store, "branch-a", &late)
            .await
            .unwrap();
        assert_eq!(applied.contact_state, "leased", "{backend:?}");
        // Still held by B: nobody else can lease it, and B's own result is applied fully.
        let other = leasing::lease_contacts(&t.store, &vault, id, "branch-a", 10, 60_000, later)
            .await
            .unwrap();
        assert!(
            other.contacts.iter().all(|c| c.contact_id != contact),
            "{backend:?}"
        );
        let mine = result(id, contact, new.id, CallOutcome::AnsweredHuman, later);
        let done = leasing::record_attempt(&t.store, "branch-b", &mine)
            .await
            .unwrap();
        assert_eq!(done.contact_state, "done");
        let (attempts,): (i64,) =
            sqlx::query_as("SELECT attempts FROM campaign_contacts WHERE contact_id = $1")
                .bind(contact)
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        assert_eq!(attempts, 2, "{backend:?}: both attempts count");
    }
}
