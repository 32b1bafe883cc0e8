//! Relaying one leg's packets to another so the far end hears one continuous stream while
//! the source behind it changes (robot → agent, agent → agent, hold music).
//!
//! Owns: the outgoing SSRC, sequence and timestamp mapping of one direction of a bridge, and
//! payload conversion when the legs negotiated different G.711 laws or telephone-event payload
//! types. Packets are rewritten as they arrive, with no buffering, so a bridge between legs
//! that share a codec adds no delay beyond the packet itself. A prompt can be mixed into one
//! direction only ([`StreamRelay::play_over`]: the agent's connect beep over the customer's
//! voice) without holding the bridge up. Must not: own sockets, or decide who is bridged to
//! whom.

use crate::g711::{transcode_in_place, Codec};
use crate::prompt::{Playback, Prompt};
use crate::rtp::{RtpPacket, CLOCK_RATE};
use std::time::Instant;

/// How audio and events are carried on one leg, from its SDP negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegFormat {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
}

/// Counters of one relay direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub relayed: u64,
    pub transcoded: u64,
    /// Source changes hidden from the far end.
    pub source_switches: u64,
    /// Packets dropped: unknown payload type, or events the far leg cannot carry.
    pub dropped: u64,
    /// Payload octets relayed.
    pub octets: u64,
    /// Packets that carried a prompt mixed over the relayed audio.
    pub mixed: u64,
    /// Packets of prompt sent alone while the source was quiet ([`StreamRelay::overlay_alone`]).
    pub overlay_alone: u64,
}

/// The mapping from the current source's numbering to ours.
#[derive(Debug, Clone, Copy)]
struct SourceMap {
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// The source's highest sequence number so far.
    highest_seq: u16,
}

/// One direction of a bridge: packets in from any source, out as our single stream.
#[derive(Debug)]
pub struct StreamRelay {
    out: LegFormat,
    ssrc: u32,
    source: Option<SourceMap>,
    /// Our last (highest) sequence number and the end of our last packet, with when it went.
    last_seq: u16,
    last_end_ts: u32,
    last_sent_at: Option<Instant>,
    stats: RelayStats,
    /// A prompt being mixed into this direction's audio.
    overlay: Option<Playback>,
}

/// A sequence jump this large within one SSRC is a restarted source, not loss.
const SEQ_RESTART: u16 = 1_000;

impl StreamRelay {
    /// A relay writing to a leg with format `out` under our SSRC, starting at the given sequence
    /// number and timestamp (the caller supplies the random initial values).
    pub fn new(out: LegFormat, ssrc: u32, initial_seq: u16, initial_timestamp: u32) -> StreamRelay {
        StreamRelay {
            out,
            ssrc,
            source: None,
            last_seq: initial_seq.wrapping_sub(1),
            last_end_ts: initial_timestamp,
            last_sent_at: None,
            stats: RelayStats::default(),
            overlay: None,
        }
    }

    /// Mixes `prompt` into the audio relayed in this direction from the next packet on,
    /// until it has played (replacing one still playing). The relay keeps its pace: each
    /// packet goes out as it arrives, carrying the prompt's next samples as well.
    pub fn play_over(&mut self, prompt: &Prompt) {
        self.overlay = Some(prompt.play());
    }

    /// Whether a prompt is still being mixed in.
    pub fn playing_over(&self) -> bool {
        self.overlay.is_some()
    }

    /// The prompt's next frame of `frame_samples` on its own, as a packet of our stream at
    /// `now`, for when the relayed source is quiet (silence suppression, or before its first
    /// packet) so a prompt played over it does not wait for the source to talk. Returns
    /// `None` when no prompt is playing. The next relayed packet continues our numbering
    /// after this one, so the far end sees no duplicate and no gap.
    pub fn overlay_alone(&mut self, now: Instant, frame_samples: usize) -> Option<RtpPacket> {
        let overlay = self.overlay.as_mut()?;
        let Some(samples) = overlay.next_frame(frame_samples) else {
            self.overlay = None;
            return None;
        };
        if overlay.finished() {
            self.overlay = None;
        }
        let mut payload = Vec::with_capacity(samples.len());
        self.out.codec.encode(&samples, &mut payload);
        let elapsed = self
            .last_sent_at
            .map(|t| now.saturating_duration_since(t).as_millis() as u32 * (CLOCK_RATE / 1_000))
            .unwrap_or(0);
        let timestamp = self
            .last_end_ts
            .wrapping_add(elapsed.saturating_sub(payload.len() as u32));
        let sequence = self.last_seq.wrapping_add(1);
        let marker = self.last_sent_at.is_none() || self.source.is_some();
        // The source's next packet maps afresh after ours (without counting a switch).
        self.source = None;
        self.last_seq = sequence;
        self.last_end_ts = timestamp.wrapping_add(payload.len() as u32);
        self.last_sent_at = Some(now);
        self.stats.overlay_alone += 1;
        self.stats.octets += payload.len() as u64;
        Some(RtpPacket {
            payload_type: self.out.payload_type,
            marker,
            sequence,
            timestamp,
            ssrc: self.ssrc,
            payload,
        })
    }

    /// Our SSRC on the outgoing leg.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Rewrites one packet that arrived at `now` from a leg with format `from`. Returns the
    /// packet to send, or `None` when it cannot be carried (counted in the stats).
    pub fn relay(
        &mut self,
        now: Instant,
        packet: &RtpPacket,
        from: LegFormat,
    ) -> Option<RtpPacket> {
        let is_event = from.telephone_event_pt == Some(packet.payload_type);
        if !is_event && packet.payload_type != from.payload_type {
            self.stats.dropped += 1;
            return None;
        }
        let out_pt = if is_event {
            let Some(pt) = self.out.telephone_event_pt else {
                self.stats.dropped += 1;
                return None;
            };
            pt
        } else {
            self.out.payload_type
        };
        let mut marker = packet.marker;
        let map = match self.source {
            Some(m)
                if m.ssrc == packet.ssrc
                    && packet
                        .sequence
                        .wrapping_sub(m.highest_seq)
                        .min(m.highest_seq.wrapping_sub(packet.sequence))
                        < SEQ_RESTART =>
            {
                m
            }
            _ => {
                // A new source: continue our numbering right after what we last sent, and our
                // clock by the time that has passed (at least one packet's worth).
                let elapsed = self
                    .last_sent_at
                    .map(|t| {
                        now.saturating_duration_since(t).as_millis() as u32 * (CLOCK_RATE / 1_000)
                    })
                    .unwrap_or(0);
                let gap = elapsed.saturating_sub(packet.payload.len() as u32);
                let first_ts = self.last_end_ts.wrapping_add(gap);
                if self.source.is_some() {
                    self.stats.source_switches += 1;
                }
                marker = true;
                let m = SourceMap {
                    ssrc: packet.ssrc,
                    seq_offset: self.last_seq.wrapping_add(1).wrapping_sub(packet.sequence),
                    ts_offset: first_ts.wrapping_sub(packet.timestamp),
                    highest_seq: packet.sequence,
                };
                self.source = Some(m);
                m
            }
        };
        let sequence = packet.sequence.wrapping_add(map.seq_offset);
        let timestamp = packet.timestamp.wrapping_add(map.ts_offset);
        let mut payload = packet.payload.clone();
        let mixed = match (&mut self.overlay, is_event) {
            (Some(overlay), false) => {
                let mut live = Vec::with_capacity(payload.len());
                from.codec.decode(&payload, &mut live);
                if overlay.mix_over(&mut live) {
                    payload.clear();
                    self.out.codec.encode(&live, &mut payload);
                    self.stats.mixed += 1;
                    true
                } else {
                    self.overlay = None;
                    false
                }
            }
            _ => false,
        };
        if self.overlay.as_ref().is_some_and(Playback::finished) {
            self.overlay = None;
        }
        if !is_event && !mixed && from.codec != self.out.codec {
            transcode_in_place(from.codec, self.out.codec, &mut payload);
            self.stats.transcoded += 1;
        }
        // Only packets that move the stream forward move our high-water marks.
        if sequence.wrapping_sub(self.last_seq) < 0x8000 {
            self.last_seq = sequence;
            if let Some(m) = &mut self.source {
                m.highest_seq = packet.sequence;
            }
            let end = if is_event {
                timestamp
            } else {
                timestamp.wrapping_add(payload.len() as u32)
            };
            if end.wrapping_sub(self.last_end_ts) < 0x8000_0000 {
                self.last_end_ts = end;
            }
            self.last_sent_at = Some(now);
        }
        self.stats.relayed += 1;
        self.stats.octets += payload.len() as u64;
        Some(RtpPacket {
            payload_type: out_pt,
            marker,
            sequence,
            timestamp,
            ssrc: self.ssrc,
            payload,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::{key_press_packets, Digit};
    use crate::rtp::{RtpSender, SourceEvent, SourceState};
    use std::time::Duration;

    const PCMU: LegFormat = LegFormat {
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
    };
    const PCMA: LegFormat = LegFormat {
        codec: Codec::Pcma,
        payload_type: 8,
        telephone_event_pt: Some(96),
    };

    /// Sends `count` 20 ms packets from `tx` through the relay starting at `start_ms`; checks
    /// each output with the far end's receiver.
    fn stream(
        relay: &mut StreamRelay,
        far_end: &mut SourceState,
        tx: &mut RtpSender,
        from: LegFormat,
        t0: Instant,
        start_ms: u64,
        count: u64,
    ) -> Vec<RtpPacket> {
        (0..count)
            .map(|i| {
                let now = t0 + Duration::from_millis(start_ms + 20 * i);
                let p = tx.audio(from.payload_type, vec![from.codec.silence(); 160]);
                let out = relay.relay(now, &p, from).unwrap();
                let ev = far_end.handle_packet(now, &out);
                assert!(
                    matches!(
                        ev,
                        SourceEvent::Accepted {
                            ssrc_changed: false,
                            ..
                        }
                    ),
                    "far end saw {ev:?}"
                );
                out
            })
            .collect()
    }

    #[test]
    fn robot_then_agent_then_another_agent_is_one_stream_to_the_customer() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMU, 0xC0FFEE, 1_000, 50_000);
        let mut far = SourceState::new();
        let mut robot = RtpSender::new(1, 40_000, 7);
        let mut agent = RtpSender::new(2, 3, 4_000_000_000);
        let mut agent2 = RtpSender::new(3, 65_530, 123);
        let mut out = stream(&mut relay, &mut far, &mut robot, PCMU, t0, 0, 50);
        out.extend(stream(
            &mut relay, &mut far, &mut agent, PCMU, t0, 1_000, 50,
        ));
        out.extend(stream(
            &mut relay,
            &mut far,
            &mut agent2,
            PCMU,
            t0,
            2_000,
            50,
        ));
        let seqs: Vec<u16> = out.iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, (1_000..1_150).collect::<Vec<u16>>());
        for w in out.windows(2) {
            assert_eq!(
                w[1].timestamp.wrapping_sub(w[0].timestamp),
                160,
                "continuous clock"
            );
        }
        assert!(out.iter().all(|p| p.ssrc == 0xC0FFEE));
        let markers: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, p)| p.marker)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(markers, [0, 50, 100], "each new source starts a talkspurt");
        let st = far.stats();
        assert_eq!((st.lost, st.ssrc_changes, st.restarts), (0, 0, 0));
        assert_eq!(relay.stats().source_switches, 2);
    }

    #[test]
    fn a_pause_between_sources_advances_the_clock_by_the_time_passed() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMU, 9, 0, 0);
        let mut far = SourceState::new();
        let a = stream(
            &mut relay,
            &mut far,
            &mut RtpSender::new(1, 0, 0),
            PCMU,
            t0,
            0,
            5,
        );
        // The last packet went at 80 ms; hold music starts at 580 ms.
        let b = stream(
            &mut relay,
            &mut far,
            &mut RtpSender::new(2, 0, 0),
            PCMU,
            t0,
            580,
            1,
        );
        assert_eq!(b[0].timestamp.wrapping_sub(a[4].timestamp), 500 * 8);
        assert_eq!(b[0].sequence, a[4].sequence + 1);
    }

    #[test]
    fn loss_and_reordering_within_a_source_pass_through_unchanged() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMU, 9, 500, 0);
        let mut tx = RtpSender::new(1, 10, 1_600);
        let packets: Vec<RtpPacket> = (0..6).map(|_| tx.audio(0, vec![0xFF; 160])).collect();
        // Arrival order 0, 2, 1, 4, 5 (3 lost).
        let order = [0usize, 2, 1, 4, 5];
        let out: Vec<RtpPacket> = order
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                relay
                    .relay(t0 + Duration::from_millis(20 * i as u64), &packets[k], PCMU)
                    .unwrap()
            })
            .collect();
        let seqs: Vec<u16> = out.iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, [500, 502, 501, 504, 505]);
        let ts: Vec<u32> = out.iter().map(|p| p.timestamp - out[0].timestamp).collect();
        assert_eq!(ts, [0, 320, 160, 640, 800]);
        assert_eq!(relay.stats().source_switches, 0);
    }

    #[test]
    fn legs_with_different_laws_are_transcoded() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMA, 9, 0, 0);
        let tone = crate::tone::ToneGenerator::new(440.0, 8_000).next_samples(160);
        let mut ulaw = Vec::new();
        Codec::Pcmu.encode(&tone, &mut ulaw);
        let mut tx = RtpSender::new(1, 0, 0);
        let out = relay.relay(t0, &tx.audio(0, ulaw.clone()), PCMU).unwrap();
        assert_eq!(out.payload_type, 8);
        let mut expected = ulaw;
        transcode_in_place(Codec::Pcmu, Codec::Pcma, &mut expected);
        assert_eq!(out.payload, expected);
        assert_eq!(relay.stats().transcoded, 1);
    }

    #[test]
    fn dtmf_events_keep_their_timestamp_and_take_the_far_legs_payload_type() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMA, 9, 0, 0);
        let mut tx = RtpSender::new(1, 0, 0);
        let audio = relay
            .relay(t0, &tx.audio(0, vec![0xFF; 160]), PCMU)
            .unwrap();
        let events = key_press_packets(&mut tx, 101, Digit::from_char('4').unwrap(), 60, 20);
        let out: Vec<RtpPacket> = events
            .iter()
            .enumerate()
            .map(|(i, p)| {
                relay
                    .relay(t0 + Duration::from_millis(20 * (i as u64 + 1)), p, PCMU)
                    .unwrap()
            })
            .collect();
        assert!(out
            .iter()
            .all(|p| p.payload_type == 96 && p.timestamp == audio.timestamp + 160));
        assert_eq!(
            out[0].payload, events[0].payload,
            "event payloads are not transcoded"
        );
        let after = relay
            .relay(
                t0 + Duration::from_millis(200),
                &tx.audio(0, vec![0xFF; 160]),
                PCMU,
            )
            .unwrap();
        assert_eq!(after.timestamp, audio.timestamp + 160 + 480);
        assert_eq!(after.sequence, out.last().unwrap().sequence + 1);
    }

    #[test]
    fn events_the_far_leg_cannot_carry_and_unknown_payloads_are_dropped_and_counted() {
        let t0 = Instant::now();
        let no_events = LegFormat {
            telephone_event_pt: None,
            ..PCMU
        };
        let mut relay = StreamRelay::new(no_events, 9, 0, 0);
        let mut tx = RtpSender::new(1, 0, 0);
        for p in key_press_packets(&mut tx, 101, Digit::from_char('1').unwrap(), 40, 20) {
            assert!(relay.relay(t0, &p, PCMU).is_none());
        }
        assert!(relay.relay(t0, &tx.audio(18, vec![0; 20]), PCMU).is_none());
        assert_eq!(relay.stats().dropped, 5);
    }

    #[test]
    fn a_prompt_played_over_one_direction_mixes_in_without_holding_packets_back() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMU, 9, 100, 0);
        let mut customer = RtpSender::new(1, 0, 0);
        let voice = crate::tone::ToneGenerator::new(1_000.0, 4_000);
        let mut voice = voice;
        let beep = Prompt::connect_beep();
        let beep_packets = beep.len().div_ceil(160);
        relay.play_over(&beep);
        let mut decoded = Vec::new();
        let mut out = Vec::new();
        for i in 0..30u64 {
            let mut payload = Vec::new();
            Codec::Pcmu.encode(&voice.next_samples(160), &mut payload);
            let at = t0 + Duration::from_millis(20 * i);
            // Every packet comes out at once, as it arrived: no delay added.
            let p = relay.relay(at, &customer.audio(0, payload), PCMU).unwrap();
            Codec::Pcmu.decode(&p.payload, &mut decoded);
            out.push(p);
        }
        let seqs: Vec<u16> = out.iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, (100..130).collect::<Vec<u16>>());
        assert_eq!(relay.stats().mixed as usize, beep_packets);
        assert!(!relay.playing_over());
        let during = &decoded[..1_000];
        let after = &decoded[beep_packets * 160..];
        assert!(
            crate::tone::tone_correlation(during, 440.0) > 0.3,
            "the beep is heard over the voice"
        );
        assert!(
            crate::tone::tone_correlation(during, 1_000.0) > 0.3,
            "the voice goes on under the beep"
        );
        assert!(
            crate::tone::tone_correlation(after, 440.0) < 0.05,
            "then the voice alone"
        );
    }

    #[test]
    fn a_prompt_over_a_quiet_source_goes_alone_and_the_source_continues_the_numbering() {
        let t0 = Instant::now();
        let mut relay = StreamRelay::new(PCMU, 9, 100, 5_000);
        let mut far_end = SourceState::new();
        let mut customer = RtpSender::new(1, 40_000, 77);
        let mut voice = crate::tone::ToneGenerator::new(1_000.0, 4_000);
        let mut talk = |relay: &mut StreamRelay, customer: &mut RtpSender, i: u64| {
            let mut payload = Vec::new();
            Codec::Pcmu.encode(&voice.next_samples(160), &mut payload);
            let at = t0 + Duration::from_millis(20 * i);
            relay.relay(at, &customer.audio(0, payload), PCMU).unwrap()
        };
        // The customer talks for 60 ms, then goes quiet (silence suppression) as the beep
        // starts: the beep goes alone for 100 ms.
        let mut out: Vec<RtpPacket> = (0..3).map(|i| talk(&mut relay, &mut customer, i)).collect();
        let beep = Prompt::connect_beep();
        relay.play_over(&beep);
        for i in 3..8u64 {
            customer.skip_samples(160);
            let at = t0 + Duration::from_millis(20 * i);
            out.push(relay.overlay_alone(at, 160).expect("the beep is playing"));
        }
        // Then the customer talks again: the rest of the beep is mixed over its voice.
        out.extend((8..28).map(|i| talk(&mut relay, &mut customer, i)));
        assert!(relay.overlay_alone(t0, 160).is_none(), "the beep is over");
        let mut decoded = Vec::new();
        for (i, p) in out.iter().enumerate() {
            assert_eq!(p.ssrc, 9);
            assert_eq!(p.sequence, 100 + i as u16, "no gap, no duplicate");
            assert_eq!(p.timestamp, 5_000 + 160 * i as u32, "one continuous clock");
            let ev = far_end.handle_packet(t0 + Duration::from_millis(20 * i as u64), p);
            assert!(
                matches!(
                    ev,
                    SourceEvent::Accepted {
                        ssrc_changed: false,
                        ..
                    }
                ),
                "{ev:?}"
            );
            Codec::Pcmu.decode(&p.payload, &mut decoded);
        }
        let stats = relay.stats();
        assert_eq!((stats.overlay_alone, stats.source_switches), (5, 0));
        assert_eq!(stats.mixed as usize, beep.len().div_ceil(160) - 5);
        let beep_at = 3 * 160;
        let beep_alone = &decoded[beep_at..beep_at + 800];
        let second_beep = &decoded[beep_at + 1_600..beep_at + 2_560];
        assert!(
            tone_correlation_of(beep_alone, 440.0) > 0.9,
            "beep alone first"
        );
        assert!(
            tone_correlation_of(second_beep, 440.0) > 0.3,
            "then over the voice"
        );
        assert!(tone_correlation_of(second_beep, 1_000.0) > 0.3);
        assert!(tone_correlation_of(&decoded[beep_at + 2_560..], 440.0) < 0.05);
    }

    fn tone_correlation_of(samples: &[i16], hz: f64) -> f64 {
        crate::tone::tone_correlation(samples, hz)
    }

    #[test]
    fn relayed_packets_count_in_the_legs_sender_report_and_numbering() {
        use crate::rtp::rtcp::{parse_compound, NtpClock, RtcpPacket, RtcpSession, SenderInfo};
        let t0 = Instant::now();
        // The customer's leg: 10 frames of announcement from its own sender, then the
        // agent's packets relayed onto it under the same SSRC.
        let mut leg = RtpSender::new(0xC0FFEE, 7, 1_000);
        for _ in 0..10 {
            leg.audio(0, vec![0xFF; 160]);
        }
        let mut relay =
            StreamRelay::new(PCMU, leg.ssrc(), leg.next_sequence(), leg.next_timestamp());
        let mut agent = RtpSender::new(2, 500, 90_000);
        let mut last = None;
        for i in 0..50u64 {
            let at = t0 + Duration::from_millis(200 + 20 * i);
            let out = relay
                .relay(at, &agent.audio(0, vec![0xFF; 160]), PCMU)
                .unwrap();
            leg.note_relayed(&out, true);
            last = Some((at, out));
        }
        let (at, last) = last.unwrap();
        assert_eq!(leg.relayed_packets(), 50);
        assert_eq!(leg.packets_sent(), 60);
        assert_eq!(leg.octets_sent(), 60 * 160);
        assert_eq!(relay.stats().octets, 50 * 160);
        // Our own numbering continues after the relayed stream.
        assert_eq!(leg.next_sequence(), last.sequence.wrapping_add(1));
        assert_eq!(leg.next_timestamp(), last.timestamp.wrapping_add(160));
        let next = leg.audio(0, vec![0xFF; 160]);
        assert!(!next.marker, "no new talkspurt: the stream simply goes on");
        // The leg's RTCP is a sender report with those counts.
        let mut session = RtcpSession::new(
            leg.ssrc(),
            "c@callgate",
            NtpClock::new(t0, 1_700_000_000_000_000),
            Duration::from_secs(5),
        );
        let mut source = crate::rtp::SourceState::new();
        assert!(session.poll_report(t0, &mut source, None).is_none());
        let sender = SenderInfo {
            packets: leg.packets_sent(),
            octets: leg.octets_sent(),
            rtp_timestamp: last.timestamp,
        };
        let report = session
            .poll_report(at + Duration::from_secs(10), &mut source, Some(sender))
            .expect("a report is due");
        let packets = parse_compound(&report).unwrap();
        assert!(
            matches!(
                packets[0],
                RtcpPacket::SenderReport { ssrc: 0xC0FFEE, packet_count: 61, octet_count, .. }
                    if octet_count == 61 * 160
            ),
            "{packets:?}"
        );
    }
}
