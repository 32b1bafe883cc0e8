//! The board under test, real or simulated, with the clock it runs on.
//!
//! [`BoardUnderTest`] is what every check talks to. [`SimBench`] runs the simulated board in
//! virtual time (a run of the whole suite takes milliseconds) and can play the operator's
//! part: it presses the button and watches the LED lines. [`LinuxBench`] runs the real board
//! in real time; what only a person can see is asked of the [`crate::operator::Operator`].

use callgate_board::led::{LedPattern, StatusLed};
use callgate_board::linux::{self, LinuxBoardConfig, LinuxBoardError, LinuxPanel};
use callgate_board::panel::{FrontPanel, PanelError, PanelEvent};
use callgate_board::sim::{SimBoard, SimLm75, SimPin, SimWatchdog};
use callgate_board::watchdog::WatchdogPolicy;
use std::time::{Duration, Instant};

/// The watchdog timing the suite uses: short, so a stall shows within seconds.
pub const TEST_WATCHDOG_POLICY: WatchdogPolicy = WatchdogPolicy {
    kick_interval: Duration::from_millis(500),
    max_report_age: Duration::from_secs(2),
};

/// The hardware timeout of the simulated watchdog.
pub const SIM_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(5);

/// What the checks drive.
pub trait BoardUnderTest {
    /// "simulated board" or the device paths.
    fn describe(&self) -> String;
    /// The bench's clock.
    fn now(&self) -> Duration;
    /// Runs the panel until `until`; `engine` says at each wake-up whether the call engine
    /// reports healthy (`Some(true)`), unhealthy, or nothing (`None`: stalled).
    fn run_until(
        &mut self,
        until: Duration,
        engine: &mut dyn FnMut(Duration) -> Option<bool>,
    ) -> Vec<PanelEvent>;
    /// Shows a pattern.
    fn set_led(&mut self, led: StatusLed, pattern: LedPattern);
    /// Whether the LED's line is driven high, when the bench can see it.
    fn observe_led(&self, led: StatusLed) -> Option<bool>;
    /// Reads the sensor.
    fn read_temperature(&mut self) -> Result<i32, PanelError>;
    /// Presses the button from `at` for `hold`, when the bench can (simulated only).
    fn press_button(&mut self, at: Duration, hold: Duration) -> bool;
    /// Whether the watchdog device fired, when the bench can see it (simulated only).
    fn watchdog_fired(&self) -> Option<bool>;
    /// Re-arms the watchdog after it fired, as a reboot would (simulated only).
    fn rearm_watchdog(&mut self);
}

/// Faults the simulated board can be built with, to prove the checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// The sensor does not answer on the bus.
    SensorAbsent,
    /// The sensor reports an impossible 150 °C.
    SensorImplausible,
    /// The button is stuck: presses never reach the line.
    ButtonStuck,
}

type SimPanel = FrontPanel<SimPin, SimPin, SimLm75, SimWatchdog>;

/// The simulated board in virtual time.
pub struct SimBench {
    panel: SimPanel,
    leds: [SimPin; 4],
    button: SimPin,
    now: Duration,
    presses: Vec<(Duration, Duration)>,
    faults: Vec<SimFault>,
}

impl SimBench {
    /// A simulated board with `faults`.
    pub fn new(faults: &[SimFault]) -> Self {
        let board = SimBoard::new(
            36_500,
            TEST_WATCHDOG_POLICY,
            SIM_WATCHDOG_TIMEOUT,
            Duration::ZERO,
        );
        if faults.contains(&SimFault::SensorAbsent) {
            board.sensor.set_present(false);
        }
        if faults.contains(&SimFault::SensorImplausible) {
            board.sensor.set_millicelsius(150_000);
        }
        SimBench {
            panel: board.panel,
            leds: board.leds,
            button: board.button,
            now: Duration::ZERO,
            presses: Vec::new(),
            faults: faults.to_vec(),
        }
    }
}

impl BoardUnderTest for SimBench {
    fn describe(&self) -> String {
        if self.faults.is_empty() {
            "simulated board".into()
        } else {
            format!("simulated board with faults {:?}", self.faults)
        }
    }

    fn now(&self) -> Duration {
        self.now
    }

    fn run_until(
        &mut self,
        until: Duration,
        engine: &mut dyn FnMut(Duration) -> Option<bool>,
    ) -> Vec<PanelEvent> {
        let mut events = Vec::new();
        loop {
            let next = self.panel.poll_timeout().max(self.now);
            if next > until {
                self.now = until;
                return events;
            }
            self.now = next;
            let stuck = self.faults.contains(&SimFault::ButtonStuck);
            let down = !stuck
                && self
                    .presses
                    .iter()
                    .any(|(a, h)| next >= *a && next < *a + *h);
            self.button.drive(!down);
            self.panel.watchdog_mut().advance(next);
            if let Some(healthy) = engine(next) {
                self.panel.report_health(next, healthy);
            }
            self.panel.handle_timeout(next);
            while let Some(e) = self.panel.poll_event() {
                events.push(e);
            }
        }
    }

    fn set_led(&mut self, led: StatusLed, pattern: LedPattern) {
        self.panel.set_led(self.now, led, pattern);
    }

    fn observe_led(&self, led: StatusLed) -> Option<bool> {
        let i = StatusLed::ALL.iter().position(|l| *l == led)?;
        Some(self.leds[i].is_high_now())
    }

    fn read_temperature(&mut self) -> Result<i32, PanelError> {
        self.panel.read_temperature()
    }

    fn press_button(&mut self, at: Duration, hold: Duration) -> bool {
        self.presses.push((at, hold));
        true
    }

    fn watchdog_fired(&self) -> Option<bool> {
        Some(self.panel.watchdog().fired_at().is_some())
    }

    fn rearm_watchdog(&mut self) {
        *self.panel.watchdog_mut() = SimWatchdog::new(SIM_WATCHDOG_TIMEOUT, self.now);
    }
}

/// The real board in real time. The hardware watchdog is NOT armed by the suite (that is its
/// safe mode): the gate's behaviour is checked, the device's reboot is not exercised.
pub struct LinuxBench {
    panel: LinuxPanel,
    started: Instant,
    config: LinuxBoardConfig,
}

impl LinuxBench {
    /// Opens the real board's parts (without the hardware watchdog).
    pub fn open(mut config: LinuxBoardConfig) -> Result<Self, LinuxBoardError> {
        config.watchdog_device = None;
        let panel = linux::open_panel(&config, TEST_WATCHDOG_POLICY, Duration::ZERO)?;
        Ok(LinuxBench {
            panel,
            started: Instant::now(),
            config,
        })
    }
}

impl BoardUnderTest for LinuxBench {
    fn describe(&self) -> String {
        format!(
            "board on {} and {} (LM75 at {:#04x})",
            self.config.gpio_chip.display(),
            self.config.i2c_bus.display(),
            self.config.lm75_address
        )
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn run_until(
        &mut self,
        until: Duration,
        engine: &mut dyn FnMut(Duration) -> Option<bool>,
    ) -> Vec<PanelEvent> {
        let mut events = Vec::new();
        loop {
            let next = self.panel.poll_timeout();
            if next > until {
                if let Some(rest) = until.checked_sub(self.now()) {
                    std::thread::sleep(rest);
                }
                return events;
            }
            if let Some(wait) = next.checked_sub(self.now()) {
                std::thread::sleep(wait);
            }
            let now = self.now();
            if let Some(healthy) = engine(now) {
                self.panel.report_health(now, healthy);
            }
            self.panel.handle_timeout(now);
            while let Some(e) = self.panel.poll_event() {
                events.push(e);
            }
        }
    }

    fn set_led(&mut self, led: StatusLed, pattern: LedPattern) {
        let now = self.now();
        self.panel.set_led(now, led, pattern);
    }

    fn observe_led(&self, _led: StatusLed) -> Option<bool> {
        None
    }

    fn read_temperature(&mut self) -> Result<i32, PanelError> {
        self.panel.read_temperature()
    }

    fn press_button(&mut self, _at: Duration, _hold: Duration) -> bool {
        false
    }

    fn watchdog_fired(&self) -> Option<bool> {
        None
    }

    fn rearm_watchdog(&mut self) {}
}
