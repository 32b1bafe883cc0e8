//! Dialog state (RFC 3261 §12): identifiers, sequence numbers, route set and remote
//! target, and building requests inside a dialog (loose routing, §12.2.1.1) including
//! the ACK for a 2xx (§13.2.2.4). No transactions, no timers: `agent.rs` drives these.

use crate::header::{CSeq, Header, NameAddr, Via};
use crate::message::{Headers, Method, Request, Response};
use crate::uri::Uri;
use std::net::SocketAddr;

/// One dialog, from our (UAC) side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (From of our requests).
    pub local_tag: String,
    /// The peer's tag (To of our requests).
    pub remote_tag: String,
    /// Our address (From without tag).
    pub local: NameAddr,
    /// The peer's address (To without tag).
    pub remote: NameAddr,
    /// Where in-dialog requests go: the peer's Contact.
    pub remote_target: Uri,
    /// The route set (Record-Route of the 2xx, reversed for the UAC).
    pub route_set: Vec<NameAddr>,
    /// Our last CSeq number.
    pub local_seq: u32,
    /// The peer's last CSeq number, once it sent a request.
    pub remote_seq: Option<u32>,
}

impl Dialog {
    /// The dialog a 1xx (with a To tag) or 2xx to our INVITE establishes (§12.1.2).
    pub fn from_uac(invite: &Request, response: &Response) -> Option<Dialog> {
        let h = &response.headers;
        let remote_tag = h.to()?.tag()?.to_owned();
        let local_tag = invite.headers.from()?.tag()?.to_owned();
        let remote_target = crate::message::first_contact_uri(h)
            .cloned()
            .unwrap_or_else(|| invite.uri.clone());
        let mut route_set: Vec<NameAddr> = h.record_routes().cloned().collect();
        route_set.reverse();
        let strip = |a: &NameAddr| {
            let mut a = a.clone();
            a.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
            a
        };
        Some(Dialog {
            call_id: invite.headers.call_id()?.clone(),
            local_tag,
            remote_tag,
            local: strip(invite.headers.from()?),
            remote: strip(h.to()?),
            remote_target,
            route_set,
            local_seq: invite.headers.cseq()?.seq,
            remote_seq: None,
        })
    }

    /// The dialog our 2xx to an inbound INVITE establishes (§12.1.1): `local_tag` is the
    /// tag we put in To.
    pub fn from_uas(invite: &Request, local_tag: &str) -> Option<Dialog> {
        let h = &invite.headers;
        let strip = |a: &NameAddr| {
            let mut a = a.clone();
            a.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
            a
        };
        Some(Dialog {
            call_id: h.call_id()?.clone(),
            local_tag: local_tag.to_owned(),
            remote_tag: h.from()?.tag()?.to_owned(),
            local: strip(h.to()?),
            remote: strip(h.from()?),
            remote_target: crate::message::first_contact_uri(h)?.clone(),
            route_set: h.record_routes().cloned().collect(),
            local_seq: 1,
            remote_seq: Some(h.cseq()?.seq),
        })
    }

    /// Whether a request from the peer belongs to this dialog.
    pub fn matches_request(&self, req: &Request) -> bool {
        let h = &req.headers;
        h.call_id() == Some(&self.call_id)
            && h.to().and_then(NameAddr::tag) == Some(self.local_tag.as_str())
            && h.from().and_then(NameAddr::tag) == Some(self.remote_tag.as_str())
    }

    /// Whether a response is for this dialog (same Call-ID and both tags).
    pub fn matches_response(&self, resp: &Response) -> bool {
        let h = &resp.headers;
        h.call_id() == Some(&self.call_id)
            && h.from().and_then(NameAddr::tag) == Some(self.local_tag.as_str())
            && h.to().and_then(NameAddr::tag) == Some(self.remote_tag.as_str())
    }

    /// The Request-URI and Route headers for the next request (loose or strict routing).
    fn target_and_routes(&self) -> (Uri, Vec<NameAddr>) {
        let loose = self
            .route_set
            .first()
            .and_then(|r| r.uri.as_sip())
            .is_none_or(|u| u.param("lr").is_some());
        if loose {
            (self.remote_target.clone(), self.route_set.clone())
        } else {
            // Strict routing (§12.2.1.1): the first route becomes the Request-URI and the
            // remote target goes last.
            let mut routes: Vec<NameAddr> = self.route_set[1..].to_vec();
            routes.push(NameAddr::new(self.remote_target.clone()));
            (self.route_set[0].uri.clone(), routes)
        }
    }

    /// Where the next request goes: the first route, else the remote target, when it is
    /// an IP literal; `None` when a name has to be resolved by the driver.
    pub fn next_hop(&self) -> Option<SocketAddr> {
        let uri = self
            .route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target);
        uri_socket(uri)
    }

    fn build(&self, method: Method, seq: u32, via: Via) -> Request {
        let (uri, routes) = self.target_and_routes();
        let mut h = Headers::with_capacity(crate::message::BUILT_HEADERS);
        h.push(Header::Via(via));
        h.push(Header::MaxForwards(70));
        let mut from = self.local.clone();
        from.set_tag(&self.local_tag);
        h.push(Header::From(from));
        let mut to = self.remote.clone();
        to.set_tag(&self.remote_tag);
        h.push(Header::To(to));
        h.push(Header::CallId(self.call_id.clone()));
        h.push(Header::CSeq(CSeq {
            seq,
            method: method.clone(),
        }));
        for r in routes {
            h.push(Header::Route(r));
        }
        Request {
            method,
            uri,
            headers: h,
            body: Vec::new(),
        }
    }

    /// A new request in the dialog (BYE, re-INVITE, OPTIONS, ...): CSeq goes up by one.
    pub fn request(&mut self, method: Method, via: Via) -> Request {
        self.local_seq += 1;
        self.build(method, self.local_seq, via)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4).
    pub fn ack(&self, invite_seq: u32, via: Via) -> Request {
        self.build(Method::Ack, invite_seq, via)
    }
}

/// The socket address of a SIP URI whose host is an IP literal (`maddr` ignored).
pub fn uri_socket(uri: &Uri) -> Option<SocketAddr> {
    let u = uri.as_sip()?;
    let ip = u.host.ip()?;
    Some(SocketAddr::new(
        ip,
        u.port.unwrap_or(if u.secure { 5061 } else { 5060 }),
    ))
}
