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
            listen_is_default: false,
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

/// The new-campaign form as the console fills it, with `changes` applied.
pub async fn form(admin: &Client, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let page = admin.get("/campaigns/new").await;
    assert_eq!(page.status, StatusCode::OK);
    let mut fields = vec![
        ("name", "Renewals"),
        ("kind", "service"),
        ("dial_mode", "progressive"),
        ("compliance_profile_id", "1"),
        ("starts_on", ""),
        ("ends_on", ""),
        ("calling_window.start", "08:00"),
        ("calling_window.end", "21:00"),
        ("calling_window.days", "0"),
        ("calling_window.days", "1"),
        ("calling_window.days", "2"),
        ("calling_window.holidays", "2026-12-25"),
        ("caller_id", "+14155550100"),
        ("script", "Hello {first_name}"),
        ("disposition_codes", "sale, callback"),
        ("conversion_dispositions", "sale"),
        ("wrap_up_seconds", "20"),
        ("priority_weights.urgency", "0.6"),
        ("priority_weights.customer_value", "0.4"),
        ("appliances", "branch-1 2\nbranch-2 1"),
        ("recording_consent_announcement", "1"),
    ];
    let retries = [
        "retry.busy",
        "retry.no_answer",
        "retry.failed",
        "retry.machine",
    ];
    let mut owned: Vec<(String, String)> = fields
        .drain(..)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for r in retries {
        owned.push((format!("{r}.delay_seconds"), "300".into()));
        owned.push((format!("{r}.backoff"), "2".into()));
        owned.push((format!("{r}.max_attempts"), "3".into()));
    }
    for (k, v) in changes {
        match owned.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => owned.push((k.to_string(), v.to_string())),
        }
    }
    owned
}

pub fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Simulated appliance traffic, applied through the coordinator's own uplink apply path
/// (`sync::apply::apply_uplink`), exactly as the MQTT link applies it.
pub mod uplink {
    use callgate_common::ids::{
        AgentId, ApplianceId, AttemptId, CallId, CampaignId, ContactId, LeaseId, TrunkId,
    };
    use callgate_common::time::UnixMillis;
    use callgate_common::wire::{
        AttemptResult, CallOutcome, CallRecord, Direction, Telemetry, TrunkHealth, Uplink,
        UplinkEnvelope,
    };
    use callgate_coordinator::store::Store;
    use callgate_coordinator::sync::apply::{apply_uplink, high_water, Applied};

    async fn send(store: &Store, app: &str, body: Uplink) {
        send_at(store, app, body, UnixMillis::now()).await;
    }

    async fn send_at(store: &Store, app: &str, body: Uplink, now: UnixMillis) {
        let app = ApplianceId::new(app).unwrap();
        let seq = high_water(store.pool(), &app).await.unwrap() + 1;
        let env = UplinkEnvelope::new(app, seq, now, body);
        let applied = apply_uplink(store.pool(), &env, now, 0).await.unwrap();
        assert_eq!(applied, Applied::Stored { seq });
    }

    /// One finished attempt (and its call record when answered) on `campaign`.
    pub async fn attempt(
        store: &Store,
        app: &str,
        campaign: i64,
        contact: u64,
        outcome: CallOutcome,
    ) {
        attempt_with(store, app, campaign, contact, outcome, None).await;
    }

    /// [`attempt`] whose call the agent closed with `disposition`.
    pub async fn attempt_with(
        store: &Store,
        app: &str,
        campaign: i64,
        contact: u64,
        outcome: CallOutcome,
        disposition: Option<&str>,
    ) {
        let now = UnixMillis::now();
        let call = CallId::new_v7();
        let attempt = AttemptId::new_v7();
        let answered = matches!(
            outcome,
            CallOutcome::AnsweredHuman | CallOutcome::AnsweredMachine | CallOutcome::Abandoned
        );
        send(
            store,
            app,
            Uplink::AttemptResult(AttemptResult {
                attempt,
                call: Some(call),
                campaign: CampaignId(campaign as u64),
                contact: ContactId(contact),
                lease: LeaseId(1),
                trunk: Some(TrunkId::new("carrier-a").unwrap()),
                started_at: UnixMillis(now.0 - 60_000),
                ended_at: now,
                outcome,
                sip_status: None,
                post_dial_delay_ms: Some(1800),
            }),
        )
        .await;
        if answered {
            send(
                store,
                app,
                Uplink::CallRecord(CallRecord {
                    call,
                    attempt: Some(attempt),
                    campaign: Some(CampaignId(campaign as u64)),
                    contact: Some(ContactId(contact)),
                    direction: Direction::Outbound,
                    trunk: Some(TrunkId::new("carrier-a").unwrap()),
                    remote: None,
                    agent: (outcome == CallOutcome::AnsweredHuman).then_some(AgentId(7)),
                    started_at: UnixMillis(now.0 - 60_000),
                    answered_at: Some(UnixMillis(now.0 - 50_000)),
                    ended_at: now,
                    outcome,
                    sip_status: None,
                    disposition: disposition.map(str::to_string),
                    recording_segments: 0,
                    quality: None,
                }),
            )
            .await;
        }
    }

    /// Agent `agent` of `app` entered `state` at `at`.
    pub async fn agent_event(
        store: &Store,
        app: &str,
        agent: u64,
        state: callgate_common::wire::AgentState,
        at: UnixMillis,
    ) {
        agent_event_on(store, app, agent, state, at, None).await;
    }

    /// An agent's state change on a call of `campaign`.
    pub async fn agent_event_on(
        store: &Store,
        app: &str,
        agent: u64,
        state: callgate_common::wire::AgentState,
        at: UnixMillis,
        campaign: Option<i64>,
    ) {
        send(
            store,
            app,
            Uplink::AgentEvent(callgate_common::wire::AgentEvent {
                agent: AgentId(agent),
                state,
                at,
                call: None,
                campaign: campaign.map(|c| callgate_common::ids::CampaignId(c as u64)),
            }),
        )
        .await;
    }

    /// A box's calls up per campaign (`(campaign, calls)`), received at `at`.
    pub async fn campaign_calls_at(store: &Store, app: &str, calls: &[(i64, u32)], at: UnixMillis) {
        send_at(
            store,
            app,
            Uplink::CampaignCalls(
                calls
                    .iter()
                    .map(|&(c, n)| callgate_common::wire::CampaignCalls {
                        campaign: callgate_common::ids::CampaignId(c as u64),
                        calls: n,
                    })
                    .collect(),
            ),
            at,
        )
        .await;
    }

    /// A telemetry report received now: `calls` up, `agents` ready.
    pub async fn telemetry(store: &Store, app: &str, calls: u32, agents: u32) {
        telemetry_at(store, app, calls, agents, UnixMillis::now()).await;
    }

    /// A telemetry report received at `at`.
    pub async fn telemetry_at(store: &Store, app: &str, calls: u32, agents: u32, at: UnixMillis) {
        send_at(
            store,
            app,
            Uplink::Telemetry(Telemetry {
                active_calls: calls,
                agents_ready: agents,
                trunks: vec![TrunkHealth {
                    trunk: TrunkId::new("carrier-a").unwrap(),
                    up: true,
                    active_calls: calls,
                    asr_permille: Some(450),
                    pdd_ms: Some(1800),
                }],
                disk_used_percent: 10,
                temperature_decicelsius: None,
                outbox_depth: 0,
            }),
            at,
        )
        .await;
    }
}
