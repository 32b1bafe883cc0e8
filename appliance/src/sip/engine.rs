//! The daemon's handles on the SIP engine: the sans-IO cores of `callgate_sip` run by the
//! transport driver of `callgate_sip_net` (UDP, TCP and TLS, IPv4 and IPv6). Two
//! front-ends: [`SipAgent`] (the user agent core: phones, single calls) and
//! [`SipTrunkRouter`] (calls over a trunk group with failover and probing), each with
//! typed methods for the daemon's tasks. All protocol decisions stay in `callgate_sip`, all
//! socket work in `callgate_sip_net`; this module only turns `[sip]` settings into
//! driver config and core calls.

use super::config::SipSettings;
use super::live_calls::{LiveCall, LiveCalls};
use callgate_sip::agent::{
    AgentConfig, AgentEvent, CallSpec, LegId, ProbeId, RegId, RegistrationSpec, UserAgent,
};
use callgate_sip::inbound::InboundPolicy;
use callgate_sip::registrar::{PhoneAccount, Registrar, StoredBinding};
use callgate_sip::trunk::presentation::CallerId;
use callgate_sip::trunk::router::{AttemptId, DialEvent, OutboundRouter, RouterConfig};
use callgate_sip::trunk::{Trunk, TrunkGroup, TrunkState};
use callgate_sip::uri::Uri;
use callgate_sip_net::{CoreHandle, EndpointConfig, SipEndpoint, TransportError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub use callgate_sip_net::WireRecord;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A listener could not be bound, or the TLS settings are unusable.
    #[error("starting the SIP transports: {0}")]
    Start(#[source] TransportError),
    /// The driver task has stopped.
    #[error("the SIP driver has stopped")]
    Stopped,
}

fn stopped(_: TransportError) -> DriverError {
    DriverError::Stopped
}

/// Driver config with one UDP socket on `bind` (tools and tests that need no more).
fn udp_only(bind: SocketAddr, trace: bool) -> EndpointConfig {
    EndpointConfig {
        udp: vec![bind],
        trace,
        ..EndpointConfig::default()
    }
}

/// The address requests carry as ours: the first UDP socket (port 0 resolved).
fn first_local(bound: &callgate_sip_net::Bound, fallback: SocketAddr) -> SocketAddr {
    bound
        .udp
        .first()
        .or(bound.tcp.first())
        .or(bound.tls.first())
        .copied()
        .unwrap_or(fallback)
}

/// A running SIP user agent.
#[derive(Debug)]
pub struct SipAgent {
    endpoint: SipEndpoint<UserAgent>,
    local: SocketAddr,
    /// The inbound calls it is offered, for the status page.
    live: Arc<LiveView>,
}

impl SipAgent {
    /// Binds a UDP socket on `bind` and starts the driver. `cfg.local` is replaced by the
    /// bound address (so port 0 works).
    pub async fn start(bind: SocketAddr, cfg: AgentConfig) -> Result<SipAgent, DriverError> {
        Self::start_on(udp_only(bind, false), cfg).await
    }

    /// Starts on every listener of `endpoint`.
    pub async fn start_on(
        endpoint: EndpointConfig,
        cfg: AgentConfig,
    ) -> Result<SipAgent, DriverError> {
        let fallback = cfg.local;
        let endpoint = SipEndpoint::start(endpoint, |bound| {
            UserAgent::new(AgentConfig {
                local: first_local(bound, fallback),
                ..cfg
            })
        })
        .await
        .map_err(DriverError::Start)?;
        let local = first_local(endpoint.bound(), fallback);
        Ok(SipAgent {
            endpoint,
            local,
            live: LiveView::new(),
        })
    }

    /// Like [`Self::start`], also handing out every message sent and received.
    pub async fn start_traced(
        bind: SocketAddr,
        cfg: AgentConfig,
    ) -> Result<(SipAgent, mpsc::UnboundedReceiver<WireRecord>), DriverError> {
        let mut agent = Self::start_on(udp_only(bind, true), cfg).await?;
        let wire = agent.endpoint.take_wire().ok_or(DriverError::Stopped)?;
        Ok((agent, wire))
    }

    /// The bound (UDP) address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn post(
        &self,
        f: impl FnOnce(&mut UserAgent, Instant) + Send + 'static,
    ) -> Result<(), DriverError> {
        self.endpoint.post(f).map_err(stopped)
    }

    /// Places a call.
    pub async fn place_call(&self, spec: CallSpec) -> Result<LegId, DriverError> {
        self.endpoint
            .with(move |ua, now| ua.place_call(now, spec))
            .await
            .map_err(stopped)
    }

    /// Hangs a call up (CANCEL or BYE).
    pub fn hang_up(&self, leg: LegId) -> Result<(), DriverError> {
        self.post(move |ua, now| {
            let _ = ua.hang_up(now, leg);
        })
    }

    /// Sends a re-INVITE with a new offer.
    pub fn reinvite(&self, leg: LegId, sdp: Vec<u8>) -> Result<(), DriverError> {
        self.post(move |ua, now| {
            let _ = ua.reinvite(now, leg, sdp);
        })
    }

    /// Sends an OPTIONS probe.
    pub async fn probe(&self, uri: Uri, dest: SocketAddr) -> Result<ProbeId, DriverError> {
        self.endpoint
            .with(move |ua, now| ua.probe(now, uri, dest))
            .await
            .map_err(stopped)
    }

    /// Registers at a registrar and keeps the binding refreshed.
    pub async fn register(&self, spec: RegistrationSpec) -> Result<RegId, DriverError> {
        self.endpoint
            .with(move |ua, now| ua.register(now, spec))
            .await
            .map_err(stopped)
    }

    /// Takes inbound calls under `policy`.
    pub fn set_inbound_policy(&self, policy: InboundPolicy) -> Result<(), DriverError> {
        self.post(move |ua, _| ua.set_inbound_policy(policy))
    }

    /// Serves the branch's phones with `registrar`.
    pub fn set_registrar(&self, registrar: Registrar) -> Result<(), DriverError> {
        self.post(move |ua, _| ua.set_registrar(registrar))
    }

    /// The live bindings of a phone account: (contact, source address).
    pub async fn bindings(&self, account: &str) -> Result<Vec<(String, SocketAddr)>, DriverError> {
        let account = account.to_owned();
        self.endpoint
            .with(move |ua, now| {
                ua.registrar()
                    .map(|r| {
                        r.lookup(now, &account)
                            .into_iter()
                            .map(|b| (b.contact.to_string(), b.source))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .await
            .map_err(stopped)
    }

    /// Sends 180 Ringing for an inbound call.
    pub fn ring(&self, leg: LegId) -> Result<(), DriverError> {
        self.post(move |ua, now| {
            let _ = ua.ring(now, leg);
        })
    }

    /// Answers an inbound call.
    pub fn answer(&self, leg: LegId, sdp: Vec<u8>) -> Result<(), DriverError> {
        self.post(move |ua, now| {
            let _ = ua.answer(now, leg, sdp);
        })
    }

    /// Rejects an inbound call.
    pub fn reject(&self, leg: LegId, status: u16, reason: &str) -> Result<(), DriverError> {
        let reason = reason.to_owned();
        self.live.update(|calls| calls.inbound_gone(leg));
        self.post(move |ua, now| {
            let _ = ua.reject(now, leg, status, &reason);
        })
    }

    /// Removes a registration.
    pub fn unregister(&self, reg: RegId) -> Result<(), DriverError> {
        self.post(move |ua, now| ua.unregister(now, reg))
    }

    /// The next call event; `None` once the driver has stopped. Inbound calls are kept in
    /// the list [`AgentSipControl::calls`] hands out.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        let event = self.endpoint.next_event().await?;
        self.live
            .update(|calls| calls.on_agent_event(Instant::now(), &event));
        Some(event)
    }

    /// A handle that reloads the phone accounts and the inbound policy while the agent
    /// runs (for the web UI's trunk and phone editor), and reads its inbound calls.
    pub fn control(&self) -> AgentSipControl {
        AgentSipControl {
            core: self.endpoint.handle(),
            calls: self.live.published.subscribe(),
        }
    }
}

/// Reloads a running [`SipAgent`]'s phone accounts and inbound policy; clones share the
/// agent.
#[derive(Debug, Clone)]
pub struct AgentSipControl {
    core: CoreHandle<UserAgent>,
    calls: watch::Receiver<Vec<LiveCall>>,
}

impl AgentSipControl {
    /// The inbound calls offered to the agents' side now (callers' numbers masked), from
    /// their INVITE to their end, updated as they change.
    pub fn calls(&self) -> watch::Receiver<Vec<LiveCall>> {
        self.calls.clone()
    }

    /// Replaces the registrar's accounts (see `Registrar::replace_accounts`): kept accounts
    /// keep their bindings, removed ones are unbound and refused from now on, new ones can
    /// register at once. Returns the accounts whose bindings were dropped.
    pub async fn replace_accounts(
        &self,
        accounts: Vec<PhoneAccount>,
    ) -> Result<Vec<String>, DriverError> {
        self.core
            .with(move |ua, _| match ua.registrar().cloned() {
                // No registrar: nothing is served, so nothing to reload.
                None => Vec::new(),
                Some(mut registrar) => {
                    let dropped = registrar.replace_accounts(accounts);
                    ua.set_registrar(registrar);
                    dropped
                }
            })
            .await
            .map_err(stopped)
    }

    /// The registrar's change count and the bindings worth keeping across a restart
    /// (`Registrar::bindings_to_keep`); `None` without a registrar.
    pub async fn bindings_to_keep(&self) -> Result<Option<(u64, Vec<StoredBinding>)>, DriverError> {
        self.core
            .with(|ua, now| {
                ua.registrar()
                    .map(|r| (r.changes(), r.bindings_to_keep(now)))
            })
            .await
            .map_err(stopped)
    }

    /// Takes back bindings kept before a restart (`UserAgent::restore_bindings`); returns
    /// the refused ones with why.
    pub async fn restore_bindings(
        &self,
        kept: Vec<StoredBinding>,
    ) -> Result<Vec<(StoredBinding, &'static str)>, DriverError> {
        self.core
            .with(move |ua, now| ua.restore_bindings(now, kept))
            .await
            .map_err(stopped)
    }

    /// Takes inbound calls under `policy` from now on, keeping the registered phones'
    /// sources let through and the per-source rate state (`UserAgent::replace_inbound_policy`).
    pub fn set_inbound_policy(&self, policy: InboundPolicy) -> Result<(), DriverError> {
        self.core
            .post(move |ua, now| ua.replace_inbound_policy(now, policy))
            .map_err(stopped)
    }
}

/// The calls a trunk router carries, kept beside the router for the status page: a dial is
/// recorded inside the core's own turn (before any event of that attempt can leave it) and
/// every event the router gives out updates it.
#[derive(Debug)]
struct LiveView {
    calls: Mutex<LiveCalls>,
    published: watch::Sender<Vec<LiveCall>>,
}

impl LiveView {
    fn new() -> Arc<LiveView> {
        Arc::new(LiveView {
            calls: Mutex::new(LiveCalls::default()),
            published: watch::channel(Vec::new()).0,
        })
    }

    fn update(&self, f: impl FnOnce(&mut LiveCalls)) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut calls);
        if calls.take_changed() {
            self.published.send_replace(calls.list());
        }
    }
}

/// Calls over a trunk group, with failover and probing.
#[derive(Debug)]
pub struct SipTrunkRouter {
    endpoint: SipEndpoint<OutboundRouter>,
    local: SocketAddr,
    live: Arc<LiveView>,
}

impl SipTrunkRouter {
    /// Binds a UDP socket on `bind` and starts routing over `group` (every trunk over
    /// UDP). With `trace`, every message sent and received is also handed out through
    /// [`Self::take_wire`].
    pub async fn start(
        bind: SocketAddr,
        agent: AgentConfig,
        group: TrunkGroup,
        cfg: RouterConfig,
        trace: bool,
    ) -> Result<SipTrunkRouter, DriverError> {
        Self::start_on(udp_only(bind, trace), agent, group, cfg, &[]).await
    }

    /// Starts the router the daemon runs from `[sip]`: every listener, the TLS settings,
    /// and each trunk on its transport.
    pub async fn start_from_settings(
        sip: &SipSettings,
        seed: u64,
        trace: bool,
    ) -> Result<SipTrunkRouter, DriverError> {
        let agent = AgentConfig {
            local: sip.listen,
            user: sip.user.clone(),
            timers: sip.timers,
            credentials: None,
            seed,
        };
        let transports: Vec<_> = sip
            .links
            .iter()
            .map(|l| (l.address, l.transport.clone()))
            .collect();
        let endpoint = EndpointConfig {
            trace,
            ..sip.endpoint.clone()
        };
        let router = Self::start_on(
            endpoint,
            agent,
            TrunkGroup::new(sip.trunks.clone()),
            sip.router.clone(),
            &transports,
        )
        .await?;
        let links = sip.links.clone();
        router
            .endpoint
            .with(move |r, _| {
                for l in links {
                    r.set_presentation(&l.name, l.presentation);
                }
            })
            .await
            .map_err(stopped)?;
        for link in &sip.links {
            if let Some(expires) = link.register_expires {
                let name = link.name.clone();
                tracing::info!(trunk = %name, expires, "registering the trunk at its carrier");
                router
                    .endpoint
                    .with(move |r, now| r.register_trunk(now, &name, expires))
                    .await
                    .map_err(stopped)?;
            }
        }
        Ok(router)
    }

    /// Starts on every listener of `endpoint`; requests to each address in `transports`
    /// go over its transport (UDP otherwise).
    pub async fn start_on(
        endpoint: EndpointConfig,
        agent: AgentConfig,
        group: TrunkGroup,
        cfg: RouterConfig,
        transports: &[(SocketAddr, callgate_sip::header::Transport)],
    ) -> Result<SipTrunkRouter, DriverError> {
        let seed = agent.seed;
        let fallback = agent.local;
        let transports = transports.to_vec();
        let endpoint = SipEndpoint::start(endpoint, move |bound| {
            let ua = UserAgent::new(AgentConfig {
                local: first_local(bound, fallback),
                ..agent
            });
            let mut router = OutboundRouter::new(ua, group, cfg, Instant::now(), seed);
            for (addr, transport) in transports {
                router.set_transport(addr, transport);
            }
            router
        })
        .await
        .map_err(DriverError::Start)?;
        let local = first_local(endpoint.bound(), fallback);
        Ok(SipTrunkRouter {
            endpoint,
            local,
            live: LiveView::new(),
        })
    }

    /// Dials a number, presenting no campaign caller ID (see [`Self::dial_as`]).
    pub async fn dial(
        &self,
        number: &str,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
    ) -> Result<AttemptId, DriverError> {
        self.dial_as(number, None, sdp, ring_timeout).await
    }

    /// Dials a number presenting `caller` per each trunk's caller-ID settings
    /// (`OutboundRouter::dial_as`).
    pub async fn dial_as(
        &self,
        number: &str,
        caller: Option<CallerId>,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
    ) -> Result<AttemptId, DriverError> {
        let number = number.to_owned();
        let live = self.live.clone();
        self.endpoint
            .with(move |r, now| {
                let attempt = r.dial_as(now, &number, caller, sdp, ring_timeout);
                live.update(|calls| calls.dialled(now, attempt, &number));
                attempt
            })
            .await
            .map_err(stopped)
    }

    /// Hangs up an attempt.
    pub fn hang_up(&self, attempt: AttemptId) -> Result<(), DriverError> {
        self.endpoint
            .post(move |r, now| r.hang_up(now, attempt))
            .map_err(stopped)
    }

    /// The bound (UDP) address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Every bound listener.
    pub fn bound(&self) -> &callgate_sip_net::Bound {
        self.endpoint.bound()
    }

    /// Takes inbound calls under `policy`; calls routed to a trunk are bridged out.
    pub fn set_inbound_policy(&self, policy: InboundPolicy) -> Result<(), DriverError> {
        self.endpoint
            .post(move |r, _| r.set_inbound_policy(policy))
            .map_err(stopped)
    }

    /// The trunks' health and figures now.
    pub async fn trunks(&self) -> Result<Vec<TrunkState>, DriverError> {
        self.control().trunks().await
    }

    /// The open stream connections (peer, transport).
    pub async fn connections(
        &self,
    ) -> Result<Vec<(SocketAddr, callgate_sip::header::Transport)>, DriverError> {
        self.endpoint.connections().await.map_err(stopped)
    }

    /// A handle that reads and replaces the trunks while the router runs (for the web UI's
    /// status and trunk pages).
    pub fn control(&self) -> TrunkControl {
        TrunkControl {
            core: self.endpoint.handle(),
            calls: self.live.published.subscribe(),
        }
    }

    /// The next event; `None` once the driver has stopped. Trunk registration outcomes
    /// are logged here (they concern the operator, not a call).
    pub async fn next_event(&mut self) -> Option<DialEvent> {
        let event = self.endpoint.next_event().await?;
        self.live
            .update(|calls| calls.on_event(Instant::now(), &event));
        match &event {
            DialEvent::TrunkRegistered { trunk, expires } => {
                tracing::info!(trunk = %trunk, expires, "trunk registered at its carrier")
            }
            DialEvent::TrunkRegistrationFailed {
                trunk,
                status,
                reason,
                retry_in,
            } => tracing::warn!(
                trunk = %trunk,
                status,
                reason = %reason,
                next_try_s = retry_in.as_secs_f64(),
                "trunk {trunk} registration failed: {status} {reason}; next try in {:.1} s",
                retry_in.as_secs_f64()
            ),
            _ => {}
        }
        Some(event)
    }

    /// The log of messages on the wire (once; only when started with `trace`).
    pub fn take_wire(&mut self) -> Option<mpsc::UnboundedReceiver<WireRecord>> {
        self.endpoint.take_wire()
    }
}

/// Reads and replaces a running [`SipTrunkRouter`]'s trunks; clones share the router.
#[derive(Debug, Clone)]
pub struct TrunkControl {
    core: CoreHandle<OutboundRouter>,
    calls: watch::Receiver<Vec<LiveCall>>,
}

impl TrunkControl {
    /// The calls the router carries now (masked numbers), updated as they change.
    pub fn calls(&self) -> watch::Receiver<Vec<LiveCall>> {
        self.calls.clone()
    }

    /// The trunks in service with their probe health, calls up and figures.
    pub async fn trunks(&self) -> Result<Vec<TrunkState>, DriverError> {
        self.core
            .with(|r, _| r.in_service().to_vec())
            .await
            .map_err(stopped)
    }

    /// Replaces the trunks (a reload) without touching calls in progress; returns once the
    /// router uses the new list (see `OutboundRouter::replace_trunks`). New trunks go
    /// over UDP; see [`Self::replace_from_settings`] for their transports.
    pub async fn replace_trunks(&self, trunks: Vec<Trunk>) -> Result<(), DriverError> {
        self.core
            .with(move |r, now| r.replace_trunks(now, trunks))
            .await
            .map_err(stopped)
    }

    /// Replaces the trunks with those of `sip`, each on its transport.
    pub async fn replace_from_settings(&self, sip: &SipSettings) -> Result<(), DriverError> {
        let trunks = sip.trunks.clone();
        let links = sip.links.clone();
        self.core
            .with(move |r, now| {
                for l in links {
                    r.set_transport(l.address, l.transport);
                    r.set_presentation(&l.name, l.presentation);
                }
                r.replace_trunks(now, trunks);
            })
            .await
            .map_err(stopped)
    }
}
