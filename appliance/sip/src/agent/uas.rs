//! Inbound calls (the UAS side of the [`UserAgent`]): admission through the
//! [`InboundGate`] before any transaction exists (so a dropped source hears nothing, not
//! even 100 Trying), ringing, answering with 2xx retransmitted until the ACK (RFC 3261
//! §13.3.1.4; BYE if it never comes), rejecting, and CANCEL from the caller. Early media
//! (183 with SDP) is sent reliably (RFC 3262) to callers that support 100rel — and every
//! provisional to callers that require it: resent from
//! T1 doubling until the PRACK, the call refused 500 if none comes in 64*T1, and a 2xx
//! held back until the offer-bearing provisional is acknowledged.

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
    /// The caller supports 100rel: provisionals with SDP go reliably.
    reliable: bool,
    /// The caller requires 100rel: every provisional but 100 goes reliably.
    required: bool,
    /// The last RSeq used.
    rseq: u32,
    /// A reliable provisional not yet PRACKed.
    unacked: Option<Unacked>,
    /// A 2xx waiting for that PRACK (RFC 3262 §3: not sent before the SDP-bearing
    /// provisional is acknowledged).
    held_ok: Option<crate::message::Response>,
}

/// A reliable provisional response in flight (RFC 3262 §3).
#[derive(Debug)]
pub(super) struct Unacked {
    response: crate::message::Response,
    rseq: u32,
    has_sdp: bool,
    /// Next retransmission and the interval after it (T1 doubling, no T2 cap).
    next: (Instant, Duration),
    /// No PRACK by then: refuse the call 500.
    give_up: Instant,
}

impl InboundLeg {
    pub(super) fn new(key: TxKey, local_tag: String, invite: &Request) -> InboundLeg {
        let has = |tags: Vec<&str>| tags.iter().any(|t| t.eq_ignore_ascii_case("100rel"));
        InboundLeg {
            key,
            local_tag,
            retransmit: None,
            give_up: None,
            ok: None,
            reliable: has(invite.headers.supported()) || has(invite.headers.require()),
            required: has(invite.headers.require()),
            rseq: 0,
            unacked: None,
            held_ok: None,
        }
    }
}

impl UserAgent {
    /// Takes inbound calls under `policy` (without one, every inbound INVITE gets 480).
    pub fn set_inbound_policy(&mut self, policy: InboundPolicy) {
        self.gate = Some(InboundGate::new(policy));
    }

    /// Takes inbound calls under `policy` from now on (a trunk edit while running), keeping
    /// the registered phones' sources let through and the per-source rate state. Without a
    /// gate yet, the phones with live bindings at `now` are let through at once.
    pub fn replace_inbound_policy(&mut self, now: Instant, policy: InboundPolicy) {
        match self.gate.as_mut() {
            Some(gate) => gate.replace_policy(policy),
            None => {
                let mut gate = InboundGate::new(policy);
                if let Some(registrar) = &self.registrar {
                    gate.set_phone_sources(registrar.sources(now));
                }
                self.gate = Some(gate);
            }
        }
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
        let trunk = self
            .gate
            .as_ref()
            .and_then(|g| g.trunk_of(source.ip()))
            .map(str::to_owned);
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
                inbound: None,
                update_pending: false,
                update_body: Vec::new(),
                glare_retry: None,
            },
        );
        if let Some(l) = self.legs.get_mut(&leg) {
            l.inbound = Some(InboundLeg::new(key, tag, &l.invite));
        }
        self.emit(AgentEvent::Incoming {
            leg,
            from,
            number,
            trunk,
            target,
            body,
        });
    }

    /// Sends 180 Ringing for an inbound call.
    pub fn ring(&mut self, now: Instant, leg: LegId) -> Result<(), crate::SipError> {
        self.progress(now, leg, 180, Vec::new())
    }

    /// Sends a provisional response (180, 183, ...) for an inbound call, with `sdp` as
    /// early media when not empty. To a caller that supports 100rel, a provisional with
    /// SDP is sent reliably (Require: 100rel, RSeq) and resent until its PRACK (to one that
    /// requires 100rel, every provisional is); while one
    /// is unacknowledged, further provisionals wait (RFC 3262 §3) and are not sent.
    pub fn progress(
        &mut self,
        now: Instant,
        leg: LegId,
        status: u16,
        sdp: Vec<u8>,
    ) -> Result<(), crate::SipError> {
        let t1 = self.cfg.timers.t1;
        let timeout = self.cfg.timers.timeout();
        let l = self
            .legs
            .get_mut(&leg)
            .ok_or(crate::SipError::NoSuchDialog)?;
        let contact = self.wire.contact_for_request(&l.invite, l.dest);
        if l.phase != Phase::Inviting || !(101..200).contains(&status) {
            return Err(crate::SipError::NoSuchDialog);
        }
        let i = l.inbound.as_mut().ok_or(crate::SipError::NoSuchDialog)?;
        let reason = if status == 180 {
            "Ringing"
        } else {
            "Session Progress"
        };
        let mut r = response_to(&l.invite, status, reason, Some(&i.local_tag));
        for h in &l.invite.headers.0 {
            if let Header::RecordRoute(_) = h {
                r.headers.push(h.clone());
            }
        }
        r.headers.push(contact);
        let has_sdp = !sdp.is_empty();
        if let Some(ct) = Self::sdp(&sdp) {
            r.headers.push(ct);
        }
        r.body = sdp;
        if i.required || (i.reliable && has_sdp) {
            if i.unacked.is_some() {
                return Ok(());
            }
            i.rseq += 1;
            r.headers.push(Header::Require(vec!["100rel".into()]));
            r.headers.push(Header::RSeq(i.rseq));
            i.unacked = Some(Unacked {
                response: r.clone(),
                rseq: i.rseq,
                has_sdp,
                next: (now + t1, t1),
                give_up: now + timeout,
            });
        } else if i.unacked.is_some() {
            return Ok(());
        }
        let key = i.key.clone();
        self.tx.respond(now, &key, r)?;
        self.pump(now);
        Ok(())
    }

    /// A PRACK from the caller: acknowledges our reliable provisional (200), or 481 when
    /// it matches none. Sends a 2xx that was waiting for it.
    pub(super) fn on_prack(&mut self, now: Instant, key: &TxKey, request: &Request) {
        let rack = request.headers.0.iter().find_map(|h| match h {
            Header::RAck(r) => Some(r.clone()),
            _ => None,
        });
        let candidates = self.legs.with_call_id(request.headers.call_id());
        let found = candidates.into_iter().find_map(|id| {
            let l = self.legs.get_mut(&id)?;
            let i = l.inbound.as_mut()?;
            let early = Dialog::from_uas(&l.invite, &i.local_tag)?;
            let invite_seq = l.invite.headers.cseq()?.seq;
            let acked = early.matches_request(request)
                && rack
                    .as_ref()
                    .is_some_and(|r| r.cseq == invite_seq && r.method == Method::Invite)
                && i.unacked
                    .as_ref()
                    .is_some_and(|u| rack.as_ref().is_some_and(|r| r.rseq == u.rseq));
            acked.then(|| {
                i.unacked = None;
                (id, i.local_tag.clone(), i.held_ok.take())
            })
        });
        let Some((leg, tag, held)) = found else {
            let tag = self.token()[..10].to_owned();
            let _ = self.tx.respond(
                now,
                key,
                response_to(request, 481, "Call/Transaction Does Not Exist", Some(&tag)),
            );
            return;
        };
        let _ = self
            .tx
            .respond(now, key, response_to(request, 200, "OK", Some(&tag)));
        if let Some(ok) = held {
            self.send_ok(now, leg, ok);
        }
    }

    /// Resends unacknowledged reliable provisionals; refuses the call 500 when the PRACK
    /// never comes.
    pub(super) fn retransmit_provisionals(&mut self, now: Instant, due: &[LegId]) {
        let mut resend = Vec::new();
        let mut refuse = Vec::new();
        for id in due {
            let Some(i) = self.legs.get_mut(id).and_then(|l| l.inbound.as_mut()) else {
                continue;
            };
            let Some(u) = i.unacked.as_mut() else {
                continue;
            };
            if now >= u.give_up {
                refuse.push(*id);
                continue;
            }
            if now >= u.next.0 {
                let interval = u.next.1 * 2;
                u.next = (u.next.0 + interval, interval);
                resend.push((i.key.clone(), u.response.clone()));
            }
        }
        for (key, r) in resend {
            let _ = self.tx.respond(now, &key, r);
        }
        for leg in refuse {
            if let Some(i) = self.legs.get_mut(&leg).and_then(|l| l.inbound.as_mut()) {
                i.unacked = None;
                i.held_ok = None;
            }
            if let Some(l) = self.legs.get_mut(&leg) {
                l.phase = Phase::Inviting;
            }
            let _ = self.reject(now, leg, 500, "Reliable provisional not acknowledged");
            self.emit(AgentEvent::Failed {
                leg,
                status: 500,
                reason: "no PRACK for our reliable provisional".into(),
            });
        }
    }

    /// Answers an inbound call with `sdp`; the 200 is retransmitted until the ACK.
    pub fn answer(
        &mut self,
        now: Instant,
        leg: LegId,
        sdp: Vec<u8>,
    ) -> Result<(), crate::SipError> {
        let l = self
            .legs
            .get_mut(&leg)
            .ok_or(crate::SipError::NoSuchDialog)?;
        let contact = self.wire.contact_for_request(&l.invite, l.dest);
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
        if i.unacked.as_ref().is_some_and(|u| u.has_sdp) {
            i.held_ok = Some(ok);
            return Ok(());
        }
        self.send_ok(now, leg, ok);
        Ok(())
    }

    /// Sends the 2xx of an inbound call and retransmits it until the ACK.
    fn send_ok(&mut self, now: Instant, leg: LegId, ok: crate::message::Response) {
        let t1 = self.cfg.timers.t1;
        let timeout = self.cfg.timers.timeout();
        let Some(i) = self.legs.get_mut(&leg).and_then(|l| l.inbound.as_mut()) else {
            return;
        };
        i.retransmit = Some((now + t1, t1));
        i.give_up = Some(now + timeout);
        i.ok = Some(ok.clone());
        let key = i.key.clone();
        let _ = self.tx.respond(now, &key, ok);
        self.pump(now);
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
        let found = self
            .legs
            .with_call_id(request.headers.call_id())
            .into_iter()
            .find(|id| {
                self.legs.get(id).is_some_and(|l| {
                    l.inbound.as_ref().is_some_and(|i| i.retransmit.is_some())
                        && l.dialog
                            .as_ref()
                            .is_some_and(|d| d.matches_request(request))
                })
            });
        if let Some(leg) = found {
            if let Some(i) = self.legs.get_mut(&leg).and_then(|l| l.inbound.as_mut()) {
                i.retransmit = None;
                i.give_up = None;
            }
            let body = request.body.clone();
            self.emit(AgentEvent::Answered { leg, body });
        }
    }

    /// Retransmits unacknowledged 2xx (T1 doubling to T2); BYE after 64*T1.
    pub(super) fn retransmit_answers(&mut self, now: Instant, due: &[LegId]) {
        let t2 = self.cfg.timers.t2;
        let mut resend = Vec::new();
        let mut abandon = Vec::new();
        for id in due {
            let Some(i) = self.legs.get_mut(id).and_then(|l| l.inbound.as_mut()) else {
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
}

impl InboundLeg {
    /// The inbound side's next deadline: 2xx retransmission or give-up, reliable
    /// provisional retransmission or give-up.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let u = self.unacked.as_ref();
        [
            self.retransmit.map(|r| r.0),
            self.give_up,
            u.map(|u| u.next.0),
            u.map(|u| u.give_up),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
