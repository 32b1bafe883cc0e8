//! The tokio UDP driver for the SIP user agent core: owns one UDP socket and the timer,
//! feeds the core datagrams and the clock, sends what it asks, and hands call events to
//! the daemon over a channel. All protocol decisions stay in `callgate_sip::agent`.

use callgate_sip::agent::{
    AgentConfig, AgentEvent, AgentOutput, CallSpec, LegId, ProbeId, UserAgent,
};
use callgate_sip::uri::Uri;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A request from the daemon to the driver task.
enum Command {
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
}

/// A running SIP user agent on a UDP socket.
#[derive(Debug)]
pub struct UdpAgent {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

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

impl UdpAgent {
    /// Binds `bind` and starts the driver task. `cfg.local` is replaced by the bound
    /// address (so port 0 works).
    pub async fn start(bind: SocketAddr, mut cfg: AgentConfig) -> Result<UdpAgent, DriverError> {
        let socket = UdpSocket::bind(bind).await?;
        let local = socket.local_addr()?;
        cfg.local = local;
        let (commands, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(socket, UserAgent::new(cfg), rx, events_tx));
        Ok(UdpAgent {
            commands,
            events,
            local,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Places a call.
    pub async fn place_call(&self, spec: CallSpec) -> Result<LegId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::PlaceCall { spec, reply })
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Hangs a call up (CANCEL or BYE).
    pub fn hang_up(&self, leg: LegId) -> Result<(), DriverError> {
        self.commands
            .send(Command::HangUp(leg))
            .map_err(|_| DriverError::Stopped)
    }

    /// Sends a re-INVITE with a new offer.
    pub fn reinvite(&self, leg: LegId, sdp: Vec<u8>) -> Result<(), DriverError> {
        self.commands
            .send(Command::Reinvite(leg, sdp))
            .map_err(|_| DriverError::Stopped)
    }

    /// Sends an OPTIONS probe.
    pub async fn probe(&self, uri: Uri, dest: SocketAddr) -> Result<ProbeId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Probe { uri, dest, reply })
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// The next call event; `None` once the driver has stopped.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        self.events.recv().await
    }
}

impl Drop for UdpAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    socket: UdpSocket,
    mut agent: UserAgent,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<AgentEvent>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(out) = agent.poll_output() {
            match out {
                AgentOutput::Transmit(t) => {
                    tracing::trace!(to = %t.to, message = %String::from_utf8_lossy(&t.bytes), "sip send");
                    if let Err(e) = socket.send_to(&t.bytes, t.to).await {
                        tracing::warn!(to = %t.to, error = %e, "sip send failed");
                    }
                }
                AgentOutput::Event(e) => {
                    tracing::debug!(event = ?e, "sip event");
                    let _ = events.send(e);
                }
            }
        }
        let deadline = agent.poll_timeout();
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
                    agent.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                // ICMP unreachable surfaces here on some systems; the transaction layer's
                // timers handle the loss.
                Err(e) => tracing::debug!(error = %e, "sip recv error"),
            },
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::PlaceCall { spec, reply }) => {
                    let leg = agent.place_call(Instant::now(), spec);
                    let _ = reply.send(leg);
                }
                Some(Command::HangUp(leg)) => {
                    let _ = agent.hang_up(Instant::now(), leg);
                }
                Some(Command::Reinvite(leg, sdp)) => {
                    let _ = agent.reinvite(Instant::now(), leg, sdp);
                }
                Some(Command::Probe { uri, dest, reply }) => {
                    let probe = agent.probe(Instant::now(), uri, dest);
                    let _ = reply.send(probe);
                }
            },
            () = sleep => agent.handle_timeout(Instant::now()),
        }
    }
}
