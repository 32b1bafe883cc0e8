//! # callgate-hw-tests — the board acceptance suite
//!
//! Will own `callgate-hwtest`, the pass/fail run a technician or the factory does on a real
//! box (LEDs, button, temperature sensor, watchdog, ALSA, network, disk), and its CI form
//! against the simulated board with `embedded-hal-mock` expectations.
//!
//! Empty until the board issue (#9) lands: the workspace member exists so the layout of
//! DESIGN.md is in place and the crate builds and lints from the first commit.
