//! Trunk health reaches the HQ console's fleet page end to end: the appliance daemon's
//! trunk router probes its carriers with OPTIONS (one answered by SIPp with `-aa`, one
//! silent), its telemetry carries each trunk's name, up/down and calls over the real MQTT
//! link (Mosquitto) to the coordinator, and the console (HTTPS, a user made with
//! `create-console-user`) shows them on `/fleet`.

mod sync_common;

use callgate_system_tests::{binary, free_loopback_addr};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sync_common::{BrokerKind, Load, World};

const PASSWORD: &str = "correct horse battery staple";

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fleet page's row for `name`, from `<tr>` to `</tr>`.
fn fleet_row<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    let at = page.find(&format!(">{name}<"))?;
    let start = page[..at].rfind("<tr")?;
    let end = at + page[at..].find("</tr>")?;
    Some(&page[start..end])
}

#[tokio::test]
async fn the_fleet_page_shows_each_trunk_up_or_down_as_the_appliances_probes_see_it() {
    let mut w = World::with_broker(&["branch-1"], BrokerKind::Mosquitto);
    let console = free_loopback_addr();
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(w.coord_config())
        .unwrap();
    writeln!(cfg, "[console]\nlisten = \"{console}\"").unwrap();
    drop(cfg);
    let mut cli = Command::new(binary("callgate-coordinator"))
        .args(["-c", &w.coord_config(), "create-console-user"])
        .args(["--username", "hq", "--role", "viewer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(cli.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(cli.wait().unwrap().success());
    w.start_broker();
    w.start_coordinator().await;

    // One carrier answers OPTIONS; the other's port has nobody behind it.
    let (alive, silent) = (free_udp_port(), free_udp_port());
    let _carrier = Killed(
        Command::new("sipp")
            .args([
                "-sn",
                "uas",
                "-aa",
                "-i",
                "127.0.0.1",
                "-p",
                &alive.to_string(),
            ])
            .args(["-mp", &free_udp_port().to_string()])
            .args(["-nostdin", "-timeout", "300"])
            .current_dir(w.path(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (package sip-tester) is installed by scripts/setup"),
    );
    std::fs::write(
        w.appliance_config("branch-1"),
        format!(
            "[appliance]\nid = \"branch-1\"\ndata_dir = \"{}\"\n[ops]\nlisten = \"{}\"\n\
             [web]\nenabled = false\n[sync]\nbroker = \"{}\"\ntelemetry_secs = 2\n\
             [sip]\nlisten = \"127.0.0.1:{}\"\nt1_ms = 50\n\
             [sip.probe]\ninterval_s = 1\nfailures_to_down = 1\nsuccesses_to_up = 1\n\
             [[sip.trunks]]\nname = \"carrier-alive\"\naddress = \"127.0.0.1:{alive}\"\n\
             max_channels = 4\nmax_cps = 2\n\
             [[sip.trunks]]\nname = \"carrier-silent\"\naddress = \"127.0.0.1:{silent}\"\n\
             max_channels = 4\nmax_cps = 2\n",
            w.path("branch-1").display(),
            free_loopback_addr(),
            w.broker_addr,
            free_udp_port()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(w.path("branch-1.log")).unwrap();
    let _daemon = Load(
        Command::new(binary("callgate-appliance"))
            .arg("-c")
            .arg(w.appliance_config("branch-1"))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://{console}");
    let start = Instant::now();
    let cookie = loop {
        if let Ok(r) = client
            .post(format!("{base}/login"))
            .form(&[("username", "hq"), ("password", PASSWORD)])
            .send()
            .await
        {
            assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "login refused");
            let set = r.headers()["set-cookie"].to_str().unwrap();
            break set.split(';').next().unwrap().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the console never came up\n{}",
            w.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Poll the fleet page until the silent carrier is reported down (a probe takes up to
    // 64 × T1 to time out) while the answering one is up.
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let page = client
            .get(format!("{base}/fleet"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(row) = fleet_row(&page, "branch-1") {
            if row.contains("carrier-silent down") {
                assert!(
                    row.contains("carrier-alive up ASR – PDD –, 0 calls"),
                    "the answering carrier is up with no calls: {row}"
                );
                assert!(row.contains("carrier-silent down ASR – PDD –, 0 calls"));
                break;
            }
            last = row.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the fleet never showed the silent trunk down; last row: {last}\n\
             --- appliance log:\n{}\n--- coordinator log:\n{}",
            w.log("branch-1"),
            w.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
