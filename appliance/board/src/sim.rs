//! The simulated board: what the daemon, the demo and CI drive when there is no hardware.
//!
//! - [`SimPin`]: a GPIO line whose level (and every write) can be inspected and, for inputs,
//!   set by the test or the demo ("press the button");
//! - [`SimLm75`]: an I²C bus with an LM75B on it that answers the real register protocol, so
//!   the [`crate::lm75`] driver runs unchanged against it;
//! - [`SimWatchdog`]: a watchdog in virtual time that records when it would have fired.
//!
//! Handles are cheap clones sharing state, so the test keeps one end and the board the other.

use crate::lm75::{Lm75, Resolution};
use crate::panel::{FrontPanel, PanelParts};
use crate::watchdog::{Watchdog, WatchdogPolicy};
use core::convert::Infallible;
use core::time::Duration;
use embedded_hal::digital::{ErrorType as PinErrorType, InputPin, OutputPin};
use embedded_hal::i2c::{
    ErrorKind, ErrorType as I2cErrorType, I2c, NoAcknowledgeSource, Operation,
};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a simulated pin in a state worth refusing.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct PinState {
    high: bool,
    writes: u64,
}

/// A simulated GPIO line.
#[derive(Debug, Clone, Default)]
pub struct SimPin(Arc<Mutex<PinState>>);

impl SimPin {
    /// A line at low level.
    pub fn new() -> Self {
        Self::default()
    }
    /// The current level.
    pub fn is_high_now(&self) -> bool {
        lock(&self.0).high
    }
    /// Drives the line from outside (an input's external signal).
    pub fn drive(&self, high: bool) {
        lock(&self.0).high = high;
    }
    /// How many times the board wrote the line.
    pub fn writes(&self) -> u64 {
        lock(&self.0).writes
    }
}

impl PinErrorType for SimPin {
    type Error = Infallible;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        let mut s = lock(&self.0);
        s.high = false;
        s.writes += 1;
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        let mut s = lock(&self.0);
        s.high = true;
        s.writes += 1;
        Ok(())
    }
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(lock(&self.0).high)
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!lock(&self.0).high)
    }
}

#[derive(Debug)]
struct Lm75Regs {
    address: u8,
    pointer: u8,
    temp_millicelsius: i32,
    conf: u8,
    thyst: [u8; 2],
    tos: [u8; 2],
    present: bool,
}

/// An I²C bus with one simulated LM75B.
#[derive(Debug, Clone)]
pub struct SimLm75(Arc<Mutex<Lm75Regs>>);

impl SimLm75 {
    /// A sensor at `address` reading `millicelsius`, with the part's power-on defaults
    /// (T_os 80 °C, T_hyst 75 °C).
    pub fn new(address: u8, millicelsius: i32) -> Self {
        SimLm75(Arc::new(Mutex::new(Lm75Regs {
            address,
            pointer: 0,
            temp_millicelsius: millicelsius,
            conf: 0,
            thyst: [0x4B, 0x00],
            tos: [0x50, 0x00],
            present: true,
        })))
    }
    /// Changes the temperature the sensor reports.
    pub fn set_millicelsius(&self, millicelsius: i32) {
        lock(&self.0).temp_millicelsius = millicelsius;
    }
    /// Unplugs (or replugs) the sensor: an absent part does not acknowledge its address.
    pub fn set_present(&self, present: bool) {
        lock(&self.0).present = present;
    }
    /// The configuration register.
    pub fn config(&self) -> u8 {
        lock(&self.0).conf
    }
}

impl I2cErrorType for SimLm75 {
    type Error = ErrorKind;
}

impl I2c for SimLm75 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        let mut r = lock(&self.0);
        if address != r.address || !r.present {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    let Some((&pointer, data)) = bytes.split_first() else {
                        continue;
                    };
                    r.pointer = pointer & 0x03;
                    match (r.pointer, data) {
                        (0x01, [conf, ..]) => r.conf = *conf,
                        (0x02, [msb, lsb, ..]) => r.thyst = [*msb, *lsb],
                        (0x03, [msb, lsb, ..]) => r.tos = [*msb, *lsb],
                        _ => {}
                    }
                }
                Operation::Read(buf) => {
                    let value: [u8; 2] = match r.pointer {
                        0x00 => {
                            // 11 significant bits, 0.125 °C per step, left-justified.
                            let steps =
                                (r.temp_millicelsius.div_euclid(125)).clamp(-1024, 1023) as i16;
                            (steps << 5).to_be_bytes()
                        }
                        0x01 => [r.conf, r.conf],
                        0x02 => r.thyst,
                        _ => r.tos,
                    };
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = value[i % 2];
                    }
                }
            }
        }
        Ok(())
    }
}

/// A watchdog in virtual time: it "fires" when not kicked for its timeout.
#[derive(Debug)]
pub struct SimWatchdog {
    timeout: Duration,
    last_kick: Duration,
    now: Duration,
    kicks: u64,
    fired_at: Option<Duration>,
}

impl SimWatchdog {
    /// A device armed at `now` with `timeout`.
    pub fn new(timeout: Duration, now: Duration) -> Self {
        SimWatchdog {
            timeout,
            last_kick: now,
            now,
            kicks: 0,
            fired_at: None,
        }
    }
    /// Moves the device's clock to `now`; it fires if the countdown ran out.
    pub fn advance(&mut self, now: Duration) {
        self.now = now;
        if self.fired_at.is_none() && now.saturating_sub(self.last_kick) >= self.timeout {
            self.fired_at = Some(self.last_kick + self.timeout);
        }
    }
    /// When it fired (the box would have rebooted), if it did.
    pub fn fired_at(&self) -> Option<Duration> {
        self.fired_at
    }
    /// Kicks received.
    pub fn kicks(&self) -> u64 {
        self.kicks
    }
}

/// A kick after the device fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyFired;

impl Watchdog for SimWatchdog {
    type Error = AlreadyFired;
    fn kick(&mut self) -> Result<(), AlreadyFired> {
        if self.fired_at.is_some() {
            return Err(AlreadyFired);
        }
        self.last_kick = self.now;
        self.kicks += 1;
        Ok(())
    }
}

/// A whole simulated board: the panel, and the handles that play the world around it.
pub struct SimBoard {
    /// The panel, as the daemon drives it.
    pub panel: FrontPanel<SimPin, SimPin, SimLm75, SimWatchdog>,
    /// The four LED lines, in [`crate::led::StatusLed::ALL`] order.
    pub leds: [SimPin; 4],
    /// The button line (high = released: a pull-up and a switch to ground).
    pub button: SimPin,
    /// The sensor's bus.
    pub sensor: SimLm75,
}

impl SimBoard {
    /// A board at `millicelsius` with a watchdog of `watchdog_timeout`, assembled at `now`.
    pub fn new(
        millicelsius: i32,
        policy: WatchdogPolicy,
        watchdog_timeout: Duration,
        now: Duration,
    ) -> Self {
        let leds = [SimPin::new(), SimPin::new(), SimPin::new(), SimPin::new()];
        let button = SimPin::new();
        button.drive(true);
        let sensor = SimLm75::new(0x48, millicelsius);
        let panel = FrontPanel::new(
            PanelParts {
                leds: leds.clone(),
                button: button.clone(),
                button_active_low: true,
                sensor: Lm75::new(sensor.clone(), 0x48, Resolution::Bits11)
                    .expect("0x48 is an LM75 address"),
                watchdog: SimWatchdog::new(watchdog_timeout, now),
            },
            policy,
            now,
        );
        SimBoard {
            panel,
            leds,
            button,
            sensor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm75::Lm75Error;

    #[test]
    fn the_lm75_driver_reads_the_simulated_sensor() {
        let bus = SimLm75::new(0x48, 41_250);
        let mut s = Lm75::new(bus.clone(), 0x48, Resolution::Bits11).unwrap();
        assert_eq!(s.read_millicelsius().unwrap(), 41_250);
        bus.set_millicelsius(-10_000);
        assert_eq!(s.read_millicelsius().unwrap(), -10_000);
        s.set_shutdown(true).unwrap();
        assert_eq!(bus.config() & 1, 1);
    }

    #[test]
    fn an_absent_sensor_does_not_acknowledge() {
        let bus = SimLm75::new(0x48, 20_000);
        bus.set_present(false);
        let mut s = Lm75::new(bus, 0x48, Resolution::Bits11).unwrap();
        assert_eq!(
            s.read_millicelsius(),
            Err(Lm75Error::Bus(ErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address
            )))
        );
    }
}
