//! Outbound calls over a trunk group with failover: a call is one *attempt* to the dialer,
//! however many trunks it takes. A trunk answering 408/500/503, or not answering at all
//! within `answer_wait` (no provisional response), hands the call to the next trunk at
//! once; any other final response ends the attempt. OPTIONS probes run per trunk and
//! mark trunks down and up. Inbound calls routed to a trunk are bridged out (B2BUA):
//! ringing, answer, rejection and hang-up are relayed between the two legs. Sans-IO over
//! [`UserAgent`]; figures per trunk are kept in the [`TrunkGroup`].

use super::presentation::{CallerId, Presentation};
use super::{
    HealthChange, ProbePolicy, RegistrationState, Trunk, TrunkGroup, TrunkHealth, TrunkState,
};
use crate::agent::{AgentEvent, AgentOutput, CallSpec, LegId, ProbeId, UserAgent};
use crate::id_map::IdMap;
use crate::inbound::{InboundPolicy, RouteTarget};
use crate::transaction::Transmit;
use crate::uri::Uri;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A trunk domain as the host part of a URI: a bare IPv6 address gets its brackets.
fn uri_host(domain: &str) -> String {
    if domain.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{domain}]")
    } else {
        domain.to_owned()
    }
}

/// The first retry of a failed trunk registration comes after about this long...
pub const REGISTER_RETRY_FIRST: Duration = Duration::from_secs(5);
/// ...each further failure doubles it, up to this.
pub const REGISTER_RETRY_MAX: Duration = Duration::from_secs(300);

/// The wait before retrying a trunk registration that failed `failures` times in a row
/// (1 = the first failure): `REGISTER_RETRY_FIRST · 2^(failures−1)` capped at
/// `REGISTER_RETRY_MAX`, then jittered to between half and all of it by `roll` (so a
/// fleet refused by one carrier does not come back in step).
pub fn registration_backoff(failures: u32, roll: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = REGISTER_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(REGISTER_RETRY_MAX);
    let half = full / 2;
    half + Duration::from_millis(roll % (half.as_millis() as u64 + 1))
}

/// How the router behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// OPTIONS probing; `None` for carriers that do not answer OPTIONS (trunks then stay
    /// up and only failover protects calls).
    pub probe: Option<ProbePolicy>,
    /// A trunk that sends no provisional response within this time is given up.
    pub answer_wait: Duration,
    /// Final statuses that send the call to the next trunk.
    pub failover_statuses: Vec<u16>,
    /// Session timer to ask carriers for (RFC 4028), in seconds.
    pub session_expires: Option<u32>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            probe: Some(ProbePolicy::default()),
            answer_wait: Duration::from_secs(4),
            failover_statuses: vec![408, 500, 503],
            session_expires: None,
        }
    }
}

/// One call as the dialer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(pub u64);

/// What happened to an attempt or a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialEvent {
    /// Ringing or early media on `trunk`.
    Progress {
        /// The attempt.
        attempt: AttemptId,
        /// The trunk carrying it.
        trunk: String,
        /// Status (180, 183).
        status: u16,
        /// Early media SDP.
        body: Vec<u8>,
    },
    /// Answered on `trunk`.
    Answered {
        /// The attempt.
        attempt: AttemptId,
        /// The trunk carrying it.
        trunk: String,
        /// Answer SDP.
        body: Vec<u8>,
    },
    /// The attempt failed on every trunk it could use, or with a final status.
    Failed {
        /// The attempt.
        attempt: AttemptId,
        /// The final status (503 when no trunk could take it).
        status: u16,
        /// The reason.
        reason: String,
        /// Trunks tried, in order.
        tried: Vec<String>,
    },
    /// The answered call ended.
    Ended {
        /// The attempt.
        attempt: AttemptId,
        /// The far end hung up.
        by_peer: bool,
    },
    /// An inbound call routed to a phone or an agent group: the daemon answers it through
    /// the agent (calls routed to a trunk are bridged by the router itself).
    Incoming {
        /// The inbound leg.
        leg: LegId,
        /// The called number.
        number: String,
        /// The route's target.
        target: RouteTarget,
    },
    /// Probing changed a trunk's health.
    TrunkHealth {
        /// The trunk.
        trunk: String,
        /// Down or up.
        change: HealthChange,
    },
    /// The carrier accepted (or refreshed) a trunk's registration
    /// ([`OutboundRouter::register_trunk`]).
    TrunkRegistered {
        /// The trunk.
        trunk: String,
        /// Seconds granted (refreshed at half of it).
        expires: u32,
    },
    /// A trunk's registration was refused or went unanswered; it is tried again after
    /// `retry_in` (capped exponential back-off with jitter, [`registration_backoff`]).
    TrunkRegistrationFailed {
        /// The trunk.
        trunk: String,
        /// Final status (408 when unanswered).
        status: u16,
        /// Reason phrase.
        reason: String,
        /// When the next REGISTER goes out.
        retry_in: Duration,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterOutput {
    /// Send bytes.
    Transmit(Transmit),
    /// Tell the dialer.
    Event(DialEvent),
}

#[derive(Debug)]
struct Current {
    leg: LegId,
    trunk: usize,
    started: Instant,
    provisional: bool,
}

#[derive(Debug)]
struct Attempt {
    number: String,
    /// The campaign's caller ID; each trunk presents it per its [`Presentation`].
    caller: Option<CallerId>,
    sdp: Vec<u8>,
    ring_timeout: Option<Duration>,
    order: Vec<usize>,
    next: usize,
    current: Option<Current>,
    tried: Vec<String>,
    answered: bool,
    /// Hung up (by the dialer or the bridged caller) before an answer: never tried on
    /// another trunk, whatever the current one does.
    cancelled: bool,
    last_failure: (u16, String),
}

/// Places calls over a trunk group with failover and probing.
#[derive(Debug)]
pub struct OutboundRouter {
    agent: UserAgent,
    group: TrunkGroup,
    cfg: RouterConfig,
    attempts: IdMap<AttemptId, Attempt>,
    /// Every leg still alive and its attempt (abandoned legs included, to release them).
    legs: IdMap<LegId, (AttemptId, usize)>,
    probes: IdMap<ProbeId, usize>,
    /// Trunk registrations: the trunk (by name) each is for and the expiry asked.
    registrations: HashMap<crate::agent::RegId, (String, u32)>,
    /// Failed trunk registrations waiting for their next try: trunk name -> (when,
    /// consecutive failures, expiry to ask).
    register_retries: HashMap<String, (Instant, u32, u32)>,
    /// Consecutive registration failures per trunk (reset by a success).
    register_failures: HashMap<String, u32>,
    next_probe: Vec<Instant>,
    out: VecDeque<RouterOutput>,
    next_attempt: u64,
    roll: u64,
    /// Inbound legs bridged out to trunks (B2BUA), both ways.
    bridged_out: IdMap<AttemptId, LegId>,
    bridged_in: IdMap<LegId, AttemptId>,
    /// Trunks `0..in_service` of the group take calls; those after were removed by
    /// [`Self::replace_trunks`] and stay only while calls they carry are up.
    in_service: usize,
    /// Caller-ID presentation per trunk name (the default for trunks not named here).
    presentations: HashMap<String, Presentation>,
}

impl OutboundRouter {
    /// A router; the first probes (if any) go out at `now`.
    pub fn new(
        agent: UserAgent,
        group: TrunkGroup,
        cfg: RouterConfig,
        now: Instant,
        seed: u64,
    ) -> Self {
        let n = if cfg.probe.is_some() {
            group.trunks.len()
        } else {
            0
        };
        OutboundRouter {
            agent,
            cfg,
            attempts: IdMap::default(),
            legs: IdMap::default(),
            probes: IdMap::default(),
            registrations: HashMap::new(),
            register_retries: HashMap::new(),
            register_failures: HashMap::new(),
            next_probe: vec![now; n],
            out: VecDeque::new(),
            next_attempt: 1,
            roll: seed | 1,
            bridged_out: IdMap::default(),
            bridged_in: IdMap::default(),
            in_service: group.trunks.len(),
            group,
            presentations: HashMap::new(),
        }
    }

    /// Calls placed on the trunk named `trunk` present their caller ID per
    /// `presentation` (kept across [`Self::replace_trunks`]; set it again to change it).
    pub fn set_presentation(&mut self, trunk: &str, presentation: Presentation) {
        self.presentations.insert(trunk.to_owned(), presentation);
    }

    /// Takes inbound calls under `policy`; those routed to a trunk are bridged out.
    pub fn set_inbound_policy(&mut self, policy: InboundPolicy) {
        self.agent.set_inbound_policy(policy);
    }

    /// Requests to `dest` (a trunk's address) go over `transport` (TCP/TLS; UDP default).
    pub fn set_transport(
        &mut self,
        dest: std::net::SocketAddr,
        transport: crate::header::Transport,
    ) {
        self.agent.set_transport(dest, transport);
    }

    /// The driver listens for `transport` at `local` (see [`UserAgent::add_listener`]).
    pub fn add_listener(
        &mut self,
        transport: crate::header::Transport,
        local: std::net::SocketAddr,
    ) {
        self.agent.add_listener(transport, local);
    }

    /// The transport requests to `dest` use.
    pub fn transport_for(&self, dest: std::net::SocketAddr) -> crate::header::Transport {
        self.agent.transport_for(dest)
    }

    /// The connection to `peer` failed: calls waiting on it fail over to the next trunk
    /// at once (a transport error counts as 503), probes to it count as failed.
    pub fn handle_transport_error(&mut self, now: Instant, peer: std::net::SocketAddr) {
        self.agent.handle_transport_error(now, peer);
        self.pump(now);
    }

    /// The trunks with their health and figures.
    pub fn group(&self) -> &TrunkGroup {
        &self.group
    }

    /// The trunks that take new calls (the group less those a reload removed while they
    /// still carried calls).
    pub fn in_service(&self) -> &[TrunkState] {
        &self.group.trunks[..self.in_service]
    }

    /// Replaces the trunks, as a configuration reload does, without touching calls in
    /// progress (their dialogs live in the user agent, not in the trunk list). Trunks are
    /// matched by name: a kept trunk takes its new settings and keeps its calls and figures,
    /// and its probe health and schedule while its address is unchanged (a new address
    /// starts up and is probed at once); a new trunk starts up; a removed trunk takes no new
    /// call and is kept out of service only while calls it carries are still up. Attempts
    /// still failing over try only the trunks that remain.
    pub fn replace_trunks(&mut self, now: Instant, trunks: Vec<Trunk>) {
        let mut old: Vec<Option<TrunkState>> = std::mem::take(&mut self.group.trunks)
            .into_iter()
            .map(Some)
            .collect();
        let old_probe = std::mem::take(&mut self.next_probe);
        // Old index -> new index, and whether an old trunk's probe results still apply.
        let mut moved: Vec<Option<usize>> = vec![None; old.len()];
        let mut probe_valid = vec![false; old.len()];
        let mut group = Vec::with_capacity(trunks.len());
        let mut next_probe = Vec::with_capacity(trunks.len());
        for trunk in trunks {
            let found = old
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.trunk.name == trunk.name));
            let state = match found.and_then(|i| old[i].take().map(|s| (i, s))) {
                Some((i, mut state)) => {
                    moved[i] = Some(group.len());
                    if state.trunk.address == trunk.address {
                        probe_valid[i] = true;
                        next_probe.push(old_probe.get(i).copied().unwrap_or(now));
                    } else {
                        state.health = TrunkHealth::default();
                        next_probe.push(now);
                    }
                    state.trunk = trunk;
                    state
                }
                None => {
                    next_probe.push(now);
                    TrunkState::new(trunk)
                }
            };
            group.push(state);
        }
        self.in_service = group.len();
        for (i, state) in old.into_iter().enumerate() {
            if let Some(state) = state.filter(|s| s.active > 0) {
                moved[i] = Some(group.len());
                group.push(state);
            }
        }
        self.group.trunks = group;
        self.next_probe = if self.cfg.probe.is_some() {
            next_probe
        } else {
            Vec::new()
        };
        self.probes = std::mem::take(&mut self.probes)
            .into_iter()
            .filter(|(_, t)| probe_valid[*t])
            .filter_map(|(p, t)| moved[t].map(|n| (p, n)))
            .collect();
        // Every leg holds a channel, so its trunk is still in the group.
        for (_, t) in self.legs.values_mut() {
            *t = moved[*t].unwrap_or(*t);
        }
        let in_service = self.in_service;
        for a in self.attempts.values_mut() {
            a.order = a.order[a.next..]
                .iter()
                .filter_map(|t| moved[*t].filter(|n| *n < in_service))
                .collect();
            a.next = 0;
            if let Some(c) = a.current.as_mut() {
                c.trunk = moved[c.trunk].unwrap_or(c.trunk);
            }
        }
    }

    /// Dials `number` (the user part of the Request-URI) offering `sdp`, presenting no
    /// campaign caller ID (see [`Self::dial_as`]).
    pub fn dial(
        &mut self,
        now: Instant,
        number: &str,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
    ) -> AttemptId {
        self.dial_as(now, number, None, sdp, ring_timeout)
    }

    /// Dials `number` offering `sdp` and presenting `caller` (checked by
    /// [`CallerId::parse`]) on whichever trunk carries the call, per that trunk's
    /// [`Presentation`]; `None`: the trunk's fixed number, else our own user.
    pub fn dial_as(
        &mut self,
        now: Instant,
        number: &str,
        caller: Option<CallerId>,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
    ) -> AttemptId {
        let id = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        self.roll ^= self.roll << 13;
        self.roll ^= self.roll >> 7;
        self.roll ^= self.roll << 17;
        let attempt = Attempt {
            number: number.to_owned(),
            caller,
            sdp,
            ring_timeout,
            order: self.group.order(self.roll),
            next: 0,
            current: None,
            tried: Vec::new(),
            answered: false,
            cancelled: false,
            last_failure: (503, "no trunk available".into()),
        };
        self.attempts.insert(id, attempt);
        self.try_next(now, id);
        self.pump(now);
        id
    }

    /// Hangs up an attempt (CANCEL or BYE on its current trunk).
    pub fn hang_up(&mut self, now: Instant, attempt: AttemptId) {
        self.hang_up_attempt(now, attempt);
        self.pump(now);
    }

    fn try_next(&mut self, now: Instant, id: AttemptId) {
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        if a.cancelled {
            a.next = a.order.len();
            a.last_failure = (487, "cancelled before answer".into());
        }
        while a.next < a.order.len() {
            let t = a.order[a.next];
            a.next += 1;
            if t >= self.in_service {
                continue;
            }
            let state = &mut self.group.trunks[t];
            if !state.admits(now) {
                continue;
            }
            state.seize(now);
            let trunk = &state.trunk;
            let domain = uri_host(&trunk.domain);
            let to =
                Uri::parse(&format!("sip:{}@{domain}", a.number)).unwrap_or_else(|_| Uri::Other {
                    scheme: "sip".into(),
                    opaque: format!("{}@{domain}", a.number),
                });
            let spec = CallSpec {
                to,
                dest: trunk.address,
                sdp: a.sdp.clone(),
                ring_timeout: a.ring_timeout,
                credentials: trunk.credentials.clone(),
                session_expires: self.cfg.session_expires,
                identity: Some(
                    self.presentations
                        .get(&trunk.name)
                        .cloned()
                        .unwrap_or_default()
                        .identity(a.caller.as_ref(), &trunk.domain),
                ),
            };
            a.tried.push(trunk.name.clone());
            let leg = self.agent.place_call(now, spec);
            a.current = Some(Current {
                leg,
                trunk: t,
                started: now,
                provisional: false,
            });
            self.legs.insert(leg, (id, t));
            return;
        }
        let a = self.attempts.remove(&id).expect("attempt exists");
        self.emit(
            now,
            DialEvent::Failed {
                attempt: id,
                status: a.last_failure.0,
                reason: a.last_failure.1,
                tried: a.tried,
            },
        );
    }

    /// Feeds a datagram.
    pub fn handle_datagram(&mut self, now: Instant, source: std::net::SocketAddr, bytes: &[u8]) {
        self.agent.handle_datagram(now, source, bytes);
        self.pump(now);
    }

    /// Feeds a datagram the caller already parsed (see [`UserAgent::handle_parsed`]).
    pub fn handle_parsed(
        &mut self,
        now: Instant,
        source: std::net::SocketAddr,
        bytes: &[u8],
        parsed: Result<crate::parse::Incoming, crate::error::SipError>,
    ) {
        self.agent.handle_parsed(now, source, bytes, parsed);
        self.pump(now);
    }

    /// Fires due timers: the agent's, answer waits, probes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.agent.handle_timeout(now);
        let silent: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| {
                !a.answered
                    && !a.cancelled
                    && a.current
                        .as_ref()
                        .is_some_and(|c| !c.provisional && now >= c.started + self.cfg.answer_wait)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            if let Some(a) = self.attempts.get_mut(&id) {
                if let Some(c) = a.current.take() {
                    // The leg stays alive until its own transaction ends; if that trunk
                    // answers late the agent ACKs and BYEs it (hang-up requested).
                    let _ = self.agent.hang_up(now, c.leg);
                    a.last_failure = (408, "no response from trunk".into());
                }
            }
            self.try_next(now, id);
        }
        let due: Vec<(String, u32)> = self
            .register_retries
            .iter()
            .filter(|(_, r)| r.0 <= now)
            .map(|(name, r)| (name.clone(), r.2))
            .collect();
        for (name, expires) in due {
            self.register_retries.remove(&name);
            // A trunk removed by a reload meanwhile is not registered any more.
            let _ = self.register_trunk(now, &name, expires);
        }
        for t in 0..self.next_probe.len() {
            let Some(policy) = self.cfg.probe else { break };
            if now >= self.next_probe[t] {
                self.next_probe[t] = now + policy.interval;
                let trunk = &self.group.trunks[t].trunk;
                let domain = uri_host(&trunk.domain);
                let uri = Uri::parse(&format!("sip:{domain}")).unwrap_or_else(|_| Uri::Other {
                    scheme: "sip".into(),
                    opaque: domain.clone(),
                });
                let probe = self.agent.probe(now, uri, trunk.address);
                self.probes.insert(probe, t);
            }
        }
        self.pump(now);
    }

    /// Registers the trunk named `name` at its carrier (REGISTER to the trunk's address,
    /// Request-URI `sip:DOMAIN`, address of record `sip:USER@DOMAIN` with the trunk's
    /// digest username, else our user) asking for `expires` seconds, and keeps it
    /// refreshed; outcomes come as [`DialEvent::TrunkRegistered`] /
    /// [`DialEvent::TrunkRegistrationFailed`]. `None` when no trunk has that name.
    pub fn register_trunk(
        &mut self,
        now: Instant,
        name: &str,
        expires: u32,
    ) -> Option<crate::agent::RegId> {
        let trunk = self
            .group
            .trunks
            .iter()
            .take(self.in_service)
            .find(|t| t.trunk.name == name)?
            .trunk
            .clone();
        let domain = uri_host(&trunk.domain);
        let user = trunk
            .credentials
            .as_ref()
            .map_or_else(|| self.agent.user().to_owned(), |c| c.username.clone());
        let uri = |text: String| {
            Uri::parse(&text).unwrap_or_else(|_| Uri::Other {
                scheme: "sip".into(),
                opaque: text.trim_start_matches("sip:").to_owned(),
            })
        };
        let spec = crate::agent::RegistrationSpec {
            registrar: uri(format!("sip:{domain}")),
            dest: trunk.address,
            aor: uri(format!("sip:{user}@{domain}")),
            expires,
            credentials: trunk.credentials.clone(),
        };
        let reg = self.agent.register(now, spec);
        self.register_retries.remove(&trunk.name);
        self.set_registration(&trunk.name, RegistrationState::Registering);
        self.registrations.insert(reg, (trunk.name, expires));
        self.pump(now);
        Some(reg)
    }

    fn set_registration(&mut self, trunk: &str, state: RegistrationState) {
        if let Some(t) = self.group.trunks.iter_mut().find(|t| t.trunk.name == trunk) {
            t.registration = Some(state);
        }
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waits = self.attempts.values().filter_map(|a| {
            a.current
                .as_ref()
                .filter(|c| !c.provisional && !a.answered && !a.cancelled)
                .map(|c| c.started + self.cfg.answer_wait)
        });
        self.agent
            .poll_timeout()
            .into_iter()
            .chain(waits)
            .chain(self.next_probe.iter().copied())
            .chain(self.register_retries.values().map(|r| r.0))
            .min()
    }

    /// The next transmission or event.
    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.out.pop_front()
    }

    /// Reports an attempt's event, or acts on it for the inbound leg it is bridged to.
    fn emit(&mut self, now: Instant, e: DialEvent) {
        let attempt = match &e {
            DialEvent::Progress { attempt, .. }
            | DialEvent::Answered { attempt, .. }
            | DialEvent::Failed { attempt, .. }
            | DialEvent::Ended { attempt, .. } => Some(*attempt),
            _ => None,
        };
        if let Some(inbound) = attempt.and_then(|a| self.bridged_out.get(&a).copied()) {
            match &e {
                // Ringing and early media (183 with SDP) reach the caller as they came.
                DialEvent::Progress { status, body, .. } => {
                    let _ = self.agent.progress(now, inbound, *status, body.clone());
                }
                DialEvent::Answered { body, .. } => {
                    let _ = self.agent.answer(now, inbound, body.clone());
                }
                DialEvent::Failed { status, reason, .. } => {
                    let (a, status) = (attempt, *status);
                    // 408/5xx from the far side become 503 to the caller, as a proxy would
                    // say "no route"; busy/decline pass through.
                    let status = if status == 408 || (500..600).contains(&status) {
                        503
                    } else {
                        status
                    };
                    let _ = self.agent.reject(now, inbound, status, reason);
                    if let Some(a) = a {
                        self.bridged_out.remove(&a);
                    }
                    self.bridged_in.remove(&inbound);
                }
                DialEvent::Ended { .. } => {
                    let _ = self.agent.hang_up(now, inbound);
                    if let Some(a) = attempt {
                        self.bridged_out.remove(&a);
                    }
                    self.bridged_in.remove(&inbound);
                }
                _ => {}
            }
        }
        self.out.push_back(RouterOutput::Event(e));
    }

    /// An inbound leg's event: relay it to the outbound attempt it is bridged to.
    fn on_bridged_inbound(&mut self, now: Instant, leg: LegId, e: &AgentEvent) -> bool {
        let Some(attempt) = self.bridged_in.get(&leg).copied() else {
            return false;
        };
        match e {
            // The caller's ACK: the bridge is up; nothing to relay.
            AgentEvent::Answered { .. } => {}
            // The caller hung up (BYE) or cancelled (CANCEL → 487): end the outbound side.
            AgentEvent::Ended { .. } | AgentEvent::Failed { .. } => {
                self.bridged_in.remove(&leg);
                self.bridged_out.remove(&attempt);
                self.hang_up_attempt(now, attempt);
            }
            _ => {}
        }
        true
    }

    /// Ends an attempt on its current trunk: BYE once answered; before that CANCEL, which
    /// the agent holds until the callee's first provisional (RFC 3261 §9.1) and which also
    /// stops failover to the next trunk.
    fn hang_up_attempt(&mut self, now: Instant, attempt: AttemptId) {
        let Some(a) = self.attempts.get_mut(&attempt) else {
            return;
        };
        if !a.answered {
            a.cancelled = true;
        }
        if let Some(c) = a.current.as_ref() {
            let _ = self.agent.hang_up(now, c.leg);
        }
    }

    fn pump(&mut self, now: Instant) {
        while let Some(o) = self.agent.poll_output() {
            match o {
                AgentOutput::Transmit(t) => self.out.push_back(RouterOutput::Transmit(t)),
                AgentOutput::Event(e) => self.on_agent_event(now, e),
            }
        }
    }

    /// The attempt whose *current* leg is `leg`.
    fn current_of(&self, leg: LegId) -> Option<AttemptId> {
        let (id, _) = self.legs.get(&leg)?;
        let a = self.attempts.get(id)?;
        (a.current.as_ref()?.leg == leg).then_some(*id)
    }

    fn release(&mut self, leg: LegId) {
        if let Some((_, t)) = self.legs.remove(&leg) {
            if let Some(state) = self.group.trunks.get_mut(t) {
                state.release();
            }
        }
    }

    fn on_agent_event(&mut self, now: Instant, e: AgentEvent) {
        let inbound_leg = match &e {
            AgentEvent::Answered { leg, .. }
            | AgentEvent::Ended { leg, .. }
            | AgentEvent::Failed { leg, .. } => Some(*leg),
            _ => None,
        };
        if inbound_leg.is_some_and(|leg| self.on_bridged_inbound(now, leg, &e)) {
            return;
        }
        match e {
            AgentEvent::Incoming {
                leg,
                number,
                target,
                body,
                ..
            } => match target {
                RouteTarget::Trunk(_) => {
                    let attempt = self.dial(now, &number, body, None);
                    // dial() may already have failed the attempt (no trunk admits).
                    if self.attempts.contains_key(&attempt) {
                        self.bridged_out.insert(attempt, leg);
                        self.bridged_in.insert(leg, attempt);
                    } else {
                        let _ = self.agent.reject(now, leg, 503, "No trunk available");
                    }
                }
                target => self.out.push_back(RouterOutput::Event(DialEvent::Incoming {
                    leg,
                    number,
                    target,
                })),
            },
            AgentEvent::Progress { leg, status, body } => {
                let Some(id) = self.current_of(leg) else {
                    return;
                };
                let Some(a) = self.attempts.get_mut(&id) else {
                    return;
                };
                let Some(c) = a.current.as_mut() else { return };
                let figures = &mut self.group.trunks[c.trunk].figures;
                if !c.provisional {
                    c.provisional = true;
                    figures.pdd_samples += 1;
                    figures.pdd_total += now.duration_since(c.started);
                }
                let trunk = self.group.trunks[c.trunk].trunk.name.clone();
                self.emit(
                    now,
                    DialEvent::Progress {
                        attempt: id,
                        trunk,
                        status,
                        body,
                    },
                );
            }
            AgentEvent::Answered { leg, body } => {
                let Some(id) = self.current_of(leg) else {
                    return;
                };
                let Some(a) = self.attempts.get_mut(&id) else {
                    return;
                };
                let Some(c) = a.current.as_mut() else { return };
                a.answered = true;
                c.provisional = true;
                self.group.trunks[c.trunk].figures.answered += 1;
                let trunk = self.group.trunks[c.trunk].trunk.name.clone();
                self.emit(
                    now,
                    DialEvent::Answered {
                        attempt: id,
                        trunk,
                        body,
                    },
                );
            }
            AgentEvent::Failed {
                leg,
                status,
                reason,
            } => {
                let current = self.current_of(leg);
                self.release(leg);
                let Some(id) = current else { return };
                let Some(a) = self.attempts.get_mut(&id) else {
                    return;
                };
                a.current = None;
                if self.cfg.failover_statuses.contains(&status) {
                    a.last_failure = (status, reason);
                    self.try_next(now, id);
                } else {
                    let a = self.attempts.remove(&id).expect("attempt exists");
                    self.emit(
                        now,
                        DialEvent::Failed {
                            attempt: id,
                            status,
                            reason,
                            tried: a.tried,
                        },
                    );
                }
            }
            AgentEvent::Ended { leg, by_peer } => {
                let current = self.current_of(leg);
                self.release(leg);
                if let Some(id) = current {
                    self.attempts.remove(&id);
                    self.emit(
                        now,
                        DialEvent::Ended {
                            attempt: id,
                            by_peer,
                        },
                    );
                }
            }
            AgentEvent::ProbeResult { probe, status } => {
                let Some(t) = self.probes.remove(&probe) else {
                    return;
                };
                let Some(policy) = self.cfg.probe else { return };
                if let Some(change) = self.group.trunks[t].health.record(status, &policy) {
                    let trunk = self.group.trunks[t].trunk.name.clone();
                    self.out
                        .push_back(RouterOutput::Event(DialEvent::TrunkHealth {
                            trunk,
                            change,
                        }));
                }
            }
            AgentEvent::Registered { reg, expires } => {
                if let Some((trunk, _)) = self.registrations.get(&reg) {
                    let trunk = trunk.clone();
                    self.register_failures.remove(&trunk);
                    let until = now + Duration::from_secs(u64::from(expires));
                    self.set_registration(&trunk, RegistrationState::Registered { until });
                    self.out
                        .push_back(RouterOutput::Event(DialEvent::TrunkRegistered {
                            trunk: trunk.clone(),
                            expires,
                        }));
                }
            }
            AgentEvent::RegistrationFailed {
                reg,
                status,
                reason,
            } => {
                if let Some((trunk, expires)) = self.registrations.remove(&reg) {
                    self.agent.forget_registration(reg);
                    let failures = self.register_failures.entry(trunk.clone()).or_default();
                    *failures += 1;
                    let failures = *failures;
                    self.roll ^= self.roll << 13;
                    self.roll ^= self.roll >> 7;
                    self.roll ^= self.roll << 17;
                    let retry_in = registration_backoff(failures, self.roll);
                    self.register_retries
                        .insert(trunk.clone(), (now + retry_in, failures, expires));
                    self.set_registration(
                        &trunk,
                        RegistrationState::Failed {
                            status,
                            reason: reason.clone(),
                            next_try: now + retry_in,
                        },
                    );
                    self.out
                        .push_back(RouterOutput::Event(DialEvent::TrunkRegistrationFailed {
                            trunk,
                            status,
                            reason,
                            retry_in,
                        }));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
