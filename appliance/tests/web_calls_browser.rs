//! The status page's call table and the diagnostics page's listen form in headless
//! Chromium: while the daemon's dialer carries a call through a real SIPp carrier, the open
//! page lists it — masked number, trunk, direction, state, since — or offers it to listen
//! to, and, pushed over SSE without a reload, drops it when it ends.

mod common;
mod dialer_support;
mod sip_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use common::browser::{browser, fill, text_of, wait_for_path};
use common::{Appliance, PASSWORD};
use dialer_support::{agentless_brief, all_day, grant, lease, number};
use sip_support::{free_udp_port, Sipp};
use std::time::{Duration, Instant};

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

/// The rows of the call table, each as its cells' text.
async fn call_rows(c: &fantoccini::Client) -> Vec<Vec<String>> {
    let v = c
        .execute(
            "return Array.from(document.querySelectorAll('#call-list tbody tr'))\
             .map(tr => Array.from(tr.cells).map(td => td.textContent));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// A daemon whose dialer calls one contact through a real SIPp carrier: the answered call
/// hears 20 s of announcement (time for the browser to open a page; the SIPp harness gives
/// up after 30 s), then the box hangs up. The technician's account is set up.
async fn a_box_dialling_one_announcement_call() -> (Appliance, Sipp) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    {
        let store = Store::open(&data).await.unwrap();
        for body in [
            agentless_brief(all_day()),
            lease(1, 0..1, hour, |_| false),
            grant(1, hour),
        ] {
            assert!(store::apply_now(store.pool(), &body).await.unwrap());
        }
        store.pool().close().await;
    }
    let prompt = dir.path().join("prompt.wav");
    std::fs::write(&prompt, silent_wav(20)).unwrap();
    let carrier = Sipp::start_on(
        free_udp_port(),
        &["-sn", "uas"],
        &["-m", "1", "-mp", &free_udp_port().to_string()],
    );
    let rtp = (free_udp_port() & !1).min(60_000);
    let extra = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\n\n[[sip.trunks]]\nname = \"carrier\"\n\
         address = \"{carrier}\"\nmax_channels = 1\nmax_cps = 5\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 10\n\
         announcement = \"{prompt}\"\n",
        sip = free_udp_port(),
        carrier = carrier.addr,
        last = rtp + 99,
        prompt = prompt.display(),
    );
    let b = Appliance::start_in(dir, &extra).await;
    b.set_up().await;
    (b, carrier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_status_page_lists_a_call_masked_and_drops_it_when_it_ends() {
    let (b, carrier) = a_box_dialling_one_announcement_call().await;
    let (_driver, c) = browser().await;
    c.goto(&b.url("/login")).await.unwrap();
    fill(&c, "login", &[("username", "tech"), ("password", PASSWORD)]).await;
    wait_for_path(&c, "/status").await;
    c.execute("window.stillTheSamePage = true;", vec![])
        .await
        .unwrap();

    // The call is listed once answered: masked number, the trunk, outbound, up, since.
    let masked = number(0).masked();
    let start = Instant::now();
    let row = loop {
        let rows = call_rows(&c).await;
        if let Some(row) = rows.iter().find(|r| r.len() == 5 && r[3] == "up") {
            break row.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no answered call in the table: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row[0], masked, "{row:?}");
    assert!(!row[0].contains(&number(0).e164()[5..]), "{row:?}");
    assert_eq!(&row[1..4], ["carrier", "outbound", "up"], "{row:?}");
    assert!(
        row[4].contains("UTC (") && row[4].contains(", up "),
        "{row:?}"
    );
    assert!(text_of(&c, "#calls").await.contains("1 in progress"));

    // The box ends the call after its announcement; the open page drops the row.
    let start = Instant::now();
    loop {
        let rows = call_rows(&c).await;
        if rows == [vec!["No calls on the trunks.".to_string()]] {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let updated = text_of(&c, "[data-live=updated]").await;
            let log = std::fs::read_to_string(b.dir.path().join("daemon.log")).unwrap_or_default();
            panic!("the ended call stayed in the table: {rows:?} (page updated {updated})\ndaemon log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let same = c
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same,
        serde_json::Value::Bool(true),
        "the page was not reloaded"
    );
    let (ok, errors) = carrier.passed().await;
    assert!(ok, "the carrier's call did not complete: {errors}");
    c.close().await.unwrap();
}

/// The diagnostics page's listen form as the browser shows it: whether the form and the
/// "no call" note are visible, and the offered calls' labels.
async fn listen_form(c: &fantoccini::Client) -> (bool, bool, Vec<String>) {
    let v = c
        .execute(
            "return [!document.getElementById('listen-form').hidden, \
             !document.getElementById('no-listenable').hidden, \
             Array.from(document.querySelectorAll('#listen-form select option'))\
             .map(o => o.textContent)];",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_diagnostics_page_offers_a_call_to_listen_to_once_answered_and_drops_it_when_it_ends(
) {
    let (b, carrier) = a_box_dialling_one_announcement_call().await;
    let (_driver, c) = browser().await;
    c.goto(&b.url("/login")).await.unwrap();
    fill(&c, "login", &[("username", "tech"), ("password", PASSWORD)]).await;
    wait_for_path(&c, "/status").await;
    c.goto(&b.url("/diagnostics")).await.unwrap();
    c.execute("window.stillTheSamePage = true;", vec![])
        .await
        .unwrap();

    // Offered without a reload once the call's announcement plays: masked number and what.
    let masked = number(0).masked();
    let start = Instant::now();
    let label = loop {
        let (form, none, labels) = listen_form(&c).await;
        if let Some(l) = labels.first() {
            assert!(form && !none, "form shown, note hidden: {form} {none}");
            break l.clone();
        }
        assert!(!form && none, "no call yet: the note, not the form");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no call was ever offered to listen to"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(label.starts_with(&masked), "{label}");
    assert!(!label.contains(&number(0).e164()[5..]), "{label}");

    // The box ends the call after its announcement; the form goes, the note comes back.
    let start = Instant::now();
    loop {
        if listen_form(&c).await == (false, true, Vec::new()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the ended call stayed offered: {:?}",
            listen_form(&c).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let same = c
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same, serde_json::Value::Bool(true), "no reload");
    let (ok, errors) = carrier.passed().await;
    assert!(ok, "the carrier's call did not complete: {errors}");
    c.close().await.unwrap();
}
