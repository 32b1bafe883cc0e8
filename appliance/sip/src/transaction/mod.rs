//! The transaction layer (RFC 3261 §17, with RFC 6026's Accepted state and RFC 3581
//! rport): INVITE and non-INVITE client and server transactions, timers A-M, UDP
//! retransmission. Sans-IO in the style of quinn-proto: the driver feeds received
//! messages ([`TransactionLayer::handle_message`]) and the clock
//! ([`TransactionLayer::handle_timeout`] at [`TransactionLayer::poll_timeout`]), and sends
//! what [`TransactionLayer::poll_output`] gives. The transaction user (dialogs, the call
//! logic) starts client transactions and answers server ones.
//!
//! This room owns matching and retransmission only. It never resolves names, opens
//! sockets or reads the clock; it never builds dialog state (that is `dialog.rs`).

mod client;
mod server;
#[cfg(test)]
mod tests;

use crate::error::SipError;
use crate::header::{Header, Via};
use crate::message::{Method, Request, Response, SipMessage};
use crate::uri::Host;
use client::ClientTx;
use server::ServerTx;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The protocol timers' base values (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; first retransmit interval. Default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses. 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network. 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J, L, M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Which side of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// Identifies a transaction (RFC 3261 §17.1.3 and §17.2.3). The key is cloned many times
/// per transaction (the timeline, the events, the agent's legs), so its text is shared,
/// not copied: a clone is two reference-count increments, not two allocations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    /// Client or server.
    pub role: Role,
    /// The top Via branch (or, for pre-RFC 3261 requests, a key built from the dialog
    /// identifiers).
    pub branch: Arc<str>,
    /// The method (ACK folds into INVITE on the server side).
    pub method: Method,
    /// The top Via sent-by (server side only).
    pub sent_by: Arc<str>,
}

/// A client key's sent-by: empty, and one shared allocation for all of them.
fn no_sent_by() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

impl TxKey {
    fn client(branch: &str, method: &Method) -> TxKey {
        TxKey {
            role: Role::Client,
            branch: branch.into(),
            method: method.clone(),
            sent_by: no_sent_by(),
        }
    }

    fn server(req: &Request) -> Option<TxKey> {
        let via = req.headers.top_via()?;
        let method = if req.method == Method::Ack {
            Method::Invite
        } else {
            req.method.clone()
        };
        // `host:port`, written without `core::fmt` (this runs for every request).
        let mut sent_by = Vec::with_capacity(32);
        via.host.write_to(&mut sent_by);
        sent_by.push(b':');
        crate::wire::put_decimal(&mut sent_by, u64::from(via.port.unwrap_or(5060)));
        let sent_by = String::from_utf8(sent_by)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let branch = if via.has_rfc3261_branch() {
            via.branch().unwrap_or_default().to_owned()
        } else {
            // RFC 2543 peers: match on Call-ID, From tag and CSeq number (§17.2.3).
            format!(
                "2543:{}:{}:{}",
                req.headers.call_id()?,
                req.headers.from()?.tag().unwrap_or(""),
                req.headers.cseq()?.seq
            )
        };
        Some(TxKey {
            role: Role::Server,
            branch: branch.into(),
            method,
            sent_by: sent_by.into(),
        })
    }
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// The serialized message.
    pub bytes: Vec<u8>,
}

/// What the transaction layer tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxEvent {
    /// A new request: a server transaction exists; answer with
    /// [`TransactionLayer::respond`].
    Request {
        /// The server transaction.
        key: TxKey,
        /// The request (top Via stamped with received/rport).
        request: Request,
        /// Where it came from.
        source: SocketAddr,
    },
    /// An ACK for a 2xx (it has no transaction of its own): for the dialog layer.
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        source: SocketAddr,
    },
    /// A response for a client transaction. After a 2xx to an INVITE, further 2xx
    /// (retransmissions or other forks) keep arriving here until Timer M.
    Response {
        /// The client transaction.
        key: TxKey,
        /// The response.
        response: Response,
    },
    /// A client transaction got no final response (Timer B or F): treat as 408.
    Timeout {
        /// The client transaction.
        key: TxKey,
    },
    /// A client transaction's connection failed before its final response (RFC 3261
    /// §8.1.3.1: treat as 503). The transaction is gone.
    TransportFailed {
        /// The client transaction.
        key: TxKey,
    },
    /// A server INVITE transaction sent a final non-2xx and got no ACK (Timer H).
    AckTimeout {
        /// The server transaction.
        key: TxKey,
    },
    /// A CANCEL matched a server INVITE transaction still proceeding. The CANCEL has
    /// been answered 200; the user should answer the INVITE with 487.
    Cancelled {
        /// The INVITE's server transaction.
        key: TxKey,
    },
    /// A response that matches no client transaction (e.g. a 2xx after Timer M).
    StrayResponse {
        /// The response.
        response: Response,
    },
}

/// What to do next.
// Events carry whole messages and are consumed at once; boxing them would add an
// allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send bytes.
    Transmit(Transmit),
    /// Tell the user.
    Event(TxEvent),
}

/// A transaction and where it sits on the layer's timeline. Kept together so that putting
/// a transaction back on the timeline after a change is one map lookup, not three (the
/// keys are strings from the network, hashed with a keyed hash on every lookup).
#[derive(Debug)]
struct Tracked<T> {
    tx: T,
    slot: Option<(Instant, u64)>,
}

impl<T> Tracked<T> {
    fn new(tx: T) -> Self {
        Tracked { tx, slot: None }
    }
}

/// All transactions of one SIP endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: TimerConfig,
    clients: HashMap<TxKey, Tracked<ClientTx>>,
    servers: HashMap<TxKey, Tracked<ServerTx>>,
    /// Every live transaction's next deadline, earliest first (the second field only keeps
    /// equal instants apart). Timers D and J keep each transaction 32 s after its call's
    /// messages, so a box at a few hundred calls/s holds tens of thousands: the clock is
    /// served from here, never by visiting them all.
    timeline: BTreeMap<(Instant, u64), TxKey>,
    next_slot: u64,
    out: VecDeque<Output>,
}

impl TransactionLayer {
    /// An empty layer with the given timers.
    pub fn new(timers: TimerConfig) -> Self {
        TransactionLayer {
            timers,
            clients: HashMap::new(),
            servers: HashMap::new(),
            timeline: BTreeMap::new(),
            next_slot: 0,
            out: VecDeque::new(),
        }
    }

    /// The timer configuration.
    pub fn timers(&self) -> TimerConfig {
        self.timers
    }

    /// Starts a client transaction for `request` (not ACK) sent to `to`. The request
    /// must carry a top Via with an RFC 3261 branch; `reliable` is true for TCP/TLS.
    pub fn start_client(
        &mut self,
        now: Instant,
        request: Request,
        to: SocketAddr,
        reliable: bool,
    ) -> Result<TxKey, SipError> {
        let branch = request
            .headers
            .top_via()
            .filter(|v| v.has_rfc3261_branch())
            .and_then(Via::branch)
            .ok_or(SipError::MalformedHeader {
                header: "Via",
                reason: "a request we send needs a top Via with an RFC 3261 branch",
            })?
            .to_owned();
        let key = TxKey::client(&branch, &request.method);
        let tx = ClientTx::start(now, request, to, reliable, self.timers, &mut self.out);
        self.clients.insert(key.clone(), Tracked::new(tx));
        self.reschedule(&key);
        Ok(key)
    }

    /// Sends an ACK for a 2xx, or any message outside a transaction.
    pub fn send_stateless(&mut self, to: SocketAddr, message: &SipMessage) {
        self.out.push_back(Output::Transmit(Transmit {
            to,
            bytes: message.to_bytes(),
        }));
    }

    /// Answers a server transaction.
    pub fn respond(
        &mut self,
        now: Instant,
        key: &TxKey,
        response: Response,
    ) -> Result<(), SipError> {
        let tx = &mut self.servers.get_mut(key).ok_or(SipError::NoSuchDialog)?.tx;
        tx.respond(now, response, self.timers, &mut self.out);
        self.reschedule(key);
        Ok(())
    }

    /// Feeds a message received from `source` (parsed by the driver).
    pub fn handle_message(&mut self, now: Instant, source: SocketAddr, message: SipMessage) {
        match message {
            SipMessage::Response(r) => self.handle_response(now, r),
            SipMessage::Request(r) => self.handle_request(now, source, r),
        }
    }

    fn handle_response(&mut self, now: Instant, response: Response) {
        let key = match (response.headers.top_via(), response.headers.cseq()) {
            (Some(v), Some(c)) => v.branch().map(|b| TxKey::client(b, &c.method)),
            _ => None,
        };
        match key.and_then(|k| self.clients.get_mut(&k).map(|t| (k, &mut t.tx))) {
            Some((key, tx)) => {
                tx.on_response(now, key.clone(), response, self.timers, &mut self.out);
                self.reschedule(&key);
            }
            None => self
                .out
                .push_back(Output::Event(TxEvent::StrayResponse { response })),
        }
    }

    fn handle_request(&mut self, now: Instant, source: SocketAddr, mut request: Request) {
        stamp_via(&mut request, source);
        let Some(key) = TxKey::server(&request) else {
            return;
        };
        if let Some(Tracked { tx, .. }) = self.servers.get_mut(&key) {
            if request.method == Method::Ack && tx.is_accepted() {
                self.out
                    .push_back(Output::Event(TxEvent::Ack { request, source }));
            } else {
                tx.on_request(now, &request, self.timers, &mut self.out);
                self.reschedule(&key);
            }
            return;
        }
        match request.method {
            Method::Ack => self
                .out
                .push_back(Output::Event(TxEvent::Ack { request, source })),
            Method::Cancel => self.handle_cancel(now, key, request, source),
            _ => {
                let tx = ServerTx::start(now, &request, source, self.timers, &mut self.out);
                self.servers.insert(key.clone(), Tracked::new(tx));
                self.reschedule(&key);
                self.out.push_back(Output::Event(TxEvent::Request {
                    key,
                    request,
                    source,
                }));
            }
        }
    }

    /// CANCEL (§9.2): its own server transaction, answered here: 200 when it matches an
    /// INVITE transaction, 481 otherwise.
    fn handle_cancel(&mut self, now: Instant, key: TxKey, request: Request, source: SocketAddr) {
        let invite_key = TxKey {
            method: Method::Invite,
            ..key.clone()
        };
        let invite = self.servers.get(&invite_key).map(|t| &t.tx);
        let status = if invite.is_some() { 200 } else { 481 };
        let proceeding = invite.is_some_and(ServerTx::is_proceeding);
        let mut tx = ServerTx::start(now, &request, source, self.timers, &mut self.out);
        let resp = crate::message::response_to(
            &request,
            status,
            if status == 200 {
                "OK"
            } else {
                "Call/Transaction Does Not Exist"
            },
            None,
        );
        tx.respond(now, resp, self.timers, &mut self.out);
        self.servers.insert(key.clone(), Tracked::new(tx));
        self.reschedule(&key);
        if proceeding {
            self.out
                .push_back(Output::Event(TxEvent::Cancelled { key: invite_key }));
        }
    }

    /// Fires every timer due at `now` (each due transaction once; one whose next timer is
    /// already due again, after a late call, fires again at the next call).
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TxKey> = self
            .timeline
            .range(..=(now, u64::MAX))
            .map(|(_, key)| key.clone())
            .collect();
        let timers = self.timers;
        for key in due {
            let out = &mut self.out;
            let alive = match key.role {
                Role::Client => self
                    .clients
                    .get_mut(&key)
                    .is_some_and(|t| t.tx.on_timeout(now, &key, timers, out)),
                Role::Server => self
                    .servers
                    .get_mut(&key)
                    .is_some_and(|t| t.tx.on_timeout(now, &key, timers, out)),
            };
            if !alive {
                self.remove(&key);
            }
            self.reschedule(&key);
        }
    }

    /// The earliest instant at which [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeline.keys().next().map(|(at, _)| *at)
    }

    /// Puts `key` on the timeline at its transaction's current deadline (off it when the
    /// transaction is gone or waits for nothing). Called after every change to a
    /// transaction.
    fn reschedule(&mut self, key: &TxKey) {
        let (deadline, slot) = match key.role {
            Role::Client => match self.clients.get_mut(key) {
                Some(t) => (t.tx.deadline(), &mut t.slot),
                None => return,
            },
            Role::Server => match self.servers.get_mut(key) {
                Some(t) => (t.tx.deadline(), &mut t.slot),
                None => return,
            },
        };
        if slot.map(|(at, _)| at) == deadline {
            return;
        }
        if let Some(old) = slot.take() {
            self.timeline.remove(&old);
        }
        if let Some(at) = deadline {
            let new = (at, self.next_slot);
            self.next_slot += 1;
            self.timeline.insert(new, key.clone());
            *slot = Some(new);
        }
    }

    /// Drops a transaction and its timeline entry.
    fn remove(&mut self, key: &TxKey) {
        let slot = match key.role {
            Role::Client => self.clients.remove(key).and_then(|t| t.slot),
            Role::Server => self.servers.remove(key).and_then(|t| t.slot),
        };
        if let Some(slot) = slot {
            self.timeline.remove(&slot);
        }
    }

    /// The next transmission or event.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Ends a client transaction without a final response (RFC 3261 §9.1: an INVITE
    /// whose CANCEL got no final response within 64*T1 is given up). Nothing more is
    /// reported for it.
    pub fn abandon(&mut self, key: &TxKey) {
        if key.role == Role::Client {
            self.remove(key);
            self.reschedule(key);
        }
    }

    /// The connection to `to` failed: every client transaction still waiting for a final
    /// response from it ends with [`TxEvent::TransportFailed`].
    pub fn fail_destination(&mut self, to: SocketAddr) {
        let failed: Vec<TxKey> = self
            .clients
            .iter()
            .filter(|(_, t)| t.tx.destination() == to && t.tx.awaiting_final())
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            self.remove(&key);
            self.reschedule(&key);
            self.out
                .push_back(Output::Event(TxEvent::TransportFailed { key }));
        }
    }

    /// The earliest deadline found by visiting every transaction, and whether the
    /// timeline holds exactly one entry per transaction that has a deadline: what the
    /// timeline must always agree with.
    #[cfg(test)]
    fn timeline_agrees(&self) -> bool {
        let c = self.clients.values().filter_map(|t| t.tx.deadline());
        let s = self.servers.values().filter_map(|t| t.tx.deadline());
        let with_deadline: Vec<Instant> = c.chain(s).collect();
        // Each timeline entry is the slot its transaction records, at its deadline.
        let recorded = |key: &TxKey| match key.role {
            Role::Client => self.clients.get(key).map(|t| (t.slot, t.tx.deadline())),
            Role::Server => self.servers.get(key).map(|t| (t.slot, t.tx.deadline())),
        };
        with_deadline.iter().min().copied() == self.poll_timeout()
            && with_deadline.len() == self.timeline.len()
            && self
                .timeline
                .iter()
                .all(|(slot, key)| recorded(key) == Some((Some(*slot), Some(slot.0))))
    }

    /// How many transactions are alive (clients, servers).
    pub fn live(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }
}

/// RFC 3261 §18.2.1 and RFC 3581: record where a request really came from in its top Via.
fn stamp_via(request: &mut Request, source: SocketAddr) {
    if let Some(via) = request.headers.top_via_mut() {
        if via.host.ip() != Some(source.ip()) {
            via.set_param("received", Some(&source.ip().to_string()));
        }
        if via.rport().is_some() {
            via.set_param("rport", Some(&source.port().to_string()));
        }
    }
}

/// Where a response to this request goes (§18.2.2, RFC 3581 §4): the source for reliable
/// transports; otherwise received (or the Via host) at rport (or the Via port).
fn response_destination(request: &Request, source: SocketAddr, reliable: bool) -> SocketAddr {
    if reliable {
        return source;
    }
    let Some(via) = request.headers.top_via() else {
        return source;
    };
    let ip: Option<IpAddr> = via
        .received()
        .and_then(|r| Host::parse(r).ok())
        .and_then(|h| h.ip())
        .or_else(|| via.host.ip());
    let port = via.rport().flatten().or(via.port).unwrap_or(5060);
    match ip {
        Some(ip) => SocketAddr::new(ip, port),
        None => source,
    }
}

/// The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3).
fn ack_for_non_2xx(invite: &Request, response: &Response) -> Request {
    let mut headers = crate::message::Headers::default();
    if let Some(v) = invite.headers.top_via() {
        headers.push(Header::Via(v.clone()));
    }
    for h in &invite.headers.0 {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    if let Some(to) = response.headers.to() {
        headers.push(Header::To(to.clone()));
    }
    if let Some(c) = invite.headers.cseq() {
        headers.push(Header::CSeq(crate::header::CSeq {
            seq: c.seq,
            method: Method::Ack,
        }));
    }
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}
