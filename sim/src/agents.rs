//! Simulated agents: for each person of the scenario, a desk phone and the person at the
//! appliance's agent page.
//!
//! - The phone registers its account with the appliance's registrar (digest), answers the
//!   nailed-up leg the appliance places when the agent logs in, and talks on it (a
//!   [`Voice`]) for as long as the leg is up.
//! - The person logs in on `/agent/login` over HTTPS, follows the live view
//!   (`/agent/events`), and when a call reaches wrap-up waits a drawn wrap-up time and
//!   saves a disposition from the scenario's list (those the call allows). Logged out (the
//!   phone's leg dropped, the box restarted), the person logs in again. The call itself
//!   ends when the simulated customer hangs up (the carrier's talk time).
//!
//! Owns: the phones' SIP/RTP and the agent-page sessions. Must not: touch the appliance's
//! store; everything goes through SIP and the agent page, as a person would.

use crate::dist::SimRng;
use crate::rtp::{MediaSocket, RtpStats};
use crate::scenario::{AgentsScenario, SimPerson};
use crate::sip_loop::{SipCommand, SipLoop};
use crate::voice::Voice;
use crate::SimError;
use callgate_sip::agent::{AgentEvent, LegId, RegistrationSpec};
use callgate_sip::digest::DigestCredentials;
use callgate_sip::inbound::{InboundPolicy, InboundRoute, RouteTarget, UnknownSource};
use callgate_sip::uri::Uri;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Counters over all simulated agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Phones registered.
    pub registered: u64,
    /// Nailed-up legs answered.
    pub legs_answered: u64,
    /// Logins on the agent page.
    pub logins: u64,
    /// Calls seen talking.
    pub calls: u64,
    /// Dispositions saved.
    pub dispositions: u64,
    /// Requests the page refused or that failed (retried).
    pub errors: u64,
}

/// The running simulated agents.
#[derive(Debug)]
pub struct SimAgents {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<Mutex<AgentStats>>,
}

fn bump(stats: &Mutex<AgentStats>, f: impl FnOnce(&mut AgentStats)) {
    f(&mut stats.lock().unwrap_or_else(|e| e.into_inner()));
}

impl SimAgents {
    /// Starts a phone and a person for each of `scenario.people` (validated first).
    pub async fn start(scenario: &AgentsScenario, seed: u64) -> Result<SimAgents, SimError> {
        scenario.validate()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        builder = match &scenario.web_certificate {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| SimError::Read {
                    path: path.clone(),
                    source,
                })?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    SimError::invalid(
                        "agents.web_certificate",
                        format!("not a PEM certificate: {e}"),
                    )
                })?;
                builder.add_root_certificate(cert)
            }
            None => builder.danger_accept_invalid_certs(true),
        };
        let client = builder.build().map_err(|e| SimError::AgentPage {
            url: scenario.web.clone(),
            reason: e.to_string(),
        })?;
        let (stop, _) = watch::channel(false);
        let stats = Arc::new(Mutex::new(AgentStats::default()));
        let mut tasks = Vec::new();
        for (i, person) in scenario.people.iter().enumerate() {
            let phone = Phone::start(scenario, person, seed ^ (i as u64 + 1)).await?;
            tasks.push(tokio::spawn(phone.run(stop.subscribe(), stats.clone())));
            let desk = Desk {
                client: client.clone(),
                base: scenario.web.trim_end_matches('/').to_string(),
                person: person.clone(),
                scenario: scenario.clone(),
                rng: SimRng::derive(seed, 100 + i as u64),
            };
            tasks.push(tokio::spawn(desk.run(stop.subscribe(), stats.clone())));
        }
        Ok(SimAgents { stop, tasks, stats })
    }

    /// Counters so far.
    pub fn stats(&self) -> AgentStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs every person out, unregisters the phones and stops.
    pub async fn stop(self) -> AgentStats {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One desk phone.
struct Phone {
    sip: SipLoop,
    spec: RegistrationSpec,
    seed: u64,
}

impl Phone {
    async fn start(
        scenario: &AgentsScenario,
        person: &SimPerson,
        seed: u64,
    ) -> Result<Phone, SimError> {
        let policy = InboundPolicy {
            allowed_sources: vec![scenario.registrar.ip()],
            trunk_names: Vec::new(),
            unknown_source: UnknownSource::Reject,
            per_source_rate: 1_000,
            per_source_burst: 1_000,
            routes: vec![InboundRoute {
                number: "*".into(),
                target: RouteTarget::Phone(person.phone.clone()),
            }],
        };
        let sip = SipLoop::start(person.phone_listen, &person.phone, seed, Some(policy)).await?;
        let registrar = scenario.registrar;
        let local = sip.local_addr();
        let uri = |s: String| {
            Uri::parse(&s).map_err(|e| SimError::invalid("agents.registrar", format!("{s}: {e}")))
        };
        let spec = RegistrationSpec {
            registrar: uri(format!("sip:{registrar}"))?,
            dest: registrar,
            aor: uri(format!("sip:{}@{}", person.phone, registrar.ip()))?,
            expires: 300,
            credentials: Some(DigestCredentials {
                username: person.phone.clone(),
                password: person.phone_password.clone(),
                realm: None,
            }),
        };
        tracing::debug!(phone = %person.phone, %local, "simulated desk phone up");
        Ok(Phone { sip, spec, seed })
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>, stats: Arc<Mutex<AgentStats>>) {
        let mut legs: HashMap<LegId, (watch::Sender<bool>, JoinHandle<RtpStats>)> = HashMap::new();
        let mut reg = None;
        let mut retry = tokio::time::interval(Duration::from_secs(5));
        let mut registered = false;
        let mut calls = 0u64;
        loop {
            tokio::select! {
                _ = retry.tick(), if !registered => {
                    // Registered or failed comes back as an event; until then, try again.
                    if self.sip.handle.send(SipCommand::Register(Box::new(self.spec.clone()))).is_err() {
                        break;
                    }
                }
                ev = self.sip.events.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        AgentEvent::Registered { reg: id, expires } if expires > 0 => {
                            if !registered {
                                bump(&stats, |s| s.registered += 1);
                            }
                            registered = true;
                            reg = Some(id);
                        }
                        AgentEvent::RegistrationFailed { status, reason, .. } => {
                            tracing::debug!(status, %reason, "desk phone registration refused; retrying");
                            registered = false;
                        }
                        AgentEvent::Incoming { leg, body, .. } => {
                            calls += 1;
                            let ip = self.sip.local_addr().ip();
                            let Ok(socket) = MediaSocket::bind(ip).await else {
                                let _ = self.sip.handle.send(SipCommand::Reject(leg, 503, "Busy".into()));
                                continue;
                            };
                            match socket.answer(&body, self.seed.wrapping_add(calls)) {
                                Ok((sdp, audio)) => {
                                    let (tx, rx) = watch::channel(false);
                                    let voice = Voice::person(self.seed.wrapping_add(calls), 7000);
                                    let task = socket.play(audio, voice, (self.seed as u32) ^ calls as u32, rx);
                                    legs.insert(leg, (tx, task));
                                    bump(&stats, |s| s.legs_answered += 1);
                                    let _ = self.sip.handle.send(SipCommand::Answer(leg, sdp));
                                }
                                Err(status) => {
                                    let _ = self.sip.handle.send(SipCommand::Reject(leg, status, "Not Acceptable Here".into()));
                                }
                            }
                        }
                        AgentEvent::Ended { leg, .. } | AgentEvent::Failed { leg, .. } => {
                            if let Some((tx, task)) = legs.remove(&leg) {
                                let _ = tx.send(true);
                                let _ = task.await;
                            }
                        }
                        _ => {}
                    }
                }
                () = crate::stopped(&mut stop) => break,
            }
        }
        for (leg, (tx, task)) in legs.drain() {
            let _ = self.sip.handle.send(SipCommand::HangUp(leg));
            let _ = tx.send(true);
            let _ = task.await;
        }
        if let Some(r) = reg {
            let _ = self.sip.handle.send(SipCommand::Unregister(r));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.sip.stop().await;
    }
}

/// One person at the agent page.
struct Desk {
    client: reqwest::Client,
    base: String,
    person: SimPerson,
    scenario: AgentsScenario,
    rng: SimRng,
}

/// A logged-in page session.
struct Session {
    cookie: String,
    csrf: String,
}

impl Desk {
    fn page_error(&self, path: &str, reason: impl std::fmt::Display) -> SimError {
        SimError::AgentPage {
            url: format!("{}{path}", self.base),
            reason: reason.to_string(),
        }
    }

    async fn log_in(&self) -> Result<Session, SimError> {
        let r = self
            .client
            .post(format!("{}/agent/login", self.base))
            .form(&[
                ("login", self.person.login.as_str()),
                ("password", self.person.password.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.page_error("/agent/login", e))?;
        if r.status() != reqwest::StatusCode::SEE_OTHER {
            return Err(self.page_error("/agent/login", format!("answered {}", r.status())));
        }
        let cookie = r
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .ok_or_else(|| self.page_error("/agent/login", "no session cookie"))?;
        let page = self
            .client
            .get(format!("{}/agent", self.base))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
            .await
            .map_err(|e| self.page_error("/agent", e))?
            .text()
            .await
            .map_err(|e| self.page_error("/agent", e))?;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
            .ok_or_else(|| self.page_error("/agent", "the page carries no CSRF token"))?;
        Ok(Session { cookie, csrf })
    }

    async fn post(&self, s: &Session, path: &str, form: &[(&str, &str)]) -> Result<(), SimError> {
        let mut fields = vec![("csrf", s.csrf.as_str())];
        fields.extend_from_slice(form);
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &s.cookie)
            .form(&fields)
            .send()
            .await
            .map_err(|e| self.page_error(path, e))?;
        if r.status() == reqwest::StatusCode::SEE_OTHER {
            Ok(())
        } else {
            Err(self.page_error(path, format!("answered {}", r.status())))
        }
    }

    /// Follows the live view until the agent is logged out (Ok) or the stream fails.
    async fn follow(
        &mut self,
        s: &Session,
        stop: &mut watch::Receiver<bool>,
        stats: &Mutex<AgentStats>,
    ) -> Result<(), SimError> {
        let mut r = self
            .client
            .get(format!("{}/agent/events", self.base))
            .header(reqwest::header::COOKIE, &s.cookie)
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|e| self.page_error("/agent/events", e))?;
        if !r.status().is_success() {
            return Err(self.page_error("/agent/events", format!("answered {}", r.status())));
        }
        let mut buf = String::new();
        let mut talking_call: Option<String> = None;
        loop {
            let chunk = tokio::select! {
                c = r.chunk() => c.map_err(|e| self.page_error("/agent/events", e))?,
                () = crate::stopped(stop) => return Ok(()),
            };
            let Some(chunk) = chunk else {
                return Err(self.page_error("/agent/events", "the stream ended"));
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let Some(data) = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                else {
                    continue;
                };
                let Ok(view) = serde_json::from_str::<serde_json::Value>(data) else {
                    continue;
                };
                let state = view["state"].as_str().unwrap_or("");
                let call = view["call"]["call"].as_str().map(str::to_string);
                match state {
                    "logged_out" => return Ok(()),
                    "talking" if call.is_some() && call != talking_call => {
                        talking_call = call;
                        bump(stats, |s| s.calls += 1);
                    }
                    "wrap_up" if view["call"]["disposition"].is_null() => {
                        let allowed: Vec<String> = view["call"]["dispositions"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let mut choices: Vec<&String> = self
                            .scenario
                            .dispositions
                            .iter()
                            .filter(|c| allowed.is_empty() || allowed.contains(c))
                            .collect();
                        if choices.is_empty() {
                            choices = allowed.iter().collect();
                        }
                        let Some(code) = choices
                            .get((self.rng.next_u64() % choices.len().max(1) as u64) as usize)
                            .map(|c| c.to_string())
                        else {
                            continue;
                        };
                        let wait = self.scenario.wrap_up_seconds.draw(&mut self.rng);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = crate::stopped(stop) => return Ok(()),
                        }
                        match self.post(s, "/agent/disposition", &[("code", &code)]).await {
                            Ok(()) => bump(stats, |s| s.dispositions += 1),
                            Err(e) => {
                                bump(stats, |s| s.errors += 1);
                                tracing::debug!(error = %e, "disposition refused");
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>, stats: Arc<Mutex<AgentStats>>) {
        // The phone needs a moment to register before the box can call it.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = crate::stopped(&mut stop) => return,
        }
        loop {
            if *stop.borrow() {
                return;
            }
            match self.log_in().await {
                Ok(session) => {
                    bump(&stats, |s| s.logins += 1);
                    tracing::info!(agent = %self.person.login, "simulated agent logged in");
                    let followed = self.follow(&session, &mut stop, &stats).await;
                    if *stop.borrow() {
                        let _ = self.post(&session, "/agent/logout", &[]).await;
                        return;
                    }
                    if let Err(e) = followed {
                        bump(&stats, |s| s.errors += 1);
                        tracing::debug!(error = %e, "agent page stream lost");
                    }
                }
                Err(e) => {
                    bump(&stats, |s| s.errors += 1);
                    tracing::debug!(agent = %self.person.login, error = %e, "agent login failed; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = crate::stopped(&mut stop) => return,
            }
        }
    }
}
