//! The watchdog gate: the hardware watchdog (and systemd's) is kicked only while the call
//! engine proves it is alive and healthy.
//!
//! [`WatchdogGate`] is a sans-IO core. The engine reports its health check with
//! [`WatchdogGate::report_health`]; the driver calls [`WatchdogGate::handle_timeout`] when
//! [`WatchdogGate::poll_timeout`] comes due and kicks the device only on
//! [`KickDecision::Kick`]. When the engine stalls (no report for `max_report_age`) or reports
//! unhealthy, the gate withholds kicks, the device times out and the box reboots — that is
//! the point.
//!
//! embedded-hal has no watchdog trait; devices implement [`Watchdog`] here: the Linux
//! `/dev/watchdog` and systemd's `WATCHDOG=1` notification live in [`crate::linux`], a
//! virtual-time device in [`crate::sim`].

use core::time::Duration;

/// A watchdog device.
pub trait Watchdog {
    /// Why a kick failed.
    type Error: core::fmt::Debug;
    /// Resets the device's countdown.
    fn kick(&mut self) -> Result<(), Self::Error>;
}

/// Timing of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogPolicy {
    /// How often to kick while healthy (well under the device's timeout).
    pub kick_interval: Duration,
    /// A health report older than this means the engine has stalled.
    pub max_report_age: Duration,
}

impl Default for WatchdogPolicy {
    fn default() -> Self {
        WatchdogPolicy {
            kick_interval: Duration::from_secs(5),
            max_report_age: Duration::from_secs(15),
        }
    }
}

/// What to do at a kick time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickDecision {
    /// Kick the device.
    Kick,
    /// Do not kick: the engine's last report was unhealthy.
    WithholdUnhealthy,
    /// Do not kick: the engine has not reported since the given time (or ever).
    WithholdStalled { last_report: Option<Duration> },
}

/// Decides, kick by kick, whether the watchdog may be fed.
#[derive(Debug)]
pub struct WatchdogGate {
    policy: WatchdogPolicy,
    last_report: Option<(Duration, bool)>,
    next_kick: Duration,
}

impl WatchdogGate {
    /// A gate whose first kick time is `now`.
    pub fn new(policy: WatchdogPolicy, now: Duration) -> Self {
        WatchdogGate {
            policy,
            last_report: None,
            next_kick: now,
        }
    }

    /// The engine's health check ran at `now` and passed (`true`) or failed.
    pub fn report_health(&mut self, now: Duration, healthy: bool) {
        self.last_report = Some((now, healthy));
    }

    /// When [`WatchdogGate::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Duration {
        self.next_kick
    }

    /// The decision for `now`; schedules the next kick time.
    pub fn handle_timeout(&mut self, now: Duration) -> KickDecision {
        if now < self.next_kick {
            // Early wake-up: nothing due, and no kick means nothing changes for the device.
            return self.decide(now);
        }
        self.next_kick = now + self.policy.kick_interval;
        self.decide(now)
    }

    fn decide(&self, now: Duration) -> KickDecision {
        match self.last_report {
            Some((at, _)) if now.saturating_sub(at) > self.policy.max_report_age => {
                KickDecision::WithholdStalled {
                    last_report: Some(at),
                }
            }
            Some((_, true)) => KickDecision::Kick,
            Some((_, false)) => KickDecision::WithholdUnhealthy,
            None => KickDecision::WithholdStalled { last_report: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimWatchdog;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Runs gate + device in virtual time; the engine reports healthy at each time in
    /// `reports` (seconds). Returns the kick times and whether the device fired.
    fn run(reports: &[u64], end: u64) -> (Vec<u64>, Option<Duration>) {
        let mut gate = WatchdogGate::new(WatchdogPolicy::default(), s(0));
        let mut dog = SimWatchdog::new(s(30), s(0));
        let mut kicks = Vec::new();
        let mut reports = reports.iter().copied().peekable();
        let mut now = s(0);
        while now <= s(end) {
            while reports.peek().is_some_and(|r| s(*r) <= now) {
                gate.report_health(s(reports.next().unwrap()), true);
            }
            dog.advance(now);
            if gate.poll_timeout() <= now && gate.handle_timeout(now) == KickDecision::Kick {
                dog.kick().unwrap();
                kicks.push(now.as_secs());
            }
            now += s(1);
        }
        (kicks, dog.fired_at())
    }

    #[test]
    fn a_healthy_engine_keeps_the_watchdog_fed() {
        let reports: Vec<u64> = (0..=120).step_by(2).collect();
        let (kicks, fired) = run(&reports, 120);
        assert_eq!(kicks.len(), 25, "every 5 s over 120 s: {kicks:?}");
        assert_eq!(fired, None);
    }

    #[test]
    fn kicks_stop_once_the_engine_stalls_and_the_device_fires() {
        // Reports every 2 s until t=40, then nothing: the engine hung.
        let reports: Vec<u64> = (0..=40).step_by(2).collect();
        let (kicks, fired) = run(&reports, 120);
        let last_kick = *kicks.last().unwrap();
        assert!(
            last_kick <= 55,
            "no kick later than 15 s after the last report: {kicks:?}"
        );
        assert_eq!(
            fired,
            Some(s(last_kick + 30)),
            "fires one timeout after the last kick"
        );
    }

    #[test]
    fn an_unhealthy_report_withholds_kicks_until_health_returns() {
        let mut gate = WatchdogGate::new(WatchdogPolicy::default(), s(0));
        gate.report_health(s(0), true);
        assert_eq!(gate.handle_timeout(s(0)), KickDecision::Kick);
        gate.report_health(s(3), false);
        assert_eq!(gate.handle_timeout(s(5)), KickDecision::WithholdUnhealthy);
        gate.report_health(s(8), true);
        assert_eq!(gate.handle_timeout(s(10)), KickDecision::Kick);
    }

    #[test]
    fn no_report_at_all_is_a_stall() {
        let mut gate = WatchdogGate::new(WatchdogPolicy::default(), s(0));
        assert_eq!(
            gate.handle_timeout(s(0)),
            KickDecision::WithholdStalled { last_report: None }
        );
    }
}
