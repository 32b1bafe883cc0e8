//! RTP (RFC 3550) packets and per-leg stream state.
//!
//! Owns: reading and writing the RTP header (through `rtp-rs`), the receive-side sequence,
//! timestamp and SSRC bookkeeping with loss/jitter statistics ([`receive`]), and the send side
//! that keeps our own SSRC, sequence and timestamp continuous ([`send`]), and symmetric RTP
//! latching for peers behind NAT ([`latch`]), RTCP reports ([`rtcp`]) and SRTP/SRTCP with SDES
//! keys ([`srtp`]). Talks to: the media
//! driver (bytes in and out), the jitter buffer and the bridge. Must not: own sockets or read
//! the clock; arrival times are passed in.

pub mod latch;
pub mod receive;
pub mod rtcp;
pub mod send;
pub mod srtp;

pub use latch::{LatchDecision, SymmetricLatch};
pub use receive::{ReceiveStats, ReceptionReport, SourceEvent, SourceState};
pub use send::RtpSender;

use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

/// RTP clock rate of every codec we carry (G.711 and telephone-event).
pub const CLOCK_RATE: u32 = 8_000;

/// Why an RTP datagram was refused or could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("RTP datagram of {0} bytes is shorter than the 12-byte header")]
    TooShort(usize),
    /// The version bits are not 2.
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    /// CSRC list or header extension runs past the end of the datagram.
    #[error("RTP header claims {header_len} bytes but the datagram has {datagram_len}")]
    Truncated {
        header_len: usize,
        datagram_len: usize,
    },
    /// The padding count is zero or larger than the payload.
    #[error("RTP padding length {0} is invalid")]
    BadPadding(u8),
    /// An RTCP packet's length field runs past the datagram, or the datagram is empty.
    #[error("RTCP packet is truncated")]
    RtcpTruncated,
    /// A compound RTCP packet must start with a sender or receiver report.
    #[error("RTCP compound packet starts with packet type {0}, not SR/RR")]
    RtcpNotCompound(u8),
    /// An SRTP/SRTCP authentication tag did not verify (wrong key, tampering, corruption).
    #[error("SRTP authentication failed")]
    AuthenticationFailed,
    /// An SRTP/SRTCP packet index was already received or is older than the replay window.
    #[error("SRTP packet index {index} replayed or too old")]
    Replayed { index: u64 },
    /// An `a=crypto` attribute names a suite other than AES_CM_128_HMAC_SHA1_80.
    #[error("SRTP crypto suite `{0}` is not supported (only AES_CM_128_HMAC_SHA1_80)")]
    UnsupportedSuite(String),
    /// An `a=crypto` attribute is malformed.
    #[error("SDES crypto attribute is malformed: {0}")]
    BadCryptoAttribute(String),
    /// A payload type above 127 (the marker bit is separate) cannot be written.
    #[error("payload type {0} does not fit in 7 bits")]
    BadPayloadType(u8),
}

impl From<RtpReaderError> for RtpError {
    fn from(e: RtpReaderError) -> RtpError {
        match e {
            RtpReaderError::BufferTooShort(n) => RtpError::TooShort(n),
            RtpReaderError::UnsupportedVersion(v) => RtpError::BadVersion(v),
            RtpReaderError::HeadersTruncated {
                header_len,
                buffer_len,
            } => RtpError::Truncated {
                header_len,
                datagram_len: buffer_len,
            },
            RtpReaderError::PaddingLengthInvalid(p) => RtpError::BadPadding(p),
        }
    }
}

/// An owned RTP packet: the header fields the appliance uses and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

impl RtpPacket {
    /// Parses a datagram. CSRCs and header extensions are skipped, padding removed.
    pub fn parse(datagram: &[u8]) -> Result<RtpPacket, RtpError> {
        let r = RtpReader::new(datagram)?;
        Ok(RtpPacket {
            payload_type: r.payload_type(),
            marker: r.mark(),
            sequence: u16::from(r.sequence_number()),
            timestamp: r.timestamp(),
            ssrc: r.ssrc(),
            payload: r.payload().to_vec(),
        })
    }

    /// Writes the packet as a datagram (no CSRCs, no extension, no padding).
    pub fn to_bytes(&self) -> Result<Vec<u8>, RtpError> {
        if self.payload_type > 127 {
            return Err(RtpError::BadPayloadType(self.payload_type));
        }
        RtpPacketBuilder::new()
            .payload_type(self.payload_type)
            .marked(self.marker)
            .sequence(Seq::from(self.sequence))
            .timestamp(self.timestamp)
            .ssrc(self.ssrc)
            .payload(&self.payload)
            .build()
            .map_err(|_| RtpError::BadPayloadType(self.payload_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_survives_write_then_parse() {
        let p = RtpPacket {
            payload_type: 8,
            marker: true,
            sequence: 65_535,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x1234_5678,
            payload: vec![0xD5; 160],
        };
        let bytes = p.to_bytes().unwrap();
        assert_eq!(bytes.len(), 12 + 160);
        assert_eq!(RtpPacket::parse(&bytes).unwrap(), p);
    }

    #[test]
    fn short_and_wrong_version_datagrams_are_refused_by_name() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::TooShort(5)));
        let mut bytes = RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: 1,
            timestamp: 1,
            ssrc: 1,
            payload: vec![1, 2],
        }
        .to_bytes()
        .unwrap();
        bytes[0] = 0x40;
        assert_eq!(RtpPacket::parse(&bytes), Err(RtpError::BadVersion(1)));
    }

    #[test]
    fn a_payload_type_over_127_is_refused() {
        let p = RtpPacket {
            payload_type: 200,
            marker: false,
            sequence: 0,
            timestamp: 0,
            ssrc: 0,
            payload: vec![],
        };
        assert_eq!(p.to_bytes(), Err(RtpError::BadPayloadType(200)));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = RtpPacket::parse(&bytes);
        }
    }
}
