//! The front panel as one unit: the four status LEDs, the button, the temperature sensor and
//! the watchdog gate, driven together with explicit time.
//!
//! The daemon's board task loops: `sleep_until(panel.poll_timeout())`,
//! `panel.handle_timeout(now)`, then drains `panel.poll_event()`. It reports the call
//! engine's health with [`FrontPanel::report_health`] and sets LED patterns from the
//! daemon's state. The same code runs over [`crate::sim`] parts and [`crate::linux`] parts.

use crate::button::{ButtonConfig, ButtonEvent, ButtonMonitor};
use crate::led::{Blinker, LedPattern, StatusLed};
use crate::lm75::Lm75;
use crate::watchdog::{KickDecision, Watchdog, WatchdogGate, WatchdogPolicy};
use core::time::Duration;
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_hal::i2c::I2c;
use std::collections::VecDeque;

/// How often the button is sampled.
pub const BUTTON_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// Something the panel wants the daemon to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanelEvent {
    /// The button did something.
    Button(ButtonEvent),
    /// The watchdog gate started withholding kicks (reported once per change).
    WatchdogWithheld(KickDecision),
    /// Kicks resumed after being withheld.
    WatchdogResumed,
    /// A part failed; the panel keeps going with the rest.
    Fault(PanelError),
}

/// A part of the panel that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PanelError {
    /// An LED's GPIO line could not be written.
    #[error("{led} LED: {detail}")]
    Led { led: &'static str, detail: String },
    /// The button's GPIO line could not be read.
    #[error("button: {0}")]
    Button(String),
    /// The temperature sensor did not answer.
    #[error("temperature sensor: {0}")]
    Sensor(String),
    /// The watchdog device refused a kick.
    #[error("watchdog: {0}")]
    Watchdog(String),
}

/// The parts a panel is built from.
pub struct PanelParts<L, B, I, W> {
    /// LED lines in [`StatusLed::ALL`] order.
    pub leds: [L; 4],
    /// The button line.
    pub button: B,
    /// Whether the button reads low when pressed (a pull-up and a switch to ground).
    pub button_active_low: bool,
    /// The temperature sensor.
    pub sensor: Lm75<I>,
    /// The watchdog device.
    pub watchdog: W,
}

/// The front panel.
pub struct FrontPanel<L, B, I, W> {
    leds: [Blinker<L>; 4],
    button_pin: B,
    button_active_low: bool,
    button: ButtonMonitor,
    next_sample: Duration,
    sensor: Lm75<I>,
    gate: WatchdogGate,
    watchdog: W,
    withholding: bool,
    events: VecDeque<PanelEvent>,
}

impl<L: OutputPin, B: InputPin, I: I2c, W: Watchdog> FrontPanel<L, B, I, W> {
    /// Assembles the panel at `now` (the start of the button's boot window).
    pub fn new(parts: PanelParts<L, B, I, W>, policy: WatchdogPolicy, now: Duration) -> Self {
        let PanelParts {
            leds,
            button,
            button_active_low,
            sensor,
            watchdog,
        } = parts;
        FrontPanel {
            leds: leds.map(Blinker::new),
            button_pin: button,
            button_active_low,
            button: ButtonMonitor::new(ButtonConfig::default(), now),
            next_sample: now,
            sensor,
            gate: WatchdogGate::new(policy, now),
            watchdog,
            withholding: false,
            events: VecDeque::new(),
        }
    }

    fn index(led: StatusLed) -> usize {
        StatusLed::ALL.iter().position(|l| *l == led).unwrap_or(0)
    }

    /// Shows `pattern` on `led` from `now`.
    pub fn set_led(&mut self, now: Duration, led: StatusLed, pattern: LedPattern) {
        if let Err(e) = self.leds[Self::index(led)].set_pattern(now, pattern) {
            self.events.push_back(PanelEvent::Fault(PanelError::Led {
                led: led.name(),
                detail: format!("{e:?}"),
            }));
        }
    }

    /// The pattern `led` shows.
    pub fn led_pattern(&self, led: StatusLed) -> LedPattern {
        self.leds[Self::index(led)].pattern()
    }

    /// The call engine's health check ran at `now`.
    pub fn report_health(&mut self, now: Duration, healthy: bool) {
        self.gate.report_health(now, healthy);
    }

    /// Reads the board temperature in m°C.
    pub fn read_temperature(&mut self) -> Result<i32, PanelError> {
        self.sensor
            .read_millicelsius()
            .map_err(|e| PanelError::Sensor(e.to_string()))
    }

    /// When [`FrontPanel::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Duration {
        self.leds
            .iter()
            .filter_map(Blinker::poll_timeout)
            .chain([self.next_sample, self.gate.poll_timeout()])
            .min()
            .unwrap_or(self.next_sample)
    }

    /// Does everything due at `now`: LED transitions, a button sample, a watchdog kick.
    pub fn handle_timeout(&mut self, now: Duration) {
        for (i, led) in self.leds.iter_mut().enumerate() {
            if led.poll_timeout().is_some_and(|t| t <= now) {
                if let Err(e) = led.handle_timeout(now) {
                    self.events.push_back(PanelEvent::Fault(PanelError::Led {
                        led: StatusLed::ALL[i].name(),
                        detail: format!("{e:?}"),
                    }));
                }
            }
        }
        if self.next_sample <= now {
            self.next_sample = now + BUTTON_SAMPLE_INTERVAL;
            match self.button_pin.is_high() {
                Ok(high) => {
                    self.button
                        .handle_sample(now, high != self.button_active_low);
                    while let Some(ev) = self.button.poll_event() {
                        self.events.push_back(PanelEvent::Button(ev));
                    }
                }
                Err(e) => self
                    .events
                    .push_back(PanelEvent::Fault(PanelError::Button(format!("{e:?}")))),
            }
        }
        if self.gate.poll_timeout() <= now {
            match self.gate.handle_timeout(now) {
                KickDecision::Kick => {
                    if let Err(e) = self.watchdog.kick() {
                        self.events
                            .push_back(PanelEvent::Fault(PanelError::Watchdog(format!("{e:?}"))));
                    }
                    if std::mem::take(&mut self.withholding) {
                        self.events.push_back(PanelEvent::WatchdogResumed);
                    }
                }
                withheld => {
                    if !std::mem::replace(&mut self.withholding, true) {
                        self.events
                            .push_back(PanelEvent::WatchdogWithheld(withheld));
                    }
                }
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PanelEvent> {
        self.events.pop_front()
    }

    /// The watchdog device (for inspection in tests and the acceptance suite).
    pub fn watchdog(&self) -> &W {
        &self.watchdog
    }

    /// Takes the panel apart, giving back the watchdog device (to disarm it on a clean stop).
    pub fn into_watchdog(self) -> W {
        self.watchdog
    }

    /// The watchdog device, mutably.
    pub fn watchdog_mut(&mut self) -> &mut W {
        &mut self.watchdog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimBoard, SimLm75, SimPin, SimWatchdog};

    type SimPanel = FrontPanel<SimPin, SimPin, SimLm75, SimWatchdog>;

    fn sim_panel() -> (SimPanel, [SimPin; 4], SimPin) {
        let b = SimBoard::new(
            38_000,
            WatchdogPolicy::default(),
            Duration::from_secs(30),
            Duration::ZERO,
        );
        (b.panel, b.leds, b.button)
    }

    /// Runs the panel in virtual time until `end`, calling `each` at every wake-up.
    fn run(
        panel: &mut SimPanel,
        end: Duration,
        mut each: impl FnMut(&mut SimPanel, Duration),
    ) -> Vec<PanelEvent> {
        let mut events = Vec::new();
        loop {
            let now = panel.poll_timeout();
            if now > end {
                return events;
            }
            each(panel, now);
            panel.watchdog_mut().advance(now);
            panel.handle_timeout(now);
            while let Some(e) = panel.poll_event() {
                events.push(e);
            }
        }
    }

    #[test]
    fn holding_the_button_through_boot_requests_a_factory_reset() {
        let (mut panel, _, button) = sim_panel();
        button.drive(false); // held from power-on
        let events = run(&mut panel, Duration::from_secs(11), |p, now| {
            p.report_health(now, true)
        });
        assert_eq!(
            events,
            vec![PanelEvent::Button(ButtonEvent::FactoryResetRequested)]
        );
    }

    #[test]
    fn leds_follow_their_patterns_and_the_watchdog_is_fed_while_healthy() {
        let (mut panel, leds, _) = sim_panel();
        panel.set_led(Duration::ZERO, StatusLed::Power, LedPattern::On);
        panel.set_led(Duration::ZERO, StatusLed::Cloud, LedPattern::SlowBlink);
        let events = run(&mut panel, Duration::from_millis(2_250), |p, now| {
            p.report_health(now, true)
        });
        assert!(events.is_empty(), "{events:?}");
        assert!(leds[0].is_high_now());
        assert_eq!(leds[0].writes(), 1, "a steady LED is written once");
        assert_eq!(
            leds[1].writes(),
            5,
            "slow blink: on, off, on, off, on by 2.25 s"
        );
        assert!(leds[1].is_high_now());
        assert!(!leds[2].is_high_now() && !leds[3].is_high_now());
        assert!(panel.watchdog().kicks() >= 1 && panel.watchdog().fired_at().is_none());
    }

    #[test]
    fn a_stalled_engine_stops_the_kicks_and_says_so_once() {
        let (mut panel, _, _) = sim_panel();
        let events = run(&mut panel, Duration::from_secs(120), |p, now| {
            if now < Duration::from_secs(20) {
                p.report_health(now, true);
            }
        });
        let withheld: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, PanelEvent::WatchdogWithheld(_)))
            .collect();
        assert_eq!(withheld.len(), 1, "{events:?}");
        assert!(
            panel.watchdog().fired_at().is_some(),
            "the device fires and reboots the box"
        );
    }

    #[test]
    fn reads_the_temperature() {
        let (mut panel, _, _) = sim_panel();
        assert_eq!(panel.read_temperature().unwrap(), 38_000);
    }
}
