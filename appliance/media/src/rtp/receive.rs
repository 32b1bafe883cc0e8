//! Receive-side state of one leg's incoming stream: RFC 3550 appendix A.1 sequence handling
//! (extended sequence numbers across wrap, large jumps confirmed by a second packet), a
//! duplicate window, SSRC changes, and the A.8 interarrival jitter estimate.

use super::{RtpPacket, CLOCK_RATE};
use std::time::Instant;

/// A jump of at least this many sequence numbers forward is a restart, not loss (RFC 3550).
const MAX_DROPOUT: u16 = 3_000;
/// A packet this far behind the highest is from before a restart, not reordered.
const MAX_MISORDER: u16 = 100;
/// How far back duplicates are recognised, in sequence numbers.
const DUPLICATE_WINDOW: u64 = 128;

/// What the receiver made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    /// New media: pass it on. `ssrc_changed` is set on the first packet of a new source.
    Accepted {
        extended_seq: u64,
        ssrc_changed: bool,
    },
    /// Seen already (same sequence number within the window): drop it.
    Duplicate,
    /// Older than the duplicate window: cannot be told from a duplicate, drop it.
    TooOld,
    /// A large sequence jump; held until the next packet confirms the restart (RFC 3550 A.1).
    UnconfirmedJump,
}

/// Counters for quality reporting and RTCP receiver reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceiveStats {
    /// The current source, if any packet arrived.
    pub ssrc: Option<u32>,
    /// Distinct packets accepted from the current source.
    pub received: u64,
    /// Packets the current source's sequence numbers say were sent.
    pub expected: u64,
    /// `expected - received`, negative when duplicates outside the window were counted twice.
    pub lost: i64,
    pub duplicates: u64,
    pub too_old: u64,
    /// Sources seen after the first.
    pub ssrc_changes: u64,
    /// Sequence restarts within one source.
    pub restarts: u64,
    /// RFC 3550 A.8 interarrival jitter, in milliseconds.
    pub jitter_ms: f64,
}

/// The receive state of one incoming stream. Create one per leg.
#[derive(Debug)]
pub struct SourceState {
    epoch: Option<Instant>,
    ssrc: Option<u32>,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: Option<u16>,
    /// Bit `i` set means extended sequence `highest - i` was received.
    seen: u128,
    stats: ReceiveStats,
    last_transit: Option<i64>,
    jitter: f64,
    /// Expected and received counts at the last RTCP report (RFC 3550 A.3).
    expected_prior: u64,
    received_prior: u64,
}

/// The reception figures of one RTCP report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionReport {
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start, clamped to the 24-bit signed field.
    pub cumulative_lost: i32,
    /// Cycles in the high 16 bits, highest sequence number in the low 16.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

impl Default for SourceState {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceState {
    /// A receiver that has seen nothing yet.
    pub fn new() -> SourceState {
        SourceState {
            epoch: None,
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            seen: 0,
            stats: ReceiveStats::default(),
            last_transit: None,
            jitter: 0.0,
            expected_prior: 0,
            received_prior: 0,
        }
    }

    /// The figures for the next RTCP report block, starting a new reporting interval.
    /// `None` before any packet arrived.
    pub fn take_reception_report(&mut self) -> Option<ReceptionReport> {
        let ssrc = self.ssrc?;
        let st = self.stats();
        let expected_interval = st.expected.saturating_sub(self.expected_prior);
        let received_interval = self.stats.received.saturating_sub(self.received_prior);
        self.expected_prior = st.expected;
        self.received_prior = self.stats.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        Some(ReceptionReport {
            ssrc,
            fraction_lost,
            cumulative_lost: st.lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: self.highest() as u32,
            jitter: self.jitter as u32,
        })
    }

    fn highest(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    fn restart(&mut self, seq: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u64::from(seq);
        self.bad_seq = None;
        self.seen = 1;
        self.stats.received = 1;
        self.last_transit = None;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// Feeds one packet that arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, packet: &RtpPacket) -> SourceEvent {
        let epoch = *self.epoch.get_or_insert(now);
        let seq = packet.sequence;
        let mut ssrc_changed = false;
        if self.ssrc != Some(packet.ssrc) {
            if self.ssrc.is_some() {
                self.stats.ssrc_changes += 1;
                ssrc_changed = true;
            }
            self.ssrc = Some(packet.ssrc);
            self.restart(seq);
            self.jitter = 0.0;
            self.update_jitter(now, epoch, packet.timestamp);
            return SourceEvent::Accepted {
                extended_seq: self.highest(),
                ssrc_changed,
            };
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        let extended = if udelta == 0 {
            self.stats.duplicates += 1;
            return SourceEvent::Duplicate;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
            let ext = self.highest();
            self.seen = self.seen.checked_shl(u32::from(udelta)).unwrap_or(0) | 1;
            ext
        } else if udelta <= u16::MAX - MAX_MISORDER {
            if self.bad_seq == Some(seq) {
                self.stats.restarts += 1;
                self.restart(seq);
                self.update_jitter(now, epoch, packet.timestamp);
                return SourceEvent::Accepted {
                    extended_seq: self.highest(),
                    ssrc_changed,
                };
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SourceEvent::UnconfirmedJump;
        } else {
            // Reordered: behind the highest by (65536 - udelta).
            let behind = u64::from(u16::MAX - udelta) + 1;
            let highest = self.highest();
            if behind >= DUPLICATE_WINDOW || behind > highest {
                self.stats.too_old += 1;
                return SourceEvent::TooOld;
            }
            let bit = 1u128 << behind;
            if self.seen & bit != 0 {
                self.stats.duplicates += 1;
                return SourceEvent::Duplicate;
            }
            self.seen |= bit;
            highest - behind
        };
        self.bad_seq = None;
        self.stats.received += 1;
        self.update_jitter(now, epoch, packet.timestamp);
        SourceEvent::Accepted {
            extended_seq: extended,
            ssrc_changed,
        }
    }

    fn update_jitter(&mut self, now: Instant, epoch: Instant, timestamp: u32) {
        let arrival =
            now.duration_since(epoch).as_micros() as i64 * i64::from(CLOCK_RATE) / 1_000_000;
        // Transit in timestamp units; only differences matter, so wrap-around is harmless.
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            // Differences larger than a second are a timestamp jump, not jitter.
            if d < f64::from(CLOCK_RATE) {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
    }

    /// The counters so far.
    pub fn stats(&self) -> ReceiveStats {
        let expected = if self.ssrc.is_some() {
            self.highest() - self.base_seq + 1
        } else {
            0
        };
        ReceiveStats {
            ssrc: self.ssrc,
            expected,
            lost: expected as i64 - self.stats.received as i64,
            jitter_ms: self.jitter * 1_000.0 / f64::from(CLOCK_RATE),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(ssrc: u32, seq: u16, ts: u32) -> RtpPacket {
        RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: seq,
            timestamp: ts,
            ssrc,
            payload: vec![0xFF; 160],
        }
    }

    /// Feeds `seqs` at 20 ms intervals; returns the events.
    fn feed(state: &mut SourceState, t0: Instant, ssrc: u32, seqs: &[u16]) -> Vec<SourceEvent> {
        seqs.iter()
            .enumerate()
            .map(|(i, &s)| {
                let now = t0 + Duration::from_millis(20 * i as u64);
                state.handle_packet(now, &packet(ssrc, s, u32::from(s) * 160))
            })
            .collect()
    }

    #[test]
    fn reception_reports_give_interval_loss_and_cumulative_loss() {
        let mut s = SourceState::new();
        assert_eq!(s.take_reception_report(), None);
        // 10 expected, 6 received in the first interval.
        feed(&mut s, Instant::now(), 7, &[1, 2, 3, 6, 7, 10]);
        let r = s.take_reception_report().unwrap();
        assert_eq!((r.ssrc, r.fraction_lost, r.cumulative_lost), (7, 102, 4));
        assert_eq!(r.extended_highest_seq, 10);
        // Then 10 more, none lost.
        feed(&mut s, Instant::now(), 7, &(11..21).collect::<Vec<_>>());
        let r = s.take_reception_report().unwrap();
        assert_eq!(
            (r.fraction_lost, r.cumulative_lost, r.extended_highest_seq),
            (0, 4, 20)
        );
    }

    #[test]
    fn counts_loss_from_sequence_gaps() {
        let mut s = SourceState::new();
        feed(&mut s, Instant::now(), 7, &[1, 2, 3, 6, 7, 10]);
        let st = s.stats();
        assert_eq!((st.expected, st.received, st.lost), (10, 6, 4));
    }

    #[test]
    fn extends_sequence_numbers_across_wrap() {
        let mut s = SourceState::new();
        let ev = feed(&mut s, Instant::now(), 7, &[65_534, 65_535, 0, 1]);
        assert_eq!(
            ev[3],
            SourceEvent::Accepted {
                extended_seq: 65_536 + 1,
                ssrc_changed: false
            }
        );
        assert_eq!(s.stats().lost, 0);
    }

    #[test]
    fn reordered_packets_are_accepted_once_and_duplicates_dropped() {
        let mut s = SourceState::new();
        let ev = feed(&mut s, Instant::now(), 7, &[1, 3, 2, 2, 3, 4]);
        assert_eq!(
            ev[2],
            SourceEvent::Accepted {
                extended_seq: 2,
                ssrc_changed: false
            }
        );
        assert_eq!(ev[3], SourceEvent::Duplicate);
        assert_eq!(ev[4], SourceEvent::Duplicate);
        let st = s.stats();
        assert_eq!((st.received, st.duplicates, st.lost), (4, 2, 0));
    }

    #[test]
    fn reordering_across_wrap_keeps_the_extended_number() {
        let mut s = SourceState::new();
        let ev = feed(&mut s, Instant::now(), 7, &[65_535, 1, 0]);
        assert_eq!(
            ev[2],
            SourceEvent::Accepted {
                extended_seq: 65_536,
                ssrc_changed: false
            }
        );
    }

    #[test]
    fn a_new_ssrc_restarts_the_counts_and_is_flagged() {
        let mut s = SourceState::new();
        feed(&mut s, Instant::now(), 7, &[1, 2, 3]);
        let ev = feed(&mut s, Instant::now(), 9, &[5000, 5001]);
        assert_eq!(
            ev[0],
            SourceEvent::Accepted {
                extended_seq: 5000,
                ssrc_changed: true
            }
        );
        assert_eq!(
            ev[1],
            SourceEvent::Accepted {
                extended_seq: 5001,
                ssrc_changed: false
            }
        );
        let st = s.stats();
        assert_eq!(
            (st.ssrc, st.received, st.lost, st.ssrc_changes),
            (Some(9), 2, 0, 1)
        );
    }

    #[test]
    fn a_large_jump_needs_a_second_packet_to_restart() {
        let mut s = SourceState::new();
        let ev = feed(&mut s, Instant::now(), 7, &[1, 2, 20_000, 20_001, 20_002]);
        assert_eq!(ev[2], SourceEvent::UnconfirmedJump);
        assert_eq!(
            ev[3],
            SourceEvent::Accepted {
                extended_seq: 20_001,
                ssrc_changed: false
            }
        );
        let st = s.stats();
        assert_eq!((st.restarts, st.received, st.lost), (1, 2, 0));
    }

    #[test]
    fn a_stray_old_packet_is_not_mistaken_for_a_restart() {
        let mut s = SourceState::new();
        let ev = feed(&mut s, Instant::now(), 7, &[1000, 1001, 40_000, 1002]);
        assert_eq!(ev[2], SourceEvent::UnconfirmedJump);
        assert_eq!(
            ev[3],
            SourceEvent::Accepted {
                extended_seq: 1002,
                ssrc_changed: false
            }
        );
        assert_eq!(s.stats().restarts, 0);
    }

    #[test]
    fn steady_arrival_has_zero_jitter_and_alternating_delay_does_not() {
        let mut s = SourceState::new();
        feed(&mut s, Instant::now(), 7, &(0..50).collect::<Vec<_>>());
        assert!(s.stats().jitter_ms < 0.01);

        let mut s = SourceState::new();
        let t0 = Instant::now();
        for i in 0..200u16 {
            let skew = if i % 2 == 0 { 0 } else { 10 };
            let now = t0 + Duration::from_millis(20 * u64::from(i) + skew);
            s.handle_packet(now, &packet(7, i, u32::from(i) * 160));
        }
        // |D| is 10 ms every packet, so the estimate converges on 10 ms.
        let j = s.stats().jitter_ms;
        assert!((9.0..=10.5).contains(&j), "jitter {j}");
    }
}
