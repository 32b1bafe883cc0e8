//! Listening to a live dialer call on the tech port's headset, through the real daemon's
//! web UI: the daemon's dialer calls a real SIPp customer who plays a 440 Hz tone while the
//! box plays a silent announcement; the diagnostics page lists the answered call (masked
//! number) and, with the `alsa` feature, plays it on a "headset" that is ALSA's `file`
//! plugin (no sound card here: the daemon's `~/.asoundrc` defines the headset devices).
//! The headset hears the customer's tone; stopping leaves the call up; listening again lasts
//! until the call ends, which ends the listening. Bad input and a missing CSRF token are
//! refused; without the `alsa` feature the page says the firmware has no tech port support.

mod common;
mod dialer_support;
mod robot_support;
mod sip_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::time::UnixMillis;
use callgate_media::tone::{tone_correlation, ToneGenerator};
use common::Appliance;
use dialer_support::{agentless_brief, all_day, grant, lease, number};
use reqwest::StatusCode;
use robot_support::{callee_pcap, Callee, KeyStyle};
use sip_support::free_udp_port;
use std::path::Path;
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

/// The diagnostics page's listen form's calls as (id, label).
fn listed_calls(html: &str) -> Vec<(String, String)> {
    calls_in_form(html, "listen-form")
}

/// The calls offered by the listen form `id` as (id, label).
fn calls_in_form(html: &str, id: &str) -> Vec<(String, String)> {
    let Some(form) = html.find(&format!("id=\"{id}\"")) else {
        return Vec::new();
    };
    let form = &html[form..html[form..]
        .find("</form>")
        .map_or(html.len(), |e| form + e)];
    form.split("<option value=\"")
        .skip(1)
        .map(|o| {
            let (id, rest) = o.split_once("\">").unwrap();
            let label = rest.split("</option>").next().unwrap();
            (id.to_string(), label.to_string())
        })
        .collect()
}

/// The headset line of the diagnostics page.
fn headset_state(html: &str) -> String {
    html.split("<p id=\"headset-state\">")
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .unwrap_or("")
        .to_string()
}

/// A raw S16LE file's samples.
fn samples_of(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The mean 440 Hz share of the non-silent packets, and how many there were.
fn tone_share(samples: &[i16]) -> (f64, usize) {
    let loud: Vec<f64> = samples
        .chunks_exact(160)
        .filter(|w| w.iter().any(|s| s.unsigned_abs() > 1_000))
        .map(|w| tone_correlation(w, 440.0))
        .collect();
    if loud.is_empty() {
        return (0.0, 0);
    }
    (loud.iter().sum::<f64>() / loud.len() as f64, loud.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_call_is_heard_on_the_headset_stopping_leaves_it_up_and_its_end_ends_listening() {
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
    // The box plays 20 s of silence to the answered customer, then hangs up; the customer
    // (SIPp) talks: a 440 Hz tone for longer than that.
    let prompt = dir.path().join("prompt.wav");
    std::fs::write(&prompt, silent_wav(20)).unwrap();
    let tone = ToneGenerator::new(440.0, 8_000).next_samples(8_000 * 40);
    let customer = Callee::start(
        "robot_callee.xml",
        &callee_pcap(&tone, &[], KeyStyle::Rfc4733),
    );
    // The headset: ALSA `file` plugins over `null`, one file per listening.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let root = dir.path().to_path_buf();
    let heard = |n: u32| root.join(format!("headset{n}.raw"));
    let asoundrc: String = (1..=2)
        .map(|n| {
            format!(
                "pcm.callgate_headset{n} {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
                heard(n).display()
            )
        })
        .collect();
    std::fs::write(home.join(".asoundrc"), asoundrc).unwrap();
    let rtp = (free_udp_port() & !1).min(60_000);
    let extra = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\n\n[[sip.trunks]]\nname = \"carrier\"\n\
         address = \"{carrier}\"\nmax_channels = 1\nmax_cps = 5\n\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {last}\nring_timeout_seconds = 10\n\
         announcement = \"{prompt}\"\n",
        sip = free_udp_port(),
        carrier = customer.addr,
        last = rtp + 99,
        prompt = prompt.display(),
    );
    let b = Appliance::start_in_env(dir, &extra, &[("HOME", home.to_str().unwrap())]).await;
    b.set_up().await;
    let cookie = b.log_in().await;
    let page = || async {
        let r = b.get("/diagnostics", Some(&cookie)).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    };

    // The answered call is offered by its masked number.
    let start = Instant::now();
    let (call, label) = loop {
        let html = page().await;
        if let Some(c) = listed_calls(&html).into_iter().next() {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no call to listen to: {}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let answered_at = Instant::now();
    // The status page, under its call list, offers the same call.
    let status = b.get("/status", Some(&cookie)).await.text().await.unwrap();
    let offered = calls_in_form(&status, "status-listen");
    assert_eq!(
        offered.len(),
        1,
        "the status page offers the call: {offered:?}"
    );
    assert_eq!(offered[0].0, call);
    assert!(offered[0].1.starts_with(&number(0).masked()), "{offered:?}");
    assert!(label.starts_with(&number(0).masked()), "{label}");
    assert!(!label.contains(&number(0).e164()[5..]), "{label}");
    assert!(label.contains("announcement"), "{label}");
    let csrf = csrf_of(&page().await);
    let listen = |call: String, device: &'static str, csrf: String| {
        let b = &b;
        let cookie = cookie.clone();
        async move {
            let r = b
                .post(
                    "/diagnostics/listen",
                    Some(&cookie),
                    &[("csrf", &csrf), ("call", &call), ("device", device)],
                )
                .await;
            (r.status(), r.text().await.unwrap())
        }
    };

    // Refused: no CSRF token, a call not in the list, a device that is no ALSA name.
    let (status, _) = listen(call.clone(), "callgate_headset1", "0".repeat(32)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = listen("not-a-call".into(), "callgate_headset1", csrf.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("Call: `not-a-call` is not a call from the list"),
        "{body}"
    );
    let (status, body) = listen(call.clone(), "/dev/dsp; reboot", csrf.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("is not an ALSA device name"), "{body}");
    assert!(!heard(1).exists(), "nothing was opened");

    if !cfg!(feature = "alsa") {
        let (status, body) = listen(call.clone(), "callgate_headset1", csrf.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("built without tech audio port support"),
            "{body}"
        );
        return;
    }

    // Listening: the headset hears the customer's tone.
    let (status, body) = listen(call.clone(), "callgate_headset1", csrf.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Listening to"), "{body}");
    let start = Instant::now();
    while samples_of(&heard(1)).len() < 8_000 * 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the headset got {} samples",
            samples_of(&heard(1)).len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = b
        .post(
            "/diagnostics/headset/stop",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Stopped listening on the headset; the call goes on."),
        "{body}"
    );
    let start = Instant::now();
    let html = loop {
        let html = page().await;
        if headset_state(&html).starts_with("Stopped listening to") {
            break html;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            headset_state(&html)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = samples_of(&heard(1));
    let (share, packets) = tone_share(&first);
    assert!(
        packets >= 50,
        "the customer was heard for {packets} packets"
    );
    assert!(
        share > 0.8,
        "the headset heard the customer's 440 Hz: {share:.2}"
    );
    // The call is untouched: a second later still in progress and listenable.
    assert!(
        !html.contains("the headset is in use now"),
        "the headset is free"
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        listed_calls(&page().await).first().map(|c| c.0.clone()),
        Some(call.clone()),
        "the call went on after the stop"
    );
    assert_eq!(
        samples_of(&heard(1)).len(),
        first.len(),
        "nothing played after the stop"
    );

    // Listening again until the call ends (the box hangs up after the announcement): the
    // call's end ends the listening and frees the headset.
    let (status, body) = listen(call.clone(), "callgate_headset2", csrf.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let start = Instant::now();
    let html = loop {
        let html = page().await;
        if headset_state(&html).starts_with("The call ended") {
            break html;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{}\n{}",
            headset_state(&html),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        answered_at.elapsed() > Duration::from_secs(12),
        "the call ran its announcement, not cut short by the stop"
    );
    assert!(
        listed_calls(&html).is_empty(),
        "the ended call is not offered"
    );
    assert!(
        !html.contains("the headset is in use now"),
        "the headset is free"
    );
    let second = samples_of(&heard(2));
    let (share, packets) = tone_share(&second);
    assert!(packets >= 100, "heard {packets} packets until the end");
    assert!(share > 0.8, "{share:.2}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        samples_of(&heard(2)).len(),
        second.len(),
        "nothing after the end"
    );
    assert!(
        b.log()
            .contains("listening to a call on the headset from the web UI"),
        "the listening is in the log"
    );
    // SIPp got the box's BYE at the end of the announcement (its only notice is where it
    // found the capture).
    let errors = customer.errors();
    assert!(
        !errors.contains("Aborting") && !errors.to_lowercase().contains("unexpected"),
        "the customer's call went as expected: {errors}"
    );
}
