//! Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/setup`) driven over WebDriver, and the small steps the browser tests share.

use super::free_port;
use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    /// chromedriver leads its own process group: killing the group ends the Chromium
    /// processes it started too (killing the driver alone would leave them running).
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn browser() -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (package chromium-driver) is installed by scripts/setup");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", driver._profile.path().display()),
    ];
    let caps = serde_json::json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let start = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

pub async fn fill(c: &Client, form: &str, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        let input = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(&format!("form#{form} input[name={name}]")))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    c.find(Locator::Css(&format!("form#{form} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

pub async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn wait_for_path(c: &Client, path: &str) {
    let start = Instant::now();
    loop {
        let url = c.current_url().await.unwrap();
        let here = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        if here == path {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still at {here}, expected {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
