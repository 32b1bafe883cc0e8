//! Symmetric RTP with latching (RFC 4961 style) for phones and carriers behind NAT: we send to
//! wherever the peer's media actually comes from, not only to the address its SDP gave.
//!
//! Rules: until the first valid packet we send to the signalled address; the first packet with
//! a negotiated payload type latches the leg to its source address. After that, packets from
//! other addresses are refused, unless the latched source has been silent for
//! [`RELATCH_AFTER`] and the newcomer sends a valid packet (NAT rebinding, phone roaming).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Silence after which another source address may take the leg over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// What the latch decided about one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched address: accept.
    Accept,
    /// Accepted, and the leg now sends to this packet's source.
    Latched(SocketAddr),
    /// From another address while the latched source is live: drop.
    Refuse,
}

/// The latching state of one leg.
#[derive(Debug, Clone)]
pub struct SymmetricLatch {
    signalled: Option<SocketAddr>,
    latched: Option<(SocketAddr, Instant)>,
}

impl SymmetricLatch {
    /// A leg whose SDP gave `signalled` (or nothing yet, e.g. `c=0.0.0.0`).
    pub fn new(signalled: Option<SocketAddr>) -> SymmetricLatch {
        SymmetricLatch {
            signalled,
            latched: None,
        }
    }

    /// A new SDP answer or re-INVITE moved the peer; keeps an existing latch.
    pub fn set_signalled(&mut self, signalled: Option<SocketAddr>) {
        self.signalled = signalled;
    }

    /// Where our packets go: the latched address, else the signalled one.
    pub fn send_to(&self) -> Option<SocketAddr> {
        self.latched.map(|(a, _)| a).or(self.signalled)
    }

    /// Decides about a packet from `from` at `now`; `valid` says whether it parsed as RTP
    /// with a payload type negotiated for this leg.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, valid: bool) -> LatchDecision {
        match self.latched {
            Some((addr, _)) if addr == from => {
                self.latched = Some((addr, now));
                LatchDecision::Accept
            }
            Some((_, last)) if now.saturating_duration_since(last) < RELATCH_AFTER || !valid => {
                LatchDecision::Refuse
            }
            _ if !valid => LatchDecision::Refuse,
            _ => {
                self.latched = Some((from, now));
                LatchDecision::Latched(from)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn media_from_behind_nat_redirects_our_sending() {
        let t0 = Instant::now();
        let mut l = SymmetricLatch::new(Some(addr("192.168.1.20:4000")));
        assert_eq!(l.send_to(), Some(addr("192.168.1.20:4000")));
        let nat = addr("203.0.113.9:61000");
        assert_eq!(l.handle_packet(t0, nat, true), LatchDecision::Latched(nat));
        assert_eq!(l.send_to(), Some(nat));
        assert_eq!(l.handle_packet(t0, nat, true), LatchDecision::Accept);
    }

    #[test]
    fn garbage_does_not_latch_and_a_second_source_is_refused_while_the_first_talks() {
        let t0 = Instant::now();
        let mut l = SymmetricLatch::new(Some(addr("10.0.0.1:4000")));
        assert_eq!(
            l.handle_packet(t0, addr("10.9.9.9:1"), false),
            LatchDecision::Refuse
        );
        assert_eq!(l.send_to(), Some(addr("10.0.0.1:4000")));
        let peer = addr("10.0.0.1:4000");
        l.handle_packet(t0, peer, true);
        let later = t0 + Duration::from_millis(500);
        assert_eq!(
            l.handle_packet(later, addr("10.6.6.6:5"), true),
            LatchDecision::Refuse
        );
        assert_eq!(l.send_to(), Some(peer));
    }

    #[test]
    fn a_new_address_takes_over_after_the_old_one_falls_silent() {
        let t0 = Instant::now();
        let mut l = SymmetricLatch::new(None);
        let old = addr("10.0.0.1:4000");
        let new = addr("10.0.0.1:4002");
        l.handle_packet(t0, old, true);
        let later = t0 + RELATCH_AFTER + Duration::from_millis(1);
        assert_eq!(l.handle_packet(later, new, false), LatchDecision::Refuse);
        assert_eq!(
            l.handle_packet(later, new, true),
            LatchDecision::Latched(new)
        );
        assert_eq!(l.send_to(), Some(new));
    }
}
