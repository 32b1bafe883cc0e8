//! The diagnostics page's test call, through the real daemon's web UI to a real SIPp
//! carrier: the page shows the outcome and the SIP ladder; a busy carrier's answer is
//! reported; bad form input is refused naming the field.

mod common;
mod sip_support;

use common::Appliance;
use reqwest::StatusCode;
use sip_support::{free_udp_port, Sipp};

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 32].to_string()
}

/// Posts the diagnostics page's test-call form (10 s ring, no hold); the page's status and
/// body.
async fn test_call(
    b: &Appliance,
    cookie: &str,
    csrf: &str,
    trunk: &str,
    to: &str,
) -> (StatusCode, String) {
    let r = b
        .post(
            "/diagnostics/call",
            Some(cookie),
            &[
                ("csrf", csrf),
                ("trunk", trunk),
                ("to", to),
                ("ring_seconds", "10"),
                ("hold_seconds", "0"),
            ],
        )
        .await;
    (r.status(), r.text().await.unwrap())
}

/// The diagnostics page as the logged-in technician sees it.
async fn diagnostics_page(b: &Appliance, cookie: &str) -> String {
    b.get("/diagnostics", Some(cookie))
        .await
        .text()
        .await
        .unwrap()
}

fn sip_section(carrier: std::net::SocketAddr) -> String {
    format!(
        "[sip]\nlisten = \"127.0.0.1:{}\"\n\n[[sip.trunks]]\nname = \"carrier\"\n\
         address = \"{carrier}\"\nmax_channels = 2\nmax_cps = 2\n",
        free_udp_port()
    )
}

#[tokio::test]
async fn a_test_call_from_the_ui_shows_the_ladder_and_the_outcome() {
    let sipp = Sipp::start(&["-sn", "uas"]);
    let b = Appliance::start_with(&sip_section(sipp.addr)).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    assert!(html.contains("<option value=\"carrier\""), "{html}");
    let csrf = csrf_of(&html);
    let status = b.get("/status", Some(&cookie)).await.text().await.unwrap();
    assert!(
        status.contains("id=\"campaigns\">none held<"),
        "the dialler runs with [sip] and holds nothing yet: {status}"
    );

    let (status, html) = test_call(&b, &cookie, &csrf, "carrier", "4930555").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Answered and completed."), "{html}");
    for step in [
        "INVITE sip:4930555@",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:",
        "BYE sip:",
    ] {
        assert!(html.contains(step), "ladder lacks {step}: {html}");
    }
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn a_busy_carrier_and_bad_input_are_reported_on_the_page() {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uas_busy.xml");
    let sipp = Sipp::start(&["-sf", scenario]);
    let b = Appliance::start_with(&sip_section(sipp.addr)).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    let csrf = csrf_of(&html);
    let (status, html) = test_call(&b, &cookie, &csrf, "carrier", "49-30").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("Number: digits only"), "{html}");
    assert!(html.contains("value=\"49-30\""), "what was typed is kept");
    let (status, html) = test_call(&b, &cookie, &csrf, "nobody", "4930555").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("Trunk: no trunk named `nobody`"), "{html}");

    let (status, html) = test_call(&b, &cookie, &csrf, "carrier", "4930555").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Not answered: 486"), "{html}");
    assert!(html.contains("SIP/2.0 486"), "{html}");
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn without_sip_the_page_says_so_and_refuses_a_call() {
    let b = Appliance::start().await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    assert!(html.contains("SIP is not configured"), "{html}");
    let status = b.get("/status", Some(&cookie)).await.text().await.unwrap();
    assert!(
        status.contains("dialler off (no [sip] section)"),
        "{status}"
    );
    let (status, _) = test_call(&b, &cookie, &csrf_of(&html), "carrier", "4930555").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_sip_trace_puts_every_message_in_the_log_only_while_it_is_on() {
    let sipp = Sipp::start_on(free_udp_port(), &["-sn", "uas"], &["-m", "2"]);
    let b = Appliance::start_with(&sip_section(sipp.addr)).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    assert!(html.contains("id=\"trace-on\""), "{html}");
    let csrf = csrf_of(&html);
    let call = |to: &'static str| {
        let (b, cookie, csrf) = (&b, cookie.clone(), csrf.clone());
        async move {
            let (_, html) = test_call(b, &cookie, &csrf, "carrier", to).await;
            assert!(html.contains("Answered and completed."));
        }
    };
    let logged = |q: &'static str| {
        let (b, cookie) = (&b, cookie.clone());
        async move {
            b.get(&format!("/logs.txt?q={q}"), Some(&cookie))
                .await
                .text()
                .await
                .unwrap()
        }
    };

    call("111").await;
    assert!(
        !logged("INVITE+sip:111").await.contains("INVITE sip:111"),
        "no trace, no messages in the log"
    );

    let r = b
        .post(
            "/diagnostics/trace",
            Some(&cookie),
            &[("csrf", &csrf), ("minutes", "61")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Trace minutes"));
    let r = b
        .post(
            "/diagnostics/trace",
            Some(&cookie),
            &[("csrf", &csrf), ("minutes", "5")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("SIP trace is on for 5 minute(s)"), "{html}");
    assert!(html.contains("id=\"trace-off\""), "{html}");

    call("222").await;
    let text = logged("sip:222").await;
    assert!(text.contains("INVITE sip:222"), "{text}");
    assert!(logged("SIP%2F2.0+200+OK").await.contains("SIP/2.0 200 OK"));

    let r = b
        .post(
            "/diagnostics/trace",
            Some(&cookie),
            &[("csrf", &csrf), ("minutes", "0")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("SIP trace is off."), "{html}");
    assert!(html.contains("id=\"trace-on\""), "{html}");
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn ping_reports_replies_and_names_an_unknown_host_and_the_audio_test_says_what_it_found() {
    let sipp = Sipp::start(&["-sn", "uas"]);
    let b = Appliance::start_with(&sip_section(sipp.addr)).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    // The carrier's address is offered, and pinged.
    assert!(html.contains("name=\"host\" value=\"127.0.0.1\""), "{html}");
    let csrf = csrf_of(&html);
    let ping = |host: &'static str| {
        let (b, cookie, csrf) = (&b, cookie.clone(), csrf.clone());
        async move {
            let r = b
                .post(
                    "/diagnostics/ping",
                    Some(&cookie),
                    &[("csrf", &csrf), ("host", host)],
                )
                .await;
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, html) = ping("127.0.0.1").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("127.0.0.1: 5 sent, 5 received, 0% loss; round trip min/avg/max"),
        "{html}"
    );
    let (status, html) = ping("carrier.invalid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("Host `carrier.invalid` is unknown: the box&#x27;s DNS cannot resolve it")
            || html
                .contains("Host `carrier.invalid` is unknown: the box&#39;s DNS cannot resolve it"),
        "{html}"
    );
    let (status, html) = ping("-f").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("Host: `-f` is not a host name"), "{html}");

    // The tech port: ALSA's `null` device stands in for a headset where the build has ALSA;
    // without the feature the page says there is no port to test.
    let device = if cfg!(feature = "alsa") {
        "null"
    } else {
        "default"
    };
    let r = b
        .post(
            "/diagnostics/audio",
            Some(&cookie),
            &[("csrf", &csrf), ("device", device)],
        )
        .await;
    let (status, html) = (r.status(), r.text().await.unwrap());
    if cfg!(feature = "alsa") {
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(
            html.contains("Played 1 s of 1 kHz tone on `null`"),
            "{html}"
        );
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            html.contains("built without tech audio port support"),
            "{html}"
        );
    }
    drop(sipp);
}

#[tokio::test]
async fn the_test_call_measures_its_audio_against_an_echoing_carrier() {
    // SIPp answers and echoes our RTP back.
    let media = loop {
        let p = free_udp_port();
        if p % 2 == 0 && p < 65_000 && std::net::UdpSocket::bind(("127.0.0.1", p + 2)).is_ok() {
            break p;
        }
    };
    let sipp = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uas", "-rtp_echo", "-mi", "127.0.0.1"],
        &["-m", "1", "-mp", &media.to_string()],
    );
    let b = Appliance::start_with(&sip_section(sipp.addr)).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    let csrf = csrf_of(&html);
    let r = b
        .post(
            "/diagnostics/call",
            Some(&cookie),
            &[
                ("csrf", csrf.as_str()),
                ("trunk", "carrier"),
                ("to", "4930555"),
                ("ring_seconds", "10"),
                ("hold_seconds", "3"),
            ],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("Answered and completed."), "{html}");
    let at = html.find("<p id=\"call-audio\">").expect("an audio line") + 19;
    let line = &html[at..at + html[at..].find("</p>").unwrap()];
    // ~150 packets in 3 s at 20 ms; the echo comes back over loopback.
    let sent: u32 = line
        .strip_prefix("Audio: sent ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((120..=160).contains(&sent), "{line}");
    let lost: f64 = line
        .split("packets (")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no receive figures: {line}"));
    assert!(lost < 5.0, "{line}");
    let mos: f64 = line
        .split("estimated MOS ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MOS: {line}"));
    assert!((4.0..=4.5).contains(&mos), "{line}");
    assert!(line.contains("jitter"), "{line}");
    let (ok, errors) = sipp.passed().await;
    assert!(ok, "{errors}");
}

#[tokio::test]
async fn a_trace_for_one_trunk_logs_that_trunks_messages_in_full_and_no_others() {
    let a = Sipp::start_on(free_udp_port(), &["-sn", "uas"], &["-m", "1"]);
    let b_side = Sipp::start_on(free_udp_port(), &["-sn", "uas"], &["-m", "1"]);
    // Both carriers on 127.0.0.1: only the port tells them apart.
    let section = format!(
        "{}\n[[sip.trunks]]\nname = \"carrier-b\"\naddress = \"{}\"\nmax_channels = 2\nmax_cps = 2\n",
        sip_section(a.addr),
        b_side.addr
    );
    let b = Appliance::start_with(&section).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let html = diagnostics_page(&b, &cookie).await;
    assert!(html.contains("value=\"trunk:carrier-b\""), "{html}");
    let csrf = csrf_of(&html);
    let arm = |fields: Vec<(&'static str, &'static str)>| {
        let (b, cookie, csrf) = (&b, cookie.clone(), csrf.clone());
        async move {
            let mut form = vec![("csrf", csrf.as_str())];
            form.extend(fields);
            let r = b.post("/diagnostics/trace", Some(&cookie), &form).await;
            (r.status(), r.text().await.unwrap())
        }
    };
    let traced = || {
        let (b, cookie) = (&b, cookie.clone());
        async move {
            b.get("/logs.txt?q=sip+trace", Some(&cookie))
                .await
                .text()
                .await
                .unwrap()
        }
    };

    // Bad scopes are refused, naming what was wrong; nothing is armed.
    let (status, html) = arm(vec![("scope", "trunk:nobody"), ("minutes", "5")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("no trunk named `nobody`"), "{html}");
    let (status, html) = arm(vec![("scope", "call"), ("call_id", " "), ("minutes", "5")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("Call-ID:"), "{html}");
    assert!(html.contains("id=\"trace-on\""), "still off: {html}");

    let (status, html) = arm(vec![("scope", "trunk:carrier-b"), ("minutes", "5")]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("trunk carrier-b goes to the log in full"),
        "{html}"
    );
    assert!(html.contains("for trunk carrier-b"), "{html}");

    let (_, html) = test_call(&b, &cookie, &csrf, "carrier", "111").await;
    assert!(html.contains("Answered and completed."), "{html}");
    let (_, html) = test_call(&b, &cookie, &csrf, "carrier-b", "222").await;
    assert!(html.contains("Answered and completed."), "{html}");
    let text = traced().await;
    assert!(
        text.contains("INVITE sip:222"),
        "carrier-b's INVITE: {text}"
    );
    assert!(
        text.contains("SIP/2.0 200 OK"),
        "carrier-b's answer: {text}"
    );
    assert!(text.contains("BYE sip:"), "the call's end: {text}");
    assert!(
        !text.contains("INVITE sip:111"),
        "the other trunk's call is not traced: {text}"
    );

    let (_, html) = arm(vec![("minutes", "0")]).await;
    assert!(html.contains("SIP trace is off."), "{html}");
    let (ok, errors) = a.passed().await;
    assert!(ok, "{errors}");
    let (ok, errors) = b_side.passed().await;
    assert!(ok, "{errors}");
}
