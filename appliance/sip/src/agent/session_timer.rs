//! Session timers (RFC 4028) for answered calls: when the answer names us refresher we
//! re-INVITE at half the interval; when the peer refreshes and stops, the call is ended
//! with BYE before the interval runs out (interval − min(32 s, interval/3)), so a dead
//! far end cannot hold a trunk channel for ever.

use super::{LegId, Phase, Purpose, UserAgent};
use crate::header::{Header, ValueWithParams};
use crate::message::{Method, Request, Response};
use crate::param::Param;
use std::time::{Duration, Instant};

/// The session timer of one answered call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionTimer {
    interval: u32,
    we_refresh: bool,
    /// When we send the next refresh (we are refresher, none in flight).
    refresh_at: Option<Instant>,
    /// When the session is considered dead without a refresh.
    expire_at: Instant,
}

impl SessionTimer {
    /// The next refresh we send, or the expiry without one.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        Some(
            self.refresh_at
                .map_or(self.expire_at, |r| r.min(self.expire_at)),
        )
    }

    fn new(now: Instant, interval: u32, we_refresh: bool) -> Self {
        let i = Duration::from_secs(u64::from(interval));
        let margin = Duration::from_secs(32).min(i / 3);
        SessionTimer {
            interval,
            we_refresh,
            refresh_at: we_refresh.then(|| now + i / 2),
            expire_at: now + i - margin,
        }
    }
}

/// `Session-Expires` and its refresher from a message, if any.
fn session_expires(headers: &crate::message::Headers) -> Option<(u32, Option<String>)> {
    headers.0.iter().find_map(|h| match h {
        Header::SessionExpires(v) => Some((v.value, v.param("refresher"))),
        _ => None,
    })
}

pub(super) fn session_header(interval: u32, refresher: &str) -> Header {
    Header::SessionExpires(ValueWithParams {
        value: interval,
        params: vec![Param::new("refresher", Some(refresher))],
    })
}

impl UserAgent {
    /// Starts (or restarts) the timer from a 2xx to our INVITE or re-INVITE.
    pub(super) fn start_session_timer(&mut self, now: Instant, leg: LegId, response: &Response) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.session = session_expires(&response.headers).map(|(interval, refresher)| {
            // Without a refresher parameter in the answer the UAC refreshes (§7.2).
            let we_refresh = refresher.is_none_or(|r| r.eq_ignore_ascii_case("uac"));
            SessionTimer::new(now, interval, we_refresh)
        });
    }

    /// The peer refreshed the session (its re-INVITE or UPDATE): restart the expiry and
    /// answer with the interval it asked for.
    pub(super) fn peer_refreshed(
        &mut self,
        now: Instant,
        leg: LegId,
        request: &Request,
    ) -> Option<Header> {
        let l = self.legs.get_mut(&leg)?;
        let (interval, _) = session_expires(&request.headers)?;
        // In the peer's refresh the peer is the UAC of that transaction: it refreshes.
        l.session = Some(SessionTimer::new(now, interval, false));
        Some(session_header(interval, "uac"))
    }

    /// Sends due refreshes; ends sessions whose refresh never came.
    pub(super) fn run_session_timers(&mut self, now: Instant, due: &[LegId]) {
        let mut refresh = Vec::new();
        let mut expired = Vec::new();
        for id in due {
            let Some(l) = self.legs.get_mut(id) else {
                continue;
            };
            let Some(t) = l.session.as_mut() else {
                continue;
            };
            if l.phase != Phase::Confirmed {
                continue;
            }
            if now >= t.expire_at {
                l.session = None;
                expired.push(*id);
            } else if t.refresh_at.is_some_and(|r| now >= r) && l.reinvite_seq.is_none() {
                t.refresh_at = None;
                refresh.push((*id, t.interval));
            }
        }
        for leg in expired {
            self.send_bye(now, leg);
        }
        for (leg, interval) in refresh {
            let via = self.via();
            let contact = self.contact();
            let Some(l) = self.legs.get_mut(&leg) else {
                continue;
            };
            let Some(d) = l.dialog.as_mut() else { continue };
            let mut req = d.request(Method::Invite, via);
            req.headers.push(contact);
            req.headers.push(Header::Supported(vec!["timer".into()]));
            req.headers.push(session_header(interval, "uac"));
            if let Some(ct) = Self::sdp(&l.local_body) {
                req.headers.push(ct);
            }
            req.body = l.local_body.clone();
            l.reinvite_seq = Some(d.local_seq);
            l.refreshing = true;
            let dest = d.next_hop().unwrap_or(l.dest);
            self.start(now, req, dest, Purpose::Reinvite(leg));
        }
    }

    /// A session refresh that met glare (491): refresh again now, if still ours to do.
    pub(super) fn retry_refresh(&mut self, now: Instant, leg: LegId) {
        if let Some(t) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) {
            if t.we_refresh {
                t.refresh_at = Some(now);
            }
        }
        self.run_session_timers(now, &[leg]);
    }
}
