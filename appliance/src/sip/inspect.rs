//! `callgate-appliance sip parse FILE`: describes one captured SIP message for a
//! technician, or says precisely why it is not valid and what the box would answer.

use callgate_sip::header::{Contact, Header};
use callgate_sip::{parse_datagram, respond_to_invalid, Incoming, SipMessage};
use std::fmt::Write;

/// The verdict on one message: whether it is valid, and the text to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The message parsed (or was a keep-alive).
    pub valid: bool,
    /// Human-readable description of the fields, or of the error.
    pub report: String,
}

/// Parses `bytes` as one datagram and describes it.
pub fn inspect(bytes: &[u8]) -> Inspection {
    let mut out = String::new();
    match parse_datagram(bytes) {
        Ok(Incoming::KeepAlive) => {
            out.push_str("valid: CRLF keep-alive\n");
            Inspection {
                valid: true,
                report: out,
            }
        }
        Ok(Incoming::Message(m)) => {
            describe(&m, &mut out);
            Inspection {
                valid: true,
                report: out,
            }
        }
        Err(e) => {
            let _ = writeln!(out, "invalid: {e}");
            match respond_to_invalid(bytes, &e, "inspect") {
                Some(resp) => {
                    let status_line = String::from_utf8_lossy(&resp)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = writeln!(out, "answer: {status_line}");
                }
                None => out.push_str("answer: none (the message is dropped)\n"),
            }
            Inspection {
                valid: false,
                report: out,
            }
        }
    }
}

fn describe(m: &SipMessage, out: &mut String) {
    match m {
        SipMessage::Request(r) => {
            let _ = writeln!(out, "valid: request");
            let _ = writeln!(out, "method: {}", r.method);
            let _ = writeln!(out, "request-uri: {}", r.uri);
        }
        SipMessage::Response(r) => {
            let _ = writeln!(out, "valid: response");
            let _ = writeln!(out, "status: {} {}", r.status, r.reason);
        }
    }
    let h = m.headers();
    if let Some(c) = h.call_id() {
        let _ = writeln!(out, "call-id: {c}");
    }
    if let Some(c) = h.cseq() {
        let _ = writeln!(out, "cseq: {} {}", c.seq, c.method);
    }
    for (label, a) in [("from", h.from()), ("to", h.to())] {
        if let Some(a) = a {
            let _ = writeln!(
                out,
                "{label}: {} (tag {})",
                a.uri,
                a.tag().unwrap_or("none")
            );
        }
    }
    for (i, v) in h.vias().enumerate() {
        let _ = writeln!(
            out,
            "via[{i}]: {} {}{} branch {}",
            v.transport,
            v.host,
            v.port.map(|p| format!(":{p}")).unwrap_or_default(),
            v.branch().unwrap_or("none")
        );
    }
    for c in h.contacts() {
        match c {
            Contact::Wildcard => out.push_str("contact: *\n"),
            Contact::Address(a) => {
                let _ = writeln!(out, "contact: {}", a.uri);
            }
        }
    }
    let _ = writeln!(out, "headers: {}", h.0.len());
    for hdr in &h.0 {
        let kind = if matches!(hdr, Header::Other(_)) {
            " (kept as received)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {}: {}{kind}", hdr.name(), hdr.value_text());
    }
    let body = m.body();
    let _ = writeln!(
        out,
        "body: {} bytes{}",
        body.len(),
        h.content_type()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default()
    );
}
