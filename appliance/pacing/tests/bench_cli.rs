//! The benchmark command as a user runs it: a good scenario prints the comparison table, a
//! bad one is refused with the file and the key named.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_callgate-pacing-bench");

const SMALL: &str = r#"
name = "cli check"
seed = 5
days = 30
[[agents]]
count = 4
shift = [9.0, 11.0]
[callees]
human = [[0.0, 0.30]]
machine = [[0.0, 0.05]]
busy = 0.05
failed = 0.01
ring = { kind = "lognormal", mean = 8.0, sd = 4.0 }
no_answer_timeout = 25.0
busy_after = { kind = "uniform", min = 1.0, max = 4.0 }
amd_secs = 3.0
[handling]
talk = { kind = "lognormal", mean = 100.0, sd = 50.0 }
wrap = { kind = "fixed", value = 10.0 }
[trunk]
max_concurrent = 20
max_per_minute = 100
[abandon]
cap = 0.03
window_hours = 24.0
"#;

#[test]
fn a_scenario_file_gives_one_row_per_strategy_and_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.toml");
    std::fs::write(&file, SMALL).unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(BENCH)
        .args(["--days", "1", "--json"])
        .arg(&json)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("cli check (4 agents, 1 day(s)"), "{text}");
    for row in [
        "| progressive 1:1 |",
        "| fixed ratio 2.0 |",
        "| adaptive ADAPT_HARD_LIMIT @3.0 % |",
        "| adaptive ADAPT_TAPERED @2.4 % |",
        "| adaptive ADAPT_AVERAGE @3.0 % |",
        "| predictive (ours) |",
    ] {
        assert!(text.contains(row), "missing {row} in\n{text}");
    }
    assert!(text.contains("ours − best adaptive"), "{text}");
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = figures[0]["strategies"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    for row in rows {
        let occ = row["occupancy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&occ), "{row}");
    }
    assert_eq!(figures[0]["agents"], 4);
}

#[test]
fn a_bad_scenario_is_refused_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, SMALL.replace("cap = 0.03", "cap = 3.0")).unwrap();
    let out = Command::new(BENCH).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("abandon.cap"),
        "{err}"
    );

    std::fs::write(&file, SMALL.replace("amd_secs", "amd_seconds")).unwrap();
    let out = Command::new(BENCH).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("amd_seconds"), "{err}");
}
