//! Changing an established session: UPDATE as the UAC (RFC 3311: a new offer inside the
//! dialog without a re-INVITE) and glare (RFC 3261 §14.1, RFC 3311 §5.1): a 491 to our
//! re-INVITE or UPDATE is retried after a random wait — 2.1 to 4 s when we own the Call-ID (we
//! placed the call), 0 to 2 s otherwise, in 10 ms steps — and a peer's re-INVITE that
//! crosses ours is answered 491.

use super::{AgentEvent, LegId, Phase, Purpose, UserAgent};
use crate::error::SipError;
use crate::message::Method;
use std::time::{Duration, Instant};

/// What a 491 refused, to be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Our re-INVITE with a new offer.
    Reinvite,
    /// Our session-timer refresh (re-INVITE).
    Refresh,
    /// Our UPDATE.
    Update,
}

/// A request to send again after glare.
#[derive(Debug, Clone)]
pub(super) struct GlareRetry {
    pub(super) at: Instant,
    body: Vec<u8>,
    what: Retry,
}

impl UserAgent {
    /// Sends UPDATE with a new offer `sdp` in the answered call (RFC 3311); the answer
    /// comes as [`AgentEvent::Updated`]. Refused while another UPDATE is in flight.
    pub fn update(&mut self, now: Instant, leg: LegId, sdp: Vec<u8>) -> Result<(), SipError> {
        let via = self.via();
        let contact = self.contact();
        let l = self.legs.get_mut(&leg).ok_or(SipError::NoSuchDialog)?;
        if l.phase != Phase::Confirmed || l.update_pending {
            return Err(SipError::NoSuchDialog);
        }
        let d = l.dialog.as_mut().ok_or(SipError::NoSuchDialog)?;
        let mut req = d.request(Method::Update, via);
        req.headers.push(contact);
        if let Some(ct) = Self::sdp(&sdp) {
            req.headers.push(ct);
        }
        req.body = sdp.clone();
        l.update_pending = true;
        l.update_body = sdp;
        let dest = d.next_hop().unwrap_or(l.dest);
        self.start(now, req, dest, Purpose::Update(leg));
        Ok(())
    }

    /// The final response to our UPDATE: a 2xx makes its offer our session description;
    /// a 491 (glare) sends it again after the wait.
    pub(super) fn on_update_response(
        &mut self,
        now: Instant,
        leg: LegId,
        status: u16,
        body: Vec<u8>,
    ) {
        if status < 200 {
            return;
        }
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.update_pending = false;
        let offer = std::mem::take(&mut l.update_body);
        if status == 491 {
            self.schedule_glare_retry(now, leg, Retry::Update, offer);
            return;
        }
        if (200..300).contains(&status) {
            l.local_body = offer;
        }
        self.emit(AgentEvent::Updated { leg, status, body });
    }

    /// A 491 to our re-INVITE or UPDATE: try `body` again after the §14.1 wait.
    pub(super) fn schedule_glare_retry(
        &mut self,
        now: Instant,
        leg: LegId,
        what: Retry,
        body: Vec<u8>,
    ) {
        let draw = u64::from_str_radix(&self.token()[..8], 16).unwrap_or(0);
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        // We own the Call-ID of calls we placed; inbound calls got theirs from the peer.
        let ten_ms = if l.inbound.is_none() {
            210 + draw % 191
        } else {
            draw % 201
        };
        l.glare_retry = Some(GlareRetry {
            at: now + Duration::from_millis(ten_ms * 10),
            body,
            what,
        });
    }

    /// Re-sends re-INVITEs whose glare wait is over.
    pub(super) fn run_glare_retries(&mut self, now: Instant, due: &[LegId]) {
        let mut retries = Vec::new();
        for id in due {
            if let Some(l) = self.legs.get_mut(id) {
                if l.glare_retry.as_ref().is_some_and(|g| now >= g.at) {
                    retries.extend(l.glare_retry.take().map(|g| (*id, g)));
                }
            }
        }
        for (leg, retry) in retries {
            // `reinvite`/`update` refuse only when the call ended or a new request went
            // out meanwhile: then there is nothing left to retry.
            match retry.what {
                Retry::Refresh => self.retry_refresh(now, leg),
                Retry::Reinvite => {
                    let _ = self.reinvite(now, leg, retry.body);
                }
                Retry::Update => {
                    let _ = self.update(now, leg, retry.body);
                }
            }
        }
    }
}
