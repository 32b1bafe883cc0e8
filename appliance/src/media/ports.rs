//! RTP/RTCP port pairs from the configured range: RTP on an even port, RTCP on the next.

use super::MediaError;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use tokio::net::UdpSocket;

/// The range legs take their ports from. Ports are handed out round-robin so a just-released
/// port is not reused at once (late packets of the old call would land in the new one); a pair
/// is free when both binds succeed, so nothing needs returning: dropping the sockets frees it.
#[derive(Debug)]
pub struct RtpPortRange {
    first: u16,
    last: u16,
    next: AtomicU16,
}

impl RtpPortRange {
    /// `first` must be even and below `last`.
    pub fn new(first: u16, last: u16) -> Result<RtpPortRange, MediaError> {
        let bad = |reason| MediaError::BadPortRange {
            first,
            last,
            reason,
        };
        if first % 2 != 0 {
            return Err(bad("the first port must be even (RTP even, RTCP odd)"));
        }
        if last <= first {
            return Err(bad("the last port must be above the first"));
        }
        if first == 0 {
            return Err(bad("port 0 is not a port"));
        }
        Ok(RtpPortRange {
            first,
            last,
            next: AtomicU16::new(first),
        })
    }

    /// How many RTP/RTCP pairs the range holds.
    pub fn pairs(&self) -> u16 {
        (self.last - self.first).div_ceil(2)
    }

    /// Binds a free RTP/RTCP pair on `ip`.
    pub async fn bind_pair(&self, ip: IpAddr) -> Result<(UdpSocket, UdpSocket), MediaError> {
        for _ in 0..self.pairs() {
            let port = self.take_next();
            let rtp_addr = SocketAddr::new(ip, port);
            let rtp = match UdpSocket::bind(rtp_addr).await {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(source) => {
                    return Err(MediaError::Bind {
                        addr: rtp_addr,
                        source,
                    })
                }
            };
            let rtcp_addr = SocketAddr::new(ip, port + 1);
            match UdpSocket::bind(rtcp_addr).await {
                Ok(rtcp) => return Ok((rtp, rtcp)),
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(source) => {
                    return Err(MediaError::Bind {
                        addr: rtcp_addr,
                        source,
                    })
                }
            }
        }
        Err(MediaError::PortsExhausted {
            first: self.first,
            last: self.last,
        })
    }

    fn take_next(&self) -> u16 {
        let span = self.pairs();
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                let i = (p - self.first) / 2;
                Some(self.first + ((i + 1) % span) * 2)
            })
            .unwrap_or(self.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    /// A free even port with its odd neighbour, found by asking the kernel.
    fn free_base() -> u16 {
        loop {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            if p % 2 == 0 && p < 65_000 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
                return p;
            }
        }
    }

    #[tokio::test]
    async fn pairs_are_even_odd_and_taken_ports_are_skipped() {
        let base = free_base();
        let range = RtpPortRange::new(base, base + 6).unwrap();
        assert_eq!(range.pairs(), 3);
        // Someone else holds the first pair's RTCP port.
        let _squatter = std::net::UdpSocket::bind(("127.0.0.1", base + 1)).unwrap();
        let (rtp, rtcp) = range.bind_pair(loopback()).await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        assert_eq!(port, base + 2);
        assert_eq!(rtcp.local_addr().unwrap().port(), port + 1);
    }

    #[tokio::test]
    async fn a_full_range_is_refused_by_name_and_freed_ports_come_back() {
        let base = free_base();
        let range = RtpPortRange::new(base, base + 2).unwrap();
        let held = range.bind_pair(loopback()).await.unwrap();
        let err = range.bind_pair(loopback()).await.unwrap_err();
        assert!(matches!(err, MediaError::PortsExhausted { .. }), "{err}");
        drop(held);
        assert!(range.bind_pair(loopback()).await.is_ok());
    }

    #[test]
    fn odd_or_reversed_ranges_are_refused() {
        assert!(RtpPortRange::new(10_001, 10_100).is_err());
        assert!(RtpPortRange::new(10_000, 10_000).is_err());
        assert!(RtpPortRange::new(0, 10).is_err());
    }
}
