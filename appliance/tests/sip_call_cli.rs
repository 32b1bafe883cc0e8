//! `callgate-appliance sip call`, run as the real binary against a real SIPp carrier:
//! the ladder shows INVITE, 180, 200, ACK, BYE and its 200; an unknown trunk name and a
//! bad config are refused with the key named.

use std::process::Command;

mod sip_support;
use sip_support::Sipp;

fn config(dir: &std::path::Path, carrier: std::net::SocketAddr) -> std::path::PathBuf {
    let p = dir.join("sip.toml");
    std::fs::write(
        &p,
        format!(
            "[sip]\nlisten = \"127.0.0.1:5060\"\n\n[[sip.trunks]]\nname = \"carrier\"\n\
             address = \"{carrier}\"\nmax_channels = 2\nmax_cps = 2\n"
        ),
    )
    .unwrap();
    p
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
        .arg("sip")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_test_call_prints_the_ladder_and_exits_0() {
    let sipp = Sipp::start(&["-sn", "uas"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), sipp.addr);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(&[
            "call",
            "--sip-config",
            cfg.to_str().unwrap(),
            "--trunk",
            "carrier",
            "--to",
            "4930555",
            "--hold",
            "0",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let ladder: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" -> ").or_else(|| l.split_once(" <- ")))
        .map(|(_, rest)| rest.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        ladder,
        vec!["INVITE", "SIP/2.0", "SIP/2.0", "ACK", "BYE", "SIP/2.0"],
        "{out}"
    );
    assert!(out.contains("<- 127.0.0.1"), "{out}");
    assert!(out.lines().any(|l| l.contains(" UDP INVITE sip:")), "{out}");
    assert!(out.contains("SIP/2.0 180 Ringing"), "{out}");
    assert!(out.contains("SIP/2.0 200 OK"), "{out}");
    assert!(out.ends_with("call completed\n"), "{out}");
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[test]
fn an_unknown_trunk_or_a_bad_config_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let (code, _, err) = run(&[
        "call",
        "--sip-config",
        cfg.to_str().unwrap(),
        "--trunk",
        "nope",
        "--to",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no trunk named `nope`"), "{err}");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_cps = 2", "max_cps = 0");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = run(&[
        "call",
        "--sip-config",
        cfg.to_str().unwrap(),
        "--trunk",
        "carrier",
        "--to",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("sip.trunks[0].max_cps: must be at least 1"),
        "{err}"
    );
}
