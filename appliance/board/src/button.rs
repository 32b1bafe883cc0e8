//! The front-panel button.
//!
//! A sans-IO monitor fed with pin samples and the time they were taken
//! ([`ButtonMonitor::handle_sample`]); it debounces them and yields [`ButtonEvent`]s from
//! [`ButtonMonitor::poll_event`]:
//! - a short press (released before the hold time): the daemon shows the IP address;
//! - a hold of [`ButtonConfig::hold`] (10 s) that began during the boot window: factory
//!   reset requested;
//! - the same hold later on: a long press, which the daemon only logs — a factory reset is
//!   never triggered by leaning on the box while it runs.

use core::time::Duration;
use std::collections::VecDeque;

/// What the button did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Pressed and released before the hold time.
    ShortPress,
    /// Held for the hold time, the press having begun within the boot window.
    FactoryResetRequested,
    /// Held for the hold time outside the boot window.
    LongPress,
}

/// Timing of the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonConfig {
    /// A level must be stable this long to count.
    pub debounce: Duration,
    /// How long a hold is.
    pub hold: Duration,
    /// How long after start a press still counts as "at boot".
    pub boot_window: Duration,
}

impl Default for ButtonConfig {
    fn default() -> Self {
        ButtonConfig {
            debounce: Duration::from_millis(30),
            hold: Duration::from_secs(10),
            boot_window: Duration::from_secs(5),
        }
    }
}

/// Debounces samples and turns them into events.
#[derive(Debug)]
pub struct ButtonMonitor {
    config: ButtonConfig,
    started: Duration,
    /// The debounced level.
    pressed: bool,
    /// A level seen but not yet stable, with the time it was first seen.
    candidate: Option<(bool, Duration)>,
    /// When the current debounced press began.
    press_began: Option<Duration>,
    hold_reported: bool,
    events: VecDeque<ButtonEvent>,
}

impl ButtonMonitor {
    /// A monitor whose boot window starts at `started`.
    pub fn new(config: ButtonConfig, started: Duration) -> Self {
        ButtonMonitor {
            config,
            started,
            pressed: false,
            candidate: None,
            press_began: None,
            hold_reported: false,
            events: VecDeque::new(),
        }
    }

    /// Feeds one sample: whether the button was down at `now`.
    pub fn handle_sample(&mut self, now: Duration, down: bool) {
        if down == self.pressed {
            self.candidate = None;
        } else {
            match self.candidate {
                Some((level, since)) if level == down => {
                    if now.saturating_sub(since) >= self.config.debounce {
                        self.candidate = None;
                        self.change(since, down);
                    }
                }
                _ => self.candidate = Some((down, now)),
            }
        }
        if let (true, Some(began), false) = (self.pressed, self.press_began, self.hold_reported) {
            if now.saturating_sub(began) >= self.config.hold {
                self.hold_reported = true;
                let at_boot = began.saturating_sub(self.started) <= self.config.boot_window;
                self.events.push_back(if at_boot {
                    ButtonEvent::FactoryResetRequested
                } else {
                    ButtonEvent::LongPress
                });
            }
        }
    }

    fn change(&mut self, at: Duration, down: bool) {
        self.pressed = down;
        if down {
            self.press_began = Some(at);
            self.hold_reported = false;
        } else {
            if !self.hold_reported {
                self.events.push_back(ButtonEvent::ShortPress);
            }
            self.press_began = None;
        }
    }

    /// Whether the debounced button is down.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ButtonEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Samples every 10 ms from `from` to `to` (exclusive) at `level`.
    fn hold_level(m: &mut ButtonMonitor, from: u64, to: u64, level: bool) {
        let mut t = from;
        while t < to {
            m.handle_sample(ms(t), level);
            t += 10;
        }
    }

    #[test]
    fn a_short_press_is_reported_on_release() {
        let mut m = ButtonMonitor::new(ButtonConfig::default(), ms(0));
        hold_level(&mut m, 60_000, 60_300, true);
        assert_eq!(m.poll_event(), None, "nothing until release");
        hold_level(&mut m, 60_300, 60_400, false);
        assert_eq!(m.poll_event(), Some(ButtonEvent::ShortPress));
        assert_eq!(m.poll_event(), None);
    }

    #[test]
    fn contact_bounce_shorter_than_the_debounce_is_ignored() {
        let mut m = ButtonMonitor::new(ButtonConfig::default(), ms(0));
        for t in (10_000..10_200).step_by(10) {
            m.handle_sample(ms(t), (t / 10) % 2 == 0); // toggling every 10 ms
        }
        hold_level(&mut m, 10_200, 10_400, false);
        assert_eq!(m.poll_event(), None);
        assert!(!m.is_pressed());
    }

    #[test]
    fn a_ten_second_hold_at_boot_requests_factory_reset_once() {
        let mut m = ButtonMonitor::new(ButtonConfig::default(), ms(0));
        hold_level(&mut m, 0, 9_990, true);
        assert_eq!(m.poll_event(), None, "not before 10 s");
        hold_level(&mut m, 9_990, 15_000, true);
        assert_eq!(m.poll_event(), Some(ButtonEvent::FactoryResetRequested));
        hold_level(&mut m, 15_000, 15_100, false);
        assert_eq!(
            m.poll_event(),
            None,
            "release after a hold is no short press"
        );
    }

    #[test]
    fn the_same_hold_while_running_is_only_a_long_press() {
        let mut m = ButtonMonitor::new(ButtonConfig::default(), ms(0));
        hold_level(&mut m, 3_600_000, 3_611_000, true);
        assert_eq!(m.poll_event(), Some(ButtonEvent::LongPress));
    }
}
