//! The baseline dialling strategies the benchmark compares against: progressive (1:1), a
//! fixed ratio, and VICIdial's adaptive-ratio modes.
//!
//! Owns the ratio dialler's arithmetic only; the simulator engine feeds it counts and
//! events. The adaptive modes follow VICIdial's documented behaviour and its published
//! `AST_VDadapt.pl` / `AST_VDauto_dial.pl` logic (read, re-expressed here, not copied):
//!
//! * every second the campaign samples ready agents, answered calls waiting for an agent,
//!   and logged-in agents, keeping the last 15 samples;
//! * every 15 s the dial level becomes `level · (1 + (avg ready − avg waiting) / avg agents)`
//!   (intensity 0, `adaptive_dl_diff_target` 0), capped at `adaptive_maximum_level` (3.0) and
//!   floored at 1.0;
//! * drop rules: more than 20 calls in the last minute with over 50 % dropped halves the
//!   level; with more than 50 calls today and today's drops ÷ answers above
//!   `adaptive_dropped_percentage`, ADAPT_HARD_LIMIT sets the level to 1.0, ADAPT_AVERAGE
//!   halves it, ADAPT_TAPERED multiplies it by `(latest_time − now) / 1000` in HHMM
//!   arithmetic (1.0 after the latest time); the level never goes below 1.0;
//! * every dialling loop (1 s here, for every strategy) the dialler places
//!   `round(level · (ready + in-call agents)) − (ringing + waiting + connected calls)`
//!   attempts (agents in wrap-up are in the disposition screen, hence paused, and not
//!   counted).
//!
//! For fairness the drop statistics are refreshed at every 15 s recalculation (VICIdial
//! refreshes them about once a minute, which only makes it slower to react), and the drop
//! target is the campaign's own cap, the setting VICIdial's documentation recommends.

use std::collections::VecDeque;

/// Which VICIdial adaptive mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptMode {
    /// `ADAPT_HARD_LIMIT`: over the drop target today, dial level 1.0.
    HardLimit,
    /// `ADAPT_TAPERED`: over target, scaled down more as the shift's end nears.
    Tapered,
    /// `ADAPT_AVERAGE`: over target, halved.
    Average,
}

impl AdaptMode {
    /// VICIdial's name for the mode.
    pub fn vicidial_name(self) -> &'static str {
        match self {
            AdaptMode::HardLimit => "ADAPT_HARD_LIMIT",
            AdaptMode::Tapered => "ADAPT_TAPERED",
            AdaptMode::Average => "ADAPT_AVERAGE",
        }
    }
}

/// The counts a ratio dialler looks at, as the engine sees them now.
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteCounts {
    /// Agents ready.
    pub ready: u32,
    /// Agents talking.
    pub talking: u32,
    /// Agents logged in (any state).
    pub logged_in: u32,
    /// Attempts ringing.
    pub ringing: u32,
    /// Answered calls waiting for an agent.
    pub waiting: u32,
    /// Calls bridged to agents.
    pub connected: u32,
}

/// A ratio dialler: fixed or adaptive dial level.
#[derive(Debug, Clone)]
pub struct RatioDialer {
    mode: Option<AdaptMode>,
    level: f64,
    max_level: f64,
    drop_target_pct: f64,
    /// `adaptive_latest_server_time` as HHMM.
    latest_hhmm: i64,
    samples: VecDeque<(u32, u32, u32)>,
    calls_today: u64,
    answers_today: u64,
    drops_today: u64,
    /// Times of attempts and of drops in the last minute.
    calls_minute: VecDeque<i64>,
    drops_minute: VecDeque<i64>,
}

impl RatioDialer {
    /// A fixed dial level (1.0 is progressive).
    pub fn fixed(level: f64) -> Self {
        Self::build(None, level, level, 0.0, 2400)
    }

    /// A VICIdial adaptive dialler starting at level 1.0.
    pub fn adaptive(mode: AdaptMode, max_level: f64, drop_target: f64, latest_hhmm: i64) -> Self {
        Self::build(Some(mode), 1.0, max_level, drop_target * 100.0, latest_hhmm)
    }

    fn build(mode: Option<AdaptMode>, level: f64, max_level: f64, pct: f64, latest: i64) -> Self {
        RatioDialer {
            mode,
            level,
            max_level,
            drop_target_pct: pct,
            latest_hhmm: latest,
            samples: VecDeque::new(),
            calls_today: 0,
            answers_today: 0,
            drops_today: 0,
            calls_minute: VecDeque::new(),
            drops_minute: VecDeque::new(),
        }
    }

    /// The current dial level.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Start of the dialling day: VICIdial's "today" statistics start again, and an adaptive
    /// dial level restarts at 1.0 (as an admin would set it), rather than carrying the
    /// evening's level into the morning's logins — kinder to the baseline.
    pub fn new_day(&mut self) {
        if self.mode.is_some() {
            self.level = 1.0;
        }
        self.samples.clear();
        self.calls_today = 0;
        self.answers_today = 0;
        self.drops_today = 0;
    }

    /// An attempt was placed.
    pub fn on_call(&mut self, now_ms: i64) {
        self.calls_today += 1;
        self.calls_minute.push_back(now_ms);
    }

    /// A person answered.
    pub fn on_answer(&mut self) {
        self.answers_today += 1;
    }

    /// An answered call was dropped (abandoned).
    pub fn on_drop(&mut self, now_ms: i64) {
        self.drops_today += 1;
        self.drops_minute.push_back(now_ms);
    }

    /// The once-a-second sample of the agent/call differential.
    pub fn sample(&mut self, c: &SiteCounts) {
        self.samples.push_back((c.ready, c.waiting, c.logged_in));
        while self.samples.len() > 15 {
            self.samples.pop_front();
        }
    }

    /// The 15-second recalculation of the dial level (`calculate_dial_level`).
    pub fn recalculate(&mut self, now_ms: i64, hhmm: i64) {
        let Some(mode) = self.mode else { return };
        while self
            .calls_minute
            .front()
            .is_some_and(|t| *t <= now_ms - 60_000)
        {
            self.calls_minute.pop_front();
        }
        while self
            .drops_minute
            .front()
            .is_some_and(|t| *t <= now_ms - 60_000)
        {
            self.drops_minute.pop_front();
        }
        let n = self.samples.len().max(1) as f64;
        let ready = self.samples.iter().map(|s| f64::from(s.0)).sum::<f64>() / n;
        let waiting = self.samples.iter().map(|s| f64::from(s.1)).sum::<f64>() / n;
        let agents = self.samples.iter().map(|s| f64::from(s.2)).sum::<f64>() / n;
        let differential = ready - waiting;
        let mul = if differential != 0.0 && agents != 0.0 {
            differential / agents
        } else {
            0.0
        };
        let mut level = self.level * (mul + 1.0);
        if level > self.max_level {
            level = self.max_level;
        }
        if level < 1.0 {
            level = 1.0;
        }
        let calls_one = self.calls_minute.len() as f64;
        let drops_one = self.drops_minute.len() as f64;
        if calls_one > 20.0 && drops_one / calls_one * 100.0 > 50.0 {
            level /= 2.0;
        }
        let answers = self.answers_today.max(1) as f64;
        let drop_pct = self.drops_today as f64 / answers * 100.0;
        if self.calls_today > 50 && self.drops_today > 0 && drop_pct > self.drop_target_pct {
            match mode {
                AdaptMode::HardLimit => level = 1.0,
                AdaptMode::Average => level /= 2.0,
                AdaptMode::Tapered => {
                    let left = self.latest_hhmm - hhmm;
                    if left < 0 {
                        level = 1.0;
                    } else {
                        let rate = if left > 1000 {
                            1.0
                        } else {
                            left as f64 / 1000.0
                        };
                        level *= rate;
                    }
                }
            }
        }
        if level < 1.0 {
            level = 1.0;
        }
        self.level = level;
    }

    /// Attempts to place now (`AST_VDauto_dial.pl`'s goal calls minus existing calls).
    pub fn attempts_now(&self, c: &SiteCounts) -> u32 {
        let counted = f64::from(c.ready + c.talking);
        let goal = (self.level * counted).round();
        let existing = f64::from(c.ringing + c.waiting + c.connected);
        (goal - existing).max(0.0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ready: u32, talking: u32, ringing: u32) -> SiteCounts {
        SiteCounts {
            ready,
            talking,
            logged_in: ready + talking,
            ringing,
            waiting: 0,
            connected: talking,
        }
    }

    #[test]
    fn progressive_dials_one_attempt_per_ready_agent_not_already_covered() {
        let d = RatioDialer::fixed(1.0);
        assert_eq!(d.attempts_now(&counts(3, 5, 1)), 2);
        assert_eq!(d.attempts_now(&counts(0, 5, 0)), 0);
    }

    #[test]
    fn adaptive_level_climbs_while_agents_wait_and_stops_at_the_cap() {
        let mut d = RatioDialer::adaptive(AdaptMode::HardLimit, 3.0, 0.03, 1700);
        for i in 0..40 {
            for _ in 0..15 {
                d.sample(&counts(5, 5, 0));
            }
            d.recalculate(i * 15_000, 1000);
        }
        assert_eq!(d.level(), 3.0);
    }

    #[test]
    fn hard_limit_drops_to_one_when_todays_drop_rate_is_over_target() {
        let mut d = RatioDialer::adaptive(AdaptMode::HardLimit, 3.0, 0.03, 1700);
        for _ in 0..15 {
            d.sample(&counts(5, 5, 0));
        }
        d.recalculate(0, 1000);
        assert!(d.level() > 1.0);
        for i in 0..100 {
            d.on_call(i);
        }
        for _ in 0..30 {
            d.on_answer();
        }
        d.on_drop(50); // 1 / 30 = 3.3 % > 3 %
        d.recalculate(15_000, 1000);
        assert_eq!(d.level(), 1.0);
    }

    #[test]
    fn tapered_cuts_harder_near_the_latest_time() {
        let mut early = RatioDialer::adaptive(AdaptMode::Tapered, 3.0, 0.03, 1700);
        let mut late = early.clone();
        for d in [&mut early, &mut late] {
            for _ in 0..15 {
                d.sample(&counts(10, 0, 0));
            }
            for i in 0..100 {
                d.on_call(i);
            }
            for _ in 0..30 {
                d.on_answer();
            }
            d.on_drop(50);
        }
        early.recalculate(15_000, 900); // 800 "HHMM" left → × 0.8
        late.recalculate(15_000, 1600); // 100 left → × 0.1, floored at 1.0
        assert!((early.level() - 1.6).abs() < 1e-9, "{}", early.level());
        assert_eq!(late.level(), 1.0);
    }
}
