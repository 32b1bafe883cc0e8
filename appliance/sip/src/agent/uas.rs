//! Inbound calls (the UAS side of the [`UserAgent`]): admission through the
//! [`InboundGate`] before any transaction exists (so a dropped source hears nothing, not
//! even 100 Trying), ringing, answering with 2xx retransmitted until the ACK (RFC 3261
//! §13.3.1.4; BYE if it never comes), rejecting, and CANCEL from the caller.

use super::{AgentEvent, Leg, LegId, Phase, UserAgent};
use crate::dialog::Dialog;
use crate::header::{Header, NameAddr};
use crate::inbound::{Admission, InboundGate, InboundPolicy};
use crate::message::{response_to, Method, Request, SipMessage};
use crate::transaction::TxKey;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The server side of an inbound leg.
#[derive(Debug)]
pub(super) struct InboundLeg {
    /// The INVITE's server transaction.
    pub(super) key: TxKey,
    /// Our To tag.
    local_tag: String,
    /// The 2xx being retransmitted until the ACK: next send and interval.
    pub(super) retransmit: Option<(Instant, Duration)>,
    /// No ACK by then: give up with BYE.
    pub(super) give_up: Option<Instant>,
    /// The 2xx sent.
    ok: Option<crate::message::Response>,
}

impl UserAgent {
    /// Takes inbound calls under `policy` (without one, every inbound INVITE gets 480).
    pub fn set_inbound_policy(&mut self, policy: InboundPolicy) {
        self.gate = Some(InboundGate::new(policy));
    }

    /// Decides about an out-of-dialog request before the transaction layer sees it.
    /// `false`: drop it silently.
    pub(super) fn screen(&mut self, now: Instant, source: SocketAddr, m: &SipMessage) -> bool {
        let SipMessage::Request(req) = m else {
            return true;
        };
        let out_of_dialog = req.headers.to().and_then(NameAddr::tag).is_none();
        if !out_of_dialog || matches!(req.method, Method::Ack | Method::Cancel) {
            return true;
        }
        let Some(gate) = self.gate.as_mut() else {
            return true;
        };
        if req.method == Method::Register {
            return gate.admit_register(now, source);
        }
        let decision = gate.admit(now, source, req);
        if decision == Admission::Drop {
            return false;
        }
        self.pending_admission = Some(decision);
        true
    }

    /// A new inbound INVITE passed the gate: create the leg and tell the daemon.
    pub(super) fn on_inbound_invite(
        &mut self,
        now: Instant,
        key: TxKey,
        request: Request,
        source: SocketAddr,
        admission: Admission,
    ) {
        let tag = self.token()[..10].to_owned();
        let target = match admission {
            Admission::Route(t) => t,
            Admission::Refuse(status) => {
                let reason = if status == 403 {
                    "Forbidden"
                } else {
                    "Not Found"
                };
                let _ =
                    self.tx
                        .respond(now, &key, response_to(&request, status, reason, Some(&tag)));
                return;
            }
            Admission::Drop => return,
        };
        let leg = LegId(self.next_leg);
        self.next_leg += 1;
        let from = request
            .headers
            .from()
            .map(|f| f.uri.to_string())
            .unwrap_or_default();
        let number = crate::inbound::called_number(&request);
        let body = request.body.clone();
        self.legs.insert(
            leg,
            Leg {
                invite: request,
                dest: source,
                phase: Phase::Inviting,
                dialog: None,
                ack: None,
                auth: None,
                provisional_seen: true,
                hangup_requested: false,
                cancel_sent: false,
                local_body: Vec::new(),
                reinvite_seq: None,
                ring_deadline: None,
                cancel_deadline: None,
                early: None,
                session: None,
                refreshing: false,
                inbound: Some(InboundLeg {
                    key,
                    local_tag: tag,
                    retransmit: None,
                    give_up: None,
                    ok: None,
                }),
            },
        );
        self.emit(AgentEvent::Incoming {
            leg,
            from,
            number,
            target,
            body,
        });
    }

    /// Sends 180 Ringing for an inbound call.
    pub fn ring(&mut self, now: Instant, leg: LegId) -> Result<(), crate::SipError> {
        let l = self.legs.get(&leg).ok_or(crate::SipError::NoSuchDialog)?;
        let i = l.inbound.as_ref().ok_or(crate::SipError::NoSuchDialog)?;
        let mut r = response_to(&l.invite, 180, "Ringing", Some(&i.local_tag));
        r.headers.push(self.contact());
        let key = i.key.clone();
        self.tx.respond(now, &key, r)?;
        self.pump(now);
        Ok(())
    }

    /// Answers an inbound call with `sdp`; the 200 is retransmitted until the ACK.
    pub fn answer(
        &mut self,
        now: Instant,
        leg: LegId,
        sdp: Vec<u8>,
    ) -> Result<(), crate::SipError> {
        let contact = self.contact();
        let t1 = self.cfg.timers.t1;
        let timeout = self.cfg.timers.timeout();
        let l = self
            .legs
            .get_mut(&leg)
            .ok_or(crate::SipError::NoSuchDialog)?;
        if l.phase != Phase::Inviting {
            return Err(crate::SipError::NoSuchDialog);
        }
        let i = l.inbound.as_mut().ok_or(crate::SipError::NoSuchDialog)?;
        let mut ok = response_to(&l.invite, 200, "OK", Some(&i.local_tag));
        for h in &l.invite.headers.0 {
            if let Header::RecordRoute(_) = h {
                ok.headers.push(h.clone());
            }
        }
        ok.headers.push(contact);
        if let Some(ct) = Self::sdp(&sdp) {
            ok.headers.push(ct);
        }
        ok.body = sdp.clone();
        l.dialog = Dialog::from_uas(&l.invite, &i.local_tag);
        l.local_body = sdp;
        l.phase = Phase::Confirmed;
        i.retransmit = Some((now + t1, t1));
        i.give_up = Some(now + timeout);
        i.ok = Some(ok.clone());
        let key = i.key.clone();
        self.tx.respond(now, &key, ok)?;
        self.pump(now);
        Ok(())
    }

    /// Rejects an inbound call (486, 603, 480, ...).
    pub fn reject(
        &mut self,
        now: Instant,
        leg: LegId,
        status: u16,
        reason: &str,
    ) -> Result<(), crate::SipError> {
        let l = self.legs.get(&leg).ok_or(crate::SipError::NoSuchDialog)?;
        let i = l.inbound.as_ref().ok_or(crate::SipError::NoSuchDialog)?;
        if l.phase != Phase::Inviting {
            return Err(crate::SipError::NoSuchDialog);
        }
        let r = response_to(&l.invite, status, reason, Some(&i.local_tag));
        let key = i.key.clone();
        self.drop_leg(leg);
        self.tx.respond(now, &key, r)?;
        self.pump(now);
        Ok(())
    }

    /// The caller cancelled: answer the INVITE 487 and report it.
    pub(super) fn on_inbound_cancelled(&mut self, now: Instant, key: &TxKey) {
        let found = self
            .legs
            .iter()
            .find(|(_, l)| {
                l.inbound.as_ref().is_some_and(|i| &i.key == key) && l.phase == Phase::Inviting
            })
            .map(|(id, _)| *id);
        let Some(leg) = found else { return };
        let _ = self.reject(now, leg, 487, "Request Terminated");
        self.emit(AgentEvent::Failed {
            leg,
            status: 487,
            reason: "cancelled by the caller".into(),
        });
    }

    /// The ACK for our 2xx: stop retransmitting; the call is up.
    pub(super) fn on_inbound_ack(&mut self, request: &Request) {
        let found = self.legs.iter_mut().find(|(_, l)| {
            l.inbound.as_ref().is_some_and(|i| i.retransmit.is_some())
                && l.dialog
                    .as_ref()
                    .is_some_and(|d| d.matches_request(request))
        });
        if let Some((leg, l)) = found {
            if let Some(i) = l.inbound.as_mut() {
                i.retransmit = None;
                i.give_up = None;
            }
            let leg = *leg;
            let body = request.body.clone();
            self.emit(AgentEvent::Answered { leg, body });
        }
    }

    /// Retransmits unacknowledged 2xx (T1 doubling to T2); BYE after 64*T1.
    pub(super) fn retransmit_answers(&mut self, now: Instant) {
        let t2 = self.cfg.timers.t2;
        let mut resend = Vec::new();
        let mut abandon = Vec::new();
        for (id, l) in &mut self.legs {
            let Some(i) = l.inbound.as_mut() else {
                continue;
            };
            if i.give_up.is_some_and(|g| now >= g) {
                i.retransmit = None;
                i.give_up = None;
                abandon.push(*id);
                continue;
            }
            if let Some((at, interval)) = i.retransmit {
                if now >= at {
                    let next = (interval * 2).min(t2);
                    i.retransmit = Some((at + next, next));
                    if let Some(ok) = i.ok.clone() {
                        resend.push((i.key.clone(), ok));
                    }
                }
            }
        }
        for (key, ok) in resend {
            let _ = self.tx.respond(now, &key, ok);
        }
        for leg in abandon {
            self.send_bye(now, leg);
        }
    }

    /// Deadlines of inbound legs.
    pub(super) fn inbound_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.legs
            .values()
            .filter_map(|l| l.inbound.as_ref())
            .flat_map(|i| [i.retransmit.map(|r| r.0), i.give_up].into_iter().flatten())
    }
}
