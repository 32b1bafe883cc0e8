//! Editing a trunk in the web UI while the daemon's SIP engine carries a call through a real
//! SIPp carrier: a bad value is refused naming the field and changes nothing; a good one is
//! written as the overlay and applied at once; the call in progress ends normally on the old
//! carrier and the next call goes to the new one; the change is in the audit log. A trunk
//! moved in the form to a host name over TCP takes the next call over TCP.

mod common;
mod dialer_support;
mod sip_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use common::Appliance;
use dialer_support::{agentless_brief, all_day, grant, lease};
use reqwest::StatusCode;
use sip_support::{free_udp_port, Sipp};
use std::time::{Duration, Instant};

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 32].to_string()
}

/// `seconds` of 8 kHz mono PCM16 silence as a WAV file.
fn silent_wav(seconds: u32) -> Vec<u8> {
    let data = seconds * 8_000 * 2;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8_000u32.to_le_bytes());
    w.extend_from_slice(&16_000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data.to_le_bytes());
    w.resize(w.len() + data as usize, 0);
    w
}

/// A SIPp UAS for exactly one call (built-in `uas`: answers, waits for our BYE).
fn carrier() -> Sipp {
    Sipp::start_on(
        free_udp_port(),
        &["-sn", "uas"],
        &["-m", "1", "-mp", &free_udp_port().to_string()],
    )
}

fn trunk_form<'a>(csrf: &'a str, address: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("original", "carrier"),
        ("name", "carrier"),
        ("address", address),
        ("domain", ""),
        ("username", ""),
        ("password", ""),
        ("max_channels", "1"),
        ("max_cps", "5"),
        ("priority", "0"),
        ("weight", "1"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_edit_keeps_the_call_in_progress_and_the_next_call_uses_the_new_trunk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..2, hour, |_| false),
            // One call at a time: the second contact waits for the first call to end.
            grant(1, hour),
        ] {
            assert!(store::apply_now(store.pool(), &body).await.unwrap());
        }
        store.pool().close().await;
    }
    // Each answered call hears 6 s of announcement, then the box hangs up.
    let prompt = dir.path().join("prompt.wav");
    std::fs::write(&prompt, silent_wav(6)).unwrap();
    let (old, new) = (carrier(), carrier());
    let old_addr = old.addr.to_string();
    let rtp = (free_udp_port() & !1).min(60_000);
    let extra = format!(
        "[log]\nlevel = \"callgate_appliance=debug,info\"\n[sip]\nlisten = \"127.0.0.1:{sip}\"\n\n[[sip.trunks]]\nname = \"carrier\"\n\
         address = \"{old}\"\nmax_channels = 1\nmax_cps = 5\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 10\n\
         announcement = \"{prompt}\"\n",
        sip = free_udp_port(),
        old = old.addr,
        last = rtp + 99,
        prompt = prompt.display(),
    );
    let b = Appliance::start_in(dir, &extra).await;
    b.set_up().await;
    let cookie = b.log_in().await;

    // The daemon dials the first contact through the old carrier; the status page shows it.
    let start = Instant::now();
    loop {
        let html = b.get("/status", Some(&cookie)).await.text().await.unwrap();
        if html.contains("id=\"calls\">1 in progress (1 on carrier)<") {
            assert!(
                html.contains(&format!("carrier {}: up", old.addr)),
                "{html}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no call in progress on the status page: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let html = b.get("/trunks", Some(&cookie)).await.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{}\"", old.addr)), "{html}");
    let csrf = csrf_of(&html);
    let overlay = b.dir.path().join("data/sip-overlay.toml");

    // A bad address: refused beside the field, nothing written or applied.
    let r = b
        .post(
            "/trunks/save",
            Some(&cookie),
            &trunk_form(&csrf, "carrier.example:5060"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<span class=\"field-error\" data-field=\"address\" role=\"alert\">Address:"),
        "{html}"
    );
    assert!(html.contains("Nothing was changed."), "{html}");
    assert!(!overlay.exists(), "a refused edit writes nothing");

    // A transport that is not one, and a host name that does not resolve: each refused
    // beside its own field, nothing written.
    let old_text = old.addr.to_string();
    let mut bad_transport = trunk_form(&csrf, &old_text);
    bad_transport.push(("transport", "sctp"));
    let mut bad_host = trunk_form(&csrf, "");
    bad_host.push(("host", "nonexistent.invalid"));
    for (field, form) in [("transport", bad_transport), ("host", bad_host)] {
        let r = b.post("/trunks/save", Some(&cookie), &form).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains(&format!(
                "<span class=\"field-error\" data-field=\"{field}\" role=\"alert\">"
            )),
            "{html}"
        );
        assert!(!overlay.exists(), "a refused {field} writes nothing");
    }
    let html = b.get("/trunks", Some(&cookie)).await.text().await.unwrap();
    assert!(
        html.contains(&format!("value=\"{}\"", old.addr)),
        "the stored address is still shown: {html}"
    );

    // The good edit moves the trunk to the new carrier while the first call is still up.
    let new_addr = new.addr.to_string();
    let r = b
        .post("/trunks/save", Some(&cookie), &trunk_form(&csrf, &new_addr))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("The running SIP engine uses it now; calls in progress continue."),
        "{html}"
    );
    let written = std::fs::read_to_string(&overlay).unwrap();
    assert!(written.contains(&new_addr), "{written}");
    let status = b.get("/status", Some(&cookie)).await.text().await.unwrap();
    assert!(
        status.contains("id=\"calls\">1 in progress (1 on carrier)<"),
        "the call survived the edit: {status}"
    );

    // The first call ends normally on the old carrier (our BYE, its 200): SIPp's one call
    // passed. The second contact is then dialled through the new carrier, which passes too.
    let (ok, errors) = old.passed().await;
    assert!(ok, "the old carrier's call did not complete: {errors}");
    let (ok, errors) = new.passed().await;
    let logs = b
        .get("/logs.txt", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        ok,
        "the new carrier got no complete call: {errors}\ndaemon log:\n{logs}"
    );
    let audit = logs
        .lines()
        .find(|l| l.contains("audit: trunk changed from the web UI"))
        .unwrap_or_else(|| panic!("no audit line in the log:\n{logs}"));
    assert!(
        audit.contains("tech") && audit.contains(&format!("address {old_addr} -> {new_addr}")),
        "{audit}"
    );
}

/// A SIPp UAS over TCP only (no UDP socket for SIP) for exactly one call.
fn tcp_carrier() -> (Sipp, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sipp = Sipp::start_on(
        port,
        &["-sn", "uas"],
        &["-t", "t1", "-m", "1", "-mp", &free_udp_port().to_string()],
    );
    (sipp, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_moved_to_a_host_name_over_tcp_in_the_form_takes_the_next_call_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..2, hour, |_| false),
            // One call at a time: the second contact waits for the first call to end.
            grant(1, hour),
        ] {
            assert!(store::apply_now(store.pool(), &body).await.unwrap());
        }
        store.pool().close().await;
    }
    let prompt = dir.path().join("prompt.wav");
    std::fs::write(&prompt, silent_wav(4)).unwrap();
    let old = carrier();
    let (new, new_port) = tcp_carrier();
    let rtp = (free_udp_port() & !1).min(60_000);
    let extra = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\n\n[[sip.trunks]]\nname = \"carrier\"\n\
         address = \"{old}\"\nmax_channels = 1\nmax_cps = 5\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 10\n\
         announcement = \"{prompt}\"\n",
        sip = free_udp_port(),
        old = old.addr,
        last = rtp + 99,
        prompt = prompt.display(),
    );
    let b = Appliance::start_in(dir, &extra).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let start = Instant::now();
    loop {
        let html = b.get("/status", Some(&cookie)).await.text().await.unwrap();
        if html.contains("id=\"calls\">1 in progress (1 on carrier)<") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no call in progress on the status page: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let html = b.get("/trunks", Some(&cookie)).await.text().await.unwrap();
    assert!(
        html.contains("name=\"transport\" type=\"text\" value=\"udp\""),
        "{html}"
    );
    let csrf = csrf_of(&html);
    let host = format!("localhost:{new_port}");
    let mut form = trunk_form(&csrf, "");
    form.push(("host", &host));
    form.push(("transport", "tcp"));
    let r = b.post("/trunks/save", Some(&cookie), &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("The running SIP engine uses it now; calls in progress continue."),
        "{html}"
    );
    let written = std::fs::read_to_string(b.dir.path().join("data/sip-overlay.toml")).unwrap();
    assert!(
        written.contains(&format!("host = \"{host}\"")) && written.contains("transport = \"tcp\""),
        "{written}"
    );
    // The call in progress ends on the old carrier; the next one reaches the new carrier,
    // which listens over TCP only.
    let (ok, errors) = old.passed().await;
    assert!(ok, "the old carrier's call did not complete: {errors}");
    let (ok, errors) = new.passed().await;
    let logs = b
        .get("/logs.txt", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        ok,
        "the new carrier got no complete call over TCP: {errors}\ndaemon log:\n{logs}"
    );
    assert!(
        logs.contains(&format!("host  -> {host}, transport udp -> tcp")),
        "the audit line names the new host and transport:\n{logs}"
    );
}
