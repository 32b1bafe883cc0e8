//! Registration to a carrier (RFC 3261 §10, client side): REGISTER with digest answers,
//! the nonce reused on refreshes, refresh at half the granted expiry, unregister with
//! `Expires: 0`. Part of the [`UserAgent`]; shares its transactions and timers.

use super::{AgentEvent, Purpose, UserAgent};
use crate::digest::{DigestCredentials, DigestSession};
use crate::header::{CSeq, Contact, Header, NameAddr};
use crate::message::{Headers, Method, Request, Response};
use crate::uri::Uri;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What to register and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSpec {
    /// The registrar's Request-URI (`sip:carrier.example`).
    pub registrar: Uri,
    /// Where REGISTER goes.
    pub dest: SocketAddr,
    /// The address of record (To/From).
    pub aor: Uri,
    /// Requested expiry in seconds.
    pub expires: u32,
    /// Credentials for the registrar's challenge.
    pub credentials: Option<DigestCredentials>,
}

/// Identifies one registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegId(pub u64);

#[derive(Debug)]
pub(super) struct Registration {
    spec: RegistrationSpec,
    call_id: String,
    from_tag: String,
    cseq: u32,
    auth: Option<DigestSession>,
    /// When to refresh; `None` while a REGISTER is in flight or after unregistering.
    pub(super) refresh_at: Option<Instant>,
    /// The REGISTER in flight asks for this expiry (0 = unregister).
    asked: u32,
}

impl UserAgent {
    /// Registers `spec.aor` at the registrar and keeps the binding refreshed.
    pub fn register(&mut self, now: Instant, spec: RegistrationSpec) -> RegId {
        let id = RegId(self.next_leg);
        self.next_leg += 1;
        let reg = Registration {
            auth: spec
                .credentials
                .clone()
                .or_else(|| self.cfg.credentials.clone())
                .map(DigestSession::new),
            asked: spec.expires,
            spec,
            call_id: format!("{}@{}", self.token(), self.cfg.local.ip()),
            from_tag: self.token()[..10].to_owned(),
            cseq: 0,
            refresh_at: None,
        };
        self.registrations.insert(id, reg);
        self.send_register(now, id);
        id
    }

    /// Forgets a registration without sending anything (one that failed and will be
    /// started afresh, or is no longer wanted).
    pub fn forget_registration(&mut self, id: RegId) {
        self.registrations.remove(&id);
    }

    /// Removes the binding (`Expires: 0`) and stops refreshing.
    pub fn unregister(&mut self, now: Instant, id: RegId) {
        if let Some(r) = self.registrations.get_mut(&id) {
            r.asked = 0;
            r.refresh_at = None;
            self.send_register(now, id);
        }
    }

    fn send_register(&mut self, now: Instant, id: RegId) {
        let via = self.via();
        let contact = self.contact();
        let cnonce = self.token();
        let Some(r) = self.registrations.get_mut(&id) else {
            return;
        };
        r.cseq += 1;
        r.refresh_at = None;
        let mut h = Headers::default();
        h.push(Header::Via(via));
        h.push(Header::MaxForwards(70));
        let mut from = NameAddr::new(r.spec.aor.clone());
        from.set_tag(&r.from_tag);
        h.push(Header::From(from));
        h.push(Header::To(NameAddr::new(r.spec.aor.clone())));
        h.push(Header::CallId(r.call_id.clone()));
        h.push(Header::CSeq(CSeq {
            seq: r.cseq,
            method: Method::Register,
        }));
        h.push(contact);
        h.push(Header::Expires(r.asked));
        let uri = r.spec.registrar.to_string();
        if let Some(auth) = r.auth.as_mut().filter(|a| a.is_ready()) {
            // Reuse the nonce we hold (next nonce count) instead of waiting for a 401.
            if let Ok(cred) = auth.authorize(&Method::Register, &uri, &cnonce[..12]) {
                h.push(Header::Authorization(cred));
            }
        }
        let req = Request {
            method: Method::Register,
            uri: r.spec.registrar.clone(),
            headers: h,
            body: Vec::new(),
        };
        let dest = r.spec.dest;
        self.start(now, req, dest, Purpose::Register(id));
    }

    pub(super) fn on_register_response(&mut self, now: Instant, id: RegId, response: Response) {
        if response.status < 200 {
            return;
        }
        let Some(r) = self.registrations.get_mut(&id) else {
            return;
        };
        let status = response.status;
        if status == 401 || status == 407 {
            let challenge = if status == 407 {
                response.headers.proxy_authenticate().next()
            } else {
                response.headers.www_authenticate().next()
            };
            let answerable = match (r.auth.as_mut(), challenge) {
                (Some(a), Some(c)) => a.challenge(c).is_ok(),
                _ => false,
            };
            if answerable {
                self.send_register(now, id);
                return;
            }
        }
        if (200..300).contains(&status) {
            if let Some(a) = r.auth.as_mut() {
                a.accepted();
            }
            if r.asked == 0 {
                self.registrations.remove(&id);
                self.emit(AgentEvent::Registered {
                    reg: id,
                    expires: 0,
                });
                return;
            }
            let granted = granted_expiry(&response, self.cfg.local).unwrap_or(r.asked);
            r.refresh_at = Some(
                now + Duration::from_millis(u64::from(granted) * 500).max(Duration::from_secs(1)),
            );
            self.emit(AgentEvent::Registered {
                reg: id,
                expires: granted,
            });
            return;
        }
        r.refresh_at = None;
        self.emit(AgentEvent::RegistrationFailed {
            reg: id,
            status,
            reason: response.reason,
        });
    }

    pub(super) fn on_register_timeout(&mut self, id: RegId) {
        if let Some(r) = self.registrations.get_mut(&id) {
            r.refresh_at = None;
        }
        self.emit(AgentEvent::RegistrationFailed {
            reg: id,
            status: 408,
            reason: "no response from registrar".into(),
        });
    }

    /// Refreshes bindings that are due.
    pub(super) fn refresh_registrations(&mut self, now: Instant) {
        let due: Vec<RegId> = self
            .registrations
            .iter()
            .filter(|(_, r)| r.refresh_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send_register(now, id);
        }
    }
}

/// The expiry the registrar granted our Contact: its `expires` parameter, else the
/// Expires header.
fn granted_expiry(response: &Response, local: SocketAddr) -> Option<u32> {
    let ours = response.headers.contacts().find_map(|c| match c {
        Contact::Address(a)
            if a.uri.as_sip().is_some_and(|u| {
                u.host.ip() == Some(local.ip()) && u.port == Some(local.port())
            }) =>
        {
            a.param("expires").flatten().and_then(|e| e.parse().ok())
        }
        _ => None,
    });
    ours.or_else(|| response.headers.expires().copied())
}
