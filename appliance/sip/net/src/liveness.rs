//! Stream connection upkeep, sans-IO (time passed in, no sockets): RFC 5626 §4.4.1 CRLF
//! keep-alives on the connections we opened to trunks, closing idle inbound connections,
//! and a cap on inbound connections per source address. The driver ([`crate::endpoint`])
//! reports what happens on its connections and carries out the actions; this module
//! decides when.
//!
//! Pings: a connection we opened that has received nothing for `ping_interval` gets a
//! `CRLF CRLF` ping. A peer that has answered a ping with a pong on that connection has
//! shown it implements RFC 5626; from then on a ping left without a pong (or any other
//! traffic) for `pong_timeout` means the flow is dead and the connection is closed as
//! failed (so waiting transactions fail over at once). Peers that never pong are kept
//! alive by the pings but not judged by them (RFC 5626 keep-alives are optional for a
//! carrier). Inbound connections are never pinged: their owners keep them alive, and
//! one that carries nothing either way for `idle_timeout` is closed.
//!
//! This module must not touch sockets or the SIP cores.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The upkeep rules for stream (TCP/TLS) connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPolicy {
    /// Ping a connection we opened after this long without receiving anything; `None`
    /// sends no pings.
    pub ping_interval: Option<Duration>,
    /// How long a pong may take once the peer has shown it answers pings (RFC 5626: 10 s).
    pub pong_timeout: Duration,
    /// Close an inbound connection after this long without traffic either way; `None`
    /// keeps them until the peer closes.
    pub idle_timeout: Option<Duration>,
    /// Inbound connections allowed at once from one source IP address.
    pub max_per_source: usize,
}

impl Default for StreamPolicy {
    fn default() -> Self {
        StreamPolicy {
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            max_per_source: 16,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upkeep {
    /// Send a `CRLF CRLF` ping on the connection to this peer.
    Ping(SocketAddr),
    /// Close the connection: it carried nothing for the idle timeout (not an error).
    CloseIdle(SocketAddr),
    /// Close the connection: a ping went unanswered by a peer that answers pings (the
    /// flow failed; waiting transactions must be failed).
    CloseDead(SocketAddr),
}

#[derive(Debug)]
struct Flow {
    outbound: bool,
    /// Last time anything was received.
    received: Instant,
    /// Last time anything was sent or received.
    active: Instant,
    /// A ping awaiting its pong, sent at.
    ping_sent: Option<Instant>,
    /// The peer has answered a ping.
    pongs: bool,
}

impl Flow {
    fn deadline(&self, p: &StreamPolicy) -> Option<Instant> {
        if self.outbound {
            match self.ping_sent {
                Some(at) if self.pongs => Some(at + p.pong_timeout),
                // A peer that never ponged: ping again an interval after the last ping.
                Some(at) => p.ping_interval.map(|i| at + i),
                None => p.ping_interval.map(|i| self.received + i),
            }
        } else {
            p.idle_timeout.map(|i| self.active + i)
        }
    }
}

/// The upkeep state of an endpoint's stream connections.
#[derive(Debug)]
pub struct StreamUpkeep {
    policy: StreamPolicy,
    flows: HashMap<SocketAddr, Flow>,
}

impl StreamUpkeep {
    /// No connections yet.
    pub fn new(policy: StreamPolicy) -> StreamUpkeep {
        StreamUpkeep {
            policy,
            flows: HashMap::new(),
        }
    }

    /// A connection to `peer` opened (`outbound`: we made it).
    pub fn opened(&mut self, now: Instant, peer: SocketAddr, outbound: bool) {
        self.flows.insert(
            peer,
            Flow {
                outbound,
                received: now,
                active: now,
                ping_sent: None,
                pongs: false,
            },
        );
    }

    /// The connection to `peer` is gone.
    pub fn closed(&mut self, peer: SocketAddr) {
        self.flows.remove(&peer);
    }

    /// Something (a message, a ping) arrived from `peer`.
    pub fn received(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(f) = self.flows.get_mut(&peer) {
            f.received = now;
            f.active = now;
            f.ping_sent = None;
        }
    }

    /// A pong arrived from `peer`.
    pub fn pong(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(f) = self.flows.get_mut(&peer) {
            if f.ping_sent.is_some() {
                f.pongs = true;
            }
        }
        self.received(now, peer);
    }

    /// A message went out to `peer`.
    pub fn sent(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(f) = self.flows.get_mut(&peer) {
            f.active = now;
        }
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flows
            .values()
            .filter_map(|f| f.deadline(&self.policy))
            .min()
    }

    /// What is due at `now`; the connections to close are forgotten here.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Upkeep> {
        let mut out = Vec::new();
        let policy = self.policy;
        self.flows.retain(|peer, f| {
            let Some(due) = f.deadline(&policy) else {
                return true;
            };
            if due > now {
                return true;
            }
            if !f.outbound {
                out.push(Upkeep::CloseIdle(*peer));
                return false;
            }
            if f.ping_sent.is_some() && f.pongs {
                out.push(Upkeep::CloseDead(*peer));
                return false;
            }
            f.ping_sent = Some(now);
            out.push(Upkeep::Ping(*peer));
            true
        });
        out.sort_by_key(|u| match u {
            Upkeep::Ping(a) | Upkeep::CloseIdle(a) | Upkeep::CloseDead(a) => *a,
        });
        out
    }
}

/// Counts inbound connections per source address against the policy's cap.
#[derive(Debug, Default)]
pub struct SourceLimit {
    max: usize,
    open: HashMap<IpAddr, usize>,
}

/// An inbound connection refused by [`SourceLimit::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFromSource {
    /// The source address.
    pub source: IpAddr,
    /// Its connections already open (the cap).
    pub open: usize,
}

impl SourceLimit {
    /// At most `max` connections at once from one address.
    pub fn new(max: usize) -> SourceLimit {
        SourceLimit {
            max,
            open: HashMap::new(),
        }
    }

    /// Counts a new connection from `source`, or refuses it when the source is at the cap.
    pub fn admit(&mut self, source: IpAddr) -> Result<(), TooManyFromSource> {
        let n = self.open.entry(source).or_insert(0);
        if *n >= self.max {
            return Err(TooManyFromSource { source, open: *n });
        }
        *n += 1;
        Ok(())
    }

    /// A connection from `source` closed.
    pub fn release(&mut self, source: IpAddr) {
        if let Some(n) = self.open.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&source);
            }
        }
    }

    /// Connections open from `source`.
    pub fn open_from(&self, source: IpAddr) -> usize {
        self.open.get(&source).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> StreamPolicy {
        StreamPolicy {
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            max_per_source: 2,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn an_idle_outbound_connection_is_pinged_each_interval_after_the_last_traffic() {
        let t0 = Instant::now();
        let mut u = StreamUpkeep::new(policy());
        u.opened(t0, addr(5060), true);
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert!(u.handle_timeout(t0 + Duration::from_secs(29)).is_empty());
        // Traffic from the peer pushes the ping back; our own sending does not.
        u.received(t0 + Duration::from_secs(20), addr(5060));
        u.sent(t0 + Duration::from_secs(40), addr(5060));
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(50)));
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(50)),
            vec![Upkeep::Ping(addr(5060))]
        );
        // A peer that never pongs is pinged again an interval later, never closed.
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(80)));
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(80)),
            vec![Upkeep::Ping(addr(5060))]
        );
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(110)),
            vec![Upkeep::Ping(addr(5060))]
        );
    }

    #[test]
    fn a_peer_that_answered_pings_and_stops_is_closed_as_dead_after_the_pong_timeout() {
        let t0 = Instant::now();
        let mut u = StreamUpkeep::new(policy());
        u.opened(t0, addr(5061), true);
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(30)),
            vec![Upkeep::Ping(addr(5061))]
        );
        u.pong(t0 + Duration::from_secs(31), addr(5061));
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(61)));
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(61)),
            vec![Upkeep::Ping(addr(5061))]
        );
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(71)));
        assert!(u.handle_timeout(t0 + Duration::from_secs(70)).is_empty());
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(71)),
            vec![Upkeep::CloseDead(addr(5061))]
        );
        assert_eq!(u.poll_timeout(), None);
    }

    #[test]
    fn a_message_answers_a_pending_ping_as_well_as_a_pong() {
        let t0 = Instant::now();
        let mut u = StreamUpkeep::new(policy());
        u.opened(t0, addr(5061), true);
        u.handle_timeout(t0 + Duration::from_secs(30));
        u.pong(t0 + Duration::from_secs(30), addr(5061));
        u.handle_timeout(t0 + Duration::from_secs(60));
        u.received(t0 + Duration::from_secs(65), addr(5061));
        assert!(u.handle_timeout(t0 + Duration::from_secs(70)).is_empty());
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(95)));
    }

    #[test]
    fn an_inbound_connection_is_closed_after_the_idle_timeout_without_traffic_either_way() {
        let t0 = Instant::now();
        let mut u = StreamUpkeep::new(policy());
        u.opened(t0, addr(40000), false);
        assert_eq!(u.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        u.sent(t0 + Duration::from_secs(100), addr(40000));
        assert!(u.handle_timeout(t0 + Duration::from_secs(300)).is_empty());
        u.received(t0 + Duration::from_secs(200), addr(40000));
        assert!(u.handle_timeout(t0 + Duration::from_secs(499)).is_empty());
        assert_eq!(
            u.handle_timeout(t0 + Duration::from_secs(500)),
            vec![Upkeep::CloseIdle(addr(40000))]
        );
        assert_eq!(u.poll_timeout(), None);
    }

    #[test]
    fn without_intervals_nothing_is_ever_due() {
        let t0 = Instant::now();
        let mut u = StreamUpkeep::new(StreamPolicy {
            ping_interval: None,
            idle_timeout: None,
            ..policy()
        });
        u.opened(t0, addr(1), true);
        u.opened(t0, addr(2), false);
        assert_eq!(u.poll_timeout(), None);
        assert!(u
            .handle_timeout(t0 + Duration::from_secs(86_400))
            .is_empty());
    }

    #[test]
    fn a_closed_connection_is_forgotten() {
        let t0 = Instant::now();
        let mut u = StreamUpkeep::new(policy());
        u.opened(t0, addr(1), true);
        u.closed(addr(1));
        assert_eq!(u.poll_timeout(), None);
    }

    #[test]
    fn inbound_connections_are_capped_per_source_and_freed_on_close() {
        let mut l = SourceLimit::new(2);
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Err(TooManyFromSource { source: a, open: 2 }));
        assert_eq!(l.admit(b), Ok(()), "another source is not affected");
        l.release(a);
        assert_eq!(l.open_from(a), 1);
        assert_eq!(l.admit(a), Ok(()));
        l.release(b);
        l.release(b);
        assert_eq!(l.open_from(b), 0);
    }
}
