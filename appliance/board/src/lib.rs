//! # callgate-board — the appliance's hardware, through embedded-hal 1.0
//!
//! Owns everything on the box that is not a network port:
//! - [`led`]: status LEDs (power, cloud, trunks, recording) and their blink patterns, as a
//!   sans-IO core driven with explicit time;
//! - [`button`]: the front-panel button (short press shows the IP; a 10 s hold at boot asks
//!   for a factory reset), debounced in virtual time;
//! - [`lm75`]: a driver for the LM75 family of I²C temperature sensors, written against the
//!   embedded-hal 1.0 `I2c` trait;
//! - [`watchdog`]: the gate that kicks the hardware watchdog (`/dev/watchdog`) and the
//!   systemd watchdog only while the call engine's health check passes;
//! - [`panel`]: the front panel as one unit the daemon drives;
//! - [`sim`]: a simulated board for development, the demo and CI;
//! - [`linux`]: the real board: GPIO character device, i2c-dev, `/dev/watchdog`;
//! - [`tech_audio`] (feature `alsa`): the technician's audio port through ALSA.
//!
//! Cores take `now` as a [`core::time::Duration`] since an arbitrary monotonic epoch chosen by
//! the caller and never read a clock. Must not: know about SIP, calls or the cloud beyond the
//! LED states the daemon asks for.

pub mod button;
pub mod led;
pub mod linux;
pub mod lm75;
pub mod panel;
pub mod sim;
#[cfg(feature = "alsa")]
pub mod tech_audio;
pub mod watchdog;
