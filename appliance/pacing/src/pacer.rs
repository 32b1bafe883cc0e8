//! The pacing state machine: inputs in with their time, a dial plan out.
//!
//! Owns the pacer's view of agents, attempts in flight, trunk and grant limits, the abandon
//! budget and the risk controller. Delegates the learning to `answer` and `agents` and the
//! probability arithmetic to `risk`. Must not read a clock, sleep, or do I/O.

use std::collections::{BTreeMap, VecDeque};

use callgate_common::{
    ids::{AgentId, AttemptId, TrunkId},
    time::UnixMillis,
};

use crate::{
    agents::AgentOutlook,
    answer::{AnswerLearning, AnswerOutlook, RingOutcome, TrunkAnswers},
    risk::{Shortfall, ShortfallLaw},
    PacingError,
};

/// An agent's state as the dialer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Logged in and waiting for a call.
    Ready,
    /// Chosen for an answered call that is being bridged.
    Reserved,
    /// In conversation.
    Talking,
    /// After a call, until the wrap-up timer runs out (or the agent presses ready).
    WrapUp {
        /// When the wrap-up timer runs out.
        until: UnixMillis,
    },
    /// Logged in but paused (break, training...).
    Paused,
    /// Not logged in.
    LoggedOut,
}

/// What happened to an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEvent {
    /// The driver placed the attempt on `trunk` (report every attempt of a plan).
    Started {
        /// The trunk it went out on.
        trunk: TrunkId,
    },
    /// The far end is ringing (informational; ring time counts from `Started`).
    Ringing,
    /// A person answered: the call needs an agent within the safe-harbour time.
    AnsweredHuman,
    /// A machine answered (answering-machine detection); no agent is needed.
    AnsweredMachine,
    /// Rang out unanswered; the channel is released.
    NoAnswer,
    /// Busy; the channel is released.
    Busy,
    /// Could not be placed or was rejected; the channel is released.
    Failed,
    /// The answered call was bridged to an agent.
    Connected,
    /// The answered call found no agent in time and got the safe-harbour message.
    Abandoned,
    /// The call's channel was released (after talk, machine handling or safe harbour).
    Ended,
}

impl AttemptEvent {
    fn name(&self) -> &'static str {
        match self {
            AttemptEvent::Started { .. } => "Started",
            AttemptEvent::Ringing => "Ringing",
            AttemptEvent::AnsweredHuman => "AnsweredHuman",
            AttemptEvent::AnsweredMachine => "AnsweredMachine",
            AttemptEvent::NoAnswer => "NoAnswer",
            AttemptEvent::Busy => "Busy",
            AttemptEvent::Failed => "Failed",
            AttemptEvent::Connected => "Connected",
            AttemptEvent::Abandoned => "Abandoned",
            AttemptEvent::Ended => "Ended",
        }
    }
}

/// The campaign's abandon budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbandonBudget {
    /// Highest allowed abandoned ÷ answered-by-a-person, e.g. `0.03`.
    pub cap: f64,
    /// The window the cap is measured over, milliseconds (24 h, 30 days...).
    pub window_ms: i64,
}

impl Default for AbandonBudget {
    fn default() -> Self {
        AbandonBudget {
            cap: 0.03,
            window_ms: 24 * 3_600_000,
        }
    }
}

/// The pacing grant's limits (from the coordinator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantLimits {
    /// Attempts and calls up at once, across trunks.
    pub max_concurrent: u32,
    /// Attempts started in any 60 s.
    pub max_per_minute: u32,
    /// No attempt starts at or after this instant.
    pub expires_at: UnixMillis,
}

impl GrantLimits {
    /// No limit and no expiry (tests, the simulator).
    pub fn unlimited() -> Self {
        GrantLimits {
            max_concurrent: u32::MAX,
            max_per_minute: u32::MAX,
            expires_at: UnixMillis(i64::MAX),
        }
    }
}

/// A trunk's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkLimits {
    /// Channels: attempts ringing plus calls up.
    pub max_concurrent: u32,
    /// Attempts started in any 60 s.
    pub max_per_minute: u32,
}

/// Tuning of the pacer. The defaults are the engineered values the benchmark reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Share of the abandon cap kept in reserve: the controller aims at `cap · (1 − margin)`.
    pub abandon_margin: f64,
    /// Site time zone offset from UTC, minutes (for the hour-of-day profile).
    pub utc_offset_minutes: i32,
    /// Half-life of the slow answer memory, ms.
    pub slow_half_life_ms: f64,
    /// CUSUM threshold (log-likelihood ratio) at which a shift of the person-answer rate by a
    /// third, up or down, restarts the slow memory from the attempts since the change.
    pub shift_threshold: f64,
    /// Half-life of the hour-of-day profile, ms.
    pub profile_half_life_ms: f64,
    /// Half-life of the learned talk and wrap-up times, ms.
    pub agent_half_life_ms: f64,
    /// Starting belief: probability a person answers.
    pub prior_p_human: f64,
    /// Starting belief: probability a machine answers.
    pub prior_p_machine: f64,
    /// Starting belief: mean talk time, s.
    pub prior_talk_secs: f64,
    /// Starting belief: wrap-up time, s.
    pub prior_wrap_secs: f64,
    /// How often the risk controller acts, ms.
    pub controller_period_ms: i64,
    /// Integral gain of the risk controller (log-space step at 100 % error).
    pub controller_gain: f64,
    /// Half-life of the abandon rate the controller observes, ms.
    pub controller_half_life_ms: f64,
    /// Pseudo-answers at the target rate that steady the observed rate.
    pub controller_prior_answers: f64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            abandon_margin: 0.2,
            utc_offset_minutes: 0,
            slow_half_life_ms: 1_500_000.0,
            shift_threshold: 5.0,
            profile_half_life_ms: 7.0 * 86_400_000.0,
            agent_half_life_ms: 3_600_000.0,
            prior_p_human: 0.25,
            prior_p_machine: 0.05,
            prior_talk_secs: 120.0,
            prior_wrap_secs: 15.0,
            controller_period_ms: 15_000,
            controller_gain: 0.05,
            controller_half_life_ms: 1_800_000.0,
            controller_prior_answers: 100.0,
        }
    }
}

/// How many attempts to start now, per trunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialPlan {
    /// Attempts to start on each trunk, in trunk order; trunks with none are left out.
    pub per_trunk: Vec<(TrunkId, u32)>,
}

impl DialPlan {
    /// Attempts to start in total.
    pub fn total(&self) -> u32 {
        self.per_trunk.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    WaitingAgent,
    Connected,
    Machine,
    /// Abandoned: the safe-harbour message plays until `Ended`.
    SafeHarbour,
    Finished,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Ringing => "Ringing",
            Phase::WaitingAgent => "WaitingAgent",
            Phase::Connected => "Connected",
            Phase::Machine => "Machine",
            Phase::SafeHarbour => "SafeHarbour",
            Phase::Finished => "Finished",
        }
    }
}

#[derive(Debug, Clone)]
struct Attempt {
    trunk: usize,
    started_ms: i64,
    hour: usize,
    phase: Phase,
}

#[derive(Debug, Clone)]
struct Trunk {
    id: TrunkId,
    limits: TrunkLimits,
    active: u32,
    starts: VecDeque<i64>,
    answers: TrunkAnswers,
}

#[derive(Debug, Clone, Copy)]
struct AgentSlot {
    state: AgentState,
    since_ms: i64,
}

/// The predictive pacing core. See the crate documentation for the model.
#[derive(Debug, Clone)]
pub struct PredictivePacer {
    config: PacingConfig,
    learning: AnswerLearning,
    prior: AnswerOutlook,
    budget: AbandonBudget,
    grant: GrantLimits,
    trunks: Vec<Trunk>,
    agents: BTreeMap<AgentId, AgentSlot>,
    attempts: BTreeMap<AttemptId, Attempt>,
    agent_outlook: AgentOutlook,
    grant_starts: VecDeque<i64>,
    /// Per-minute (answered by a person, abandoned) over the budget window.
    window: VecDeque<(i64, u32, u32)>,
    window_answers: u64,
    window_abandons: u64,
    /// Decayed answered / abandoned counts the controller watches.
    ctl_answers: f64,
    ctl_abandons: f64,
    ctl_last_ms: i64,
    next_tick_ms: Option<i64>,
    log_theta: f64,
    /// Whether the risk limit, not a trunk or grant limit, held a plan back since the last
    /// controller tick (conditional integration: no wind-up while the limit is idle).
    risk_bound: bool,
    now_ms: i64,
}

fn check_fraction(key: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), PacingError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(PacingError::InvalidSetting {
            key,
            reason: format!("{v} is not within [{lo}, {hi}]"),
        })
    }
}

impl PredictivePacer {
    /// A pacer with no trunks and no agents yet.
    pub fn new(
        config: PacingConfig,
        budget: AbandonBudget,
        grant: GrantLimits,
    ) -> Result<Self, PacingError> {
        check_fraction("abandon_margin", config.abandon_margin, 0.0, 0.9)?;
        check_fraction("prior_p_human", config.prior_p_human, 0.001, 1.0)?;
        check_fraction("prior_p_machine", config.prior_p_machine, 0.0, 1.0)?;
        check_fraction("controller_gain", config.controller_gain, 0.0, 1.0)?;
        check_fraction("shift_threshold", config.shift_threshold, 1.0, 100.0)?;
        for (key, v) in [
            ("slow_half_life_ms", config.slow_half_life_ms),
            ("profile_half_life_ms", config.profile_half_life_ms),
            ("agent_half_life_ms", config.agent_half_life_ms),
            ("controller_half_life_ms", config.controller_half_life_ms),
            ("prior_talk_secs", config.prior_talk_secs),
        ] {
            check_fraction(key, v, 1e-3, 1e13)?;
        }
        check_fraction("prior_wrap_secs", config.prior_wrap_secs, 0.0, 86_400.0)?;
        if !(-840..=840).contains(&config.utc_offset_minutes) {
            return Err(PacingError::InvalidSetting {
                key: "utc_offset_minutes",
                reason: format!("{} is not within [-840, 840]", config.utc_offset_minutes),
            });
        }
        if config.controller_period_ms <= 0 {
            return Err(PacingError::InvalidSetting {
                key: "controller_period_ms",
                reason: "must be positive".into(),
            });
        }
        let mut pacer = PredictivePacer {
            learning: AnswerLearning {
                slow_half_life_ms: config.slow_half_life_ms,
                profile_half_life_ms: config.profile_half_life_ms,
                profile_weight: 30.0,
                prior_weight: 10.0,
                shift_size: 1.0 / 3.0,
                shift_threshold: config.shift_threshold,
            },
            prior: AnswerOutlook::prior(config.prior_p_human, config.prior_p_machine),
            agent_outlook: AgentOutlook::new(
                config.agent_half_life_ms,
                config.prior_talk_secs,
                config.prior_wrap_secs,
            ),
            config,
            budget: AbandonBudget::default(),
            grant,
            trunks: Vec::new(),
            agents: BTreeMap::new(),
            attempts: BTreeMap::new(),
            grant_starts: VecDeque::new(),
            window: VecDeque::new(),
            window_answers: 0,
            window_abandons: 0,
            ctl_answers: 0.0,
            ctl_abandons: 0.0,
            ctl_last_ms: i64::MIN,
            next_tick_ms: None,
            log_theta: 0.0,
            risk_bound: false,
            now_ms: i64::MIN,
        };
        pacer.set_budget(budget)?;
        pacer.log_theta = pacer.target().ln();
        Ok(pacer)
    }

    /// Replaces the campaign's abandon budget.
    pub fn set_budget(&mut self, budget: AbandonBudget) -> Result<(), PacingError> {
        check_fraction("abandon_budget.cap", budget.cap, 1e-4, 0.5)?;
        if budget.window_ms < 60_000 {
            return Err(PacingError::InvalidSetting {
                key: "abandon_budget.window_ms",
                reason: format!("{} ms is shorter than a minute", budget.window_ms),
            });
        }
        self.budget = budget;
        Ok(())
    }

    /// Replaces the pacing grant's limits.
    pub fn set_grant(&mut self, grant: GrantLimits) {
        self.grant = grant;
    }

    /// Adds a trunk or replaces its limits. Trunks are filled in the order they were added.
    pub fn set_trunk(&mut self, trunk: TrunkId, limits: TrunkLimits) {
        if let Some(t) = self.trunks.iter_mut().find(|t| t.id == trunk) {
            t.limits = limits;
        } else {
            self.trunks.push(Trunk {
                id: trunk,
                limits,
                active: 0,
                starts: VecDeque::new(),
                answers: TrunkAnswers::new(&self.learning),
            });
        }
    }

    /// The abandon rate the controller aims at: the cap less the margin.
    pub fn target(&self) -> f64 {
        self.budget.cap * (1.0 - self.config.abandon_margin)
    }

    /// The marginal abandon risk currently accepted for one more attempt.
    pub fn risk_limit(&self) -> f64 {
        self.log_theta.exp()
    }

    /// The answer behaviour currently believed for `trunk` at `now` (for status pages and
    /// tests); `None` for an unknown trunk.
    pub fn answer_outlook(&self, now: UnixMillis, trunk: &TrunkId) -> Option<AnswerOutlook> {
        let hour = self.hour_of(now.0);
        self.trunks
            .iter()
            .find(|t| &t.id == trunk)
            .map(|t| t.answers.outlook(now.0, hour, &self.prior, &self.learning))
    }

    /// Abandoned and answered-by-a-person counts inside the budget window.
    pub fn window_counts(&self) -> (u64, u64) {
        (self.window_abandons, self.window_answers)
    }

    fn hour_of(&self, ms: i64) -> usize {
        let local_secs = ms / 1000 + i64::from(self.config.utc_offset_minutes) * 60;
        (local_secs.rem_euclid(86_400) / 3600) as usize
    }

    /// Moves the core's clock to `now`: runs due controller ticks and ages the windows.
    fn advance(&mut self, now: i64) {
        if now <= self.now_ms {
            return;
        }
        self.now_ms = now;
        let period = self.config.controller_period_ms;
        let mut next = *self.next_tick_ms.get_or_insert(now + period);
        // After a long silence, act once rather than replaying every missed tick.
        if now - next > 4 * period {
            next = now - period;
        }
        while next <= now {
            self.controller_tick(next);
            next += period;
        }
        self.next_tick_ms = Some(next);
        let horizon = now - self.budget.window_ms;
        while let Some(&(minute, ans, ab)) = self.window.front() {
            if minute * 60_000 + 60_000 <= horizon {
                self.window.pop_front();
                self.window_answers -= u64::from(ans);
                self.window_abandons -= u64::from(ab);
            } else {
                break;
            }
        }
        for q in std::iter::once(&mut self.grant_starts)
            .chain(self.trunks.iter_mut().map(|t| &mut t.starts))
        {
            while q.front().is_some_and(|s| *s <= now - 60_000) {
                q.pop_front();
            }
        }
    }

    fn decay_ctl(&mut self, now: i64) {
        if self.ctl_last_ms != i64::MIN && now > self.ctl_last_ms {
            let f =
                0.5f64.powf((now - self.ctl_last_ms) as f64 / self.config.controller_half_life_ms);
            self.ctl_answers *= f;
            self.ctl_abandons *= f;
        }
        self.ctl_last_ms = self.ctl_last_ms.max(now);
    }

    fn controller_tick(&mut self, at: i64) {
        self.decay_ctl(at);
        let target = self.target();
        let k = self.config.controller_prior_answers;
        let observed = (self.ctl_abandons + k * target) / (self.ctl_answers + k);
        let error = ((target - observed) / target).clamp(-3.0, 1.0);
        // Loosen only if the limit was what held dialling back; tighten whenever over target.
        if error < 0.0 || self.risk_bound {
            self.log_theta += self.config.controller_gain * error;
        }
        self.risk_bound = false;
        let lo = (target / 50.0).ln();
        let hi = (10.0 * target).min(0.5).ln();
        self.log_theta = self.log_theta.clamp(lo, hi);
    }

    fn record_window(&mut self, now: i64, answered: u32, abandoned: u32) {
        let minute = now.div_euclid(60_000);
        match self.window.back_mut() {
            Some((m, a, b)) if *m == minute => {
                *a += answered;
                *b += abandoned;
            }
            _ => self.window.push_back((minute, answered, abandoned)),
        }
        self.window_answers += u64::from(answered);
        self.window_abandons += u64::from(abandoned);
        self.decay_ctl(now);
        self.ctl_answers += f64::from(answered);
        self.ctl_abandons += f64::from(abandoned);
    }

    /// Reports an agent's new state at `now`.
    pub fn handle_agent(
        &mut self,
        now: UnixMillis,
        agent: AgentId,
        state: AgentState,
    ) -> Result<(), PacingError> {
        self.advance(now.0);
        let now_ms = now.0.max(self.now_ms);
        if let Some(prev) = self.agents.get(&agent).copied() {
            let secs = (now_ms - prev.since_ms) as f64 / 1000.0;
            match prev.state {
                AgentState::Talking if state != AgentState::Talking => {
                    self.agent_outlook.record_talk(now_ms, secs);
                }
                AgentState::WrapUp { .. } if !matches!(state, AgentState::WrapUp { .. }) => {
                    self.agent_outlook.record_wrap(now_ms, secs);
                }
                _ => {}
            }
        }
        if state == AgentState::LoggedOut {
            self.agents.remove(&agent);
        } else {
            self.agents.insert(
                agent,
                AgentSlot {
                    state,
                    since_ms: now_ms,
                },
            );
        }
        Ok(())
    }

    /// Reports an attempt event at `now`. A refused event leaves the pacer unchanged (its
    /// clock included).
    pub fn handle_attempt(
        &mut self,
        now: UnixMillis,
        attempt: AttemptId,
        event: AttemptEvent,
    ) -> Result<(), PacingError> {
        if let AttemptEvent::Started { trunk } = &event {
            if self.attempts.contains_key(&attempt) {
                return Err(PacingError::DuplicateAttempt(attempt));
            }
            let idx = self
                .trunks
                .iter()
                .position(|t| &t.id == trunk)
                .ok_or_else(|| PacingError::UnknownTrunk(trunk.clone()))?;
            self.advance(now.0);
            let now_ms = now.0.max(self.now_ms);
            let hour = self.hour_of(now_ms);
            self.attempts.insert(
                attempt,
                Attempt {
                    trunk: idx,
                    started_ms: now_ms,
                    hour,
                    phase: Phase::Ringing,
                },
            );
            let t = &mut self.trunks[idx];
            t.active += 1;
            t.starts.push_back(now_ms);
            self.grant_starts.push_back(now_ms);
            return Ok(());
        }
        let a = self
            .attempts
            .get(&attempt)
            .cloned()
            .ok_or(PacingError::UnknownAttempt(attempt))?;
        let next = match (&event, a.phase) {
            (AttemptEvent::Ringing, Phase::Ringing) => Phase::Ringing,
            (AttemptEvent::AnsweredHuman, Phase::Ringing) => Phase::WaitingAgent,
            (AttemptEvent::AnsweredMachine, Phase::Ringing) => Phase::Machine,
            (
                AttemptEvent::NoAnswer | AttemptEvent::Busy | AttemptEvent::Failed,
                Phase::Ringing,
            ) => Phase::Finished,
            (AttemptEvent::Connected, Phase::WaitingAgent) => Phase::Connected,
            (AttemptEvent::Abandoned, Phase::WaitingAgent) => Phase::SafeHarbour,
            (AttemptEvent::Ended, _) => Phase::Finished,
            _ => {
                return Err(PacingError::UnexpectedEvent {
                    attempt,
                    event: event.name(),
                    phase: a.phase.name(),
                })
            }
        };
        self.advance(now.0);
        let now_ms = now.0.max(self.now_ms);
        let age = now_ms - a.started_ms;
        let learning = self.learning;
        let answers = &mut self.trunks[a.trunk].answers;
        match event {
            AttemptEvent::AnsweredHuman => {
                answers.record(now_ms, a.hour, RingOutcome::Human, age, &learning);
                self.record_window(now_ms, 1, 0);
            }
            AttemptEvent::AnsweredMachine => {
                answers.record(now_ms, a.hour, RingOutcome::Machine, age, &learning);
            }
            AttemptEvent::NoAnswer | AttemptEvent::Busy | AttemptEvent::Failed => {
                answers.record(now_ms, a.hour, RingOutcome::Unanswered, age, &learning);
            }
            AttemptEvent::Abandoned => self.record_window(now_ms, 0, 1),
            _ => {}
        }
        if next == Phase::Finished {
            self.attempts.remove(&attempt);
            let t = &mut self.trunks[a.trunk];
            t.active = t.active.saturating_sub(1);
        } else if let Some(slot) = self.attempts.get_mut(&attempt) {
            slot.phase = next;
        }
        Ok(())
    }

    /// When the pacer next wants to be polled even if nothing happens: the next controller
    /// tick or the next wrap-up timer, whichever is first.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let wrap = self
            .agents
            .values()
            .filter_map(|a| match a.state {
                AgentState::WrapUp { until } if until.0 > self.now_ms => Some(until.0),
                _ => None,
            })
            .min();
        match (self.next_tick_ms, wrap) {
            (Some(a), Some(b)) => Some(UnixMillis(a.min(b))),
            (a, b) => a.or(b).map(UnixMillis),
        }
    }

    /// How many attempts to start now, per trunk. The driver starts them and reports each
    /// with [`AttemptEvent::Started`] before polling again; a plan not carried out is simply
    /// superseded by the next poll.
    pub fn poll_dial(&mut self, now: UnixMillis) -> DialPlan {
        self.advance(now.0);
        let now_ms = now.0.max(self.now_ms);
        if now_ms >= self.grant.expires_at.0 || self.trunks.is_empty() {
            return DialPlan::default();
        }
        let staffed = self
            .agents
            .values()
            .any(|a| !matches!(a.state, AgentState::Paused | AgentState::LoggedOut));
        if !staffed {
            return DialPlan::default();
        }
        let headroom: Vec<u32> = self
            .trunks
            .iter()
            .map(|t| {
                let conc = t.limits.max_concurrent.saturating_sub(t.active);
                let rate = t
                    .limits
                    .max_per_minute
                    .saturating_sub(t.starts.len() as u32);
                conc.min(rate)
            })
            .collect();
        let active_total: u32 = self.trunks.iter().map(|t| t.active).sum();
        let cap = self
            .grant
            .max_concurrent
            .saturating_sub(active_total)
            .min(
                self.grant
                    .max_per_minute
                    .saturating_sub(self.grant_starts.len() as u32),
            )
            .min(headroom.iter().fold(0u32, |a, b| a.saturating_add(*b)));
        if cap == 0 {
            return DialPlan::default();
        }
        let n = self.attempts_within_risk(now_ms, &headroom, cap);
        let mut left = n;
        let mut plan = DialPlan::default();
        for (t, room) in self.trunks.iter().zip(&headroom) {
            if left == 0 {
                break;
            }
            let take = left.min(*room);
            if take > 0 {
                plan.per_trunk.push((t.id.clone(), take));
                left -= take;
            }
        }
        plan
    }

    /// The effective risk limit: the controller's `θ`, scaled down as the realised rate in the
    /// budget window eats into the margin.
    fn effective_risk_limit(&self) -> f64 {
        let theta = self.risk_limit();
        let answers = self.window_answers as f64;
        if answers < 30.0 {
            return theta;
        }
        let cap = self.budget.cap;
        let headroom = (cap * answers - self.window_abandons as f64)
            / (cap * answers * self.config.abandon_margin.max(0.05));
        theta * headroom.clamp(0.02, 1.0)
    }

    fn attempts_within_risk(&mut self, now_ms: i64, headroom: &[u32], cap: u32) -> u32 {
        let hour = self.hour_of(now_ms);
        let outlooks: Vec<AnswerOutlook> = self
            .trunks
            .iter()
            .map(|t| t.answers.outlook(now_ms, hour, &self.prior, &self.learning))
            .collect();
        let primary = headroom.iter().position(|h| *h > 0).unwrap_or(0);
        let new = &outlooks[primary];
        self.agent_outlook.refresh();

        let waiting = self
            .attempts
            .values()
            .filter(|a| a.phase == Phase::WaitingAgent)
            .count() as i64;
        let horizons: Vec<f64> = [0.1, 0.3, 0.5, 0.7, 0.9]
            .iter()
            .map(|q| new.answer_quantile(*q).max(0.5))
            .collect();
        let mut laws: Vec<(ShortfallLaw, f64)> = Vec::with_capacity(horizons.len());
        for &tau in &horizons {
            let mut s = Shortfall {
                certain: -waiting,
                ..Shortfall::default()
            };
            for slot in self.agents.values() {
                let in_state = (now_ms - slot.since_ms) as f64 / 1000.0;
                let wrap_left = match slot.state {
                    AgentState::WrapUp { until } => (until.0 - now_ms) as f64 / 1000.0,
                    _ => 0.0,
                };
                let p = self
                    .agent_outlook
                    .free_within(&slot.state, in_state, tau, wrap_left);
                if p >= 1.0 {
                    s.certain += 1;
                } else if p > 0.0 {
                    s.agent_free.push(p);
                }
            }
            for a in self.attempts.values().filter(|a| a.phase == Phase::Ringing) {
                let age = (now_ms - a.started_ms) as f64 / 1000.0;
                s.answer.push(outlooks[a.trunk].human_within(age, tau));
            }
            laws.push((s.law(), new.p_human * new.answer_cdf(tau)));
        }
        let theta = self.effective_risk_limit();
        let risk = |k: u32| -> f64 {
            laws.iter()
                .map(|(law, g)| law.no_agent_probability(k, *g))
                .sum::<f64>()
                / laws.len() as f64
        };
        // Largest n with risk(n − 1) ≤ θ; risk is non-decreasing in k.
        // The limit binds when it, not a trunk or grant limit, stopped the plan and the next
        // attempt's risk is not hopeless (with nobody to free up, loosening would not help).
        if risk(0) > theta {
            self.risk_bound |= risk(0) < 0.5;
            return 0;
        }
        let (mut lo, mut hi) = (1u32, cap); // invariant: n ≥ lo; answer ≤ hi
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if risk(mid - 1) <= theta {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo < cap && risk(lo) < 0.5 {
            self.risk_bound = true;
        }
        lo
    }
}

#[cfg(test)]
mod tests;
