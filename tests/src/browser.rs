//! Headless Chromium for the browser tests: Debian's `chromium` and `chromium-driver`
//! (installed by `scripts/setup`), driven over WebDriver with fantoccini. Each [`Browser`]
//! runs its own chromedriver on a free loopback port with a throw-away profile, and kills
//! it and the browser it started when dropped.

use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process and a Chromium session on it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_process_group(&mut self.driver);
    }
}

/// Kills chromedriver and every Chromium process it started. The driver runs as the
/// leader of its own process group (see [`Browser::start`]); killing only the driver
/// would leave the browser's processes running after the test.
fn kill_process_group(leader: &mut Child) {
    if let Ok(pid) = i32::try_from(leader.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = leader.kill();
    let _ = leader.wait();
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that accepts the self-signed
    /// certificates the products generate (the tests check those certificates separately).
    pub async fn start() -> Browser {
        let port = crate::free_loopback_addr().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (package chromium-driver) is installed by scripts/setup");
        let profile = tempfile::tempdir().expect("temp dir");
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
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = serde_json::json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(_) if start.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start a Chromium session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Fills the named inputs and textareas of `form#{form}` and presses its button.
    pub async fn fill(&self, form: &str, fields: &[(&str, &str)]) {
        for (name, value) in fields {
            let field = self
                .client
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css(&format!(
                    "form#{form} input[name={name}], form#{form} textarea[name={name}]"
                )))
                .await
                .unwrap_or_else(|e| panic!("no field {name} in form#{form}: {e}"));
            field.clear().await.unwrap();
            field.send_keys(value).await.unwrap();
        }
        self.client
            .find(Locator::Css(&format!("form#{form} button")))
            .await
            .unwrap_or_else(|e| panic!("no button in form#{form}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// The text of the first element matching `css`, waiting up to 10 s for it.
    pub async fn text_of(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits until the page's path (and query) is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let start = Instant::now();
        loop {
            let url = self.client.current_url().await.unwrap();
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

    /// First boot of an appliance's web UI at `base`: creates the technician account with
    /// the box's `setup_code` and logs in; ends on the status page.
    pub async fn set_up_appliance(&self, base: &str, setup_code: &str, password: &str) {
        self.client.goto(&format!("{base}/setup")).await.unwrap();
        self.fill(
            "setup",
            &[
                ("setup_code", setup_code.trim()),
                ("username", "tech"),
                ("password", password),
                ("confirm", password),
            ],
        )
        .await;
        self.wait_for_path("/login?created=1").await;
        self.fill("login", &[("username", "tech"), ("password", password)])
            .await;
        self.wait_for_path("/status").await;
    }

    /// Reloads `url` until the element `css` contains `needle`, for at most `limit`;
    /// returns its text.
    pub async fn reload_until(
        &self,
        url: &str,
        css: &str,
        needle: &str,
        limit: Duration,
    ) -> String {
        let start = Instant::now();
        loop {
            if self.client.goto(url).await.is_ok() {
                if let Ok(el) = self.client.find(Locator::Css(css)).await {
                    let text = el.text().await.unwrap_or_default();
                    if text.contains(needle) {
                        return text;
                    }
                    assert!(
                        start.elapsed() < limit,
                        "{css} still says {text:?}, expected {needle:?}"
                    );
                }
            }
            assert!(start.elapsed() < limit, "{url} did not show {css}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
