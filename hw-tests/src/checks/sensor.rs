//! The temperature sensor: it answers, reads within the board's operating range, and two
//! readings a second apart agree.

use crate::bench::BoardUnderTest;
use crate::report::Outcome;
use std::time::Duration;

/// The plausible range for a board that is switched on indoors, m°C.
pub const PLAUSIBLE_MILLICELSIUS: std::ops::RangeInclusive<i32> = -20_000..=90_000;
/// The most two readings a second apart may differ, m°C.
pub const MAX_STEP_MILLICELSIUS: i32 = 2_000;

/// Reads the sensor twice.
pub fn check(board: &mut dyn BoardUnderTest) -> Outcome {
    let first = match board.read_temperature() {
        Ok(t) => t,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let later = board.now() + Duration::from_secs(1);
    board.run_until(later, &mut |_| Some(true));
    let second = match board.read_temperature() {
        Ok(t) => t,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let c = |m: i32| f64::from(m) / 1000.0;
    for t in [first, second] {
        if !PLAUSIBLE_MILLICELSIUS.contains(&t) {
            return Outcome::Fail(format!("implausible temperature {:.3} °C", c(t)));
        }
    }
    if (first - second).abs() > MAX_STEP_MILLICELSIUS {
        return Outcome::Fail(format!(
            "readings jumped from {:.3} °C to {:.3} °C in 1 s",
            c(first),
            c(second)
        ));
    }
    Outcome::Pass(format!("{:.3} °C, then {:.3} °C", c(first), c(second)))
}
