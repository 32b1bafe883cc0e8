//! The watchdog, in a safe mode: the gate must stop kicking when the engine stalls and
//! start again when it recovers. On the simulated board the device must also fire (the
//! reboot) and accept kicks again once re-armed; the real hardware watchdog is never armed
//! by the suite, so a box is not rebooted by its own acceptance test.

use crate::bench::{BoardUnderTest, TEST_WATCHDOG_POLICY};
use crate::report::Outcome;
use callgate_board::panel::PanelEvent;
use std::time::Duration;

/// Stall, fire, recover.
pub fn check(board: &mut dyn BoardUnderTest) -> Outcome {
    let t0 = board.now();
    // Healthy for 3 s: no withholding.
    let events = board.run_until(t0 + Duration::from_secs(3), &mut |_| Some(true));
    if let Some(e) = events.iter().find(|e| !matches!(e, PanelEvent::Button(_))) {
        return Outcome::Fail(format!("while healthy: {e:?}"));
    }
    // The engine stalls: no reports.
    let stall_end = board.now() + TEST_WATCHDOG_POLICY.max_report_age + Duration::from_secs(6);
    let events = board.run_until(stall_end, &mut |_| None);
    if !events
        .iter()
        .any(|e| matches!(e, PanelEvent::WatchdogWithheld(_)))
    {
        return Outcome::Fail("kicks went on while the engine was stalled".into());
    }
    let fired = board.watchdog_fired();
    if fired == Some(false) {
        return Outcome::Fail("the watchdog did not fire after kicks stopped".into());
    }
    board.rearm_watchdog();
    // The engine recovers.
    let recover_end = board.now() + Duration::from_secs(2);
    let events = board.run_until(recover_end, &mut |_| Some(true));
    if !events.contains(&PanelEvent::WatchdogResumed) {
        return Outcome::Fail("kicks did not resume after the engine recovered".into());
    }
    if board.watchdog_fired() == Some(true) {
        return Outcome::Fail("the re-armed watchdog fired although it was kicked".into());
    }
    match fired {
        Some(_) => Outcome::Pass("kicks withheld on stall, device fired, kicks resumed on recovery".into()),
        None => Outcome::Pass(
            "kicks withheld on stall and resumed on recovery (safe mode: hardware watchdog not armed)"
                .into(),
        ),
    }
}
