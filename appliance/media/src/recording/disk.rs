//! The disk guard: recordings must never be lost to a full disk, so the box raises an alarm
//! at a high-water mark and stops starting new calls before the disk is full, while calls in
//! progress keep recording.
//!
//! Sans-IO: the driver measures the filesystem and calls [`DiskGuard::observe`]; the guard says
//! when the state changes. Hysteresis keeps it from flapping around a threshold.

/// How full the recordings filesystem may get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskThresholds {
    /// Fraction used (0–1) at which the alarm is raised.
    pub alarm_at: f64,
    /// Fraction used at which no new call may start.
    pub refuse_at: f64,
    /// How far below a threshold usage must fall before the state steps back.
    pub hysteresis: f64,
}

impl Default for DiskThresholds {
    fn default() -> Self {
        DiskThresholds {
            alarm_at: 0.85,
            refuse_at: 0.95,
            hysteresis: 0.02,
        }
    }
}

/// What the box may do given its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskState {
    /// Below the high-water mark.
    Healthy,
    /// Above the high-water mark: alarm raised, calls still start.
    Alarm,
    /// Nearly full: no new call starts; calls in progress keep recording.
    RefuseNewCalls,
}

/// Tracks the recordings filesystem against its thresholds.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    thresholds: DiskThresholds,
    state: DiskState,
}

impl DiskGuard {
    /// A guard that assumes a healthy disk until told otherwise.
    pub fn new(thresholds: DiskThresholds) -> DiskGuard {
        DiskGuard {
            thresholds,
            state: DiskState::Healthy,
        }
    }

    /// The current state.
    pub fn state(&self) -> DiskState {
        self.state
    }

    /// Takes a measurement; returns the new state when it changed. A filesystem reporting zero
    /// size is treated as full (it cannot hold a recording).
    pub fn observe(&mut self, used_bytes: u64, total_bytes: u64) -> Option<DiskState> {
        let used = if total_bytes == 0 {
            1.0
        } else {
            used_bytes as f64 / total_bytes as f64
        };
        let t = self.thresholds;
        let rising = if used >= t.refuse_at {
            DiskState::RefuseNewCalls
        } else if used >= t.alarm_at {
            DiskState::Alarm
        } else {
            DiskState::Healthy
        };
        let next = if rising >= self.state {
            rising
        } else {
            // Step down only once usage is clearly below the threshold we are at.
            match self.state {
                DiskState::RefuseNewCalls if used < t.refuse_at - t.hysteresis => {
                    if used >= t.alarm_at - t.hysteresis {
                        DiskState::Alarm
                    } else {
                        DiskState::Healthy
                    }
                }
                DiskState::Alarm if used < t.alarm_at - t.hysteresis => DiskState::Healthy,
                s => s,
            }
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_up_raises_the_alarm_then_refuses_new_calls() {
        let mut g = DiskGuard::new(DiskThresholds::default());
        assert_eq!(g.observe(50, 100), None);
        assert_eq!(g.observe(86, 100), Some(DiskState::Alarm));
        assert_eq!(g.observe(90, 100), None);
        assert_eq!(g.observe(96, 100), Some(DiskState::RefuseNewCalls));
        assert_eq!(g.state(), DiskState::RefuseNewCalls);
    }

    #[test]
    fn freeing_space_steps_back_only_past_the_hysteresis() {
        let mut g = DiskGuard::new(DiskThresholds::default());
        g.observe(96, 100);
        assert_eq!(
            g.observe(94, 100),
            None,
            "still within 2 % of the refusal mark"
        );
        assert_eq!(g.observe(92, 100), Some(DiskState::Alarm));
        assert_eq!(g.observe(84, 100), None);
        assert_eq!(g.observe(82, 100), Some(DiskState::Healthy));
        let mut g = DiskGuard::new(DiskThresholds::default());
        g.observe(99, 100);
        assert_eq!(
            g.observe(10, 100),
            Some(DiskState::Healthy),
            "a big clean-up goes straight down"
        );
    }

    #[test]
    fn a_zero_sized_filesystem_counts_as_full() {
        let mut g = DiskGuard::new(DiskThresholds::default());
        assert_eq!(g.observe(0, 0), Some(DiskState::RefuseNewCalls));
    }
}
