//! The embedded broker's tokio driver: a TLS listener requiring a client certificate from
//! the organisation CA (ring provider), one task per connection that decodes and encodes
//! packets with rumqttc's codec, one task that owns the [`Router`], and a refresher that
//! reloads the ACL from the `appliances` table every two seconds.
//!
//! The coordinator's own link may attach through a Unix socket in its data directory
//! ([`EmbeddedBroker::serve_local`], mode 0600, like the CA key beside it) instead of TLS
//! over loopback to itself: whoever can open that file is the coordinator, and every
//! message then skips two TLS legs in the same process.

use super::acl::Acl;
use super::router::{ConnId, Output, Router};
use crate::enroll::pki::{OrgCa, COORDINATOR_IDENTITY};
use crate::enroll::registry;
use bytes::BytesMut;
use rumqttc::{Connect, Packet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sqlx::AnyPool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// Largest packet accepted or sent.
const MAX_PACKET: usize = 512 * 1024;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address could not be bound.
    #[error("embedded broker cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("embedded broker TLS: {0}")]
    Tls(String),
    /// The server certificate could not be issued.
    #[error(transparent)]
    Certificate(#[from] crate::enroll::EnrollError),
    /// The coordinator's local socket could not be set up.
    #[error("embedded broker cannot serve the local socket {path}: {source}")]
    LocalSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

enum Input {
    Connected {
        conn: ConnId,
        identity: String,
        connect: Connect,
        tx: mpsc::Sender<Command>,
    },
    Packet(ConnId, Packet),
    Closed(ConnId),
    Acl(Acl),
}

enum Command {
    Send(Packet),
    Close,
}

/// The running broker; stops when dropped or with [`EmbeddedBroker::stop`].
#[derive(Debug)]
pub struct EmbeddedBroker {
    stop: watch::Sender<bool>,
    local: SocketAddr,
    input: mpsc::Sender<Input>,
    next_conn: Arc<AtomicU64>,
}

impl EmbeddedBroker {
    /// Binds `listen` with a server certificate for its IP, `localhost` and `names`.
    pub async fn start(
        ca: &OrgCa,
        listen: SocketAddr,
        names: &[String],
        pool: AnyPool,
    ) -> Result<EmbeddedBroker, BrokerError> {
        let tls = server_tls(ca, listen, names)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let (input_tx, input_rx) = mpsc::channel::<Input>(8192);
        let acl = Acl::new(
            registry::enrolled(&pool)
                .await
                .map(|v| v.into_iter().map(|a| a.to_string()).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        tokio::spawn(route(
            Router::new(acl, 1000, 100_000),
            input_rx,
            stop_rx.clone(),
        ));
        tokio::spawn(refresh_acl(pool, input_tx.clone(), stop_rx.clone()));
        let next_conn = Arc::new(AtomicU64::new(1));
        tokio::spawn(accept(
            listener,
            TlsAcceptor::from(tls),
            input_tx.clone(),
            next_conn.clone(),
            stop_rx,
        ));
        tracing::info!(listen = %local, "embedded MQTT broker listening (mutual TLS)");
        Ok(EmbeddedBroker {
            stop,
            local,
            input: input_tx,
            next_conn,
        })
    }

    /// Also accepts the coordinator's own link on a Unix socket at `path` (replaced if it
    /// exists, mode 0600). A client there is the coordinator (`coordinator.callgate`).
    pub fn serve_local(&self, path: &Path) -> Result<(), BrokerError> {
        let err = |source| BrokerError::LocalSocket {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        let (input, next_conn) = (self.input.clone(), self.next_conn.clone());
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped(&mut stop) => return,
                    a = listener.accept() => a,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "embedded broker local accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                let (input, stop) = (input.clone(), stop.clone());
                tokio::spawn(async move {
                    let identity = COORDINATOR_IDENTITY.to_string();
                    if let Err(reason) = serve_packets(conn, stream, identity, &input, stop).await {
                        tracing::debug!(%reason, "local broker connection ended");
                    }
                    let _ = input.send(Input::Closed(conn)).await;
                });
            }
        });
        tracing::info!(path = %path.display(), "embedded MQTT broker serving the coordinator's local socket");
        Ok(())
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_tls(
    ca: &OrgCa,
    listen: SocketAddr,
    extra: &[String],
) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    let tls = |e: &dyn std::fmt::Display| BrokerError::Tls(e.to_string());
    let mut names = vec![listen.ip().to_string(), "localhost".to_string()];
    names.extend(extra.iter().cloned());
    let (cert, key) = ca.issue_server(&names)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| tls(&e))?)
        .map_err(|e| tls(&e))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| tls(&e))?],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| tls(&e))?,
        )
        .map_err(|e| tls(&e))?;
    Ok(Arc::new(config))
}

async fn refresh_acl(pool: AnyPool, input: mpsc::Sender<Input>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        match registry::enrolled(&pool).await {
            Ok(list) => {
                let acl = Acl::new(list.into_iter().map(|a| a.to_string()));
                if input.send(Input::Acl(acl)).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "embedded broker could not reload its ACL"),
        }
    }
}

async fn route(
    mut router: Router,
    mut input: mpsc::Receiver<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let mut writers: HashMap<ConnId, mpsc::Sender<Command>> = HashMap::new();
    // What the gauges last said: they are set when this changes, not for every packet.
    let mut shown = None;
    loop {
        let next = tokio::select! {
            () = stopped(&mut stop) => None,
            i = input.recv() => i,
        };
        let Some(i) = next else {
            for (_, w) in writers.drain() {
                let _ = w.try_send(Command::Close);
            }
            return;
        };
        match i {
            Input::Connected {
                conn,
                identity,
                connect,
                tx,
            } => {
                writers.insert(conn, tx);
                router.handle_connect(conn, &identity, connect);
            }
            Input::Packet(conn, p) => router.handle_packet(conn, p),
            Input::Closed(conn) => {
                writers.remove(&conn);
                router.handle_closed(conn);
            }
            Input::Acl(acl) => router.set_acl(acl),
        }
        while let Some(out) = router.poll_output() {
            match out {
                Output::Send(conn, p) => {
                    let full = writers
                        .get(&conn)
                        .map(|w| w.try_send(Command::Send(p)).is_err())
                        .unwrap_or(false);
                    if full {
                        // A client that cannot keep up is cut off; its session keeps the
                        // unacknowledged messages for its next connection.
                        if let Some(w) = writers.remove(&conn) {
                            let _ = w.try_send(Command::Close);
                        }
                        router.handle_closed(conn);
                    }
                }
                Output::Close(conn) => {
                    if let Some(w) = writers.remove(&conn) {
                        let _ = w.try_send(Command::Close);
                    }
                }
            }
        }
        let now = Some((router.connected(), router.stats()));
        if now != shown {
            shown = now;
            let stats = router.stats();
            metrics::gauge!("callgate_broker_connections").set(router.connected() as f64);
            metrics::gauge!("callgate_broker_denied_publishes").set(stats.denied_publishes as f64);
            metrics::gauge!("callgate_broker_refused_connections")
                .set(stats.refused_connections as f64);
            metrics::gauge!("callgate_broker_dropped_queued").set(stats.dropped_queued as f64);
        }
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    input: mpsc::Sender<Input>,
    next_conn: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => return,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "embedded broker accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let input = input.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(reason) = serve_connection(conn, stream, acceptor, input.clone(), stop).await
            {
                tracing::debug!(%addr, %reason, "broker connection ended");
            }
            let _ = input.send(Input::Closed(conn)).await;
        });
    }
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn identity_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

async fn serve_connection(
    conn: ConnId,
    stream: TcpStream,
    acceptor: TlsAcceptor,
    input: mpsc::Sender<Input>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| identity_of(c.as_ref()))
        .ok_or("client certificate without a common name")?;
    serve_packets(conn, tls, identity, &input, stop).await
}

/// Serves one connection whose client is `identity`: CONNECT first, then packets both ways
/// until either side closes.
async fn serve_packets<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: ConnId,
    mut stream: S,
    identity: String,
    input: &mpsc::Sender<Input>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut buf = BytesMut::with_capacity(8192);
    let first = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut stream, &mut buf))
        .await
        .map_err(|_| "no CONNECT within 10 s".to_string())??;
    let Packet::Connect(connect) = first else {
        return Err("first packet was not CONNECT".into());
    };
    let keep_alive = Duration::from_secs(u64::from(connect.keep_alive));
    let (tx, mut rx) = mpsc::channel::<Command>(4096);
    input
        .send(Input::Connected {
            conn,
            identity,
            connect,
            tx,
        })
        .await
        .map_err(|_| "broker stopping".to_string())?;
    let idle = if keep_alive.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        keep_alive + keep_alive / 2
    };
    let mut out = BytesMut::with_capacity(8192);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return Ok(()),
            cmd = rx.recv() => match cmd {
                Some(Command::Send(p)) => {
                    out.clear();
                    p.write(&mut out, MAX_PACKET).map_err(|e| e.to_string())?;
                    // Write whatever else is already queued in the same flush (a Close
                    // among it closes after the packets before it).
                    let mut close = false;
                    loop {
                        match rx.try_recv() {
                            Ok(Command::Send(p)) => {
                                p.write(&mut out, MAX_PACKET).map_err(|e| e.to_string())?;
                            }
                            Ok(Command::Close) => {
                                close = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    stream.write_all(&out).await.map_err(|e| e.to_string())?;
                    stream.flush().await.map_err(|e| e.to_string())?;
                    if close {
                        let _ = stream.shutdown().await;
                        return Ok(());
                    }
                }
                Some(Command::Close) | None => {
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
            },
            read = tokio::time::timeout(idle, read_packet(&mut stream, &mut buf)) => {
                let packet = read.map_err(|_| "keep-alive expired".to_string())??;
                input.send(Input::Packet(conn, packet)).await.map_err(|_| "broker stopping".to_string())?;
            }
        }
    }
}

/// Reads one packet, buffering partial frames. Cancel-safe: bytes already read stay in
/// `buf` for the next call.
async fn read_packet<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(p) => return Ok(p),
            Err(rumqttc::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
        let n = stream.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
    }
}
