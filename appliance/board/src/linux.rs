//! The real board on Linux: LEDs and button on the GPIO character device
//! (`/dev/gpiochipN`), the LM75 on i2c-dev (`/dev/i2c-N`), the hardware watchdog on
//! `/dev/watchdog`, and systemd's watchdog through `$NOTIFY_SOCKET`.
//!
//! Opening `/dev/watchdog` arms it: from then on the box reboots unless it is kicked. Only the
//! daemon on a real box opens it ([`LinuxBoardConfig::watchdog_device`] is `None` by default);
//! [`LinuxWatchdog::disarm`] writes the magic close character on a clean stop.

use crate::lm75::{Lm75, Resolution};
use crate::panel::{FrontPanel, PanelParts};
use crate::watchdog::{Watchdog, WatchdogPolicy};
use core::time::Duration;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, I2cdev};
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where the board's parts are wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxBoardConfig {
    /// The GPIO chip, e.g. `/dev/gpiochip0`.
    pub gpio_chip: PathBuf,
    /// Line offsets of the power, cloud, trunks and recording LEDs.
    pub led_lines: [u32; 4],
    /// Line offset of the button.
    pub button_line: u32,
    /// Whether the button reads low when pressed.
    pub button_active_low: bool,
    /// The I²C bus, e.g. `/dev/i2c-1`.
    pub i2c_bus: PathBuf,
    /// The LM75's address.
    pub lm75_address: u8,
    /// The LM75 variant's resolution.
    pub lm75_resolution: Resolution,
    /// `/dev/watchdog`, when the daemon should arm the hardware watchdog.
    pub watchdog_device: Option<PathBuf>,
}

/// Why the real board could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinuxBoardError {
    /// A GPIO line could not be requested.
    #[error("GPIO {chip} line {line}: {detail}")]
    Gpio {
        chip: PathBuf,
        line: u32,
        detail: String,
    },
    /// The I²C bus could not be opened.
    #[error("I2C bus {bus}: {detail}")]
    I2c { bus: PathBuf, detail: String },
    /// The sensor address is not an LM75 address.
    #[error("LM75: {0}")]
    Sensor(String),
    /// The watchdog device could not be opened or kicked.
    #[error("watchdog {path}: {source}")]
    Watchdog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The hardware watchdog and/or systemd's, kicked together.
#[derive(Debug, Default)]
pub struct LinuxWatchdog {
    device: Option<(PathBuf, File)>,
    systemd: Option<SystemdNotify>,
}

impl LinuxWatchdog {
    /// Opens (and so arms) `device`, and uses `$NOTIFY_SOCKET` when systemd set it.
    pub fn open(device: Option<&Path>) -> Result<Self, LinuxBoardError> {
        let device = match device {
            Some(path) => Some((
                path.to_path_buf(),
                File::options().write(true).open(path).map_err(|source| {
                    LinuxBoardError::Watchdog {
                        path: path.to_path_buf(),
                        source,
                    }
                })?,
            )),
            None => None,
        };
        Ok(LinuxWatchdog {
            device,
            systemd: SystemdNotify::from_env(),
        })
    }

    /// Stops the hardware watchdog with the magic close character (clean shutdown only).
    pub fn disarm(mut self) -> std::io::Result<()> {
        if let Some((_, mut f)) = self.device.take() {
            f.write_all(b"V")?;
        }
        Ok(())
    }
}

impl Watchdog for LinuxWatchdog {
    type Error = std::io::Error;
    fn kick(&mut self) -> std::io::Result<()> {
        if let Some((_, f)) = &mut self.device {
            f.write_all(b"\0")?;
        }
        if let Some(s) = &self.systemd {
            s.notify("WATCHDOG=1")?;
        }
        Ok(())
    }
}

/// systemd's notification socket (`sd_notify`), for `WatchdogSec=` and `READY=1`.
#[derive(Debug)]
pub struct SystemdNotify {
    path: String,
}

impl SystemdNotify {
    /// The socket systemd passed in `$NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Option<Self> {
        std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| !p.is_empty())
            .map(|path| SystemdNotify { path })
    }

    /// A notifier for an explicit socket path (`@name` for the abstract namespace).
    pub fn new(path: impl Into<String>) -> Self {
        SystemdNotify { path: path.into() }
    }

    /// Sends one notification, e.g. `READY=1` or `WATCHDOG=1`.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        if let Some(name) = self.path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &self.path)?;
        }
        Ok(())
    }
}

/// The box's non-loopback IP addresses with their interface names, for the button's
/// "show the IP" and the technician's console.
pub fn lan_addresses() -> std::io::Result<Vec<(String, std::net::IpAddr)>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            std::net::IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            std::net::IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !ip.is_loopback() {
            out.push((ifa.interface_name, ip));
        }
    }
    Ok(out)
}

/// The real front panel.
pub type LinuxPanel = FrontPanel<CdevPin, CdevPin, I2cdev, LinuxWatchdog>;

/// Opens every part of the real board and assembles the panel at `now`.
pub fn open_panel(
    config: &LinuxBoardConfig,
    policy: WatchdogPolicy,
    now: Duration,
) -> Result<LinuxPanel, LinuxBoardError> {
    let gpio_err = |line: u32, e: &dyn std::fmt::Display| LinuxBoardError::Gpio {
        chip: config.gpio_chip.clone(),
        line,
        detail: e.to_string(),
    };
    let mut chip = Chip::new(&config.gpio_chip).map_err(|e| gpio_err(0, &e))?;
    let mut request = |line: u32, flags: LineRequestFlags| {
        chip.get_line(line)
            .and_then(|l| l.request(flags, 0, "callgate"))
            .and_then(CdevPin::new)
            .map_err(|e| gpio_err(line, &e))
    };
    let [a, b, c, d] = config.led_lines;
    let leds = [
        request(a, LineRequestFlags::OUTPUT)?,
        request(b, LineRequestFlags::OUTPUT)?,
        request(c, LineRequestFlags::OUTPUT)?,
        request(d, LineRequestFlags::OUTPUT)?,
    ];
    let button = request(config.button_line, LineRequestFlags::INPUT)?;
    let bus = I2cdev::new(&config.i2c_bus).map_err(|e| LinuxBoardError::I2c {
        bus: config.i2c_bus.clone(),
        detail: e.to_string(),
    })?;
    let sensor = Lm75::new(bus, config.lm75_address, config.lm75_resolution)
        .map_err(|e| LinuxBoardError::Sensor(e.to_string()))?;
    let watchdog = LinuxWatchdog::open(config.watchdog_device.as_deref())?;
    Ok(FrontPanel::new(
        PanelParts {
            leds,
            button,
            button_active_low: config.button_active_low,
            sensor,
            watchdog,
        },
        policy,
        now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_watchdog_notifications_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("callgate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let mut dog = LinuxWatchdog {
            device: None,
            systemd: Some(SystemdNotify::new(path.to_str().unwrap())),
        };
        dog.kick().unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lan_addresses_name_real_interfaces_and_leave_out_loopback() {
        let addrs = lan_addresses().unwrap();
        for (iface, ip) in &addrs {
            assert!(!ip.is_loopback(), "{addrs:?}");
            assert!(
                Path::new("/sys/class/net").join(iface).exists(),
                "{iface} is no interface"
            );
        }
    }

    #[test]
    fn a_missing_gpio_chip_is_named() {
        let config = LinuxBoardConfig {
            gpio_chip: PathBuf::from("/dev/no-such-gpiochip"),
            led_lines: [0, 1, 2, 3],
            button_line: 4,
            button_active_low: true,
            i2c_bus: PathBuf::from("/dev/i2c-1"),
            lm75_address: 0x48,
            lm75_resolution: Resolution::Bits11,
            watchdog_device: None,
        };
        let err = open_panel(&config, WatchdogPolicy::default(), Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/dev/no-such-gpiochip"), "{err}");
    }

    #[test]
    fn a_watchdog_device_that_cannot_be_opened_is_named() {
        let err = LinuxWatchdog::open(Some(Path::new("/nonexistent/watchdog")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/watchdog"), "{err}");
    }
}
