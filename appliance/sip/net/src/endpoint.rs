//! The driver: one task per endpoint owning its UDP sockets, TCP and TLS listeners,
//! connections and the core's timer. Messages in (datagrams, framed stream messages) go
//! to the core with their source; the core's transmissions go out by destination:
//!
//! 1. an open connection to that address (one we made, or one the peer made to us —
//!    so responses and in-dialog requests reuse the peer's connection);
//! 2. else, when the core says the destination is TCP or TLS, a new connection (the
//!    message waits queued while it connects; later messages to it queue too);
//! 3. else UDP, from the socket of the destination's address family.
//!
//! A connection that cannot be made, or that breaks, is handed to the core as a transport
//! error for that address. Stream keep-alives (RFC 5626 CRLF ping) are answered; the
//! connection upkeep of [`crate::liveness`] (pings on our idle connections, closing idle
//! inbound ones, a cap on inbound connections per source) is carried out here.

use crate::error::TransportError;
use crate::liveness::{SourceLimit, StreamPolicy, StreamUpkeep, Upkeep};
use crate::tls::TlsSettings;
use callgate_sip::agent::{AgentOutput, UserAgent};
use callgate_sip::error::SipError;
use callgate_sip::framing::{StreamFramer, StreamItem};
use callgate_sip::header::Transport;
use callgate_sip::message::SipMessage;
use callgate_sip::parse::{parse_datagram, Incoming};
use callgate_sip::transaction::Transmit;
use callgate_sip::trunk::router::{OutboundRouter, RouterOutput};
use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Largest message accepted on a stream.
const MAX_STREAM_MESSAGE: usize = 65_535;
/// How long a new outbound connection (TCP connect plus TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the driver needs from a sans-IO core.
pub trait SipCore: Send + 'static {
    /// What the core reports to its user.
    type Event: Send + Debug + 'static;
    /// A message (datagram or framed stream message) from `from`: its `bytes`, and what
    /// the socket's task parsed from them (parsing needs no core state, so it runs beside
    /// the core instead of in its turn).
    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        parsed: Result<Incoming, SipError>,
    );
    /// The clock reached the core's deadline.
    fn handle_timeout(&mut self, now: Instant);
    /// The core's next deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next thing to send, or event.
    fn poll(&mut self) -> Option<Result<Transmit, Self::Event>>;
    /// The transport requests to `to` take.
    fn transport_for(&self, to: SocketAddr) -> Transport;
    /// Tells the core where the driver listens.
    fn add_listener(&mut self, transport: Transport, local: SocketAddr);
    /// The connection to `peer` failed or broke.
    fn handle_transport_error(&mut self, now: Instant, peer: SocketAddr);
}

impl SipCore for UserAgent {
    type Event = callgate_sip::agent::AgentEvent;
    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        parsed: Result<Incoming, SipError>,
    ) {
        self.handle_parsed(now, from, bytes, parsed);
    }
    fn handle_timeout(&mut self, now: Instant) {
        UserAgent::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        UserAgent::poll_timeout(self)
    }
    #[allow(
        clippy::result_large_err,
        reason = "the Result is an either (datagram or event), not an error path; each event is moved once"
    )]
    fn poll(&mut self) -> Option<Result<Transmit, Self::Event>> {
        self.poll_output().map(|o| match o {
            AgentOutput::Transmit(t) => Ok(t),
            AgentOutput::Event(e) => Err(e),
        })
    }
    fn transport_for(&self, to: SocketAddr) -> Transport {
        UserAgent::transport_for(self, to)
    }
    fn add_listener(&mut self, transport: Transport, local: SocketAddr) {
        UserAgent::add_listener(self, transport, local);
    }
    fn handle_transport_error(&mut self, now: Instant, peer: SocketAddr) {
        UserAgent::handle_transport_error(self, now, peer);
    }
}

impl SipCore for OutboundRouter {
    type Event = callgate_sip::trunk::router::DialEvent;
    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        parsed: Result<Incoming, SipError>,
    ) {
        self.handle_parsed(now, from, bytes, parsed);
    }
    fn handle_timeout(&mut self, now: Instant) {
        OutboundRouter::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        OutboundRouter::poll_timeout(self)
    }
    fn poll(&mut self) -> Option<Result<Transmit, Self::Event>> {
        self.poll_output().map(|o| match o {
            RouterOutput::Transmit(t) => Ok(t),
            RouterOutput::Event(e) => Err(e),
        })
    }
    fn transport_for(&self, to: SocketAddr) -> Transport {
        OutboundRouter::transport_for(self, to)
    }
    fn add_listener(&mut self, transport: Transport, local: SocketAddr) {
        OutboundRouter::add_listener(self, transport, local);
    }
    fn handle_transport_error(&mut self, now: Instant, peer: SocketAddr) {
        OutboundRouter::handle_transport_error(self, now, peer);
    }
}

/// Where an endpoint listens, and how it makes TLS connections.
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// UDP sockets to bind (port 0 picks a free one), IPv4 and/or IPv6.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners (need `tls` with a certificate).
    pub tls: Vec<SocketAddr>,
    /// TLS client (and server) settings; needed for any TLS.
    pub tls_settings: Option<TlsSettings>,
    /// The name to check a TLS peer's certificate against, per address (a trunk's host
    /// name); peers not listed are checked by IP address.
    pub tls_names: HashMap<SocketAddr, String>,
    /// Hand out every message sent and received ([`SipEndpoint::take_wire`]).
    pub trace: bool,
    /// Keep-alives, idle closing and the per-source cap of stream connections.
    pub streams: StreamPolicy,
}

/// The addresses actually bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    /// UDP sockets.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<SocketAddr>,
}

/// One message on the wire, for ladders and traces.
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// When it was sent or received.
    pub at: Instant,
    /// Sent by us (otherwise received).
    pub outbound: bool,
    /// The transport.
    pub transport: Transport,
    /// The other end.
    pub peer: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

type CoreCall<C> = Box<dyn FnOnce(&mut C, Instant) + Send>;

enum Command<C> {
    Core(CoreCall<C>),
    Connections(oneshot::Sender<Vec<(SocketAddr, Transport)>>),
}

/// What the socket and connection tasks tell the driver loop.
enum NetEvent {
    Datagram {
        from: SocketAddr,
        bytes: Vec<u8>,
        parsed: Result<Incoming, SipError>,
    },
    StreamMessage {
        from: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
        /// The message, or why the framed bytes were not one (the core answers a request
        /// it can still make out with 400, as it does a datagram).
        parsed: Result<SipMessage, SipError>,
    },
    Connected {
        peer: SocketAddr,
        transport: Transport,
        writer: mpsc::UnboundedSender<Vec<u8>>,
        close: watch::Sender<bool>,
        outbound: bool,
    },
    /// A CRLF keep-alive arrived: a ping (answered already) or a pong.
    KeepAlive {
        peer: SocketAddr,
        pong: bool,
    },
    ConnectFailed {
        peer: SocketAddr,
        reason: String,
    },
    Closed {
        peer: SocketAddr,
        writer: mpsc::UnboundedSender<Vec<u8>>,
        reason: Option<String>,
    },
}

enum Conn {
    Open {
        transport: Transport,
        writer: mpsc::UnboundedSender<Vec<u8>>,
        close: watch::Sender<bool>,
    },
    Connecting {
        transport: Transport,
        queue: Vec<Vec<u8>>,
    },
}

/// A running endpoint: a core driven over real sockets.
pub struct SipEndpoint<C: SipCore> {
    commands: mpsc::UnboundedSender<Command<C>>,
    events: mpsc::UnboundedReceiver<C::Event>,
    wire: Option<mpsc::UnboundedReceiver<WireRecord>>,
    bound: Bound,
    task: JoinHandle<()>,
    helpers: Vec<JoinHandle<()>>,
}

impl<C: SipCore> Debug for SipEndpoint<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl<C: SipCore> Drop for SipEndpoint<C> {
    fn drop(&mut self) {
        self.task.abort();
        for h in &self.helpers {
            h.abort();
        }
    }
}

impl<C: SipCore> SipEndpoint<C> {
    /// Binds everything in `cfg`, builds the core with `make` (given the bound
    /// addresses), tells it its listeners, and starts driving it.
    pub async fn start(
        cfg: EndpointConfig,
        make: impl FnOnce(&Bound) -> C,
    ) -> Result<SipEndpoint<C>, TransportError> {
        if !cfg.tls.is_empty() && cfg.tls_settings.as_ref().is_none_or(|t| t.server.is_none()) {
            return Err(TransportError::Tls(
                "a TLS listener needs a certificate and key".into(),
            ));
        }
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let mut bound = Bound::default();
        let mut helpers = Vec::new();
        let mut udp = Vec::new();
        for addr in &cfg.udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| TransportError::Bind {
                    transport: "UDP",
                    addr: *addr,
                    source,
                })?;
            let local = socket.local_addr().map_err(|source| TransportError::Bind {
                transport: "UDP",
                addr: *addr,
                source,
            })?;
            bound.udp.push(local);
            widen_receive_buffer(&socket, local);
            let socket = Arc::new(socket);
            helpers.push(tokio::spawn(receive_datagrams(
                socket.clone(),
                net_tx.clone(),
            )));
            udp.push(UdpSide {
                ipv6: local.is_ipv6(),
                socket,
            });
        }
        let limit = Arc::new(Mutex::new(SourceLimit::new(cfg.streams.max_per_source)));
        for (list, transport, name) in [
            (&cfg.tcp, Transport::Tcp, "TCP"),
            (&cfg.tls, Transport::Tls, "TLS"),
        ] {
            for addr in list {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| TransportError::Bind {
                            transport: name,
                            addr: *addr,
                            source,
                        })?;
                let local = listener
                    .local_addr()
                    .map_err(|source| TransportError::Bind {
                        transport: name,
                        addr: *addr,
                        source,
                    })?;
                let acceptor = match transport {
                    Transport::Tls => cfg
                        .tls_settings
                        .as_ref()
                        .and_then(|t| t.server.clone())
                        .map(tokio_rustls::TlsAcceptor::from),
                    _ => None,
                };
                if transport == Transport::Tls {
                    bound.tls.push(local);
                } else {
                    bound.tcp.push(local);
                }
                helpers.push(tokio::spawn(accept_connections(
                    listener,
                    acceptor,
                    net_tx.clone(),
                    limit.clone(),
                )));
            }
        }
        let mut core = make(&bound);
        for a in &bound.udp {
            core.add_listener(Transport::Udp, *a);
        }
        for a in &bound.tcp {
            core.add_listener(Transport::Tcp, *a);
        }
        for a in &bound.tls {
            core.add_listener(Transport::Tls, *a);
        }
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (wire_tx, wire) = if cfg.trace {
            let (t, r) = mpsc::unbounded_channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let driver = Driver {
            core,
            udp,
            conns: HashMap::new(),
            tls: cfg.tls_settings,
            tls_names: cfg.tls_names,
            net_tx,
            events: events_tx,
            wire: wire_tx,
            upkeep: StreamUpkeep::new(cfg.streams),
        };
        let task = tokio::spawn(driver.run(commands_rx, net_rx));
        Ok(SipEndpoint {
            commands,
            events,
            wire,
            bound,
            task,
            helpers,
        })
    }

    /// Runs `f` on the core inside the driver task (with the current time) and returns
    /// its result: placing calls, hanging up, setting transports, reading state.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, Instant) -> R + Send + 'static,
    ) -> Result<R, TransportError> {
        self.handle().with(f).await
    }

    /// Runs `f` on the core inside the driver task without waiting for it.
    pub fn post(
        &self,
        f: impl FnOnce(&mut C, Instant) + Send + 'static,
    ) -> Result<(), TransportError> {
        self.handle().post(f)
    }

    /// A cloneable handle that runs calls on the core while the endpoint runs (it does
    /// not keep the endpoint running).
    pub fn handle(&self) -> CoreHandle<C> {
        CoreHandle {
            commands: self.commands.clone(),
        }
    }

    /// The open stream connections (peer, transport), for inspection.
    pub async fn connections(&self) -> Result<Vec<(SocketAddr, Transport)>, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Connections(reply))
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// The next event from the core; `None` once the driver has stopped.
    pub async fn next_event(&mut self) -> Option<C::Event> {
        self.events.recv().await
    }

    /// The addresses bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The log of messages on the wire (once; only with `trace`).
    pub fn take_wire(&mut self) -> Option<mpsc::UnboundedReceiver<WireRecord>> {
        self.wire.take()
    }
}

/// Runs calls on a running endpoint's core; see [`SipEndpoint::handle`].
pub struct CoreHandle<C: SipCore> {
    commands: mpsc::UnboundedSender<Command<C>>,
}

impl<C: SipCore> Clone for CoreHandle<C> {
    fn clone(&self) -> Self {
        CoreHandle {
            commands: self.commands.clone(),
        }
    }
}

impl<C: SipCore> Debug for CoreHandle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandle").finish_non_exhaustive()
    }
}

impl<C: SipCore> CoreHandle<C> {
    /// See [`SipEndpoint::with`].
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, Instant) -> R + Send + 'static,
    ) -> Result<R, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.post(move |core, now| {
            let _ = reply.send(f(core, now));
        })?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// See [`SipEndpoint::post`].
    pub fn post(
        &self,
        f: impl FnOnce(&mut C, Instant) + Send + 'static,
    ) -> Result<(), TransportError> {
        let call: CoreCall<C> = Box::new(f);
        self.commands
            .send(Command::Core(call))
            .map_err(|_| TransportError::Stopped)
    }
}

/// What a UDP socket's receive buffer is asked to hold: a burst of several thousand
/// messages at thousands of calls per second (Kamailio's `maxbuffer` in the benchmark).
/// The kernel caps it at `net.core.rmem_max` for an unprivileged process.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

fn widen_receive_buffer(socket: &UdpSocket, local: SocketAddr) {
    if let Err(e) = socket2::SockRef::from(socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(local = %local, error = %e, "sip udp receive buffer left at its default");
    }
}

/// How many queued network events the driver handles before it sends what they produced
/// and looks at its timers again: under load one wake-up serves a batch, idle it serves one.
const NET_BATCH: usize = 64;

/// Reads one UDP socket and parses what it reads (parsing needs no core state: when the
/// runtime polls this task on another worker it runs beside the core).
async fn receive_datagrams(socket: Arc<UdpSocket>, net: mpsc::UnboundedSender<NetEvent>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let bytes = buf[..n].to_vec();
                let event = NetEvent::Datagram {
                    from,
                    parsed: parse_datagram(&bytes),
                    bytes,
                };
                if net.send(event).is_err() {
                    return;
                }
            }
            // ICMP errors surface here on some systems; the transaction timers cover loss.
            Err(e) => tracing::debug!(error = %e, "sip udp recv error"),
        }
    }
}

/// An inbound connection's place under the per-source cap, given back when dropped (when
/// the connection's reader ends).
struct SourceSlot {
    limit: Arc<Mutex<SourceLimit>>,
    source: std::net::IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(self.source);
    }
}

async fn accept_connections(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    net: mpsc::UnboundedSender<NetEvent>,
    limit: Arc<Mutex<SourceLimit>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or the like: back off instead of spinning.
                tracing::warn!(error = %e, "sip accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(peer.ip());
        if let Err(refused) = admitted {
            tracing::warn!(
                source = %refused.source,
                open = refused.open,
                "sip connection from {} refused: it already has {} open (the per-source limit)",
                refused.source,
                refused.open
            );
            drop(stream);
            continue;
        }
        let slot = SourceSlot {
            limit: limit.clone(),
            source: peer.ip(),
        };
        let _ = stream.set_nodelay(true);
        let net = net.clone();
        match &tls {
            None => {
                register(stream, peer, Transport::Tcp, net, false, Some(slot));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => register(s, peer, Transport::Tls, net, false, Some(slot)),
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, error = %e, "sip tls handshake refused")
                        }
                        Err(_) => tracing::info!(peer = %peer, "sip tls handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Starts the reader and writer of a new connection and tells the driver about it.
/// `slot` (inbound connections) is held until the reader ends.
fn register<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    net: mpsc::UnboundedSender<NetEvent>,
    outbound: bool,
    slot: Option<SourceSlot>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (close, close_rx) = watch::channel(false);
    let _ = net.send(NetEvent::Connected {
        peer,
        transport: transport.clone(),
        writer: tx.clone(),
        close,
        outbound,
    });
    let net_w = net.clone();
    let tx_w = tx.clone();
    let mut close_w = close_rx.clone();
    tokio::spawn(async move {
        loop {
            let bytes = tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
                _ = close_w.wait_for(|c| *c) => break,
            };
            if let Err(e) = writer.write_all(&bytes).await {
                let _ = net_w.send(NetEvent::Closed {
                    peer,
                    writer: tx_w,
                    reason: Some(e.to_string()),
                });
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut close_r = close_rx;
    tokio::spawn(async move {
        let _slot = slot;
        let mut framer = StreamFramer::new(MAX_STREAM_MESSAGE);
        let mut buf = vec![0u8; 16_384];
        let reason = loop {
            let read = tokio::select! {
                r = reader.read(&mut buf) => r,
                _ = close_r.wait_for(|c| *c) => break Some("closed by us".to_owned()),
            };
            let n = match read {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(e.to_string()),
            };
            framer.push(&buf[..n]);
            let mut broken = None;
            while let Some(item) = framer.next_item() {
                match item {
                    Ok(StreamItem::Ping) => {
                        let _ = tx.send(b"\r\n".to_vec());
                        let _ = net.send(NetEvent::KeepAlive { peer, pong: false });
                    }
                    Ok(StreamItem::Pong) => {
                        let _ = net.send(NetEvent::KeepAlive { peer, pong: true });
                    }
                    Ok(StreamItem::Message(m)) => {
                        let event = NetEvent::StreamMessage {
                            from: peer,
                            transport: transport.clone(),
                            bytes: m.to_bytes(),
                            parsed: Ok(m),
                        };
                        if net.send(event).is_err() {
                            return;
                        }
                    }
                    Ok(StreamItem::Invalid { error, bytes }) => {
                        tracing::info!(peer = %peer, error = %error, "sip stream message does not parse");
                        let event = NetEvent::StreamMessage {
                            from: peer,
                            transport: transport.clone(),
                            bytes,
                            parsed: Err(error),
                        };
                        if net.send(event).is_err() {
                            return;
                        }
                    }
                    Err(e) => broken = Some(e.to_string()),
                }
            }
            if let Some(e) = broken {
                break Some(format!("stream out of sync: {e}"));
            }
        };
        let _ = net.send(NetEvent::Closed {
            peer,
            writer: tx,
            reason,
        });
    });
}

/// Makes an outbound connection (TCP, then TLS if asked) within the connect timeout.
async fn connect(
    peer: SocketAddr,
    transport: Transport,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    net: mpsc::UnboundedSender<NetEvent>,
) {
    let attempt = async {
        let stream = TcpStream::connect(peer).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => {
                register(stream, peer, transport, net.clone(), true, None);
                Ok(())
            }
            Some((connector, name)) => {
                let s = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                register(s, peer, transport, net.clone(), true, None);
                Ok(())
            }
        }
    };
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err("timed out".to_owned()),
    };
    if let Err(reason) = result {
        let _ = net.send(NetEvent::ConnectFailed { peer, reason });
    }
}

/// A bound UDP socket and its address family (looked up once, not per datagram sent).
struct UdpSide {
    ipv6: bool,
    socket: Arc<UdpSocket>,
}

struct Driver<C: SipCore> {
    core: C,
    udp: Vec<UdpSide>,
    conns: HashMap<SocketAddr, Conn>,
    tls: Option<TlsSettings>,
    tls_names: HashMap<SocketAddr, String>,
    net_tx: mpsc::UnboundedSender<NetEvent>,
    events: mpsc::UnboundedSender<C::Event>,
    wire: Option<mpsc::UnboundedSender<WireRecord>>,
    upkeep: StreamUpkeep,
}

impl<C: SipCore> Driver<C> {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command<C>>,
        mut net: mpsc::UnboundedReceiver<NetEvent>,
    ) {
        // One timer for the driver's life, moved only when the next deadline changes:
        // a fresh timer per datagram costs a timer-wheel insert and removal each.
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush().await;
            let deadline = match (self.core.poll_timeout(), self.upkeep.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if deadline != armed {
                armed = deadline;
                let at = deadline.map_or_else(far, tokio::time::Instant::from_std);
                sleep.as_mut().reset(at);
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Core(f)) => f(&mut self.core, Instant::now()),
                    Some(Command::Connections(reply)) => {
                        let open = self
                            .conns
                            .iter()
                            .filter_map(|(a, c)| match c {
                                Conn::Open { transport, .. } => Some((*a, transport.clone())),
                                Conn::Connecting { .. } => None,
                            })
                            .collect();
                        let _ = reply.send(open);
                    }
                },
                Some(event) = net.recv() => {
                    self.on_net(event);
                    for _ in 1..NET_BATCH {
                        match net.try_recv() {
                            Ok(event) => self.on_net(event),
                            Err(_) => break,
                        }
                    }
                }
                () = &mut sleep => {
                    // Spent: parked far away until the next turn arms it again.
                    sleep.as_mut().reset(far());
                    armed = None;
                    let now = Instant::now();
                    if self.core.poll_timeout().is_some_and(|d| d <= now) {
                        self.core.handle_timeout(now);
                    }
                    for action in self.upkeep.handle_timeout(now) {
                        self.carry_out(now, action);
                    }
                }
            }
        }
    }

    /// Does what the connection upkeep decided.
    fn carry_out(&mut self, now: Instant, action: Upkeep) {
        match action {
            Upkeep::Ping(peer) => {
                if let Some(Conn::Open { writer, .. }) = self.conns.get(&peer) {
                    tracing::trace!(peer = %peer, "sip keep-alive ping");
                    let _ = writer.send(b"\r\n\r\n".to_vec());
                }
            }
            Upkeep::CloseIdle(peer) | Upkeep::CloseDead(peer) => {
                if let Some(Conn::Open { close, .. }) = self.conns.remove(&peer) {
                    let _ = close.send(true);
                }
                if matches!(action, Upkeep::CloseDead(_)) {
                    tracing::warn!(peer = %peer, "sip connection closed: its keep-alive ping went unanswered");
                    self.core.handle_transport_error(now, peer);
                } else {
                    tracing::info!(peer = %peer, "sip connection closed: idle");
                }
            }
        }
    }

    fn record(&self, outbound: bool, transport: &Transport, peer: SocketAddr, bytes: &[u8]) {
        crate::trace::observe(outbound, transport, peer, bytes);
        if let Some(w) = &self.wire {
            let _ = w.send(WireRecord {
                at: Instant::now(),
                outbound,
                transport: transport.clone(),
                peer,
                bytes: bytes.to_vec(),
            });
        }
    }

    fn on_net(&mut self, event: NetEvent) {
        let now = Instant::now();
        match event {
            NetEvent::Datagram {
                from,
                bytes,
                parsed,
            } => {
                tracing::trace!(from = %from, message = %String::from_utf8_lossy(&bytes), "sip recv udp");
                self.record(false, &Transport::Udp, from, &bytes);
                self.core.handle_message(now, from, &bytes, parsed);
            }
            NetEvent::StreamMessage {
                from,
                transport,
                bytes,
                parsed,
            } => {
                tracing::trace!(from = %from, message = %String::from_utf8_lossy(&bytes), "sip recv stream");
                self.upkeep.received(now, from);
                self.record(false, &transport, from, &bytes);
                self.core
                    .handle_message(now, from, &bytes, parsed.map(Incoming::Message));
            }
            NetEvent::Connected {
                peer,
                transport,
                writer,
                close,
                outbound,
            } => {
                tracing::debug!(peer = %peer, transport = %transport, outbound, "sip connection open");
                if let Some(Conn::Connecting { queue, .. }) = self.conns.remove(&peer) {
                    for bytes in queue {
                        let _ = writer.send(bytes);
                    }
                }
                self.upkeep.opened(now, peer, outbound);
                self.conns.insert(
                    peer,
                    Conn::Open {
                        transport,
                        writer,
                        close,
                    },
                );
            }
            NetEvent::KeepAlive { peer, pong } => {
                if pong {
                    self.upkeep.pong(now, peer);
                } else {
                    self.upkeep.received(now, peer);
                }
            }
            NetEvent::ConnectFailed { peer, reason } => {
                tracing::warn!(peer = %peer, reason = %reason, "sip connection failed");
                self.conns.remove(&peer);
                self.upkeep.closed(peer);
                self.core.handle_transport_error(now, peer);
            }
            NetEvent::Closed {
                peer,
                writer,
                reason,
            } => {
                // Only if it is still the connection we know (a newer one may have
                // replaced it).
                let current = matches!(
                    self.conns.get(&peer),
                    Some(Conn::Open { writer: w, .. }) if w.same_channel(&writer)
                );
                if current {
                    self.conns.remove(&peer);
                    self.upkeep.closed(peer);
                    match &reason {
                        Some(r) => {
                            tracing::info!(peer = %peer, reason = %r, "sip connection broke")
                        }
                        None => tracing::debug!(peer = %peer, "sip connection closed"),
                    }
                    self.core.handle_transport_error(now, peer);
                }
            }
        }
    }

    /// Sends what the core has to send and hands its events out.
    async fn flush(&mut self) {
        while let Some(out) = self.core.poll() {
            match out {
                Ok(t) => self.send(t).await,
                Err(e) => {
                    tracing::debug!(event = ?e, "sip event");
                    let _ = self.events.send(e);
                }
            }
        }
    }

    async fn send(&mut self, t: Transmit) {
        let Transmit { to, bytes } = t;
        match self.conns.get_mut(&to) {
            Some(Conn::Open {
                transport, writer, ..
            }) => {
                let transport = transport.clone();
                if writer.send(bytes.clone()).is_ok() {
                    self.upkeep.sent(Instant::now(), to);
                    self.record(true, &transport, to, &bytes);
                    return;
                }
                self.conns.remove(&to);
                self.upkeep.closed(to);
            }
            Some(Conn::Connecting { transport, queue }) => {
                let transport = transport.clone();
                queue.push(bytes.clone());
                self.record(true, &transport, to, &bytes);
                return;
            }
            None => {}
        }
        let transport = self.core.transport_for(to);
        match transport {
            Transport::Tcp | Transport::Tls => self.open(to, transport, bytes),
            _ => self.send_udp(to, bytes).await,
        }
    }

    async fn send_udp(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        let socket = self
            .udp
            .iter()
            .find(|s| s.ipv6 == to.is_ipv6())
            .map(|s| s.socket.clone());
        let Some(socket) = socket else {
            tracing::warn!(to = %to, "no UDP socket of this address family");
            self.core.handle_transport_error(Instant::now(), to);
            return;
        };
        tracing::trace!(to = %to, message = %String::from_utf8_lossy(&bytes), "sip send udp");
        self.record(true, &Transport::Udp, to, &bytes);
        // An unreachable network: the transaction timers cover the loss.
        if let Err(e) = socket.send_to(&bytes, to).await {
            tracing::warn!(to = %to, error = %e, "sip udp send failed");
        }
    }

    fn open(&mut self, to: SocketAddr, transport: Transport, bytes: Vec<u8>) {
        let tls = if transport == Transport::Tls {
            let Some(settings) = &self.tls else {
                tracing::warn!(to = %to, "TLS asked for without TLS settings");
                self.core.handle_transport_error(Instant::now(), to);
                return;
            };
            let name = match self.tls_names.get(&to) {
                Some(n) => rustls::pki_types::ServerName::try_from(n.clone()),
                None => Ok(rustls::pki_types::ServerName::IpAddress(to.ip().into())),
            };
            let Ok(name) = name else {
                tracing::warn!(to = %to, "TLS server name is not a DNS name");
                self.core.handle_transport_error(Instant::now(), to);
                return;
            };
            Some((
                tokio_rustls::TlsConnector::from(settings.client.clone()),
                name,
            ))
        } else {
            None
        };
        tracing::trace!(to = %to, message = %String::from_utf8_lossy(&bytes), "sip send (connecting)");
        self.record(true, &transport, to, &bytes);
        self.conns.insert(
            to,
            Conn::Connecting {
                transport: transport.clone(),
                queue: vec![bytes],
            },
        );
        tokio::spawn(connect(to, transport, tls, self.net_tx.clone()));
    }
}
