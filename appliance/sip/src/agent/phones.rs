//! The branch's phones, as the [`UserAgent`] serves them: REGISTERs go to the
//! [`Registrar`], registered phones' addresses are let through the inbound gate, and a
//! call to a phone rings all its contacts at once, the first answer cancelling the rest.

use super::{CallSpec, LegId, UserAgent};
use crate::error::SipError;
use crate::header::Transport;
use crate::message::Request;
use crate::registrar::{Registrar, StoredBinding};
use crate::transaction::TxKey;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl UserAgent {
    /// Serves REGISTERs from the branch's phones with `registrar`.
    pub fn set_registrar(&mut self, registrar: Registrar) {
        self.registrar = Some(registrar);
    }

    /// The registrar, for inspection.
    pub fn registrar(&self) -> Option<&Registrar> {
        self.registrar.as_ref()
    }

    /// Takes back the bindings kept before a restart (see [`Registrar::restore`]) and lets
    /// their phones' addresses through the inbound gate; returns the refused ones with why.
    /// Without a registrar every binding is refused.
    pub fn restore_bindings(
        &mut self,
        now: Instant,
        kept: Vec<StoredBinding>,
    ) -> Vec<(StoredBinding, &'static str)> {
        let Some(reg) = self.registrar.as_mut() else {
            return kept.into_iter().map(|b| (b, "no registrar")).collect();
        };
        let refused = reg.restore(now, kept);
        let sources = reg.sources(now);
        if let Some(g) = self.gate.as_mut() {
            g.set_phone_sources(sources);
        }
        refused
    }

    pub(super) fn on_phone_register(
        &mut self,
        now: Instant,
        key: TxKey,
        request: Request,
        source: SocketAddr,
    ) {
        let nonce = self.token();
        let Some(reg) = self.registrar.as_mut() else {
            return;
        };
        let resp = reg.handle_register(now, source, &request, &nonce);
        let sources = reg.sources(now);
        // A phone registered over TCP/TLS is called over the same transport (on its own
        // connection while it stays open).
        if resp.status == 200 {
            if let Some(via) = request.headers.top_via() {
                if matches!(via.transport, Transport::Tcp | Transport::Tls) {
                    let transport = via.transport.clone();
                    self.set_transport(source, transport);
                }
            }
        }
        if let Some(g) = self.gate.as_mut() {
            g.set_phone_sources(sources);
        }
        let _ = self.tx.respond(now, &key, resp);
    }

    pub(super) fn expire_bindings(&mut self, now: Instant) {
        let Some(reg) = self.registrar.as_mut() else {
            return;
        };
        if reg.expire(now).is_empty() {
            return;
        }
        let sources = reg.sources(now);
        if let Some(g) = self.gate.as_mut() {
            g.set_phone_sources(sources);
        }
    }

    /// Calls a registered phone: one leg per live contact, sent to the address each
    /// REGISTER came from. The first to answer wins; the others are cancelled.
    pub fn call_phone(
        &mut self,
        now: Instant,
        account: &str,
        sdp: Vec<u8>,
        ring_timeout: Option<Duration>,
    ) -> Result<Vec<LegId>, SipError> {
        let targets: Vec<_> = self
            .registrar
            .as_ref()
            .map(|r| {
                r.lookup(now, account)
                    .into_iter()
                    .map(|b| (b.contact.clone(), b.source))
                    .collect()
            })
            .unwrap_or_default();
        if targets.is_empty() {
            return Err(SipError::NoSuchDialog);
        }
        let legs: Vec<LegId> = targets
            .into_iter()
            .map(|(to, dest)| {
                self.place_call(
                    now,
                    CallSpec {
                        ring_timeout,
                        ..CallSpec::new(to, dest, sdp.clone())
                    },
                )
            })
            .collect();
        if legs.len() > 1 {
            for l in &legs {
                self.forks.insert(*l, legs.clone());
            }
        }
        Ok(legs)
    }

    /// `leg` answered: cancel the legs that rang alongside it.
    pub(super) fn cancel_siblings(&mut self, now: Instant, leg: LegId) {
        let Some(group) = self.forks.remove(&leg) else {
            return;
        };
        for other in group.into_iter().filter(|l| *l != leg) {
            self.forks.remove(&other);
            let _ = self.hang_up(now, other);
        }
    }
}
