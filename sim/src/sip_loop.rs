//! The tokio loop of one simulated SIP endpoint: owns one UDP socket and the timer of a
//! `callgate_sip::agent::UserAgent` core, feeds it datagrams and the clock, sends what it
//! asks, applies commands and hands its events over a channel. Deliberately separate from
//! the appliance's own driver (`appliance/src/sip/udp.rs`) so a bug there cannot hide on
//! both sides of a simulated call. Owns no call logic.

use crate::SimError;
use callgate_sip::agent::{AgentConfig, AgentEvent, AgentOutput, LegId, RegistrationSpec};
use callgate_sip::agent::{RegId, UserAgent};
use callgate_sip::inbound::InboundPolicy;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the loop's owner asks the user agent to do.
#[derive(Debug)]
pub enum SipCommand {
    /// 180 Ringing for an inbound call.
    Ring(LegId),
    /// 200 OK with this SDP.
    Answer(LegId, Vec<u8>),
    /// A final refusal (486, 480, 503...).
    Reject(LegId, u16, String),
    /// BYE (answered) or CANCEL/480 (not yet).
    HangUp(LegId),
    /// Register and keep refreshing.
    Register(Box<RegistrationSpec>),
    /// Remove a registration.
    Unregister(RegId),
}

/// A running loop; dropping every [`SipHandle`] and calling [`SipLoop::stop`] ends it.
#[derive(Debug)]
pub struct SipLoop {
    /// Sends commands to the loop.
    pub handle: SipHandle,
    /// The loop's events.
    pub events: mpsc::UnboundedReceiver<AgentEvent>,
    local: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A cloneable sender of commands.
#[derive(Debug, Clone)]
pub struct SipHandle(mpsc::UnboundedSender<SipCommand>);

impl SipHandle {
    /// Queues a command; fails only when the loop has ended.
    pub fn send(&self, c: SipCommand) -> Result<(), SimError> {
        self.0.send(c).map_err(|_| SimError::Stopped)
    }
}

impl SipLoop {
    /// Binds `bind` and starts a user agent made for the bound address by `make`, with
    /// `policy` for inbound calls when given.
    pub async fn start(
        bind: SocketAddr,
        user: &str,
        seed: u64,
        policy: Option<InboundPolicy>,
    ) -> Result<SipLoop, SimError> {
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|source| SimError::Bind { addr: bind, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| SimError::Bind { addr: bind, source })?;
        let mut ua = UserAgent::new(AgentConfig {
            local,
            user: user.to_string(),
            timers: Default::default(),
            credentials: None,
            seed,
        });
        if let Some(p) = policy {
            ua.set_inbound_policy(p);
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(socket, ua, cmd_rx, ev_tx, stop_rx));
        Ok(SipLoop {
            handle: SipHandle(cmd_tx),
            events,
            local,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Ends the loop (after sending what is queued).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn apply(ua: &mut UserAgent, now: Instant, c: SipCommand) {
    // A command for a leg that has just ended is moot: the event saying so is on its way.
    let _ = match c {
        SipCommand::Ring(leg) => ua.ring(now, leg),
        SipCommand::Answer(leg, sdp) => ua.answer(now, leg, sdp),
        SipCommand::Reject(leg, status, reason) => ua.reject(now, leg, status, &reason),
        SipCommand::HangUp(leg) => ua.hang_up(now, leg),
        SipCommand::Register(spec) => {
            ua.register(now, *spec);
            Ok(())
        }
        SipCommand::Unregister(reg) => {
            ua.unregister(now, reg);
            Ok(())
        }
    };
}

async fn run(
    socket: UdpSocket,
    mut ua: UserAgent,
    mut cmds: mpsc::UnboundedReceiver<SipCommand>,
    events: mpsc::UnboundedSender<AgentEvent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        while let Some(out) = ua.poll_output() {
            match out {
                AgentOutput::Transmit(t) => {
                    if let Err(e) = socket.send_to(&t.bytes, t.to).await {
                        tracing::debug!(to = %t.to, error = %e, "SIP send failed");
                    }
                }
                AgentOutput::Event(e) => {
                    let _ = events.send(e);
                }
            }
        }
        let deadline = ua
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => ua.handle_datagram(Instant::now(), from, &buf[..n]),
                Err(e) => tracing::debug!(error = %e, "SIP receive failed"),
            },
            c = cmds.recv() => match c {
                Some(c) => apply(&mut ua, Instant::now(), c),
                None => return,
            },
            () = tokio::time::sleep_until(deadline.into()) => ua.handle_timeout(Instant::now()),
            () = crate::stopped(&mut stop) => return,
        }
    }
}
