//! The tokio UDP driver for the sans-IO SIP cores: owns one UDP socket and the timer,
//! feeds a core datagrams and the clock, sends what it asks, and hands its events to the
//! daemon over a channel. Two front-ends: [`UdpAgent`] (single calls, the user agent core)
//! and [`UdpTrunkRouter`] (calls over a trunk group with failover and probing). All
//! protocol decisions stay in `callgate_sip`.

use super::live_calls::{LiveCall, LiveCalls};
use callgate_sip::agent::{
    AgentConfig, AgentEvent, AgentOutput, CallSpec, LegId, ProbeId, RegId, RegistrationSpec,
    UserAgent,
};
use callgate_sip::inbound::InboundPolicy;
use callgate_sip::registrar::{PhoneAccount, Registrar};
use callgate_sip::transaction::Transmit;
use callgate_sip::trunk::router::{
    AttemptId, DialEvent, OutboundRouter, RouterConfig, RouterOutput,
};
use callgate_sip::trunk::{Trunk, TrunkGroup, TrunkState};
use callgate_sip::uri::Uri;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Why the driver could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Binding the socket failed.
    #[error("binding the SIP socket: {0}")]
    Bind(#[from] std::io::Error),
    /// The driver task has stopped.
    #[error("the SIP driver has stopped")]
    Stopped,
}

/// One message on the wire, for ladders and traces.
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// When it was sent or received.
    pub at: Instant,
    /// Sent by us (otherwise received).
    pub outbound: bool,
    /// The other end.
    pub peer: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What the driver loop needs from a sans-IO core.
trait SipCore: Send + 'static {
    type Event: Send + Debug + 'static;
    type Command: Send + 'static;
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll(&mut self) -> Option<Result<Transmit, Self::Event>>;
    fn apply(&mut self, now: Instant, command: Self::Command);
}

async fn drive<C: SipCore>(
    socket: UdpSocket,
    mut core: C,
    mut commands: mpsc::UnboundedReceiver<C::Command>,
    events: mpsc::UnboundedSender<C::Event>,
    wire: Option<mpsc::UnboundedSender<WireRecord>>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(out) = core.poll() {
            match out {
                Ok(t) => {
                    tracing::trace!(to = %t.to, message = %String::from_utf8_lossy(&t.bytes), "sip send");
                    if let Some(w) = &wire {
                        let _ = w.send(WireRecord {
                            at: Instant::now(),
                            outbound: true,
                            peer: t.to,
                            bytes: t.bytes.clone(),
                        });
                    }
                    if let Err(e) = socket.send_to(&t.bytes, t.to).await {
                        tracing::warn!(to = %t.to, error = %e, "sip send failed");
                    }
                }
                Err(e) => {
                    tracing::debug!(event = ?e, "sip event");
                    let _ = events.send(e);
                }
            }
        }
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    tracing::trace!(from = %from, message = %String::from_utf8_lossy(&buf[..n]), "sip recv");
                    if let Some(w) = &wire {
                        let _ = w.send(WireRecord {
                            at: Instant::now(),
                            outbound: false,
                            peer: from,
                            bytes: buf[..n].to_vec(),
                        });
                    }
                    core.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                // ICMP errors can surface here; the transaction timers handle the loss.
                Err(e) => tracing::debug!(error = %e, "sip recv error"),
            },
            cmd = commands.recv() => match cmd {
                None => return,
                Some(c) => core.apply(Instant::now(), c),
            },
            () = sleep => core.handle_timeout(Instant::now()),
        }
    }
}

/// A running core: its command channel, event channel, optional wire log and task.
#[derive(Debug)]
struct Running<Cmd, Ev> {
    commands: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<Ev>,
    wire: Option<mpsc::UnboundedReceiver<WireRecord>>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl<Cmd, Ev> Drop for Running<Cmd, Ev> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn spawn<C: SipCore>(
    bind: SocketAddr,
    trace: bool,
    make: impl FnOnce(SocketAddr) -> C,
) -> Result<Running<C::Command, C::Event>, DriverError> {
    let socket = UdpSocket::bind(bind).await?;
    let local = socket.local_addr()?;
    let (commands, rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (wire_tx, wire) = if trace {
        let (t, r) = mpsc::unbounded_channel();
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let task = tokio::spawn(drive(socket, make(local), rx, events_tx, wire_tx));
    Ok(Running {
        commands,
        events,
        wire,
        local,
        task,
    })
}

/// A request to the user agent task.
#[derive(Debug)]
enum AgentCommand {
    PlaceCall {
        spec: CallSpec,
        reply: oneshot::Sender<LegId>,
    },
    HangUp(LegId),
    Reinvite(LegId, Vec<u8>),
    Probe {
        uri: Uri,
        dest: SocketAddr,
        reply: oneshot::Sender<ProbeId>,
    },
    Register {
        spec: RegistrationSpec,
        reply: oneshot::Sender<RegId>,
    },
    Unregister(RegId),
    SetInbound(InboundPolicy),
    SetRegistrar(Registrar),
    ReplaceAccounts(Vec<PhoneAccount>, oneshot::Sender<Vec<String>>),
    Bindings(String, oneshot::Sender<Vec<(String, SocketAddr)>>),
    Ring(LegId),
    Answer(LegId, Vec<u8>),
    Reject(LegId, u16, String),
}

impl SipCore for UserAgent {
    type Event = AgentEvent;
    type Command = AgentCommand;
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        UserAgent::handle_datagram(self, now, from, bytes);
    }
    fn handle_timeout(&mut self, now: Instant) {
        UserAgent::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        UserAgent::poll_timeout(self)
    }
    fn poll(&mut self) -> Option<Result<Transmit, AgentEvent>> {
        self.poll_output().map(|o| match o {
            AgentOutput::Transmit(t) => Ok(t),
            AgentOutput::Event(e) => Err(e),
        })
    }
    fn apply(&mut self, now: Instant, command: AgentCommand) {
        match command {
            AgentCommand::PlaceCall { spec, reply } => {
                let _ = reply.send(self.place_call(now, spec));
            }
            AgentCommand::HangUp(leg) => {
                let _ = self.hang_up(now, leg);
            }
            AgentCommand::Reinvite(leg, sdp) => {
                let _ = self.reinvite(now, leg, sdp);
            }
            AgentCommand::Probe { uri, dest, reply } => {
                let _ = reply.send(self.probe(now, uri, dest));
            }
            AgentCommand::Register { spec, reply } => {
                let _ = reply.send(self.register(now, spec));
            }
            AgentCommand::Unregister(reg) => self.unregister(now, reg),
            AgentCommand::SetInbound(policy) => self.set_inbound_policy(policy),
            AgentCommand::SetRegistrar(r) => self.set_registrar(r),
            AgentCommand::ReplaceAccounts(accounts, reply) => {
                // No registrar: nothing is served, so nothing to reload.
                let dropped = match self.registrar().cloned() {
                    Some(mut registrar) => {
                        let dropped = registrar.replace_accounts(accounts);
                        self.set_registrar(registrar);
                        dropped
                    }
                    None => Vec::new(),
                };
                let _ = reply.send(dropped);
            }
            AgentCommand::Bindings(account, reply) => {
                let list = self
                    .registrar()
                    .map(|r| {
                        r.lookup(now, &account)
                            .into_iter()
                            .map(|b| (b.contact.to_string(), b.source))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(list);
            }
            AgentCommand::Ring(leg) => {
                let _ = self.ring(now, leg);
            }
            AgentCommand::Answer(leg, sdp) => {
                let _ = self.answer(now, leg, sdp);
            }
            AgentCommand::Reject(leg, status, reason) => {
                let _ = self.reject(now, leg, status, &reason);
            }
        }
    }
}

/// A running SIP user agent on a UDP socket.
#[derive(Debug)]
pub struct UdpAgent(Running<AgentCommand, AgentEvent>);

impl UdpAgent {
    /// Binds `bind` and starts the driver task. `cfg.local` is replaced by the bound
    /// address (so port 0 works).
    pub async fn start(bind: SocketAddr, cfg: AgentConfig) -> Result<UdpAgent, DriverError> {
        spawn(bind, false, |local| {
            UserAgent::new(AgentConfig { local, ..cfg })
        })
        .await
        .map(UdpAgent)
    }

    /// Like [`Self::start`], also handing out every message sent and received.
    pub async fn start_traced(
        bind: SocketAddr,
        cfg: AgentConfig,
    ) -> Result<(UdpAgent, mpsc::UnboundedReceiver<WireRecord>), DriverError> {
        let mut running = spawn(bind, true, |local| {
            UserAgent::new(AgentConfig { local, ..cfg })
        })
        .await?;
        let wire = running.wire.take().ok_or(DriverError::Stopped)?;
        Ok((UdpAgent(running), wire))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local
    }

    fn send(&self, c: AgentCommand) -> Result<(), DriverError> {
        self.0.commands.send(c).map_err(|_| DriverError::Stopped)
    }

    /// Places a call.
    pub async fn place_call(&self, spec: CallSpec) -> Result<LegId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.send(AgentCommand::PlaceCall { spec, reply })?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Hangs a call up (CANCEL or BYE).
    pub fn hang_up(&self, leg: LegId) -> Result<(), DriverError> {
        self.send(AgentCommand::HangUp(leg))
    }

    /// Sends a re-INVITE with a new offer.
    pub fn reinvite(&self, leg: LegId, sdp: Vec<u8>) -> Result<(), DriverError> {
        self.send(AgentCommand::Reinvite(leg, sdp))
    }

    /// Sends an OPTIONS probe.
    pub async fn probe(&self, uri: Uri, dest: SocketAddr) -> Result<ProbeId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.send(AgentCommand::Probe { uri, dest, reply })?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Registers at a registrar and keeps the binding refreshed.
    pub async fn register(&self, spec: RegistrationSpec) -> Result<RegId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.send(AgentCommand::Register { spec, reply })?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Takes inbound calls under `policy`.
    pub fn set_inbound_policy(&self, policy: InboundPolicy) -> Result<(), DriverError> {
        self.send(AgentCommand::SetInbound(policy))
    }

    /// Serves the branch's phones with `registrar`.
    pub fn set_registrar(&self, registrar: Registrar) -> Result<(), DriverError> {
        self.send(AgentCommand::SetRegistrar(registrar))
    }

    /// The live bindings of a phone account: (contact, source address).
    pub async fn bindings(&self, account: &str) -> Result<Vec<(String, SocketAddr)>, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.send(AgentCommand::Bindings(account.to_owned(), reply))?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Sends 180 Ringing for an inbound call.
    pub fn ring(&self, leg: LegId) -> Result<(), DriverError> {
        self.send(AgentCommand::Ring(leg))
    }

    /// Answers an inbound call.
    pub fn answer(&self, leg: LegId, sdp: Vec<u8>) -> Result<(), DriverError> {
        self.send(AgentCommand::Answer(leg, sdp))
    }

    /// Rejects an inbound call.
    pub fn reject(&self, leg: LegId, status: u16, reason: &str) -> Result<(), DriverError> {
        self.send(AgentCommand::Reject(leg, status, reason.to_owned()))
    }

    /// Removes a registration.
    pub fn unregister(&self, reg: RegId) -> Result<(), DriverError> {
        self.send(AgentCommand::Unregister(reg))
    }

    /// The next call event; `None` once the driver has stopped.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        self.0.events.recv().await
    }

    /// A handle that reloads the phone accounts and the inbound policy while the agent
    /// runs (for the web UI's trunk and phone editor).
    pub fn control(&self) -> AgentSipControl {
        AgentSipControl {
            commands: self.0.commands.clone(),
        }
    }
}

/// Reloads a running [`UdpAgent`]'s phone accounts and inbound policy; clones share the
/// agent.
#[derive(Debug, Clone)]
pub struct AgentSipControl {
    commands: mpsc::UnboundedSender<AgentCommand>,
}

impl AgentSipControl {
    /// Replaces the registrar's accounts (see `Registrar::replace_accounts`): kept accounts
    /// keep their bindings, removed ones are unbound and refused from now on, new ones can
    /// register at once. Returns the accounts whose bindings were dropped.
    pub async fn replace_accounts(
        &self,
        accounts: Vec<PhoneAccount>,
    ) -> Result<Vec<String>, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(AgentCommand::ReplaceAccounts(accounts, reply))
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Takes inbound calls under `policy` from now on (a new gate: rate state starts
    /// afresh, and registered phones are let through again from their next REGISTER).
    pub fn set_inbound_policy(&self, policy: InboundPolicy) -> Result<(), DriverError> {
        self.commands
            .send(AgentCommand::SetInbound(policy))
            .map_err(|_| DriverError::Stopped)
    }
}

/// A request to the trunk router task.
#[derive(Debug)]
enum RouterCommand {
    Dial {
        number: String,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
        reply: oneshot::Sender<AttemptId>,
    },
    HangUp(AttemptId),
    Trunks(oneshot::Sender<Vec<TrunkState>>),
    SetInbound(InboundPolicy),
    ReplaceTrunks(Vec<Trunk>, oneshot::Sender<()>),
}

/// The trunk router as the driver runs it: every dial and event also updates the list of
/// calls in progress published for the status page.
struct RouterCore {
    router: OutboundRouter,
    calls: LiveCalls,
    published: watch::Sender<Vec<LiveCall>>,
}

impl RouterCore {
    fn publish(&mut self) {
        if self.calls.take_changed() {
            self.published.send_replace(self.calls.list());
        }
    }
}

impl SipCore for RouterCore {
    type Event = DialEvent;
    type Command = RouterCommand;
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.router.handle_datagram(now, from, bytes);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.router.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.router.poll_timeout()
    }
    fn poll(&mut self) -> Option<Result<Transmit, DialEvent>> {
        let out = self.router.poll_output().map(|o| match o {
            RouterOutput::Transmit(t) => Ok(t),
            RouterOutput::Event(e) => Err(e),
        });
        if let Some(Err(event)) = &out {
            self.calls.on_event(Instant::now(), event);
            self.publish();
        }
        out
    }
    fn apply(&mut self, now: Instant, command: RouterCommand) {
        match command {
            RouterCommand::Dial {
                number,
                sdp,
                ring_timeout,
                reply,
            } => {
                let attempt = self.router.dial(now, &number, sdp, ring_timeout);
                self.calls.dialled(now, attempt, &number);
                self.publish();
                let _ = reply.send(attempt);
            }
            RouterCommand::HangUp(a) => self.router.hang_up(now, a),
            RouterCommand::Trunks(reply) => {
                let _ = reply.send(self.router.in_service().to_vec());
            }
            RouterCommand::ReplaceTrunks(trunks, done) => {
                self.router.replace_trunks(now, trunks);
                let _ = done.send(());
            }
            RouterCommand::SetInbound(policy) => self.router.set_inbound_policy(policy),
        }
    }
}

/// Calls over a trunk group, with failover and probing, on a UDP socket.
#[derive(Debug)]
pub struct UdpTrunkRouter {
    running: Running<RouterCommand, DialEvent>,
    calls: watch::Receiver<Vec<LiveCall>>,
}

impl UdpTrunkRouter {
    /// Binds `bind` and starts routing over `group`. With `trace`, every message sent
    /// and received is also handed out through [`Self::take_wire`].
    pub async fn start(
        bind: SocketAddr,
        agent: AgentConfig,
        group: TrunkGroup,
        cfg: RouterConfig,
        trace: bool,
    ) -> Result<UdpTrunkRouter, DriverError> {
        let seed = agent.seed;
        let (published, calls) = watch::channel(Vec::new());
        let running = spawn(bind, trace, move |local| {
            let ua = UserAgent::new(AgentConfig { local, ..agent });
            RouterCore {
                router: OutboundRouter::new(ua, group, cfg, Instant::now(), seed),
                calls: LiveCalls::default(),
                published,
            }
        })
        .await?;
        Ok(UdpTrunkRouter { running, calls })
    }

    fn send(&self, c: RouterCommand) -> Result<(), DriverError> {
        self.running
            .commands
            .send(c)
            .map_err(|_| DriverError::Stopped)
    }

    /// Dials a number.
    pub async fn dial(
        &self,
        number: &str,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
    ) -> Result<AttemptId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.send(RouterCommand::Dial {
            number: number.to_owned(),
            sdp,
            ring_timeout,
            reply,
        })?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Hangs up an attempt.
    pub fn hang_up(&self, attempt: AttemptId) -> Result<(), DriverError> {
        self.send(RouterCommand::HangUp(attempt))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local
    }

    /// Takes inbound calls under `policy`; calls routed to a trunk are bridged out.
    pub fn set_inbound_policy(&self, policy: InboundPolicy) -> Result<(), DriverError> {
        self.send(RouterCommand::SetInbound(policy))
    }

    /// The trunks' health and figures now.
    pub async fn trunks(&self) -> Result<Vec<TrunkState>, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.send(RouterCommand::Trunks(reply))?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// A handle that reads and replaces the trunks while the router runs (for the web UI's
    /// status and trunk pages).
    pub fn control(&self) -> TrunkControl {
        TrunkControl {
            commands: self.running.commands.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The next event; `None` once the driver has stopped.
    pub async fn next_event(&mut self) -> Option<DialEvent> {
        self.running.events.recv().await
    }

    /// The log of messages on the wire (once; only when started with `trace`).
    pub fn take_wire(&mut self) -> Option<mpsc::UnboundedReceiver<WireRecord>> {
        self.running.wire.take()
    }
}

/// Reads and replaces a running [`UdpTrunkRouter`]'s trunks; clones share the router.
#[derive(Debug, Clone)]
pub struct TrunkControl {
    commands: mpsc::UnboundedSender<RouterCommand>,
    calls: watch::Receiver<Vec<LiveCall>>,
}

impl TrunkControl {
    /// The calls the router carries now (masked numbers), updated as they change.
    pub fn calls(&self) -> watch::Receiver<Vec<LiveCall>> {
        self.calls.clone()
    }

    /// The trunks in service with their probe health, calls up and figures.
    pub async fn trunks(&self) -> Result<Vec<TrunkState>, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(RouterCommand::Trunks(reply))
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Replaces the trunks (a reload) without touching calls in progress; returns once the
    /// router uses the new list (see `OutboundRouter::replace_trunks`).
    pub async fn replace_trunks(&self, trunks: Vec<Trunk>) -> Result<(), DriverError> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(RouterCommand::ReplaceTrunks(trunks, done))
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}
