//! HQ watches the live dashboard in headless Chromium while the demo's simulated calls run:
//! the real coordinator, an enrolled appliance daemon dialling the simulated carrier and
//! simulated agents answering. Without a reload, the page's attempt count grows and the
//! campaign's "calls in progress" cell shows the calls the box reports as they happen.

use callgate_system_tests::browser::Browser;
use callgate_system_tests::demo::{url_in, Demo};
use fantoccini::Locator;
use std::time::{Duration, Instant};

/// The text of the first element matching `css`, or `None` while there is none.
async fn text(b: &Browser, css: &str) -> Option<String> {
    let el = b.client.find(Locator::Css(css)).await.ok()?;
    el.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_demos_calls_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("demo.log");
    let mut demo = Demo::start(&data, &log, 1);
    let line = demo.line_with("HQ console", Duration::from_secs(180), &log);
    let console = url_in(&line);
    let password = line
        .split("login demo / ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no console login in {line:?}"))
        .to_string();

    let b = Browser::start().await;
    b.client.goto(&format!("{console}login")).await.unwrap();
    b.fill("login", &[("username", "demo"), ("password", &password)])
        .await;
    b.wait_for_path("/dashboard").await;

    // Watch the page as pushed, never reloading it.
    let campaign_calls = "#live-campaigns tbody tr td:nth-child(3)";
    let started = Instant::now();
    let mut attempts_seen: Vec<u64> = Vec::new();
    let mut most_calls = 0u64;
    let mut updates = std::collections::HashSet::new();
    loop {
        if let Some(a) = text(&b, "[data-live=attempts_24h]").await {
            if let Ok(n) = a.trim().parse::<u64>() {
                if attempts_seen.last() != Some(&n) {
                    attempts_seen.push(n);
                }
            }
        }
        if let Some(c) = text(&b, campaign_calls).await {
            most_calls = most_calls.max(c.trim().parse().unwrap_or(0));
        }
        if let Some(u) = text(&b, "[data-live=updated]").await {
            updates.insert(u);
        }
        let grew = attempts_seen.len() >= 3 && attempts_seen.windows(2).all(|w| w[0] < w[1]);
        if grew && most_calls > 0 && updates.len() >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "after 180 s: attempts shown {attempts_seen:?}, most calls in progress on the \
             campaign {most_calls}, {} distinct update times; demo log:\n{}",
            updates.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        b.client.current_url().await.unwrap().path(),
        "/dashboard",
        "the same page all along"
    );
    let _ = b.client.clone().close().await;
    drop(b);
    let status = demo.interrupt(&log);
    assert!(status.success(), "{status:?}");
}
