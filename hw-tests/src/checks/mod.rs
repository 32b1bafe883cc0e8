//! The checks, one file each, and the order they run in ([`run_all`]).
//!
//! Every check returns an [`Outcome`]: `Pass` says what was verified, `Fail` what was
//! wrong, `Skip` why it could not run here. A check that cannot observe something never
//! reports it as passed.

pub mod button;
pub mod disk;
pub mod leds;
pub mod network;
pub mod sensor;
pub mod sound;
pub mod watchdog;

use crate::bench::BoardUnderTest;
use crate::operator::Operator;
use crate::report::{Outcome, Report};
use std::path::PathBuf;

/// Where the non-board checks look.
#[derive(Debug, Clone)]
pub struct Environment {
    /// ALSA device for playback and capture (`None`: skip the audio check).
    pub alsa_device: Option<String>,
    /// The sysfs network class directory (`/sys/class/net`).
    pub net_sysfs: PathBuf,
    /// The data partition's directory.
    pub data_dir: PathBuf,
    /// Minimum free space on the data partition, bytes.
    pub min_free_bytes: u64,
}

/// Runs every check in order.
pub fn run_all(
    board: &mut dyn BoardUnderTest,
    operator: &mut dyn Operator,
    env: &Environment,
) -> Report {
    let mut report = Report {
        target: board.describe(),
        results: Vec::new(),
    };
    report.push("leds", leds::check(board, operator));
    report.push("button", button::check(board, operator));
    report.push("sensor", sensor::check(board));
    report.push("watchdog", watchdog::check(board));
    report.push(
        "audio",
        match &env.alsa_device {
            Some(device) => sound::check(device),
            None => Outcome::Skip("no ALSA device given (--alsa-device)".into()),
        },
    );
    report.push("network", network::check(&env.net_sysfs));
    report.push("disk", disk::check(&env.data_dir, env.min_free_bytes));
    report
}
