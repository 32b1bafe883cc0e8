//! Server transactions (§17.2): INVITE (Proceeding → Completed → Confirmed, or Accepted
//! after a 2xx per RFC 6026) with Timers G, H, I and L; non-INVITE (Trying → Proceeding →
//! Completed) with J. The INVITE side answers 100 Trying at once.

use super::{response_destination, Output, TimerConfig, Transmit, TxEvent, TxKey};
use crate::message::{response_to, Method, Request, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Non-INVITE: nothing sent yet.
    Trying,
    /// A provisional was sent (INVITE starts here with its 100).
    Proceeding,
    /// A final (non-2xx for INVITE) was sent; retransmitting it until ACK (INVITE).
    Completed,
    /// INVITE: the ACK arrived; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// INVITE: a 2xx was sent; the dialog layer retransmits it (Timer L).
    Accepted,
    /// Done.
    Terminated,
}

#[derive(Debug)]
pub(super) struct ServerTx {
    invite: bool,
    state: State,
    to: SocketAddr,
    reliable: bool,
    last_response: Option<Vec<u8>>,
    /// Timer G: next retransmission of the final response and the interval after it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H: no ACK came.
    give_up: Option<Instant>,
    /// Timers I, J, L: leave the state.
    linger: Option<Instant>,
}

impl ServerTx {
    pub(super) fn start(
        _now: Instant,
        request: &Request,
        source: SocketAddr,
        _timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) -> ServerTx {
        // The top Via names the transport the request came over (§18.2.1): over TCP/TLS
        // responses go back on the connection and nothing is retransmitted; over UDP
        // they go where Via says.
        let reliable = request
            .headers
            .top_via()
            .is_some_and(|v| !v.transport.is_unreliable());
        let mut tx = ServerTx {
            invite: request.method == Method::Invite,
            state: State::Trying,
            to: response_destination(request, source, reliable),
            reliable,
            last_response: None,
            retransmit: None,
            give_up: None,
            linger: None,
        };
        if tx.invite {
            let trying = response_to(request, 100, "Trying", None);
            tx.send(trying.to_bytes(), out);
            tx.state = State::Proceeding;
        }
        tx
    }

    pub(super) fn is_accepted(&self) -> bool {
        self.state == State::Accepted
    }

    pub(super) fn is_proceeding(&self) -> bool {
        self.state == State::Proceeding
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.give_up, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    fn send(&mut self, bytes: Vec<u8>, out: &mut VecDeque<Output>) {
        out.push_back(Output::Transmit(Transmit {
            to: self.to,
            bytes: bytes.clone(),
        }));
        self.last_response = Some(bytes);
    }

    fn resend(&self, out: &mut VecDeque<Output>) {
        if let Some(b) = &self.last_response {
            out.push_back(Output::Transmit(Transmit {
                to: self.to,
                bytes: b.clone(),
            }));
        }
    }

    pub(super) fn respond(
        &mut self,
        now: Instant,
        response: Response,
        timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) {
        let status = response.status;
        match self.state {
            State::Trying | State::Proceeding => {
                self.send(response.to_bytes(), out);
                if status < 200 {
                    self.state = State::Proceeding;
                } else if self.invite && status < 300 {
                    self.state = State::Accepted;
                    self.linger = Some(now + timers.timeout());
                } else if self.invite {
                    self.state = State::Completed;
                    if !self.reliable {
                        self.retransmit = Some((now + timers.t1, timers.t1));
                    }
                    self.give_up = Some(now + timers.timeout());
                } else {
                    self.state = State::Completed;
                    let j = if self.reliable {
                        Duration::ZERO
                    } else {
                        timers.timeout()
                    };
                    self.linger = Some(now + j);
                }
            }
            // The UAS core retransmits its 2xx through here until the ACK arrives.
            State::Accepted if (200..300).contains(&status) => self.send(response.to_bytes(), out),
            _ => {}
        }
    }

    /// A retransmission of the request (or the ACK for our non-2xx final).
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        request: &Request,
        timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) {
        if request.method == Method::Ack {
            if self.state == State::Completed {
                self.state = State::Confirmed;
                self.retransmit = None;
                self.give_up = None;
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    timers.t4
                };
                self.linger = Some(now + i);
            }
            return;
        }
        match self.state {
            State::Proceeding | State::Completed => self.resend(out),
            _ => {}
        }
    }

    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        key: &TxKey,
        timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) -> bool {
        if self.give_up.is_some_and(|t| now >= t) {
            self.state = State::Terminated;
            out.push_back(Output::Event(TxEvent::AckTimeout { key: key.clone() }));
            return false;
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                self.resend(out);
                let next = (interval * 2).min(timers.t2);
                self.retransmit = Some((at + next, next));
            }
        }
        if self.linger.is_some_and(|t| now >= t) {
            self.state = State::Terminated;
        }
        self.state != State::Terminated
    }
}
