//! The local web UI in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/setup`) driven over WebDriver through first-boot
//! setup, login, the live status page and logout.

mod common;

use common::browser::{browser, fill, text_of, wait_for_path};
use common::{Appliance, PASSWORD};
use fantoccini::Locator;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_technician_sets_up_logs_in_and_watches_live_status_in_chromium() {
    let b = Appliance::start().await;
    let (_driver, c) = browser().await;

    c.goto(&b.url("/")).await.unwrap();
    wait_for_path(&c, "/setup").await;
    fill(
        &c,
        "setup",
        &[
            ("setup_code", &b.setup_code()),
            ("username", "tech"),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ],
    )
    .await;
    wait_for_path(&c, "/login?created=1").await;
    assert!(text_of(&c, ".notice").await.contains("Account created"));

    fill(
        &c,
        "login",
        &[("username", "tech"), ("password", "not the password")],
    )
    .await;
    assert!(text_of(&c, ".error")
        .await
        .contains("Wrong username or password"));
    fill(&c, "login", &[("username", "tech"), ("password", PASSWORD)]).await;
    wait_for_path(&c, "/status").await;
    assert_eq!(text_of(&c, "[data-live=temperature]").await, "36.5 °C");

    // The page's script keeps it live: the timestamp moves without a reload.
    let first = text_of(&c, "[data-live=updated]").await;
    let start = Instant::now();
    loop {
        let now = text_of(&c, "[data-live=updated]").await;
        if now != first {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "live status never updated from {first}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&c, "/login").await;
    // The cookie is gone from the browser: the status page sends it to the login form.
    c.goto(&b.url("/status")).await.unwrap();
    wait_for_path(&c, "/login").await;
    assert!(c.find(Locator::Css("form#login")).await.is_ok());
    c.close().await.unwrap();
}
