//! The desk in virtual time: every test moves a `UnixMillis` by hand, never sleeps.

use super::*;
use callgate_common::compliance::{CallingWindow, ComplianceProfile};
use callgate_common::routing::{Condition, RoutingRule};
use callgate_common::wire::{AgentBrief, AgentGroupBrief, DialMode};

const SALES: AgentGroupId = AgentGroupId(1);
const SENIOR: AgentGroupId = AgentGroupId(2);
const QA: AgentGroupId = AgentGroupId(3);
const CAMPAIGN: CampaignId = CampaignId(7);

fn t(ms: i64) -> UnixMillis {
    UnixMillis(1_700_000_000_000 + ms)
}

fn roster(agents: &[(u64, &[AgentGroupId])]) -> AgentRoster {
    AgentRoster {
        version: 1,
        groups: [(SALES, "sales"), (SENIOR, "senior"), (QA, "qa")]
            .iter()
            .map(|(g, n)| AgentGroupBrief {
                group: *g,
                name: (*n).into(),
            })
            .collect(),
        agents: agents
            .iter()
            .map(|(id, groups)| AgentBrief {
                agent: AgentId(*id),
                name: format!("agent {id}"),
                login: format!("a{id}"),
                password_phc: String::new(),
                sip_username: format!("p{id}"),
                skills: vec![],
                groups: groups.to_vec(),
            })
            .collect(),
    }
}

fn policy() -> RoutingPolicy {
    let rule = |name: &str, when, then| RoutingRule {
        name: name.into(),
        when,
        then,
    };
    RoutingPolicy {
        rules: vec![
            rule(
                "vip to seniors",
                Condition::Field {
                    name: "vip".into(),
                    equals: "yes".into(),
                },
                RouteAction::AgentGroup(SENIOR.0 as i64),
            ),
            rule(
                "complaints to QA",
                Condition::LastOutcome("complaint".into()),
                RouteAction::AgentGroup(QA.0 as i64),
            ),
            rule(
                "survey robot",
                Condition::Tag("survey".into()),
                RouteAction::RobotScript("survey-v1".into()),
            ),
            rule(
                "same agent as last time",
                Condition::Tag("callback".into()),
                RouteAction::LastAgent {
                    fallback_group: SALES.0 as i64,
                },
            ),
            rule(
                "fallback",
                Condition::Always,
                RouteAction::AgentGroup(SALES.0 as i64),
            ),
        ],
    }
}

fn brief(wrap_up_seconds: u32) -> CampaignBrief {
    CampaignBrief {
        campaign: CAMPAIGN,
        version: 1,
        name: "spring".into(),
        dial_mode: DialMode::Predictive,
        running: true,
        profile: ComplianceProfile::us(),
        window: CallingWindow::us_default(),
        caller_id: "+442071234567".into(),
        script: "Hello {{name}}".into(),
        disposition_codes: vec!["sale".into(), "no sale".into()],
        wrap_up_seconds,
        recording_consent_announcement: false,
        robot_script: None,
    }
}

/// A desk without nailed-up legs (agents ready at login), with agents 1..=n.
fn desk(agents: &[(u64, &[AgentGroupId])]) -> AgentDesk {
    let mut d = AgentDesk::new(DeskSettings {
        nailed_up: false,
        ..DeskSettings::default()
    });
    d.set_roster(t(0), &roster(agents));
    d.set_policy(policy());
    d.set_campaign(&brief(10));
    d
}

fn call(facts: CallFacts, answered: UnixMillis) -> OfferedCall {
    OfferedCall {
        call: CallId::new_v7(),
        campaign: CAMPAIGN,
        answered_at: answered,
        facts,
        last_agent: None,
        pop: ScreenPop::new("spring", None, &[], "Hello"),
    }
}

fn facts() -> CallFacts {
    CallFacts {
        campaign: Some(CAMPAIGN.0 as i64),
        ..CallFacts::default()
    }
}

fn inbound(group: AgentGroupId) -> InboundCall {
    InboundCall {
        call: CallId::new_v7(),
        group,
        pop: ScreenPop::new("support", None, &[], ""),
    }
}

fn drain(d: &mut AgentDesk) -> Vec<DeskOutput> {
    std::iter::from_fn(|| d.poll_output()).collect()
}

fn states(outputs: &[DeskOutput]) -> Vec<(u64, AgentState)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            DeskOutput::Agent { event, .. } => Some((event.agent.0, event.state.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_longest_idle_ready_agent_of_the_group_takes_the_call() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES]), (3, &[SALES])]);
    d.log_in(t(0), AgentId(2)).unwrap();
    d.log_in(t(10), AgentId(1)).unwrap();
    d.log_in(t(20), AgentId(3)).unwrap();
    let c = call(facts(), t(100));
    assert_eq!(
        d.offer(t(100), c).unwrap(),
        OfferDecision::Connect { agent: AgentId(2) }
    );
    let c = call(facts(), t(200));
    assert_eq!(
        d.offer(t(200), c).unwrap(),
        OfferDecision::Connect { agent: AgentId(1) }
    );
}

#[test]
fn vip_goes_to_seniors_and_complaints_to_qa_and_others_fall_back() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SENIOR]), (3, &[QA])]);
    for a in 1..=3 {
        d.log_in(t(0), AgentId(a)).unwrap();
    }
    let mut vip = facts();
    vip.fields.insert("vip".into(), "YES".into());
    assert_eq!(
        d.offer(t(1), call(vip, t(1))).unwrap(),
        OfferDecision::Connect { agent: AgentId(2) }
    );
    let mut complaint = facts();
    complaint.last_outcome = Some("Complaint".into());
    assert_eq!(
        d.offer(t(2), call(complaint, t(2))).unwrap(),
        OfferDecision::Connect { agent: AgentId(3) }
    );
    assert_eq!(
        d.offer(t(3), call(facts(), t(3))).unwrap(),
        OfferDecision::Connect { agent: AgentId(1) }
    );
    let mut survey = facts();
    survey.tags.push("survey".into());
    assert_eq!(
        d.offer(t(4), call(survey, t(4))).unwrap(),
        OfferDecision::Robot {
            script: "survey-v1".into()
        }
    );
}

#[test]
fn last_agent_affinity_prefers_that_agent_and_falls_back_to_the_group_when_busy() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.log_in(t(1), AgentId(2)).unwrap();
    let mut f = facts();
    f.tags.push("callback".into());
    let mut c = call(f.clone(), t(10));
    c.last_agent = Some(AgentId(2));
    assert_eq!(
        d.offer(t(10), c).unwrap(),
        OfferDecision::Connect { agent: AgentId(2) },
        "agent 2 spoke to the contact last, although agent 1 idles longer"
    );
    let mut c = call(f, t(20));
    c.last_agent = Some(AgentId(2));
    assert_eq!(
        d.offer(t(20), c).unwrap(),
        OfferDecision::Connect { agent: AgentId(1) }
    );
}

#[test]
fn no_agent_free_within_two_seconds_of_the_answer_is_safe_harbour() {
    let mut d = desk(&[(1, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.pause(t(0), AgentId(1), "coffee").unwrap();
    drain(&mut d);
    let c = call(facts(), t(1_000));
    let id = c.call;
    assert_eq!(
        d.offer(t(1_050), c).unwrap(),
        OfferDecision::Waiting { until: t(3_000) }
    );
    assert_eq!(d.poll_timeout(), Some(t(3_000)));
    d.handle_timeout(t(2_999));
    assert!(drain(&mut d).is_empty());
    d.handle_timeout(t(3_000));
    assert_eq!(drain(&mut d), vec![DeskOutput::SafeHarbour { call: id }]);
    // An offer that arrives after the deadline already is safe harbour at once.
    let late = call(facts(), t(10_000));
    assert_eq!(
        d.offer(t(12_000), late).unwrap(),
        OfferDecision::SafeHarbour
    );
}

#[test]
fn an_agent_freed_before_the_deadline_takes_the_waiting_call() {
    let mut d = desk(&[(1, &[SALES]), (2, &[QA])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.log_in(t(0), AgentId(2)).unwrap();
    d.pause(t(0), AgentId(1), "briefing").unwrap();
    drain(&mut d);
    let c = call(facts(), t(100));
    let id = c.call;
    assert!(matches!(
        d.offer(t(100), c).unwrap(),
        OfferDecision::Waiting { .. }
    ));
    // Agent 2 is ready but in QA only: the call waits for sales.
    d.ready(t(1_500), AgentId(1)).unwrap();
    let out = drain(&mut d);
    assert_eq!(
        out.last(),
        Some(&DeskOutput::Connect {
            call: id,
            agent: AgentId(1)
        })
    );
    assert_eq!(
        states(&out),
        vec![(1, AgentState::Ready), (1, AgentState::Reserved)]
    );
    d.handle_timeout(t(5_000));
    assert!(
        drain(&mut d).is_empty(),
        "no safe harbour for a connected call"
    );
}

#[test]
fn a_call_goes_talking_then_wrap_up_then_ready_after_the_campaign_wrap_time() {
    let mut d = desk(&[(1, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    let c = call(facts(), t(100));
    let id = c.call;
    d.offer(t(100), c).unwrap();
    assert!(d.call_bridged(t(110), id));
    d.call_ended(t(60_000), id);
    assert_eq!(d.poll_timeout(), Some(t(70_000)));
    let timer = d.view(AgentId(1)).unwrap().call.unwrap();
    assert_eq!(
        (timer.talking_since_ms, timer.talking_until_ms),
        (Some(t(110).0), Some(t(60_000).0)),
        "the call timer stops when the call ends"
    );
    assert_eq!(d.ready_count(), 0);
    d.handle_timeout(t(70_000));
    let out = drain(&mut d);
    assert_eq!(
        states(&out),
        vec![
            (1, AgentState::Ready),
            (1, AgentState::Reserved),
            (1, AgentState::Talking),
            (1, AgentState::WrapUp),
            (1, AgentState::Ready),
        ]
    );
    let DeskOutput::Agent { event, .. } = &out[3] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (event.call, event.campaign, event.at),
        (Some(id), Some(CAMPAIGN), t(60_000))
    );
    assert_eq!(d.ready_count(), 1);
}

#[test]
fn saving_the_disposition_ends_wrap_up_at_once_and_bad_codes_are_refused() {
    let mut d = desk(&[(1, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    let c = call(facts(), t(100));
    let id = c.call;
    d.offer(t(100), c).unwrap();
    d.call_bridged(t(110), id);
    d.call_ended(t(5_000), id);
    drain(&mut d);
    assert_eq!(
        d.ready(t(5_500), AgentId(1)),
        Err(AgentsError::WrapUpPending(id))
    );
    let e = d.dispose(t(6_000), AgentId(1), "maybe").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`maybe` is not a disposition code of this call (choose one of: sale, no sale)"
    );
    assert!(drain(&mut d).is_empty(), "a refused code changes nothing");
    d.dispose(t(6_000), AgentId(1), "sale").unwrap();
    let out = drain(&mut d);
    assert_eq!(
        out[0],
        DeskOutput::Disposition {
            call: id,
            agent: AgentId(1),
            campaign: Some(CAMPAIGN),
            code: "sale".into(),
            at: t(6_000)
        }
    );
    assert_eq!(states(&out), vec![(1, AgentState::Ready)]);
    assert_eq!(d.poll_timeout(), None, "the wrap-up timer is gone");
    assert_eq!(
        d.dispose(t(7_000), AgentId(1), "sale"),
        Err(AgentsError::NoCallToDispose(AgentId(1)))
    );
}

#[test]
fn a_disposition_saved_while_talking_skips_wrap_up() {
    let mut d = desk(&[(1, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    let c = call(facts(), t(100));
    let id = c.call;
    d.offer(t(100), c).unwrap();
    d.call_bridged(t(110), id);
    d.dispose(t(200), AgentId(1), "no sale").unwrap();
    assert_eq!(
        d.dispose(t(201), AgentId(1), "sale"),
        Err(AgentsError::AlreadyDisposed(id))
    );
    drain(&mut d);
    d.call_ended(t(300), id);
    assert_eq!(states(&drain(&mut d)), vec![(1, AgentState::Ready)]);
}

#[test]
fn pause_needs_a_reason_and_is_refused_on_a_call() {
    let mut d = desk(&[(1, &[SALES])]);
    assert_eq!(
        d.pause(t(0), AgentId(1), "lunch"),
        Err(AgentsError::NotLoggedIn(AgentId(1)))
    );
    d.log_in(t(0), AgentId(1)).unwrap();
    assert_eq!(
        d.pause(t(1), AgentId(1), "  "),
        Err(AgentsError::BadPauseReason)
    );
    assert_eq!(
        d.pause(t(1), AgentId(1), &"x".repeat(101)),
        Err(AgentsError::BadPauseReason)
    );
    d.pause(t(1), AgentId(1), "lunch").unwrap();
    d.ready(t(2), AgentId(1)).unwrap();
    let c = call(facts(), t(3));
    let id = c.call;
    d.offer(t(3), c).unwrap();
    assert_eq!(
        d.pause(t(4), AgentId(1), "lunch"),
        Err(AgentsError::OnCall {
            agent: AgentId(1),
            call: id
        })
    );
    assert_eq!(
        states(&drain(&mut d)),
        vec![
            (1, AgentState::Ready),
            (
                1,
                AgentState::Paused {
                    reason: "lunch".into()
                }
            ),
            (1, AgentState::Ready),
            (1, AgentState::Reserved),
        ]
    );
    assert_eq!(
        d.log_in(t(5), AgentId(9)),
        Err(AgentsError::UnknownAgent(AgentId(9)))
    );
}

#[test]
fn with_nailed_up_legs_an_agent_is_ready_only_when_the_phone_answers_and_a_drop_logs_out() {
    let mut d = AgentDesk::new(DeskSettings::default());
    d.set_roster(t(0), &roster(&[(1, &[SALES])]));
    d.set_campaign(&brief(10));
    assert!(d.log_in(t(0), AgentId(1)).unwrap());
    assert!(
        !d.log_in(t(1), AgentId(1)).unwrap(),
        "second login is a no-op"
    );
    assert_eq!(d.ready_count(), 0);
    assert_eq!(
        d.ready(t(1), AgentId(1)),
        Err(AgentsError::PhoneNotConnected(AgentId(1)))
    );
    d.phone_leg_up(t(500), AgentId(1)).unwrap();
    assert_eq!(d.ready_count(), 1);
    let c = call(facts(), t(600));
    let id = c.call;
    d.offer(t(600), c).unwrap();
    d.call_bridged(t(601), id);
    d.phone_leg_down(t(900), AgentId(1), "phone hung up (BYE)");
    let out = drain(&mut d);
    assert_eq!(out[1], DeskOutput::CallPhone { agent: AgentId(1) });
    let tail = &out[out.len() - 3..];
    assert_eq!(
        tail[0],
        DeskOutput::AgentLost {
            call: id,
            agent: AgentId(1)
        }
    );
    let DeskOutput::Agent { event, reason } = &tail[1] else {
        panic!("{tail:?}")
    };
    assert_eq!(event.state, AgentState::LoggedOut);
    assert_eq!(reason.as_deref(), Some("phone hung up (BYE)"));
    assert_eq!(tail[2], DeskOutput::ReleasePhone { agent: AgentId(1) });
    assert_eq!(
        states(&out)[0],
        (
            1,
            AgentState::Paused {
                reason: PHONE_CONNECTING.into()
            }
        )
    );
}

#[test]
fn inbound_calls_queue_hear_their_position_and_overflow_after_the_wait() {
    let mut d = desk(&[(1, &[SALES])]);
    let (a, b) = (inbound(SALES), inbound(SALES));
    let (a_id, b_id) = (a.call, b.call);
    assert_eq!(
        d.enqueue_inbound(t(0), a).unwrap(),
        OfferDecision::Queued { position: 1 }
    );
    assert_eq!(
        d.enqueue_inbound(t(1_000), b).unwrap(),
        OfferDecision::Queued { position: 2 }
    );
    assert_eq!(d.poll_timeout(), Some(t(30_000)));
    d.handle_timeout(t(30_000));
    assert_eq!(
        drain(&mut d),
        vec![DeskOutput::QueuePosition {
            call: a_id,
            position: 1
        }]
    );
    d.handle_timeout(t(31_000));
    assert_eq!(
        drain(&mut d),
        vec![DeskOutput::QueuePosition {
            call: b_id,
            position: 2
        }]
    );
    d.handle_timeout(t(120_000));
    let out = drain(&mut d);
    assert!(out.contains(&DeskOutput::Overflow {
        call: a_id,
        group: SALES
    }));
    // b is now first in line.
    assert!(out.contains(&DeskOutput::QueuePosition {
        call: b_id,
        position: 1
    }));
    d.handle_timeout(t(121_000));
    assert_eq!(
        drain(&mut d),
        vec![DeskOutput::Overflow {
            call: b_id,
            group: SALES
        }]
    );
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn a_freed_agent_takes_the_oldest_queued_call_of_its_groups() {
    let mut d = desk(&[(1, &[SALES]), (2, &[QA])]);
    let (q1, s1, s2) = (inbound(QA), inbound(SALES), inbound(SALES));
    let s1_id = s1.call;
    d.enqueue_inbound(t(0), q1).unwrap();
    d.enqueue_inbound(t(1), s1).unwrap();
    d.enqueue_inbound(t(2), s2).unwrap();
    assert_eq!(d.pacing_counts().inbound_waiting, 3);
    d.log_in(t(10), AgentId(1)).unwrap();
    let out = drain(&mut d);
    assert_eq!(
        out.last(),
        Some(&DeskOutput::Connect {
            call: s1_id,
            agent: AgentId(1)
        })
    );
    assert_eq!(d.pacing_counts().inbound_waiting, 2);
    // A caller who hangs up while queued leaves the queue.
    let q2 = inbound(QA);
    let q2_id = q2.call;
    d.enqueue_inbound(t(20), q2).unwrap();
    d.call_ended(t(25), q2_id);
    assert_eq!(d.pacing_counts().inbound_waiting, 2);
}

#[test]
fn agents_on_inbound_calls_and_queued_callers_slow_outbound_dialling() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES]), (3, &[QA]), (4, &[QA])]);
    for a in 1..=4 {
        d.log_in(t(a as i64), AgentId(a)).unwrap();
    }
    assert_eq!(d.ready_count(), 4);
    let c = inbound(SALES);
    let id = c.call;
    assert_eq!(
        d.enqueue_inbound(t(10), c).unwrap(),
        OfferDecision::Connect { agent: AgentId(1) }
    );
    d.call_bridged(t(11), id);
    let counts = d.pacing_counts();
    assert_eq!((counts.ready, counts.talking_inbound), (3, 1));
    // Both QA agents busy, then a QA caller queues: one of the other ready agents is not
    // free for outbound calls any more.
    d.enqueue_inbound(t(20), inbound(QA)).unwrap();
    d.enqueue_inbound(t(21), inbound(QA)).unwrap();
    d.enqueue_inbound(t(22), inbound(QA)).unwrap();
    let counts = d.pacing_counts();
    assert_eq!(counts.reserved, 2);
    assert_eq!((counts.ready_before_queue, counts.inbound_waiting), (1, 1));
    assert_eq!(counts.ready, 0);
    assert_eq!(d.ready_count(), 0);
}

#[test]
fn wrap_up_timers_count_as_free_soon() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.log_in(t(0), AgentId(2)).unwrap();
    for at in [100, 200] {
        let c = call(facts(), t(at));
        let id = c.call;
        d.offer(t(at), c).unwrap();
        d.call_bridged(t(at), id);
        d.call_ended(t(at * 10), id);
    }
    let counts = d.pacing_counts();
    assert_eq!(counts.wrap_up_ends, vec![t(11_000), t(12_000)]);
    assert_eq!(counts.free_by(t(10_000)), 0);
    assert_eq!(counts.free_by(t(11_500)), 1);
    assert_eq!(counts.free_by(t(12_000)), 2);
}

#[test]
fn an_agent_removed_from_the_roster_is_logged_out_and_its_call_reported_lost() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    let c = call(facts(), t(5));
    let id = c.call;
    d.offer(t(5), c).unwrap();
    drain(&mut d);
    d.set_roster(t(10), &roster(&[(2, &[SALES])]));
    let out = drain(&mut d);
    assert_eq!(
        out[0],
        DeskOutput::AgentLost {
            call: id,
            agent: AgentId(1)
        }
    );
    assert_eq!(states(&out), vec![(1, AgentState::LoggedOut)]);
    assert!(d.view(AgentId(1)).is_none());
    assert_eq!(
        d.log_in(t(11), AgentId(1)),
        Err(AgentsError::UnknownAgent(AgentId(1)))
    );
}

#[test]
fn the_view_shows_the_pop_codes_and_timer_of_the_call() {
    let mut d = desk(&[(1, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    let mut c = call(facts(), t(100));
    c.pop = ScreenPop::new(
        "spring",
        None,
        &[("name".into(), "Ada".into())],
        "Hello {{name}}",
    );
    let id = c.call;
    d.offer(t(100), c).unwrap();
    d.call_bridged(t(150), id);
    let v = d.view(AgentId(1)).unwrap();
    assert_eq!(v.state, "talking");
    let cv = v.call.unwrap();
    assert_eq!(cv.pop.script, "Hello Ada");
    assert_eq!(cv.dispositions, vec!["sale", "no sale"]);
    assert_eq!(cv.talking_since_ms, Some(t(150).0));
    assert_eq!(cv.talking_until_ms, None);
    assert!(!cv.inbound);
    assert_eq!(
        d.offer(t(151), {
            let mut again = call(facts(), t(151));
            again.call = id;
            again
        }),
        Err(AgentsError::DuplicateCall(id))
    );
}

#[test]
fn a_previewed_call_goes_to_the_agent_who_dialled_it_or_is_routed_when_that_agent_is_busy() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.log_in(t(10), AgentId(2)).unwrap();
    // Agent 2 dialled it: agent 2 takes it although agent 1 has been idle longer.
    let first = call(facts(), t(100));
    assert_eq!(
        d.offer_to(t(100), first.clone(), AgentId(2)).unwrap(),
        OfferDecision::Connect { agent: AgentId(2) }
    );
    assert!(matches!(
        d.offer_to(t(100), first, AgentId(2)),
        Err(AgentsError::DuplicateCall(_))
    ));
    // Agent 2 is busy now: the next call it "dialled" is routed like any other.
    assert_eq!(
        d.offer_to(t(200), call(facts(), t(200)), AgentId(2))
            .unwrap(),
        OfferDecision::Connect { agent: AgentId(1) }
    );
}

#[test]
fn an_agent_hangs_up_only_a_call_it_talks_on_and_goes_to_wrap_up_when_it_ended() {
    let mut d = desk(&[(1, &[SALES])]);
    assert!(matches!(
        d.hang_up(AgentId(1)),
        Err(AgentsError::NotLoggedIn(_))
    ));
    d.log_in(t(0), AgentId(1)).unwrap();
    assert!(matches!(
        d.hang_up(AgentId(1)),
        Err(AgentsError::NoCallToHangUp(_))
    ));
    let c = call(facts(), t(100));
    let id = c.call;
    d.offer(t(100), c).unwrap();
    assert!(matches!(
        d.hang_up(AgentId(1)),
        Err(AgentsError::NoCallToHangUp(_))
    ));
    d.call_bridged(t(150), id);
    drain(&mut d);
    assert_eq!(d.hang_up(AgentId(1)).unwrap(), id);
    assert_eq!(
        drain(&mut d),
        vec![DeskOutput::HangUp {
            call: id,
            agent: AgentId(1)
        }],
        "the desk asks the call side; the agent's state waits for the call to end"
    );
    d.call_ended(t(300), id);
    assert_eq!(states(&drain(&mut d)), vec![(1, AgentState::WrapUp)]);
}

#[test]
fn a_transferred_call_goes_to_the_named_groups_agent_or_waits_then_reaches_safe_harbour() {
    // The policy would send every call to sales; the script names QA.
    let mut d = desk(&[(1, &[SALES]), (2, &[QA])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.log_in(t(10), AgentId(2)).unwrap();
    drain(&mut d);
    let c = call(facts(), t(100));
    assert_eq!(
        d.offer_to_group(t(100), c, QA).unwrap(),
        OfferDecision::Connect { agent: AgentId(2) }
    );
    // QA's only agent is busy now: the next transfer waits, sales' ready agent is not used.
    let c = call(facts(), t(200));
    let id = c.call;
    assert_eq!(
        d.offer_to_group(t(200), c, QA).unwrap(),
        OfferDecision::Waiting { until: t(2_200) }
    );
    d.handle_timeout(t(2_200));
    let out = drain(&mut d);
    assert_eq!(states(&out), vec![(2, AgentState::Reserved)]);
    assert_eq!(out.last(), Some(&DeskOutput::SafeHarbour { call: id }));
    assert_eq!(d.view(AgentId(1)).unwrap().state, "ready");
}

#[test]
fn a_wrap_up_left_by_a_restart_resumes_at_login_takes_its_code_and_ends_at_its_time() {
    let mut d = desk(&[(1, &[SALES]), (2, &[SALES])]);
    d.set_campaign(&brief(30));
    let (outbound, inbound) = (CallId::new_v7(), CallId::new_v7());
    let pop = ScreenPop::new("", None, &[], "");
    d.resume_wrap_up(AgentId(1), outbound, Some(CAMPAIGN), pop.clone(), t(20_000));
    d.resume_wrap_up(AgentId(2), inbound, None, pop, t(5_000));

    // Agent 1 logs in before its wrap-up's end: back in it, with the campaign's codes.
    d.log_in(t(1_000), AgentId(1)).unwrap();
    let v = d.view(AgentId(1)).unwrap();
    assert_eq!(v.state, "wrap_up");
    assert_eq!(v.wrap_up_until_ms, Some(t(20_000).0));
    let c = v.call.unwrap();
    assert_eq!((c.call, c.inbound), (outbound.to_string(), false));
    assert_eq!(c.dispositions, brief(30).disposition_codes);
    assert_eq!(d.ready_count(), 0, "not ready while it wraps up");
    drain(&mut d);
    d.dispose(t(2_000), AgentId(1), "sale").unwrap();
    let out = drain(&mut d);
    assert!(
        out.contains(&DeskOutput::Disposition {
            call: outbound,
            agent: AgentId(1),
            campaign: Some(CAMPAIGN),
            code: "sale".into(),
            at: t(2_000),
        }),
        "{out:?}"
    );
    assert_eq!(d.view(AgentId(1)).unwrap().state, "ready");

    // Agent 2 logs in after its wrap-up's end: simply ready.
    d.log_in(t(6_000), AgentId(2)).unwrap();
    assert_eq!(d.view(AgentId(2)).unwrap().state, "ready");
}

#[test]
fn a_resumed_wrap_up_not_disposed_ends_at_its_time_with_the_inbound_codes() {
    let mut d = desk(&[(1, &[SALES])]);
    let call_id = CallId::new_v7();
    d.resume_wrap_up(
        AgentId(1),
        call_id,
        None,
        ScreenPop::new("", None, &[], ""),
        t(8_000),
    );
    d.log_in(t(1_000), AgentId(1)).unwrap();
    let v = d.view(AgentId(1)).unwrap();
    assert_eq!(v.state, "wrap_up");
    assert_eq!(
        v.call.unwrap().dispositions,
        DeskSettings::default().inbound_dispositions
    );
    assert_eq!(d.poll_timeout(), Some(t(8_000)));
    d.handle_timeout(t(8_000));
    assert_eq!(d.view(AgentId(1)).unwrap().state, "ready");
    // Resumed once: a later login is plain.
    d.log_out(t(9_000), AgentId(1), "home").unwrap();
    d.log_in(t(9_500), AgentId(1)).unwrap();
    assert_eq!(d.view(AgentId(1)).unwrap().state, "ready");
}

#[test]
fn a_call_of_no_campaign_transferred_to_a_group_carries_the_inbound_codes_or_waits_then_safe_harbour(
) {
    let mut d = desk(&[(1, &[SALES]), (2, &[QA])]);
    d.log_in(t(0), AgentId(1)).unwrap();
    d.log_in(t(10), AgentId(2)).unwrap();
    let pop = ScreenPop::new("", None, &[], "");
    let first = CallId::new_v7();
    assert_eq!(
        d.offer_inbound_to_group(t(1_000), first, pop.clone(), QA)
            .unwrap(),
        OfferDecision::Connect { agent: AgentId(2) },
        "the named group's agent, not the longest idle"
    );
    let c = d.view(AgentId(2)).unwrap().call.unwrap();
    assert!(c.inbound);
    assert_eq!(c.dispositions, DeskSettings::default().inbound_dispositions);
    let second = CallId::new_v7();
    assert!(matches!(
        d.offer_inbound_to_group(t(1_100), second, pop, QA).unwrap(),
        OfferDecision::Waiting { .. }
    ));
    drain(&mut d);
    d.handle_timeout(t(1_100 + DeskSettings::default().safe_harbour_after_ms));
    assert_eq!(
        drain(&mut d),
        vec![DeskOutput::SafeHarbour { call: second }]
    );
}
