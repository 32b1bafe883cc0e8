//! Behaviour of the pacing core in virtual time: every input is given with its instant, no
//! test sleeps or reads a clock, and every random stream is seeded.

use super::*;
use crate::sim::{self, rng::SimRng, Scenario, Strategy};

const T0: i64 = 1_767_603_600_000; // 2026-01-05T09:00:00Z

fn trunk(name: &str) -> TrunkId {
    TrunkId::new(name).unwrap()
}

fn id(n: u128) -> AttemptId {
    AttemptId(uuid::Uuid::from_u128(n))
}

fn pacer() -> PredictivePacer {
    let mut p = PredictivePacer::new(
        PacingConfig::default(),
        AbandonBudget::default(),
        GrantLimits::unlimited(),
    )
    .unwrap();
    p.set_trunk(
        trunk("carrier-a"),
        TrunkLimits {
            max_concurrent: 500,
            max_per_minute: 5000,
        },
    );
    p
}

/// Feeds `n` attempts on `trunk`, all started at `now`, in time order: a fraction `human`
/// answered by a person after `ring_ms`, the rest ringing out after 25 s. The pacer's clock
/// ends at `now + 25 s`.
#[allow(clippy::too_many_arguments)]
fn teach(
    p: &mut PredictivePacer,
    now: i64,
    trunk_name: &str,
    n: u32,
    human: f64,
    ring_ms: i64,
    next: &mut u128,
    rng: &mut SimRng,
) {
    let mut batch = Vec::new();
    for _ in 0..n {
        *next += 1;
        let a = id(*next);
        p.handle_attempt(
            UnixMillis(now),
            a,
            AttemptEvent::Started {
                trunk: trunk(trunk_name),
            },
        )
        .unwrap();
        batch.push((a, rng.uniform() < human));
    }
    for (a, answered) in &batch {
        if *answered {
            let at = UnixMillis(now + ring_ms);
            p.handle_attempt(at, *a, AttemptEvent::AnsweredHuman)
                .unwrap();
            p.handle_attempt(at, *a, AttemptEvent::Connected).unwrap();
            p.handle_attempt(at, *a, AttemptEvent::Ended).unwrap();
        }
    }
    for (a, answered) in &batch {
        if !*answered {
            p.handle_attempt(UnixMillis(now + 25_000), *a, AttemptEvent::NoAnswer)
                .unwrap();
        }
    }
}

fn ready(p: &mut PredictivePacer, now: i64, agents: u64) {
    for a in 1..=agents {
        p.handle_agent(UnixMillis(now), AgentId(a), AgentState::Ready)
            .unwrap();
    }
}

#[test]
fn ready_agents_get_more_attempts_than_agents_when_few_people_answer() {
    let mut p = pacer();
    ready(&mut p, T0, 10);
    let plan = p.poll_dial(UnixMillis(T0));
    // A quarter of attempts reach a person (the prior): overdial, but not wildly.
    assert!(plan.total() > 10, "{plan:?}");
    assert!(plan.total() <= 60, "{plan:?}");
    assert_eq!(plan.per_trunk[0].0, trunk("carrier-a"));
}

#[test]
fn a_single_agent_gets_one_attempt_at_a_time() {
    let mut p = pacer();
    ready(&mut p, T0, 1);
    assert_eq!(p.poll_dial(UnixMillis(T0)).total(), 1);
    p.handle_attempt(
        UnixMillis(T0),
        id(1),
        AttemptEvent::Started {
            trunk: trunk("carrier-a"),
        },
    )
    .unwrap();
    // The one in flight could take the agent: a second would risk an abandon above budget.
    assert_eq!(p.poll_dial(UnixMillis(T0 + 1000)).total(), 0);
}

#[test]
fn paused_and_logged_out_agents_get_no_attempts() {
    let mut p = pacer();
    p.handle_agent(UnixMillis(T0), AgentId(1), AgentState::Paused)
        .unwrap();
    p.handle_agent(UnixMillis(T0), AgentId(2), AgentState::Ready)
        .unwrap();
    p.handle_agent(UnixMillis(T0), AgentId(2), AgentState::LoggedOut)
        .unwrap();
    assert_eq!(p.poll_dial(UnixMillis(T0)).total(), 0);
}

#[test]
fn wrap_up_ending_within_the_answer_time_is_dialled_for_and_a_long_one_is_not() {
    let mut soon = pacer();
    soon.handle_agent(
        UnixMillis(T0),
        AgentId(1),
        AgentState::WrapUp {
            until: UnixMillis(T0 + 3_000),
        },
    )
    .unwrap();
    let mut late = pacer();
    late.handle_agent(
        UnixMillis(T0),
        AgentId(1),
        AgentState::WrapUp {
            until: UnixMillis(T0 + 120_000),
        },
    )
    .unwrap();
    assert!(soon.poll_dial(UnixMillis(T0)).total() >= 1);
    assert_eq!(late.poll_dial(UnixMillis(T0)).total(), 0);
    // The timer is also the moment the pacer asks to be polled again.
    assert_eq!(late.poll_timeout(), Some(UnixMillis(T0 + 15_000)));
    let mut p = pacer();
    p.handle_agent(
        UnixMillis(T0),
        AgentId(1),
        AgentState::WrapUp {
            until: UnixMillis(T0 + 5_000),
        },
    )
    .unwrap();
    assert_eq!(p.poll_timeout(), Some(UnixMillis(T0 + 5_000)));
}

#[test]
fn an_agent_near_the_end_of_a_typical_call_is_dialled_for_before_hanging_up() {
    let mut p = pacer();
    // Teach: conversations last 60 s, wrap-up 1 s.
    let mut t = T0;
    for _ in 0..200 {
        p.handle_agent(UnixMillis(t), AgentId(9), AgentState::Talking)
            .unwrap();
        t += 60_000;
        p.handle_agent(
            UnixMillis(t),
            AgentId(9),
            AgentState::WrapUp {
                until: UnixMillis(t + 1_000),
            },
        )
        .unwrap();
        t += 1_000;
        p.handle_agent(UnixMillis(t), AgentId(9), AgentState::Ready)
            .unwrap();
    }
    p.handle_agent(UnixMillis(t), AgentId(9), AgentState::LoggedOut)
        .unwrap();
    let mut fresh = p.clone();
    // 59 s into a call that always lasts 60 s, then 1 s of wrap-up: free in about 2 s.
    p.handle_agent(UnixMillis(t), AgentId(1), AgentState::Talking)
        .unwrap();
    // One second into a call: not free for a minute.
    fresh
        .handle_agent(UnixMillis(t + 58_000), AgentId(1), AgentState::Talking)
        .unwrap();
    assert_eq!(fresh.poll_dial(UnixMillis(t + 59_000)).total(), 0);
    assert!(p.poll_dial(UnixMillis(t + 59_000)).total() >= 1);
}

#[test]
fn answer_probability_and_time_to_answer_are_learned_per_trunk() {
    let mut p = pacer();
    p.set_trunk(
        trunk("carrier-b"),
        TrunkLimits {
            max_concurrent: 10,
            max_per_minute: 100,
        },
    );
    let mut rng = SimRng::new(7);
    let mut next = 0;
    for m in 0..30 {
        let now = T0 + m * 60_000;
        teach(
            &mut p,
            now,
            "carrier-a",
            20,
            0.40,
            4_000,
            &mut next,
            &mut rng,
        );
        teach(
            &mut p,
            now + 30_000,
            "carrier-b",
            20,
            0.10,
            15_000,
            &mut next,
            &mut rng,
        );
    }
    let now = UnixMillis(T0 + 30 * 60_000);
    let a = p.answer_outlook(now, &trunk("carrier-a")).unwrap();
    let b = p.answer_outlook(now, &trunk("carrier-b")).unwrap();
    assert!((a.p_human - 0.40).abs() < 0.05, "a {}", a.p_human);
    assert!((b.p_human - 0.10).abs() < 0.04, "b {}", b.p_human);
    assert!(
        (a.mean_answer_secs() - 4.5).abs() < 1.5,
        "{}",
        a.mean_answer_secs()
    );
    assert!(
        (b.mean_answer_secs() - 15.5).abs() < 1.5,
        "{}",
        b.mean_answer_secs()
    );
    assert!(p.answer_outlook(now, &trunk("carrier-z")).is_none());
}

#[test]
fn the_hour_of_day_profile_is_kept_in_the_sites_time_zone() {
    let config = PacingConfig {
        utc_offset_minutes: 120,
        ..PacingConfig::default()
    };
    let p =
        PredictivePacer::new(config, AbandonBudget::default(), GrantLimits::unlimited()).unwrap();
    assert_eq!(p.hour_of(T0), 11); // 09:00Z is 11:00 at UTC+2
}

#[test]
fn a_fall_from_30_to_20_percent_is_learned_within_minutes() {
    let mut p = pacer();
    let mut rng = SimRng::new(11);
    let mut next = 0;
    // One hour at 30 %, 40 attempts a minute (a 20-agent site).
    for m in 0..60 {
        teach(
            &mut p,
            T0 + m * 60_000,
            "carrier-a",
            40,
            0.30,
            8_000,
            &mut next,
            &mut rng,
        );
    }
    let before = p
        .answer_outlook(UnixMillis(T0 + 60 * 60_000), &trunk("carrier-a"))
        .unwrap()
        .p_human;
    assert!((before - 0.30).abs() < 0.03, "{before}");
    let mut seen = Vec::new();
    for m in 60..75 {
        teach(
            &mut p,
            T0 + m * 60_000,
            "carrier-a",
            40,
            0.20,
            8_000,
            &mut next,
            &mut rng,
        );
        let est = p
            .answer_outlook(UnixMillis(T0 + m * 60_000), &trunk("carrier-a"))
            .unwrap()
            .p_human;
        seen.push(est);
    }
    // Within ten minutes of the change the estimate has followed it.
    assert!(seen[9] < 0.23, "after 10 min: {seen:?}");
    assert!((seen[14] - 0.20).abs() < 0.03, "after 15 min: {seen:?}");
}

#[test]
fn a_lower_answer_rate_means_more_attempts_per_free_agent_not_more_risk() {
    let plan_at = |human: f64| {
        let mut p = pacer();
        let mut rng = SimRng::new(3);
        let mut next = 0;
        for m in 0..30 {
            teach(
                &mut p,
                T0 + m * 60_000,
                "carrier-a",
                40,
                human,
                8_000,
                &mut next,
                &mut rng,
            );
        }
        let now = T0 + 30 * 60_000;
        ready(&mut p, now, 10);
        p.poll_dial(UnixMillis(now)).total()
    };
    let at30 = plan_at(0.30);
    let at20 = plan_at(0.20);
    assert!(at20 > at30, "20 %: {at20}, 30 %: {at30}");
    // Expected people answering stays about the same: the pacer targets agents, not lines.
    let (e30, e20) = (f64::from(at30) * 0.30, f64::from(at20) * 0.20);
    assert!((e30 - e20).abs() < 0.25 * e30, "{e30} vs {e20}");
}

#[test]
fn trunk_and_grant_limits_cap_the_plan_and_an_expired_grant_stops_it() {
    let mut p = pacer();
    p.set_trunk(
        trunk("carrier-a"),
        TrunkLimits {
            max_concurrent: 4,
            max_per_minute: 100,
        },
    );
    ready(&mut p, T0, 20);
    assert_eq!(p.poll_dial(UnixMillis(T0)).total(), 4);

    p.set_trunk(
        trunk("carrier-b"),
        TrunkLimits {
            max_concurrent: 3,
            max_per_minute: 100,
        },
    );
    let plan = p.poll_dial(UnixMillis(T0));
    assert_eq!(
        plan.per_trunk,
        vec![(trunk("carrier-a"), 4), (trunk("carrier-b"), 3)]
    );

    p.set_grant(GrantLimits {
        max_concurrent: 5,
        max_per_minute: 1000,
        expires_at: UnixMillis(T0 + 60_000),
    });
    assert_eq!(p.poll_dial(UnixMillis(T0)).total(), 5);
    for n in 1..=5 {
        p.handle_attempt(
            UnixMillis(T0),
            id(n),
            AttemptEvent::Started {
                trunk: trunk("carrier-a"),
            },
        )
        .unwrap();
    }
    assert_eq!(p.poll_dial(UnixMillis(T0 + 1000)).total(), 0);
    for n in 1..=5 {
        p.handle_attempt(UnixMillis(T0 + 2000), id(n), AttemptEvent::Busy)
            .unwrap();
    }
    assert_eq!(p.poll_dial(UnixMillis(T0 + 2000)).total(), 5);
    assert_eq!(p.poll_dial(UnixMillis(T0 + 60_000)).total(), 0);
}

#[test]
fn the_per_minute_limit_counts_starts_in_the_last_sixty_seconds() {
    let mut p = pacer();
    p.set_trunk(
        trunk("carrier-a"),
        TrunkLimits {
            max_concurrent: 100,
            max_per_minute: 6,
        },
    );
    ready(&mut p, T0, 20);
    assert_eq!(p.poll_dial(UnixMillis(T0)).total(), 6);
    for n in 1..=6 {
        p.handle_attempt(
            UnixMillis(T0),
            id(n),
            AttemptEvent::Started {
                trunk: trunk("carrier-a"),
            },
        )
        .unwrap();
    }
    for n in 1..=6 {
        p.handle_attempt(UnixMillis(T0 + 1000), id(n), AttemptEvent::Failed)
            .unwrap();
    }
    assert_eq!(p.poll_dial(UnixMillis(T0 + 59_000)).total(), 0);
    assert_eq!(p.poll_dial(UnixMillis(T0 + 60_000)).total(), 6);
}

#[test]
fn a_spent_abandon_budget_stops_overdialling() {
    let fresh_plan = {
        let mut p = pacer();
        ready(&mut p, T0, 10);
        p.poll_dial(UnixMillis(T0)).total()
    };
    let mut p = pacer();
    // 40 people answered in the window, 3 abandoned: 7.5 % against a 3 % cap.
    for n in 0..40u128 {
        let a = id(n + 1);
        p.handle_attempt(
            UnixMillis(T0 - 60_000),
            a,
            AttemptEvent::Started {
                trunk: trunk("carrier-a"),
            },
        )
        .unwrap();
        p.handle_attempt(UnixMillis(T0 - 50_000), a, AttemptEvent::AnsweredHuman)
            .unwrap();
        let last = if n < 3 {
            AttemptEvent::Abandoned
        } else {
            AttemptEvent::Connected
        };
        p.handle_attempt(UnixMillis(T0 - 48_000), a, last).unwrap();
        p.handle_attempt(UnixMillis(T0 - 40_000), a, AttemptEvent::Ended)
            .unwrap();
    }
    assert_eq!(p.window_counts(), (3, 40));
    ready(&mut p, T0, 10);
    let spent_plan = p.poll_dial(UnixMillis(T0)).total();
    assert!(
        spent_plan < fresh_plan,
        "spent {spent_plan} vs fresh {fresh_plan}"
    );
    assert!(p.effective_risk_limit() <= 0.02 * p.risk_limit() + 1e-12);
    // The window forgets: a day later the budget is whole again.
    let later = T0 + 24 * 3_600_000 + 60_000;
    p.poll_dial(UnixMillis(later));
    assert_eq!(p.window_counts(), (0, 0));
}

#[test]
fn the_controller_tightens_after_abandons_and_relaxes_when_calls_are_clean() {
    let mut p = pacer();
    ready(&mut p, T0, 3);
    let start = p.risk_limit();
    let mut n = 0u128;
    let mut call = |p: &mut PredictivePacer, at: i64, abandoned: bool| {
        n += 1;
        let a = id(n);
        p.handle_attempt(
            UnixMillis(at),
            a,
            AttemptEvent::Started {
                trunk: trunk("carrier-a"),
            },
        )
        .unwrap();
        p.handle_attempt(UnixMillis(at + 5000), a, AttemptEvent::AnsweredHuman)
            .unwrap();
        let ev = if abandoned {
            AttemptEvent::Abandoned
        } else {
            AttemptEvent::Connected
        };
        p.handle_attempt(UnixMillis(at + 7000), a, ev).unwrap();
        p.handle_attempt(UnixMillis(at + 9000), a, AttemptEvent::Ended)
            .unwrap();
    };
    // 20 minutes at 10 % abandoned.
    for s in 0..240 {
        p.poll_dial(UnixMillis(T0 + s * 5000));
        call(&mut p, T0 + s * 5000, s % 10 == 0);
    }
    let tight = p.risk_limit();
    assert!(tight < start / 2.0, "start {start}, after abandons {tight}");
    // An hour with none, while the risk limit is what holds dialling back.
    for s in 240..960 {
        p.poll_dial(UnixMillis(T0 + s * 5000));
        call(&mut p, T0 + s * 5000, false);
    }
    assert!(
        p.risk_limit() > tight * 2.0,
        "{} vs {tight}",
        p.risk_limit()
    );
}

#[test]
fn refused_events_name_the_problem_and_leave_the_pacer_unchanged() {
    let mut p = pacer();
    ready(&mut p, T0, 5);
    let start = |_: u32| AttemptEvent::Started {
        trunk: trunk("carrier-a"),
    };
    p.handle_attempt(UnixMillis(T0), id(1), start(1)).unwrap();
    p.handle_attempt(UnixMillis(T0 + 1000), id(1), AttemptEvent::NoAnswer)
        .unwrap();
    p.handle_attempt(UnixMillis(T0 + 1000), id(2), start(2))
        .unwrap();
    let twin = p.clone();

    // Each refusal comes later in virtual time than anything accepted so far.
    let later = UnixMillis(T0 + 40_000);
    let err = p
        .handle_attempt(later, id(1), AttemptEvent::AnsweredHuman)
        .unwrap_err();
    assert_eq!(err, PacingError::UnknownAttempt(id(1)));
    let err = p.handle_attempt(later, id(2), start(2)).unwrap_err();
    assert_eq!(err, PacingError::DuplicateAttempt(id(2)));
    let err = p
        .handle_attempt(later, id(2), AttemptEvent::Connected)
        .unwrap_err();
    assert!(
        err.to_string().contains("Connected") && err.to_string().contains("Ringing"),
        "{err}"
    );
    let err = p
        .handle_attempt(
            later,
            id(3),
            AttemptEvent::Started {
                trunk: trunk("carrier-x"),
            },
        )
        .unwrap_err();
    assert_eq!(err, PacingError::UnknownTrunk(trunk("carrier-x")));

    // The whole state, clock and learning included, is what it was before the refusals.
    assert_eq!(format!("{p:?}"), format!("{twin:?}"));
}

#[test]
fn bad_settings_are_refused_naming_the_key() {
    let err = PredictivePacer::new(
        PacingConfig::default(),
        AbandonBudget {
            cap: 1.5,
            window_ms: 86_400_000,
        },
        GrantLimits::unlimited(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("abandon_budget.cap"), "{err}");
    let err = PredictivePacer::new(
        PacingConfig {
            abandon_margin: -0.1,
            ..PacingConfig::default()
        },
        AbandonBudget::default(),
        GrantLimits::unlimited(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("abandon_margin"), "{err}");
    let err = PredictivePacer::new(
        PacingConfig {
            utc_offset_minutes: 24 * 60,
            ..PacingConfig::default()
        },
        AbandonBudget::default(),
        GrantLimits::unlimited(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("utc_offset_minutes"), "{err}");
    let mut p = pacer();
    let err = p
        .set_budget(AbandonBudget {
            cap: 0.03,
            window_ms: 10,
        })
        .unwrap_err();
    assert!(err.to_string().contains("window_ms"), "{err}");
    assert_eq!(p.budget, AbandonBudget::default());
}

// --- Whole-site behaviour, through the discrete-event simulator (virtual time, seeded). ---

fn scenario(agents: u32, human: &str, days: u32, seed: u64, shift: [f64; 2]) -> Scenario {
    let text = format!(
        r#"
name = "test"
seed = {seed}
days = {days}
[[agents]]
count = {agents}
shift = [{start:.1}, {end:.1}]
[callees]
human = {human}
machine = [[0.0, 0.08]]
busy = 0.07
failed = 0.02
ring = {{ kind = "lognormal", mean = 9.0, sd = 5.0 }}
no_answer_timeout = 25.0
busy_after = {{ kind = "uniform", min = 1.0, max = 5.0 }}
amd_secs = 3.0
[handling]
talk = {{ kind = "lognormal", mean = 150.0, sd = 100.0 }}
wrap = {{ kind = "uniform", min = 10.0, max = 20.0 }}
[trunk]
max_concurrent = {conc}
max_per_minute = {rate}
[abandon]
cap = 0.03
window_hours = 24.0
"#,
        start = shift[0],
        end = shift[1],
        conc = agents * 3 + 10,
        rate = agents * 15 + 50,
    );
    Scenario::parse(&text).unwrap()
}

fn rate(answers: u64, abandons: u64) -> f64 {
    abandons as f64 / answers.max(1) as f64
}

#[test]
fn a_mid_day_fall_from_30_to_20_percent_keeps_agents_fed_without_an_abandon_spike() {
    let sc = scenario(20, "[[0.0, 0.30], [13.0, 0.20]]", 2, 41, [10.0, 16.0]);
    let ours = sim::run(&sc, &Strategy::Predictive(PacingConfig::default())).unwrap();
    let (ans, ab) = ours.by_hour[13..15]
        .iter()
        .fold((0, 0), |acc, h| (acc.0 + h.0, acc.1 + h.1));
    assert!(rate(ans, ab) <= 0.03, "13:00–15:00: {ab} of {ans}");
    assert!(ours.worst_day_abandon_rate() <= 0.03);
    // Fewer people answer per attempt; the pacer dials more so agents still get calls.
    let morning: u64 = ours.by_hour[10..12].iter().map(|h| h.0).sum();
    assert!(
        ans as f64 > 0.9 * morning as f64,
        "answers 13–15 {ans}, 10–12 {morning}"
    );
}

#[test]
fn a_mid_day_rise_from_20_to_30_percent_keeps_abandons_under_the_cap() {
    let sc = scenario(20, "[[0.0, 0.20], [13.0, 0.30]]", 2, 43, [10.0, 16.0]);
    let ours = sim::run(&sc, &Strategy::Predictive(PacingConfig::default())).unwrap();
    let (ans, ab) = ours.by_hour[13..15]
        .iter()
        .fold((0, 0), |acc, h| (acc.0 + h.0, acc.1 + h.1));
    assert!(rate(ans, ab) <= 0.03, "13:00–15:00: {ab} of {ans}");
    assert!(ours.worst_day_abandon_rate() <= 0.03);
}

#[test]
fn three_agents_are_paced_under_the_cap_and_busier_than_progressive() {
    let sc = scenario(3, "[[0.0, 0.30]]", 4, 47, [9.0, 17.0]);
    let ours = sim::run(&sc, &Strategy::Predictive(PacingConfig::default())).unwrap();
    let progressive = sim::run(&sc, &Strategy::Progressive).unwrap();
    assert!(
        ours.thirty_day_abandon_rate() <= 0.03,
        "{}",
        ours.thirty_day_abandon_rate()
    );
    assert!(
        ours.occupancy() > progressive.occupancy() + 0.02,
        "ours {} progressive {}",
        ours.occupancy(),
        progressive.occupancy()
    );
}

#[test]
fn a_hundred_agents_are_paced_under_the_cap_and_far_busier_than_progressive() {
    let sc = scenario(100, "[[0.0, 0.30]]", 1, 53, [9.0, 12.0]);
    let ours = sim::run(&sc, &Strategy::Predictive(PacingConfig::default())).unwrap();
    let progressive = sim::run(&sc, &Strategy::Progressive).unwrap();
    assert!(
        ours.worst_day_abandon_rate() <= 0.03,
        "{}",
        ours.worst_day_abandon_rate()
    );
    assert!(
        ours.occupancy() > progressive.occupancy() + 0.10,
        "ours {} progressive {}",
        ours.occupancy(),
        progressive.occupancy()
    );
}
