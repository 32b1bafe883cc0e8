//! A technician edits a trunk in headless Chromium: a bad address is shown beside its field
//! and nothing is applied; a good edit is saved and applied. Then the status page, left
//! open, shows a call the moment it starts, pushed over SSE without a reload.

use callgate_system_tests::browser::Browser;
use callgate_system_tests::{binary, free_loopback_addr};
use fantoccini::Locator;
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
async fn a_trunk_edit_is_refused_then_applied_and_the_status_page_shows_a_call_live() {
    let dir = tempfile::tempdir().unwrap();
    let carrier = free_udp_port();
    let _sipp = Killed(
        Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &carrier.to_string()])
            .args(["-mp", &free_udp_port().to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "90"])
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
            "[appliance]\nid = \"branch-trunks\"\ndata_dir = \"{}\"\n[ops]\nlisten = \"{ops}\"\n\
             [web]\nlisten = \"{web}\"\n[sip]\nlisten = \"127.0.0.1:{}\"\n\n[[sip.trunks]]\n\
             name = \"carrier\"\naddress = \"127.0.0.1:{carrier}\"\nmax_channels = 2\nmax_cps = 2\n",
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
    let overlay = data.join("sip-overlay.toml");

    let b = Browser::start().await;
    b.set_up_appliance(&base, &setup_code, "correct horse battery")
        .await;

    // A bad address: the error sits beside the field, the typed value stays, nothing is saved.
    b.client.goto(&format!("{base}/trunks")).await.unwrap();
    b.fill("trunk-carrier", &[("address", "carrier.example")])
        .await;
    let error = b
        .text_of("form#trunk-carrier .field-error[data-field=address]")
        .await;
    assert!(
        error.starts_with("Address: the carrier's IP:port") && error.contains("carrier.example"),
        "{error}"
    );
    assert!(b
        .text_of("p.error")
        .await
        .starts_with("Nothing was changed."));
    let typed = b
        .client
        .find(Locator::Css("form#trunk-carrier input[name=address]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(typed.as_deref(), Some("carrier.example"));
    assert!(!overlay.exists(), "a refused edit writes nothing");

    // A good edit: saved, applied to the running engine, and shown.
    b.fill(
        "trunk-carrier",
        &[
            ("address", &format!("127.0.0.1:{carrier}")),
            ("max_channels", "3"),
        ],
    )
    .await;
    let notice = b.text_of("p.notice").await;
    assert_eq!(
        notice,
        "Trunk carrier saved. The running SIP engine uses it now; calls in progress continue."
    );
    assert!(std::fs::read_to_string(&overlay)
        .unwrap()
        .contains("max_channels = 3"));
    b.client.goto(&format!("{base}/status")).await.unwrap();
    let trunks = b.text_of("#trunks").await;
    assert!(
        trunks.contains(&format!("carrier 127.0.0.1:{carrier}: up"))
            && trunks.contains("0/3 calls"),
        "{trunks}"
    );
    assert_eq!(b.text_of("#calls").await, "none");

    // The page stays open; a call starts (a test call placed beside it, with the browser's
    // own session) and the page shows it without being reloaded.
    b.client
        .execute("window.stillTheSamePage = true;", vec![])
        .await
        .unwrap();
    let cookie = b
        .client
        .get_named_cookie("cg_session")
        .await
        .unwrap()
        .value()
        .to_string();
    let pem = std::fs::read(data.join("web/cert.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let diagnostics = http
        .get(format!("{base}/diagnostics"))
        .header("cookie", format!("cg_session={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = diagnostics.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = diagnostics[at..at + 32].to_string();
    let call = tokio::spawn(async move {
        http.post(format!("{base}/diagnostics/call"))
            .header("cookie", format!("cg_session={cookie}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("trunk", "carrier"),
                ("to", "4930555"),
                ("ring_seconds", "10"),
                ("hold_seconds", "4"),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let start = Instant::now();
    loop {
        let calls = b.text_of("#calls").await;
        if calls.contains("test call to 4930555 via carrier") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the open status page never showed the call: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let same = b
        .client
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same,
        serde_json::Value::Bool(true),
        "the page was not reloaded"
    );
    let html = call.await.unwrap();
    assert!(html.contains("Answered and completed."), "{html}");
    b.client.clone().close().await.unwrap();
}
