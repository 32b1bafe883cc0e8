//! The discrete-event engine: one scenario, one strategy, virtual time.
//!
//! Owns the simulated site — agents with shifts and breaks, attempts with their drawn
//! outcomes, routing of answered calls to the longest-idle agent, the safe-harbour rule —
//! and the accounting the report prints. It drives a strategy (a ratio dialler or the
//! [`PredictivePacer`]) exactly as the dialer's driver would: events in, a decision every
//! second. Every random draw comes from a stream keyed by the seed and the attempt's or the
//! agent call's number, so strategies face the same callees and the same conversations
//! (common random numbers), and a seed always gives the same result. No wall clock, no I/O.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use callgate_common::{
    ids::{AgentId, AttemptId, TrunkId},
    time::UnixMillis,
};

use super::{
    baseline::{AdaptMode, RatioDialer, SiteCounts},
    rng::SimRng,
    scenario::Scenario,
};
use crate::{
    AbandonBudget, AgentState, AttemptEvent, GrantLimits, PacingConfig, PacingError,
    PredictivePacer, TrunkLimits,
};

const DAY_MS: i64 = 86_400_000;
/// Virtual day 0 starts here (a Monday, 2026-01-05T00:00:00Z), so hours of day are UTC.
const EPOCH_MS: i64 = 1_767_571_200_000;

/// A dialling strategy under test.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// One attempt per ready agent.
    Progressive,
    /// A fixed dial level.
    FixedRatio(f64),
    /// VICIdial's adaptive ratio with its drop target (`adaptive_dropped_percentage`, as a
    /// fraction).
    Adaptive(AdaptMode, f64),
    /// Our predictive core.
    Predictive(PacingConfig),
}

impl Strategy {
    /// The row label in the report.
    pub fn label(&self) -> String {
        match self {
            Strategy::Progressive => "progressive 1:1".into(),
            Strategy::FixedRatio(r) => format!("fixed ratio {r:.1}"),
            Strategy::Adaptive(m, target) => {
                format!("adaptive {} @{:.1} %", m.vicidial_name(), target * 100.0)
            }
            Strategy::Predictive(_) => "predictive (ours)".into(),
        }
    }

    /// The standard line-up for a scenario: progressive, fixed ratio, the three adaptive
    /// modes with the drop target at the cap (VICIdial's documented setting) and again with
    /// the same margin below the cap that our core keeps, then ours.
    pub fn lineup(scenario: &Scenario) -> Vec<Strategy> {
        let cap = scenario.abandon.cap;
        let config = PacingConfig::default();
        let margin_target = cap * (1.0 - config.abandon_margin);
        let mut v = vec![
            Strategy::Progressive,
            Strategy::FixedRatio(scenario.baselines.fixed_ratio),
        ];
        for target in [cap, margin_target] {
            for mode in [AdaptMode::HardLimit, AdaptMode::Tapered, AdaptMode::Average] {
                v.push(Strategy::Adaptive(mode, target));
            }
        }
        v.push(Strategy::Predictive(config));
        v
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The pacer refused an event the engine sent: an engine bug, reported rather than hidden.
    #[error("the pacer refused a simulated event")]
    Pacer(#[from] PacingError),
}

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// The strategy's label.
    pub strategy: String,
    /// Attempts started.
    pub attempts: u64,
    /// Answered by a person.
    pub human: u64,
    /// Answered by a machine.
    pub machine: u64,
    /// Busy.
    pub busy: u64,
    /// Failed.
    pub failed: u64,
    /// Rang out.
    pub no_answer: u64,
    /// Answered by a person and bridged to an agent (contacts).
    pub connected: u64,
    /// Answered by a person with no agent in time.
    pub abandoned: u64,
    /// Attempts still unresolved when the run ended (0 after a full drain).
    pub unresolved: u64,
    /// Agent time logged in, talking, in wrap-up, ready and paused, ms (summed over agents).
    pub logged_in_ms: i64,
    /// See `logged_in_ms`.
    pub talk_ms: i64,
    /// See `logged_in_ms`.
    pub wrap_ms: i64,
    /// See `logged_in_ms`.
    pub ready_ms: i64,
    /// See `logged_in_ms`.
    pub paused_ms: i64,
    /// Per simulated day: (answered by a person, abandoned).
    pub days: Vec<(u64, u64)>,
    /// Per hour of the day, summed over days: (answered by a person, abandoned).
    pub by_hour: [(u64, u64); 24],
    /// The abandon cap the scenario set.
    pub cap: f64,
}

impl RunReport {
    /// (talk + wrap-up) ÷ logged-in time.
    pub fn occupancy(&self) -> f64 {
        ratio(
            (self.talk_ms + self.wrap_ms) as f64,
            self.logged_in_ms as f64,
        )
    }

    /// Talk minutes per logged-in agent-hour.
    pub fn talk_minutes_per_agent_hour(&self) -> f64 {
        ratio(
            self.talk_ms as f64 / 60_000.0,
            self.logged_in_ms as f64 / 3_600_000.0,
        )
    }

    /// The worst day's abandoned ÷ answered by a person.
    pub fn worst_day_abandon_rate(&self) -> f64 {
        self.days
            .iter()
            .map(|(a, b)| ratio(*b as f64, *a as f64))
            .fold(0.0, f64::max)
    }

    /// Abandoned ÷ answered by a person over the worst 30 consecutive days (all days when the
    /// run is shorter).
    pub fn thirty_day_abandon_rate(&self) -> f64 {
        let w = self.days.len().clamp(1, 30);
        self.days
            .windows(w)
            .map(|win| {
                let (a, b) = win
                    .iter()
                    .fold((0u64, 0u64), |acc, d| (acc.0 + d.0, acc.1 + d.1));
                ratio(b as f64, a as f64)
            })
            .fold(0.0, f64::max)
    }

    /// Attempts per contact (a contact is a person bridged to an agent).
    pub fn attempts_per_contact(&self) -> f64 {
        ratio(self.attempts as f64, self.connected as f64)
    }

    /// Mean time an agent waits ready between calls, seconds.
    pub fn mean_wait_secs(&self) -> f64 {
        ratio(self.ready_ms as f64 / 1000.0, self.connected as f64)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Tick,
    Resolve(usize),
    SafeHarbour(usize),
    MachineRelease(usize),
    TalkEnds(usize),
    WrapEnds(usize),
    ShiftStart(usize),
    ShiftEnd(usize),
    BreakStart(usize, i64),
    BreakEnd(usize),
}

#[derive(Debug, PartialEq, Eq)]
struct Scheduled {
    at: i64,
    seq: u64,
    ev: Ev,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (time, sequence).
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Human(i64),
    Machine(i64),
    Busy(i64),
    Failed(i64),
    NoAnswer(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Waiting,
    Connected,
    Machine,
    Done,
}

#[derive(Debug, Clone)]
struct SimAttempt {
    plan: Plan,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentPhase {
    Out,
    Ready,
    Talking(usize),
    Wrap,
    Paused,
}

#[derive(Debug, Clone)]
struct SimAgent {
    phase: AgentPhase,
    since: i64,
    calls: u64,
    pending_break: Option<i64>,
    pending_logout: bool,
    shift_over: bool,
}

enum Dialer {
    Ratio(RatioDialer),
    Predictive(Box<PredictivePacer>),
}

struct Engine<'a> {
    sc: &'a Scenario,
    now: i64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    agents: Vec<SimAgent>,
    attempts: Vec<SimAttempt>,
    waiting: VecDeque<usize>,
    starts_minute: VecDeque<i64>,
    channels: u32,
    ringing: u32,
    connected: u32,
    dialer: Dialer,
    trunk: TrunkId,
    dial_start_ms: i64,
    dial_end_ms: i64,
    day: usize,
    report: RunReport,
}

fn stream(seed: u64, kind: u64, n: u64) -> SimRng {
    SimRng::new(
        seed ^ kind.wrapping_mul(0xA24B_AED4_963E_E407) ^ n.wrapping_mul(0x9FB2_1C65_1E98_DF25),
    )
}

/// Runs `scenario` under `strategy` to the end (all days, then every call drained).
pub fn run(scenario: &Scenario, strategy: &Strategy) -> Result<RunReport, SimError> {
    let trunk = TrunkId::new("sim-carrier").map_err(|e| PacingError::InvalidSetting {
        key: "trunk",
        reason: e.to_string(),
    })?;
    let dial_start_h = scenario
        .agents
        .iter()
        .map(|g| g.shift[0])
        .fold(24.0, f64::min);
    let dial_end_h = scenario
        .agents
        .iter()
        .map(|g| g.shift[1])
        .fold(0.0, f64::max);
    let latest_hhmm = {
        let h = dial_end_h.floor();
        (h as i64) * 100 + ((dial_end_h - h) * 60.0).round() as i64
    };
    let dialer = match strategy {
        Strategy::Progressive => Dialer::Ratio(RatioDialer::fixed(1.0)),
        Strategy::FixedRatio(r) => Dialer::Ratio(RatioDialer::fixed(*r)),
        Strategy::Adaptive(mode, target) => Dialer::Ratio(RatioDialer::adaptive(
            *mode,
            scenario.baselines.adapt_max_level,
            *target,
            latest_hhmm,
        )),
        Strategy::Predictive(config) => {
            let mut p = PredictivePacer::new(
                *config,
                AbandonBudget {
                    cap: scenario.abandon.cap,
                    window_ms: (scenario.abandon.window_hours * 3_600_000.0) as i64,
                },
                GrantLimits::unlimited(),
            )?;
            p.set_trunk(
                trunk.clone(),
                TrunkLimits {
                    max_concurrent: scenario.trunk.max_concurrent,
                    max_per_minute: scenario.trunk.max_per_minute,
                },
            );
            Dialer::Predictive(Box::new(p))
        }
    };
    let agents: Vec<SimAgent> = (0..scenario.agent_count())
        .map(|_| SimAgent {
            phase: AgentPhase::Out,
            since: EPOCH_MS,
            calls: 0,
            pending_break: None,
            pending_logout: false,
            shift_over: false,
        })
        .collect();
    let mut e = Engine {
        sc: scenario,
        now: EPOCH_MS,
        seq: 0,
        queue: BinaryHeap::new(),
        agents,
        attempts: Vec::new(),
        waiting: VecDeque::new(),
        starts_minute: VecDeque::new(),
        channels: 0,
        ringing: 0,
        connected: 0,
        dialer,
        trunk,
        dial_start_ms: (dial_start_h * 3_600_000.0) as i64,
        // Stop starting attempts one ring timeout before the last logout.
        dial_end_ms: (dial_end_h * 3_600_000.0 - scenario.callees.no_answer_timeout * 1000.0)
            as i64,
        day: 0,
        report: RunReport {
            strategy: strategy.label(),
            cap: scenario.abandon.cap,
            days: vec![(0, 0); scenario.days as usize],
            ..RunReport::default()
        },
    };
    e.schedule_days();
    while let Some(s) = e.queue.pop() {
        e.now = s.at;
        e.day = (((s.at - EPOCH_MS) / DAY_MS) as usize).min(scenario.days as usize - 1);
        e.handle(s.ev)?;
    }
    e.finish();
    Ok(e.report)
}

impl Engine<'_> {
    fn at(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn schedule_days(&mut self) {
        let mut idx = 0usize;
        let groups = self.sc.agents.clone();
        for g in &groups {
            for i in 0..g.count as usize {
                // Agent i of n arrives i/n of the spread after the shift starts, leaves as
                // much before it ends.
                let spread =
                    (g.login_spread_minutes * 60_000.0 * i as f64 / f64::from(g.count)) as i64;
                for d in 0..i64::from(self.sc.days) {
                    let base = EPOCH_MS + d * DAY_MS;
                    let start = base + (g.shift[0] * 3_600_000.0) as i64 + spread;
                    let end = base + (g.shift[1] * 3_600_000.0) as i64 - spread;
                    self.at(start, Ev::ShiftStart(idx));
                    self.at(end, Ev::ShiftEnd(idx));
                    for [start, len] in &g.breaks {
                        let offset = (i % 4) as f64 * g.break_stagger_minutes * 60_000.0;
                        let t = base + (start * 3_600_000.0 + offset) as i64;
                        self.at(t, Ev::BreakStart(idx, (len * 3_600_000.0) as i64));
                    }
                }
                idx += 1;
            }
        }
        for d in 0..i64::from(self.sc.days) {
            self.at(EPOCH_MS + d * DAY_MS + self.dial_start_ms, Ev::Tick);
        }
    }

    fn ms_of_day(&self) -> i64 {
        (self.now - EPOCH_MS).rem_euclid(DAY_MS)
    }

    fn hour(&self) -> usize {
        (self.ms_of_day() / 3_600_000) as usize
    }

    fn counts(&self) -> SiteCounts {
        let mut c = SiteCounts {
            ringing: self.ringing,
            waiting: self.waiting.len() as u32,
            connected: self.connected,
            ..SiteCounts::default()
        };
        for a in &self.agents {
            match a.phase {
                AgentPhase::Out => continue,
                AgentPhase::Ready => c.ready += 1,
                AgentPhase::Talking(_) => c.talking += 1,
                AgentPhase::Wrap | AgentPhase::Paused => {}
            }
            c.logged_in += 1;
        }
        c
    }

    fn tell_agent(&mut self, agent: usize, state: AgentState) -> Result<(), SimError> {
        if let Dialer::Predictive(p) = &mut self.dialer {
            p.handle_agent(UnixMillis(self.now), AgentId(agent as u64 + 1), state)?;
        }
        Ok(())
    }

    fn tell_attempt(&mut self, idx: usize, ev: AttemptEvent) -> Result<(), SimError> {
        match &mut self.dialer {
            Dialer::Predictive(p) => {
                p.handle_attempt(UnixMillis(self.now), attempt_id(idx), ev)?;
            }
            Dialer::Ratio(r) => match ev {
                AttemptEvent::Started { .. } => r.on_call(self.now),
                AttemptEvent::AnsweredHuman => r.on_answer(),
                AttemptEvent::Abandoned => r.on_drop(self.now),
                _ => {}
            },
        }
        Ok(())
    }

    /// Moves an agent to `phase`, booking the time spent in the previous one.
    fn set_agent(&mut self, agent: usize, phase: AgentPhase) {
        let a = &mut self.agents[agent];
        let spent = self.now - a.since;
        match a.phase {
            AgentPhase::Out => {}
            AgentPhase::Ready => self.report.ready_ms += spent,
            AgentPhase::Talking(_) => self.report.talk_ms += spent,
            AgentPhase::Wrap => self.report.wrap_ms += spent,
            AgentPhase::Paused => self.report.paused_ms += spent,
        }
        if a.phase != AgentPhase::Out {
            self.report.logged_in_ms += spent;
        }
        a.phase = phase;
        a.since = self.now;
    }

    fn handle(&mut self, ev: Ev) -> Result<(), SimError> {
        match ev {
            Ev::Tick => self.tick(),
            Ev::Resolve(i) => self.resolve(i),
            Ev::SafeHarbour(i) => {
                if self.attempts[i].phase == Phase::Waiting {
                    self.waiting.retain(|w| *w != i);
                    self.attempts[i].phase = Phase::Done;
                    self.channels -= 1;
                    self.report.abandoned += 1;
                    self.report.days[self.day].1 += 1;
                    self.report.by_hour[self.hour()].1 += 1;
                    self.tell_attempt(i, AttemptEvent::Abandoned)?;
                    self.tell_attempt(i, AttemptEvent::Ended)?;
                }
                Ok(())
            }
            Ev::MachineRelease(i) => {
                self.attempts[i].phase = Phase::Done;
                self.channels -= 1;
                self.tell_attempt(i, AttemptEvent::Ended)
            }
            Ev::TalkEnds(agent) => {
                let AgentPhase::Talking(call) = self.agents[agent].phase else {
                    return Ok(());
                };
                self.attempts[call].phase = Phase::Done;
                self.channels -= 1;
                self.connected -= 1;
                self.tell_attempt(call, AttemptEvent::Ended)?;
                let n = self.agents[agent].calls;
                let wrap = self.sc.handling.wrap.sample(&mut stream(
                    self.sc.seed,
                    3 + ((agent as u64) << 8),
                    n,
                ));
                let until = self.now + (wrap * 1000.0) as i64;
                self.set_agent(agent, AgentPhase::Wrap);
                self.tell_agent(
                    agent,
                    AgentState::WrapUp {
                        until: UnixMillis(until),
                    },
                )?;
                self.at(until, Ev::WrapEnds(agent));
                Ok(())
            }
            Ev::WrapEnds(agent) => self.agent_free(agent),
            Ev::ShiftStart(agent) => {
                let a = &mut self.agents[agent];
                a.shift_over = false;
                a.pending_logout = false;
                a.pending_break = None;
                if a.phase == AgentPhase::Out {
                    self.agent_ready(agent)?;
                }
                Ok(())
            }
            Ev::ShiftEnd(agent) => {
                self.agents[agent].shift_over = true;
                match self.agents[agent].phase {
                    AgentPhase::Ready | AgentPhase::Paused => self.logout(agent),
                    AgentPhase::Out => Ok(()),
                    _ => {
                        self.agents[agent].pending_logout = true;
                        Ok(())
                    }
                }
            }
            Ev::BreakStart(agent, len) => match self.agents[agent].phase {
                AgentPhase::Ready => self.pause(agent, len),
                AgentPhase::Out | AgentPhase::Paused => Ok(()),
                _ => {
                    self.agents[agent].pending_break = Some(len);
                    Ok(())
                }
            },
            Ev::BreakEnd(agent) => {
                if self.agents[agent].phase == AgentPhase::Paused {
                    if self.agents[agent].shift_over {
                        return self.logout(agent);
                    }
                    self.agent_ready(agent)?;
                }
                Ok(())
            }
        }
    }

    fn pause(&mut self, agent: usize, len: i64) -> Result<(), SimError> {
        self.set_agent(agent, AgentPhase::Paused);
        self.tell_agent(agent, AgentState::Paused)?;
        self.at(self.now + len, Ev::BreakEnd(agent));
        Ok(())
    }

    fn logout(&mut self, agent: usize) -> Result<(), SimError> {
        self.agents[agent].pending_logout = false;
        self.set_agent(agent, AgentPhase::Out);
        self.tell_agent(agent, AgentState::LoggedOut)
    }

    /// Wrap-up over: log out, take a pending break, or become ready.
    fn agent_free(&mut self, agent: usize) -> Result<(), SimError> {
        if self.agents[agent].pending_logout {
            return self.logout(agent);
        }
        if let Some(len) = self.agents[agent].pending_break.take() {
            return self.pause(agent, len);
        }
        self.agent_ready(agent)
    }

    fn agent_ready(&mut self, agent: usize) -> Result<(), SimError> {
        self.set_agent(agent, AgentPhase::Ready);
        self.tell_agent(agent, AgentState::Ready)?;
        if let Some(call) = self.waiting.pop_front() {
            self.connect(call, agent)?;
        }
        Ok(())
    }

    fn connect(&mut self, call: usize, agent: usize) -> Result<(), SimError> {
        self.attempts[call].phase = Phase::Connected;
        self.connected += 1;
        self.report.connected += 1;
        let n = self.agents[agent].calls;
        self.agents[agent].calls += 1;
        let talk =
            self.sc
                .handling
                .talk
                .sample(&mut stream(self.sc.seed, 2 + ((agent as u64) << 8), n));
        self.set_agent(agent, AgentPhase::Talking(call));
        self.tell_agent(agent, AgentState::Reserved)?;
        self.tell_attempt(call, AttemptEvent::Connected)?;
        self.tell_agent(agent, AgentState::Talking)?;
        self.at(
            self.now + (talk * 1000.0).max(1000.0) as i64,
            Ev::TalkEnds(agent),
        );
        Ok(())
    }

    fn longest_idle_ready(&self) -> Option<usize> {
        self.agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.phase == AgentPhase::Ready)
            .min_by_key(|(i, a)| (a.since, *i))
            .map(|(i, _)| i)
    }

    fn resolve(&mut self, i: usize) -> Result<(), SimError> {
        self.ringing -= 1;
        match self.attempts[i].plan {
            Plan::Human(_) => {
                self.report.human += 1;
                self.report.days[self.day].0 += 1;
                self.report.by_hour[self.hour()].0 += 1;
                self.attempts[i].phase = Phase::Waiting;
                self.tell_attempt(i, AttemptEvent::AnsweredHuman)?;
                if let Some(agent) = self.longest_idle_ready() {
                    self.connect(i, agent)?;
                } else {
                    self.waiting.push_back(i);
                    let wait = (self.sc.abandon.safe_harbour_secs * 1000.0) as i64;
                    self.at(self.now + wait, Ev::SafeHarbour(i));
                }
            }
            Plan::Machine(_) => {
                self.report.machine += 1;
                self.attempts[i].phase = Phase::Machine;
                self.tell_attempt(i, AttemptEvent::AnsweredMachine)?;
                let hold = (self.sc.callees.amd_secs * 1000.0) as i64;
                self.at(self.now + hold, Ev::MachineRelease(i));
            }
            Plan::Busy(_) | Plan::Failed(_) | Plan::NoAnswer(_) => {
                let ev = match self.attempts[i].plan {
                    Plan::Busy(_) => {
                        self.report.busy += 1;
                        AttemptEvent::Busy
                    }
                    Plan::Failed(_) => {
                        self.report.failed += 1;
                        AttemptEvent::Failed
                    }
                    _ => {
                        self.report.no_answer += 1;
                        AttemptEvent::NoAnswer
                    }
                };
                self.attempts[i].phase = Phase::Done;
                self.channels -= 1;
                self.tell_attempt(i, ev)?;
            }
        }
        Ok(())
    }

    fn draw_plan(&self, n: u64) -> Plan {
        let mut r = stream(self.sc.seed, 1, n);
        let hour = self.ms_of_day() as f64 / 3_600_000.0;
        let c = &self.sc.callees;
        let timeout = c.no_answer_timeout;
        let (p_h, p_m) = (self.sc.human_at(hour), self.sc.machine_at(hour));
        let u = r.uniform();
        let ring = |r: &mut SimRng| -> i64 {
            let mut t = c.ring.sample(r);
            let mut tries = 0;
            while t >= timeout - 0.5 && tries < 10 {
                t = c.ring.sample(r);
                tries += 1;
            }
            (t.min(timeout - 0.5).max(0.5) * 1000.0) as i64
        };
        let after = |r: &mut SimRng| (c.busy_after.sample(r).max(0.2) * 1000.0) as i64;
        let now = self.now;
        if u < p_h {
            Plan::Human(now + ring(&mut r))
        } else if u < p_h + p_m {
            Plan::Machine(now + ring(&mut r))
        } else if u < p_h + p_m + c.busy {
            Plan::Busy(now + after(&mut r))
        } else if u < p_h + p_m + c.busy + c.failed {
            Plan::Failed(now + after(&mut r))
        } else {
            Plan::NoAnswer(now + (timeout * 1000.0) as i64)
        }
    }

    fn tick(&mut self) -> Result<(), SimError> {
        let of_day = self.ms_of_day();
        if of_day == self.dial_start_ms {
            if let Dialer::Ratio(r) = &mut self.dialer {
                r.new_day();
            }
        }
        while self
            .starts_minute
            .front()
            .is_some_and(|t| *t <= self.now - 60_000)
        {
            self.starts_minute.pop_front();
        }
        let trunk_room = self
            .sc
            .trunk
            .max_concurrent
            .saturating_sub(self.channels)
            .min(
                self.sc
                    .trunk
                    .max_per_minute
                    .saturating_sub(self.starts_minute.len() as u32),
            );
        let counts = self.counts();
        let wanted = match &mut self.dialer {
            Dialer::Ratio(r) => {
                r.sample(&counts);
                if (of_day - self.dial_start_ms) % 15_000 == 0 && of_day > self.dial_start_ms {
                    let mins = of_day / 60_000;
                    r.recalculate(self.now, (mins / 60) * 100 + mins % 60);
                }
                r.attempts_now(&counts)
            }
            Dialer::Predictive(p) => p.poll_dial(UnixMillis(self.now)).total(),
        };
        let n = if counts.logged_in == 0 {
            0
        } else {
            wanted.min(trunk_room)
        };
        for _ in 0..n {
            self.start_attempt()?;
        }
        if of_day + 1000 < self.dial_end_ms {
            self.at(self.now + 1000, Ev::Tick);
        }
        Ok(())
    }

    fn start_attempt(&mut self) -> Result<(), SimError> {
        let i = self.attempts.len();
        let plan = self.draw_plan(i as u64);
        self.attempts.push(SimAttempt {
            plan,
            phase: Phase::Ringing,
        });
        self.report.attempts += 1;
        self.channels += 1;
        self.ringing += 1;
        self.starts_minute.push_back(self.now);
        let at = match plan {
            Plan::Human(t)
            | Plan::Machine(t)
            | Plan::Busy(t)
            | Plan::Failed(t)
            | Plan::NoAnswer(t) => t,
        };
        self.tell_attempt(
            i,
            AttemptEvent::Started {
                trunk: self.trunk.clone(),
            },
        )?;
        self.at(at, Ev::Resolve(i));
        Ok(())
    }

    fn finish(&mut self) {
        for agent in 0..self.agents.len() {
            if self.agents[agent].phase != AgentPhase::Out {
                self.set_agent(agent, AgentPhase::Out);
            }
        }
        self.report.unresolved = self
            .attempts
            .iter()
            .filter(|a| a.phase != Phase::Done)
            .count() as u64;
    }
}

fn attempt_id(i: usize) -> AttemptId {
    AttemptId(uuid::Uuid::from_u128(i as u128 + 1))
}
