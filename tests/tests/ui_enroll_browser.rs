//! A technician enrolls a fresh box from its local web UI in headless Chromium: HQ registers
//! the appliance and hands out a claim code; a wrong code is refused with the
//! coordinator's reason and the form keeps what was typed; the right code enrolls the box,
//! the daemon restarts in place with its new identity, and the Cloud page then shows the
//! link online to the coordinator's embedded broker.

#[macro_use]
mod sync_common;

use callgate_system_tests::browser::Browser;
use callgate_system_tests::{binary, free_loopback_addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, World};

/// The appliance daemon, killed when dropped.
struct BoxProcess(Child);

impl Drop for BoxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_technician_enrolls_a_box_from_its_web_ui_and_the_link_comes_up() {
    let mut w = World::with_broker(&[], BrokerKind::Embedded);
    w.start_coordinator().await;
    let out = Command::new(binary("callgate-coordinator"))
        .args(["-c", &w.coord_config(), "appliance", "register", "branch-9"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claim = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ca_pem = std::fs::read_to_string(w.path("coordinator/pki/ca.pem")).unwrap();

    // A fresh box: no id, no broker, no identity; only its UI and ops listeners.
    let web = free_loopback_addr();
    let ops = free_loopback_addr();
    let data = w.path("box");
    std::fs::write(
        w.path("box.toml"),
        format!(
            "[appliance]\ndata_dir = \"{}\"\n[ops]\nlisten = \"{ops}\"\n[web]\nlisten = \"{web}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(w.path("box.log")).unwrap();
    let _daemon = BoxProcess(
        Command::new(binary("callgate-appliance"))
            .args(["-c", w.path("box.toml").to_str().unwrap(), "run"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let setup_code_file = data.join("setup-code");
    let start = Instant::now();
    while !setup_code_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the box did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sync_common::wait_port(web, Duration::from_secs(30));
    let setup_code = std::fs::read_to_string(&setup_code_file).unwrap();
    let base = format!("https://{web}");

    let b = Browser::start().await;
    b.set_up_appliance(&base, &setup_code, "correct horse battery")
        .await;
    assert_eq!(b.text_of("#cloud-link").await, "not enrolled");

    b.client.goto(&format!("{base}/cloud")).await.unwrap();
    let coordinator = format!("https://{}", w.enroll_addr);
    b.fill(
        "enroll",
        &[
            ("coordinator", &coordinator),
            ("claim", "ZZZZ-ZZZZ-ZZZZ-ZZZZ"),
            ("ca_pem", &ca_pem),
        ],
    )
    .await;
    let refused = b.text_of(".error").await;
    assert!(refused.contains("claim code is wrong"), "{refused}");
    let kept = b
        .client
        .find(fantoccini::Locator::Css(
            "form#enroll input[name=coordinator]",
        ))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(coordinator.as_str()),
        "the URL is kept"
    );
    assert!(!data.join("identity/cert.pem").exists());

    b.fill(
        "enroll",
        &[
            ("coordinator", &coordinator),
            ("claim", &claim),
            ("ca_pem", &ca_pem),
        ],
    )
    .await;
    let notice = b.text_of(".notice").await;
    assert!(notice.contains("Enrolled as branch-9"), "{notice}");
    assert!(data.join("identity/cert.pem").exists());
    assert!(
        !data.join("enroll-ca.pem").exists(),
        "the pasted CA is not left behind"
    );

    // The daemon restarts in place; its session store survives, so the same browser
    // session reads the Cloud page of the restarted box.
    let link = b
        .reload_until(
            &format!("{base}/cloud"),
            "#cloud-link",
            "online since",
            Duration::from_secs(60),
        )
        .await;
    assert!(link.starts_with("online since"), "{link}");
    assert_eq!(b.text_of("#enrolled-as").await, "branch-9");
    let log = std::fs::read_to_string(w.path("box.log")).unwrap();
    assert!(log.contains("re-executing"), "{log}");
    b.client.clone().close().await.unwrap();
}
