//! The user agent core: outbound call legs (INVITE, provisional/final handling, ACK for
//! 2xx, CANCEL, BYE, re-INVITE, digest retries, forked 2xx released with BYE), OPTIONS
//! probes, and answers to requests from peers (in-dialog BYE/re-INVITE/OPTIONS,
//! out-of-dialog OPTIONS). Sits on the [`TransactionLayer`]; sans-IO like it: the driver
//! feeds datagrams and time, and sends what [`UserAgent::poll_output`] gives.
//!
//! This room owns call-leg state only; which trunk or phone a call goes to is decided by
//! the caller, and names are resolved by the driver before they reach here.

use crate::dialog::Dialog;
use crate::digest::{DigestCredentials, DigestSession};
use crate::error::SipError;
use crate::header::{CSeq, Contact, Header, MediaType, NameAddr, OtherHeader, Transport, Via};
use crate::id_map::IdMap;
use crate::message::{response_to, Headers, Method, Request, Response, SipMessage};
use crate::parse::{parse_datagram, respond_to_invalid, Incoming};
use crate::transaction::{Output, TimerConfig, TransactionLayer, Transmit, TxEvent, TxKey};
use crate::uri::{Host, SipUri, Uri};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How the agent presents itself.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The address our socket is bound to (Via sent-by, Contact).
    pub local: SocketAddr,
    /// The user part of our From/Contact.
    pub user: String,
    /// Protocol timers.
    pub timers: TimerConfig,
    /// Credentials for 401/407 challenges.
    pub credentials: Option<DigestCredentials>,
    /// Seed for tags, branches and Call-IDs (the driver passes something unpredictable).
    pub seed: u64,
}

/// What to call and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// The Request-URI (`sip:+4930123@carrier`).
    pub to: Uri,
    /// Where the INVITE goes (the trunk's address).
    pub dest: SocketAddr,
    /// Our SDP offer.
    pub sdp: Vec<u8>,
    /// Cancel the call if it is not answered in this time.
    pub ring_timeout: Option<Duration>,
    /// Credentials for this call's challenges (else the agent's own).
    pub credentials: Option<DigestCredentials>,
    /// Ask for a session timer of this many seconds (RFC 4028).
    pub session_expires: Option<u32>,
    /// The identity the call presents (From, P-Asserted-Identity, Privacy); `None`: the
    /// From is our own user at our own address.
    pub identity: Option<CallerIdentity>,
}

/// The identity an outbound call presents, as
/// [`crate::trunk::presentation::Presentation::identity`] decides it per trunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The From display name (`Anonymous` when withheld).
    pub display_name: Option<String>,
    /// The From user part; `None`: our own user ([`AgentConfig::user`]).
    pub user: Option<String>,
    /// The From host; `None`: our own address and port.
    pub host: Option<Host>,
    /// Add `;user=phone` to the From URI.
    pub user_phone: bool,
    /// The P-Asserted-Identity to add (RFC 3325), if any.
    pub asserted: Option<Uri>,
    /// Add `Privacy: id` (RFC 3325 §9.3): the carrier must not pass the asserted
    /// identity on to the callee.
    pub privacy_id: bool,
}

impl CallSpec {
    /// A call to `to` through `dest` with `sdp`, no ring timeout, default credentials.
    pub fn new(to: Uri, dest: SocketAddr, sdp: Vec<u8>) -> CallSpec {
        CallSpec {
            to,
            dest,
            sdp,
            ring_timeout: None,
            credentials: None,
            session_expires: None,
            identity: None,
        }
    }
}

/// Identifies one outbound call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LegId(pub u64);

/// Identifies one OPTIONS probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeId(pub u64);

/// What happened to a call leg or probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// A provisional response (180, 183, ...; 100 is not reported).
    Progress {
        /// The leg.
        leg: LegId,
        /// Status code.
        status: u16,
        /// Body (early media SDP), if any.
        body: Vec<u8>,
    },
    /// The call was answered (2xx) and ACKed.
    Answered {
        /// The leg.
        leg: LegId,
        /// The answer's body (SDP).
        body: Vec<u8>,
    },
    /// The call failed before answer: a final non-2xx, a timeout (408) or an
    /// unanswerable challenge.
    Failed {
        /// The leg.
        leg: LegId,
        /// Status (408 for no answer in time).
        status: u16,
        /// Reason phrase or error text.
        reason: String,
    },
    /// The answered call ended.
    Ended {
        /// The leg.
        leg: LegId,
        /// The peer sent BYE (otherwise we did).
        by_peer: bool,
    },
    /// An UPDATE we sent was answered (RFC 3311).
    Updated {
        /// The leg.
        leg: LegId,
        /// Final status.
        status: u16,
        /// The peer's answer SDP (empty when it sent none).
        body: Vec<u8>,
    },
    /// A re-INVITE we sent was answered.
    Reinvited {
        /// The leg.
        leg: LegId,
        /// Final status.
        status: u16,
        /// The peer's new SDP.
        body: Vec<u8>,
    },
    /// A registration was accepted (`expires` granted; 0 after unregistering).
    Registered {
        /// The registration.
        reg: RegId,
        /// Seconds granted.
        expires: u32,
    },
    /// A registration was refused or timed out; it is not refreshed any more.
    RegistrationFailed {
        /// The registration.
        reg: RegId,
        /// Final status (408 when unanswered).
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// An inbound call passed the gate: ring, answer or reject it.
    Incoming {
        /// The new leg.
        leg: LegId,
        /// The caller (From URI).
        from: String,
        /// The called number.
        number: String,
        /// The trunk it came in on (by its source address); `None` from a registered phone.
        trunk: Option<String>,
        /// Where the route table sends it.
        target: crate::inbound::RouteTarget,
        /// The caller's SDP offer.
        body: Vec<u8>,
    },
    /// An OPTIONS probe finished (408 when unanswered).
    ProbeResult {
        /// The probe.
        probe: ProbeId,
        /// Final status.
        status: u16,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutput {
    /// Send bytes.
    Transmit(Transmit),
    /// Tell the daemon.
    Event(AgentEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite(LegId),
    Cancel,
    Bye(LegId),
    Reinvite(LegId),
    Update(LegId),
    ForkBye,
    Probe(ProbeId),
    Register(RegId),
    Prack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Inviting,
    Confirmed,
    Ending,
}

#[derive(Debug)]
struct Leg {
    invite: Request,
    dest: SocketAddr,
    phase: Phase,
    dialog: Option<Dialog>,
    /// The ACK for the answer, resent when the 2xx is retransmitted.
    ack: Option<(Vec<u8>, SocketAddr)>,
    auth: Option<DigestSession>,
    provisional_seen: bool,
    hangup_requested: bool,
    cancel_sent: bool,
    local_body: Vec<u8>,
    /// CSeq of the re-INVITE in flight.
    reinvite_seq: Option<u32>,
    /// When an unanswered call is given up with CANCEL.
    ring_deadline: Option<Instant>,
    /// CANCEL sent but the INVITE has no final response yet: give it up at this time.
    cancel_deadline: Option<Instant>,
    /// The early dialog of reliable provisionals (RFC 3262), and the last RSeq PRACKed.
    early: Option<(Dialog, u32)>,
    /// The session timer of the answered call (RFC 4028).
    session: Option<session_timer::SessionTimer>,
    /// The re-INVITE in flight is our session refresh (not reported to the daemon).
    refreshing: bool,
    /// Set for calls that came in (we are the UAS).
    inbound: Option<uas::InboundLeg>,
    /// An UPDATE of ours is in flight, with its offer.
    update_pending: bool,
    update_body: Vec<u8>,
    /// Our re-INVITE got 491 (glare): send it again then (RFC 3261 §14.1).
    glare_retry: Option<modify::GlareRetry>,
}

impl Leg {
    /// When this leg next needs the clock: an unanswered call's ring timeout or CANCEL
    /// give-up, the inbound side's retransmissions, the session timer, a glare retry.
    fn deadline(&self) -> Option<Instant> {
        let inviting = self.phase == Phase::Inviting;
        [
            self.ring_deadline.filter(|_| inviting),
            self.cancel_deadline.filter(|_| inviting),
            self.inbound
                .as_ref()
                .and_then(uas::InboundLeg::next_deadline),
            self.session
                .as_ref()
                .and_then(session_timer::SessionTimer::next_deadline),
            self.glare_retry.as_ref().map(|g| g.at),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The SIP user agent core of the appliance.
#[derive(Debug)]
pub struct UserAgent {
    cfg: AgentConfig,
    tx: TransactionLayer,
    legs: legs::Legs,
    registrations: IdMap<RegId, register::Registration>,
    gate: Option<crate::inbound::InboundGate>,
    registrar: Option<crate::registrar::Registrar>,
    /// Legs placed together to one phone's contacts: the first answer cancels the rest.
    forks: IdMap<LegId, Vec<LegId>>,
    /// The gate's decision for the request being handed to the transaction layer.
    pending_admission: Option<crate::inbound::Admission>,
    purposes: HashMap<TxKey, Purpose>,
    /// The client transactions started for each leg's INVITE, BYE and re-INVITE, so that
    /// forgetting a leg does not visit every purpose (some may have gone already).
    leg_transactions: IdMap<LegId, Vec<TxKey>>,
    out: VecDeque<AgentOutput>,
    counter: u64,
    next_leg: u64,
    /// Transports per destination and the driver's listeners.
    wire: transport::Wire,
}

impl UserAgent {
    /// A user agent with no calls.
    pub fn new(cfg: AgentConfig) -> Self {
        UserAgent {
            wire: transport::Wire::new(cfg.local, &cfg.user),
            tx: TransactionLayer::new(cfg.timers),
            counter: cfg.seed,
            cfg,
            legs: legs::Legs::default(),
            registrations: IdMap::default(),
            gate: None,
            registrar: None,
            forks: IdMap::default(),
            pending_admission: None,
            purposes: HashMap::new(),
            leg_transactions: IdMap::default(),
            out: VecDeque::new(),
            next_leg: 1,
        }
    }

    /// A fresh pseudo-random hex token (splitmix64 over the seed).
    fn token(&mut self) -> String {
        self.counter = self.counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.counter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format!("{:016x}", z ^ (z >> 31))
    }

    fn local_host(&self) -> Host {
        match self.cfg.local.ip() {
            std::net::IpAddr::V4(a) => Host::V4(a),
            std::net::IpAddr::V6(a) => Host::V6(a),
        }
    }

    fn via(&mut self) -> Via {
        let branch = format!("z9hG4bK{}", self.token());
        Via::new(
            Transport::Udp,
            self.local_host(),
            Some(self.cfg.local.port()),
            &branch,
        )
    }

    fn local_uri(&self) -> Uri {
        Uri::Sip(SipUri::new(
            Some(&self.cfg.user),
            self.local_host(),
            Some(self.cfg.local.port()),
        ))
    }

    /// The From URI for `identity`: its user and host where given, else ours.
    fn presented_uri(&self, identity: &CallerIdentity) -> Uri {
        let (host, port) = match &identity.host {
            Some(host) => (host.clone(), None),
            None => (self.local_host(), Some(self.cfg.local.port())),
        };
        let user = identity.user.as_deref().unwrap_or(&self.cfg.user);
        let mut uri = SipUri::new(Some(user), host, port);
        if identity.user_phone {
            uri.params
                .push(crate::param::Param::new("user", Some("phone")));
        }
        Uri::Sip(uri)
    }

    fn contact(&self) -> Header {
        Header::Contact(Contact::Address(NameAddr::new(self.local_uri())))
    }

    fn allow() -> Header {
        Header::Other(OtherHeader {
            name: "Allow".into(),
            value: b"INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE".to_vec(),
        })
    }

    fn sdp(body: &[u8]) -> Option<Header> {
        (!body.is_empty()).then(|| {
            Header::ContentType(MediaType {
                mtype: "application".into(),
                subtype: "sdp".into(),
                params: Vec::new(),
            })
        })
    }

    /// Places a call (see [`CallSpec`]).
    pub fn place_call(&mut self, now: Instant, spec: CallSpec) -> LegId {
        let CallSpec {
            to,
            dest,
            sdp,
            ring_timeout,
            credentials,
            session_expires,
            identity,
        } = spec;
        let leg = LegId(self.next_leg);
        self.next_leg += 1;
        let mut h = Headers::with_capacity(crate::message::BUILT_HEADERS);
        h.push(Header::Via(self.via()));
        h.push(Header::MaxForwards(70));
        let identity = identity.unwrap_or_default();
        let mut from = NameAddr::new(self.presented_uri(&identity));
        from.display_name = identity.display_name.clone();
        from.set_tag(&self.token()[..10]);
        h.push(Header::From(from));
        h.push(Header::To(NameAddr::new(to.clone())));
        h.push(Header::CallId(format!(
            "{}@{}",
            self.token(),
            self.cfg.local.ip()
        )));
        h.push(Header::CSeq(CSeq {
            seq: 1,
            method: Method::Invite,
        }));
        h.push(self.contact());
        if let Some(asserted) = identity.asserted {
            h.push(Header::PAssertedIdentity(NameAddr::new(asserted)));
        }
        if identity.privacy_id {
            h.push(Header::Other(OtherHeader {
                name: "Privacy".into(),
                value: b"id".to_vec(),
            }));
        }
        h.push(Self::allow());
        h.push(Header::Supported(vec!["100rel".into(), "timer".into()]));
        if let Some(se) = session_expires {
            h.push(session_timer::session_header(se, "uac"));
        }
        if let Some(ct) = Self::sdp(&sdp) {
            h.push(ct);
        }
        let invite = Request {
            method: Method::Invite,
            uri: to,
            headers: h,
            body: sdp.clone(),
        };
        let state = Leg {
            invite: invite.clone(),
            dest,
            phase: Phase::Inviting,
            dialog: None,
            ack: None,
            auth: credentials
                .or_else(|| self.cfg.credentials.clone())
                .map(DigestSession::new),
            provisional_seen: false,
            hangup_requested: false,
            cancel_sent: false,
            local_body: sdp,
            reinvite_seq: None,
            ring_deadline: ring_timeout.map(|t| now + t),
            cancel_deadline: None,
            early: None,
            session: None,
            refreshing: false,
            inbound: None,
            update_pending: false,
            update_body: Vec::new(),
            glare_retry: None,
        };
        self.legs.insert(leg, state);
        self.start(now, invite, dest, Purpose::Invite(leg));
        leg
    }

    fn start(&mut self, now: Instant, mut req: Request, dest: SocketAddr, purpose: Purpose) {
        let reliable = self.wire.stamp(&mut req, dest);
        match self.tx.start_client(now, req, dest, reliable) {
            Ok(key) => {
                if let Purpose::Invite(leg) | Purpose::Bye(leg) | Purpose::Reinvite(leg) = purpose {
                    // A leg already forgotten is never dropped again: nothing to record.
                    if self.legs.get(&leg).is_some() {
                        self.leg_transactions
                            .entry(leg)
                            .or_default()
                            .push(key.clone());
                    }
                }
                self.purposes.insert(key, purpose);
            }
            // Our own requests always carry a proper Via; nothing else can fail here.
            Err(e) => debug_assert!(false, "start_client refused our request: {e}"),
        }
        self.pump(now);
    }

    /// Ends a call: CANCEL while it rings (sent once a provisional has arrived, §9.1),
    /// BYE once answered.
    pub fn hang_up(&mut self, now: Instant, leg: LegId) -> Result<(), SipError> {
        let l = self.legs.get_mut(&leg).ok_or(SipError::NoSuchDialog)?;
        if l.inbound.is_some() && l.phase == Phase::Inviting {
            return self.reject(now, leg, 480, "Temporarily Unavailable");
        }
        match l.phase {
            Phase::Inviting => {
                l.hangup_requested = true;
                if l.provisional_seen && !l.cancel_sent {
                    self.send_cancel(now, leg);
                }
            }
            Phase::Confirmed => self.send_bye(now, leg),
            Phase::Ending => {}
        }
        Ok(())
    }

    fn send_cancel(&mut self, now: Instant, leg: LegId) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.cancel_sent = true;
        l.cancel_deadline = Some(now + self.cfg.timers.timeout());
        let inv = &l.invite;
        let mut h = Headers::default();
        for hd in &inv.headers.0 {
            match hd {
                Header::Via(_) if h.top_via().is_none() => h.push(hd.clone()),
                Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::Route(_)
                | Header::MaxForwards(_) => h.push(hd.clone()),
                Header::CSeq(c) => h.push(Header::CSeq(CSeq {
                    seq: c.seq,
                    method: Method::Cancel,
                })),
                _ => {}
            }
        }
        let cancel = Request {
            method: Method::Cancel,
            uri: inv.uri.clone(),
            headers: h,
            body: Vec::new(),
        };
        let dest = l.dest;
        self.start(now, cancel, dest, Purpose::Cancel);
    }

    fn send_bye(&mut self, now: Instant, leg: LegId) {
        let via = self.via();
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(d) = l.dialog.as_mut() else { return };
        l.phase = Phase::Ending;
        let bye = d.request(Method::Bye, via);
        let dest = d.next_hop().unwrap_or(l.dest);
        self.start(now, bye, dest, Purpose::Bye(leg));
    }

    /// Sends a re-INVITE with a new offer (hold, resume, media change).
    pub fn reinvite(&mut self, now: Instant, leg: LegId, sdp: Vec<u8>) -> Result<(), SipError> {
        let via = self.via();
        let contact = self.contact();
        let l = self.legs.get_mut(&leg).ok_or(SipError::NoSuchDialog)?;
        if l.phase != Phase::Confirmed || l.reinvite_seq.is_some() {
            return Err(SipError::NoSuchDialog);
        }
        let d = l.dialog.as_mut().ok_or(SipError::NoSuchDialog)?;
        let mut req = d.request(Method::Invite, via);
        req.headers.push(contact);
        if let Some(ct) = Self::sdp(&sdp) {
            req.headers.push(ct);
        }
        req.body = sdp.clone();
        l.local_body = sdp;
        l.reinvite_seq = Some(d.local_seq);
        let dest = d.next_hop().unwrap_or(l.dest);
        self.start(now, req, dest, Purpose::Reinvite(leg));
        Ok(())
    }

    /// Sends an OPTIONS probe to `uri` at `dest` (trunk health).
    pub fn probe(&mut self, now: Instant, uri: Uri, dest: SocketAddr) -> ProbeId {
        let probe = ProbeId(self.next_leg);
        self.next_leg += 1;
        let mut h = Headers::default();
        h.push(Header::Via(self.via()));
        h.push(Header::MaxForwards(70));
        let mut from = NameAddr::new(self.local_uri());
        from.set_tag(&self.token()[..10]);
        h.push(Header::From(from));
        h.push(Header::To(NameAddr::new(uri.clone())));
        h.push(Header::CallId(format!(
            "{}@{}",
            self.token(),
            self.cfg.local.ip()
        )));
        h.push(Header::CSeq(CSeq {
            seq: 1,
            method: Method::Options,
        }));
        let req = Request {
            method: Method::Options,
            uri,
            headers: h,
            body: Vec::new(),
        };
        self.start(now, req, dest, Purpose::Probe(probe));
        probe
    }

    /// Feeds a datagram received from `source`. Malformed requests are answered 400
    /// (or as their error says); malformed responses are dropped.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        self.handle_parsed(now, source, bytes, parse_datagram(bytes));
    }

    /// Feeds a datagram (or framed stream message) `bytes` that the caller already parsed
    /// with [`parse_datagram`]: parsing needs none of the agent's state, so a driver can
    /// parse on the socket's own thread while the agent works on the previous message.
    /// `bytes` is what an unparseable request is answered from.
    pub fn handle_parsed(
        &mut self,
        now: Instant,
        source: SocketAddr,
        bytes: &[u8],
        parsed: Result<Incoming, SipError>,
    ) {
        match parsed {
            Ok(Incoming::KeepAlive) => {}
            Ok(Incoming::Message(m)) => {
                if !self.screen(now, source, &m) {
                    return;
                }
                self.tx.handle_message(now, source, m);
                self.pump(now);
                self.pending_admission = None;
            }
            Err(e) => {
                let tag = self.token();
                if let Some(resp) = respond_to_invalid(bytes, &e, &tag[..8]) {
                    self.out.push_back(AgentOutput::Transmit(Transmit {
                        to: source,
                        bytes: resp,
                    }));
                }
            }
        }
    }

    /// Fires due timers: the transactions', and ring timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.pump(now);
        // Only legs with a deadline now or earlier can have anything to do.
        let due = self.legs.due(now);
        let mut expired = Vec::new();
        for id in &due {
            if let Some(l) = self.legs.get_mut(id) {
                if l.phase == Phase::Inviting && l.ring_deadline.is_some_and(|d| d <= now) {
                    l.ring_deadline = None;
                    expired.push(*id);
                }
            }
        }
        for leg in expired {
            let _ = self.hang_up(now, leg);
        }
        self.give_up_cancelled(now, &due);
        self.run_session_timers(now, &due);
        self.refresh_registrations(now);
        self.retransmit_answers(now, &due);
        self.retransmit_provisionals(now, &due);
        self.run_glare_retries(now, &due);
        self.expire_bindings(now);
        self.pump(now);
    }

    /// The user part of our From and Contact.
    pub fn user(&self) -> &str {
        &self.cfg.user
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let refreshes = self.registrations.values().filter_map(|r| r.refresh_at);
        self.tx
            .poll_timeout()
            .into_iter()
            .chain(self.legs.next_deadline())
            .chain(refreshes)
            .chain(self.registrar.as_ref().and_then(|r| r.next_expiry()))
            .min()
    }

    /// The next transmission or event.
    pub fn poll_output(&mut self) -> Option<AgentOutput> {
        self.out.pop_front()
    }

    /// How many call legs are alive.
    pub fn legs(&self) -> usize {
        self.legs.len()
    }

    /// RFC 3262: a provisional with `Require: 100rel` is acknowledged with PRACK in its
    /// early dialog. Returns false for a retransmission of one already acknowledged.
    fn acknowledge_reliable(&mut self, now: Instant, leg: LegId, response: &Response) -> bool {
        let reliable = response
            .headers
            .require()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("100rel"));
        let Some(rseq) = response.headers.rseq().copied().filter(|_| reliable) else {
            return true;
        };
        let via = self.via();
        let Some(l) = self.legs.get_mut(&leg) else {
            return true;
        };
        let tag = response
            .headers
            .to()
            .and_then(NameAddr::tag)
            .map(str::to_owned);
        let same_early = l
            .early
            .as_ref()
            .is_some_and(|(d, _)| Some(&d.remote_tag) == tag.as_ref());
        if !same_early {
            let Some(d) = Dialog::from_uac(&l.invite, response) else {
                return true;
            };
            l.early = Some((d, 0));
        }
        let Some((early, last)) = l.early.as_mut() else {
            return true;
        };
        if rseq <= *last {
            return false;
        }
        *last = rseq;
        let invite_cseq = l.invite.headers.cseq().map_or(1, |c| c.seq);
        let mut prack = early.request(Method::Prack, via);
        prack.headers.push(Header::RAck(crate::header::RAck {
            rseq,
            cseq: invite_cseq,
            method: Method::Invite,
        }));
        let dest = early.next_hop().unwrap_or(l.dest);
        self.start(now, prack, dest, Purpose::Prack);
        true
    }

    /// §9.1: an INVITE still without a final response 64*T1 after its CANCEL is given up.
    fn give_up_cancelled(&mut self, now: Instant, due: &[LegId]) {
        let stuck: Vec<LegId> = due
            .iter()
            .copied()
            .filter(|id| {
                self.legs.get(id).is_some_and(|l| {
                    l.phase == Phase::Inviting && l.cancel_deadline.is_some_and(|d| d <= now)
                })
            })
            .collect();
        for leg in stuck {
            let keys: Vec<TxKey> = self
                .leg_transactions
                .get(&leg)
                .into_iter()
                .flatten()
                .filter(|k| self.purposes.get(*k) == Some(&Purpose::Invite(leg)))
                .cloned()
                .collect();
            for k in keys {
                self.tx.abandon(&k);
            }
            self.drop_leg(leg);
            self.emit(AgentEvent::Failed {
                leg,
                status: 487,
                reason: "cancelled; no final response to the INVITE".into(),
            });
        }
    }

    /// Forgets a leg and the transactions that belong to it.
    fn drop_leg(&mut self, leg: LegId) {
        self.legs.remove(&leg);
        for key in self.leg_transactions.remove(&leg).unwrap_or_default() {
            self.purposes.remove(&key);
        }
    }

    fn emit(&mut self, e: AgentEvent) {
        self.out.push_back(AgentOutput::Event(e));
    }

    /// Moves the transaction layer's output along, reacting to its events.
    fn pump(&mut self, now: Instant) {
        while let Some(o) = self.tx.poll_output() {
            match o {
                Output::Transmit(t) => self.out.push_back(AgentOutput::Transmit(t)),
                Output::Event(e) => self.on_tx_event(now, e),
            }
        }
        self.legs.settle();
    }

    fn on_tx_event(&mut self, now: Instant, e: TxEvent) {
        match e {
            TxEvent::Response { key, response } => {
                let purpose = self.purposes.get(&key).copied();
                if response.status >= 200
                    && !(key.method == Method::Invite && response.status < 300)
                {
                    self.purposes.remove(&key);
                }
                match purpose {
                    Some(Purpose::Invite(leg)) => self.on_invite_response(now, leg, response),
                    Some(Purpose::Bye(leg)) if response.status >= 200 => {
                        self.drop_leg(leg);
                        self.emit(AgentEvent::Ended {
                            leg,
                            by_peer: false,
                        });
                    }
                    Some(Purpose::Reinvite(leg)) => self.on_reinvite_response(now, leg, response),
                    Some(Purpose::Update(leg)) => {
                        self.on_update_response(now, leg, response.status, response.body)
                    }
                    Some(Purpose::Register(reg)) => self.on_register_response(now, reg, response),
                    Some(Purpose::Probe(probe)) if response.status >= 200 => {
                        self.emit(AgentEvent::ProbeResult {
                            probe,
                            status: response.status,
                        })
                    }
                    _ => {}
                }
            }
            TxEvent::Timeout { key } => {
                self.on_client_failure(now, key, 408, "no final response (Timer B)")
            }
            TxEvent::TransportFailed { key } => {
                self.on_client_failure(now, key, 503, "transport error: the connection failed")
            }
            TxEvent::StrayResponse { response } => self.resend_ack(&response),
            TxEvent::Request {
                key,
                request,
                source,
            } => self.on_request(now, key, request, source),
            TxEvent::Cancelled { key } => self.on_inbound_cancelled(now, &key),
            TxEvent::Ack { request, .. } => self.on_inbound_ack(&request),
            _ => {}
        }
    }

    /// A client transaction ended without a final response: timed out (408) or its
    /// connection failed (503).
    fn on_client_failure(&mut self, now: Instant, key: TxKey, status: u16, reason: &str) {
        match self.purposes.remove(&key) {
            Some(Purpose::Register(reg)) => self.on_register_timeout(reg),
            Some(Purpose::Invite(leg)) => {
                let answered = self.legs.get(&leg).is_some_and(|l| l.dialog.is_some());
                if !answered {
                    self.drop_leg(leg);
                    self.emit(AgentEvent::Failed {
                        leg,
                        status,
                        reason: reason.into(),
                    });
                }
            }
            Some(Purpose::Bye(leg)) => {
                self.drop_leg(leg);
                self.emit(AgentEvent::Ended {
                    leg,
                    by_peer: false,
                });
            }
            Some(Purpose::Reinvite(leg)) => {
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.reinvite_seq = None;
                }
                self.emit(AgentEvent::Reinvited {
                    leg,
                    status,
                    body: Vec::new(),
                });
            }
            Some(Purpose::Probe(probe)) => self.emit(AgentEvent::ProbeResult { probe, status }),
            Some(Purpose::Update(leg)) => self.on_update_response(now, leg, status, Vec::new()),
            _ => {}
        }
    }

    fn resend_ack(&mut self, response: &Response) {
        let is_invite_2xx = response
            .headers
            .cseq()
            .is_some_and(|c| c.method == Method::Invite)
            && (200..300).contains(&response.status);
        if !is_invite_2xx {
            return;
        }
        let found = self
            .legs
            .with_call_id(response.headers.call_id())
            .into_iter()
            .find_map(|id| {
                let l = self.legs.get(&id)?;
                let d = l.dialog.as_ref()?;
                d.matches_response(response)
                    .then(|| l.ack.clone())
                    .flatten()
            });
        if let Some((bytes, to)) = found {
            self.out
                .push_back(AgentOutput::Transmit(Transmit { to, bytes }));
        }
    }

    fn on_invite_response(&mut self, now: Instant, leg: LegId, response: Response) {
        let status = response.status;
        if status < 200 {
            let Some(l) = self.legs.get_mut(&leg) else {
                return;
            };
            l.provisional_seen = true;
            let cancel_now = l.hangup_requested && !l.cancel_sent;
            if status > 100 && !self.acknowledge_reliable(now, leg, &response) {
                // A retransmitted reliable provisional: already PRACKed and reported.
                return;
            }
            if status > 100 {
                self.emit(AgentEvent::Progress {
                    leg,
                    status,
                    body: response.body,
                });
            }
            if cancel_now {
                self.send_cancel(now, leg);
            }
            return;
        }
        if status < 300 {
            self.on_invite_2xx(now, leg, response);
            return;
        }
        if (status == 401 || status == 407) && self.retry_with_credentials(now, leg, &response) {
            return;
        }
        if status == 422 && self.retry_with_min_se(now, leg, &response) {
            return;
        }
        if self.legs.get(&leg).is_some_and(|l| l.dialog.is_none()) {
            self.drop_leg(leg);
            self.emit(AgentEvent::Failed {
                leg,
                status,
                reason: response.reason,
            });
        }
    }

    /// RFC 4028 §6: a 422 names the shortest interval the peer accepts (Min-SE); retry
    /// once with it. False when there is nothing to retry with.
    fn retry_with_min_se(&mut self, now: Instant, leg: LegId, response: &Response) -> bool {
        let Some(min_se) = response.headers.0.iter().find_map(|h| match h {
            Header::MinSe(v) => Some(*v),
            _ => None,
        }) else {
            return false;
        };
        let via = self.via();
        let Some(l) = self.legs.get_mut(&leg) else {
            return false;
        };
        let asked = l.invite.headers.0.iter().find_map(|h| match h {
            Header::SessionExpires(v) => Some(v.value),
            _ => None,
        });
        if l.hangup_requested || asked.is_none_or(|a| a >= min_se) {
            return false;
        }
        let mut invite = l.invite.clone();
        invite.headers.0.retain(|h| !matches!(h, Header::Via(_)));
        invite.headers.0.insert(0, Header::Via(via));
        for h in &mut invite.headers.0 {
            match h {
                Header::CSeq(c) => c.seq += 1,
                Header::SessionExpires(v) => v.value = min_se,
                _ => {}
            }
        }
        invite.headers.push(Header::MinSe(min_se));
        l.invite = invite.clone();
        l.provisional_seen = false;
        let dest = l.dest;
        self.start(now, invite, dest, Purpose::Invite(leg));
        true
    }

    /// Answers a 401/407 with a new INVITE carrying credentials; false when it cannot.
    fn retry_with_credentials(&mut self, now: Instant, leg: LegId, response: &Response) -> bool {
        let via = self.via();
        let cnonce = self.token();
        let Some(l) = self.legs.get_mut(&leg) else {
            return false;
        };
        if l.hangup_requested {
            return false;
        }
        let Some(auth) = l.auth.as_mut() else {
            return false;
        };
        let proxy = response.status == 407;
        let challenge = if proxy {
            response.headers.proxy_authenticate().next()
        } else {
            response.headers.www_authenticate().next()
        };
        let Some(challenge) = challenge else {
            return false;
        };
        if auth.challenge(challenge).is_err() {
            return false;
        }
        let uri = l.invite.uri.to_string();
        let Ok(credentials) = auth.authorize(&Method::Invite, &uri, &cnonce[..12]) else {
            return false;
        };
        let mut invite = l.invite.clone();
        invite.headers.0.retain(|h| {
            !matches!(
                h,
                Header::Via(_) | Header::Authorization(_) | Header::ProxyAuthorization(_)
            )
        });
        invite.headers.0.insert(0, Header::Via(via));
        for h in &mut invite.headers.0 {
            if let Header::CSeq(c) = h {
                c.seq += 1;
            }
        }
        invite.headers.push(if proxy {
            Header::ProxyAuthorization(credentials)
        } else {
            Header::Authorization(credentials)
        });
        l.invite = invite.clone();
        l.provisional_seen = false;
        let dest = l.dest;
        self.start(now, invite, dest, Purpose::Invite(leg));
        true
    }

    fn on_invite_2xx(&mut self, now: Instant, leg: LegId, response: Response) {
        let ack_via = self.via();
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let invite_seq = l.invite.headers.cseq().map_or(1, |c| c.seq);
        if let Some(d) = &l.dialog {
            if d.matches_response(&response) {
                // A retransmitted 2xx: our ACK was lost.
                if let Some((bytes, to)) = l.ack.clone() {
                    self.out
                        .push_back(AgentOutput::Transmit(Transmit { to, bytes }));
                }
                return;
            }
            // Another fork answered too (§13.2.2.4): ACK it and release it with BYE.
            let Some(mut fork) = Dialog::from_uac(&l.invite, &response) else {
                return;
            };
            let dest = fork.next_hop().unwrap_or(l.dest);
            let mut ack = fork.ack(invite_seq, ack_via);
            self.wire.stamp(&mut ack, dest);
            self.tx.send_stateless(dest, &SipMessage::Request(ack));
            let bye_via = self.via();
            let bye = fork.request(Method::Bye, bye_via);
            self.start(now, bye, dest, Purpose::ForkBye);
            return;
        }
        let Some(mut dialog) = Dialog::from_uac(&l.invite, &response) else {
            return;
        };
        if let Some((early, _)) = l.early.take() {
            // PRACKs used CSeq numbers in the early dialog: continue after them.
            if early.remote_tag == dialog.remote_tag {
                dialog.local_seq = dialog.local_seq.max(early.local_seq);
            }
        }
        if let Some(a) = l.auth.as_mut() {
            a.accepted();
        }
        let dest = dialog.next_hop().unwrap_or(l.dest);
        self.wire.learn(dest, &dialog.remote_target);
        let mut ack = dialog.ack(invite_seq, ack_via);
        self.wire.stamp(&mut ack, dest);
        let bytes = ack.to_bytes();
        l.ack = Some((bytes.clone(), dest));
        l.dialog = Some(dialog);
        l.phase = Phase::Confirmed;
        let hang_up = l.hangup_requested;
        self.out
            .push_back(AgentOutput::Transmit(Transmit { to: dest, bytes }));
        self.start_session_timer(now, leg, &response);
        self.emit(AgentEvent::Answered {
            leg,
            body: response.body,
        });
        self.cancel_siblings(now, leg);
        if hang_up {
            // Our CANCEL crossed the 200: the call exists, so end it with BYE.
            self.send_bye(now, leg);
        }
    }

    fn on_reinvite_response(&mut self, now: Instant, leg: LegId, response: Response) {
        if response.status < 200 {
            return;
        }
        let via = self.via();
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(seq) = l.reinvite_seq.take() else {
            // A retransmitted 2xx for a re-INVITE already ACKed.
            return;
        };
        let refresh = std::mem::take(&mut l.refreshing);
        if response.status == 491 {
            // Glare: the peer's re-INVITE crossed ours; ours goes again after a wait.
            let what = if refresh {
                modify::Retry::Refresh
            } else {
                modify::Retry::Reinvite
            };
            let body = l.local_body.clone();
            self.schedule_glare_retry(now, leg, what, body);
            return;
        }
        if response.status < 300 {
            if let Some(d) = &l.dialog {
                let mut ack = d.ack(seq, via);
                let dest = d.next_hop().unwrap_or(l.dest);
                self.wire.stamp(&mut ack, dest);
                self.tx.send_stateless(dest, &SipMessage::Request(ack));
                while let Some(Output::Transmit(t)) = self.tx.poll_output() {
                    self.out.push_back(AgentOutput::Transmit(t));
                }
            }
            self.start_session_timer(now, leg, &response);
        }
        if refresh {
            // A failed refresh leaves the expiry running: the session ends with BYE then.
            return;
        }
        self.emit(AgentEvent::Reinvited {
            leg,
            status: response.status,
            body: response.body,
        });
    }

    fn on_request(&mut self, now: Instant, key: TxKey, request: Request, source: SocketAddr) {
        let admission = self.pending_admission.take();
        let fresh_invite = request.method == Method::Invite
            && request.headers.to().and_then(NameAddr::tag).is_none();
        if let (true, Some(admission)) = (fresh_invite, admission.clone()) {
            self.on_inbound_invite(now, key, request, source, admission);
            self.pump(now);
            return;
        }
        if request.method == Method::Register && self.registrar.is_some() {
            self.on_phone_register(now, key, request, source);
            self.pump(now);
            return;
        }
        if let Some(crate::inbound::Admission::Refuse(403)) = admission {
            let tag = self.token()[..10].to_owned();
            let _ = self.tx.respond(
                now,
                &key,
                response_to(&request, 403, "Forbidden", Some(&tag)),
            );
            self.pump(now);
            return;
        }
        if request.method == Method::Prack {
            self.on_prack(now, &key, &request);
            self.pump(now);
            return;
        }
        let tag = self.token()[..10].to_owned();
        let in_dialog = self
            .legs
            .with_call_id(request.headers.call_id())
            .into_iter()
            .find(|id| {
                self.legs.get(id).is_some_and(|l| {
                    l.dialog
                        .as_ref()
                        .is_some_and(|d| d.matches_request(&request))
                })
            });
        let resp = match (&request.method, in_dialog) {
            (Method::Bye, Some(leg)) => {
                self.drop_leg(leg);
                self.emit(AgentEvent::Ended { leg, by_peer: true });
                response_to(&request, 200, "OK", Some(&tag))
            }
            (Method::Invite, Some(leg))
                if self
                    .legs
                    .get(&leg)
                    .is_some_and(|l| l.reinvite_seq.is_some()) =>
            {
                // Our own re-INVITE is in flight: glare (§14.2).
                let mut r = response_to(&request, 491, "Request Pending", Some(&tag));
                r.headers
                    .push(self.wire.contact_for_request(&request, source));
                r
            }
            (Method::Invite, Some(leg)) => {
                // The peer's re-INVITE (hold, resume, media change, session refresh):
                // keep our offer.
                let body = self
                    .legs
                    .get(&leg)
                    .map(|l| l.local_body.clone())
                    .unwrap_or_default();
                let mut r = response_to(&request, 200, "OK", Some(&tag));
                if let Some(se) = self.peer_refreshed(now, leg, &request) {
                    r.headers.push(Header::Require(vec!["timer".into()]));
                    r.headers.push(se);
                }
                r.headers
                    .push(self.wire.contact_for_request(&request, source));
                if let Some(ct) = Self::sdp(&body) {
                    r.headers.push(ct);
                }
                r.body = body;
                r
            }
            (Method::Options, _) => {
                let mut r = response_to(&request, 200, "OK", Some(&tag));
                r.headers.push(Self::allow());
                r.headers.push(Header::Accept(vec![MediaType {
                    mtype: "application".into(),
                    subtype: "sdp".into(),
                    params: Vec::new(),
                }]));
                r
            }
            (Method::Update, Some(leg)) => {
                // A session refresh without media change (RFC 3311 / 4028).
                let mut r = response_to(&request, 200, "OK", Some(&tag));
                if let Some(se) = self.peer_refreshed(now, leg, &request) {
                    r.headers.push(Header::Require(vec!["timer".into()]));
                    r.headers.push(se);
                }
                r.headers
                    .push(self.wire.contact_for_request(&request, source));
                r
            }
            (_, Some(_)) => response_to(&request, 501, "Not Implemented", Some(&tag)),
            (Method::Invite, None) if request.headers.to().and_then(NameAddr::tag).is_none() => {
                response_to(&request, 480, "Temporarily Unavailable", Some(&tag))
            }
            _ => response_to(&request, 481, "Call/Transaction Does Not Exist", Some(&tag)),
        };
        let _ = self.tx.respond(now, &key, resp);
        self.pump(now);
    }
}

mod legs;
mod modify;
mod phones;
mod register;
mod session_timer;
mod transport;
mod uas;
pub use register::{RegId, RegistrationSpec};

#[cfg(test)]
mod tests;
