//! The whole daemon (`callgate-appliance run`) dialling campaigns with agents: SIPp as the
//! carrier (`carrier_agents.xml`: busy, no answer, answered calls that talk 3.5 or 5 s),
//! SIPp desk phones that register on the agents' SIP side and answer the nailed-up leg
//! (echoing RTP), and agents who log in on the agent page over HTTPS and save a disposition
//! for every call they took — all through the daemon's own desk, lines, dispatch and
//! dialer.
//!
//! Proven: every contact accounted for once (one attempt result and one call record), the
//! answered calls bridged to agents with the agent's disposition in the call record,
//! abandons only within the grant's budget and each abandoned call given the safe-harbour
//! message (the call lasted the 2-s wait plus the whole message, and the daemon counted it);
//! with the cloud gone (no grant renewal) dialling goes on until the grant expires, not one
//! attempt starts after it, and the status page says why. Two single-call cases make sure
//! of paths the campaigns reach only by chance: a customer answering while the only agent
//! has just paused gets the 2-s wait, the whole safe-harbour message and the box's BYE,
//! counted abandoned; an agentless campaign's robot script transfers its customer to the
//! agent logged in on the page, and the call record carries that agent and the disposition
//! saved on the page during wrap-up.

mod dialer_support;
mod robot_support;
mod sip_support;

use callgate_appliance::dialer::store;
use callgate_appliance::store::Store;
use callgate_common::ids::{AgentGroupId, AgentId};
use callgate_common::time::UnixMillis;
use callgate_common::wire::{
    AgentBrief, AgentGroupBrief, AgentRoster, AgentState, CallOutcome, CallRecord, DialMode,
    Downlink, PacingGrant, Uplink,
};
use dialer_support::{all_day, brief, lease, Carrier, CAMPAIGN};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};
use sip_support::{scenario, Sipp};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGENT_PASSWORD: &str = "agent password 1";
const PHONE_PASSWORD: &str = "phone password 1";
const TECH_PASSWORD: &str = "correct horse battery";
/// The safe-harbour message the test gives the daemon: one second of tone.
const SAFE_HARBOUR_MS: i64 = 1_000;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An even UDP port below 60000 with the next one free, for an RTP range start.
fn free_even_port() -> u16 {
    loop {
        let p = sip_support::free_udp_port();
        if p % 2 == 0 && p < 59_000 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// An 8 kHz mono 16-bit WAV of `ms` milliseconds of a 500 Hz tone.
fn tone_wav(ms: i64) -> Vec<u8> {
    let samples: Vec<i16> = (0..ms * 8)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 500.0 / 8000.0).sin() * 8000.0) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

fn roster(agents: u64) -> Downlink {
    let phc = callgate_appliance::web::auth::hash_password(AGENT_PASSWORD);
    Downlink::AgentRoster(AgentRoster {
        version: 1,
        groups: vec![AgentGroupBrief {
            group: AgentGroupId(1),
            name: "sales".into(),
        }],
        agents: (1..=agents)
            .map(|i| AgentBrief {
                agent: AgentId(i),
                name: format!("Agent {i}"),
                login: format!("agent{i}"),
                password_phc: phc.clone(),
                sip_username: format!("desk{i}"),
                skills: vec![],
                groups: vec![AgentGroupId(1)],
            })
            .collect(),
    })
}

/// The campaign in `mode` with dispositions and a wrap-up long enough that the agents'
/// dispositions (not the timer) end it.
fn agent_brief(mode: DialMode) -> Downlink {
    let Downlink::Campaign(mut b) = brief(mode, all_day()) else {
        unreachable!()
    };
    b.name = "Spring offer".into();
    b.script = "Hello, this is the spring offer.".into();
    b.disposition_codes = vec!["sale".into(), "no_sale".into()];
    b.wrap_up_seconds = 20;
    Downlink::Campaign(b)
}

fn grant(max_concurrent: u32, abandon_budget: u64, expires_at: UnixMillis) -> Downlink {
    Downlink::PacingGrant(PacingGrant {
        campaign: CAMPAIGN,
        max_concurrent,
        max_attempts_per_minute: 10_000,
        abandon_budget,
        expires_at,
    })
}

/// The real daemon with `[sip]`, `[agents]`, `[dialer]` and the web UI on loopback.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    ops: u16,
    base: String,
    agents_sip: std::net::SocketAddr,
    client: Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Fills a fresh store with `holdings` (roster included), then starts the daemon.
    async fn start(agents: u64, holdings: Vec<Downlink>, carrier: std::net::SocketAddr) -> Daemon {
        Daemon::start_ringing(agents, holdings, carrier, 2).await
    }

    /// [`Daemon::start`] with the dialer's ring timeout set to `ring_timeout_seconds`.
    async fn start_ringing(
        agents: u64,
        holdings: Vec<Downlink>,
        carrier: std::net::SocketAddr,
        ring_timeout_seconds: u32,
    ) -> Daemon {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        {
            let store = Store::open(&data).await.unwrap();
            let mut tx = store.pool().begin().await.unwrap();
            callgate_appliance::agents::roster::apply_downlink(&mut tx, &roster(agents))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            for body in &holdings {
                assert!(store::apply_now(store.pool(), body).await.unwrap());
            }
            store.pool().close().await;
        }
        std::fs::write(
            dir.path().join("safe-harbour.wav"),
            tone_wav(SAFE_HARBOUR_MS),
        )
        .unwrap();
        let (ops, web) = (free_tcp_port(), free_tcp_port());
        let (sip, agents_sip) = (sip_support::free_udp_port(), sip_support::free_udp_port());
        let (dialer_rtp, agents_rtp) = (free_even_port(), free_even_port());
        let agents_rtp = if agents_rtp.abs_diff(dialer_rtp) < 400 {
            dialer_rtp.wrapping_add(400).min(58_000) & !1
        } else {
            agents_rtp
        };
        let phones: String = (1..=agents)
            .map(|i| {
                format!("[[sip.phones]]\nusername = \"desk{i}\"\npassword = \"{PHONE_PASSWORD}\"\n")
            })
            .collect();
        let config = format!(
            "[appliance]\nid = \"branch-agents\"\ndata_dir = \"data\"\n\
             [log]\nlevel = \"callgate_appliance=info,warn\"\n\
             [ops]\nlisten = \"127.0.0.1:{ops}\"\n\
             [web]\nlisten = \"127.0.0.1:{web}\"\n\
             [board]\nkind = \"none\"\n\
             [sip]\nlisten = \"127.0.0.1:{sip}\"\n\
             [[sip.trunks]]\nname = \"carrier\"\naddress = \"{carrier}\"\nmax_channels = 60\nmax_cps = 100\n\
             {phones}\
             [dialer]\nrtp_first_port = {dialer_rtp}\nrtp_last_port = {dialer_last}\nring_timeout_seconds = {ring_timeout_seconds}\n\
             [agents]\nsip_listen = \"127.0.0.1:{agents_sip}\"\nrtp_first_port = {agents_rtp}\nrtp_last_port = {agents_last}\n\
             digest_algorithms = [\"MD5\"]\nsafe_harbour_prompt = \"safe-harbour.wav\"\n",
            carrier = carrier,
            dialer_last = dialer_rtp + 299,
            agents_last = agents_rtp + 99,
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callgate-appliance"))
            .args(["--config", "config.toml", "run"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let base = format!("https://127.0.0.1:{web}");
        let start = Instant::now();
        let client = loop {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the web UI did not come up; daemon log:\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            );
            if let Ok(pem) = std::fs::read(data.join("web/cert.pem")) {
                let client = Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                if client
                    .get(format!("{base}/agent/login"))
                    .send()
                    .await
                    .is_ok()
                {
                    break client;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Daemon {
            child,
            dir,
            ops,
            base,
            agents_sip: ([127, 0, 0, 1], agents_sip).into(),
            client,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn store(&self) -> Store {
        Store::open(&self.dir.path().join("data")).await.unwrap()
    }

    /// Registers desk phone `i` with digest, then keeps it answering the nailed-up leg.
    async fn phone(&self, i: u64) -> Sipp {
        let port = sip_support::free_udp_port();
        let box_addr = self.agents_sip.to_string();
        let register = Sipp::start_on(
            port,
            &["-sf", &scenario("agent_phone_register.xml"), &box_addr],
            &[
                "-m",
                "1",
                "-s",
                &format!("desk{i}"),
                "-au",
                &format!("desk{i}"),
                "-ap",
                PHONE_PASSWORD,
            ],
        );
        let (ok, errors) = register.passed().await;
        assert!(ok, "desk{i} registered: {errors}");
        let phone = Sipp::start_on(
            port,
            &["-sf", &scenario("agents_phone.xml")],
            &[
                "-m",
                "1",
                "-d",
                "900000",
                "-mp",
                &free_even_port().to_string(),
                "-rtp_echo",
            ],
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        phone
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Contacts not yet settled (pending or dialling).
    async fn unsettled(&self, store: &Store) -> i64 {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM dialer_contacts WHERE state IN ('pending', 'dialling')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        n
    }

    /// SIGTERM, and the exit status.
    async fn stop(&mut self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(status.success(), "{status:?}\n{}", self.log());
    }
}

/// Logs agent `i` in on the agent page (which calls its desk phone); returns the session
/// cookie and the CSRF token.
async fn log_in_on_page(client: &Client, base: &str, i: u64) -> (String, String) {
    let r = client
        .post(format!("{base}/agent/login"))
        .form(&[
            ("login", format!("agent{i}")),
            ("password", AGENT_PASSWORD.into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "agent{i} logs in");
    let cookie = r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = client
        .get(format!("{base}/agent"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries the CSRF token")
        .to_string();
    (cookie, csrf)
}

/// An agent working the agent page over HTTPS: logs in (which calls its desk phone), then
/// saves `sale` for every call that reaches wrap-up. Returns the calls it disposed.
async fn agent_at_the_page(
    client: Client,
    base: String,
    i: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<String> {
    let (cookie, csrf) = log_in_on_page(&client, &base, i).await;
    dispose_at_wrap_up(client, base, i, cookie, csrf, stop).await
}

/// Follows the agent's live view (SSE) and saves `sale` at every wrap-up.
async fn dispose_at_wrap_up(
    client: Client,
    base: String,
    i: u64,
    cookie: String,
    csrf: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<String> {
    let mut events = client
        .get(format!("{base}/agent/events"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let mut disposed: Vec<String> = Vec::new();
    let mut buffer = String::new();
    loop {
        let chunk = tokio::select! {
            c = events.chunk() => c.unwrap(),
            _ = stop.changed() => return disposed,
        };
        let Some(chunk) = chunk else { return disposed };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let view: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            if view["state"] != "wrap_up" || !view["call"]["disposition"].is_null() {
                continue;
            }
            let call = view["call"]["call"].as_str().unwrap().to_string();
            if disposed.contains(&call) {
                continue;
            }
            let r = client
                .post(format!("{base}/agent/disposition"))
                .header(COOKIE, &cookie)
                .form(&[("csrf", csrf.as_str()), ("code", "sale")])
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::SEE_OTHER,
                "agent{i} disposes {call}"
            );
            disposed.push(call);
        }
    }
}

/// What the daemon's outbox holds.
struct Outbox {
    results: Vec<callgate_common::wire::AttemptResult>,
    records: Vec<CallRecord>,
    agent_events: Vec<callgate_common::wire::AgentEvent>,
    /// Contacts handed back undialled, with the reason.
    returned: Vec<(u64, String)>,
}

async fn outbox(store: &Store) -> Outbox {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM sync_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut o = Outbox {
        results: vec![],
        records: vec![],
        agent_events: vec![],
        returned: vec![],
    };
    for (b,) in rows {
        match postcard::from_bytes::<Uplink>(&b).unwrap() {
            Uplink::AttemptResult(r) => o.results.push(r),
            Uplink::CallRecord(r) => o.records.push(r),
            Uplink::AgentEvent(e) => o.agent_events.push(e),
            Uplink::LeaseReturn {
                contacts, reason, ..
            } => o
                .returned
                .extend(contacts.into_iter().map(|c| (c.0, reason.clone()))),
            _ => {}
        }
    }
    o
}

/// Logs `agents` agents in over HTTPS (each desk phone answers its nailed-up leg) and keeps
/// them disposing until the returned sender is told to stop.
async fn staff(
    daemon: &Daemon,
    agents: u64,
) -> (
    Vec<Sipp>,
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<Vec<String>>>,
) {
    let mut phones = Vec::new();
    for i in 1..=agents {
        phones.push(daemon.phone(i).await);
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let bots = (1..=agents)
        .map(|i| {
            tokio::spawn(agent_at_the_page(
                daemon.client.clone(),
                daemon.base.clone(),
                i,
                stop_rx.clone(),
            ))
        })
        .collect();
    (phones, stop, bots)
}

/// Every 40th contact (from the 8th) is on the do-not-call list: the gate refuses it at
/// dial and hands it back, so every run exercises the hand-back.
fn on_dnc(contact: u64) -> bool {
    contact % 40 == 7
}

async fn run_campaign(mode: DialMode, contacts: u64, agents: u64, budget: u64) {
    let carrier = Carrier::start_with("carrier_agents.xml");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    let mut leased = lease(1, 0..contacts, hour, |_| false);
    if let Downlink::ContactLease(l) = &mut leased {
        for c in l.contacts.iter_mut().filter(|c| on_dnc(c.contact.0)) {
            c.dnc.push(callgate_common::compliance::DncEntry {
                scope: callgate_common::compliance::DncScope::Global,
                expires_at: None,
            });
        }
    }
    let mut daemon = Daemon::start(
        agents,
        vec![agent_brief(mode), leased, grant(30, budget, hour)],
        carrier.addr,
    )
    .await;
    let (_phones, stop_agents, bots) = staff(&daemon, agents).await;
    let store = daemon.store().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while daemon.unsettled(&store).await > 0 {
        assert!(
            Instant::now() < deadline,
            "{} contacts not settled; daemon log:\n{}",
            daemon.unsettled(&store).await,
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The last calls' dispositions: an answered call's attempt result is committed at the
    // hang-up and its record when the agent has saved the disposition on the page.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = outbox(&store).await;
        if o.records.len() >= o.results.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} call records still wait for a wrap-up; daemon log:\n{}",
            o.results.len() - o.records.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let safe_harbour = daemon.metric("callgate_dialer_safe_harbour_total").await;
    let abandoned_waiting = daemon
        .metric("callgate_dialer_abandoned_waiting_total")
        .await;
    let _ = stop_agents.send(true);
    let mut disposed_by_page = Vec::new();
    for b in bots {
        disposed_by_page.extend(b.await.unwrap());
    }
    daemon.stop().await;
    let o = outbox(&store).await;

    // Every contact accounted for once: dialled (one result) or, when the box could not
    // place the call (no free media port, the store busy), handed back undialled with its
    // reason for the coordinator to lease again — never both, never twice, and only a few.
    let mut per_contact: BTreeMap<u64, u32> = BTreeMap::new();
    for r in &o.results {
        *per_contact.entry(r.contact.0).or_default() += 1;
    }
    for (c, _) in &o.returned {
        *per_contact.entry(*c).or_default() += 1;
    }
    assert_eq!(
        per_contact.len() as u64,
        contacts,
        "a result or a hand-back per contact"
    );
    assert!(per_contact.values().all(|n| *n == 1), "no contact twice");
    let (refused, undialled): (Vec<_>, Vec<_>) = o.returned.iter().partition(|(c, _)| on_dnc(*c));
    assert_eq!(
        refused.len() as u64,
        (0..contacts).filter(|c| on_dnc(*c)).count() as u64,
        "every do-not-call contact handed back: {refused:?}"
    );
    assert!(
        refused.iter().all(|(_, why)| why.contains("do-not-call")),
        "{refused:?}"
    );
    assert!(
        o.results.iter().all(|r| !on_dnc(r.contact.0)),
        "no do-not-call contact dialled"
    );
    assert!(
        undialled.len() as u64 * 50 <= contacts,
        "at most 2 % handed back undialled: {undialled:?}"
    );
    assert_eq!(
        o.records.len(),
        o.results.len(),
        "a call record per dialled contact"
    );
    let count = |want: CallOutcome| o.records.iter().filter(|r| r.outcome == want).count();
    let answered = count(CallOutcome::AnsweredHuman);
    let abandoned = count(CallOutcome::Abandoned);
    let (busy, no_answer) = (count(CallOutcome::Busy), count(CallOutcome::NoAnswer));
    eprintln!(
        "{mode:?}: {contacts} contacts, {agents} agents: answered {answered}, abandoned {abandoned}, \
         busy {busy}, no answer {no_answer}, safe harbour {safe_harbour}, abandoned waiting {abandoned_waiting}"
    );
    assert!(
        answered as u64 > contacts / 3,
        "most answered calls reached agents"
    );
    assert!(busy > 5 && no_answer > 3, "the carrier's mix came through");

    // Answered calls: bridged to an agent, with the disposition the agent saved on the page.
    let disposed: std::collections::HashSet<String> = disposed_by_page.into_iter().collect();
    for r in o
        .records
        .iter()
        .filter(|r| r.outcome == CallOutcome::AnsweredHuman)
    {
        let agent = r.agent.expect("an answered call was talked by an agent");
        assert!((1..=agents).contains(&agent.0));
        assert_eq!(
            r.disposition.as_deref(),
            Some("sale"),
            "call {} has the agent's disposition",
            r.call
        );
        assert!(
            disposed.contains(&r.call.to_string()),
            "disposed on the page"
        );
    }
    // Each agent went through ready, reserved, talking and wrap-up, in the outbox.
    let mut seen: HashMap<u64, Vec<AgentState>> = HashMap::new();
    for e in &o.agent_events {
        seen.entry(e.agent.0).or_default().push(e.state.clone());
    }
    let talked = o
        .records
        .iter()
        .filter_map(|r| r.agent)
        .collect::<std::collections::HashSet<_>>();
    for agent in talked {
        let states = &seen[&agent.0];
        for want in [
            AgentState::Ready,
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp,
        ] {
            assert!(
                states.contains(&want),
                "agent {agent}: {want:?} in {states:?}"
            );
        }
    }

    // Abandons: within the grant's budget, and each one heard the safe-harbour message (the
    // carrier's customers stay on at least 3.5 s, longer than the 2-s wait plus the message).
    assert!(
        abandoned <= budget as usize,
        "{abandoned} abandoned calls, budget {budget}"
    );
    assert_eq!(
        safe_harbour as usize, abandoned,
        "each abandon was a safe harbour"
    );
    for r in o
        .records
        .iter()
        .filter(|r| r.outcome == CallOutcome::Abandoned)
    {
        let answered_at = r.answered_at.expect("an abandoned call was answered");
        let lasted = r.ended_at.millis_since(answered_at);
        assert!(
            lasted >= 2_000 + SAFE_HARBOUR_MS - 100,
            "abandoned call {} lasted {lasted} ms: the message was not played whole",
            r.call
        );
        assert!(r.agent.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_contact_progressive_campaign_reaches_agents_who_dispose_on_the_page() {
    run_campaign(DialMode::Progressive, 200, 8, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_contact_predictive_campaign_abandons_only_within_its_budget_with_the_message() {
    run_campaign(DialMode::Predictive, 200, 8, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_cloud_gone_agents_dial_until_the_grant_expires_and_the_status_says_why() {
    const AGENTS: u64 = 4;
    let carrier = Carrier::start_with("carrier_agents.xml");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    // Nobody renews the grant: the coordinator is unreachable. It expires 20 s from now.
    let expiry = UnixMillis::now().plus_millis(20_000);
    let mut daemon = Daemon::start(
        AGENTS,
        vec![
            agent_brief(DialMode::Progressive),
            lease(1, 0..400, hour, |_| false),
            grant(30, 2, expiry),
        ],
        carrier.addr,
    )
    .await;
    let (_phones, stop_agents, bots) = staff(&daemon, AGENTS).await;
    let store = daemon.store().await;
    // Past the expiry, and past every call then in flight.
    let wait = expiry.millis_since(UnixMillis::now()).max(0) as u64 + 8_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(daemon.unsettled(&store).await, 0, "every contact settled");

    // The status page (technician login over HTTPS) says why the campaign stopped.
    let code = std::fs::read_to_string(daemon.dir.path().join("data/setup-code")).unwrap();
    let r = daemon
        .client
        .post(format!("{}/setup", daemon.base))
        .form(&[
            ("setup_code", code.trim()),
            ("username", "tech"),
            ("password", TECH_PASSWORD),
            ("confirm", TECH_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = daemon
        .client
        .post(format!("{}/login", daemon.base))
        .form(&[("username", "tech"), ("password", TECH_PASSWORD)])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let status = daemon
        .client
        .get(format!("{}/status", daemon.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.contains("stopped: pacing grant expired"),
        "the status page says why: {status}"
    );

    let _ = stop_agents.send(true);
    for b in bots {
        b.await.unwrap();
    }
    daemon.stop().await;
    let o = outbox(&store).await;
    assert!(o.results.len() >= 8, "agents took calls before the expiry");
    let last_start = o.results.iter().map(|r| r.started_at).max().unwrap();
    assert!(
        last_start < expiry,
        "an attempt started {} ms after the grant expired",
        last_start.millis_since(expiry)
    );
    assert!(
        expiry.millis_since(last_start) < 8_000,
        "dialling went on until near the expiry (last start {} ms before)",
        expiry.millis_since(last_start)
    );
    // Handed back because of the expiry: by the executor ("pacing grant expired at ...") or,
    // for an order it gave just before, by the driver's last check ("lease or grant expires
    // before the INVITE could leave").
    let (returned,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM dialer_contacts WHERE state = 'returned' AND reason LIKE '%grant expire%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let others: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT state, reason, COUNT(*) FROM dialer_contacts \
         WHERE state <> 'done' AND NOT (state = 'returned' AND reason LIKE '%grant expire%') \
         GROUP BY state, reason",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        returned as usize + o.results.len(),
        400,
        "the rest was handed back saying why; the others (state, reason, count): {others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preview_agent_sees_the_contact_on_the_page_dials_it_takes_the_answer_and_hangs_up() {
    const CONTACTS: u64 = 12;
    let carrier = Carrier::start_with("carrier_agents.xml");
    let hour = UnixMillis::now().plus_millis(3_600_000);
    let mut daemon = Daemon::start(
        1,
        vec![
            agent_brief(DialMode::Preview),
            lease(1, 0..CONTACTS, hour, |_| false),
            grant(5, 0, hour),
        ],
        carrier.addr,
    )
    .await;
    let _phone = daemon.phone(1).await;
    let (client, base) = (daemon.client.clone(), daemon.base.clone());
    let (cookie, csrf) = log_in_on_page(&client, &base, 1).await;
    let (stop_agent, stop_rx) = tokio::sync::watch::channel(false);
    let bot = tokio::spawn(dispose_at_wrap_up(
        client.clone(),
        base.clone(),
        1,
        cookie.clone(),
        csrf.clone(),
        stop_rx,
    ));
    let store = daemon.store().await;
    let page = || async {
        client
            .get(format!("{base}/agent"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let (client, base, cookie) = (client.clone(), base.clone(), cookie.clone());
        async move {
            client
                .post(format!("{base}{path}"))
                .header(COOKIE, &cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    // Ready once the desk phone answered the nailed-up leg.
    let start = Instant::now();
    while !page().await.contains("data-state=\"ready\"") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent never ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing is dialled in preview until the agent asks.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        outbox(&store).await.results.is_empty(),
        "nothing dialled unasked"
    );
    let r = post("/agent/preview/dial", vec![("csrf", csrf.clone())]).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "no contact on screen yet"
    );
    assert!(r.text().await.unwrap().contains("no previewed contact"));

    let mut answered = None;
    for round in 0..CONTACTS {
        let r = post(
            "/agent/preview",
            vec![("csrf", csrf.clone()), ("campaign", CAMPAIGN.0.to_string())],
        )
        .await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{}",
            r.text().await.unwrap()
        );
        let shown = page().await;
        let number = dialer_support::number(round);
        assert!(shown.contains(&number.masked()), "the contact is on screen");
        assert!(
            !shown.contains(&number.e164()),
            "only the masked number is shown"
        );
        assert!(shown.contains("Spring offer"));
        let r = post("/agent/preview/dial", vec![("csrf", csrf.clone())]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        // This contact's attempt settles; an answer comes to this agent.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut hung_up = false;
        let record = loop {
            // Answered: the agent ends the call from the page as soon as it talks.
            if !hung_up && page().await.contains("data-state=\"talking\"") {
                let r = post("/agent/hangup", vec![("csrf", csrf.clone())]).await;
                assert_eq!(r.status(), StatusCode::SEE_OTHER, "hang up while talking");
                hung_up = true;
            }
            let o = outbox(&store).await;
            let result = o.results.iter().any(|r| r.contact.0 == round);
            let record = o
                .records
                .iter()
                .find(|r| r.contact.map(|c| c.0) == Some(round));
            if let (true, Some(r)) = (result, record) {
                break r.clone();
            }
            assert!(Instant::now() < deadline, "contact {round} never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            outbox(&store).await.results.len() as u64,
            round + 1,
            "one call per Dial"
        );
        if record.outcome == CallOutcome::AnsweredHuman {
            answered = Some(record);
            break;
        }
        // Ready again before the next preview (no wrap-up for unanswered calls).
        while !page().await.contains("data-state=\"ready\"") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let record = answered.expect("one of the previewed contacts answered");
    // The carrier's customers talk at least 3.5 s: this call ended sooner, by the agent.
    let lasted = record
        .ended_at
        .millis_since(record.answered_at.expect("answered"));
    assert!(
        lasted < 3_000,
        "the agent's hang-up ended the call ({lasted} ms)"
    );
    let r = post("/agent/hangup", vec![("csrf", csrf.clone())]).await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "nothing to hang up any more"
    );
    assert_eq!(
        record.agent,
        Some(AgentId(1)),
        "the previewing agent took it"
    );
    assert_eq!(record.disposition.as_deref(), Some("sale"));
    let _ = stop_agent.send(true);
    bot.await.unwrap();
    daemon.stop().await;
}

/// An agentless campaign's script: asks for 1, then transfers to the sales group (1); with
/// nobody of the group ready yet it asks again (the agent may still be logging in).
const TRANSFER_TO_SALES: &str = r#"
format = 1
name = "to sales"
version = 1
start = "ask"

[steps.ask]
kind = "collect"
prompt = { say = "Press 1 to speak to an agent." }
max_digits = 1
timeout_ms = 8000
retries = 0
valid = ["1"]
into = "choice"
next = "agent"
on_no_input = "bye"
on_invalid = "bye"

[steps.agent]
kind = "transfer"
group = 1
on_no_agent = "again"

[steps.again]
kind = "collect"
prompt = { say = "Please hold, or press 1 again." }
max_digits = 1
timeout_ms = 8000
retries = 0
valid = ["1"]
into = "choice"
next = "agent"
on_no_input = "bye"
on_invalid = "bye"

[steps.bye]
kind = "hangup"
disposition = "no_response"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_transfers_an_agentless_scripts_customer_to_an_agent_on_the_page_and_records_both(
) {
    use robot_support::{callee_pcap, Callee, KeyStyle};
    // The customer: a steady tone, pressing 1 every 3 s from 2 s on (each press after a
    // `no agent` retries the transfer).
    let audio = callgate_media::tone::ToneGenerator::new(700.0, 8_000).next_samples(40_000 * 8);
    let keys: Vec<(u32, char)> = (0..12).map(|i| (2_000 + i * 3_000, '1')).collect();
    let callee = Callee::start(
        "robot_callee.xml",
        &callee_pcap(&audio, &keys, KeyStyle::Rfc4733),
    );
    let hour = UnixMillis::now().plus_millis(3_600_000);
    let Downlink::Campaign(mut brief) = brief(DialMode::Agentless, all_day()) else {
        unreachable!()
    };
    brief.name = "Robot to sales".into();
    brief.robot_script = Some(TRANSFER_TO_SALES.into());
    brief.disposition_codes = vec!["sale".into(), "no_sale".into()];
    brief.wrap_up_seconds = 60;
    let mut daemon = Daemon::start(
        1,
        vec![
            Downlink::Campaign(brief),
            lease(1, 0..1, hour, |_| false),
            grant(1, 0, hour),
        ],
        callee.addr,
    )
    .await;
    let _phone = daemon.phone(1).await;
    let (client, base) = (daemon.client.clone(), daemon.base.clone());
    let (cookie, csrf) = log_in_on_page(&client, &base, 1).await;
    let page = || async {
        client
            .get(format!("{base}/agent"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let (client, base, cookie) = (client.clone(), base.clone(), cookie.clone());
        async move {
            client
                .post(format!("{base}{path}"))
                .header(COOKIE, &cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    // The transferred customer reaches the agent, who talks 2 s and hangs up on the page.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !page().await.contains("data-state=\"talking\"") {
        assert!(
            Instant::now() < deadline,
            "the transfer never reached the agent; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let talking = page().await;
    assert!(
        talking.contains("Robot to sales"),
        "the screen-pop names the campaign"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = post("/agent/hangup", vec![("csrf", csrf.clone())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "hang up while talking");
    // Wrap-up: the disposition saved on the page 6 s later still reaches the record.
    while !page().await.contains("data-state=\"wrap_up\"") {
        assert!(Instant::now() < deadline, "the agent never wrapped up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let store = daemon.store().await;
    assert!(
        outbox(&store).await.records.is_empty(),
        "the record waits for the disposition"
    );
    let r = post(
        "/agent/disposition",
        vec![("csrf", csrf.clone()), ("code", "sale".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "disposition saved");
    let record = loop {
        let o = outbox(&store).await;
        if let Some(r) = o.records.first() {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no call record; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.stop().await;
    let o = outbox(&store).await;
    assert_eq!(o.results.len(), 1, "one attempt");
    assert_eq!(o.records.len(), 1, "one record");
    assert_eq!(record.outcome, CallOutcome::AnsweredHuman);
    assert_eq!(
        record.agent,
        Some(AgentId(1)),
        "{record:?}\n{}",
        callee.errors()
    );
    assert_eq!(record.disposition.as_deref(), Some("sale"));
    let states: Vec<AgentState> = o
        .agent_events
        .iter()
        .filter(|e| e.call == Some(record.call))
        .map(|e| e.state.clone())
        .collect();
    assert_eq!(
        states,
        [
            AgentState::Reserved,
            AgentState::Talking,
            AgentState::WrapUp
        ],
        "the agent's states for the transferred call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_answering_when_no_agent_is_free_hears_the_safe_harbour_message_and_counts_abandoned(
) {
    use robot_support::{callee_pcap, Callee, KeyStyle};
    // The customer rings 6 s, then answers and stays on (talking) until the box hangs up.
    let audio = callgate_media::tone::ToneGenerator::new(700.0, 8_000).next_samples(30_000 * 8);
    let callee = Callee::start(
        "callee_answers_late.xml",
        &callee_pcap(&audio, &[], KeyStyle::Rfc4733),
    );
    let hour = UnixMillis::now().plus_millis(3_600_000);
    let mut daemon = Daemon::start_ringing(
        1,
        vec![
            agent_brief(DialMode::Predictive),
            lease(1, 0..1, hour, |_| false),
            grant(1, 1, hour),
        ],
        callee.addr,
        20,
    )
    .await;
    let _phone = daemon.phone(1).await;
    let (client, base) = (daemon.client.clone(), daemon.base.clone());
    let (cookie, csrf) = log_in_on_page(&client, &base, 1).await;
    // The ready agent lets the dialer place the call; while it rings the agent pauses, so
    // nobody is free when the customer answers.
    let store = daemon.store().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (dialling,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM dialer_contacts WHERE state = 'dialling'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if dialling == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call was never placed; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .post(format!("{base}/agent/pause"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("reason", "coffee")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the agent pauses");
    let record = loop {
        if let Some(r) = outbox(&store).await.records.first() {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no call record; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let safe_harbour = daemon.metric("callgate_dialer_safe_harbour_total").await;
    daemon.stop().await;
    let o = outbox(&store).await;
    assert_eq!(record.outcome, CallOutcome::Abandoned, "{record:?}");
    assert_eq!(record.agent, None);
    assert_eq!(o.results.len(), 1);
    assert_eq!(o.results[0].outcome, CallOutcome::Abandoned);
    assert_eq!(safe_harbour, 1.0, "counted as a safe harbour");
    // The 2-s wait for an agent, then the whole message, then the box hung up (the customer
    // would have stayed on for 30 s).
    let lasted = record
        .ended_at
        .millis_since(record.answered_at.expect("answered"));
    assert!(
        lasted >= 2_000 + SAFE_HARBOUR_MS - 100,
        "the call lasted {lasted} ms: the message was not played whole"
    );
    assert!(
        lasted < 15_000,
        "the box ended the call after the message ({lasted} ms)"
    );
    assert!(
        callee.bye_answered(),
        "the customer got the box's BYE: {}",
        callee.errors()
    );
    let (live, abandoned): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(abandoned), 0) FROM dialer_live_answers")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        (live, abandoned),
        (1, 1),
        "the abandon counts against the campaign's budget"
    );
}
