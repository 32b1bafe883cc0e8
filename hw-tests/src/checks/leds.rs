//! LEDs: each is lit, blinked and put out; the bench or the operator confirms what it saw.

use crate::bench::BoardUnderTest;
use crate::operator::Operator;
use crate::report::Outcome;
use callgate_board::led::{LedPattern, StatusLed};
use callgate_board::panel::PanelEvent;
use std::time::Duration;

/// Cycles the four LEDs.
pub fn check(board: &mut dyn BoardUnderTest, operator: &mut dyn Operator) -> Outcome {
    let mut confirmed_by = "the line levels";
    for led in StatusLed::ALL {
        board.set_led(led, LedPattern::On);
        let faults = settle(board, Duration::from_millis(50));
        if let Some(f) = faults {
            return Outcome::Fail(f);
        }
        match board.observe_led(led) {
            Some(true) => {}
            Some(false) => {
                return Outcome::Fail(format!("{} LED line stayed low when lit", led.name()))
            }
            None => match operator.confirm(&format!("Is the {} LED lit?", led.name())) {
                Some(true) => confirmed_by = "the operator",
                Some(false) => {
                    return Outcome::Fail(format!("operator: {} LED not lit", led.name()))
                }
                None => {
                    board.set_led(led, LedPattern::Off);
                    return Outcome::Skip(
                        "LED lines cannot be observed here; run with --interactive".into(),
                    );
                }
            },
        }
        // Blink for a second: the line must go low and high again.
        board.set_led(led, LedPattern::FastBlink);
        let start = board.now();
        let mut seen_low = false;
        let mut seen_high_after_low = false;
        while board.now() < start + Duration::from_secs(1) {
            let step = board.now() + Duration::from_millis(60);
            if let Some(f) = settle_until(board, step) {
                return Outcome::Fail(f);
            }
            match board.observe_led(led) {
                Some(false) => seen_low = true,
                Some(true) if seen_low => seen_high_after_low = true,
                _ => {}
            }
        }
        if board.observe_led(led).is_some() && !(seen_low && seen_high_after_low) {
            return Outcome::Fail(format!("{} LED did not blink", led.name()));
        }
        board.set_led(led, LedPattern::Off);
        if let Some(f) = settle(board, Duration::from_millis(50)) {
            return Outcome::Fail(f);
        }
        if board.observe_led(led) == Some(true) {
            return Outcome::Fail(format!("{} LED line stayed high when put out", led.name()));
        }
    }
    Outcome::Pass(format!(
        "power, cloud, trunks, recording lit, blinked and put out (confirmed by {confirmed_by})"
    ))
}

fn settle(board: &mut dyn BoardUnderTest, d: Duration) -> Option<String> {
    let until = board.now() + d;
    settle_until(board, until)
}

fn settle_until(board: &mut dyn BoardUnderTest, until: Duration) -> Option<String> {
    board
        .run_until(until, &mut |_| Some(true))
        .into_iter()
        .find_map(|e| match e {
            PanelEvent::Fault(f) => Some(f.to_string()),
            _ => None,
        })
}
