//! What the carrier side teaches the pacer: answer probability and time to answer.
//!
//! Owns the online estimates, per trunk and per hour of day, learned from attempt outcomes:
//! the chance an attempt is answered by a person or by a machine, the distribution of the
//! ring time before an answer, and of the time before an unanswered attempt ends. Every
//! count is exponentially forgotten in virtual time. Knows nothing of agents or budgets and
//! reads no clock: the caller passes the attempt's age.

/// Ring-time histogram buckets of one second; older attempts fall in the last bucket.
pub(crate) const RING_BUCKETS: usize = 120;

/// Decayed counts of attempt outcomes over one forgetting horizon.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeTally {
    half_life_ms: f64,
    last_ms: i64,
    /// Finished attempts (weight).
    pub(crate) total: f64,
    /// Answered by a person.
    pub(crate) human: f64,
    /// Answered by a machine.
    pub(crate) machine: f64,
    /// Ring time of answered attempts (person or machine), one-second buckets.
    answer_age: [f64; RING_BUCKETS],
    /// Age at which unanswered attempts ended (busy, failed, no answer).
    other_age: [f64; RING_BUCKETS],
}

/// How an attempt that has finished ringing ended, for learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingOutcome {
    Human,
    Machine,
    Unanswered,
}

impl OutcomeTally {
    pub(crate) fn new(half_life_ms: f64) -> Self {
        OutcomeTally {
            half_life_ms,
            last_ms: i64::MIN,
            total: 0.0,
            human: 0.0,
            machine: 0.0,
            answer_age: [0.0; RING_BUCKETS],
            other_age: [0.0; RING_BUCKETS],
        }
    }

    fn decay_to(&mut self, now_ms: i64) {
        if self.last_ms == i64::MIN || now_ms <= self.last_ms {
            self.last_ms = self.last_ms.max(now_ms);
            return;
        }
        let f = 0.5f64.powf((now_ms - self.last_ms) as f64 / self.half_life_ms);
        self.last_ms = now_ms;
        self.total *= f;
        self.human *= f;
        self.machine *= f;
        for v in self.answer_age.iter_mut().chain(self.other_age.iter_mut()) {
            *v *= f;
        }
    }

    /// Records one finished ring phase that lasted `age_ms`.
    pub(crate) fn record(&mut self, now_ms: i64, outcome: RingOutcome, age_ms: i64) {
        self.decay_to(now_ms);
        let bucket = usize::try_from(age_ms.max(0) / 1000)
            .unwrap_or(RING_BUCKETS - 1)
            .min(RING_BUCKETS - 1);
        self.total += 1.0;
        match outcome {
            RingOutcome::Human => {
                self.human += 1.0;
                self.answer_age[bucket] += 1.0;
            }
            RingOutcome::Machine => {
                self.machine += 1.0;
                self.answer_age[bucket] += 1.0;
            }
            RingOutcome::Unanswered => self.other_age[bucket] += 1.0,
        }
    }

    /// Forgets everything but a window of `n` attempts with `human` and `machine` answers:
    /// counts are replaced, shape histograms scaled to match.
    fn restart_from(&mut self, n: f64, human: f64, machine: f64) {
        let answered_was = self.human + self.machine;
        let other_was = self.total - answered_was;
        let answered = human + machine;
        let other = n - answered;
        let fa = if answered_was > 0.0 {
            answered / answered_was
        } else {
            0.0
        };
        let fo = if other_was > 0.0 {
            other / other_was
        } else {
            0.0
        };
        for v in self.answer_age.iter_mut() {
            *v *= fa;
        }
        for v in self.other_age.iter_mut() {
            *v *= fo;
        }
        self.total = n;
        self.human = human;
        self.machine = machine;
    }

    /// The estimate these counts give, shrunk toward `prior` with `prior_weight` pseudo-attempts.
    pub(crate) fn outlook(
        &self,
        now_ms: i64,
        prior: &AnswerOutlook,
        prior_weight: f64,
    ) -> AnswerOutlook {
        let f = if self.last_ms == i64::MIN || now_ms <= self.last_ms {
            1.0
        } else {
            0.5f64.powf((now_ms - self.last_ms) as f64 / self.half_life_ms)
        };
        let n = self.total * f;
        let w = n + prior_weight;
        let p_human = (self.human * f + prior_weight * prior.p_human) / w;
        let p_machine = (self.machine * f + prior_weight * prior.p_machine) / w;
        let answered = (self.human + self.machine) * f;
        let unanswered = n - answered;
        let answer_pmf = blend(
            &self.answer_age,
            f,
            answered,
            &prior.answer_pmf,
            prior_weight,
        );
        let other_pmf = blend(
            &self.other_age,
            f,
            unanswered,
            &prior.other_pmf,
            prior_weight,
        );
        AnswerOutlook::from_parts(p_human, p_machine, answer_pmf, other_pmf, n)
    }
}

fn blend(
    counts: &[f64; RING_BUCKETS],
    f: f64,
    n: f64,
    prior: &[f64; RING_BUCKETS],
    prior_weight: f64,
) -> [f64; RING_BUCKETS] {
    let mut out = [0.0; RING_BUCKETS];
    let w = n.max(0.0) + prior_weight;
    for i in 0..RING_BUCKETS {
        out[i] = (counts[i] * f + prior_weight * prior[i]) / w;
    }
    out
}

/// One trunk's answer behaviour as the pacer currently believes it.
#[derive(Debug, Clone)]
pub struct AnswerOutlook {
    /// Probability that an attempt is answered by a person.
    pub p_human: f64,
    /// Probability that an attempt is answered by a machine.
    pub p_machine: f64,
    /// Effective number of attempts behind the estimate.
    pub evidence: f64,
    answer_pmf: [f64; RING_BUCKETS],
    other_pmf: [f64; RING_BUCKETS],
    answer_cdf: [f64; RING_BUCKETS + 1],
    other_cdf: [f64; RING_BUCKETS + 1],
}

impl AnswerOutlook {
    fn from_parts(
        p_human: f64,
        p_machine: f64,
        answer_pmf: [f64; RING_BUCKETS],
        other_pmf: [f64; RING_BUCKETS],
        evidence: f64,
    ) -> Self {
        let cdf = |pmf: &[f64; RING_BUCKETS]| {
            let total: f64 = pmf.iter().sum();
            let mut c = [0.0; RING_BUCKETS + 1];
            let mut acc = 0.0;
            for i in 0..RING_BUCKETS {
                acc += if total > 0.0 { pmf[i] / total } else { 0.0 };
                c[i + 1] = acc.min(1.0);
            }
            c[RING_BUCKETS] = 1.0;
            c
        };
        AnswerOutlook {
            p_human,
            p_machine,
            evidence,
            answer_cdf: cdf(&answer_pmf),
            other_cdf: cdf(&other_pmf),
            answer_pmf,
            other_pmf,
        }
    }

    /// A weak starting belief: `p_human`, `p_machine`, answers spread over 3–20 s, unanswered
    /// attempts ending over 1–30 s.
    pub fn prior(p_human: f64, p_machine: f64) -> Self {
        let mut answer_pmf = [0.0; RING_BUCKETS];
        for v in answer_pmf.iter_mut().take(20).skip(3) {
            *v = 1.0 / 17.0;
        }
        let mut other_pmf = [0.0; RING_BUCKETS];
        for v in other_pmf.iter_mut().take(30).skip(1) {
            *v = 1.0 / 29.0;
        }
        AnswerOutlook::from_parts(p_human, p_machine, answer_pmf, other_pmf, 0.0)
    }

    /// `P(ring time to answer ≤ secs)` for answered attempts (linear within a bucket).
    pub fn answer_cdf(&self, secs: f64) -> f64 {
        interpolate(&self.answer_cdf, secs)
    }

    fn other_cdf(&self, secs: f64) -> f64 {
        interpolate(&self.other_cdf, secs)
    }

    /// Probability that an attempt still ringing at `age` s ends up answered by a person.
    pub fn human_given_alive(&self, age: f64) -> f64 {
        let alive = self.alive(age);
        if alive <= 1e-12 {
            return 0.0;
        }
        (self.p_human * (1.0 - self.answer_cdf(age)) / alive).clamp(0.0, 1.0)
    }

    fn alive(&self, age: f64) -> f64 {
        let p_other = (1.0 - self.p_human - self.p_machine).max(0.0);
        (self.p_human + self.p_machine) * (1.0 - self.answer_cdf(age))
            + p_other * (1.0 - self.other_cdf(age))
    }

    /// Probability that an attempt ringing for `age` s is answered by a person within the
    /// next `horizon` s.
    pub fn human_within(&self, age: f64, horizon: f64) -> f64 {
        let alive = self.alive(age);
        if alive <= 1e-12 {
            return 0.0;
        }
        let gained = self.answer_cdf(age + horizon) - self.answer_cdf(age);
        (self.p_human * gained / alive).clamp(0.0, 1.0)
    }

    /// The ring time below which a fraction `q` of answers come.
    pub fn answer_quantile(&self, q: f64) -> f64 {
        for i in 0..RING_BUCKETS {
            let (lo, hi) = (self.answer_cdf[i], self.answer_cdf[i + 1]);
            if hi >= q && hi > lo {
                return i as f64 + ((q - lo) / (hi - lo)).clamp(0.0, 1.0);
            }
        }
        RING_BUCKETS as f64
    }

    /// Mean ring time of answered attempts, seconds.
    pub fn mean_answer_secs(&self) -> f64 {
        let total: f64 = self.answer_pmf.iter().sum();
        if total <= 0.0 {
            return 0.0;
        }
        self.answer_pmf
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 + 0.5) * p)
            .sum::<f64>()
            / total
    }
}

fn interpolate(cdf: &[f64; RING_BUCKETS + 1], secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    if secs >= RING_BUCKETS as f64 {
        return 1.0;
    }
    let i = secs.floor() as usize;
    let frac = secs - i as f64;
    cdf[i] + frac * (cdf[i + 1] - cdf[i])
}

/// The learned answer behaviour of one trunk: a slow memory that restarts at detected
/// change points, two CUSUM detectors (answer rate down, answer rate up) watching it, and an
/// hour-of-day profile.
#[derive(Debug, Clone)]
pub(crate) struct TrunkAnswers {
    slow: OutcomeTally,
    down: ShiftDetector,
    up: ShiftDetector,
    /// The minute being gathered: (minute number, attempts, person answers, machine answers).
    minute: (i64, f64, f64, f64),
    by_hour: Vec<OutcomeTally>,
}

/// One-sided binomial CUSUM on "answered by a person", fed one minute of outcomes at a
/// time (outcomes arrive in completion order — answers before ring-outs — so single
/// outcomes are not exchangeable, minutes nearly are): the log-likelihood ratio of the
/// shifted rate against the slow memory's, accumulated and floored at zero. The minutes
/// since it last stood at zero are the candidate new regime.
#[derive(Debug, Clone, Default)]
struct ShiftDetector {
    score: f64,
    attempts: f64,
    human: f64,
    machine: f64,
}

impl ShiftDetector {
    /// Adds a minute `(n, human, machine)` under `p1` against `p0`; true when over `h`.
    fn observe(&mut self, p0: f64, p1: f64, minute: (f64, f64, f64), h: f64) -> bool {
        let (n, human, machine) = minute;
        self.score += human * (p1 / p0).ln() + (n - human) * ((1.0 - p1) / (1.0 - p0)).ln();
        if self.score <= 0.0 {
            *self = ShiftDetector::default();
            return false;
        }
        self.attempts += n;
        self.human += human;
        self.machine += machine;
        self.score > h
    }
}

/// Forgetting horizons and shrinkage weights of the answer model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerLearning {
    pub(crate) slow_half_life_ms: f64,
    pub(crate) profile_half_life_ms: f64,
    /// Pseudo-attempts the hour profile lends the slow memory.
    pub(crate) profile_weight: f64,
    /// Pseudo-attempts the starting prior lends the hour profile.
    pub(crate) prior_weight: f64,
    /// Relative change of the person-answer rate the detectors are tuned to (1/3: 30 → 20 %).
    pub(crate) shift_size: f64,
    /// CUSUM decision threshold (log-likelihood ratio).
    pub(crate) shift_threshold: f64,
}

impl TrunkAnswers {
    pub(crate) fn new(l: &AnswerLearning) -> Self {
        TrunkAnswers {
            slow: OutcomeTally::new(l.slow_half_life_ms),
            down: ShiftDetector::default(),
            up: ShiftDetector::default(),
            minute: (i64::MIN, 0.0, 0.0, 0.0),
            by_hour: (0..24)
                .map(|_| OutcomeTally::new(l.profile_half_life_ms))
                .collect(),
        }
    }

    pub(crate) fn record(
        &mut self,
        now_ms: i64,
        hour: usize,
        outcome: RingOutcome,
        age_ms: i64,
        l: &AnswerLearning,
    ) {
        let minute = now_ms.div_euclid(60_000);
        if minute != self.minute.0 {
            self.close_minute(l);
            self.minute = (minute, 0.0, 0.0, 0.0);
        }
        self.minute.1 += 1.0;
        match outcome {
            RingOutcome::Human => self.minute.2 += 1.0,
            RingOutcome::Machine => self.minute.3 += 1.0,
            RingOutcome::Unanswered => {}
        }
        self.slow.record(now_ms, outcome, age_ms);
        self.by_hour[hour % 24].record(now_ms, outcome, age_ms);
    }

    /// Feeds the finished minute to both detectors; on an alarm the slow memory restarts
    /// from the attempts since the change began.
    fn close_minute(&mut self, l: &AnswerLearning) {
        let (_, n, human, machine) = self.minute;
        // The minute's outcomes are already in the slow memory: test against the rest.
        let rest = self.slow.total - n;
        if n <= 0.0 || rest < 30.0 {
            return;
        }
        let p0 = ((self.slow.human - human) / rest).clamp(0.02, 0.95);
        let p_down = p0 * (1.0 - l.shift_size);
        let p_up = (p0 * (1.0 + l.shift_size)).min(0.99);
        let batch = (n, human, machine);
        let fired_down = self.down.observe(p0, p_down, batch, l.shift_threshold);
        let fired_up = self.up.observe(p0, p_up, batch, l.shift_threshold);
        let fired = if fired_down {
            Some(self.down.clone())
        } else if fired_up {
            Some(self.up.clone())
        } else {
            None
        };
        if let Some(d) = fired {
            self.slow.restart_from(d.attempts, d.human, d.machine);
            self.down = ShiftDetector::default();
            self.up = ShiftDetector::default();
        }
    }

    /// The estimate for this hour: the slow memory, shrunk toward the hour-of-day profile
    /// (itself shrunk toward the prior).
    pub(crate) fn outlook(
        &self,
        now_ms: i64,
        hour: usize,
        prior: &AnswerOutlook,
        l: &AnswerLearning,
    ) -> AnswerOutlook {
        let profile = self.by_hour[hour % 24].outlook(now_ms, prior, l.prior_weight);
        self.slow.outlook(now_ms, &profile, l.profile_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learning() -> AnswerLearning {
        AnswerLearning {
            slow_half_life_ms: 1_500_000.0,
            profile_half_life_ms: 7.0 * 86_400_000.0,
            profile_weight: 30.0,
            prior_weight: 10.0,
            shift_size: 1.0 / 3.0,
            shift_threshold: 5.0,
        }
    }

    #[test]
    fn answer_probability_converges_to_the_observed_rate() {
        let l = learning();
        let mut t = TrunkAnswers::new(&l);
        let prior = AnswerOutlook::prior(0.5, 0.0);
        // 1 in 4 answered by a person after 8 s; the rest ring out at 25 s.
        for i in 0..2000i64 {
            let now = i * 1000;
            if i % 4 == 0 {
                t.record(now, 10, RingOutcome::Human, 8_000, &l);
            } else {
                t.record(now, 10, RingOutcome::Unanswered, 25_000, &l);
            }
        }
        let o = t.outlook(2_000_000, 10, &prior, &l);
        assert!((o.p_human - 0.25).abs() < 0.02, "p_human {}", o.p_human);
        assert!((o.mean_answer_secs() - 8.5).abs() < 0.5);
        // Still ringing at 9 s: it will not be answered (all answers come at 8 s).
        assert!(o.human_given_alive(9.5) < 0.02);
        // Fresh attempt: one in four, all within 9 s.
        assert!((o.human_within(0.0, 9.0) - o.p_human).abs() < 0.01);
    }

    #[test]
    fn posterior_falls_as_an_attempt_rings_longer() {
        let l = learning();
        let mut t = TrunkAnswers::new(&l);
        for i in 0..3000i64 {
            let age = 2_000 + (i % 15) * 1000; // answers spread over 2–16 s
            if i % 3 == 0 {
                t.record(i * 500, 3, RingOutcome::Human, age, &l);
            } else {
                t.record(i * 500, 3, RingOutcome::Unanswered, 30_000, &l);
            }
        }
        let o = t.outlook(1_500_000, 3, &AnswerOutlook::prior(0.3, 0.0), &l);
        let early = o.human_given_alive(1.0);
        let mid = o.human_given_alive(10.0);
        let late = o.human_given_alive(20.0);
        assert!(early > mid && mid > late, "{early} {mid} {late}");
        assert!(late < 0.01);
    }

    #[test]
    fn each_hour_of_day_keeps_its_own_profile() {
        let l = learning();
        let mut t = TrunkAnswers::new(&l);
        let day = 86_400_000i64;
        // Three days: hour 9 answers 40%, hour 14 answers 10%.
        for d in 0..3 {
            for i in 0..600i64 {
                let now9 = d * day + 9 * 3_600_000 + i * 5000;
                let now14 = d * day + 14 * 3_600_000 + i * 5000;
                let o9 = if i % 5 < 2 {
                    RingOutcome::Human
                } else {
                    RingOutcome::Unanswered
                };
                let o14 = if i % 10 == 0 {
                    RingOutcome::Human
                } else {
                    RingOutcome::Unanswered
                };
                t.record(now9, 9, o9, 6000, &l);
                t.record(now14, 14, o14, 6000, &l);
            }
        }
        // Early on day 4, before any fresh outcome: the profile alone speaks for each hour.
        let probe = 3 * day + 2 * 3_600_000;
        let prior = AnswerOutlook::prior(0.25, 0.0);
        let mut l2 = l;
        l2.profile_weight = 1e9; // isolate the profile from the recent memories
        let p9 = t.outlook(probe, 9, &prior, &l2).p_human;
        let p14 = t.outlook(probe, 14, &prior, &l2).p_human;
        assert!((p9 - 0.4).abs() < 0.03, "hour 9: {p9}");
        assert!((p14 - 0.1).abs() < 0.03, "hour 14: {p14}");
    }
}
