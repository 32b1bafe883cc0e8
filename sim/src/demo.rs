//! The all-in-one demo (`callgate-demo`, the README's first command): in one process, the
//! coordinator all-in-one (embedded MQTT broker, SQLite, HQ console, REST API), one or
//! more appliances enrolled with claim codes, the simulated carrier their trunks point at,
//! a sample contact list imported through the REST API and a campaign created and started
//! — then URLs and logins printed, progress every few seconds, and Ctrl-C stopping
//! everything in order (appliances, carrier, coordinator).
//!
//! The data directory keeps everything between runs (the coordinator's database and CA,
//! each appliance's store and identity, `demo.json` with the demo's logins and ids): a
//! second run reuses it and carries on; `--reset` starts over.
//!
//! Owns: the demo's data directory layout and its setup steps. Uses only the public
//! functions and APIs of the coordinator and the appliance (registration of claim codes,
//! API token and console user creation, enrollment, `server::run`, the REST API).

use crate::agents::SimAgents;
use crate::carrier::SimCarrier;
use crate::scenario::{AgentsScenario, Scenario, SimPerson};
use crate::SimError;
use callgate_common::compliance::{CallingWindow, ComplianceProfile};
use callgate_common::ids::ApplianceId;
use callgate_common::time::UnixMillis;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The sample contact list (500 fictitious US numbers in the 555-01XX range).
pub const SAMPLE_CONTACTS: &str = include_str!("../data/demo-contacts.csv");
/// The demo's carrier behaviour (quick calls so something happens every few seconds).
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo.toml");
/// Rows in [`SAMPLE_CONTACTS`].
pub const SAMPLE_CONTACT_COUNT: usize = 500;

/// Why the demo could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The data directory cannot be used (not a demo's, unreadable, unwritable).
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An option is out of range.
    #[error("{option}: {reason}")]
    Option {
        /// The command-line option.
        option: &'static str,
        /// What is allowed.
        reason: String,
    },
    /// The coordinator could not be set up or started.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// An appliance could not be set up or started.
    #[error("appliance {name}: {reason}")]
    Appliance {
        /// Its name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A REST call of the setup was refused.
    #[error("coordinator API {what}: {reason}")]
    Api {
        /// The call.
        what: String,
        /// Status and body, or the transport error.
        reason: String,
    },
    /// The simulator could not start.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// Which ports the demo uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPlan {
    /// The documented fixed ports (console 8443, API 8080, first appliance UI 9443, ...).
    Fixed,
    /// Free loopback ports picked at start (tests, or when the fixed ones are taken).
    Auto,
}

/// The demo's options (the binary's command line).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Delete the data directory first.
    pub reset: bool,
    /// Appliances to run (1 to 5).
    pub appliances: usize,
    /// Ports.
    pub ports: PortPlan,
    /// A scenario file for the simulated carrier instead of the demo's own.
    pub scenario: Option<PathBuf>,
    /// Seconds between progress lines (0: none).
    pub report_every: u64,
}

/// Ports of one appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliancePorts {
    /// `/healthz` and `/metrics`.
    pub ops: u16,
    /// The local web UI (HTTPS).
    pub web: u16,
    /// The SIP engine (trunks).
    pub sip: u16,
    /// First RTP port of the dialer (a range of 1000).
    pub rtp_first: u16,
    /// The agents' SIP side (desk-phone registrar, nailed-up legs).
    pub agents_sip: u16,
    /// First RTP port of the agents' lines (a range of 200).
    pub agents_rtp_first: u16,
}

/// Every port the demo listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// The coordinator's REST API, `/healthz`, `/metrics`.
    pub http: u16,
    /// The HQ console (HTTPS).
    pub console: u16,
    /// Enrollment (HTTPS).
    pub enroll: u16,
    /// The embedded MQTT broker (mutual TLS).
    pub broker: u16,
    /// The simulated carrier (SIP/UDP).
    pub carrier: u16,
    /// Per appliance.
    pub appliances: Vec<AppliancePorts>,
}

fn free_tcp() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp() -> Result<u16, std::io::Error> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A free run of `n` even-aligned UDP ports (checked by binding its first and last port).
fn free_udp_range(n: u16, avoid: &[u16]) -> Result<u16, std::io::Error> {
    for _ in 0..50 {
        let base = (free_udp()? & !1).clamp(20_000, 60_000 - n);
        if avoid
            .iter()
            .any(|a| base < a.saturating_add(1_000) && *a < base + n)
        {
            continue;
        }
        let ends = [base, base + n - 1]
            .iter()
            .all(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok());
        if ends {
            return Ok(base);
        }
    }
    Err(std::io::Error::other("no free range of UDP ports"))
}

impl Ports {
    /// The ports for `appliances` boxes under `plan`.
    pub fn plan(plan: PortPlan, appliances: usize) -> Result<Ports, std::io::Error> {
        match plan {
            PortPlan::Fixed => Ok(Ports {
                http: 8080,
                console: 8443,
                enroll: 8444,
                broker: 8883,
                carrier: 5090,
                appliances: (0..appliances as u16)
                    .map(|i| AppliancePorts {
                        ops: 9090 + i,
                        web: 9443 + i,
                        sip: 5070 + i,
                        rtp_first: 20_000 + 1_000 * i,
                        agents_sip: 5080 + i,
                        agents_rtp_first: 30_000 + 1_000 * i,
                    })
                    .collect(),
            }),
            PortPlan::Auto => {
                let mut taken = Vec::new();
                let mut boxes = Vec::new();
                for _ in 0..appliances {
                    let rtp_first = free_udp_range(1_000, &taken)?;
                    taken.push(rtp_first);
                    let agents_rtp_first = free_udp_range(200, &taken)?;
                    taken.push(agents_rtp_first);
                    boxes.push(AppliancePorts {
                        ops: free_tcp()?,
                        web: free_tcp()?,
                        sip: free_udp()?,
                        rtp_first,
                        agents_sip: free_udp()?,
                        agents_rtp_first,
                    });
                }
                Ok(Ports {
                    http: free_tcp()?,
                    console: free_tcp()?,
                    enroll: free_tcp()?,
                    broker: free_tcp()?,
                    carrier: free_udp()?,
                    appliances: boxes,
                })
            }
        }
    }
}

/// What the demo keeps between runs (`demo.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DemoState {
    /// The REST API token (admin).
    pub api_token: String,
    /// The console login.
    pub console_user: String,
    /// Its password.
    pub console_password: String,
    /// Appliances enrolled so far, by name.
    pub appliances: Vec<String>,
    /// The demo campaign, once created.
    pub campaign: Option<i64>,
    /// The simulated agents, once created at HQ.
    #[serde(default)]
    pub agents: Vec<DemoAgent>,
}

impl DemoState {
    /// The simulated agents' logins on the box `branch`.
    fn logins_at(&self, branch: &str) -> Vec<&str> {
        self.agents
            .iter()
            .filter(|a| a.branch == branch)
            .map(|a| a.login.as_str())
            .collect()
    }
}

/// One simulated agent of the demo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoAgent {
    /// The appliance (branch) the agent works at.
    pub branch: String,
    /// Display name.
    pub name: String,
    /// Login on the agent page.
    pub login: String,
    /// Its password.
    pub password: String,
    /// The desk phone's SIP account.
    pub phone: String,
    /// The desk phone's SIP password.
    pub phone_password: String,
}

/// Simulated agents per appliance.
pub const AGENTS_PER_APPLIANCE: usize = 3;
/// Disposition codes of the demo campaign.
pub const DISPOSITIONS: [&str; 3] = ["sale", "callback", "not-interested"];

/// The demo's agents for `branch` (`index` is the branch's 0-based number).
pub fn demo_agents(branch: &str, index: usize) -> Vec<DemoAgent> {
    const NAMES: [&str; 15] = [
        "Ann", "Bob", "Cleo", "Dan", "Eve", "Finn", "Gia", "Hal", "Ida", "Jon", "Kim", "Lou",
        "Mia", "Ned", "Ola",
    ];
    (0..AGENTS_PER_APPLIANCE)
        .map(|k| {
            let name = NAMES[(index * AGENTS_PER_APPLIANCE + k) % NAMES.len()];
            let login = format!("{}{}", name.to_lowercase(), index + 1);
            DemoAgent {
                branch: branch.to_string(),
                name: format!("{name} (simulated)"),
                password: format!("{login}-demo-password"),
                phone: format!("desk-{login}"),
                phone_password: format!("{login}-phone-secret"),
                login,
            }
        })
        .collect()
}

/// The name of appliance `i` (0-based).
pub fn appliance_name(i: usize) -> String {
    format!("branch-{}", i + 1)
}

const STATE_FILE: &str = "demo.json";

fn data_err(path: &Path, reason: impl std::fmt::Display) -> DemoError {
    DemoError::DataDir {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Prepares the data directory: deleted first with `reset` (only when it is a demo's or
/// empty), created when missing; returns the saved state, if any.
pub fn prepare_data_dir(dir: &Path, reset: bool) -> Result<Option<DemoState>, DemoError> {
    let state_path = dir.join(STATE_FILE);
    if dir.exists() {
        let is_demo = state_path.exists();
        let empty = std::fs::read_dir(dir)
            .map_err(|e| data_err(dir, e))?
            .next()
            .is_none();
        if !is_demo && !empty {
            return Err(data_err(
                dir,
                format!(
                    "exists, is not empty and holds no {STATE_FILE}: not a demo's data \
                     directory (choose another with --data-dir)"
                ),
            ));
        }
        if reset && is_demo {
            std::fs::remove_dir_all(dir).map_err(|e| data_err(dir, e))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| data_err(dir, e))?;
    if !state_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&state_path).map_err(|e| data_err(&state_path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        data_err(
            &state_path,
            format!("unreadable ({e}); start over with --reset"),
        )
    })
}

fn save_state(dir: &Path, state: &DemoState) -> Result<(), DemoError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(state).map_err(|e| data_err(&path, e))?;
    std::fs::write(&tmp, text).map_err(|e| data_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| data_err(&path, e))
}

fn coordinator_toml(dir: &Path, p: &Ports) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [store]\ndata_dir = \"{data}\"\n\
         [sync]\nembedded_broker = \"127.0.0.1:{broker}\"\nenroll_listen = \"127.0.0.1:{enroll}\"\n\
         [sync.dialer]\ntick_ms = 1000\nlease_pool = 60\ngrant_ttl_secs = 60\ngrant_max_concurrent = 10\n\
         grant_max_attempts_per_minute = 120\n\
         [console]\nlisten = \"127.0.0.1:{console}\"\n",
        http = p.http,
        broker = p.broker,
        enroll = p.enroll,
        console = p.console,
        data = toml_path(&dir.join("coordinator")),
    )
}

fn appliance_toml(
    dir: &Path,
    name: &str,
    p: &AppliancePorts,
    ports: &Ports,
    agents: &[DemoAgent],
) -> String {
    let phones: String = agents
        .iter()
        .map(|a| {
            format!(
                "[[sip.phones]]\nusername = \"{}\"\npassword = \"{}\"\n",
                a.phone, a.phone_password
            )
        })
        .collect();
    format!(
        "[appliance]\nid = \"{name}\"\ndata_dir = \"{data}\"\n\
         [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
         [board]\nkind = \"none\"\n\
         [web]\nenabled = true\nlisten = \"127.0.0.1:{web}\"\n\
         [sync]\nbroker = \"127.0.0.1:{broker}\"\n\
         [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
         [[sip.trunks]]\nname = \"sim-carrier\"\naddress = \"127.0.0.1:{carrier}\"\n\
         max_channels = 30\nmax_cps = 50\n\
         {phones}\
         [dialer]\nrtp_first_port = {rtp}\nrtp_last_port = {rtp_last}\nring_timeout_seconds = 15\n\
         [agents]\nsip_listen = \"127.0.0.1:{agents_sip}\"\nrtp_first_port = {artp}\nrtp_last_port = {artp_last}\n",
        data = toml_path(&dir.join(name)),
        ops = p.ops,
        web = p.web,
        broker = ports.broker,
        sip = p.sip,
        carrier = ports.carrier,
        rtp = p.rtp_first,
        rtp_last = p.rtp_first + 999,
        agents_sip = p.agents_sip,
        artp = p.agents_rtp_first,
        artp_last = p.agents_rtp_first + 199,
    )
}

fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// A REST client for the coordinator's API.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DemoError> {
        let what = format!("{method} {path}");
        let mut req = self
            .http
            .request(
                method.parse().unwrap_or(reqwest::Method::GET),
                format!("{}{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(what, req).await
    }

    async fn send(&self, what: String, req: reqwest::RequestBuilder) -> Result<Value, DemoError> {
        let resp = req.send().await.map_err(|e| DemoError::Api {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(DemoError::Api {
                what,
                reason: format!("{status}: {text}"),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn wait_healthy(url: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until the box whose database is `db` holds a roster naming every one of `logins`
/// (read-only: the box writes it when HQ's roster arrives); after `limit`, says who is
/// missing.
async fn wait_for_roster(db: &Path, logins: &[&str], limit: Duration) -> Result<(), String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| format!("{}: {e}", db.display()))?;
    let start = Instant::now();
    let mut missing: Vec<&str> = logins.to_vec();
    while start.elapsed() < limit {
        // The table is there once the box has started (its migrations ran before /healthz).
        let held: Vec<(String,)> = sqlx::query_as("SELECT login FROM agent")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        missing.retain(|l| !held.iter().any(|(h,)| h == l));
        if missing.is_empty() {
            pool.close().await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    Err(format!(
        "after {} s it does not name {}",
        limit.as_secs(),
        missing.join(", ")
    ))
}

/// Creates the demo's API token and console user in the coordinator's database (first run).
async fn first_run_secrets(config: &Path) -> Result<DemoState, DemoError> {
    use callgate_coordinator::console::{audit::Actor, auth};
    let err = |e: &dyn std::fmt::Display| DemoError::Coordinator(e.to_string());
    let config = callgate_coordinator::config::CoordinatorConfig::load(Some(config), None)
        .map_err(|e| err(&e))?;
    let store = callgate_coordinator::store::Store::open(&config.raw.store.data_dir, None)
        .await
        .map_err(|e| err(&e))?;
    let token =
        callgate_coordinator::api::tokens::create_token(&store, "demo", &["admin".to_string()])
            .await
            .map_err(|e| err(&e))?;
    let password = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    auth::create_user(
        &store,
        &Actor::system(),
        "demo",
        auth::Role::Admin,
        &password,
    )
    .await
    .map_err(|e| err(&e))?;
    store.pool().close().await;
    Ok(DemoState {
        api_token: token,
        console_user: "demo".into(),
        console_password: password,
        appliances: Vec::new(),
        campaign: None,
        agents: Vec::new(),
    })
}

/// Registers `name` and returns its claim code.
async fn claim_code(config: &Path, name: &str) -> Result<String, DemoError> {
    let err = |e: &dyn std::fmt::Display| DemoError::Appliance {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let config = callgate_coordinator::config::CoordinatorConfig::load(Some(config), None)
        .map_err(|e| err(&e))?;
    let store = callgate_coordinator::store::Store::open(&config.raw.store.data_dir, None)
        .await
        .map_err(|e| err(&e))?;
    let id = ApplianceId::new(name).map_err(|e| err(&e))?;
    let code = callgate_coordinator::enroll::registry::register(
        store.pool(),
        &id,
        "demo branch",
        UnixMillis::now(),
    )
    .await
    .map_err(|e| err(&e))?;
    store.pool().close().await;
    Ok(code.to_string())
}

/// Creates the agent group and the simulated agents of every branch at HQ (the roster the
/// appliances receive).
async fn create_agents(api: &Api, boxes: &[String]) -> Result<Vec<DemoAgent>, DemoError> {
    let group = api
        .call(
            "POST",
            "/api/v1/agent-groups",
            Some(json!({"name": "demo-agents", "description": "the demo's simulated agents"})),
        )
        .await?;
    let group_id = group["id"].as_i64().ok_or_else(|| DemoError::Api {
        what: "POST /api/v1/agent-groups".into(),
        reason: format!("no id in {group}"),
    })?;
    let mut agents = Vec::new();
    for (i, b) in boxes.iter().enumerate() {
        for a in demo_agents(b, i) {
            api.call(
                "POST",
                "/api/v1/agents",
                Some(json!({
                    "name": a.name,
                    "branch": a.branch,
                    "sip_username": a.phone,
                    "login": a.login,
                    "password": a.password,
                    "groups": [group_id],
                })),
            )
            .await?;
            agents.push(a);
        }
    }
    Ok(agents)
}

/// Imports the sample list and creates and starts the campaign; returns its id.
async fn create_campaign(api: &Api, data_dir: &Path, boxes: &[String]) -> Result<i64, DemoError> {
    let list = api
        .call(
            "POST",
            "/api/v1/contact-lists",
            Some(json!({"name": "Demo contacts", "default_region": "US"})),
        )
        .await?;
    let list_id = list["id"].as_i64().ok_or_else(|| DemoError::Api {
        what: "POST /api/v1/contact-lists".into(),
        reason: format!("no id in {list}"),
    })?;
    let csv_path = data_dir.join("demo-contacts.csv");
    std::fs::write(&csv_path, SAMPLE_CONTACTS).map_err(|e| data_err(&csv_path, e))?;
    let what = format!("POST /api/v1/contact-lists/{list_id}/imports");
    let import = api
        .send(
            what.clone(),
            api.http
                .post(format!(
                    "{}/api/v1/contact-lists/{list_id}/imports",
                    api.base
                ))
                .bearer_auth(&api.token)
                .header("content-type", "text/csv")
                .body(SAMPLE_CONTACTS),
        )
        .await?;
    let import_id = import["id"].as_i64().ok_or_else(|| DemoError::Api {
        what: what.clone(),
        reason: format!("no import id in {import}"),
    })?;
    let start = Instant::now();
    loop {
        let state = api
            .call("GET", &format!("/api/v1/imports/{import_id}"), None)
            .await?;
        match state["state"].as_str() {
            Some("done") => break,
            Some("failed") => {
                return Err(DemoError::Api {
                    what,
                    reason: format!("the import failed: {state}"),
                })
            }
            _ if start.elapsed() > Duration::from_secs(120) => {
                return Err(DemoError::Api {
                    what,
                    reason: format!("the import did not finish in 2 minutes: {state}"),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let all_day = CallingWindow {
        start_minute: 0,
        end_minute: 1440,
        days: (0..7).collect(),
        holidays: vec![],
    };
    let mut profile = serde_json::to_value(ComplianceProfile {
        window: all_day.clone(),
        ..ComplianceProfile::us()
    })
    .map_err(|e| DemoError::Coordinator(e.to_string()))?;
    profile["name"] = json!("Demo (round the clock)");
    let profile = api
        .call("POST", "/api/v1/compliance-profiles", Some(profile))
        .await?;
    let shares: Vec<Value> = boxes
        .iter()
        .map(|b| json!({"appliance": b, "share": 1}))
        .collect();
    let campaign = api
        .call(
            "POST",
            "/api/v1/campaigns",
            Some(json!({
                "name": "Demo renewals",
                "kind": "service",
                "dial_mode": "progressive",
                "disposition_codes": DISPOSITIONS,
                "wrap_up_seconds": 10,
                "script": "Hello {{first_name}}, this is Callgate calling about your {{tier}} plan (account {{account}}).",
                "compliance_profile_id": profile["id"],
                "calling_window": all_day,
                "caller_id": "+14155550100",
                "appliances": shares,
                "contact_lists": [list_id],
            })),
        )
        .await?;
    let id = campaign["id"].as_i64().ok_or_else(|| DemoError::Api {
        what: "POST /api/v1/campaigns".into(),
        reason: format!("no id in {campaign}"),
    })?;
    api.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/actions/schedule"),
        None,
    )
    .await?;
    Ok(id)
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    crate::stopped(&mut rx).await;
}

/// One appliance daemon, run in this process until the demo stops (restarted in place
/// when it asks, as after enrollment from its web UI).
async fn run_appliance(name: String, config: PathBuf, stop: watch::Receiver<bool>) {
    loop {
        let cfg = match callgate_appliance::config::ApplianceConfig::load(Some(&config)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(appliance = %name, error = %e, "appliance config refused");
                return;
            }
        };
        match callgate_appliance::server::run(cfg, wait_stop(stop.clone())).await {
            Ok(callgate_appliance::server::RunExit::Restart(reason)) if !*stop.borrow() => {
                tracing::info!(appliance = %name, %reason, "appliance restarting");
            }
            Ok(_) => return,
            Err(e) => {
                tracing::error!(appliance = %name, error = %e, "appliance stopped with an error");
                return;
            }
        }
    }
}

/// What the HQ side shows so far.
#[derive(Debug, Clone, Copy, Default)]
struct HqCounts {
    attempts: i64,
    call_records: i64,
    dispositions: i64,
}

async fn hq_counts(pool: &sqlx::AnyPool) -> HqCounts {
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap_or(0)
    };
    HqCounts {
        attempts: count("attempt_results").await,
        call_records: count("call_records").await,
        dispositions: count("call_records WHERE disposition IS NOT NULL").await,
    }
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    opts: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    if !(1..=5).contains(&opts.appliances) {
        return Err(DemoError::Option {
            option: "--appliances",
            reason: format!("must be 1 to 5, got {}", opts.appliances),
        });
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::path::absolute(&opts.data_dir).map_err(|e| data_err(&opts.data_dir, e))?;
    let saved = prepare_data_dir(&dir, opts.reset)?;
    let mut scenario = match &opts.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::parse(DEMO_SCENARIO, "the demo's scenario")?,
    };
    let ports = Ports::plan(opts.ports, opts.appliances).map_err(|e| DemoError::Option {
        option: "--ports",
        reason: format!("cannot find free ports: {e}"),
    })?;
    scenario.carrier.listen = SocketAddr::from(([127, 0, 0, 1], ports.carrier));
    let coord_config = dir.join("coordinator.toml");
    std::fs::write(&coord_config, coordinator_toml(&dir, &ports))
        .map_err(|e| data_err(&coord_config, e))?;
    let mut state = match saved {
        Some(s) => s,
        None => {
            let s = first_run_secrets(&coord_config).await?;
            save_state(&dir, &s)?;
            s
        }
    };
    let names: Vec<String> = (0..opts.appliances).map(appliance_name).collect();
    let mut claims = Vec::new();
    for name in &names {
        let identity =
            callgate_appliance::sync::identity::IdentityDir::in_data_dir(&dir.join(name));
        if !identity.is_enrolled() {
            claims.push((name.clone(), claim_code(&coord_config, name).await?));
        }
    }

    // The coordinator.
    let (stop_tx, stop_rx) = watch::channel(false);
    let coord = {
        let config =
            callgate_coordinator::config::CoordinatorConfig::load(Some(&coord_config), None)
                .map_err(|e| DemoError::Coordinator(e.to_string()))?;
        tokio::spawn(callgate_coordinator::server::run(
            config,
            wait_stop(stop_rx.clone()),
        ))
    };
    let http = format!("http://127.0.0.1:{}", ports.http);
    if !wait_healthy(&format!("{http}/healthz"), Duration::from_secs(60)).await {
        let _ = stop_tx.send(true);
        let reason = match coord.await {
            Ok(Err(e)) => e.to_string(),
            _ => "not healthy within 60 s".to_string(),
        };
        return Err(DemoError::Coordinator(reason));
    }
    let api = Api {
        base: http.clone(),
        token: state.api_token.clone(),
        http: reqwest::Client::new(),
    };

    // Enrollment with the claim codes, over HTTPS against the organisation CA.
    let ca = dir.join("coordinator/pki/ca.pem");
    for (name, code) in claims {
        let id = ApplianceId::new(&name).map_err(|e| DemoError::Appliance {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        callgate_appliance::sync::enroll::enroll(
            &dir.join(&name),
            &format!("https://127.0.0.1:{}", ports.enroll),
            &code,
            Some(&ca),
            Some(&id),
        )
        .await
        .map_err(|e| DemoError::Appliance {
            name: name.clone(),
            reason: format!("enrollment with claim code {code}: {e}"),
        })?;
        if !state.appliances.contains(&name) {
            state.appliances.push(name.clone());
        }
        save_state(&dir, &state)?;
    }

    // The simulated agents at HQ (first run), so their phones are in the boxes' config.
    if state.agents.is_empty() {
        state.agents = create_agents(&api, &names).await?;
        save_state(&dir, &state)?;
    }

    // The simulated carrier.
    let carrier = SimCarrier::start(&scenario.carrier, scenario.seed).await?;

    // The appliances.
    let mut boxes = Vec::new();
    for (name, p) in names.iter().zip(&ports.appliances) {
        let config = dir.join(format!("{name}.toml"));
        let staff: Vec<DemoAgent> = state
            .agents
            .iter()
            .filter(|a| &a.branch == name)
            .cloned()
            .collect();
        std::fs::write(&config, appliance_toml(&dir, name, p, &ports, &staff))
            .map_err(|e| data_err(&config, e))?;
        boxes.push(tokio::spawn(run_appliance(
            name.clone(),
            config,
            stop_rx.clone(),
        )));
    }
    for (name, p) in names.iter().zip(&ports.appliances) {
        let url = format!("http://127.0.0.1:{}/healthz", p.ops);
        if !wait_healthy(&url, Duration::from_secs(60)).await {
            let _ = stop_tx.send(true);
            return Err(DemoError::Appliance {
                name: name.clone(),
                reason: "not healthy within 60 s (see the log above)".into(),
            });
        }
    }
    // The simulated agents: each box's people at its agent page and registrar, once the
    // box holds the roster naming them (logging in earlier fails, and five failures from
    // one address lock the box's agent page for 15 minutes).
    let mut agents = Vec::new();
    for (i, (name, p)) in names.iter().zip(&ports.appliances).enumerate() {
        let logins = state.logins_at(name);
        let db = dir.join(name).join(callgate_appliance::store::SQLITE_FILE);
        if let Err(e) = wait_for_roster(&db, &logins, Duration::from_secs(120)).await {
            let _ = stop_tx.send(true);
            return Err(DemoError::Appliance {
                name: name.clone(),
                reason: format!("its agent roster did not arrive from HQ: {e}"),
            });
        }
        let people: Vec<SimPerson> = state
            .agents
            .iter()
            .filter(|a| &a.branch == name)
            .map(|a| SimPerson {
                login: a.login.clone(),
                password: a.password.clone(),
                phone: a.phone.clone(),
                phone_password: a.phone_password.clone(),
                phone_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            })
            .collect();
        let desk = AgentsScenario {
            web: format!("https://127.0.0.1:{}", p.web),
            web_certificate: Some(dir.join(name).join("web/cert.pem")),
            registrar: SocketAddr::from(([127, 0, 0, 1], p.agents_sip)),
            wrap_up_seconds: scenario
                .agents
                .as_ref()
                .map(|a| a.wrap_up_seconds.clone())
                .unwrap_or(crate::dist::Seconds::Uniform { min: 2.0, max: 6.0 }),
            dispositions: DISPOSITIONS.iter().map(|d| d.to_string()).collect(),
            people,
        };
        agents.push(SimAgents::start(&desk, scenario.seed.wrapping_add(i as u64)).await?);
    }

    // The campaign (first run only).
    let campaign = match state.campaign {
        Some(id) => id,
        None => {
            let id = create_campaign(&api, &dir, &names).await?;
            state.campaign = Some(id);
            save_state(&dir, &state)?;
            id
        }
    };

    // URLs and logins.
    let mut setup_codes = Vec::new();
    for name in &names {
        let path = dir.join(name).join("setup-code");
        let start = Instant::now();
        let code = loop {
            if let Ok(c) = std::fs::read_to_string(&path) {
                break c.trim().to_string();
            }
            if start.elapsed() > Duration::from_secs(10) {
                break format!("(see {})", path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        setup_codes.push(code);
    }
    println!();
    println!("Callgate demo running; data in {}", dir.display());
    println!(
        "  HQ console        https://127.0.0.1:{}/   login {} / {}",
        ports.console, state.console_user, state.console_password
    );
    println!(
        "  coordinator API   {http}/api/v1/   bearer token {}",
        state.api_token
    );
    for ((name, p), code) in names.iter().zip(&ports.appliances).zip(&setup_codes) {
        println!(
            "  {name} web UI    https://127.0.0.1:{}/   first visit: setup code {code}, then create the technician account",
            p.web
        );
        let logins = state.logins_at(name);
        println!(
            "  {name} agents    https://127.0.0.1:{}/agent   worked by simulated agents {}",
            p.web,
            logins.join(", ")
        );
    }
    println!(
        "  simulated carrier sip:127.0.0.1:{} (UDP); campaign {campaign} \"Demo renewals\" (progressive) dialling {} sample contacts",
        ports.carrier, SAMPLE_CONTACT_COUNT
    );
    println!("  (self-signed certificates: accept them in the browser)  Ctrl-C stops everything.");
    println!();

    // Progress until Ctrl-C.
    let hq = callgate_coordinator::store::Store::open(&dir.join("coordinator"), None)
        .await
        .map_err(|e| DemoError::Coordinator(e.to_string()))?;
    tokio::pin!(shutdown);
    let every = Duration::from_secs(opts.report_every.max(1));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick(), if opts.report_every > 0 => {
                let c = carrier.stats();
                let h = hq_counts(hq.pool()).await;
                let mut line = format!(
                    "carrier: {} calls, {} answered ({} by machines), {} busy, {} cancelled unanswered, {} in progress | HQ: {} attempt results, {} call records ({} with a disposition)",
                    c.calls, c.answered, c.machine, c.busy, c.cancelled + c.no_answer, c.active,
                    h.attempts, h.call_records, h.dispositions
                );
                let (calls, dispositions) = agents.iter().map(SimAgents::stats).fold((0, 0), |(c, d), a| (c + a.calls, d + a.dispositions));
                line.push_str(&format!(" | agents: {calls} calls, {dispositions} dispositions"));
                println!("{line}");
            }
        }
    }
    println!("stopping: agents, appliances, carrier, coordinator ...");
    use callgate_common::observe::shutdown_stage;
    for a in agents {
        shutdown_stage("simulated agents", a.stop()).await;
    }
    let _ = stop_tx.send(true);
    for (name, b) in names.iter().zip(boxes) {
        let _ = shutdown_stage(name, b).await;
    }
    let c = shutdown_stage("simulated carrier", carrier.stop()).await;
    let h = hq_counts(hq.pool()).await;
    hq.pool().close().await;
    match shutdown_stage("coordinator", coord).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DemoError::Coordinator(e.to_string())),
        Err(e) => return Err(DemoError::Coordinator(e.to_string())),
    }
    println!(
        "stopped cleanly: {} calls carried, {} attempt results and {} call records at HQ",
        c.calls, h.attempts, h.call_records
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_common::ids::{AgentGroupId, AgentId};
    use callgate_common::wire::{AgentBrief, AgentGroupBrief, AgentRoster, Downlink};

    #[tokio::test]
    async fn the_demo_waits_for_a_roster_naming_every_simulated_agent() {
        let dir = tempfile::tempdir().unwrap();
        let store = callgate_appliance::store::Store::open(dir.path())
            .await
            .unwrap();
        let db = dir.path().join(callgate_appliance::store::SQLITE_FILE);
        let e = wait_for_roster(&db, &["ann1", "bob1"], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("ann1, bob1"), "{e}");

        let roster = Downlink::AgentRoster(AgentRoster {
            version: 1,
            groups: vec![AgentGroupBrief {
                group: AgentGroupId(1),
                name: "sales".into(),
            }],
            agents: vec![AgentBrief {
                agent: AgentId(1),
                name: "Ann".into(),
                login: "ann1".into(),
                password_phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
                sip_username: "ann-phone".into(),
                skills: vec![],
                groups: vec![AgentGroupId(1)],
            }],
        });
        let mut tx = store.pool().begin().await.unwrap();
        callgate_appliance::agents::roster::apply_downlink(&mut tx, &roster)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let e = wait_for_roster(&db, &["ann1", "bob1"], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.ends_with("does not name bob1"), "{e}");
        wait_for_roster(&db, &["ann1"], Duration::from_secs(5))
            .await
            .expect("ann1 is in the stored roster");
    }
}
