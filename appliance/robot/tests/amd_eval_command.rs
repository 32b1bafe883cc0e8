//! The `callgate-amd-eval` benchmark command: it prints the table, and the same seed prints
//! the same table.

use std::process::Command;

fn eval(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-amd-eval"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_command_prints_accuracy_confusion_and_decision_time_deterministically() {
    let first = eval(&["--count", "6", "--seed", "5"]);
    for needle in [
        "calls                      6 (3 human, 3 machine)",
        "accuracy ",
        "truth \\ verdict",
        "mean decision time",
    ] {
        assert!(first.contains(needle), "{needle:?} missing from:\n{first}");
    }
    assert_eq!(first, eval(&["--count", "6", "--seed", "5"]));
}

#[test]
fn a_missing_espeak_fails_with_the_engine_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-amd-eval"))
        .args(["--count", "2", "--espeak", "/nonexistent/espeak-ng"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/espeak-ng is not installed"),
        "{err}"
    );
}
