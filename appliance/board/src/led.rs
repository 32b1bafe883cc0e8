//! Status LEDs and their blink patterns.
//!
//! A [`Blinker`] owns one LED pin and a [`LedPattern`]. It is a sans-IO core: the driver
//! calls [`Blinker::handle_timeout`] with the current time whenever [`Blinker::poll_timeout`]
//! comes due (or earlier); the blinker writes the pin only when the level must change.
//!
//! What the four LEDs say (the daemon chooses the pattern; see [`StatusLed`]):
//!
//! | LED | on | slow blink (1 Hz) | fast blink (4 Hz) | heartbeat | off |
//! |---|---|---|---|---|---|
//! | power | running | starting | shutting down / factory reset | — | no power |
//! | cloud | linked | connecting | not enrolled | — | link disabled |
//! | trunks | all up | some down | all down | — | none configured |
//! | recording | recording a call | — | disk alarm | idle, healthy | recording off |

use core::time::Duration;
use embedded_hal::digital::OutputPin;

/// The four front-panel status LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusLed {
    /// Power / daemon state.
    Power,
    /// Link to the coordinator.
    Cloud,
    /// Carrier trunk health.
    Trunks,
    /// Recording state and disk health.
    Recording,
}

impl StatusLed {
    /// All four, in panel order.
    pub const ALL: [StatusLed; 4] = [
        StatusLed::Power,
        StatusLed::Cloud,
        StatusLed::Trunks,
        StatusLed::Recording,
    ];

    /// The LED's name as printed on the panel and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StatusLed::Power => "power",
            StatusLed::Cloud => "cloud",
            StatusLed::Trunks => "trunks",
            StatusLed::Recording => "recording",
        }
    }
}

/// What an LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Lit.
    On,
    /// 500 ms on, 500 ms off.
    SlowBlink,
    /// 125 ms on, 125 ms off.
    FastBlink,
    /// Two 100 ms flashes 200 ms apart, once a second.
    Heartbeat,
}

impl LedPattern {
    /// The pattern as (lit, how long) steps repeated forever; empty for a steady level.
    fn steps(self) -> &'static [(bool, u64)] {
        match self {
            LedPattern::Off | LedPattern::On => &[],
            LedPattern::SlowBlink => &[(true, 500), (false, 500)],
            LedPattern::FastBlink => &[(true, 125), (false, 125)],
            LedPattern::Heartbeat => &[(true, 100), (false, 100), (true, 100), (false, 700)],
        }
    }

    /// Whether the LED is lit `since` after the pattern started, and when that level ends
    /// (relative to the pattern's start); `None` for a steady level.
    pub fn level_at(self, since: Duration) -> (bool, Option<Duration>) {
        let steps = self.steps();
        if steps.is_empty() {
            return (self == LedPattern::On, None);
        }
        let cycle: u64 = steps.iter().map(|s| s.1).sum();
        let ms = since.as_millis() as u64;
        let cycle_start = ms - ms % cycle;
        let mut t = cycle_start;
        for &(lit, len) in steps {
            if ms < t + len {
                return (lit, Some(Duration::from_millis(t + len)));
            }
            t += len;
        }
        unreachable!("ms % cycle < cycle, so some step contains ms")
    }
}

/// One LED pin driven through a pattern.
#[derive(Debug)]
pub struct Blinker<P> {
    pin: P,
    pattern: LedPattern,
    started: Duration,
    lit: Option<bool>,
    next_change: Option<Duration>,
}

impl<P: OutputPin> Blinker<P> {
    /// A blinker for `pin`, dark until a pattern is set.
    pub fn new(pin: P) -> Self {
        Blinker {
            pin,
            pattern: LedPattern::Off,
            started: Duration::ZERO,
            lit: None,
            next_change: Some(Duration::ZERO),
        }
    }

    /// Switches to `pattern` from `now`. Setting the pattern already shown keeps its phase.
    pub fn set_pattern(&mut self, now: Duration, pattern: LedPattern) -> Result<(), P::Error> {
        if pattern == self.pattern && self.lit.is_some() {
            return Ok(());
        }
        self.pattern = pattern;
        self.started = now;
        self.apply(now)
    }

    /// The pattern shown now.
    pub fn pattern(&self) -> LedPattern {
        self.pattern
    }

    /// Whether the LED is lit (`None` before the first update).
    pub fn is_lit(&self) -> Option<bool> {
        self.lit
    }

    /// When [`Blinker::handle_timeout`] must next be called; `None` for a steady level.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_change
    }

    /// Brings the pin to the level the pattern has at `now`.
    pub fn handle_timeout(&mut self, now: Duration) -> Result<(), P::Error> {
        self.apply(now)
    }

    fn apply(&mut self, now: Duration) -> Result<(), P::Error> {
        let (lit, until) = self.pattern.level_at(now.saturating_sub(self.started));
        if self.lit != Some(lit) {
            if lit {
                self.pin.set_high()?;
            } else {
                self.pin.set_low()?;
            }
            self.lit = Some(lit);
        }
        self.next_change = until.map(|u| self.started + u);
        Ok(())
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives `blinker` through virtual time until `end`, waking exactly when asked.
    fn run_until<P: OutputPin>(blinker: &mut Blinker<P>, end: Duration) -> Vec<Duration> {
        let mut wakes = Vec::new();
        while let Some(t) = blinker.poll_timeout() {
            if t > end {
                break;
            }
            blinker.handle_timeout(t).unwrap();
            wakes.push(t);
        }
        wakes
    }

    #[test]
    fn slow_blink_toggles_every_500_ms_and_writes_only_on_change() {
        let pin = PinMock::new(&[
            Transaction::set(State::High),
            Transaction::set(State::Low),
            Transaction::set(State::High),
            Transaction::set(State::Low),
        ]);
        let mut b = Blinker::new(pin);
        b.set_pattern(ms(0), LedPattern::SlowBlink).unwrap();
        let wakes = run_until(&mut b, ms(1_999));
        assert_eq!(wakes, vec![ms(500), ms(1_000), ms(1_500)]);
        b.release().done();
    }

    #[test]
    fn heartbeat_flashes_twice_a_second() {
        let mut expected = Vec::new();
        for _ in 0..2 {
            for s in [State::High, State::Low, State::High, State::Low] {
                expected.push(Transaction::set(s));
            }
        }
        let pin = PinMock::new(&expected);
        let mut b = Blinker::new(pin);
        b.set_pattern(ms(0), LedPattern::Heartbeat).unwrap();
        run_until(&mut b, ms(1_999));
        b.release().done();
    }

    #[test]
    fn steady_patterns_need_no_wakeups_and_repeating_a_pattern_keeps_its_phase() {
        let pin = PinMock::new(&[
            Transaction::set(State::High),
            Transaction::set(State::Low),
            Transaction::set(State::High),
        ]);
        let mut b = Blinker::new(pin);
        b.set_pattern(ms(10), LedPattern::On).unwrap();
        assert_eq!(b.poll_timeout(), None);
        b.set_pattern(ms(20), LedPattern::FastBlink).unwrap(); // already lit: no write
        b.set_pattern(ms(100), LedPattern::FastBlink).unwrap(); // same pattern: phase kept
        assert_eq!(b.poll_timeout(), Some(ms(145)));
        b.handle_timeout(ms(145)).unwrap(); // low
        b.handle_timeout(ms(270)).unwrap(); // high
        b.release().done();
    }

    #[test]
    fn a_late_wakeup_lands_on_the_right_level() {
        // The driver overslept 1.2 s into a slow blink: one write, to the level of that time.
        let pin = PinMock::new(&[Transaction::set(State::High)]);
        let mut b = Blinker::new(pin);
        b.set_pattern(ms(0), LedPattern::SlowBlink).unwrap();
        b.handle_timeout(ms(1_200)).unwrap();
        assert_eq!(b.is_lit(), Some(true));
        assert_eq!(b.poll_timeout(), Some(ms(1_500)));
        b.release().done();
    }
}
