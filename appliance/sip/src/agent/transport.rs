//! Which transport the agent's messages travel on. The driver owns the sockets; the core
//! only has to *say* the transport: the top Via of each request it sends (`SIP/2.0/TCP`,
//! the listener's address of that transport and address family), the transport parameter
//! of its Contact, and whether the transaction retransmits (UDP) or not (TCP/TLS). The
//! destinations reached over TCP or TLS are set with [`UserAgent::set_transport`]; every
//! other destination is UDP. A connection that fails fails the transactions waiting on
//! it as 503 (RFC 3261 §8.1.3.1), so failover moves the call on at once.

use super::UserAgent;
use crate::header::{Contact, Header, NameAddr, Transport};
use crate::message::Request;
use crate::param::Param;
use crate::uri::{Host, SipUri, Uri};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// The agent's view of its transports: which destinations use TCP/TLS and where the
/// driver listens.
#[derive(Debug, Clone)]
pub(super) struct Wire {
    /// `AgentConfig::local` (the fallback listener).
    local: SocketAddr,
    /// Our user part (Contact).
    user: String,
    /// Destinations reached over TCP/TLS (all others: UDP).
    transports: HashMap<SocketAddr, Transport>,
    /// The driver's listeners per transport and address family.
    listeners: Vec<(Transport, SocketAddr)>,
}

fn host_of(a: SocketAddr) -> Host {
    match a.ip() {
        std::net::IpAddr::V4(a) => Host::V4(a),
        std::net::IpAddr::V6(a) => Host::V6(a),
    }
}

impl Wire {
    pub(super) fn new(local: SocketAddr, user: &str) -> Wire {
        Wire {
            local,
            user: user.to_owned(),
            transports: HashMap::new(),
            listeners: Vec::new(),
        }
    }

    /// A dialog's remote target asks for a transport (`;transport=tcp`, `sips:`):
    /// requests to its address take it, unless that address is already configured.
    pub(super) fn learn(&mut self, dest: SocketAddr, target: &Uri) {
        let Some(sip) = target.as_sip() else { return };
        let transport = if sip.secure {
            Transport::Tls
        } else {
            match sip.param("transport").flatten() {
                Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
                Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
                _ => return,
            }
        };
        self.transports.entry(dest).or_insert(transport);
    }

    fn transport_for(&self, dest: SocketAddr) -> Transport {
        self.transports
            .get(&dest)
            .cloned()
            .unwrap_or(Transport::Udp)
    }

    /// Our address for `transport` towards an address of `v6`'s family.
    fn local_for(&self, transport: &Transport, v6: bool) -> SocketAddr {
        let same = |t: &&(Transport, SocketAddr)| &t.0 == transport;
        self.listeners
            .iter()
            .filter(same)
            .find(|(_, a)| a.is_ipv6() == v6)
            .or_else(|| self.listeners.iter().find(same))
            .map_or(self.local, |(_, a)| *a)
    }

    fn uri_for(&self, transport: &Transport, local: SocketAddr) -> Uri {
        let mut uri = SipUri::new(Some(&self.user), host_of(local), Some(local.port()));
        if !transport.is_unreliable() {
            let name = transport.to_string().to_ascii_lowercase();
            uri.params.push(Param::new("transport", Some(&name)));
        }
        Uri::Sip(uri)
    }

    /// Our Contact for a response to `request` (its top Via names the transport it came
    /// over, its source the address family).
    pub(super) fn contact_for_request(&self, request: &Request, source: SocketAddr) -> Header {
        let transport = request
            .headers
            .top_via()
            .map_or(Transport::Udp, |v| v.transport.clone());
        let local = self.local_for(&transport, source.is_ipv6());
        Header::Contact(Contact::Address(NameAddr::new(
            self.uri_for(&transport, local),
        )))
    }

    /// Makes a request we send to `dest` say its transport: top Via and our Contact.
    /// Returns whether the transport is reliable.
    pub(super) fn stamp(&self, request: &mut Request, dest: SocketAddr) -> bool {
        let transport = self.transport_for(dest);
        let local = self.local_for(&transport, dest.is_ipv6());
        let plain = Uri::Sip(SipUri::new(
            Some(&self.user),
            host_of(self.local),
            Some(self.local.port()),
        ));
        if let Some(via) = request.headers.top_via_mut() {
            via.transport = transport.clone();
            via.host = host_of(local);
            via.port = Some(local.port());
        }
        let ours = self.uri_for(&transport, local);
        for h in &mut request.headers.0 {
            if let Header::Contact(Contact::Address(a)) = h {
                if a.uri == plain {
                    a.uri = ours.clone();
                }
            }
        }
        !transport.is_unreliable()
    }
}

impl UserAgent {
    /// Requests to `dest` go over `transport` (TCP or TLS; UDP is the default).
    pub fn set_transport(&mut self, dest: SocketAddr, transport: Transport) {
        if transport == Transport::Udp {
            self.wire.transports.remove(&dest);
        } else {
            self.wire.transports.insert(dest, transport);
        }
    }

    /// The transport requests to `dest` use.
    pub fn transport_for(&self, dest: SocketAddr) -> Transport {
        self.wire.transport_for(dest)
    }

    /// The driver listens for `transport` at `local`: Via and Contact of messages on
    /// that transport (and address family) name it. Without one, `AgentConfig::local`.
    pub fn add_listener(&mut self, transport: Transport, local: SocketAddr) {
        self.wire
            .listeners
            .retain(|(t, a)| !(t == &transport && a.is_ipv6() == local.is_ipv6()));
        self.wire.listeners.push((transport, local));
    }

    /// The connection to `peer` failed (refused, reset, TLS handshake, closed with
    /// transactions open): every client transaction waiting on it ends as 503
    /// (RFC 3261 §8.1.3.1) — an INVITE on a trunk then fails over at once.
    pub fn handle_transport_error(&mut self, now: Instant, peer: SocketAddr) {
        self.tx.fail_destination(peer);
        self.pump(now);
    }
}
