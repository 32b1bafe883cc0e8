//! The adaptive jitter buffer: turns a leg's packets, arriving late, early, twice or out of
//! order, into a steady stream of fixed-size linear PCM frames for whoever consumes audio on
//! the box (recording, mixing, prompts over a live leg, in-band DTMF detection).
//!
//! Sans-IO: [`JitterBuffer::push`] takes a packet with its arrival time, [`JitterBuffer::pop`]
//! is called once per frame period with the current time. The playout delay follows the
//! measured delay variation (95th percentile over a window of recent packets, plus one frame),
//! between configured bounds. It grows by waiting when the next packet has not arrived and
//! shrinks by dropping a frame when the buffer holds more than the target plus two frames.
//! Missing audio is concealed with silence and counted; nothing is silently lost.
//! Must not: read the clock or know which leg or codec negotiation the packets came from
//! beyond the [`Codec`] passed with each packet.

use crate::g711::Codec;
use crate::rtp::{RtpPacket, CLOCK_RATE};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Packets between re-estimates of the playout delay target.
const RE_ESTIMATE_EVERY: usize = 8;

/// Samples per millisecond at the G.711 clock.
const SAMPLES_PER_MS: i64 = (CLOCK_RATE / 1_000) as i64;

/// Tuning of one jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Samples in each frame [`JitterBuffer::pop`] returns (160 = 20 ms).
    pub frame_samples: u32,
    /// Smallest playout delay, ms.
    pub min_delay_ms: u32,
    /// Largest playout delay, ms; beyond it packets are late rather than waited for.
    pub max_delay_ms: u32,
    /// Packets over which the delay variation is measured.
    pub window: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            frame_samples: 160,
            min_delay_ms: 20,
            max_delay_ms: 200,
            window: 100,
        }
    }
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for playout.
    Buffered,
    /// Its audio was already played (or concealed): discarded and counted.
    Late,
    /// The same timestamp is already queued: discarded and counted.
    Duplicate,
}

/// One frame of playout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayoutFrame {
    /// Exactly `frame_samples` linear samples.
    pub samples: Vec<i16>,
    /// How many of them are concealment (no packet carried them).
    pub concealed: usize,
}

/// Counters for quality reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub buffered: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Samples played from packets.
    pub played_samples: u64,
    /// Samples filled with silence because their packet never came (loss).
    pub concealed_samples: u64,
    /// Frames of silence inserted while waiting for a late packet (the delay grew).
    pub waited_frames: u64,
    /// Samples dropped to bring the delay back down to the target.
    pub dropped_samples: u64,
    /// Jumps over a gap longer than the maximum delay (silence suppression, timestamp jump).
    pub resyncs: u64,
    pub ssrc_changes: u64,
    /// The current playout delay target, ms.
    pub target_delay_ms: u32,
}

/// An adaptive jitter buffer for one incoming stream.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    epoch: Option<Instant>,
    ssrc: Option<u32>,
    /// The last raw timestamp moving forward, and its position on our unwrapped timeline.
    anchor: Option<(u32, i64)>,
    /// Queued audio by its first sample's position on the timeline.
    queued: BTreeMap<i64, Vec<i16>>,
    /// End (exclusive) of the newest audio queued or played.
    newest_end: i64,
    /// Next sample position to play; `None` until playout starts.
    playout: Option<i64>,
    first_arrival: Option<Instant>,
    /// Recent transit times, µs (arrival minus media time).
    transits: VecDeque<i64>,
    /// Reused for the percentile, so estimating allocates nothing.
    scratch: Vec<i64>,
    /// Packets since the delay target was last re-estimated.
    since_estimate: usize,
    target_ms: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        JitterBuffer {
            config,
            epoch: None,
            ssrc: None,
            anchor: None,
            queued: BTreeMap::new(),
            newest_end: 0,
            playout: None,
            first_arrival: None,
            transits: VecDeque::with_capacity(config.window),
            scratch: Vec::with_capacity(config.window),
            since_estimate: 0,
            target_ms: config
                .min_delay_ms
                .max(config.frame_samples / SAMPLES_PER_MS as u32),
            stats: JitterStats::default(),
        }
    }

    fn frame_ms(&self) -> u32 {
        self.config.frame_samples / SAMPLES_PER_MS as u32
    }

    /// Places a new source's first packet right after everything queued so far, so the
    /// consumer hears one continuous stream across the change.
    fn rebase(&mut self, timestamp: u32) -> i64 {
        let position = self.newest_end.max(self.playout.unwrap_or(i64::MIN));
        self.anchor = Some((timestamp, position));
        self.transits.clear();
        position
    }

    fn position_of(&mut self, packet: &RtpPacket) -> i64 {
        if self.ssrc != Some(packet.ssrc) {
            if self.ssrc.is_some() {
                self.stats.ssrc_changes += 1;
            }
            self.ssrc = Some(packet.ssrc);
            return self.rebase(packet.timestamp);
        }
        let Some((raw, pos)) = self.anchor else {
            return self.rebase(packet.timestamp);
        };
        let delta = i64::from(packet.timestamp.wrapping_sub(raw) as i32);
        let position = pos + delta;
        // A timestamp far behind what was already played is a restarted clock, not a late
        // packet: treat it like a new source.
        let limit = i64::from(CLOCK_RATE);
        if self.playout.is_some_and(|p| position < p - limit) {
            self.stats.resyncs += 1;
            return self.rebase(packet.timestamp);
        }
        if delta > 0 {
            self.anchor = Some((packet.timestamp, position));
        }
        position
    }

    /// Queues one audio packet that arrived at `now`, decoding it with `codec`.
    pub fn push(&mut self, now: Instant, packet: &RtpPacket, codec: Codec) -> PushOutcome {
        let epoch = *self.epoch.get_or_insert(now);
        self.first_arrival.get_or_insert(now);
        let start = self.position_of(packet);
        let end = start + packet.payload.len() as i64;
        if self.playout.is_some_and(|p| end <= p) {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        if self.queued.contains_key(&start) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        let mut samples = Vec::with_capacity(packet.payload.len());
        codec.decode(&packet.payload, &mut samples);
        self.queued.insert(start, samples);
        self.newest_end = self.newest_end.max(end);
        self.stats.buffered += 1;
        self.observe_transit(now.duration_since(epoch).as_micros() as i64, start);
        PushOutcome::Buffered
    }

    fn observe_transit(&mut self, arrival_us: i64, position: i64) {
        let media_us = position * 1_000_000 / i64::from(CLOCK_RATE);
        if self.transits.len() == self.config.window {
            self.transits.pop_front();
        }
        self.transits.push_back(arrival_us - media_us);
        self.since_estimate += 1;
        // The percentile moves slowly: re-estimate every few packets once the window has some
        // history (a sort per packet was the buffer's largest cost under load).
        if self.transits.len() >= RE_ESTIMATE_EVERY && self.since_estimate < RE_ESTIMATE_EVERY {
            return;
        }
        self.since_estimate = 0;
        self.scratch.clear();
        self.scratch.extend(self.transits.iter().copied());
        self.scratch.sort_unstable();
        let min = self.scratch[0];
        let p95 = self.scratch[(self.scratch.len() * 95 / 100).min(self.scratch.len() - 1)] - min;
        let wanted = (p95 + 999) / 1_000 + i64::from(self.frame_ms());
        self.target_ms = (wanted as u32).clamp(self.config.min_delay_ms, self.config.max_delay_ms);
    }

    /// The next frame, to be called once per frame period. `None` until the first packet has
    /// waited out the initial delay; a frame (possibly all concealment) every call after that.
    pub fn pop(&mut self, now: Instant) -> Option<PlayoutFrame> {
        let frame = i64::from(self.config.frame_samples);
        let playout = match self.playout {
            Some(p) => p,
            None => {
                let first = self.first_arrival?;
                if now.duration_since(first).as_millis() < u128::from(self.target_ms) {
                    return None;
                }
                *self.queued.keys().next()?
            }
        };
        let mut playout = playout;
        let max_gap = i64::from(self.config.max_delay_ms) * SAMPLES_PER_MS;
        if let Some(&earliest) = self.queued.keys().next() {
            if earliest > playout + max_gap {
                self.stats.resyncs += 1;
                playout = earliest;
            }
        }
        let target = i64::from(self.target_ms) * SAMPLES_PER_MS;
        let level = self.newest_end - playout;
        let next_present = self.sample_at(playout).is_some();
        if !next_present && (level <= 0 || level < target) {
            // The next packet is late, not yet lost: wait a frame (the delay grows).
            self.playout = Some(playout);
            self.stats.waited_frames += 1;
            return Some(PlayoutFrame {
                samples: vec![0; frame as usize],
                concealed: frame as usize,
            });
        }
        if level > target + 2 * frame {
            playout += frame;
            self.stats.dropped_samples += frame as u64;
        }
        let mut samples = Vec::with_capacity(frame as usize);
        let mut concealed = 0;
        for pos in playout..playout + frame {
            match self.sample_at(pos) {
                Some(s) => samples.push(s),
                None => {
                    samples.push(0);
                    concealed += 1;
                }
            }
        }
        playout += frame;
        self.playout = Some(playout);
        self.discard_before(playout);
        self.stats.played_samples += (frame as usize - concealed) as u64;
        self.stats.concealed_samples += concealed as u64;
        Some(PlayoutFrame { samples, concealed })
    }

    fn sample_at(&self, pos: i64) -> Option<i16> {
        let (&start, samples) = self.queued.range(..=pos).next_back()?;
        samples.get(usize::try_from(pos - start).ok()?).copied()
    }

    fn discard_before(&mut self, pos: i64) {
        while let Some((&start, samples)) = self.queued.first_key_value() {
            if start + samples.len() as i64 <= pos {
                self.queued.pop_first();
            } else {
                break;
            }
        }
    }

    /// Audio queued ahead of the playout point, ms.
    pub fn buffered_ms(&self) -> u32 {
        let ahead = self.newest_end - self.playout.unwrap_or(self.newest_end);
        (ahead.max(0) / SAMPLES_PER_MS) as u32
    }

    /// The counters so far.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay_ms: self.target_ms,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FRAME: u32 = 160;

    /// Packet `n` of a stream: every sample is µ-law code `n`, so playout order is visible.
    fn packet(ssrc: u32, n: u32, ts_base: u32) -> RtpPacket {
        RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: n as u16,
            timestamp: ts_base.wrapping_add(n * FRAME),
            ssrc,
            payload: vec![(n % 256) as u8; FRAME as usize],
        }
    }

    fn code_of(frame: &PlayoutFrame) -> Option<u8> {
        let first = frame.samples[0];
        if frame.concealed == frame.samples.len() {
            return None;
        }
        (0..=255u8).find(|&c| Codec::Pcmu.decode_sample(c) == first)
    }

    /// Runs a stream through the buffer in virtual time: `arrivals` are (packet, arrival ms);
    /// playout ticks every 20 ms from 0 to `until_ms`. Returns the codes played (None for a
    /// concealed frame) after playout starts.
    fn run(
        jb: &mut JitterBuffer,
        mut arrivals: Vec<(RtpPacket, u64)>,
        until_ms: u64,
    ) -> Vec<Option<u8>> {
        let t0 = Instant::now();
        arrivals.sort_by_key(|(_, at)| *at);
        let mut arrivals = arrivals.into_iter().peekable();
        let mut out = Vec::new();
        let mut now_ms = 0;
        while now_ms <= until_ms {
            // Deliver everything that arrives up to and including this millisecond.
            while let Some((p, _)) = arrivals.next_if(|(_, at)| *at <= now_ms) {
                jb.push(t0 + Duration::from_millis(now_ms), &p, Codec::Pcmu);
            }
            if now_ms % 20 == 0 {
                if let Some(f) = jb.pop(t0 + Duration::from_millis(now_ms)) {
                    assert_eq!(f.samples.len(), FRAME as usize);
                    out.push(code_of(&f));
                }
            }
            now_ms += 1;
        }
        out
    }

    fn steady(
        ssrc: u32,
        range: std::ops::Range<u32>,
        ts_base: u32,
        offset_ms: u64,
    ) -> Vec<(RtpPacket, u64)> {
        range
            .map(|n| (packet(ssrc, n, ts_base), offset_ms + u64::from(n) * 20))
            .collect()
    }

    fn played(codes: &[Option<u8>]) -> Vec<u8> {
        codes.iter().flatten().copied().collect()
    }

    #[test]
    fn a_steady_stream_plays_in_order_at_the_minimum_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = run(&mut jb, steady(1, 0..50, 1_000, 5), 1_100);
        assert_eq!(played(&out), (0..50).collect::<Vec<u8>>());
        let st = jb.stats();
        assert_eq!(st.concealed_samples, 0);
        assert_eq!(st.target_delay_ms, 20);
        assert_eq!(st.dropped_samples, 0);
    }

    #[test]
    fn a_lost_packet_is_concealed_once_in_its_place() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = steady(1, 0..30, 0, 0);
        arrivals.remove(10);
        let out = run(&mut jb, arrivals, 700);
        let first = out.iter().position(|c| *c == Some(0)).unwrap();
        let body = &out[first..first + 30];
        for (n, code) in body.iter().enumerate() {
            if n == 10 {
                assert_eq!(*code, None, "the lost packet's frame is concealed");
            } else {
                assert_eq!(*code, Some(n as u8));
            }
        }
        assert_eq!(jb.stats().concealed_samples, u64::from(FRAME));
    }

    #[test]
    fn reordered_packets_play_in_timestamp_order() {
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay_ms: 60,
            ..JitterConfig::default()
        });
        let mut arrivals = steady(1, 0..30, 0, 0);
        // Packet 5 arrives after packet 6 and 7 after 8, each within the delay.
        arrivals[5].1 = arrivals[6].1 + 1;
        arrivals[7].1 = arrivals[8].1 + 1;
        let out = run(&mut jb, arrivals, 700);
        assert_eq!(played(&out), (0..30).collect::<Vec<u8>>());
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = steady(1, 0..20, 0, 0);
        let dup = arrivals[4].clone();
        arrivals.push((dup.0, dup.1 + 3));
        let out = run(&mut jb, arrivals, 500);
        assert_eq!(played(&out), (0..20).collect::<Vec<u8>>());
        assert_eq!(jb.stats().duplicates, 1);
    }

    #[test]
    fn a_packet_after_its_playout_is_late_and_never_played() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = steady(1, 0..30, 0, 0);
        arrivals[10].1 += 200;
        let out = run(&mut jb, arrivals, 800);
        assert_eq!(jb.stats().late, 1);
        let codes = played(&out);
        assert!(!codes.contains(&10));
        assert_eq!(codes.len(), 29);
    }

    #[test]
    fn a_new_ssrc_continues_the_stream_without_a_gap() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = steady(1, 0..20, 5_000, 0);
        // The second source starts at an unrelated timestamp, right after the first ends.
        for n in 20..40 {
            arrivals.push((packet(2, n, 3_000_000_000), u64::from(n) * 20));
        }
        let out = run(&mut jb, arrivals, 900);
        assert_eq!(played(&out), (0..40).collect::<Vec<u8>>());
        let first = out.iter().position(|c| *c == Some(0)).unwrap();
        assert!(
            out[first..first + 40].iter().all(Option::is_some),
            "no gap: {out:?}"
        );
        let st = jb.stats();
        assert_eq!((st.ssrc_changes, st.late, st.concealed_samples), (1, 0, 0));
    }

    #[test]
    fn timestamps_wrapping_past_u32_max_play_on() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = run(&mut jb, steady(1, 0..20, u32::MAX - 5 * FRAME, 0), 500);
        assert_eq!(played(&out), (0..20).collect::<Vec<u8>>());
    }

    /// Delays between 0 and 60 ms from a fixed linear congruential sequence.
    fn jittered(count: u32) -> Vec<(RtpPacket, u64)> {
        let mut x: u32 = 12_345;
        (0..count)
            .map(|n| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let delay = u64::from((x >> 16) % 61);
                (packet(1, n, 0), u64::from(n) * 20 + delay)
            })
            .collect()
    }

    #[test]
    fn the_delay_grows_to_absorb_jitter_and_late_loss_stays_small() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = run(&mut jb, jittered(500), 10_500);
        let st = jb.stats();
        assert!(st.target_delay_ms >= 60, "target {} ms", st.target_delay_ms);
        assert!(
            st.target_delay_ms <= 100,
            "target {} ms",
            st.target_delay_ms
        );
        // Only the warm-up (before the window shows the jitter) may lose packets.
        assert!(st.late <= 10, "late {}", st.late);
        let codes = played(&out);
        assert!(
            codes.windows(2).all(|w| w[0] != w[1]),
            "no frame played twice"
        );
        assert!(codes.len() >= 490, "played {}", codes.len());
    }

    #[test]
    fn the_delay_comes_back_down_after_a_jitter_spike() {
        let mut jb = JitterBuffer::new(JitterConfig {
            window: 50,
            ..JitterConfig::default()
        });
        let mut arrivals = jittered(150);
        // Then 350 packets of a perfectly steady stream with no network delay at all.
        arrivals.extend((150..500).map(|n| (packet(1, n, 0), u64::from(n) * 20)));
        run(&mut jb, arrivals, 10_500);
        assert_eq!(jb.stats().target_delay_ms, 20);
        assert!(
            jb.stats().dropped_samples > 0,
            "frames were dropped to shed delay"
        );
        assert!(
            jb.buffered_ms() <= 20 + 2 * 20,
            "still {} ms buffered",
            jb.buffered_ms()
        );
    }

    #[test]
    fn a_long_silence_gap_resyncs_instead_of_waiting() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = steady(1, 0..10, 0, 0);
        // Silence suppression: 2 s with no packets; the timestamps jump accordingly.
        arrivals.extend((110..120).map(|n| (packet(1, n, 0), u64::from(n) * 20)));
        let out = run(&mut jb, arrivals, 2_600);
        let mut expected: Vec<u8> = (0..10).collect();
        expected.extend(110..120);
        assert_eq!(played(&out), expected);
        assert!(jb.stats().resyncs >= 1);
    }
}
