//! One call leg's RTP socket and its real-time loop.

use super::MediaError;
use callgate_media::bridge::LegFormat;
use callgate_media::dtmf::{DtmfReport, EventReceiver};
use callgate_media::jitter::{JitterBuffer, JitterConfig, JitterStats, PlayoutFrame};
use callgate_media::rtp::{
    LatchDecision, ReceiveStats, RtpPacket, RtpSender, SourceState, SymmetricLatch,
};
use callgate_media::sdp::NegotiatedAudio;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A packet the leg accepted, with when and where from.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    pub packet: RtpPacket,
    pub at: Instant,
    pub from: SocketAddr,
}

/// The RTP side of one call leg: socket pair, latch, receive state and our send numbering.
#[derive(Debug)]
pub struct RtpLeg {
    rtp: UdpSocket,
    /// Held so the pair stays ours; RTCP reports are not sent yet.
    _rtcp: UdpSocket,
    port: u16,
    format: LegFormat,
    ptime_ms: u32,
    latch: SymmetricLatch,
    receiver: SourceState,
    sender: RtpSender,
    sent: u64,
    refused: u64,
    malformed: u64,
    buf: Vec<u8>,
}

/// A random 32-bit value for SSRCs and initial sequence numbers (RFC 3550 §5.1 wants them
/// unpredictable, not secret).
fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

impl RtpLeg {
    /// A leg on a bound socket pair, sending as `audio` negotiated.
    pub fn new(
        sockets: (UdpSocket, UdpSocket),
        audio: &NegotiatedAudio,
    ) -> Result<RtpLeg, MediaError> {
        let (rtp, rtcp) = sockets;
        let port = rtp
            .local_addr()
            .map_err(|source| MediaError::Socket { port: 0, source })?
            .port();
        Ok(RtpLeg {
            rtp,
            _rtcp: rtcp,
            port,
            format: LegFormat {
                codec: audio.codec,
                payload_type: audio.payload_type,
                telephone_event_pt: audio.telephone_event_pt,
            },
            ptime_ms: audio.ptime_ms,
            latch: SymmetricLatch::new(audio.remote),
            receiver: SourceState::new(),
            sender: RtpSender::new(random_u32(), random_u32() as u16, random_u32()),
            sent: 0,
            refused: 0,
            malformed: 0,
            buf: vec![0; 2_048],
        })
    }

    /// Our RTP address.
    pub fn local_addr(&self) -> Result<SocketAddr, MediaError> {
        self.rtp.local_addr().map_err(|source| MediaError::Socket {
            port: self.port,
            source,
        })
    }

    /// How this leg carries audio and events.
    pub fn format(&self) -> LegFormat {
        self.format
    }

    /// Where our packets currently go (latched, else signalled).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.latch.send_to()
    }

    /// Encodes and sends one frame of audio. Returns `false` when the leg has no remote yet
    /// (the clock still advances so the stream stays continuous).
    pub async fn send_audio(&mut self, samples: &[i16]) -> Result<bool, MediaError> {
        let Some(to) = self.latch.send_to() else {
            self.sender.skip_samples(samples.len() as u32);
            return Ok(false);
        };
        let mut payload = Vec::with_capacity(samples.len());
        self.format.codec.encode(samples, &mut payload);
        let packet = self.sender.audio(self.format.payload_type, payload);
        self.transmit(to, &packet).await?;
        Ok(true)
    }

    /// Sends an already-numbered packet (a bridge relay's output).
    pub async fn send_packet(&mut self, packet: &RtpPacket) -> Result<bool, MediaError> {
        let Some(to) = self.latch.send_to() else {
            return Ok(false);
        };
        self.transmit(to, packet).await?;
        Ok(true)
    }

    async fn transmit(&mut self, to: SocketAddr, packet: &RtpPacket) -> Result<(), MediaError> {
        let bytes = packet.to_bytes().map_err(|e| MediaError::Socket {
            port: self.port,
            source: std::io::Error::other(e.to_string()),
        })?;
        self.rtp
            .send_to(&bytes, to)
            .await
            .map_err(|source| MediaError::Socket {
                port: self.port,
                source,
            })?;
        self.sent += 1;
        Ok(())
    }

    /// Waits for the next packet the leg accepts (valid RTP, negotiated payload type, from the
    /// latched source). Cancel-safe.
    pub async fn recv(&mut self) -> Result<ReceivedPacket, MediaError> {
        loop {
            let (len, from) =
                self.rtp
                    .recv_from(&mut self.buf)
                    .await
                    .map_err(|source| MediaError::Socket {
                        port: self.port,
                        source,
                    })?;
            let at = Instant::now();
            let parsed = RtpPacket::parse(&self.buf[..len]);
            let valid = parsed.as_ref().is_ok_and(|p| {
                p.payload_type == self.format.payload_type
                    || Some(p.payload_type) == self.format.telephone_event_pt
            });
            match self.latch.handle_packet(at, from, valid) {
                LatchDecision::Refuse => {
                    if parsed.is_err() {
                        self.malformed += 1;
                    } else {
                        self.refused += 1;
                    }
                    continue;
                }
                LatchDecision::Latched(addr) => {
                    tracing::debug!(port = self.port, remote = %addr, "RTP leg latched");
                }
                LatchDecision::Accept => {}
            }
            let Ok(packet) = parsed else {
                self.malformed += 1;
                continue;
            };
            if !valid {
                self.refused += 1;
                continue;
            }
            if let callgate_media::rtp::SourceEvent::Accepted { .. } =
                self.receiver.handle_packet(at, &packet)
            {
                return Ok(ReceivedPacket { packet, at, from });
            }
        }
    }
}

/// What a leg's loop hands to whoever consumes its audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegAudio {
    /// One played-out frame (ptime worth of linear samples).
    Frame(PlayoutFrame),
    /// A key press received as RFC 4733 events.
    Dtmf(DtmfReport),
}

/// What a leg's loop measured by the time it ended.
#[derive(Debug, Clone)]
pub struct LegReport {
    pub receive: ReceiveStats,
    pub jitter: JitterStats,
    pub packets_sent: u64,
    /// Packets refused by the latch or for an unnegotiated payload type.
    pub refused: u64,
    pub malformed: u64,
    /// Frames the consumer did not take in time (its channel was full); counted, never hidden.
    pub frames_not_consumed: u64,
    pub remote: Option<SocketAddr>,
}

/// Runs a leg in real time: every packet time, sends the next frame from `outgoing` (or
/// advances the clock over silence when none is ready) and hands the next played-out frame to
/// `incoming`; in between, receives packets into the jitter buffer and RFC 4733 receiver.
/// Ends when `outgoing` is closed.
pub async fn run_audio_leg(
    mut leg: RtpLeg,
    mut outgoing: mpsc::Receiver<Vec<i16>>,
    incoming: mpsc::Sender<LegAudio>,
) -> Result<LegReport, MediaError> {
    let frame = leg.ptime_ms * 8;
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(leg.ptime_ms)));
    let mut jitter = JitterBuffer::new(JitterConfig {
        frame_samples: frame,
        ..JitterConfig::default()
    });
    let mut events = EventReceiver::new();
    let mut frames_not_consumed = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match outgoing.try_recv() {
                    Ok(samples) => {
                        leg.send_audio(&samples).await?;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => leg.sender.skip_samples(frame),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
                if let Some(f) = jitter.pop(Instant::now()) {
                    if incoming.try_send(LegAudio::Frame(f)).is_err() {
                        frames_not_consumed += 1;
                    }
                }
            }
            received = leg.recv() => {
                let r = received?;
                if Some(r.packet.payload_type) == leg.format.telephone_event_pt {
                    for report in events.handle_packet(&r.packet) {
                        if incoming.try_send(LegAudio::Dtmf(report)).is_err() {
                            tracing::warn!(port = leg.port, ?report, "DTMF report not consumed");
                        }
                    }
                } else {
                    jitter.push(r.at, &r.packet, leg.format.codec);
                }
            }
        }
    }
    if frames_not_consumed > 0 {
        tracing::warn!(
            port = leg.port,
            frames_not_consumed,
            "leg audio consumer fell behind"
        );
    }
    Ok(LegReport {
        receive: leg.receiver.stats(),
        jitter: jitter.stats(),
        packets_sent: leg.sent,
        refused: leg.refused,
        malformed: leg.malformed,
        frames_not_consumed,
        remote: leg.latch.send_to(),
    })
}
