//! The executor in virtual time: every test drives the core with explicit instants and
//! checks what it orders, refuses and hands back.

use super::*;
use callgate_common::compliance::{CallingWindow, ComplianceProfile, DncScope};
use callgate_common::phone::PhoneNumber;
use callgate_common::wire::DialMode;

const C: CampaignId = CampaignId(7);
/// 2026-05-05 12:00 UTC, a Tuesday.
const T0: UnixMillis = UnixMillis(1_777_982_400_000);

fn all_day() -> CallingWindow {
    CallingWindow {
        start_minute: 0,
        end_minute: 1440,
        days: (0..7).collect(),
        holidays: vec![],
    }
}

fn brief(mode: DialMode) -> CampaignBrief {
    let mut profile = ComplianceProfile::us();
    profile.window = all_day();
    CampaignBrief {
        campaign: C,
        version: 1,
        name: "renewals".into(),
        dial_mode: mode,
        running: true,
        profile,
        window: all_day(),
        caller_id: "+442079460000".into(),
        script: String::new(),
        disposition_codes: vec![],
        wrap_up_seconds: 10,
        recording_consent_announcement: false,
        robot_script: None,
    }
}

fn number(i: u64) -> PhoneNumber {
    PhoneNumber::parse(&format!("+44207946{:04}", i % 10_000), None).unwrap()
}

fn contact(i: u64) -> LeasedContact {
    LeasedContact {
        contact: ContactId(i),
        number: number(i),
        time_zones: vec!["Europe/London".into()],
        attempts: 0,
        recent_attempts: vec![],
        dnc: vec![],
        fields: vec![],
        tags: vec![],
        last_outcome: None,
        last_agent: None,
    }
}

fn lease(id: u64, contacts: std::ops::Range<u64>, expires_at: UnixMillis) -> ContactLease {
    ContactLease {
        lease: LeaseId(id),
        campaign: C,
        issued_at: T0,
        expires_at,
        contacts: contacts.map(contact).collect(),
    }
}

fn grant(max_concurrent: u32, per_minute: u32, expires_at: UnixMillis) -> PacingGrant {
    PacingGrant {
        campaign: C,
        max_concurrent,
        max_attempts_per_minute: per_minute,
        abandon_budget: 5,
        expires_at,
    }
}

fn executor() -> CampaignExecutor {
    CampaignExecutor::new(
        ExecutorConfig {
            trunks: vec![(
                TrunkId::new("carrier-a").unwrap(),
                TrunkLimits {
                    max_concurrent: 100,
                    max_per_minute: 1_000,
                },
            )],
            pacing: PacingConfig::default(),
            seed: 42,
            new_calls_held: None,
            consent_prompt: false,
        },
        Holdings::default(),
        T0,
    )
}

fn later(ms: i64) -> UnixMillis {
    T0.plus_millis(ms)
}

/// Everything the executor handed out since the last drain.
fn drain(ex: &mut CampaignExecutor) -> Vec<ExecutorOutput> {
    std::iter::from_fn(|| ex.poll_output()).collect()
}

fn dials(out: &[ExecutorOutput]) -> Vec<DialOrder> {
    out.iter()
        .filter_map(|o| match o {
            ExecutorOutput::Dial(d) => Some((**d).clone()),
            _ => None,
        })
        .collect()
}

fn returned(out: &[ExecutorOutput]) -> Vec<(ContactId, String)> {
    out.iter()
        .flat_map(|o| match o {
            ExecutorOutput::Return {
                contacts, reason, ..
            } => contacts.iter().map(|c| (*c, reason.clone())).collect(),
            ExecutorOutput::Refused {
                contact, reason, ..
            } => vec![(*contact, reason.clone())],
            ExecutorOutput::Dial(_) => vec![],
        })
        .collect()
}

fn end(ex: &mut CampaignExecutor, at: UnixMillis, d: &DialOrder, outcome: CallOutcome) {
    ex.handle_attempt(at, d.attempt, AttemptUpdate::Ended { outcome })
        .unwrap();
}

/// An agentless campaign with leases and a grant, ready to dial.
fn agentless(concurrent: u32, per_minute: u32, contacts: u64) -> CampaignExecutor {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Agentless));
    ex.handle_lease(T0, &lease(1, 0..contacts, later(3_600_000)));
    ex.handle_grant(T0, grant(concurrent, per_minute, later(3_600_000)));
    ex
}

#[test]
fn nothing_is_dialled_without_a_grant_and_the_status_says_so() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Agentless));
    ex.handle_lease(T0, &lease(1, 0..5, later(60_000)));
    assert!(dials(&drain(&mut ex)).is_empty());
    assert_eq!(
        ex.status(C).unwrap().run,
        CampaignRun::Waiting("no pacing grant yet".into())
    );
    ex.handle_grant(T0, grant(2, 100, later(60_000)));
    assert_eq!(dials(&drain(&mut ex)).len(), 2);
    assert_eq!(ex.status(C).unwrap().run, CampaignRun::Dialling);
}

#[test]
fn agentless_dials_up_to_the_grant_concurrency_and_one_more_per_ended_attempt() {
    let mut ex = agentless(3, 1_000, 10);
    let first = dials(&drain(&mut ex));
    assert_eq!(first.len(), 3, "max_concurrent = 3");
    assert_eq!(ex.status(C).unwrap().in_flight, 3);
    end(&mut ex, later(1_000), &first[0], CallOutcome::Busy);
    let next = dials(&drain(&mut ex));
    assert_eq!(next.len(), 1, "one slot freed, one new attempt");
    let mut seen: Vec<ContactId> = first
        .iter()
        .chain(&next)
        .map(|d| d.contact.contact)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "four different contacts");
}

#[test]
fn the_per_minute_limit_holds_until_the_oldest_start_is_a_minute_old() {
    let mut ex = agentless(100, 4, 20);
    let first = dials(&drain(&mut ex));
    assert_eq!(first.len(), 4, "4 attempts per minute");
    for d in &first {
        end(&mut ex, later(5_000), d, CallOutcome::NoAnswer);
    }
    assert!(dials(&drain(&mut ex)).is_empty(), "still inside the minute");
    assert_eq!(ex.poll_timeout(), Some(later(60_000)));
    ex.handle_timeout(later(59_999));
    assert!(dials(&drain(&mut ex)).is_empty());
    ex.handle_timeout(later(60_000));
    assert_eq!(dials(&drain(&mut ex)).len(), 4);
}

#[test]
fn a_lease_expiring_mid_campaign_stops_its_dialling_and_hands_back_the_rest() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Agentless));
    ex.handle_lease(T0, &lease(1, 0..10, later(30_000)));
    ex.handle_grant(T0, grant(2, 1_000, later(3_600_000)));
    let mut dialled = dials(&drain(&mut ex));
    // Calls end every 10 s; each frees a slot that is refilled while the lease lasts.
    let mut t = 0;
    while t < 40_000 {
        t += 10_000;
        let done: Vec<DialOrder> = std::mem::take(&mut dialled);
        for d in &done {
            end(&mut ex, later(t), d, CallOutcome::NoAnswer);
        }
        let out = drain(&mut ex);
        for d in dials(&out) {
            assert!(
                later(t) < later(30_000),
                "dialled at {t} ms, after the expiry"
            );
            assert!(d.not_after <= later(30_000));
            dialled.push(d);
        }
        if t == 30_000 {
            let back = returned(&out);
            assert_eq!(back.len(), 10 - 6, "6 dialled in 3 rounds, 4 handed back");
            assert!(
                back.iter().all(|(_, r)| r.contains("lease expired")),
                "{back:?}"
            );
        }
    }
    let s = ex.status(C).unwrap();
    assert_eq!((s.dialled, s.returned, s.pending), (6, 4, 0));
    assert_eq!(
        ex.poll_timeout(),
        Some(later(3_600_000)),
        "only the grant is left"
    );
}

#[test]
fn an_expired_grant_stops_the_campaign_says_why_and_returns_its_contacts() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Agentless));
    ex.handle_lease(T0, &lease(1, 0..10, later(3_600_000)));
    ex.handle_grant(T0, grant(2, 1_000, later(20_000)));
    let first = dials(&drain(&mut ex));
    assert_eq!(first.len(), 2);
    assert_eq!(ex.poll_timeout(), Some(later(20_000)));
    ex.handle_timeout(later(20_000));
    let out = drain(&mut ex);
    assert!(dials(&out).is_empty());
    assert_eq!(returned(&out).len(), 8);
    let s = ex.status(C).unwrap();
    assert!(
        matches!(&s.run, CampaignRun::Stopped(r) if r.contains("pacing grant expired")),
        "{:?}",
        s.run
    );
    // The calls in flight still end and are accounted for; nothing new starts.
    end(
        &mut ex,
        later(25_000),
        &first[0],
        CallOutcome::AnsweredHuman,
    );
    assert!(dials(&drain(&mut ex)).is_empty());
}

#[test]
fn a_dnc_delta_stops_a_number_at_the_very_next_dial() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Agentless));
    ex.handle_lease(T0, &lease(1, 0..3, later(3_600_000)));
    ex.handle_dnc(
        T0,
        &DncDelta {
            added: vec![(
                number(1),
                DncEntry {
                    scope: DncScope::Global,
                    expires_at: None,
                },
            )],
            cleared: vec![],
        },
    );
    ex.handle_grant(T0, grant(10, 1_000, later(3_600_000)));
    let out = drain(&mut ex);
    let called: Vec<ContactId> = dials(&out).iter().map(|d| d.contact.contact).collect();
    assert_eq!(called, vec![ContactId(0), ContactId(2)]);
    assert_eq!(
        returned(&out),
        vec![(
            ContactId(1),
            "refused at dial: number is on the global do-not-call list".into()
        )]
    );
    assert_eq!(ex.status(C).unwrap().refused, 1);
}

#[test]
fn contacts_outside_their_window_are_refused_with_the_zone_and_the_others_dialled() {
    let mut ex = executor();
    let mut b = brief(DialMode::Agentless);
    // 09:00–17:00 in the contact's zone: 12:00 UTC is 13:00 in London, 21:00 in Tokyo.
    b.window = CallingWindow {
        start_minute: 9 * 60,
        end_minute: 17 * 60,
        days: (0..7).collect(),
        holidays: vec![],
    };
    ex.handle_campaign(T0, b);
    let mut l = lease(1, 0..4, later(3_600_000));
    l.contacts[1].time_zones = vec!["Asia/Tokyo".into()];
    l.contacts[3].time_zones = vec!["Asia/Tokyo".into()];
    ex.handle_lease(T0, &l);
    ex.handle_grant(T0, grant(10, 1_000, later(3_600_000)));
    let out = drain(&mut ex);
    let called: Vec<ContactId> = dials(&out).iter().map(|d| d.contact.contact).collect();
    assert_eq!(called, vec![ContactId(0), ContactId(2)]);
    let back = returned(&out);
    assert_eq!(back.len(), 2);
    for (c, reason) in back {
        assert!([ContactId(1), ContactId(3)].contains(&c));
        assert_eq!(
            reason,
            "refused at dial: outside calling hours in Asia/Tokyo"
        );
    }
}

#[test]
fn per_number_caps_count_the_coordinators_attempts_and_this_boxs_own() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Agentless));
    // US profile: 3 per 24 h. Contact 0 had 3 recent attempts; contact 1 had 2, and
    // contact 2 shares contact 1's number (the same person in two lists).
    let mut l = lease(1, 0..3, later(3_600_000));
    l.contacts[0].recent_attempts = vec![later(-3_600_000); 3];
    l.contacts[1].recent_attempts = vec![later(-3_600_000); 2];
    l.contacts[2].number = l.contacts[1].number.clone();
    l.contacts[2].recent_attempts = vec![later(-3_600_000); 2];
    ex.handle_lease(T0, &l);
    ex.handle_grant(T0, grant(10, 1_000, later(3_600_000)));
    let out = drain(&mut ex);
    let called: Vec<ContactId> = dials(&out).iter().map(|d| d.contact.contact).collect();
    assert_eq!(
        called,
        vec![ContactId(1)],
        "the third attempt on that number"
    );
    let back = returned(&out);
    assert_eq!(back.len(), 2);
    assert!(back
        .iter()
        .all(|(_, r)| r == "refused at dial: number reached its cap of 3 attempts per 24 h"));
}

#[test]
fn a_revoked_lease_is_not_dialled_and_its_rest_is_handed_back() {
    let mut ex = agentless(2, 1_000, 6);
    let first = dials(&drain(&mut ex));
    ex.handle_revoke(later(1_000), LeaseId(1), "campaign paused");
    let out = drain(&mut ex);
    assert!(dials(&out).is_empty());
    let back = returned(&out);
    assert_eq!(back.len(), 4);
    assert!(back
        .iter()
        .all(|(_, r)| r == "lease revoked: campaign paused"));
    end(&mut ex, later(2_000), &first[0], CallOutcome::Busy);
    assert!(
        dials(&drain(&mut ex)).is_empty(),
        "a freed slot dials nothing"
    );
    // A replay of the same revocation or lease changes nothing.
    ex.handle_revoke(later(3_000), LeaseId(1), "campaign paused");
    ex.handle_lease(later(3_000), &lease(1, 0..6, later(3_600_000)));
    assert!(drain(&mut ex).is_empty());
}

#[test]
fn a_restart_never_redials_a_contact_that_was_dialling_or_done() {
    let mut held = HeldLease::from_lease(&lease(1, 0..4, later(3_600_000)));
    held.contacts[0].state = DialState::Done;
    held.contacts[0].started_at = Some(later(-60_000));
    held.contacts[1].state = DialState::Dialling;
    held.contacts[1].started_at = Some(later(-1_000));
    held.contacts[2].state = DialState::Refused;
    let holdings = Holdings {
        campaigns: vec![brief(DialMode::Agentless)],
        grants: vec![grant(10, 1_000, later(3_600_000))],
        leases: vec![held],
        dnc: vec![],
        live_answers: vec![],
    };
    let mut ex = CampaignExecutor::new(executor().config.clone(), holdings.clone(), T0);
    let called: Vec<ContactId> = dials(&drain(&mut ex))
        .iter()
        .map(|d| d.contact.contact)
        .collect();
    assert_eq!(called, vec![ContactId(3)]);
    // The same holdings re-read (a replayed downlink) order nothing new.
    ex.handle_holdings(later(1), holdings);
    assert!(dials(&drain(&mut ex)).is_empty());
}

#[test]
fn progressive_places_one_attempt_per_ready_agent() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Progressive));
    ex.handle_lease(T0, &lease(1, 0..10, later(3_600_000)));
    ex.handle_grant(T0, grant(10, 1_000, later(3_600_000)));
    assert!(dials(&drain(&mut ex)).is_empty(), "no agent ready");
    ex.handle_agent(T0, AgentId(1), AgentState::Ready);
    ex.handle_agent(T0, AgentId(2), AgentState::Ready);
    let first = dials(&drain(&mut ex));
    assert_eq!(first.len(), 2);
    ex.handle_agent(later(1), AgentId(3), AgentState::Paused);
    assert!(
        dials(&drain(&mut ex)).is_empty(),
        "a paused agent gets nothing"
    );
    // Agent 1 takes the first call (the desk reports the agent before the connection):
    // still one attempt waiting for agent 2.
    ex.handle_attempt(
        later(5_000),
        first[0].attempt,
        AttemptUpdate::Answered { machine: false },
    )
    .unwrap();
    ex.handle_agent(later(5_100), AgentId(1), AgentState::Reserved);
    ex.handle_attempt(later(5_100), first[0].attempt, AttemptUpdate::Connected)
        .unwrap();
    ex.handle_agent(later(5_100), AgentId(1), AgentState::Talking);
    assert!(dials(&drain(&mut ex)).is_empty());
    // The second attempt is busy: agent 2 is free again and gets a new attempt.
    end(&mut ex, later(6_000), &first[1], CallOutcome::Busy);
    assert_eq!(dials(&drain(&mut ex)).len(), 1);
}

#[test]
fn predictive_overdials_for_ready_agents_within_the_grant() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Predictive));
    ex.handle_lease(T0, &lease(1, 0..100, later(3_600_000)));
    ex.handle_grant(T0, grant(6, 1_000, later(3_600_000)));
    for a in 1..=5 {
        ex.handle_agent(T0, AgentId(a), AgentState::Ready);
    }
    let n = dials(&drain(&mut ex)).len();
    assert!(
        n > 5,
        "overdial for 5 ready agents at a 25 % answer prior: {n}"
    );
    assert!(n <= 6, "never over the grant's concurrency: {n}");
}

#[test]
fn predictive_follows_a_trunk_edit_of_its_channel_limit() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Predictive));
    ex.handle_lease(T0, &lease(1, 0..100, later(3_600_000)));
    ex.handle_grant(T0, grant(50, 1_000, later(3_600_000)));
    let limits = |max_concurrent| TrunkLimits {
        max_concurrent,
        max_per_minute: 1_000,
    };
    let a = TrunkId::new("carrier-a").unwrap();
    let b = TrunkId::new("carrier-b").unwrap();
    ex.handle_trunks(T0, vec![(a.clone(), limits(2))]);
    for agent in 1..=5 {
        ex.handle_agent(T0, AgentId(agent), AgentState::Ready);
    }
    assert_eq!(
        dials(&drain(&mut ex)).len(),
        2,
        "carrier-a now has 2 channels"
    );
    ex.handle_trunks(later(100), vec![(a.clone(), limits(4))]);
    let more = dials(&drain(&mut ex));
    assert_eq!(more.len(), 2, "2 more channels, 2 more attempts");
    // carrier-a removed while one of its channels is free again (its other 3 attempts stay
    // up), carrier-b with 1 channel added: nothing more may go to carrier-a.
    ex.handle_trunks(later(200), vec![(b, limits(1))]);
    end(&mut ex, later(300), &more[0], CallOutcome::NoAnswer);
    assert_eq!(
        dials(&drain(&mut ex)).len(),
        1,
        "only carrier-b's channel is free"
    );
}

#[test]
fn a_spent_abandon_budget_turns_predictive_into_progressive() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Predictive));
    ex.handle_lease(T0, &lease(1, 0..100, later(3_600_000)));
    let mut g = grant(50, 1_000, later(3_600_000));
    g.abandon_budget = 1;
    ex.handle_grant(T0, g);
    for a in 1..=3 {
        ex.handle_agent(T0, AgentId(a), AgentState::Ready);
    }
    let first = dials(&drain(&mut ex));
    assert!(first.len() > 3);
    // One call answered with nobody free: abandoned; the grant allowed just one.
    ex.handle_attempt(
        later(3_000),
        first[0].attempt,
        AttemptUpdate::Answered { machine: false },
    )
    .unwrap();
    end(&mut ex, later(5_000), &first[0], CallOutcome::Abandoned);
    let s = ex.status(C).unwrap();
    assert!(
        matches!(&s.run, CampaignRun::Limited(r) if r.contains("abandon budget spent")),
        "{:?}",
        s.run
    );
    assert_eq!(s.tally.abandoned, 1);
    // Every other attempt ends unanswered: from now on one attempt per free agent only.
    for d in &first[1..] {
        end(&mut ex, later(6_000), d, CallOutcome::NoAnswer);
    }
    let next = dials(&drain(&mut ex));
    assert_eq!(next.len(), 3, "3 ready agents, progressive");
}

#[test]
fn the_compliance_abandon_cap_alone_also_stops_overdialling() {
    let mut held = HeldLease::from_lease(&lease(1, 0..50, later(3_600_000)));
    held.contacts.truncate(50);
    // 2 abandons in 40 live answers earlier today: 5 % > 3 % cap of the US profile.
    let mut live: Vec<(CampaignId, UnixMillis, bool)> =
        (0..38).map(|_| (C, later(-600_000), false)).collect();
    live.extend([(C, later(-500_000), true), (C, later(-400_000), true)]);
    let holdings = Holdings {
        campaigns: vec![brief(DialMode::Predictive)],
        grants: vec![grant(50, 1_000, later(3_600_000))],
        leases: vec![held],
        dnc: vec![],
        live_answers: live,
    };
    let mut ex = CampaignExecutor::new(executor().config.clone(), holdings, T0);
    ex.handle_agent(T0, AgentId(1), AgentState::Ready);
    ex.handle_agent(T0, AgentId(2), AgentState::Ready);
    assert_eq!(dials(&drain(&mut ex)).len(), 2);
    assert!(matches!(ex.status(C).unwrap().run, CampaignRun::Limited(_)));
}

#[test]
fn preview_reserves_a_contact_for_the_agent_and_dials_it_on_request() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Preview));
    ex.handle_lease(T0, &lease(1, 0..3, later(3_600_000)));
    ex.handle_grant(T0, grant(5, 1_000, later(3_600_000)));
    ex.handle_agent(T0, AgentId(1), AgentState::Ready);
    assert!(
        dials(&drain(&mut ex)).is_empty(),
        "preview never dials by itself"
    );
    let (lease_id, shown) = ex.request_preview(T0, AgentId(1), C).unwrap().unwrap();
    assert_eq!((lease_id, shown.contact), (LeaseId(1), ContactId(0)));
    // Asking again shows the same contact; another agent gets the next one.
    assert_eq!(
        ex.request_preview(T0, AgentId(1), C)
            .unwrap()
            .unwrap()
            .1
            .contact,
        ContactId(0)
    );
    assert_eq!(
        ex.request_preview(T0, AgentId(2), C)
            .unwrap()
            .unwrap()
            .1
            .contact,
        ContactId(1)
    );
    let attempt = ex.dial_preview(later(10_000), AgentId(1)).unwrap();
    let out = dials(&drain(&mut ex));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].attempt, out[0].agent), (attempt, Some(AgentId(1))));
    assert!(matches!(
        ex.dial_preview(later(10_000), AgentId(1)),
        Err(DialerError::NothingPreviewed(_))
    ));
}

#[test]
fn a_preview_whose_lease_expired_on_screen_is_not_dialled() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Preview));
    ex.handle_lease(T0, &lease(1, 0..2, later(20_000)));
    ex.handle_grant(T0, grant(5, 1_000, later(3_600_000)));
    ex.request_preview(T0, AgentId(1), C).unwrap().unwrap();
    ex.handle_timeout(later(20_000));
    assert!(ex.dial_preview(later(20_001), AgentId(1)).is_err());
    let out = drain(&mut ex);
    assert!(dials(&out).is_empty());
    assert_eq!(returned(&out).len(), 2);
}

#[test]
fn an_order_not_sent_in_time_is_handed_back_not_counted_as_dialled() {
    let mut ex = agentless(1, 1_000, 2);
    let d = dials(&drain(&mut ex)).remove(0);
    ex.handle_not_dialled(later(10), d.attempt, "lease expired before the INVITE left")
        .unwrap();
    let out = drain(&mut ex);
    assert_eq!(
        returned(&out),
        vec![(
            d.contact.contact,
            "lease expired before the INVITE left".into()
        )]
    );
    let next = dials(&out);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].contact.contact, d.contact.contact);
    assert!(matches!(
        ex.handle_attempt(later(20), d.attempt, AttemptUpdate::Ringing),
        Err(DialerError::UnknownAttempt(_))
    ));
}

#[test]
fn a_stopped_campaign_brief_hands_back_its_contacts_and_an_older_brief_is_ignored() {
    let mut ex = agentless(2, 1_000, 5);
    drain(&mut ex);
    let mut stale = brief(DialMode::Agentless);
    stale.running = false;
    ex.handle_campaign(later(1), stale.clone());
    assert!(
        drain(&mut ex).is_empty(),
        "version 1 is not newer than version 1"
    );
    stale.version = 2;
    ex.handle_campaign(later(2), stale);
    let back = returned(&drain(&mut ex));
    assert_eq!(back.len(), 3);
    assert!(matches!(ex.status(C).unwrap().run, CampaignRun::Stopped(_)));
}

#[test]
fn predictive_never_has_more_calls_at_risk_than_the_abandon_budget_left() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Predictive));
    ex.handle_lease(T0, &lease(1, 0..100, later(3_600_000)));
    let mut g = grant(50, 1_000, later(3_600_000));
    g.abandon_budget = 2;
    ex.handle_grant(T0, g);
    for a in 1..=5 {
        ex.handle_agent(T0, AgentId(a), AgentState::Ready);
    }
    // Overdial for 5 agents, but at most 2 attempts beyond them: each could be abandoned.
    let n = dials(&drain(&mut ex)).len();
    assert_eq!(n, 5 + 2, "overdial capped by the abandon budget: {n}");
    let s = ex.status(C).unwrap();
    assert!(
        matches!(&s.run, CampaignRun::Limited(r) if r.contains("abandon budget spent")),
        "the calls at risk use the whole budget: {:?}",
        s.run
    );
}

#[test]
fn an_order_no_trunk_had_room_for_stays_pending_and_is_dialled_after_a_pause() {
    let mut ex = agentless(1, 1_000, 2);
    let mut d = dials(&drain(&mut ex)).remove(0);
    let first = d.contact.contact;
    let mut at = 0;
    // More refusals than the number's daily cap (3): none of them counts as an attempt.
    for _ in 0..5 {
        at += 10;
        ex.handle_no_trunk(later(at), d.attempt).unwrap();
        let s = ex.status(C).unwrap();
        assert_eq!(
            (s.in_flight, s.dialled, s.pending, s.returned),
            (0, 0, 2, 0)
        );
        assert!(
            drain(&mut ex).is_empty(),
            "nothing handed back, nothing ordered during the pause"
        );
        ex.handle_timeout(later(at + NO_TRUNK_BACKOFF_MS - 1));
        assert!(drain(&mut ex).is_empty(), "the pause holds");
        assert!(ex.poll_timeout().unwrap() <= later(at + NO_TRUNK_BACKOFF_MS));
        at += NO_TRUNK_BACKOFF_MS;
        ex.handle_timeout(later(at));
        let again = dials(&drain(&mut ex));
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].contact.contact, first,
            "the same contact, still pending"
        );
        assert_ne!(again[0].attempt, d.attempt);
        d = again[0].clone();
    }
    end(&mut ex, later(at + 100), &d, CallOutcome::Busy);
    let next = dials(&drain(&mut ex));
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].contact.contact, first);
    assert_eq!(ex.status(C).unwrap().dialled, 2);
}

#[test]
fn an_ended_attempt_lifts_the_no_trunk_pause_at_once() {
    let mut ex = agentless(2, 1_000, 5);
    let out = dials(&drain(&mut ex));
    assert_eq!(out.len(), 2);
    ex.handle_no_trunk(later(10), out[1].attempt).unwrap();
    assert!(dials(&drain(&mut ex)).is_empty());
    end(&mut ex, later(20), &out[0], CallOutcome::NoAnswer);
    assert_eq!(
        dials(&drain(&mut ex)).len(),
        2,
        "a channel came free: both slots are used again"
    );
}

#[test]
fn held_new_calls_start_no_attempt_keep_contacts_pending_and_resume_when_lifted() {
    let mut ex = agentless(2, 1_000, 6);
    let first = dials(&drain(&mut ex));
    assert_eq!(first.len(), 2);
    ex.handle_new_calls(later(1_000), Some("recording disk nearly full".into()));
    // The calls already up carry on and end normally; their slots are not refilled.
    end(&mut ex, later(2_000), &first[0], CallOutcome::AnsweredHuman);
    ex.handle_timeout(later(60_000));
    let out = drain(&mut ex);
    assert!(dials(&out).is_empty(), "no attempt while held: {out:?}");
    assert!(returned(&out).is_empty(), "nothing handed back: {out:?}");
    let status = ex.status(C).unwrap();
    assert_eq!(
        status.run,
        CampaignRun::Waiting("no new calls: recording disk nearly full".into())
    );
    assert_eq!((status.pending, status.in_flight), (4, 1));
    assert_eq!(
        ex.poll_timeout(),
        Some(later(3_600_000)),
        "only the expiries are due"
    );
    ex.handle_new_calls(later(61_000), None);
    let resumed = dials(&drain(&mut ex));
    assert_eq!(resumed.len(), 1, "one slot free under max_concurrent = 2");
    assert!(first.iter().all(|d| d.contact != resumed[0].contact));
    assert_eq!(ex.status(C).unwrap().run, CampaignRun::Dialling);
}

#[test]
fn held_new_calls_show_a_preview_agent_nothing_and_refuse_the_dial() {
    let mut ex = executor();
    ex.handle_campaign(T0, brief(DialMode::Preview));
    ex.handle_lease(T0, &lease(1, 0..3, later(3_600_000)));
    ex.handle_grant(T0, grant(5, 1_000, later(3_600_000)));
    ex.handle_agent(T0, AgentId(1), AgentState::Ready);
    ex.request_preview(T0, AgentId(1), C).unwrap().unwrap();
    ex.handle_new_calls(T0, Some("recording disk nearly full".into()));
    assert!(matches!(
        ex.dial_preview(later(1_000), AgentId(1)),
        Err(DialerError::CampaignNotDialling(_))
    ));
    assert_eq!(ex.request_preview(T0, AgentId(2), C).unwrap(), None);
    assert!(dials(&drain(&mut ex)).is_empty());
    ex.handle_new_calls(later(2_000), None);
    // The refused dial released the reservation: the agent asks again and dials.
    assert!(ex
        .request_preview(later(2_000), AgentId(1), C)
        .unwrap()
        .is_some());
    ex.dial_preview(later(2_000), AgentId(1)).unwrap();
    assert_eq!(dials(&drain(&mut ex)).len(), 1);
}

#[test]
fn a_campaign_asking_for_consent_on_a_box_without_a_consent_prompt_stops_and_hands_back() {
    let mut ex = executor();
    let mut asks = brief(DialMode::Agentless);
    asks.recording_consent_announcement = true;
    ex.handle_campaign(T0, asks.clone());
    ex.handle_lease(T0, &lease(1, 0..3, later(3_600_000)));
    ex.handle_grant(T0, grant(5, 1_000, later(3_600_000)));
    let out = drain(&mut ex);
    assert!(dials(&out).is_empty(), "{out:?}");
    let back = returned(&out);
    assert_eq!(back.len(), 3);
    assert!(
        back.iter()
            .all(|(_, why)| why.contains("recording.consent_prompt")),
        "{back:?}"
    );
    assert!(matches!(
        ex.status(C).unwrap().run,
        CampaignRun::Stopped(why) if why.contains("recording-consent announcement")
    ));

    // With a prompt on the box the same brief dials.
    let mut ex = executor();
    ex.config.consent_prompt = true;
    ex.handle_campaign(T0, asks);
    ex.handle_lease(T0, &lease(1, 0..3, later(3_600_000)));
    ex.handle_grant(T0, grant(5, 1_000, later(3_600_000)));
    assert_eq!(dials(&drain(&mut ex)).len(), 3);
}
