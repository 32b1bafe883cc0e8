//! Scenario files: plain TOML describing one site-day pattern to simulate.
//!
//! Owns the scenario's typed form, its parsing (unknown keys refused) and its validation,
//! whose errors name the key at fault. Reads no file itself: the benchmark binary reads the
//! text and hands it here.

use serde::Deserialize;

use super::rng::SimRng;

/// Why a scenario was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The text is not valid TOML for a scenario (unknown key, wrong type...).
    #[error("scenario is not valid: {0}")]
    Syntax(String),
    /// A value is out of range; names the key.
    #[error("scenario key `{key}` is invalid: {reason}")]
    Invalid {
        /// The key, dotted.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A random duration in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Duration {
    /// Always `value`.
    Fixed {
        /// Seconds.
        value: f64,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        /// Seconds.
        min: f64,
        /// Seconds.
        max: f64,
    },
    /// Exponential with `mean`.
    Exponential {
        /// Seconds.
        mean: f64,
    },
    /// Log-normal with the given mean and standard deviation (of the duration itself).
    Lognormal {
        /// Seconds.
        mean: f64,
        /// Seconds.
        sd: f64,
    },
}

impl Duration {
    /// Draws one duration, seconds.
    pub fn sample(&self, rng: &mut SimRng) -> f64 {
        match *self {
            Duration::Fixed { value } => value,
            Duration::Uniform { min, max } => min + (max - min) * rng.uniform(),
            Duration::Exponential { mean } => -mean * (1.0 - rng.uniform()).ln(),
            Duration::Lognormal { mean, sd } => {
                let s2 = (1.0 + (sd * sd) / (mean * mean)).ln();
                let mu = mean.ln() - s2 / 2.0;
                (mu + s2.sqrt() * rng.normal()).exp()
            }
        }
    }

    fn validate(&self, key: &str) -> Result<(), ScenarioError> {
        let ok = match *self {
            Duration::Fixed { value } => value >= 0.0 && value.is_finite(),
            Duration::Uniform { min, max } => min >= 0.0 && max >= min && max.is_finite(),
            Duration::Exponential { mean } => mean > 0.0 && mean.is_finite(),
            Duration::Lognormal { mean, sd } => mean > 0.0 && sd >= 0.0 && mean.is_finite(),
        };
        if ok {
            Ok(())
        } else {
            Err(invalid(
                key,
                format!("{self:?} has a negative or empty range"),
            ))
        }
    }
}

fn invalid(key: &str, reason: String) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.to_string(),
        reason,
    }
}

/// A group of agents with the same shift.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentGroup {
    /// How many agents.
    pub count: u32,
    /// Login and logout, hours of the day (e.g. `[9.0, 17.0]`).
    pub shift: [f64; 2],
    /// Pauses: `[start hour, length in hours]`; agent `i` starts each one
    /// `(i mod 4) · break_stagger_minutes` later.
    #[serde(default)]
    pub breaks: Vec<[f64; 2]>,
    /// Stagger between agents' breaks, minutes.
    #[serde(default = "default_stagger")]
    pub break_stagger_minutes: f64,
    /// Logins (and logouts) are spread evenly over this many minutes from the shift's start
    /// (and end), as people do not all arrive in the same second.
    #[serde(default = "default_login_spread")]
    pub login_spread_minutes: f64,
}

fn default_login_spread() -> f64 {
    10.0
}

fn default_stagger() -> f64 {
    15.0
}

/// How the called parties behave.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Callees {
    /// Probability a person answers, piecewise constant: `[from hour, probability]`.
    pub human: Vec<[f64; 2]>,
    /// Probability a machine answers, piecewise constant: `[from hour, probability]`.
    pub machine: Vec<[f64; 2]>,
    /// Probability the line is busy.
    pub busy: f64,
    /// Probability the attempt fails (network, rejected).
    pub failed: f64,
    /// Ring time before an answer (person or machine), seconds.
    pub ring: Duration,
    /// An attempt not answered by then ends as no answer, seconds.
    pub no_answer_timeout: f64,
    /// Time until a busy or failed attempt ends, seconds.
    pub busy_after: Duration,
    /// Time the machine detection holds the channel after a machine answers, seconds.
    pub amd_secs: f64,
}

/// Conversations and wrap-up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handling {
    /// Talk time, seconds.
    pub talk: Duration,
    /// The campaign's wrap-up timer, seconds.
    pub wrap: Duration,
}

/// The carrier trunk.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkSpec {
    /// Channels (attempts ringing and calls up).
    pub max_concurrent: u32,
    /// Attempts started in any minute.
    pub max_per_minute: u32,
}

/// The campaign's abandon budget.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbandonSpec {
    /// Highest abandoned ÷ answered-by-a-person, e.g. `0.03`.
    pub cap: f64,
    /// The window it is measured over, hours (24 for Ofcom, 720 for 30 days).
    pub window_hours: f64,
    /// How long an answered person may wait for an agent, seconds.
    #[serde(default = "default_safe_harbour")]
    pub safe_harbour_secs: f64,
}

fn default_safe_harbour() -> f64 {
    2.0
}

/// Parameters of the baseline strategies.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// The fixed ratio strategy's dial level.
    #[serde(default = "default_ratio")]
    pub fixed_ratio: f64,
    /// VICIdial's `adaptive_maximum_level`.
    #[serde(default = "default_max_level")]
    pub adapt_max_level: f64,
}

fn default_ratio() -> f64 {
    2.0
}
fn default_max_level() -> f64 {
    3.0
}

impl Default for BaselineSpec {
    fn default() -> Self {
        BaselineSpec {
            fixed_ratio: default_ratio(),
            adapt_max_level: default_max_level(),
        }
    }
}

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// Seed of every random draw.
    pub seed: u64,
    /// Days to simulate (each day repeats the pattern with fresh randomness).
    pub days: u32,
    /// The agents.
    pub agents: Vec<AgentGroup>,
    /// The called parties.
    pub callees: Callees,
    /// Talk and wrap-up.
    pub handling: Handling,
    /// The trunk.
    pub trunk: TrunkSpec,
    /// The abandon budget.
    pub abandon: AbandonSpec,
    /// Baseline parameters.
    #[serde(default)]
    pub baselines: BaselineSpec,
}

fn above(v: f64, lo: f64) -> bool {
    v.is_finite() && v > lo
}

fn at_least(v: f64, lo: f64) -> bool {
    v.is_finite() && v >= lo
}

fn hour_ok(h: f64) -> bool {
    (0.0..=24.0).contains(&h)
}

impl Scenario {
    /// Parses and validates a scenario's TOML text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        if self.days == 0 {
            return Err(invalid("days", "must be at least 1".into()));
        }
        if self.agents.is_empty() || self.agents.iter().all(|g| g.count == 0) {
            return Err(invalid("agents", "needs at least one agent".into()));
        }
        for (i, g) in self.agents.iter().enumerate() {
            let [a, b] = g.shift;
            if !hour_ok(a) || !hour_ok(b) || a >= b {
                return Err(invalid(
                    &format!("agents[{i}].shift"),
                    format!("[{a}, {b}] is not a span of hours within one day"),
                ));
            }
            if !(0.0..=60.0).contains(&g.login_spread_minutes) {
                return Err(invalid(
                    &format!("agents[{i}].login_spread_minutes"),
                    format!("{} is not within [0, 60]", g.login_spread_minutes),
                ));
            }
            for (j, [start, len]) in g.breaks.iter().enumerate() {
                if !hour_ok(*start) || *len <= 0.0 || *len > 4.0 {
                    return Err(invalid(
                        &format!("agents[{i}].breaks[{j}]"),
                        format!(
                            "[{start}, {len}] needs an hour of day and a length of (0, 4] hours"
                        ),
                    ));
                }
            }
        }
        for (key, curve) in [
            ("callees.human", &self.callees.human),
            ("callees.machine", &self.callees.machine),
        ] {
            if curve.is_empty() {
                return Err(invalid(
                    key,
                    "needs at least one [hour, probability]".into(),
                ));
            }
            let mut last = -1.0;
            for [h, p] in curve {
                if !hour_ok(*h) || *h <= last || !(0.0..=1.0).contains(p) {
                    return Err(invalid(
                        key,
                        format!("[{h}, {p}]: hours must increase and probabilities lie in [0, 1]"),
                    ));
                }
                last = *h;
            }
        }
        for h in 0..24 {
            let t = f64::from(h) + 0.5;
            let total =
                self.human_at(t) + self.machine_at(t) + self.callees.busy + self.callees.failed;
            if total > 1.0 + 1e-9 {
                return Err(invalid(
                    "callees",
                    format!("human + machine + busy + failed = {total:.3} > 1 at hour {h}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.callees.busy) {
            return Err(invalid("callees.busy", "must lie in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&self.callees.failed) {
            return Err(invalid("callees.failed", "must lie in [0, 1]".into()));
        }
        if !above(self.callees.no_answer_timeout, 1.0) {
            return Err(invalid(
                "callees.no_answer_timeout",
                "must exceed 1 s".into(),
            ));
        }
        if !at_least(self.callees.amd_secs, 0.0) {
            return Err(invalid("callees.amd_secs", "must not be negative".into()));
        }
        self.callees.ring.validate("callees.ring")?;
        self.callees.busy_after.validate("callees.busy_after")?;
        self.handling.talk.validate("handling.talk")?;
        self.handling.wrap.validate("handling.wrap")?;
        if self.trunk.max_concurrent == 0 || self.trunk.max_per_minute == 0 {
            return Err(invalid("trunk", "limits must be positive".into()));
        }
        if !(self.abandon.cap > 0.0 && self.abandon.cap < 0.5) {
            return Err(invalid("abandon.cap", "must lie in (0, 0.5)".into()));
        }
        if !at_least(self.abandon.window_hours, 1.0) {
            return Err(invalid("abandon.window_hours", "must be at least 1".into()));
        }
        if !at_least(self.abandon.safe_harbour_secs, 0.0) {
            return Err(invalid(
                "abandon.safe_harbour_secs",
                "must not be negative".into(),
            ));
        }
        if !at_least(self.baselines.fixed_ratio, 1.0) {
            return Err(invalid(
                "baselines.fixed_ratio",
                "must be at least 1".into(),
            ));
        }
        if !at_least(self.baselines.adapt_max_level, 1.0) {
            return Err(invalid(
                "baselines.adapt_max_level",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn piecewise(curve: &[[f64; 2]], hour: f64) -> f64 {
        let mut v = curve[0][1];
        for [h, p] in curve {
            if *h <= hour {
                v = *p;
            }
        }
        v
    }

    /// Probability a person answers at `hour` of the day.
    pub fn human_at(&self, hour: f64) -> f64 {
        Self::piecewise(&self.callees.human, hour)
    }

    /// Probability a machine answers at `hour` of the day.
    pub fn machine_at(&self, hour: f64) -> f64 {
        Self::piecewise(&self.callees.machine, hour)
    }

    /// Agents in all groups.
    pub fn agent_count(&self) -> u32 {
        self.agents.iter().map(|g| g.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
seed = 1
days = 1
[[agents]]
count = 3
shift = [9.0, 17.0]
[callees]
human = [[0.0, 0.3], [13.0, 0.2]]
machine = [[0.0, 0.05]]
busy = 0.05
failed = 0.01
ring = { kind = "lognormal", mean = 8.0, sd = 4.0 }
no_answer_timeout = 25.0
busy_after = { kind = "uniform", min = 1.0, max = 4.0 }
amd_secs = 3.0
[handling]
talk = { kind = "lognormal", mean = 120.0, sd = 60.0 }
wrap = { kind = "fixed", value = 10.0 }
[trunk]
max_concurrent = 30
max_per_minute = 200
[abandon]
cap = 0.03
window_hours = 24.0
"#;

    #[test]
    fn a_valid_scenario_parses_and_answers_by_hour() {
        let s = Scenario::parse(GOOD).unwrap();
        assert_eq!(s.agent_count(), 3);
        assert_eq!(s.human_at(10.0), 0.3);
        assert_eq!(s.human_at(14.0), 0.2);
        assert_eq!(s.baselines.adapt_max_level, 3.0);
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_name() {
        let text = GOOD.replace("amd_secs = 3.0", "amd_secs = 3.0\namd_seconds = 2");
        let err = Scenario::parse(&text).unwrap_err();
        assert!(err.to_string().contains("amd_seconds"), "{err}");
    }

    #[test]
    fn probabilities_over_one_are_refused_naming_the_key() {
        let text = GOOD.replace("busy = 0.05", "busy = 0.8");
        let err = Scenario::parse(&text).unwrap_err();
        assert!(
            matches!(&err, ScenarioError::Invalid { key, .. } if key == "callees"),
            "{err}"
        );
        let text = GOOD.replace("shift = [9.0, 17.0]", "shift = [17.0, 9.0]");
        let err = Scenario::parse(&text).unwrap_err();
        assert!(err.to_string().contains("agents[0].shift"), "{err}");
    }

    #[test]
    fn lognormal_duration_has_the_requested_mean() {
        let d = Duration::Lognormal {
            mean: 120.0,
            sd: 60.0,
        };
        let mut r = SimRng::new(5);
        let n = 50_000;
        let m = (0..n).map(|_| d.sample(&mut r)).sum::<f64>() / n as f64;
        assert!((m - 120.0).abs() < 2.0, "{m}");
    }
}
