//! The send side of one leg: our SSRC, a sequence number that never skips, and a timestamp
//! that advances with the samples sent (and across silence, so the far end's playout clock
//! stays true).

use super::RtpPacket;

/// Writes the header fields of every packet we send on a leg.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    next_seq: u16,
    next_timestamp: u32,
    talkspurt_start: bool,
    packets_sent: u32,
    octets_sent: u32,
    /// Packets a bridge relayed under our SSRC (see [`RtpSender::note_relayed`]).
    relayed: u64,
}

impl RtpSender {
    /// A sender with the given SSRC and random-looking initial sequence and timestamp (the
    /// caller supplies them, cores do not draw randomness).
    pub fn new(ssrc: u32, initial_seq: u16, initial_timestamp: u32) -> RtpSender {
        RtpSender {
            ssrc,
            next_seq: initial_seq,
            next_timestamp: initial_timestamp,
            talkspurt_start: true,
            packets_sent: 0,
            octets_sent: 0,
            relayed: 0,
        }
    }

    /// Packets built so far (for RTCP sender reports; wraps like the RTCP field).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// Payload octets built so far (for RTCP sender reports; wraps like the RTCP field).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    fn count(&mut self, payload_len: usize) {
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The timestamp the next audio packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.next_seq
    }

    /// Builds the next audio packet; the timestamp then advances by the payload's sample count
    /// (one byte per sample for G.711). The first packet after [`Self::skip_samples`] or
    /// creation carries the marker bit (start of a talkspurt).
    pub fn audio(&mut self, payload_type: u8, payload: Vec<u8>) -> RtpPacket {
        let samples = payload.len() as u32;
        self.count(payload.len());
        let p = RtpPacket {
            payload_type,
            marker: std::mem::take(&mut self.talkspurt_start),
            sequence: self.next_seq,
            timestamp: self.next_timestamp,
            ssrc: self.ssrc,
            payload,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(samples);
        p
    }

    /// Builds a packet at an explicit timestamp without advancing the audio clock (RFC 4733
    /// events carry the timestamp of the event's start).
    pub fn at_timestamp(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: Vec<u8>,
    ) -> RtpPacket {
        self.count(payload.len());
        let p = RtpPacket {
            payload_type,
            marker,
            sequence: self.next_seq,
            timestamp,
            ssrc: self.ssrc,
            payload,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        p
    }

    /// Accounts for a packet a bridge relay built and sent under our SSRC: it counts in our
    /// RTCP sender report (packets, payload octets), and our own numbering continues after
    /// it (sequence, and for audio the timestamp past its samples) so a later prompt or a
    /// new relay never reuses its numbers. `audio` is false for RFC 4733 events, whose
    /// timestamp marks the event's start.
    pub fn note_relayed(&mut self, packet: &RtpPacket, audio: bool) {
        self.count(packet.payload.len());
        self.relayed += 1;
        if packet.sequence.wrapping_sub(self.next_seq) < 0x8000 {
            self.next_seq = packet.sequence.wrapping_add(1);
        }
        let end = if audio {
            packet.timestamp.wrapping_add(packet.payload.len() as u32)
        } else {
            packet.timestamp
        };
        if end.wrapping_sub(self.next_timestamp) < 0x8000_0000 {
            self.next_timestamp = end;
        }
        self.talkspurt_start = false;
    }

    /// Packets relayed under our SSRC so far (this leg's share of a bridge).
    pub fn relayed_packets(&self) -> u64 {
        self.relayed
    }

    /// Advances the clock over `samples` we did not send (silence, hold); the next packet
    /// starts a talkspurt.
    pub fn skip_samples(&mut self, samples: u32) {
        self.next_timestamp = self.next_timestamp.wrapping_add(samples);
        self.talkspurt_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_timestamp_advance_without_gaps_and_wrap() {
        let mut s = RtpSender::new(5, 65_535, u32::MAX - 159);
        let a = s.audio(0, vec![0; 160]);
        let b = s.audio(0, vec![0; 160]);
        assert!(a.marker && !b.marker);
        assert_eq!((a.sequence, b.sequence), (65_535, 0));
        assert_eq!((a.timestamp, b.timestamp), (u32::MAX - 159, 0));
        assert_eq!(b.ssrc, 5);
    }

    #[test]
    fn skipped_silence_advances_the_clock_and_marks_the_next_talkspurt() {
        let mut s = RtpSender::new(5, 10, 1_000);
        s.audio(0, vec![0; 160]);
        s.skip_samples(800);
        let p = s.audio(0, vec![0; 160]);
        assert_eq!((p.sequence, p.timestamp, p.marker), (11, 1_960, true));
    }
}
