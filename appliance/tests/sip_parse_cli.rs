//! `callgate-appliance sip parse FILE`, run as the real binary: valid messages print their
//! fields and exit 0; invalid ones print the error and the answer, and exit 1.

use std::path::PathBuf;
use std::process::Command;

fn rfc4475(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("sip/testdata/rfc4475/{name}.dat"))
}

fn run(file: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
        .args(["sip", "parse"])
        .arg(file)
        .output()
        .expect("run callgate-appliance");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_valid_message_prints_its_fields_and_exits_0() {
    let (code, out) = run(&rfc4475("wsinv"));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("valid: request\n"), "{out}");
    assert!(out.contains("method: INVITE\n"), "{out}");
    assert!(out.contains("call-id: wsinv.ndaksdj@192.0.2.1\n"), "{out}");
    assert!(out.contains("cseq: 9 INVITE\n"), "{out}");
    assert!(
        out.contains("via[1]: TCP spindle.example.com branch z9hG4bK9ikj8\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "NewFangledHeader: newfangled value\r\n continued newfangled value (kept as received)"
        ),
        "{out}"
    );
    assert!(out.contains("body: 150 bytes (application/sdp)\n"), "{out}");
}

#[test]
fn an_invalid_message_prints_the_error_and_the_answer_and_exits_1() {
    let (code, out) = run(&rfc4475("baddn"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("invalid: malformed From header: display name"),
        "{out}"
    );
    assert!(
        out.contains("answer: SIP/2.0 400 Bad Request (malformed From header"),
        "{out}"
    );
    let (code, out) = run(&rfc4475("bigcode"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("answer: none (the message is dropped)"),
        "{out}"
    );
}

#[test]
fn a_captured_message_with_lf_line_ends_from_a_temp_file_parses() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("captured.sip");
    std::fs::write(
        &p,
        "SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\n\
         From: <sip:a@127.0.0.1>;tag=1\nTo: <sip:b@127.0.0.1>;tag=2\nCall-ID: c\n\
         CSeq: 1 INVITE\nContent-Length: 0\n\n",
    )
    .unwrap();
    let (code, out) = run(&p);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("status: 486 Busy Here\n"), "{out}");
}

#[test]
fn a_missing_file_is_an_error_not_a_verdict() {
    let (code, out) = run(std::path::Path::new("/nonexistent/msg.sip"));
    assert_ne!(code, 0);
    assert!(!out.contains("valid"));
}
