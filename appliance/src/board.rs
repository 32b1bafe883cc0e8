//! The daemon's board task: drives the front panel (`callgate-board`) on a thread of its own
//! in real time, feeds the watchdog gate with the call engine's health, shows the daemon's
//! state on the LEDs, and turns button presses and sensor readings into logs and metrics.
//!
//! Owns the panel; talks to the rest of the daemon only through [`BoardTask`]'s methods.
//! Must not block: embedded-hal calls are synchronous, so they stay on this thread.

use crate::config::{BoardConfig, BoardKind};
use callgate_board::button::ButtonEvent;
use callgate_board::led::{LedPattern, StatusLed};
use callgate_board::linux::{self, LinuxBoardConfig, LinuxBoardError};
use callgate_board::lm75::Resolution;
use callgate_board::panel::{FrontPanel, PanelEvent};
use callgate_board::sim::SimBoard;
use callgate_board::watchdog::{Watchdog, WatchdogPolicy};
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_hal::i2c::I2c;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the temperature is read.
pub const TEMPERATURE_INTERVAL: Duration = Duration::from_secs(30);

enum Command {
    Led(StatusLed, LedPattern),
    Health(bool),
    Stop,
}

/// The last temperature the board read, m°C, shared with the status pages.
pub type TemperatureCell = Arc<Mutex<Option<i32>>>;

/// A handle to the running board thread.
pub struct BoardTask {
    tx: mpsc::Sender<Command>,
    join: Option<JoinHandle<()>>,
    temperature: TemperatureCell,
    factory_reset: Arc<tokio::sync::Notify>,
}

impl BoardTask {
    /// Opens the configured board and starts its thread; `None` for `kind = "none"`.
    pub fn start(config: &BoardConfig) -> Result<Option<BoardTask>, LinuxBoardError> {
        let (tx, rx) = mpsc::channel();
        let policy = WatchdogPolicy::default();
        let temperature: TemperatureCell = Arc::new(Mutex::new(None));
        let cell = temperature.clone();
        let factory_reset = Arc::new(tokio::sync::Notify::new());
        let reset = factory_reset.clone();
        let join = match config.kind {
            BoardKind::None => return Ok(None),
            BoardKind::Simulated => {
                let board = SimBoard::new(36_500, policy, Duration::from_secs(60), Duration::ZERO);
                spawn(board.panel, rx, cell, reset, |_| Ok(()))
            }
            BoardKind::Linux => {
                let led_lines: [u32; 4] =
                    config.led_lines.clone().try_into().unwrap_or([0, 0, 0, 0]);
                let linux_config = LinuxBoardConfig {
                    gpio_chip: config.gpio_chip.clone(),
                    led_lines,
                    button_line: config.button_line,
                    button_active_low: config.button_active_low,
                    i2c_bus: config.i2c_bus.clone(),
                    lm75_address: config.lm75_address,
                    lm75_resolution: if config.lm75_bits == 9 {
                        Resolution::Bits9
                    } else {
                        Resolution::Bits11
                    },
                    watchdog_device: config.watchdog_device.clone(),
                };
                let panel = linux::open_panel(&linux_config, policy, Duration::ZERO)?;
                spawn(panel, rx, cell, reset, |dog: linux::LinuxWatchdog| {
                    dog.disarm()
                })
            }
        };
        tracing::info!(kind = ?config.kind, "board started");
        Ok(Some(BoardTask {
            tx,
            join: Some(join),
            temperature,
            factory_reset,
        }))
    }

    /// The cell holding the last temperature reading.
    pub fn temperature(&self) -> TemperatureCell {
        self.temperature.clone()
    }

    /// Notified when the button was held through boot: the daemon performs the factory
    /// reset ([`crate::reset`]) and restarts.
    pub fn factory_reset_requested(&self) -> Arc<tokio::sync::Notify> {
        self.factory_reset.clone()
    }

    /// Shows `pattern` on `led`.
    pub fn set_led(&self, led: StatusLed, pattern: LedPattern) {
        let _ = self.tx.send(Command::Led(led, pattern));
    }

    /// The call engine's health check ran and passed (`true`) or failed.
    pub fn report_health(&self, healthy: bool) {
        let _ = self.tx.send(Command::Health(healthy));
    }

    /// Stops the thread; on a real board the hardware watchdog is disarmed (clean stop).
    pub fn stop(mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

fn spawn<L, B, I, W>(
    panel: FrontPanel<L, B, I, W>,
    rx: mpsc::Receiver<Command>,
    temperature: TemperatureCell,
    factory_reset: Arc<tokio::sync::Notify>,
    on_clean_stop: impl FnOnce(W) -> std::io::Result<()> + Send + 'static,
) -> JoinHandle<()>
where
    L: OutputPin + Send + 'static,
    B: InputPin + Send + 'static,
    I: I2c + Send + 'static,
    W: Watchdog + Send + 'static,
{
    std::thread::Builder::new()
        .name("board".into())
        .spawn(move || run(panel, rx, temperature, factory_reset, on_clean_stop))
        .expect("spawning the board thread")
}

fn run<L, B, I, W>(
    mut panel: FrontPanel<L, B, I, W>,
    rx: mpsc::Receiver<Command>,
    temperature: TemperatureCell,
    factory_reset: Arc<tokio::sync::Notify>,
    on_clean_stop: impl FnOnce(W) -> std::io::Result<()>,
) where
    L: OutputPin,
    B: InputPin,
    I: I2c,
    W: Watchdog,
{
    let epoch = Instant::now();
    let mut next_temperature = Duration::ZERO;
    loop {
        let now = epoch.elapsed();
        if now >= next_temperature {
            next_temperature = now + TEMPERATURE_INTERVAL;
            match panel.read_temperature() {
                Ok(mc) => {
                    *temperature.lock().unwrap_or_else(|p| p.into_inner()) = Some(mc);
                    metrics::gauge!("callgate_board_temperature_celsius")
                        .set(f64::from(mc) / 1000.0)
                }
                Err(e) => tracing::warn!(error = %e, "board temperature unreadable"),
            }
        }
        let due = panel.poll_timeout().min(next_temperature);
        match rx.recv_timeout(due.saturating_sub(epoch.elapsed())) {
            Ok(Command::Led(led, pattern)) => panel.set_led(epoch.elapsed(), led, pattern),
            Ok(Command::Health(healthy)) => panel.report_health(epoch.elapsed(), healthy),
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                for led in StatusLed::ALL {
                    panel.set_led(epoch.elapsed(), led, LedPattern::Off);
                }
                if let Err(e) = on_clean_stop(panel.into_watchdog()) {
                    tracing::error!(error = %e, "could not disarm the watchdog");
                }
                tracing::info!("board stopped");
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        panel.handle_timeout(epoch.elapsed());
        while let Some(event) = panel.poll_event() {
            report(event, &factory_reset);
        }
    }
}

fn report(event: PanelEvent, factory_reset: &tokio::sync::Notify) {
    match event {
        PanelEvent::Button(ButtonEvent::ShortPress) => {
            metrics::counter!("callgate_board_button_events_total", "event" => "short_press")
                .increment(1);
            match linux::lan_addresses() {
                Ok(addrs) => {
                    let shown: Vec<String> =
                        addrs.iter().map(|(i, ip)| format!("{i} {ip}")).collect();
                    tracing::warn!(addresses = %shown.join(", "), "button: LAN addresses");
                }
                Err(e) => tracing::warn!(error = %e, "button: cannot list LAN addresses"),
            }
        }
        PanelEvent::Button(ButtonEvent::FactoryResetRequested) => {
            metrics::counter!("callgate_board_button_events_total", "event" => "factory_reset")
                .increment(1);
            tracing::warn!("button held 10 s at boot: factory reset requested");
            factory_reset.notify_one();
        }
        PanelEvent::Button(ButtonEvent::LongPress) => {
            metrics::counter!("callgate_board_button_events_total", "event" => "long_press")
                .increment(1);
            tracing::info!("button held 10 s while running: ignored (factory reset only at boot)");
        }
        PanelEvent::WatchdogWithheld(why) => {
            tracing::error!(
                ?why,
                "watchdog kicks withheld: the call engine is stalled or unhealthy"
            )
        }
        PanelEvent::WatchdogResumed => tracing::info!("watchdog kicks resumed"),
        PanelEvent::Fault(e) => tracing::warn!(error = %e, "board fault"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn notified_now(n: &tokio::sync::Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(50), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_the_hold_through_boot_asks_for_a_factory_reset() {
        let reset = tokio::sync::Notify::new();
        report(PanelEvent::Button(ButtonEvent::LongPress), &reset);
        report(PanelEvent::Button(ButtonEvent::ShortPress), &reset);
        assert!(
            !notified_now(&reset).await,
            "a long press while running is not a reset"
        );
        report(
            PanelEvent::Button(ButtonEvent::FactoryResetRequested),
            &reset,
        );
        assert!(
            notified_now(&reset).await,
            "the request waits for the daemon even if nobody listens yet"
        );
    }
}
