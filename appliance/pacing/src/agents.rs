//! When agents will be free: the talk-time distribution and the wrap-up time.
//!
//! Owns the learned distribution of conversation lengths (two-second buckets, forgotten
//! exponentially in virtual time) and the mean wrap-up length, and turns an agent's state
//! into the probability that the agent is free within a horizon. Holds no agent roster (the
//! pacer does) and reads no clock.

use crate::AgentState;

const TALK_BUCKET_SECS: f64 = 2.0;
const TALK_BUCKETS: usize = 1800; // one hour

/// Learned conversation lengths and wrap-up time.
#[derive(Debug, Clone)]
pub(crate) struct AgentOutlook {
    half_life_ms: f64,
    last_ms: i64,
    talk: Vec<f64>,
    /// Survival `P(T > bucket start)`; rebuilt when `dirty`.
    survival: Vec<f64>,
    dirty: bool,
    wrap_weight: f64,
    wrap_sum_secs: f64,
}

impl AgentOutlook {
    /// Starts from a weak prior: talk roughly exponential with `prior_talk_secs` mean, wrap-up
    /// `prior_wrap_secs`.
    pub(crate) fn new(half_life_ms: f64, prior_talk_secs: f64, prior_wrap_secs: f64) -> Self {
        let mut talk = vec![0.0; TALK_BUCKETS];
        let prior_weight = 5.0;
        let rate = TALK_BUCKET_SECS / prior_talk_secs.max(1.0);
        let mut s = 1.0f64;
        for v in talk.iter_mut() {
            let next = s * (-rate).exp();
            *v = prior_weight * (s - next);
            s = next;
        }
        let mut a = AgentOutlook {
            half_life_ms,
            last_ms: i64::MIN,
            talk,
            survival: vec![1.0; TALK_BUCKETS + 1],
            dirty: true,
            wrap_weight: 1.0,
            wrap_sum_secs: prior_wrap_secs,
        };
        a.rebuild();
        a
    }

    fn decay_to(&mut self, now_ms: i64) {
        if self.last_ms != i64::MIN && now_ms > self.last_ms {
            let f = 0.5f64.powf((now_ms - self.last_ms) as f64 / self.half_life_ms);
            for v in self.talk.iter_mut() {
                *v *= f;
            }
            self.wrap_weight *= f;
            self.wrap_sum_secs *= f;
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Learns one finished conversation of `secs`.
    pub(crate) fn record_talk(&mut self, now_ms: i64, secs: f64) {
        self.decay_to(now_ms);
        let b = ((secs.max(0.0) / TALK_BUCKET_SECS) as usize).min(TALK_BUCKETS - 1);
        self.talk[b] += 1.0;
        self.dirty = true;
    }

    /// Learns one wrap-up length of `secs`.
    pub(crate) fn record_wrap(&mut self, now_ms: i64, secs: f64) {
        self.decay_to(now_ms);
        self.wrap_weight += 1.0;
        self.wrap_sum_secs += secs.max(0.0);
    }

    fn rebuild(&mut self) {
        let total: f64 = self.talk.iter().sum();
        let mut s = 1.0;
        self.survival[0] = 1.0;
        for i in 0..TALK_BUCKETS {
            s -= if total > 0.0 {
                self.talk[i] / total
            } else {
                0.0
            };
            self.survival[i + 1] = s.max(0.0);
        }
        self.dirty = false;
    }

    /// Brings the cached survival curve up to date; call once before a batch of queries.
    pub(crate) fn refresh(&mut self) {
        if self.dirty {
            self.rebuild();
        }
    }

    /// Mean wrap-up length, seconds.
    pub(crate) fn mean_wrap_secs(&self) -> f64 {
        if self.wrap_weight > 0.0 {
            self.wrap_sum_secs / self.wrap_weight
        } else {
            0.0
        }
    }

    fn talk_survival(&self, secs: f64) -> f64 {
        let x = secs.max(0.0) / TALK_BUCKET_SECS;
        if x >= TALK_BUCKETS as f64 {
            return 0.0;
        }
        let i = x.floor() as usize;
        let frac = x - i as f64;
        self.survival[i] + frac * (self.survival[i + 1] - self.survival[i])
    }

    /// Probability that an agent in `state`, entered `in_state_secs` ago, is free to take a
    /// call `horizon_secs` from now. `wrap_left_secs` is the wrap-up timer's remaining time.
    pub(crate) fn free_within(
        &self,
        state: &AgentState,
        in_state_secs: f64,
        horizon_secs: f64,
        wrap_left_secs: f64,
    ) -> f64 {
        match state {
            AgentState::Ready => 1.0,
            AgentState::WrapUp { .. } => {
                if wrap_left_secs <= horizon_secs {
                    1.0
                } else {
                    0.0
                }
            }
            AgentState::Talking => {
                // Free when talk ends and the wrap-up after it is over.
                let talk_budget = horizon_secs - self.mean_wrap_secs();
                if talk_budget <= 0.0 {
                    return 0.0;
                }
                let s_now = self.talk_survival(in_state_secs);
                if s_now <= 1e-9 {
                    // Longer than anything seen: assume it ends at a one-minute rate.
                    return 1.0 - (-talk_budget / 60.0).exp();
                }
                let s_then = self.talk_survival(in_state_secs + talk_budget);
                ((s_now - s_then) / s_now).clamp(0.0, 1.0)
            }
            AgentState::Reserved | AgentState::Paused | AgentState::LoggedOut => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_deep_into_a_call_is_more_likely_free_soon_than_one_just_started() {
        let mut a = AgentOutlook::new(3_600_000.0, 120.0, 10.0);
        // Talks last 60–180 s uniformly; wrap-up 10 s.
        for i in 0..600i64 {
            a.record_talk(i * 1000, 60.0 + (i % 121) as f64);
            a.record_wrap(i * 1000, 10.0);
        }
        a.refresh();
        let fresh = a.free_within(&AgentState::Talking, 5.0, 30.0, 0.0);
        let deep = a.free_within(&AgentState::Talking, 170.0, 30.0, 0.0);
        assert!(fresh < 0.01, "fresh {fresh}");
        assert!(deep > 0.6, "deep {deep}");
        assert!((a.mean_wrap_secs() - 10.0).abs() < 0.1);
    }

    #[test]
    fn wrap_up_timer_frees_the_agent_exactly_when_it_runs_out() {
        let a = AgentOutlook::new(3_600_000.0, 120.0, 10.0);
        let wrap = AgentState::WrapUp {
            until: callgate_common::time::UnixMillis(0),
        };
        assert_eq!(a.free_within(&wrap, 3.0, 5.0, 4.0), 1.0);
        assert_eq!(a.free_within(&wrap, 3.0, 5.0, 6.0), 0.0);
        assert_eq!(a.free_within(&AgentState::Paused, 0.0, 500.0, 0.0), 0.0);
        assert_eq!(a.free_within(&AgentState::Ready, 0.0, 0.0, 0.0), 1.0);
    }
}
