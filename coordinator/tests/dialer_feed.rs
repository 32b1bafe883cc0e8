//! The lease scheduler and the appliance feed on both backends: what each appliance's
//! downlink outbox receives (decoded from `sync_downlink`) after scheduler passes in
//! virtual time — top-up by share, chunking under the payload limit, revocation on pause,
//! grant refresh, DNC deltas only to holders, rosters and routing versions — and the
//! uplinks that come back (lease returns, agent events, attempt results).

mod common;

use callgate_common::compliance::DncScope;
use callgate_common::ids::{AgentId, ApplianceId, AttemptId, CampaignId, ContactId, LeaseId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AgentEvent, AgentState, AttemptResult, CallOutcome, Downlink, Uplink, UplinkEnvelope,
    MAX_PAYLOAD_BYTES,
};
use callgate_coordinator::campaigns::{self, CampaignAction};
use callgate_coordinator::compliance::{self, NewDnc};
use callgate_coordinator::contacts::vault::NumberVault;
use callgate_coordinator::leasing::push::envelope_len;
use callgate_coordinator::leasing::scheduler::{DialerFeedConfig, Scheduler};
use callgate_coordinator::store::Store;
use callgate_coordinator::sync::apply::apply_uplink;
use callgate_coordinator::sync::downlink::DownlinkOutboxes;
use callgate_coordinator::sync::feed::Feed;
use callgate_coordinator::sync::presence;
use common::{at, fresh_store, scheduled_campaign, BACKENDS};
use std::sync::Arc;

const NOON_CHICAGO: &str = "2026-05-05T17:00:00Z";

fn csv(n: usize, notes_bytes: usize) -> String {
    let mut s = String::from("phone,timezone,notes\n");
    for i in 0..n {
        s.push_str(&format!(
            "+1312555{:04},America/Chicago,{}\n",
            1000 + i,
            "n".repeat(notes_bytes)
        ));
    }
    s
}

struct Rig {
    vault: NumberVault,
    scheduler: Scheduler,
    feed: Feed,
}

async fn enrol(store: &Store, name: &str, online: bool, now: UnixMillis) {
    sqlx::query(
        "INSERT INTO appliances (name, site, state, created_at) VALUES ($1, 'hq', 'enrolled', 0)",
    )
    .bind(name)
    .execute(store.pool())
    .await
    .unwrap();
    let app = ApplianceId::new(name).unwrap();
    if online {
        presence::hello(store.pool(), &app, "1.0.0", now)
            .await
            .unwrap();
    }
}

fn rig(store: &Store, config: DialerFeedConfig) -> Rig {
    let vault = NumberVault::from_master_key(&[1; 32]);
    let outboxes = Arc::new(DownlinkOutboxes::new(store.pool().clone()));
    Rig {
        vault: vault.clone(),
        scheduler: Scheduler::new(store.clone(), vault.clone(), outboxes.clone(), config),
        feed: Feed::new(store.clone(), vault, outboxes),
    }
}

impl Rig {
    async fn pass(&self, now: UnixMillis) {
        self.scheduler.tick(now).await.unwrap();
        self.feed.tick(now).await.unwrap();
    }
}

/// Everything in `app`'s outbox, oldest first, as decoded messages.
async fn outbox(store: &Store, app: &str) -> Vec<Downlink> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT body FROM sync_downlink WHERE appliance = $1 ORDER BY id")
            .bind(app)
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter()
        .map(|(b,)| postcard::from_bytes(&b).unwrap())
        .collect()
}

async fn clear_outbox(store: &Store) {
    sqlx::query("DELETE FROM sync_downlink")
        .execute(store.pool())
        .await
        .unwrap();
}

fn leased_contacts(msgs: &[Downlink]) -> Vec<(LeaseId, ContactId)> {
    msgs.iter()
        .filter_map(|m| match m {
            Downlink::ContactLease(l) => Some(l.contacts.iter().map(|c| (l.lease, c.contact))),
            _ => None,
        })
        .flatten()
        .collect()
}

fn small_pool() -> DialerFeedConfig {
    DialerFeedConfig {
        lease_pool: 20,
        ..DialerFeedConfig::default()
    }
}

#[tokio::test]
async fn leases_are_topped_up_to_each_appliances_share_and_no_further() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let id = scheduled_campaign(&t.store, &r.vault, "us", &csv(60, 0), |_| {}).await;
        enrol(&t.store, "branch-a", true, now).await;
        enrol(&t.store, "branch-b", true, now).await;
        r.pass(now).await;
        let a = outbox(&t.store, "branch-a").await;
        let b = outbox(&t.store, "branch-b").await;
        // Shares 1 and 3 of a pool of 20.
        assert_eq!(leased_contacts(&a).len(), 5, "{backend:?}");
        assert_eq!(leased_contacts(&b).len(), 15, "{backend:?}");
        let first_brief = a.iter().position(|m| matches!(m, Downlink::Campaign(_)));
        let first_grant = a.iter().position(|m| matches!(m, Downlink::PacingGrant(_)));
        let first_lease = a
            .iter()
            .position(|m| matches!(m, Downlink::ContactLease(_)));
        assert!(
            first_brief < first_grant && first_grant < first_lease,
            "brief, then grant, then lease: {a:?}"
        );
        match &a[first_brief.unwrap()] {
            Downlink::Campaign(c) => {
                assert_eq!(c.campaign, CampaignId(id as u64));
                assert!(c.running);
                assert_eq!(c.version, 1);
            }
            other => panic!("{other:?}"),
        }
        let Downlink::ContactLease(lease) = &a[first_lease.unwrap()] else {
            unreachable!()
        };
        let c = &lease.contacts[0];
        assert!(c.number.e164().starts_with("+1312555"), "the number itself");
        assert_eq!(c.time_zones, vec!["America/Chicago".to_string()]);
        assert!(c.fields.iter().any(|(k, _)| k == "notes"), "{:?}", c.fields);
        let mut all: Vec<_> = leased_contacts(&a).into_iter().map(|x| x.1).collect();
        all.extend(leased_contacts(&b).into_iter().map(|x| x.1));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "no contact leased to both boxes");

        // Held == target: a second pass leases nothing and repeats nothing.
        clear_outbox(&t.store).await;
        r.pass(now.plus_millis(1_000)).await;
        assert!(outbox(&t.store, "branch-a").await.is_empty(), "{backend:?}");
        assert!(outbox(&t.store, "branch-b").await.is_empty(), "{backend:?}");

        // Branch A dials 2 of its 5 (held 3 of 5: below three quarters) → 2 more.
        for (lease, contact) in leased_contacts(&a).into_iter().take(2) {
            let res = AttemptResult {
                attempt: AttemptId::new_v7(),
                call: None,
                campaign: CampaignId(id as u64),
                contact,
                lease,
                trunk: None,
                started_at: now,
                ended_at: now.plus_millis(10_000),
                outcome: CallOutcome::AnsweredHuman,
                sip_status: None,
                post_dial_delay_ms: None,
            };
            let seq = {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM attempt_results WHERE appliance = 'branch-a'",
                )
                .fetch_one(t.store.pool())
                .await
                .unwrap();
                n as u64 + 1
            };
            let env = UplinkEnvelope::new(
                ApplianceId::new("branch-a").unwrap(),
                seq,
                now,
                Uplink::AttemptResult(res),
            );
            apply_uplink(t.store.pool(), &env, now, 0).await.unwrap();
        }
        r.pass(now.plus_millis(2_000)).await;
        let again = outbox(&t.store, "branch-a").await;
        assert_eq!(leased_contacts(&again).len(), 2, "{backend:?}: {again:?}");
        let (done,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM campaign_contacts WHERE campaign_id = $1 AND state = 'done'",
        )
        .bind(id)
        .fetch_one(t.store.pool())
        .await
        .unwrap();
        assert_eq!(
            done, 2,
            "{backend:?}: uplink results settled into the queue"
        );
        assert!(outbox(&t.store, "branch-b").await.is_empty());
    }
}

#[tokio::test]
async fn an_offline_appliance_gets_its_brief_but_no_leases_or_grants() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        scheduled_campaign(&t.store, &r.vault, "us", &csv(10, 0), |_| {}).await;
        enrol(&t.store, "branch-a", false, now).await;
        r.pass(now).await;
        let a = outbox(&t.store, "branch-a").await;
        assert!(
            a.iter().any(|m| matches!(m, Downlink::Campaign(_))),
            "{a:?}"
        );
        assert!(
            !a.iter()
                .any(|m| matches!(m, Downlink::ContactLease(_) | Downlink::PacingGrant(_))),
            "{backend:?}: {a:?}"
        );
    }
}

#[tokio::test]
async fn a_profile_edit_reaches_every_box_working_its_campaigns_at_the_next_pass() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let campaign = scheduled_campaign(&t.store, &r.vault, "us", &csv(10, 0), |_| {}).await;
        enrol(&t.store, "branch-a", true, now).await;
        r.pass(now).await;
        let brief = |msgs: Vec<Downlink>| {
            msgs.into_iter().rev().find_map(|m| match m {
                Downlink::Campaign(b) if b.campaign == CampaignId(campaign as u64) => Some(b),
                _ => None,
            })
        };
        let first = brief(outbox(&t.store, "branch-a").await).expect("a first brief");
        assert_eq!(first.profile.abandon.cap_permille, 30);
        clear_outbox(&t.store).await;
        // Nothing changed: the next pass sends no brief.
        r.pass(UnixMillis(now.0 + 1_000)).await;
        assert_eq!(
            brief(outbox(&t.store, "branch-a").await),
            None,
            "{backend:?}"
        );

        // Compliance tightens the profile the campaign runs under.
        let stored = compliance::page_profiles(&t.store, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "us")
            .unwrap();
        let mut tighter = stored.profile.clone();
        tighter.abandon.cap_permille = 20;
        tighter.recording_consent_announcement = true;
        compliance::update_profile(&t.store, stored.id, "us", tighter)
            .await
            .unwrap();
        r.pass(UnixMillis(now.0 + 2_000)).await;
        let next = brief(outbox(&t.store, "branch-a").await)
            .unwrap_or_else(|| panic!("{backend:?}: no brief after the profile edit"));
        assert_eq!(next.profile.abandon.cap_permille, 20, "{backend:?}");
        assert!(next.profile.recording_consent_announcement);
        assert!(
            next.running,
            "the campaign keeps running under the new rules"
        );
        assert!(
            next.version > first.version,
            "a newer version replaces the old brief"
        );
    }
}

#[tokio::test]
async fn a_rest_lease_of_a_campaign_without_shares_is_revoked_when_the_campaign_is_paused() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let id = scheduled_campaign(&t.store, &r.vault, "us", &csv(10, 0), |s| {
            s.appliances.clear();
        })
        .await;
        // An outside dialer leases over the REST path; the scheduler feeds nobody here.
        let lease = callgate_coordinator::leasing::lease_contacts(
            &t.store,
            &r.vault,
            id,
            "ext-dialer",
            3,
            600_000,
            now,
        )
        .await
        .unwrap();
        let state = || async {
            let (s,): (String,) = sqlx::query_as("SELECT state FROM contact_leases WHERE id = $1")
                .bind(lease.id)
                .fetch_one(t.store.pool())
                .await
                .unwrap();
            s
        };
        r.pass(UnixMillis(now.0 + 1_000)).await;
        assert_eq!(state().await, "active", "{backend:?}: still dialable");
        campaigns::apply(&t.store, id, CampaignAction::Pause)
            .await
            .unwrap();
        r.pass(UnixMillis(now.0 + 2_000)).await;
        assert_eq!(state().await, "revoked", "{backend:?}: paused");
    }
}

#[tokio::test]
async fn a_lease_too_big_for_one_envelope_goes_as_several_leases_under_the_limit() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(
            &t.store,
            DialerFeedConfig {
                lease_pool: 40,
                ..DialerFeedConfig::default()
            },
        );
        // 40 contacts with 20 kB of notes each: ~800 kB for one appliance.
        scheduled_campaign(&t.store, &r.vault, "us", &csv(40, 20_000), |s| {
            s.appliances.truncate(1);
        })
        .await;
        enrol(&t.store, "branch-a", true, now).await;
        r.pass(now).await;
        let a = outbox(&t.store, "branch-a").await;
        let app = ApplianceId::new("branch-a").unwrap();
        let leases: Vec<_> = a
            .iter()
            .filter(|m| matches!(m, Downlink::ContactLease(_)))
            .collect();
        assert!(leases.len() >= 4, "{backend:?}: {} envelopes", leases.len());
        for m in &leases {
            assert!(envelope_len(&app, m) <= MAX_PAYLOAD_BYTES);
        }
        let contacts = leased_contacts(&a);
        assert_eq!(contacts.len(), 40, "{backend:?}");
        let mut ids: Vec<_> = contacts.iter().map(|c| c.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), leases.len(), "one lease id per envelope");
        // The database agrees: every contact held by the lease its envelope names.
        for (lease, contact) in contacts {
            let (held,): (Option<i64>,) =
                sqlx::query_as("SELECT lease_id FROM contacts WHERE id = $1")
                    .bind(contact.0 as i64)
                    .fetch_one(t.store.pool())
                    .await
                    .unwrap();
            assert_eq!(held, Some(lease.0 as i64));
        }
    }
}

#[tokio::test]
async fn pausing_revokes_every_delivered_lease_once_and_stops_the_brief_and_grant() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let id = scheduled_campaign(&t.store, &r.vault, "us", &csv(30, 0), |_| {}).await;
        enrol(&t.store, "branch-a", true, now).await;
        enrol(&t.store, "branch-b", true, now).await;
        r.pass(now).await;
        let issued: Vec<LeaseId> = outbox(&t.store, "branch-a")
            .await
            .iter()
            .filter_map(|m| match m {
                Downlink::ContactLease(l) => Some(l.lease),
                _ => None,
            })
            .collect();
        assert!(!issued.is_empty());
        clear_outbox(&t.store).await;
        campaigns::apply(&t.store, id, CampaignAction::Pause)
            .await
            .unwrap();
        r.pass(now.plus_millis(1_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        let revoked: Vec<LeaseId> = a
            .iter()
            .filter_map(|m| match m {
                Downlink::LeaseRevoked { lease, reason } => {
                    assert_eq!(reason, "campaign paused");
                    Some(*lease)
                }
                _ => None,
            })
            .collect();
        assert_eq!(revoked, issued, "{backend:?}");
        assert!(a
            .iter()
            .any(|m| matches!(m, Downlink::Campaign(c) if !c.running && c.version == 2)));
        assert!(a
            .iter()
            .any(|m| matches!(m, Downlink::PacingGrant(g) if g.max_concurrent == 0)));
        assert!(leased_contacts(&a).is_empty(), "no new leases while paused");
        let (held,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM contacts WHERE lease_id IS NOT NULL")
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        assert_eq!(held, 0, "{backend:?}: contacts back in the pool");
        clear_outbox(&t.store).await;
        r.pass(now.plus_millis(2_000)).await;
        assert!(
            outbox(&t.store, "branch-a").await.is_empty(),
            "revoked once"
        );

        // Resumed: a new brief (running), and leases again.
        campaigns::apply(&t.store, id, CampaignAction::Resume)
            .await
            .unwrap();
        r.pass(now.plus_millis(3_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        assert!(a
            .iter()
            .any(|m| matches!(m, Downlink::Campaign(c) if c.running && c.version == 3)));
        let resumed: Vec<LeaseId> = leased_contacts(&a).iter().map(|c| c.0).collect();
        assert_eq!(resumed.len(), 5);

        // Stopped: the campaign room returns the leases at once; the box is still told.
        clear_outbox(&t.store).await;
        campaigns::apply(&t.store, id, CampaignAction::Stop)
            .await
            .unwrap();
        r.pass(now.plus_millis(4_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        assert!(
            a.iter()
                .any(|m| matches!(m, Downlink::LeaseRevoked { lease, reason }
                if *lease == resumed[0] && reason == "campaign stopped")),
            "{backend:?}: {a:?}"
        );
        assert!(a
            .iter()
            .any(|m| matches!(m, Downlink::Campaign(c) if !c.running)));
        assert!(
            !a.iter().any(|m| matches!(m, Downlink::PacingGrant(_))),
            "no grants for a stopped campaign"
        );
    }
}

#[tokio::test]
async fn removing_a_share_sends_a_last_brief_and_revokes_that_boxs_leases_only() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let id = scheduled_campaign(&t.store, &r.vault, "us", &csv(30, 0), |_| {}).await;
        enrol(&t.store, "branch-a", true, now).await;
        enrol(&t.store, "branch-b", true, now).await;
        r.pass(now).await;
        clear_outbox(&t.store).await;
        let mut spec = campaigns::get(&t.store, id).await.unwrap().spec;
        spec.appliances.retain(|a| a.appliance == "branch-b");
        campaigns::edit(&t.store, id, spec).await.unwrap();
        r.pass(now.plus_millis(1_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        assert!(a.iter().any(
            |m| matches!(m, Downlink::LeaseRevoked { reason, .. } if reason == "share removed")
        ));
        assert!(a
            .iter()
            .any(|m| matches!(m, Downlink::Campaign(c) if !c.running)));
        let b = outbox(&t.store, "branch-b").await;
        assert!(
            !b.iter().any(|m| matches!(m, Downlink::LeaseRevoked { .. })),
            "{backend:?}: {b:?}"
        );
    }
}

#[tokio::test]
async fn grants_carry_an_expiry_and_are_refreshed_before_it_passes() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        scheduled_campaign(&t.store, &r.vault, "us", &csv(5, 0), |s| {
            s.appliances.truncate(1);
        })
        .await;
        enrol(&t.store, "branch-a", true, now).await;
        let grants = |m: Vec<Downlink>| -> Vec<_> {
            m.into_iter()
                .filter_map(|m| match m {
                    Downlink::PacingGrant(g) => Some(g),
                    _ => None,
                })
                .collect()
        };
        r.pass(now).await;
        let g = grants(outbox(&t.store, "branch-a").await);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].expires_at, now.plus_millis(60_000), "{backend:?}");
        assert_eq!(g[0].max_concurrent, 30);
        clear_outbox(&t.store).await;
        r.pass(now.plus_millis(20_000)).await;
        assert!(
            grants(outbox(&t.store, "branch-a").await).is_empty(),
            "still fresh"
        );
        r.pass(now.plus_millis(31_000)).await;
        let g = grants(outbox(&t.store, "branch-a").await);
        assert_eq!(g.len(), 1, "{backend:?}: refreshed at half its life");
        assert_eq!(g[0].expires_at, now.plus_millis(91_000));
        // The box goes offline: no more grants, so the last one runs out.
        clear_outbox(&t.store).await;
        presence::status(
            t.store.pool(),
            &ApplianceId::new("branch-a").unwrap(),
            false,
            now.plus_millis(32_000),
        )
        .await
        .unwrap();
        r.pass(now.plus_millis(120_000)).await;
        assert!(grants(outbox(&t.store, "branch-a").await).is_empty());
    }
}

#[tokio::test]
async fn dnc_changes_reach_only_the_appliance_holding_the_number() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        scheduled_campaign(&t.store, &r.vault, "us", &csv(30, 0), |_| {}).await;
        enrol(&t.store, "branch-a", true, now).await;
        enrol(&t.store, "branch-b", true, now).await;
        r.pass(now).await;
        let a = outbox(&t.store, "branch-a").await;
        let held = match a.iter().find(|m| matches!(m, Downlink::ContactLease(_))) {
            Some(Downlink::ContactLease(l)) => l.contacts[0].number.clone(),
            _ => panic!("no lease"),
        };
        clear_outbox(&t.store).await;
        // One number A holds, one nobody holds (29 contacts + 1 unknown).
        let added = compliance::add_dnc(
            &t.store,
            &r.vault,
            &[
                NewDnc {
                    number: held.e164(),
                    campaign_id: None,
                    expires_at: None,
                    reason: "asked".into(),
                },
                NewDnc {
                    number: "+13125559999".into(),
                    campaign_id: None,
                    expires_at: None,
                    reason: "asked".into(),
                },
            ],
        )
        .await
        .unwrap();
        r.pass(now.plus_millis(1_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        let deltas: Vec<_> = a
            .iter()
            .filter_map(|m| match m {
                Downlink::DncDelta(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas.len(), 1, "{backend:?}: {a:?}");
        assert_eq!(deltas[0].added.len(), 1, "only the held number");
        assert_eq!(deltas[0].added[0].0, held);
        assert_eq!(deltas[0].added[0].1.scope, DncScope::Global);
        let b = outbox(&t.store, "branch-b").await;
        assert!(
            !b.iter().any(|m| matches!(m, Downlink::DncDelta(_))),
            "{backend:?}: B never learns a number it does not hold"
        );
        clear_outbox(&t.store).await;
        assert!(compliance::remove_dnc(&t.store, added[0].id).await.unwrap());
        r.pass(now.plus_millis(2_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        assert!(
            a.iter()
                .any(|m| matches!(m, Downlink::DncDelta(d) if d.cleared == vec![held.clone()] && d.added.is_empty())),
            "{backend:?}: {a:?}"
        );
        r.pass(now.plus_millis(3_000)).await;
        assert_eq!(
            outbox(&t.store, "branch-a")
                .await
                .iter()
                .filter(|m| matches!(m, Downlink::DncDelta(_)))
                .count(),
            1,
            "each change goes once"
        );
    }
}

#[tokio::test]
async fn rosters_follow_the_branchs_agents_and_routing_versions_go_to_every_box() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        enrol(&t.store, "branch-a", false, now).await;
        enrol(&t.store, "branch-b", false, now).await;
        let g = callgate_coordinator::agents::create_group(&t.store, "experts", "")
            .await
            .unwrap();
        let ada: callgate_coordinator::agents::NewAgent =
            serde_json::from_value(serde_json::json!({
                "name": "Ada", "branch": "branch-a", "sip_username": "1001", "login": "ada",
                "password": "correct horse", "groups": [g.id], "skills": ["spanish"]
            }))
            .unwrap();
        let ada = callgate_coordinator::agents::create_agent(&t.store, ada)
            .await
            .unwrap();
        r.pass(now).await;
        let rosters = |m: Vec<Downlink>| -> Vec<_> {
            m.into_iter()
                .filter_map(|m| match m {
                    Downlink::AgentRoster(r) => Some(r),
                    _ => None,
                })
                .collect()
        };
        let a = rosters(outbox(&t.store, "branch-a").await);
        assert_eq!(a.len(), 1, "{backend:?}");
        assert_eq!(a[0].version, 1);
        assert_eq!(a[0].agents.len(), 1);
        assert_eq!(a[0].agents[0].agent, AgentId(ada.id as u64));
        assert!(a[0].agents[0].password_phc.starts_with("$argon2id$"));
        assert!(callgate_coordinator::agents::password_matches(
            &a[0].agents[0].password_phc,
            "correct horse"
        ));
        assert_eq!(a[0].agents[0].groups.len(), 1);
        let b = rosters(outbox(&t.store, "branch-b").await);
        assert_eq!(b.len(), 1);
        assert!(b[0].agents.is_empty(), "Ada is not on branch B");
        clear_outbox(&t.store).await;
        r.pass(now.plus_millis(1_000)).await;
        assert!(
            outbox(&t.store, "branch-a").await.is_empty(),
            "no change, nothing sent"
        );

        callgate_coordinator::agents::update_agent(
            &t.store,
            ada.id,
            serde_json::from_value(serde_json::json!({"enabled": false})).unwrap(),
        )
        .await
        .unwrap();
        let policy: callgate_coordinator::routing::RoutingPolicy =
            serde_json::from_value(serde_json::json!({"rules": [
                {"name": "platinum", "when": {"field": {"name": "tier", "equals": "platinum"}},
                 "then": {"agent_group": g.id}}
            ]}))
            .unwrap_or_else(|e| panic!("policy json: {e}"));
        let saved = callgate_coordinator::routing::save(&t.store, policy)
            .await
            .unwrap();
        r.pass(now.plus_millis(2_000)).await;
        let a = outbox(&t.store, "branch-a").await;
        let ra = rosters(a.clone());
        assert_eq!(ra.len(), 1);
        assert_eq!(ra[0].version, 2, "{backend:?}");
        assert!(
            ra[0].agents.is_empty(),
            "a disabled agent leaves the roster"
        );
        for msgs in [a, outbox(&t.store, "branch-b").await] {
            assert!(msgs.iter().any(|m| matches!(m,
                Downlink::RoutingPolicy { version, .. } if *version == saved.version as u64)));
        }
    }
}

#[tokio::test]
async fn lease_returns_and_agent_events_from_the_uplink_apply_once() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let id = scheduled_campaign(&t.store, &r.vault, "us", &csv(30, 0), |_| {}).await;
        enrol(&t.store, "branch-a", true, now).await;
        enrol(&t.store, "branch-b", true, now).await;
        r.pass(now).await;
        let held = leased_contacts(&outbox(&t.store, "branch-a").await);
        let lease = held[0].0;
        let back: Vec<ContactId> = held.iter().take(3).map(|c| c.1).collect();
        let app = ApplianceId::new("branch-a").unwrap();
        let ret = UplinkEnvelope::new(
            app.clone(),
            1,
            now,
            Uplink::LeaseReturn {
                lease,
                contacts: back.clone(),
                reason: "grant expired".into(),
            },
        );
        let ev = UplinkEnvelope::new(
            app.clone(),
            2,
            now,
            Uplink::AgentEvent(AgentEvent {
                agent: AgentId(5),
                state: AgentState::Paused {
                    reason: "lunch".into(),
                },
                at: now,
                call: None,
                campaign: Some(CampaignId(id as u64)),
            }),
        );
        // B claiming A's lease changes nothing.
        let forged = UplinkEnvelope::new(
            ApplianceId::new("branch-b").unwrap(),
            1,
            now,
            Uplink::LeaseReturn {
                lease,
                contacts: held.iter().map(|c| c.1).collect(),
                reason: "x".into(),
            },
        );
        apply_uplink(t.store.pool(), &forged, now, 0).await.unwrap();
        for _ in 0..2 {
            apply_uplink(t.store.pool(), &ret, now, 0).await.unwrap();
            apply_uplink(t.store.pool(), &ev, now, 0).await.unwrap();
        }
        let (ready,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM campaign_contacts WHERE lease_id = $1 AND state = 'leased'",
        )
        .bind(lease.0 as i64)
        .fetch_one(t.store.pool())
        .await
        .unwrap();
        assert_eq!(ready as usize, held.len() - 3, "{backend:?}");
        let events: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT state, reason FROM agent_events WHERE appliance = 'branch-a'")
                .fetch_all(t.store.pool())
                .await
                .unwrap();
        assert_eq!(
            events,
            vec![("paused".to_string(), Some("lunch".to_string()))]
        );
        // The returned contacts can be leased again (to whoever tops up next).
        for c in &back {
            let (lease_id,): (Option<i64>,) =
                sqlx::query_as("SELECT lease_id FROM contacts WHERE id = $1")
                    .bind(c.0 as i64)
                    .fetch_one(t.store.pool())
                    .await
                    .unwrap();
            assert_eq!(lease_id, None);
        }
    }
}

#[tokio::test]
async fn an_appliances_trunk_limits_are_split_between_the_campaigns_it_dials() {
    use callgate_coordinator::leasing::limits::{self, ApplianceLimits};
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        let first = scheduled_campaign(&t.store, &r.vault, "us", &csv(5, 0), |s| {
            s.appliances.truncate(1);
        })
        .await;
        let second = scheduled_campaign(&t.store, &r.vault, "us", &csv(5, 0), |s| {
            s.appliances.truncate(1);
        })
        .await;
        enrol(&t.store, "branch-a", true, now).await;
        limits::set(
            &t.store,
            "branch-a",
            ApplianceLimits {
                max_concurrent: 25,
                max_attempts_per_minute: 9,
            },
            now,
        )
        .await
        .unwrap();
        let grants = |m: Vec<Downlink>| -> Vec<(i64, u32, u32)> {
            let mut g: Vec<_> = m
                .into_iter()
                .filter_map(|m| match m {
                    Downlink::PacingGrant(g) => Some((
                        g.campaign.0 as i64,
                        g.max_concurrent,
                        g.max_attempts_per_minute,
                    )),
                    _ => None,
                })
                .collect();
            g.sort();
            g
        };
        r.pass(now).await;
        assert_eq!(
            grants(outbox(&t.store, "branch-a").await),
            vec![(first, 13, 5), (second, 12, 4)],
            "{backend:?}: the box's 25 lines and 9 attempts/min, never more in all"
        );
        // One campaign paused: the other gets the whole trunk; the paused one zeros.
        clear_outbox(&t.store).await;
        campaigns::apply(&t.store, first, CampaignAction::Pause)
            .await
            .unwrap();
        r.pass(now.plus_millis(1_000)).await;
        assert_eq!(
            grants(outbox(&t.store, "branch-a").await),
            vec![(first, 0, 0), (second, 25, 9)],
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_due_call_task_goes_out_in_the_schedulers_next_lease_ahead_of_the_queue() {
    for backend in BACKENDS {
        let t = fresh_store(backend).await;
        let now = at(NOON_CHICAGO);
        let r = rig(&t.store, small_pool());
        // 30 urgent contacts and one customer of no urgency: a pool of 20 would not reach
        // the customer without the task.
        let mut file = String::from("phone,timezone,urgency,external_id\n");
        for i in 0..30 {
            file.push_str(&format!("+1312555{:04},America/Chicago,9,\n", 2000 + i));
        }
        file.push_str("+13125559999,America/Chicago,0,cust-x\n");
        let campaign = scheduled_campaign(&t.store, &r.vault, "us", &file, |s| {
            s.script = "win-back".into();
        })
        .await;
        enrol(&t.store, "branch-a", true, now).await;
        enrol(&t.store, "branch-b", true, now).await;
        let task = callgate_coordinator::call_tasks::create(
            &t.store,
            callgate_coordinator::call_tasks::NewCallTask {
                customer_id: "cust-x".into(),
                script_id: "win-back".into(),
                callback_url: "http://127.0.0.1:9/hook".into(),
                max_retries: 2,
                preferred_time: Some(now.0),
            },
        )
        .await
        .unwrap();
        let report = r.scheduler.tick(now).await.unwrap();
        assert_eq!(report.call_tasks_enrolled, 1, "{backend:?}");
        let (customer,): (i64,) =
            sqlx::query_as("SELECT id FROM contacts WHERE external_id = 'cust-x'")
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        let mut leased = leased_contacts(&outbox(&t.store, "branch-a").await);
        leased.extend(leased_contacts(&outbox(&t.store, "branch-b").await));
        assert_eq!(leased.len(), 20, "{backend:?}");
        assert!(
            leased.iter().any(|(_, c)| c.0 as i64 == customer),
            "{backend:?}: the task's customer is leased in campaign {campaign}"
        );
        assert_eq!(
            callgate_coordinator::call_tasks::get(&t.store, task.id)
                .await
                .unwrap()
                .state,
            "queued",
            "dialling, not settled"
        );
    }
}
