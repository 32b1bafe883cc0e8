//! The scoped SIP trace: every message to or from one trunk (by its address), or of one
//! call (by its Call-ID), logged in full for a while, and nothing else — the technician's
//! "trace this trunk" and "trace this call" on a box carrying other calls.
//!
//! Owns: the process-wide armed scope ([`arm`], [`disarm`], [`armed`]) and the matching
//! ([`TraceScope::matches`]). Every endpoint of the process consults it for each message it
//! sends or receives ([`observe`]); while nothing is armed that costs one atomic load. A
//! matching message is logged at `info` under the target [`TRACE_TARGET`], so the trace needs
//! no change of the log filter. Must not: parse SIP beyond finding the Call-ID header, or
//! keep messages (the log does).

use callgate_sip::header::Transport;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The log target of traced messages.
pub const TRACE_TARGET: &str = "callgate_sip_trace";

/// One address a trunk's messages come from or go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMatch {
    /// The peer's IP address.
    pub ip: IpAddr,
    /// The port too, when the IP alone does not tell the trunk apart (another trunk shares
    /// it); `None` matches any port (carriers often send from a port other than the one they
    /// listen on).
    pub port: Option<u16>,
}

/// What is traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceScope {
    /// The messages exchanged with one trunk.
    Trunk {
        /// The trunk's name, logged with each message.
        name: String,
        /// Its addresses.
        peers: Vec<PeerMatch>,
    },
    /// The messages of one call: their Call-ID header equals this.
    Call(String),
}

impl TraceScope {
    /// Whether the message `bytes`, exchanged with `peer`, is in scope.
    pub fn matches(&self, peer: SocketAddr, bytes: &[u8]) -> bool {
        match self {
            TraceScope::Trunk { peers, .. } => peers
                .iter()
                .any(|p| p.ip == peer.ip() && p.port.is_none_or(|port| port == peer.port())),
            TraceScope::Call(id) => call_id(bytes).is_some_and(|found| found == id.as_bytes()),
        }
    }

    /// How the scope is named in the log and on the page.
    pub fn label(&self) -> String {
        match self {
            TraceScope::Trunk { name, .. } => format!("trunk {name}"),
            TraceScope::Call(id) => format!("call {id}"),
        }
    }
}

/// The value of a message's Call-ID header (`Call-ID:` or its compact form `i:`, any case,
/// surrounding white space trimmed), if it has one in its header section.
pub fn call_id(bytes: &[u8]) -> Option<&[u8]> {
    let mut lines = bytes.split(|&b| b == b'\n');
    lines.next()?; // the start line
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None; // end of the headers
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

struct Armed {
    scope: TraceScope,
    until: Instant,
}

static ANY_ARMED: AtomicBool = AtomicBool::new(false);
static ARMED: Mutex<Option<Armed>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Armed>> {
    ARMED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Traces `scope` until `until`, replacing any scope armed before.
pub fn arm(scope: TraceScope, until: Instant) {
    let mut armed = lock();
    *armed = Some(Armed { scope, until });
    ANY_ARMED.store(true, Ordering::Release);
}

/// Ends the trace; whether one was armed (and not yet over).
pub fn disarm() -> bool {
    let mut armed = lock();
    ANY_ARMED.store(false, Ordering::Release);
    armed.take().is_some_and(|a| a.until > Instant::now())
}

/// The armed scope and its end, while one runs.
pub fn armed() -> Option<(TraceScope, Instant)> {
    let armed = lock();
    armed
        .as_ref()
        .filter(|a| a.until > Instant::now())
        .map(|a| (a.scope.clone(), a.until))
}

/// Logs `bytes` in full if the armed scope takes it; called by the endpoints for every
/// message sent (`outbound`) or received.
pub(crate) fn observe(outbound: bool, transport: &Transport, peer: SocketAddr, bytes: &[u8]) {
    if !ANY_ARMED.load(Ordering::Acquire) {
        return;
    }
    let mut armed = lock();
    let Some(a) = armed.as_ref() else {
        return;
    };
    if a.until <= Instant::now() {
        *armed = None;
        ANY_ARMED.store(false, Ordering::Release);
        // Whoever armed it says when it ends (the web UI's timer logs "SIP trace ended" at
        // the end itself); this only notices it on the first message after.
        tracing::debug!("SIP trace scope expired; disarmed");
        return;
    }
    if !a.scope.matches(peer, bytes) {
        return;
    }
    let scope = a.scope.label();
    drop(armed);
    tracing::info!(
        target: TRACE_TARGET,
        %scope,
        direction = if outbound { "sent to" } else { "received from" },
        %peer,
        %transport,
        message = %String::from_utf8_lossy(bytes),
        "sip trace"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:1@b SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCall-ID: abc@h\r\n\r\nv=0\r\nCall-ID: body\r\n";

    #[test]
    fn the_call_id_is_found_in_full_and_compact_form_and_never_in_the_body() {
        assert_eq!(call_id(INVITE), Some(&b"abc@h"[..]));
        assert_eq!(
            call_id(b"SIP/2.0 200 OK\nv: x\ni:   xyz  \n\n"),
            Some(&b"xyz"[..]),
            "compact form, LF line ends, white space trimmed"
        );
        assert_eq!(
            call_id(b"BYE sip:x SIP/2.0\r\ncall-id:Q\r\n\r\n"),
            Some(&b"Q"[..])
        );
        assert_eq!(
            call_id(b"INVITE sip:1@b SIP/2.0\r\nTo: x\r\n\r\nCall-ID: in-body\r\n"),
            None
        );
        assert_eq!(call_id(b""), None);
    }

    #[test]
    fn a_trunk_scope_matches_its_ip_on_any_port_unless_a_port_is_given() {
        let scope = |port| TraceScope::Trunk {
            name: "carrier".into(),
            peers: vec![PeerMatch {
                ip: "192.0.2.1".parse().unwrap(),
                port,
            }],
        };
        let from = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(scope(None).matches(from("192.0.2.1:5060"), INVITE));
        assert!(scope(None).matches(from("192.0.2.1:40000"), INVITE));
        assert!(!scope(None).matches(from("192.0.2.2:5060"), INVITE));
        assert!(scope(Some(5060)).matches(from("192.0.2.1:5060"), INVITE));
        assert!(!scope(Some(5060)).matches(from("192.0.2.1:5080"), INVITE));
        let call = TraceScope::Call("abc@h".into());
        assert!(call.matches(from("192.0.2.9:1"), INVITE));
        assert!(!TraceScope::Call("abc".into()).matches(from("192.0.2.9:1"), INVITE));
    }

    #[test]
    fn an_armed_scope_ends_at_its_time_and_disarming_says_whether_one_ran() {
        let now = Instant::now();
        arm(
            TraceScope::Call("x".into()),
            now + std::time::Duration::from_secs(60),
        );
        assert_eq!(armed().map(|(s, _)| s), Some(TraceScope::Call("x".into())));
        assert!(disarm());
        assert!(!disarm());
        assert_eq!(armed(), None);
        arm(TraceScope::Call("y".into()), now);
        assert_eq!(armed(), None, "an expired scope is not reported");
        observe(
            false,
            &Transport::Udp,
            "127.0.0.1:5060".parse().unwrap(),
            INVITE,
        );
        assert!(
            !ANY_ARMED.load(Ordering::Acquire),
            "the first message after the end clears it"
        );
    }
}
