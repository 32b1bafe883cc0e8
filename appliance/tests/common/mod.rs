//! Shared harness for the web UI tests: starts the real `callgate-appliance` binary with a
//! throw-away data directory and an HTTPS client that trusts exactly the box's certificate.
#![allow(dead_code, unreachable_pub)]

pub mod browser;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Appliance {
    child: Child,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: Client,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const PASSWORD: &str = "correct horse battery";

impl Appliance {
    pub async fn start() -> Appliance {
        Appliance::start_with("").await
    }

    /// Starts the box with `extra` TOML appended to the config (e.g. a `[sip]` section).
    pub async fn start_with(extra: &str) -> Appliance {
        Appliance::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// Like [`Appliance::start_with`], in `dir` (whose `data/` a test may have seeded).
    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Appliance {
        Appliance::start_in_env(dir, extra, &[]).await
    }

    /// Like [`Appliance::start_in`], with `env` set for the daemon (e.g. `HOME` for its
    /// `~/.asoundrc`).
    pub async fn start_in_env(
        dir: tempfile::TempDir,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Appliance {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (web, ops) = (free_port(), free_port());
        let config = format!(
            "[appliance]\nid = \"branch-web\"\ndata_dir = \"data\"\n\
             [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
             [web]\nlisten = \"127.0.0.1:{web}\"\nsession_idle_minutes = 5\n{extra}"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
            .args(["--config", "config.toml", "run"])
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let cert_path = dir.path().join("data/web/cert.pem");
        let base = format!("https://127.0.0.1:{web}");
        let start = Instant::now();
        // The certificate is written before the listener binds; the client trusts exactly it,
        // so the test also proves the certificate covers 127.0.0.1.
        let client = loop {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "web UI did not come up; daemon log:\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            );
            if let Ok(pem) = std::fs::read(&cert_path) {
                let cert = reqwest::Certificate::from_pem(&pem).unwrap();
                let client = Client::builder()
                    .add_root_certificate(cert)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                if client.get(format!("{base}/login")).send().await.is_ok() {
                    break client;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Appliance {
            child,
            dir,
            base,
            client,
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn setup_code(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/setup-code"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).form(form);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    pub async fn set_up(&self) {
        let code = self.setup_code();
        let r = self
            .post(
                "/setup",
                None,
                &[
                    ("setup_code", &code),
                    ("username", "tech"),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", self.log());
    }

    /// Logs in; returns the `cg_session=...` cookie pair.
    pub async fn log_in(&self) -> String {
        let r = self
            .post(
                "/login",
                None,
                &[("username", "tech"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        set.split(';').next().unwrap().to_string()
    }

    /// Waits until the UI answers again (after a restart in place), at most 30 s.
    pub async fn wait_until_up(&self) {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        while self.client.get(self.url("/login")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the UI did not come back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.dir.path().join("data/identity")
    }
}
