//! Carrier trunks: what a trunk is (addresses, credentials, limits, priority and weight),
//! its health as OPTIONS probes see it (failure and recovery thresholds), its admission
//! limits (channels, calls per second) and its figures (answer-seizure ratio, post-dial
//! delay); and the order in which a [`TrunkGroup`] offers its trunks to a call.
//! [`router`] uses these to place calls with failover. Pure state, time passed in.

pub mod presentation;
pub mod router;

use crate::digest::DigestCredentials;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One carrier trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Name used in config, logs and figures.
    pub name: String,
    /// The carrier's address (IP literal; names are resolved before they get here).
    pub address: SocketAddr,
    /// The host part for Request-URIs (`sip:NUMBER@domain`).
    pub domain: String,
    /// Digest credentials, when the carrier challenges.
    pub credentials: Option<DigestCredentials>,
    /// Concurrent calls allowed.
    pub max_channels: u32,
    /// New calls allowed per second.
    pub max_cps: u32,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among trunks of equal priority.
    pub weight: u32,
}

/// When OPTIONS probing marks a trunk down and up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    /// Time between probes.
    pub interval: Duration,
    /// Consecutive failed probes that mark an up trunk down.
    pub failures_to_down: u32,
    /// Consecutive answered probes that mark a down trunk up.
    pub successes_to_up: u32,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        ProbePolicy {
            interval: Duration::from_secs(30),
            failures_to_down: 2,
            successes_to_up: 2,
        }
    }
}

/// A change in a trunk's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// The trunk is now down.
    WentDown,
    /// The trunk is up again.
    CameUp,
}

/// A trunk's health as probes see it. Starts up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkHealth {
    up: bool,
    failures: u32,
    successes: u32,
}

impl Default for TrunkHealth {
    fn default() -> Self {
        TrunkHealth {
            up: true,
            failures: 0,
            successes: 0,
        }
    }
}

impl TrunkHealth {
    /// Whether calls may use the trunk.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records a probe result: any final response means the carrier is alive (a 4xx/5xx
    /// to OPTIONS is still an answer); 408 (no answer) and 503 count as failures.
    pub fn record(&mut self, status: u16, policy: &ProbePolicy) -> Option<HealthChange> {
        let alive = !(status == 408 || status == 503);
        if alive {
            self.failures = 0;
            self.successes += 1;
            if !self.up && self.successes >= policy.successes_to_up {
                self.up = true;
                return Some(HealthChange::CameUp);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.up && self.failures >= policy.failures_to_down {
                self.up = false;
                return Some(HealthChange::WentDown);
            }
        }
        None
    }
}

/// Per-trunk figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkFigures {
    /// Calls offered to the trunk.
    pub attempts: u64,
    /// Calls answered (seizures that became answers).
    pub answered: u64,
    /// Calls that got a provisional response, and the total post-dial delay over them.
    pub pdd_samples: u64,
    /// Sum of post-dial delays (INVITE to first 18x).
    pub pdd_total: Duration,
}

impl TrunkFigures {
    /// Answer-seizure ratio in percent (None before any attempt).
    pub fn asr_percent(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.answered as f64 * 100.0 / self.attempts as f64)
    }

    /// Mean post-dial delay.
    pub fn mean_pdd(&self) -> Option<Duration> {
        (self.pdd_samples > 0).then(|| self.pdd_total / self.pdd_samples as u32)
    }
}

/// A trunk's registration at its carrier (trunks registered by
/// [`router::OutboundRouter::register_trunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is on its way.
    Registering,
    /// Registered until `until` (refreshed at half the grant).
    Registered {
        /// When the binding lapses unless refreshed.
        until: Instant,
    },
    /// Refused or unanswered; tried again at `next_try`.
    Failed {
        /// The final status (408 when unanswered).
        status: u16,
        /// Its reason phrase.
        reason: String,
        /// When the next REGISTER goes out.
        next_try: Instant,
    },
}

impl RegistrationState {
    /// For people: `registered for 118 s more`, `registration FAILED: 403 Forbidden, next
    /// try in 4 s` (whole seconds, rounded up).
    pub fn describe(&self, now: Instant) -> String {
        let secs = |t: Instant| t.saturating_duration_since(now).as_millis().div_ceil(1000);
        match self {
            RegistrationState::Registering => "registering".into(),
            RegistrationState::Registered { until } => {
                format!("registered for {} s more", secs(*until))
            }
            RegistrationState::Failed {
                status,
                reason,
                next_try,
            } => format!(
                "registration FAILED: {status} {reason}, next try in {} s",
                secs(*next_try)
            ),
        }
    }
}

/// A trunk with its live state.
#[derive(Debug, Clone)]
pub struct TrunkState {
    /// The trunk.
    pub trunk: Trunk,
    /// Probe health.
    pub health: TrunkHealth,
    /// Figures.
    pub figures: TrunkFigures,
    /// Calls in progress.
    pub active: u32,
    /// Its registration at the carrier; `None` when it is not registered (IP
    /// authentication).
    pub registration: Option<RegistrationState>,
    /// Start times of calls in the last second (for the CPS limit).
    recent: VecDeque<Instant>,
}

impl TrunkState {
    fn new(trunk: Trunk) -> Self {
        TrunkState {
            trunk,
            health: TrunkHealth::default(),
            figures: TrunkFigures::default(),
            active: 0,
            registration: None,
            recent: VecDeque::new(),
        }
    }

    /// Whether a new call may start on this trunk now (up, below channel and CPS limits).
    pub fn admits(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        self.health.is_up()
            && self.active < self.trunk.max_channels
            && (self.recent.len() as u32) < self.trunk.max_cps
    }

    /// Books a call start.
    pub fn seize(&mut self, now: Instant) {
        self.active += 1;
        self.recent.push_back(now);
        self.figures.attempts += 1;
    }

    /// Releases a call.
    pub fn release(&mut self) {
        self.active = self.active.saturating_sub(1);
    }
}

/// Trunks tried in priority order, weighted among equals.
#[derive(Debug, Clone)]
pub struct TrunkGroup {
    /// The trunks, in config order.
    pub trunks: Vec<TrunkState>,
}

impl TrunkGroup {
    /// A group of trunks.
    pub fn new(trunks: Vec<Trunk>) -> Self {
        TrunkGroup {
            trunks: trunks.into_iter().map(TrunkState::new).collect(),
        }
    }

    /// The order to try trunks for one call: ascending priority; among equal priorities a
    /// weighted draw (`roll` is a random number supplied by the caller), so traffic splits
    /// by weight. Includes every trunk; the caller skips those that do not admit.
    pub fn order(&self, mut roll: u64) -> Vec<usize> {
        let mut by_priority: Vec<usize> = (0..self.trunks.len()).collect();
        by_priority.sort_by_key(|i| self.trunks[*i].trunk.priority);
        let mut out = Vec::with_capacity(by_priority.len());
        let mut i = 0;
        while i < by_priority.len() {
            let p = self.trunks[by_priority[i]].trunk.priority;
            let mut tier: Vec<usize> = by_priority[i..]
                .iter()
                .copied()
                .take_while(|t| self.trunks[*t].trunk.priority == p)
                .collect();
            i += tier.len();
            while !tier.is_empty() {
                let total: u64 = tier
                    .iter()
                    .map(|t| u64::from(self.trunks[*t].trunk.weight.max(1)))
                    .sum();
                let mut pick = roll % total;
                roll = roll.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
                let mut chosen = 0;
                for (k, t) in tier.iter().enumerate() {
                    let w = u64::from(self.trunks[*t].trunk.weight.max(1));
                    if pick < w {
                        chosen = k;
                        break;
                    }
                    pick -= w;
                }
                out.push(tier.remove(chosen));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn trunk(name: &str, port: u16, priority: u32, weight: u32) -> Trunk {
        Trunk {
            name: name.into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            domain: "127.0.0.1".into(),
            credentials: None,
            max_channels: 2,
            max_cps: 3,
            priority,
            weight,
        }
    }

    #[test]
    fn probes_mark_a_trunk_down_and_up_at_their_thresholds() {
        let policy = ProbePolicy {
            failures_to_down: 3,
            successes_to_up: 2,
            ..ProbePolicy::default()
        };
        let mut h = TrunkHealth::default();
        assert_eq!(h.record(408, &policy), None);
        assert_eq!(h.record(408, &policy), None);
        assert_eq!(
            h.record(200, &policy),
            None,
            "a success resets the failure count"
        );
        assert_eq!(h.record(408, &policy), None);
        assert_eq!(h.record(503, &policy), None);
        assert_eq!(h.record(408, &policy), Some(HealthChange::WentDown));
        assert!(!h.is_up());
        assert_eq!(h.record(404, &policy), None, "any answer counts as alive");
        assert_eq!(h.record(200, &policy), Some(HealthChange::CameUp));
    }

    #[test]
    fn lower_priority_goes_first_and_equal_priorities_split_by_weight() {
        let g = TrunkGroup::new(vec![
            trunk("backup", 1, 2, 1),
            trunk("a", 2, 1, 3),
            trunk("b", 3, 1, 1),
        ]);
        let mut first = [0u32; 3];
        for roll in 0..4000u64 {
            let o = g.order(roll.wrapping_mul(0x2545_f491_4f6c_dd1d));
            assert_eq!(o.len(), 3);
            assert_eq!(o[2], 0, "the priority-2 trunk is always last");
            first[o[0]] += 1;
        }
        // a:b = 3:1 within ±5 %.
        let share = f64::from(first[1]) / 4000.0;
        assert!((0.70..0.80).contains(&share), "share of a: {share}");
    }

    #[test]
    fn channel_and_cps_limits_refuse_new_calls() {
        let mut t = TrunkState::new(trunk("a", 1, 1, 1));
        let now = Instant::now();
        assert!(t.admits(now));
        t.seize(now);
        t.seize(now);
        assert!(!t.admits(now), "2 channels busy");
        t.release();
        assert!(t.admits(now));
        t.seize(now);
        t.release();
        t.release();
        assert!(!t.admits(now), "3 calls started in this second");
        assert!(t.admits(now + Duration::from_secs(1)));
        assert_eq!(t.figures.attempts, 3);
    }
}
