//! Shared setup for the console tests: an HQ console served in-process over HTTPS on a
//! free loopback port, on a fresh SQLite or PostgreSQL store, and a small cookie-keeping
//! HTTP client that reads CSRF tokens out of pages.

#![allow(dead_code, unreachable_pub)]

use callgate_common::store::Backend;
use callgate_coordinator::console::{auth::SessionPolicy, Console, ConsoleSettings};
use callgate_coordinator::store::Store;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running console.
pub struct Hq {
    pub store: Store,
    pub base: String,
    /// The first admin's generated password.
    pub admin_password: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Hq {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Hq {
    /// A console on a fresh SQLite store.
    pub async fn start() -> Hq {
        Hq::start_on(Backend::Sqlite).await
    }

    /// A console on a fresh store of `backend`.
    pub async fn start_on(backend: Backend) -> Hq {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                Some(callgate_system_tests::postgres::shared_cluster().fresh_database())
            }
        };
        let store = Store::open(dir.path(), url.as_deref()).await.unwrap();
        let settings = ConsoleSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            certificate_files: None,
            certificate_names: vec!["localhost".into(), "127.0.0.1".into()],
            sessions: SessionPolicy::default(),
            data_dir: dir.path().to_path_buf(),
        };
        let console = Console::bind(&settings, store.clone()).await.unwrap();
        let (user, admin_password) = console
            .first_admin()
            .cloned()
            .expect("a first admin on a fresh store");
        assert_eq!(user, "admin");
        let addr = console.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(console.serve(async move {
            let _ = stopped.await;
        }));
        Hq {
            store,
            base: format!("https://{addr}"),
            admin_password,
            dir,
            stop: Some(stop),
        }
    }

    /// A client with no session.
    pub fn anonymous(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: self.base.clone(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// A client logged in as `user`.
    pub async fn login(&self, user: &str, password: &str) -> Client {
        let mut c = self.anonymous();
        let r = c
            .post("/login", &[("username", user), ("password", password)])
            .await;
        assert_eq!(
            r.status,
            StatusCode::SEE_OTHER,
            "login as {user}: {}",
            r.body
        );
        c.cookie = Some(r.cookie.expect("a session cookie"));
        let page = c.get("/campaigns").await;
        c.csrf = csrf_of(&page.body);
        c
    }

    /// A client logged in as the first admin.
    pub async fn admin(&self) -> Client {
        self.login("admin", &self.admin_password.clone()).await
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 32].to_string()
}

/// One response, read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub cookie: Option<String>,
    pub set_cookie: Option<String>,
    pub body: String,
}

/// A cookie-keeping client.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl Client {
    async fn read(r: reqwest::Response) -> Reply {
        let set_cookie = r
            .headers()
            .get(SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_string());
        Reply {
            status: r.status(),
            location: r
                .headers()
                .get(LOCATION)
                .map(|v| v.to_str().unwrap().to_string()),
            cookie: set_cookie
                .as_deref()
                .and_then(|c| c.split(';').next())
                .map(str::to_string),
            set_cookie,
            body: r.text().await.unwrap(),
        }
    }

    fn with_cookie(&self, b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => b.header(COOKIE, c),
            None => b,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        let b = self.with_cookie(self.http.get(format!("{}{path}", self.base)));
        Client::read(b.send().await.unwrap()).await
    }

    /// Posts a form as is (the caller adds `csrf` when it wants one).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let b = self.with_cookie(self.http.post(format!("{}{path}", self.base)).form(form));
        Client::read(b.send().await.unwrap()).await
    }

    /// Posts a form with this session's CSRF token added.
    pub async fn submit(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let mut all: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(form);
        self.post(path, &all).await
    }
}
