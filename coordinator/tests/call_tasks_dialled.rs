//! Call tasks are dialled, not only stored: once a task's preferred time comes, the
//! scheduler's pass puts its customer (the contact with that `external_id`) at the head of
//! the queue of the scheduled campaign running its script; the campaign's lease hands it
//! to an appliance first; each attempt result settles the task with `max_retries`, its
//! webhook queued. Tasks that cannot be placed fail at once, saying why. Both backends.

mod common;

use callgate_common::ids::{AttemptId, CampaignId, ContactId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{AttemptResult, CallOutcome};
use callgate_coordinator::call_tasks::{self, NewCallTask};
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::leasing;
use callgate_coordinator::store::Store;
use common::{at, fresh_store, scheduled_campaign, BACKENDS};

const CUSTOMERS: &str = "phone,timezone,external_id,urgency\n\
+13125550101,America/Chicago,cust-1,9\n\
+13125550102,America/Chicago,cust-2,1\n\
+13125550103,America/Chicago,,5\n";

fn task(customer: &str, script: &str, max_retries: u32, preferred: Option<i64>) -> NewCallTask {
    NewCallTask {
        customer_id: customer.into(),
        script_id: script.into(),
        callback_url: "http://127.0.0.1:9/hook".into(),
        max_retries,
        preferred_time: preferred,
    }
}

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

async fn entry_state(store: &Store, campaign: i64, contact: i64) -> String {
    let (s,): (String,) = sqlx::query_as(
        "SELECT state FROM campaign_contacts WHERE campaign_id = $1 AND contact_id = $2",
    )
    .bind(campaign)
    .bind(contact)
    .fetch_one(store.pool())
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn a_task_is_dialled_first_at_its_preferred_time_and_settled_by_its_results() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let vault = NumberVault::from_master_key(&[7; 32]);
        let campaign = scheduled_campaign(&t.store, &vault, "us", CUSTOMERS, |s| {
            s.script = "renewal-call".into();
        })
        .await;
        let now = at("2026-05-05T16:00:00Z"); // 11:00 in Chicago
        let in_an_hour = now.plus_millis(3_600_000);
        let retried = call_tasks::create(
            &t.store,
            task("cust-2", "renewal-call", 1, Some(in_an_hour.0)),
        )
        .await
        .unwrap();
        let unknown = call_tasks::create(&t.store, task("cust-9", "renewal-call", 0, None))
            .await
            .unwrap();
        let no_campaign = call_tasks::create(&t.store, task("cust-1", "survey", 0, None))
            .await
            .unwrap();

        // Before its time the task is not placed; the two that cannot be placed fail now.
        let r = call_tasks::schedule_due(&t.store, now).await.unwrap();
        assert_eq!((r.enrolled, r.refused), (0, 2), "{backend:?}");
        for (id, says) in [
            (unknown.id, "no contact has external_id \"cust-9\""),
            (
                no_campaign.id,
                "no scheduled campaign runs script \"survey\"",
            ),
        ] {
            let t = call_tasks::get(&t.store, id).await.unwrap();
            assert_eq!(t.state, "failed", "{backend:?}");
            assert_eq!(t.result.unwrap()["detail"], says, "{backend:?}");
            assert_eq!(
                t.delivery.unwrap().state,
                "pending",
                "its webhook is queued"
            );
        }
        assert_eq!(
            call_tasks::get(&t.store, retried.id).await.unwrap().state,
            "queued"
        );

        // At its time it goes to the head of the queue: leased before higher urgencies.
        let r = call_tasks::schedule_due(&t.store, in_an_hour)
            .await
            .unwrap();
        assert_eq!((r.enrolled, r.refused), (1, 0), "{backend:?}");
        let first = leasing::lease_contacts(
            &t.store, &vault, campaign, "branch-a", 1, 600_000, in_an_hour,
        )
        .await
        .unwrap();
        assert_eq!(first.contacts.len(), 1);
        assert_eq!(first.contacts[0].number, "+13125550102", "{backend:?}");
        let contact = first.contacts[0].contact_id;

        // Busy: one retry left, the task waits and the contact is queued again.
        let busy = result(campaign, contact, first.id, CallOutcome::Busy, in_an_hour);
        leasing::record_attempt(&t.store, "branch-a", &busy)
            .await
            .unwrap();
        let task_now = call_tasks::get(&t.store, retried.id).await.unwrap();
        assert_eq!(task_now.state, "queued", "{backend:?}");
        assert!(task_now.delivery.is_none());
        assert_eq!(entry_state(&t.store, campaign, contact).await, "ready");
        // Replaying the same result changes nothing.
        leasing::record_attempt(&t.store, "branch-a", &busy)
            .await
            .unwrap();
        assert_eq!(
            call_tasks::get(&t.store, retried.id).await.unwrap().state,
            "queued"
        );

        // The retry, after the campaign's busy delay: no answer, max_retries used up.
        let later = in_an_hour.plus_millis(20 * 60_000);
        let second =
            leasing::lease_contacts(&t.store, &vault, campaign, "branch-a", 1, 600_000, later)
                .await
                .unwrap();
        assert_eq!(second.contacts[0].contact_id, contact, "{backend:?}");
        leasing::record_attempt(
            &t.store,
            "branch-a",
            &result(campaign, contact, second.id, CallOutcome::NoAnswer, later),
        )
        .await
        .unwrap();
        let done = call_tasks::get(&t.store, retried.id).await.unwrap();
        assert_eq!(done.state, "failed", "{backend:?}");
        let r = done.result.unwrap();
        assert_eq!(
            (r["attempts"].as_i64(), r["detail"].as_str()),
            (Some(2), Some("last attempt: no_answer"))
        );
        assert_eq!(done.delivery.unwrap().state, "pending");
        assert_eq!(
            entry_state(&t.store, campaign, contact).await,
            "exhausted",
            "{backend:?}: not dialled again for the task though the campaign's policy would"
        );

        // A task answered by a person completes on its first attempt.
        let answered = call_tasks::create(&t.store, task("cust-1", "renewal-call", 3, None))
            .await
            .unwrap();
        let r = call_tasks::schedule_due(&t.store, later).await.unwrap();
        assert_eq!(r.enrolled, 1);
        let third =
            leasing::lease_contacts(&t.store, &vault, campaign, "branch-a", 1, 600_000, later)
                .await
                .unwrap();
        assert_eq!(third.contacts[0].number, "+13125550101", "{backend:?}");
        leasing::record_attempt(
            &t.store,
            "branch-a",
            &result(
                campaign,
                third.contacts[0].contact_id,
                third.id,
                CallOutcome::AnsweredHuman,
                later,
            ),
        )
        .await
        .unwrap();
        let done = call_tasks::get(&t.store, answered.id).await.unwrap();
        assert_eq!(done.state, "completed", "{backend:?}");
        assert_eq!(done.result.unwrap()["attempts"], 1);
    }
}
