//! The disk guard: recordings must never be lost to a full disk, so the box raises an alarm
//! at a high-water mark and stops starting new calls before the disk is full, while calls in
//! progress keep recording.
//!
//! Sans-IO: the driver measures the filesystem and calls [`DiskGuard::observe`]; the guard says
//! when the state changes. Hysteresis keeps it from flapping around a threshold.
//!
//! Two rules, whichever trips first: a share of the filesystem used (what a percentage means
//! on the box's own card) and a floor of free bytes (on a large disk 95 % used can still leave
//! gigabytes, on a small card it can leave too little for the calls in progress).

/// How full the recordings filesystem may get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskThresholds {
    /// Fraction used (0–1) at which the alarm is raised.
    pub alarm_at: f64,
    /// Fraction used at which no new call may start.
    pub refuse_at: f64,
    /// How far below a threshold usage must fall before the state steps back.
    pub hysteresis: f64,
    /// No new call starts while fewer bytes than this are free (0: no floor). The alarm is
    /// raised below twice the floor; after a refusal, free space must climb a tenth above the
    /// floor before calls start again.
    pub refuse_below_free_bytes: u64,
}

impl Default for DiskThresholds {
    fn default() -> Self {
        DiskThresholds {
            alarm_at: 0.85,
            refuse_at: 0.95,
            hysteresis: 0.02,
            refuse_below_free_bytes: 0,
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
        let free = total_bytes.saturating_sub(used_bytes);
        let floor = t.refuse_below_free_bytes;
        let rising = if used >= t.refuse_at || free < floor {
            DiskState::RefuseNewCalls
        } else if used >= t.alarm_at || free < floor.saturating_mul(2) {
            DiskState::Alarm
        } else {
            DiskState::Healthy
        };
        let next = if rising >= self.state {
            rising
        } else {
            // Step down only once usage is clearly below the threshold we are at.
            match self.state {
                DiskState::RefuseNewCalls
                    if used < t.refuse_at - t.hysteresis
                        && free >= floor.saturating_add(floor / 10) =>
                {
                    if used >= t.alarm_at - t.hysteresis || free < floor.saturating_mul(2) {
                        DiskState::Alarm
                    } else {
                        DiskState::Healthy
                    }
                }
                DiskState::Alarm
                    if used < t.alarm_at - t.hysteresis && free >= floor.saturating_mul(2) =>
                {
                    DiskState::Healthy
                }
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
    fn a_free_space_floor_refuses_below_it_and_alarms_below_twice_it() {
        let floor = DiskThresholds {
            refuse_below_free_bytes: 1_000,
            ..DiskThresholds::default()
        };
        let mut g = DiskGuard::new(floor);
        // 10 % used of a large disk: healthy by percent, judged by the floor.
        assert_eq!(g.observe(1_000, 10_000), None);
        assert_eq!(
            g.observe(98_500, 100_000),
            Some(DiskState::RefuseNewCalls),
            "98.5 % used of 100 kB trips the percent rule too"
        );
        let big = 1u64 << 40;
        let mut g = DiskGuard::new(DiskThresholds {
            alarm_at: 1.0,
            refuse_at: 1.0,
            hysteresis: 0.0,
            refuse_below_free_bytes: 1_000,
        });
        assert_eq!(g.observe(big - 1_500, big), Some(DiskState::Alarm));
        assert_eq!(g.observe(big - 999, big), Some(DiskState::RefuseNewCalls));
        assert_eq!(
            g.observe(big - 1_050, big),
            None,
            "back above the floor, but not a tenth above it"
        );
        assert_eq!(g.observe(big - 1_100, big), Some(DiskState::Alarm));
        assert_eq!(g.observe(big - 1_999, big), None);
        assert_eq!(g.observe(big - 2_000, big), Some(DiskState::Healthy));
    }

    #[test]
    fn a_zero_sized_filesystem_counts_as_full() {
        let mut g = DiskGuard::new(DiskThresholds::default());
        assert_eq!(g.observe(0, 0), Some(DiskState::RefuseNewCalls));
    }
}
