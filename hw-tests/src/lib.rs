//! # callgate-hw-tests — the board acceptance suite
//!
//! `callgate-hwtest` is what a technician or the factory runs on a real box, and what CI runs
//! against the simulated board. It checks, in order: the status LEDs (cycled; an operator
//! confirms each when run `--interactive`), the front-panel button, the temperature sensor's
//! plausibility, the watchdog gate (fire and recover, in a safe mode that never reboots the
//! box), ALSA playback and capture (feature `alsa`), the network link and the data disk, and
//! prints a pass/fail report.
//!
//! Rooms: [`report`] (results and their rendering), [`operator`] (asking the person at the
//! box), [`bench`] (the board under test: real or simulated, with its clock), [`checks`] (one
//! file per check). Must not: change the box's configuration or leave the hardware watchdog
//! armed.

pub mod bench;
pub mod checks;
pub mod operator;
pub mod report;
