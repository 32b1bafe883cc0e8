//! RTCP (RFC 3550 §6): sender and receiver reports, SDES CNAME and BYE, written and parsed by
//! us, and the per-leg reporting session that turns them into loss, jitter and round-trip time.
//!
//! Sans-IO: [`RtcpSession::handle_rtcp`] takes a received compound packet with its arrival
//! time, [`RtcpSession::poll_report`] gives the next compound packet when one is due. Wall
//! time for NTP timestamps comes from an [`NtpClock`] the driver builds once.

use super::receive::{ReceptionReport, SourceState};
use super::{RtpError, CLOCK_RATE};
use std::time::{Duration, Instant};

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Maps the monotonic clock onto NTP wall time, from one reading of the system clock.
#[derive(Debug, Clone, Copy)]
pub struct NtpClock {
    base: Instant,
    base_unix_micros: u64,
}

impl NtpClock {
    /// `base` and the Unix time in microseconds read at the same moment.
    pub fn new(base: Instant, base_unix_micros: u64) -> NtpClock {
        NtpClock {
            base,
            base_unix_micros,
        }
    }

    /// The 64-bit NTP timestamp at `now`.
    pub fn ntp(&self, now: Instant) -> u64 {
        let micros =
            self.base_unix_micros + now.saturating_duration_since(self.base).as_micros() as u64;
        let secs = micros / 1_000_000 + NTP_UNIX_OFFSET;
        let frac = ((micros % 1_000_000) << 32) / 1_000_000;
        (secs << 32) | frac
    }
}

/// One report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub reception: ReceptionReport,
    /// Middle 32 bits of the NTP time of the last SR from that source, 0 if none.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// The parts of an RTCP compound packet we understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_timestamp: u32,
        packet_count: u32,
        octet_count: u32,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    /// SDES with each source's CNAME.
    SourceDescription(Vec<(u32, String)>),
    Bye(Vec<u32>),
    /// Another packet type (APP, XR, feedback), skipped.
    Other(u8),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_blocks(body: &[u8], count: usize) -> Result<Vec<ReportBlock>, RtpError> {
    if body.len() < count * 24 {
        return Err(RtpError::RtcpTruncated);
    }
    Ok((0..count)
        .map(|i| {
            let b = &body[i * 24..];
            // 24-bit two's complement.
            let lost = (be32(b, 4) & 0x00FF_FFFF) as i32;
            let lost = if lost & 0x80_0000 != 0 {
                lost - 0x100_0000
            } else {
                lost
            };
            ReportBlock {
                reception: ReceptionReport {
                    ssrc: be32(b, 0),
                    fraction_lost: b[4],
                    cumulative_lost: lost,
                    extended_highest_seq: be32(b, 8),
                    jitter: be32(b, 12),
                },
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect())
}

/// Parses a compound RTCP packet; the first must be an SR or RR (RFC 3550 §6.1).
pub fn parse_compound(bytes: &[u8]) -> Result<Vec<RtcpPacket>, RtpError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes.len() - at < 4 {
            return Err(RtpError::RtcpTruncated);
        }
        let h = &bytes[at..];
        if h[0] >> 6 != 2 {
            return Err(RtpError::BadVersion(h[0] >> 6));
        }
        let count = usize::from(h[0] & 0x1F);
        let pt = h[1];
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        if h.len() < len {
            return Err(RtpError::RtcpTruncated);
        }
        let body = &h[4..len];
        if out.is_empty() && pt != PT_SR && pt != PT_RR {
            return Err(RtpError::RtcpNotCompound(pt));
        }
        let packet = match pt {
            PT_SR => {
                if body.len() < 24 {
                    return Err(RtpError::RtcpTruncated);
                }
                RtcpPacket::SenderReport {
                    ssrc: be32(body, 0),
                    ntp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                    rtp_timestamp: be32(body, 12),
                    packet_count: be32(body, 16),
                    octet_count: be32(body, 20),
                    reports: parse_blocks(&body[24..], count)?,
                }
            }
            PT_RR => {
                if body.len() < 4 {
                    return Err(RtpError::RtcpTruncated);
                }
                RtcpPacket::ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: parse_blocks(&body[4..], count)?,
                }
            }
            PT_SDES => RtcpPacket::SourceDescription(parse_sdes(body, count)),
            PT_BYE => RtcpPacket::Bye(
                (0..count)
                    .filter(|i| body.len() >= i * 4 + 4)
                    .map(|i| be32(body, i * 4))
                    .collect(),
            ),
            other => RtcpPacket::Other(other),
        };
        out.push(packet);
        at += len;
    }
    if out.is_empty() {
        return Err(RtpError::RtcpTruncated);
    }
    Ok(out)
}

fn parse_sdes(body: &[u8], count: usize) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    for _ in 0..count {
        if body.len() < at + 4 {
            break;
        }
        let ssrc = be32(body, at);
        at += 4;
        let mut cname = None;
        while at < body.len() && body[at] != 0 {
            let kind = body[at];
            let len = usize::from(*body.get(at + 1).unwrap_or(&0));
            let Some(text) = body.get(at + 2..at + 2 + len) else {
                return out;
            };
            if kind == 1 {
                cname = Some(String::from_utf8_lossy(text).into_owned());
            }
            at += 2 + len;
        }
        // Skip the terminating null(s) to the next 32-bit boundary.
        at = (at + 4) & !3;
        if let Some(c) = cname {
            out.push((ssrc, c));
        }
    }
    out
}

fn header(out: &mut Vec<u8>, count: usize, pt: u8, body_len: usize) {
    out.push(0x80 | (count as u8 & 0x1F));
    out.push(pt);
    out.extend_from_slice(&((body_len / 4) as u16).to_be_bytes());
}

fn write_blocks(out: &mut Vec<u8>, blocks: &[ReportBlock]) {
    for b in blocks {
        let r = &b.reception;
        out.extend_from_slice(&r.ssrc.to_be_bytes());
        let lost = (r.cumulative_lost as u32) & 0x00FF_FFFF;
        out.extend_from_slice(&((u32::from(r.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&r.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&r.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
}

/// Writes packets as one compound packet (the caller puts an SR or RR first).
pub fn write_compound(packets: &[RtcpPacket]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        match p {
            RtcpPacket::SenderReport {
                ssrc,
                ntp,
                rtp_timestamp,
                packet_count,
                octet_count,
                reports,
            } => {
                header(&mut out, reports.len(), PT_SR, 24 + 24 * reports.len());
                out.extend_from_slice(&ssrc.to_be_bytes());
                out.extend_from_slice(&ntp.to_be_bytes());
                out.extend_from_slice(&rtp_timestamp.to_be_bytes());
                out.extend_from_slice(&packet_count.to_be_bytes());
                out.extend_from_slice(&octet_count.to_be_bytes());
                write_blocks(&mut out, reports);
            }
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                header(&mut out, reports.len(), PT_RR, 4 + 24 * reports.len());
                out.extend_from_slice(&ssrc.to_be_bytes());
                write_blocks(&mut out, reports);
            }
            RtcpPacket::SourceDescription(items) => {
                let mut body = Vec::new();
                for (ssrc, cname) in items {
                    body.extend_from_slice(&ssrc.to_be_bytes());
                    let text = &cname.as_bytes()[..cname.len().min(255)];
                    body.push(1);
                    body.push(text.len() as u8);
                    body.extend_from_slice(text);
                    // At least one null octet, then pad to 32 bits.
                    body.push(0);
                    while body.len() % 4 != 0 {
                        body.push(0);
                    }
                }
                header(&mut out, items.len(), PT_SDES, body.len());
                out.extend(body);
            }
            RtcpPacket::Bye(ssrcs) => {
                header(&mut out, ssrcs.len(), PT_BYE, 4 * ssrcs.len());
                for s in ssrcs {
                    out.extend_from_slice(&s.to_be_bytes());
                }
            }
            RtcpPacket::Other(_) => {}
        }
    }
    out
}

/// What we are sending, for the SR's sender-info section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub packets: u32,
    pub octets: u32,
    /// Our RTP timestamp corresponding to the report's time.
    pub rtp_timestamp: u32,
}

/// What the far end tells us about the stream we send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteReception {
    /// Share of our packets it lost in its last interval, 0–1.
    pub fraction_lost: f64,
    pub cumulative_lost: i32,
    pub jitter_ms: f64,
    /// Round trip from its last report block about us, when it echoed one of our SRs.
    pub round_trip: Option<Duration>,
}

/// RTCP reporting for one leg.
#[derive(Debug)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    clock: NtpClock,
    interval: Duration,
    next_due: Option<Instant>,
    /// Middle 32 bits of the peer's last SR NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    remote: Option<RemoteReception>,
    /// Pseudo-random state for interval spreading (deterministic per SSRC).
    spread: u32,
}

impl RtcpSession {
    /// A session for our `ssrc`, reporting about every `interval` (RFC 3550 suggests 5 s).
    pub fn new(ssrc: u32, cname: &str, clock: NtpClock, interval: Duration) -> RtcpSession {
        RtcpSession {
            ssrc,
            cname: cname.to_owned(),
            clock,
            interval,
            next_due: None,
            last_sr: None,
            remote: None,
            spread: ssrc | 1,
        }
    }

    /// When [`Self::poll_report`] next has something; `None` before the first call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_due
    }

    /// Between 0.5 and 1.5 times the interval (RFC 3550 §6.3.1), so legs do not synchronise.
    fn next_interval(&mut self) -> Duration {
        self.spread = self
            .spread
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let factor = 0.5 + f64::from(self.spread >> 22) / 1024.0;
        self.interval.mul_f64(factor)
    }

    /// The next compound report if one is due at `now`: an SR when we are sending (`sender`),
    /// else an RR, with a report block about `source` if it has sent anything, and our CNAME.
    pub fn poll_report(
        &mut self,
        now: Instant,
        source: &mut SourceState,
        sender: Option<SenderInfo>,
    ) -> Option<Vec<u8>> {
        match self.next_due {
            None => {
                // The first report goes after half an interval.
                self.next_due = Some(now + self.interval / 2);
                return None;
            }
            Some(due) if now < due => return None,
            Some(_) => {}
        }
        let next = self.next_interval();
        self.next_due = Some(now + next);
        let reports: Vec<ReportBlock> = source
            .take_reception_report()
            .map(|reception| {
                let (last_sr, delay) = match self.last_sr {
                    Some((mid, at)) => {
                        let d = now.saturating_duration_since(at);
                        (mid, (d.as_micros() as u64 * 65_536 / 1_000_000) as u32)
                    }
                    None => (0, 0),
                };
                ReportBlock {
                    reception,
                    last_sr,
                    delay_since_last_sr: delay,
                }
            })
            .into_iter()
            .collect();
        let first = match sender {
            Some(s) => RtcpPacket::SenderReport {
                ssrc: self.ssrc,
                ntp: self.clock.ntp(now),
                rtp_timestamp: s.rtp_timestamp,
                packet_count: s.packets,
                octet_count: s.octets,
                reports,
            },
            None => RtcpPacket::ReceiverReport {
                ssrc: self.ssrc,
                reports,
            },
        };
        Some(write_compound(&[
            first,
            RtcpPacket::SourceDescription(vec![(self.ssrc, self.cname.clone())]),
        ]))
    }

    /// A BYE for when the leg ends.
    pub fn bye(&self, source: &mut SourceState) -> Vec<u8> {
        let reports = source
            .take_reception_report()
            .map(|reception| ReportBlock {
                reception,
                last_sr: 0,
                delay_since_last_sr: 0,
            })
            .into_iter()
            .collect();
        write_compound(&[
            RtcpPacket::ReceiverReport {
                ssrc: self.ssrc,
                reports,
            },
            RtcpPacket::SourceDescription(vec![(self.ssrc, self.cname.clone())]),
            RtcpPacket::Bye(vec![self.ssrc]),
        ])
    }

    /// Takes in a compound packet that arrived at `now`.
    pub fn handle_rtcp(&mut self, now: Instant, bytes: &[u8]) -> Result<Vec<RtcpPacket>, RtpError> {
        let packets = parse_compound(bytes)?;
        for p in &packets {
            let blocks = match p {
                RtcpPacket::SenderReport { ntp, reports, .. } => {
                    self.last_sr = Some(((ntp >> 16) as u32, now));
                    reports
                }
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                _ => continue,
            };
            for b in blocks.iter().filter(|b| b.reception.ssrc == self.ssrc) {
                let round_trip = (b.last_sr != 0).then(|| {
                    let arrival = (self.clock.ntp(now) >> 16) as u32;
                    let rtt = arrival
                        .wrapping_sub(b.last_sr)
                        .wrapping_sub(b.delay_since_last_sr);
                    // A negative result (clock trouble) wraps to a huge value: discard it.
                    (rtt < 0x8000_0000)
                        .then(|| Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536))
                });
                self.remote = Some(RemoteReception {
                    fraction_lost: f64::from(b.reception.fraction_lost) / 256.0,
                    cumulative_lost: b.reception.cumulative_lost,
                    jitter_ms: f64::from(b.reception.jitter) * 1_000.0 / f64::from(CLOCK_RATE),
                    round_trip: round_trip
                        .flatten()
                        .or(self.remote.and_then(|r| r.round_trip)),
                });
            }
        }
        Ok(packets)
    }

    /// The latest report the far end sent about our stream.
    pub fn remote_reception(&self) -> Option<RemoteReception> {
        self.remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{RtpPacket, RtpSender};

    #[test]
    fn ntp_time_of_the_unix_epoch_is_the_1970_offset() {
        let t = Instant::now();
        let c = NtpClock::new(t, 0);
        assert_eq!(c.ntp(t), NTP_UNIX_OFFSET << 32);
        assert_eq!(
            c.ntp(t + Duration::from_millis(500)),
            (NTP_UNIX_OFFSET << 32) | 0x8000_0000
        );
    }

    #[test]
    fn a_compound_packet_survives_write_then_parse() {
        let block = ReportBlock {
            reception: ReceptionReport {
                ssrc: 9,
                fraction_lost: 25,
                cumulative_lost: -3,
                extended_highest_seq: 0x0001_0005,
                jitter: 40,
            },
            last_sr: 0xABCD_1234,
            delay_since_last_sr: 65_536,
        };
        let packets = vec![
            RtcpPacket::SenderReport {
                ssrc: 1,
                ntp: 0x1122_3344_5566_7788,
                rtp_timestamp: 160,
                packet_count: 50,
                octet_count: 8_000,
                reports: vec![block],
            },
            RtcpPacket::SourceDescription(vec![(1, "leg-1@callgate".into())]),
            RtcpPacket::Bye(vec![1]),
        ];
        let bytes = write_compound(&packets);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(parse_compound(&bytes).unwrap(), packets);
    }

    #[test]
    fn malformed_compounds_are_refused_by_name() {
        let sdes_first = write_compound(&[RtcpPacket::SourceDescription(vec![(1, "x".into())])]);
        assert_eq!(
            parse_compound(&sdes_first),
            Err(RtpError::RtcpNotCompound(202))
        );
        let rr = write_compound(&[RtcpPacket::ReceiverReport {
            ssrc: 1,
            reports: vec![],
        }]);
        assert_eq!(parse_compound(&rr[..6]), Err(RtpError::RtcpTruncated));
        let mut bad = rr.clone();
        bad[0] = 0x40;
        assert_eq!(parse_compound(&bad), Err(RtpError::BadVersion(1)));
        assert_eq!(parse_compound(&[]), Err(RtpError::RtcpTruncated));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_compound(&bytes);
        }
    }

    /// Two legs exchanging RTP and RTCP over a link with 30 ms one-way delay, where every
    /// tenth packet from A to B is lost. A learns its loss and the round trip from B's reports.
    #[test]
    fn reports_carry_loss_and_round_trip_between_two_legs() {
        let t0 = Instant::now();
        let clock_a = NtpClock::new(t0, 1_700_000_000_000_000);
        // B's wall clock is 3 s off: the round trip must not depend on it.
        let clock_b = NtpClock::new(t0, 1_700_000_003_000_000);
        let mut a = RtcpSession::new(0xA, "a@cg", clock_a, Duration::from_secs(5));
        let mut b = RtcpSession::new(0xB, "b@cg", clock_b, Duration::from_secs(5));
        let mut a_tx = RtpSender::new(0xA, 0, 0);
        let mut b_tx = RtpSender::new(0xB, 0, 0);
        let (mut a_rx, mut b_rx) = (SourceState::new(), SourceState::new());
        let delay = Duration::from_millis(30);
        // In flight: (arrival time, to_a, bytes or packet).
        let mut rtcp_in_flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
        let mut rtp_in_flight: Vec<(Instant, bool, RtpPacket)> = Vec::new();
        for ms in (0..30_000u64).step_by(20) {
            let now = t0 + Duration::from_millis(ms);
            let pa = a_tx.audio(0, vec![0xFF; 160]);
            if pa.sequence % 10 != 9 {
                rtp_in_flight.push((now + delay, false, pa));
            }
            rtp_in_flight.push((now + delay, true, b_tx.audio(0, vec![0xFF; 160])));
            let info = |tx: &RtpSender| SenderInfo {
                packets: tx.packets_sent(),
                octets: tx.octets_sent(),
                rtp_timestamp: tx.next_timestamp(),
            };
            if let Some(r) = a.poll_report(now, &mut a_rx, Some(info(&a_tx))) {
                rtcp_in_flight.push((now + delay, false, r));
            }
            if let Some(r) = b.poll_report(now, &mut b_rx, Some(info(&b_tx))) {
                rtcp_in_flight.push((now + delay, true, r));
            }
            for (at, to_a, p) in rtp_in_flight.iter().filter(|(at, ..)| *at <= now) {
                if *to_a {
                    a_rx.handle_packet(*at, p);
                } else {
                    b_rx.handle_packet(*at, p);
                }
            }
            rtp_in_flight.retain(|(at, ..)| *at > now);
            for (at, to_a, bytes) in rtcp_in_flight.iter().filter(|(at, ..)| *at <= now) {
                if *to_a {
                    a.handle_rtcp(*at, bytes).unwrap();
                } else {
                    b.handle_rtcp(*at, bytes).unwrap();
                }
            }
            rtcp_in_flight.retain(|(at, ..)| *at > now);
        }
        let seen_by_b = a.remote_reception().expect("B reported on A's stream");
        assert!(
            (seen_by_b.fraction_lost - 0.1).abs() < 0.01,
            "{seen_by_b:?}"
        );
        let rtt = seen_by_b.round_trip.expect("a round trip").as_secs_f64() * 1_000.0;
        // Exactly the 60 ms of the link, up to the 1/65536 s resolution of the fields.
        assert!((59.9..=60.1).contains(&rtt), "rtt {rtt} ms");
        let bye = parse_compound(&a.bye(&mut a_rx)).unwrap();
        assert_eq!(bye.last(), Some(&RtcpPacket::Bye(vec![0xA])));
        let seen_by_a = b.remote_reception().unwrap();
        assert_eq!(seen_by_a.fraction_lost, 0.0);
        assert_eq!(seen_by_a.cumulative_lost, 0);
    }
}
