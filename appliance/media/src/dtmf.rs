//! DTMF both ways: RFC 4733 telephone-events (sent and received) and in-band detection with
//! the Goertzel algorithm for carriers that send no events.
//!
//! Owns: the 4-byte event payload, the packet sequence for one key press (start with marker,
//! updates every packet time, three end packets), de-duplication of received events, and the
//! tone detector. Must not: decide what a digit means (the dialer or robot does) or own
//! sockets.

use crate::rtp::{RtpPacket, RtpSender, CLOCK_RATE};
use crate::wav::SAMPLE_RATE;

/// A DTMF key (RFC 4733 events 0–15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(u8);

impl Digit {
    /// The key for a character `0-9 * # A-D`.
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c.to_ascii_uppercase() {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c.to_ascii_uppercase() as u8 - b'A' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The key for an RFC 4733 event code, if it is a DTMF key.
    pub fn from_event(code: u8) -> Option<Digit> {
        (code <= 15).then_some(Digit(code))
    }

    /// The RFC 4733 event code.
    pub fn event_code(self) -> u8 {
        self.0
    }

    /// The character printed on the key.
    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"[usize::from(self.0)] as char
    }

    /// The (row, column) frequencies of the key's tone pair, Hz.
    pub fn frequencies(self) -> (f64, f64) {
        let (row, col) = match self.0 {
            1 => (0, 0),
            2 => (0, 1),
            3 => (0, 2),
            12 => (0, 3),
            4 => (1, 0),
            5 => (1, 1),
            6 => (1, 2),
            13 => (1, 3),
            7 => (2, 0),
            8 => (2, 1),
            9 => (2, 2),
            14 => (2, 3),
            10 => (3, 0),
            0 => (3, 1),
            11 => (3, 2),
            _ => (3, 3),
        };
        (ROWS[row], COLS[col])
    }
}

const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// One RFC 4733 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first four bytes (redundant trailing events are ignored).
    pub fn parse(payload: &[u8]) -> Option<EventPayload> {
        if payload.len() < 4 {
            return None;
        }
        Some(EventPayload {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// The wire form.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// The packets for one key press of `duration_ms`, one per `ptime_ms` plus two retransmitted
/// end packets (RFC 4733 §2.5.1.4), to be sent one per packet time. All carry the event's
/// start timestamp; the sender's audio clock then skips the event's duration.
pub fn key_press_packets(
    sender: &mut RtpSender,
    payload_type: u8,
    digit: Digit,
    duration_ms: u32,
    ptime_ms: u32,
) -> Vec<RtpPacket> {
    let per_ms = CLOCK_RATE / 1_000;
    let total = (duration_ms * per_ms).min(u32::from(u16::MAX)) as u16;
    let step = (ptime_ms * per_ms) as u16;
    let start = sender.next_timestamp();
    let mut packets = Vec::new();
    let mut elapsed = step.min(total);
    let mut first = true;
    loop {
        let end = elapsed >= total;
        let payload = EventPayload {
            event: digit.event_code(),
            end,
            volume: 10,
            duration: elapsed,
        };
        let copies = if end { 3 } else { 1 };
        for _ in 0..copies {
            packets.push(sender.at_timestamp(
                payload_type,
                first,
                start,
                payload.to_bytes().to_vec(),
            ));
            first = false;
        }
        if end {
            break;
        }
        elapsed = elapsed.saturating_add(step).min(total);
    }
    sender.skip_samples(u32::from(total));
    packets
}

/// A DTMF key press, as reported by either detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfReport {
    /// A key went down (first packet of an event, or tone present long enough).
    Pressed(Digit),
    /// The key was released after `duration_ms`.
    Released { digit: Digit, duration_ms: u32 },
}

/// De-duplicates received RFC 4733 packets into one press and one release per key press.
#[derive(Debug, Default)]
pub struct EventReceiver {
    /// The current event: (ssrc, start timestamp, digit, ended).
    current: Option<(u32, u32, Digit, bool)>,
}

impl EventReceiver {
    /// A receiver that has seen no event.
    pub fn new() -> EventReceiver {
        EventReceiver::default()
    }

    /// Feeds one telephone-event packet; returns what it newly tells us (up to two reports
    /// when a lost start is discovered by an end packet).
    pub fn handle_packet(&mut self, packet: &RtpPacket) -> Vec<DtmfReport> {
        let Some(ev) = EventPayload::parse(&packet.payload) else {
            return Vec::new();
        };
        let Some(digit) = Digit::from_event(ev.event) else {
            return Vec::new();
        };
        let key = (packet.ssrc, packet.timestamp);
        let mut reports = Vec::new();
        match self.current {
            Some((s, t, _, ended)) if (s, t) == key => {
                if ended {
                    return reports;
                }
            }
            _ => {
                if let Some((_, _, previous, false)) = self.current {
                    // The previous event's end packets were all lost.
                    reports.push(DtmfReport::Released {
                        digit: previous,
                        duration_ms: 0,
                    });
                }
                reports.push(DtmfReport::Pressed(digit));
                self.current = Some((packet.ssrc, packet.timestamp, digit, false));
            }
        }
        if ev.end {
            reports.push(DtmfReport::Released {
                digit,
                duration_ms: u32::from(ev.duration) * 1_000 / CLOCK_RATE,
            });
            self.current = Some((packet.ssrc, packet.timestamp, digit, true));
        }
        reports
    }
}

/// Samples per Goertzel block: 205 at 8 kHz gives ~39 Hz bins that separate the DTMF tones.
const BLOCK: usize = 205;

/// A key the detector has reported as pressed.
#[derive(Debug, Clone, Copy)]
struct HeldKey {
    digit: Digit,
    /// Blocks it has sounded for.
    blocks: u32,
    /// Consecutive blocks without it.
    misses: u32,
}

/// In-band DTMF detection over linear 8 kHz audio.
#[derive(Debug)]
pub struct ToneDetector {
    block: Vec<f64>,
    /// The digit seen in the last block, and how many blocks in a row.
    candidate: Option<(Digit, u32)>,
    /// The key currently reported as pressed.
    pressed: Option<HeldKey>,
    coefficients: [f64; 8],
}

impl Default for ToneDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneDetector {
    /// A detector with nothing heard.
    pub fn new() -> ToneDetector {
        let mut coefficients = [0.0; 8];
        for (c, f) in coefficients.iter_mut().zip(ROWS.iter().chain(COLS.iter())) {
            let k = (BLOCK as f64 * f / f64::from(SAMPLE_RATE)).round();
            *c = 2.0 * (2.0 * std::f64::consts::PI * k / BLOCK as f64).cos();
        }
        ToneDetector {
            block: Vec::with_capacity(BLOCK),
            candidate: None,
            pressed: None,
            coefficients,
        }
    }

    /// Feeds audio; returns presses and releases. A key must sound for two blocks (~51 ms) to
    /// count, and a release needs two blocks without it.
    pub fn feed(&mut self, samples: &[i16]) -> Vec<DtmfReport> {
        let mut reports = Vec::new();
        for &s in samples {
            self.block.push(f64::from(s));
            if self.block.len() == BLOCK {
                let digit = self.classify();
                self.block.clear();
                self.advance(digit, &mut reports);
            }
        }
        reports
    }

    fn advance(&mut self, digit: Option<Digit>, reports: &mut Vec<DtmfReport>) {
        let run = match (self.candidate, digit) {
            (Some((d, n)), Some(now)) if d == now => n + 1,
            (_, Some(_)) => 1,
            (_, None) => 0,
        };
        self.candidate = digit.map(|d| (d, run));
        if let Some(key) = &mut self.pressed {
            if digit == Some(key.digit) {
                key.blocks += 1;
                key.misses = 0;
                return;
            }
            // One odd block (a glitch, a codec artefact) does not end a key press.
            key.misses += 1;
            if key.misses < 2 {
                return;
            }
            reports.push(DtmfReport::Released {
                digit: key.digit,
                duration_ms: key.blocks * BLOCK as u32 * 1_000 / SAMPLE_RATE,
            });
            self.pressed = None;
        }
        if let Some(d) = digit {
            if run >= 2 {
                self.pressed = Some(HeldKey {
                    digit: d,
                    blocks: run,
                    misses: 0,
                });
                reports.push(DtmfReport::Pressed(d));
            }
        }
    }

    fn power(&self, coefficient: f64) -> f64 {
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in &self.block {
            let s0 = x + coefficient * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coefficient * s1 * s2
    }

    fn classify(&self) -> Option<Digit> {
        let energy: f64 = self.block.iter().map(|x| x * x).sum();
        // Below about -40 dBm0: silence.
        if energy < BLOCK as f64 * 100.0 * 100.0 {
            return None;
        }
        let powers: Vec<f64> = self.coefficients.iter().map(|&c| self.power(c)).collect();
        let best = |range: std::ops::Range<usize>| {
            range
                .map(|i| (i, powers[i]))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 0.0))
        };
        let (row, row_power) = best(0..4);
        let (col, col_power) = best(4..8);
        // A pure tone of amplitude A gives Goertzel power (N·A/2)² and block energy N·A²/2;
        // the pair must hold most of the block's energy.
        let tonal = (row_power + col_power) * 2.0 / BLOCK as f64;
        if tonal < 0.6 * energy {
            return None;
        }
        // Twist: neither tone more than 8 dB (6.3×) weaker than the other.
        if row_power > 6.3 * col_power || col_power > 6.3 * row_power {
            return None;
        }
        // Each must stand well above the other tones of its group.
        for (i, &p) in powers.iter().enumerate() {
            let (own, own_power) = if i < 4 {
                (row, row_power)
            } else {
                (col, col_power)
            };
            if i != own && p * 8.0 > own_power {
                return None;
            }
        }
        let col = col - 4;
        (0..16u8)
            .map(Digit)
            .find(|d| d.frequencies() == (ROWS[row], COLS[col]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::Codec;
    use crate::tone::{mix_into, ToneGenerator};

    fn key_tone(digit: Digit, ms: usize, amplitude: i16) -> Vec<i16> {
        let (r, c) = digit.frequencies();
        let n = ms * 8;
        let mut a = ToneGenerator::new(r, amplitude).next_samples(n);
        mix_into(&mut a, &ToneGenerator::new(c, amplitude).next_samples(n));
        a
    }

    fn all_digits() -> Vec<Digit> {
        "123A456B789C*0#D"
            .chars()
            .map(|c| Digit::from_char(c).unwrap())
            .collect()
    }

    #[test]
    fn key_characters_map_to_rfc_4733_codes() {
        assert_eq!(Digit::from_char('0').unwrap().event_code(), 0);
        assert_eq!(Digit::from_char('*').unwrap().event_code(), 10);
        assert_eq!(Digit::from_char('#').unwrap().event_code(), 11);
        assert_eq!(Digit::from_char('d').unwrap().event_code(), 15);
        assert_eq!(Digit::from_char('x'), None);
        for d in all_digits() {
            assert_eq!(Digit::from_char(d.as_char()), Some(d));
        }
    }

    #[test]
    fn a_key_press_is_a_marked_start_updates_and_three_end_packets() {
        let mut tx = RtpSender::new(9, 100, 16_000);
        let packets = key_press_packets(&mut tx, 101, Digit::from_char('5').unwrap(), 100, 20);
        assert_eq!(packets.len(), 5 + 2);
        assert!(packets[0].marker && packets[1..].iter().all(|p| !p.marker));
        assert!(packets
            .iter()
            .all(|p| p.timestamp == 16_000 && p.payload_type == 101));
        let seqs: Vec<u16> = packets.iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, (100..107).collect::<Vec<u16>>());
        let events: Vec<EventPayload> = packets
            .iter()
            .map(|p| EventPayload::parse(&p.payload).unwrap())
            .collect();
        assert_eq!(events[0].duration, 160);
        assert!(events[..4].iter().all(|e| !e.end));
        assert!(events[4..]
            .iter()
            .all(|e| e.end && e.duration == 800 && e.event == 5));
        // The audio clock continues after the event.
        assert_eq!(tx.next_timestamp(), 16_800);
        assert_eq!(tx.next_sequence(), 107);
    }

    #[test]
    fn received_events_are_reported_once_despite_retransmissions() {
        let mut tx = RtpSender::new(9, 0, 0);
        let mut rx = EventReceiver::new();
        let mut reports = Vec::new();
        for c in ['1', '1', '#'] {
            for p in key_press_packets(&mut tx, 101, Digit::from_char(c).unwrap(), 60, 20) {
                reports.extend(rx.handle_packet(&p));
            }
        }
        let one = Digit::from_char('1').unwrap();
        let hash = Digit::from_char('#').unwrap();
        assert_eq!(
            reports,
            [
                DtmfReport::Pressed(one),
                DtmfReport::Released {
                    digit: one,
                    duration_ms: 60
                },
                DtmfReport::Pressed(one),
                DtmfReport::Released {
                    digit: one,
                    duration_ms: 60
                },
                DtmfReport::Pressed(hash),
                DtmfReport::Released {
                    digit: hash,
                    duration_ms: 60
                },
            ]
        );
    }

    #[test]
    fn an_event_whose_start_was_lost_is_still_reported() {
        let mut tx = RtpSender::new(9, 0, 0);
        let mut rx = EventReceiver::new();
        let packets = key_press_packets(&mut tx, 101, Digit::from_char('7').unwrap(), 100, 20);
        let reports: Vec<DtmfReport> = packets[3..]
            .iter()
            .flat_map(|p| rx.handle_packet(p))
            .collect();
        let seven = Digit::from_char('7').unwrap();
        assert_eq!(
            reports,
            [
                DtmfReport::Pressed(seven),
                DtmfReport::Released {
                    digit: seven,
                    duration_ms: 100
                }
            ]
        );
    }

    #[test]
    fn an_event_whose_end_was_lost_is_released_by_the_next() {
        let mut tx = RtpSender::new(9, 0, 0);
        let mut rx = EventReceiver::new();
        let first = key_press_packets(&mut tx, 101, Digit::from_char('2').unwrap(), 100, 20);
        let second = key_press_packets(&mut tx, 101, Digit::from_char('3').unwrap(), 40, 20);
        let mut reports: Vec<DtmfReport> = first[..3]
            .iter()
            .flat_map(|p| rx.handle_packet(p))
            .collect();
        reports.extend(second.iter().flat_map(|p| rx.handle_packet(p)));
        let (two, three) = (
            Digit::from_char('2').unwrap(),
            Digit::from_char('3').unwrap(),
        );
        assert_eq!(
            reports,
            [
                DtmfReport::Pressed(two),
                DtmfReport::Released {
                    digit: two,
                    duration_ms: 0
                },
                DtmfReport::Pressed(three),
                DtmfReport::Released {
                    digit: three,
                    duration_ms: 40
                },
            ]
        );
    }

    fn presses(reports: &[DtmfReport]) -> String {
        reports
            .iter()
            .filter_map(|r| match r {
                DtmfReport::Pressed(d) => Some(d.as_char()),
                DtmfReport::Released { .. } => None,
            })
            .collect()
    }

    #[test]
    fn every_key_is_detected_in_band_exactly_once() {
        let mut det = ToneDetector::new();
        let mut reports = Vec::new();
        for d in all_digits() {
            reports.extend(det.feed(&key_tone(d, 70, 6_000)));
            reports.extend(det.feed(&[0; 560]));
        }
        assert_eq!(presses(&reports), "123A456B789C*0#D");
        let releases = reports
            .iter()
            .filter(|r| matches!(r, DtmfReport::Released { .. }))
            .count();
        assert_eq!(releases, 16);
    }

    #[test]
    fn keys_survive_g711_and_background_noise() {
        let mut det = ToneDetector::new();
        let mut reports = Vec::new();
        let mut noise_state: u32 = 1;
        for c in ['9', '0', '#'] {
            let mut audio = key_tone(Digit::from_char(c).unwrap(), 80, 5_000);
            audio.extend(vec![0; 400]);
            for s in &mut audio {
                noise_state = noise_state
                    .wrapping_mul(1_664_525)
                    .wrapping_add(1_013_904_223);
                // Noise about 26 dB below the tones.
                *s = s.saturating_add(((noise_state >> 16) as i16) / 128);
            }
            let mut ulaw = Vec::new();
            Codec::Pcmu.encode(&audio, &mut ulaw);
            let mut decoded = Vec::new();
            Codec::Pcmu.decode(&ulaw, &mut decoded);
            reports.extend(det.feed(&decoded));
        }
        assert_eq!(presses(&reports), "90#");
    }

    #[test]
    fn a_one_block_dropout_does_not_split_a_key_press() {
        let mut det = ToneDetector::new();
        let five = Digit::from_char('5').unwrap();
        let mut audio = key_tone(five, 100, 6_000);
        // About one block of silence in the middle of the press.
        for s in &mut audio[400..605] {
            *s = 0;
        }
        audio.extend(vec![0; 800]);
        let reports = det.feed(&audio);
        assert_eq!(presses(&reports), "5");
        assert!(matches!(reports[1], DtmfReport::Released { digit, .. } if digit == five));
    }

    #[test]
    fn speech_band_tones_and_short_blips_are_not_keys() {
        let mut det = ToneDetector::new();
        // A single 1 kHz tone, a single DTMF row tone, and a 20 ms key blip.
        assert!(det
            .feed(&ToneGenerator::new(1_000.0, 8_000).next_samples(8_000))
            .is_empty());
        assert!(det
            .feed(&ToneGenerator::new(770.0, 8_000).next_samples(8_000))
            .is_empty());
        let mut blip = key_tone(Digit::from_char('5').unwrap(), 20, 6_000);
        blip.extend(vec![0; 800]);
        assert!(presses(&det.feed(&blip)).is_empty());
    }
}
