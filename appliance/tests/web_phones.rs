//! Phone and trunk edits in the web UI reach the agents' SIP side of the running daemon at
//! once, against real SIPp phones and callers: a phone added in the editor registers
//! straight away, a removed one is refused (404) from then on; a trunk added in the editor
//! makes its address an allowed inbound source at once (403 before, admitted after); a
//! registered phone's address stays an allowed source across a trunk edit.

mod common;
mod sip_support;

use common::Appliance;
use reqwest::StatusCode;
use sip_support::{free_udp_port, scenario, Sipp};

const PHONE_PASSWORD: &str = "desk-phone-pw";

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 32].to_string()
}

fn free_even_port() -> u16 {
    loop {
        let p = free_udp_port();
        if p % 2 == 0 && p < 59_000 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// The daemon with `[sip]` (one trunk on 127.0.0.3, nothing listening: no probes), phone
/// `desk1`, and the agents' SIP side; unknown inbound sources get 403.
async fn daemon() -> (Appliance, std::net::SocketAddr) {
    let agents_sip: std::net::SocketAddr =
        format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let dialer_rtp = free_even_port();
    let agents_rtp = if free_even_port().abs_diff(dialer_rtp) < 400 {
        dialer_rtp.wrapping_add(400).min(58_000) & !1
    } else {
        free_even_port()
    };
    let extra = format!(
        "[board]\nkind = \"none\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [sip.inbound]\nunknown_source = \"reject\"\nper_source_rate = 20\nper_source_burst = 40\n\
         [[sip.trunks]]\nname = \"carrier\"\naddress = \"127.0.0.3:5060\"\nmax_channels = 2\nmax_cps = 1\n\
         [[sip.phones]]\nusername = \"desk1\"\npassword = \"{PHONE_PASSWORD}\"\n\
         [dialer]\nrtp_first_port = {dialer_rtp}\nrtp_last_port = {dialer_last}\n\
         [agents]\nsip_listen = \"{agents_sip}\"\nrtp_first_port = {agents_rtp}\nrtp_last_port = {agents_last}\n\
         digest_algorithms = [\"MD5\"]\n",
        sip = free_udp_port(),
        dialer_last = dialer_rtp + 99,
        agents_last = agents_rtp + 99,
    );
    let b = Appliance::start_with(&extra).await;
    b.set_up().await;
    (b, agents_sip)
}

/// A SIPp phone registering as `user` with the phones' password; `expect_refusal`: the
/// scenario that expects 404 for an unknown account instead.
async fn register(
    box_addr: std::net::SocketAddr,
    user: &str,
    expect_refusal: bool,
) -> (bool, String) {
    let file = if expect_refusal {
        "phone_register_refused.xml"
    } else {
        "agent_phone_register.xml"
    };
    Sipp::start_on(
        free_udp_port(),
        &["-sf", &scenario(file), &box_addr.to_string()],
        &["-m", "1", "-s", user, "-au", user, "-ap", PHONE_PASSWORD],
    )
    .passed()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_added_in_the_editor_registers_at_once_and_a_removed_one_is_refused() {
    let (b, agents_sip) = daemon().await;
    let cookie = b.log_in().await;
    let html = b.get("/trunks", Some(&cookie)).await.text().await.unwrap();
    assert!(
        html.contains("Phone changes go to the running registrar at once"),
        "{html}"
    );
    let csrf = csrf_of(&html);

    // desk2 is unknown before the edit; desk1 (from the config) registers.
    let (ok, errors) = register(agents_sip, "desk2", true).await;
    assert!(ok, "desk2 is refused before it is added: {errors}");
    let (ok, errors) = register(agents_sip, "desk1", false).await;
    assert!(ok, "desk1 registers: {errors}");

    let r = b
        .post(
            "/phones/save",
            Some(&cookie),
            &[
                ("csrf", csrf.as_str()),
                ("original", ""),
                ("username", "desk2"),
                ("password", PHONE_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Phone desk2 saved. The running SIP engine uses it now"),
        "{html}"
    );
    let (ok, errors) = register(agents_sip, "desk2", false).await;
    assert!(
        ok,
        "desk2 registers right after the edit, no restart: {errors}"
    );

    let r = b
        .post(
            "/phones/remove",
            Some(&cookie),
            &[("csrf", csrf.as_str()), ("name", "desk1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Phone desk1 removed. The running SIP engine uses it now"),
        "{html}"
    );
    let (ok, errors) = register(agents_sip, "desk1", true).await;
    assert!(ok, "desk1 is refused right after its removal: {errors}");
    // The kept phone is unaffected by the other's removal.
    let (ok, errors) = register(agents_sip, "desk2", false).await;
    assert!(ok, "desk2 still registers: {errors}");
    let log = std::fs::read_to_string(b.dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("removed phones' registrations dropped") && log.contains("desk1"),
        "desk1's registration was dropped: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_added_in_the_editor_is_an_allowed_inbound_source_at_once() {
    let (b, agents_sip) = daemon().await;
    let cookie = b.log_in().await;
    let html = b.get("/trunks", Some(&cookie)).await.text().await.unwrap();
    let csrf = csrf_of(&html);
    let call = |file: &'static str| {
        let target = agents_sip.to_string();
        async move {
            Sipp::start_on(
                free_udp_port(),
                &["-sf", &scenario(file), &target],
                &["-m", "1", "-s", "4930123"],
            )
            .passed()
            .await
        }
    };
    // SIPp calls from 127.0.0.1, which no trunk has: refused.
    let (ok, errors) = call("uac_expect_refusal.xml").await;
    assert!(ok, "403 before the edit: {errors}");

    let address = format!("127.0.0.1:{}", free_udp_port());
    let r = b
        .post(
            "/trunks/save",
            Some(&cookie),
            &[
                ("csrf", csrf.as_str()),
                ("original", ""),
                ("name", "second"),
                ("address", address.as_str()),
                ("domain", ""),
                ("username", ""),
                ("password", ""),
                ("max_channels", "2"),
                ("max_cps", "1"),
                ("priority", "0"),
                ("weight", "1"),
            ],
        )
        .await;
    let status = r.status();
    let html = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Trunk second saved. The running SIP engine uses it now"),
        "{html}"
    );
    // Now admitted: the gate lets it through and the route table (empty) answers 404.
    let (ok, errors) = call("uac_expect_no_route.xml").await;
    assert!(
        ok,
        "admitted after the edit (404: no route), not 403: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_phones_address_stays_an_allowed_source_across_a_trunk_edit() {
    let (b, agents_sip) = daemon().await;
    let cookie = b.log_in().await;
    let html = b.get("/trunks", Some(&cookie)).await.text().await.unwrap();
    let csrf = csrf_of(&html);
    let call = |file: &'static str| {
        let target = agents_sip.to_string();
        async move {
            Sipp::start_on(
                free_udp_port(),
                &["-sf", &scenario(file), &target],
                &["-m", "1", "-s", "4930123"],
            )
            .passed()
            .await
        }
    };
    // 127.0.0.1 is no trunk's address: refused until a phone registers from it.
    let (ok, errors) = call("uac_expect_refusal.xml").await;
    assert!(ok, "403 before the phone registers: {errors}");
    let (ok, errors) = register(agents_sip, "desk1", false).await;
    assert!(ok, "desk1 registers: {errors}");
    let (ok, errors) = call("uac_expect_no_route.xml").await;
    assert!(
        ok,
        "the phone's address is admitted (404: no route): {errors}"
    );

    // The trunk moves to another address: the inbound gate gets the new trunk list...
    let r = b
        .post(
            "/trunks/save",
            Some(&cookie),
            &[
                ("csrf", csrf.as_str()),
                ("original", "carrier"),
                ("name", "carrier"),
                ("address", "127.0.0.4:5060"),
                ("domain", ""),
                ("username", ""),
                ("password", ""),
                ("max_channels", "2"),
                ("max_cps", "1"),
                ("priority", "0"),
                ("weight", "1"),
            ],
        )
        .await;
    let status = r.status();
    let html = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Trunk carrier saved. The running SIP engine uses it now"),
        "{html}"
    );
    // ...and still lets the registered phone's address through, with no new REGISTER.
    let (ok, errors) = call("uac_expect_no_route.xml").await;
    assert!(
        ok,
        "the registered phone's address is still admitted after the trunk edit: {errors}"
    );
}
