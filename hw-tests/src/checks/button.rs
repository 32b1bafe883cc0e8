//! The button: one short press must arrive as exactly one short-press event.

use crate::bench::BoardUnderTest;
use crate::operator::Operator;
use crate::report::Outcome;
use callgate_board::button::ButtonEvent;
use callgate_board::panel::PanelEvent;
use std::time::Duration;

/// How long the operator has to press.
pub const PRESS_WINDOW: Duration = Duration::from_secs(10);

/// Waits for one short press (made by the bench or the operator).
pub fn check(board: &mut dyn BoardUnderTest, operator: &mut dyn Operator) -> Outcome {
    let start = board.now();
    let pressed_by = if board.press_button(
        start + Duration::from_millis(100),
        Duration::from_millis(300),
    ) {
        "the simulated finger"
    } else {
        if operator.confirm("Ready to press the front-panel button once, briefly?") != Some(true) {
            return Outcome::Skip(
                "needs an operator to press the button; run with --interactive".into(),
            );
        }
        operator.instruct("Press and release the button now.");
        "the operator"
    };
    let events = board.run_until(start + PRESS_WINDOW, &mut |_| Some(true));
    let presses = events
        .iter()
        .filter(|e| **e == PanelEvent::Button(ButtonEvent::ShortPress))
        .count();
    if let Some(PanelEvent::Fault(f)) = events.iter().find(|e| matches!(e, PanelEvent::Fault(_))) {
        return Outcome::Fail(f.to_string());
    }
    match presses {
        1 => Outcome::Pass(format!("one short press by {pressed_by} seen as one event")),
        0 => Outcome::Fail(format!("no press seen within {}s", PRESS_WINDOW.as_secs())),
        n => Outcome::Fail(format!(
            "one press seen as {n} presses (bounce not filtered)"
        )),
    }
}
