//! A technician places a test call from the diagnostics page in headless Chromium: the box
//! runs with a `[sip]` trunk pointing at a real SIPp carrier, and the page shows the
//! outcome and the SIP ladder.

use callgate_system_tests::browser::Browser;
use callgate_system_tests::{binary, free_loopback_addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_technician_places_a_test_call_from_the_diagnostics_page_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let carrier = free_udp_port();
    let sipp = Killed(
        Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &carrier.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "60"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (package sip-tester) is installed by scripts/setup"),
    );
    let (web, ops) = (free_loopback_addr(), free_loopback_addr());
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("box.toml"),
        format!(
            "[appliance]\nid = \"branch-diag\"\ndata_dir = \"{}\"\n[ops]\nlisten = \"{ops}\"\n\
             [web]\nlisten = \"{web}\"\n[sip]\nlisten = \"127.0.0.1:{}\"\n\n[[sip.trunks]]\n\
             name = \"carrier-a\"\naddress = \"127.0.0.1:{carrier}\"\nmax_channels = 2\nmax_cps = 2\n",
            data.display(),
            free_udp_port()
        ),
    )
    .unwrap();
    let _daemon = Killed(
        Command::new(binary("callgate-appliance"))
            .args(["-c", dir.path().join("box.toml").to_str().unwrap(), "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(web).is_err() || !data.join("setup-code").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the box did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup_code = std::fs::read_to_string(data.join("setup-code")).unwrap();
    let base = format!("https://{web}");

    let b = Browser::start().await;
    b.set_up_appliance(&base, &setup_code, "correct horse battery")
        .await;

    b.client.goto(&format!("{base}/diagnostics")).await.unwrap();
    b.fill(
        "test-call",
        &[
            ("to", "+4930555"),
            ("ring_seconds", "10"),
            ("hold_seconds", "1"),
        ],
    )
    .await;
    let outcome = b.text_of("#call-outcome").await;
    assert_eq!(outcome, "Answered and completed.");
    let ladder = b.text_of("#ladder").await;
    for step in [
        "INVITE sip:+4930555@",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:",
        "BYE sip:",
    ] {
        assert!(ladder.contains(step), "the ladder lacks {step}:\n{ladder}");
    }
    drop(sipp);
    b.client.clone().close().await.unwrap();
}
