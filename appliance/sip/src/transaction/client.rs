//! Client transactions (§17.1): INVITE (Calling → Proceeding → Completed/Accepted) with
//! Timers A, B, D and M; non-INVITE (Trying → Proceeding → Completed) with E, F and K.

use super::{ack_for_non_2xx, Output, TimerConfig, Transmit, TxEvent, TxKey};
use crate::message::{Method, Request, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calling (INVITE) or Trying (non-INVITE): retransmitting, no response yet.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// INVITE got a 2xx: further 2xx are passed up until Timer M (RFC 6026).
    Accepted,
    /// Done; removed at the next timeout pass.
    Terminated,
}

#[derive(Debug)]
pub(super) struct ClientTx {
    invite: bool,
    state: State,
    request: Request,
    bytes: Vec<u8>,
    to: SocketAddr,
    reliable: bool,
    /// Timer A / E: next retransmission and the interval after it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B / F: give up.
    give_up: Option<Instant>,
    /// Timer D / K / M: leave Completed or Accepted.
    linger: Option<Instant>,
    /// The ACK sent for a non-2xx final, resent on its retransmissions.
    ack: Option<Vec<u8>>,
}

impl ClientTx {
    pub(super) fn start(
        now: Instant,
        request: Request,
        to: SocketAddr,
        reliable: bool,
        timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) -> ClientTx {
        let bytes = request.to_bytes();
        out.push_back(Output::Transmit(Transmit {
            to,
            bytes: bytes.clone(),
        }));
        ClientTx {
            invite: request.method == Method::Invite,
            state: State::Calling,
            request,
            bytes,
            to,
            reliable,
            retransmit: (!reliable).then(|| (now + timers.t1, timers.t1)),
            give_up: Some(now + timers.timeout()),
            linger: None,
            ack: None,
        }
    }

    pub(super) fn destination(&self) -> SocketAddr {
        self.to
    }

    /// No final response yet.
    pub(super) fn awaiting_final(&self) -> bool {
        matches!(self.state, State::Calling | State::Proceeding)
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.give_up, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    fn send(&self, bytes: &[u8], out: &mut VecDeque<Output>) {
        out.push_back(Output::Transmit(Transmit {
            to: self.to,
            bytes: bytes.to_vec(),
        }));
    }

    fn linger_for(&self, timers: TimerConfig) -> Duration {
        match (self.invite, self.reliable) {
            // Timer D: at least 32 s on unreliable transports.
            (true, false) => timers.timeout().max(Duration::from_secs(32)),
            (true, true) => Duration::ZERO,
            // Timer K.
            (false, false) => timers.t4,
            (false, true) => Duration::ZERO,
        }
    }

    pub(super) fn on_response(
        &mut self,
        now: Instant,
        key: TxKey,
        response: Response,
        timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) {
        let provisional = response.status < 200;
        let success = (200..300).contains(&response.status);
        match self.state {
            State::Calling | State::Proceeding if provisional => {
                self.state = State::Proceeding;
                if self.invite {
                    // Timers A and B stop once the INVITE is known to have arrived.
                    self.retransmit = None;
                    self.give_up = None;
                }
                out.push_back(Output::Event(TxEvent::Response { key, response }));
            }
            State::Calling | State::Proceeding => {
                self.retransmit = None;
                self.give_up = None;
                if self.invite && success {
                    self.state = State::Accepted;
                    self.linger = Some(now + timers.timeout());
                } else {
                    if self.invite {
                        let ack = ack_for_non_2xx(&self.request, &response).to_bytes();
                        self.send(&ack, out);
                        self.ack = Some(ack);
                    }
                    self.state = State::Completed;
                    self.linger = Some(now + self.linger_for(timers));
                }
                out.push_back(Output::Event(TxEvent::Response { key, response }));
            }
            State::Completed => {
                // A retransmitted final: the INVITE's ACK is resent, nothing goes up.
                if let Some(ack) = &self.ack {
                    if !provisional {
                        self.send(ack, out);
                    }
                }
            }
            State::Accepted if success => {
                // Retransmitted or forked 2xx: the dialog layer ACKs each.
                out.push_back(Output::Event(TxEvent::Response { key, response }));
            }
            State::Accepted | State::Terminated => {}
        }
    }

    /// Fires due timers; false when the transaction is over.
    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        key: &TxKey,
        timers: TimerConfig,
        out: &mut VecDeque<Output>,
    ) -> bool {
        if self.give_up.is_some_and(|t| now >= t) {
            self.state = State::Terminated;
            out.push_back(Output::Event(TxEvent::Timeout { key: key.clone() }));
            return false;
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                self.send(&self.bytes.clone(), out);
                let next = if self.invite {
                    interval * 2
                } else if self.state == State::Proceeding {
                    timers.t2
                } else {
                    (interval * 2).min(timers.t2)
                };
                self.retransmit = Some((at + next, next));
            }
        }
        if self.linger.is_some_and(|t| now >= t) {
            self.state = State::Terminated;
        }
        self.state != State::Terminated
    }
}
