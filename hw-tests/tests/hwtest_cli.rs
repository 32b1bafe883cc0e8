//! The `callgate-hwtest` binary against the simulated board: a clean board passes every check
//! it can run, and each simulated fault turns its check red with a non-zero exit.

use std::process::Command;

fn fake_sysfs(root: &std::path::Path) {
    let eth = root.join("eth0");
    std::fs::create_dir_all(&eth).unwrap();
    std::fs::write(eth.join("operstate"), "up\n").unwrap();
    std::fs::write(eth.join("carrier"), "1\n").unwrap();
}

fn hwtest(extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    fake_sysfs(dir.path());
    let mut args = vec![
        "--simulated".to_string(),
        "--net-sysfs".into(),
        dir.path().display().to_string(),
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--min-free-mib".into(),
        "1".into(),
    ];
    if cfg!(feature = "alsa") {
        args.extend(["--alsa-device".to_string(), "null".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-hwtest"))
        .args(&args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(&format!("{check:<10} ")))
        .unwrap_or_else(|| panic!("no {check} line in:\n{report}"))
}

#[test]
fn a_healthy_simulated_board_passes_every_check() {
    let (code, report) = hwtest(&[]);
    assert_eq!(code, 0, "{report}");
    for check in ["leds", "button", "sensor", "watchdog", "network", "disk"] {
        assert!(line(&report, check).contains(" PASS "), "{report}");
    }
    assert!(
        line(&report, "watchdog").contains("device fired"),
        "{report}"
    );
    if cfg!(feature = "alsa") {
        assert!(line(&report, "audio").contains(" PASS "), "{report}");
    }
}

#[test]
fn each_simulated_fault_fails_its_check_and_the_run() {
    for (fault, check, words) in [
        ("sensor-absent", "sensor", "NoAcknowledge"),
        ("sensor-implausible", "sensor", "implausible"),
        ("button-stuck", "button", "no press"),
    ] {
        let (code, report) = hwtest(&["--simulate-fault", fault]);
        assert_eq!(code, 1, "{fault}: {report}");
        let l = line(&report, check);
        assert!(l.contains(" FAIL ") && l.contains(words), "{fault}: {l}");
    }
}

#[test]
fn without_hardware_the_real_board_is_refused_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-hwtest"))
        .args(["--gpio-chip", "/dev/no-such-gpiochip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/dev/no-such-gpiochip"), "{err}");
}
