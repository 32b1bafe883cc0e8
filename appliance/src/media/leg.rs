//! One call leg's RTP socket and its real-time loop.

use super::MediaError;
use callgate_media::bridge::LegFormat;
use callgate_media::dtmf::{key_press_packets, Digit, DtmfReport, EventReceiver, ToneDetector};
use callgate_media::jitter::{JitterBuffer, JitterConfig, JitterStats, PlayoutFrame};
use callgate_media::quality::{estimate, LegQuality, QualityInputs};
use callgate_media::rtp::rtcp::{NtpClock, RemoteReception, RtcpSession, SenderInfo};
use callgate_media::rtp::srtp::{MasterKey, SrtpReceiver, SrtpSender};
use callgate_media::rtp::{
    LatchDecision, ReceiveStats, RtpPacket, RtpSender, SourceState, SymmetricLatch,
};
use callgate_media::sdp::NegotiatedAudio;
use callgate_media::tone::{mix_into, ToneGenerator};
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
    /// Shared with the leg's loop, which waits on it beside the RTP socket.
    rtcp: std::sync::Arc<UdpSocket>,
    /// Where RTCP goes: the RTP peer's port + 1 until the peer's own RTCP latches it.
    rtcp_latch: SymmetricLatch,
    rtcp_session: RtcpSession,
    /// When our last audio packet went and its timestamp, for the SR's RTP timestamp.
    last_sent: Option<(Instant, u32)>,
    port: u16,
    format: LegFormat,
    ptime_ms: u32,
    latch: SymmetricLatch,
    receiver: SourceState,
    sender: RtpSender,
    /// SRTP contexts when the leg negotiated RTP/SAVP.
    srtp: Option<(SrtpSender, SrtpReceiver)>,
    sent: u64,
    refused: u64,
    malformed: u64,
    /// SRTP/SRTCP packets whose authentication failed or that were replays.
    unauthenticated: u64,
    buf: Vec<u8>,
}

/// Fresh random SRTP master key material for one leg (from the operating system's CSPRNG).
pub fn fresh_srtp_key() -> Result<MasterKey, MediaError> {
    let mut material = [0u8; 30];
    getrandom::getrandom(&mut material).map_err(|e| MediaError::Socket {
        port: 0,
        source: std::io::Error::other(format!("no randomness for an SRTP key: {e}")),
    })?;
    Ok(MasterKey::from_bytes(material))
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
        let ssrc = random_u32();
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let clock = NtpClock::new(Instant::now(), since_epoch.as_micros() as u64);
        let cname = format!("{ssrc:08x}@callgate");
        Ok(RtpLeg {
            rtp,
            rtcp: std::sync::Arc::new(rtcp),
            rtcp_latch: SymmetricLatch::new(
                audio
                    .remote
                    .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))),
            ),
            rtcp_session: RtcpSession::new(ssrc, &cname, clock, Duration::from_secs(5)),
            last_sent: None,
            port,
            format: LegFormat {
                codec: audio.codec,
                payload_type: audio.payload_type,
                telephone_event_pt: audio.telephone_event_pt,
            },
            ptime_ms: audio.ptime_ms,
            latch: SymmetricLatch::new(audio.remote),
            receiver: SourceState::new(),
            sender: RtpSender::new(ssrc, random_u32() as u16, random_u32()),
            srtp: audio
                .srtp
                .as_ref()
                .map(|k| (SrtpSender::new(&k.ours), SrtpReceiver::new(&k.theirs))),
            sent: 0,
            refused: 0,
            malformed: 0,
            unauthenticated: 0,
            buf: vec![0; 2_048],
        })
    }

    /// Sets how often RTCP reports go (default 5 s, RFC 3550's minimum for a two-party call).
    pub fn with_rtcp_interval(mut self, interval: Duration) -> RtpLeg {
        let cname = format!("{:08x}@callgate", self.sender.ssrc());
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let clock = NtpClock::new(Instant::now(), since_epoch.as_micros() as u64);
        self.rtcp_session = RtcpSession::new(self.sender.ssrc(), &cname, clock, interval);
        self
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
        self.last_sent = Some((Instant::now(), packet.timestamp));
        Ok(true)
    }

    /// Sends an already-numbered packet a bridge relay built under our SSRC. It counts in
    /// this leg's RTCP sender reports (packets, octets, RTP timestamp), and our own numbering
    /// continues after it.
    pub async fn send_packet(&mut self, packet: &RtpPacket) -> Result<bool, MediaError> {
        let Some(to) = self.latch.send_to() else {
            return Ok(false);
        };
        self.transmit(to, packet).await?;
        let audio = Some(packet.payload_type) != self.format.telephone_event_pt;
        self.sender.note_relayed(packet, audio);
        if audio {
            self.last_sent = Some((Instant::now(), packet.timestamp));
        }
        Ok(true)
    }

    /// Sends a packet our own sender numbered and counted (an RFC 4733 event).
    async fn send_own_packet(&mut self, packet: &RtpPacket) -> Result<bool, MediaError> {
        let Some(to) = self.latch.send_to() else {
            return Ok(false);
        };
        self.transmit(to, packet).await?;
        Ok(true)
    }

    async fn transmit(&mut self, to: SocketAddr, packet: &RtpPacket) -> Result<(), MediaError> {
        let to_io = |e: callgate_media::rtp::RtpError| MediaError::Socket {
            port: self.port,
            source: std::io::Error::other(e.to_string()),
        };
        let mut bytes = packet.to_bytes().map_err(to_io)?;
        if let Some((sender, _)) = &mut self.srtp {
            bytes = sender.protect(&bytes).map_err(to_io)?;
        }
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
            let plain;
            let datagram = match &mut self.srtp {
                Some((_, receiver)) => match receiver.unprotect(&self.buf[..len]) {
                    Ok(p) => {
                        plain = p;
                        &plain[..]
                    }
                    Err(_) => {
                        // Not latched, not counted as media: only authenticated packets count.
                        self.unauthenticated += 1;
                        continue;
                    }
                },
                None => &self.buf[..len],
            };
            let parsed = RtpPacket::parse(datagram);
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

impl RtpLeg {
    /// Sends an RTCP report if one is due.
    pub(super) async fn send_rtcp_if_due(&mut self, now: Instant) -> Result<(), MediaError> {
        let sender = self.last_sent.map(|(at, ts)| SenderInfo {
            packets: self.sender.packets_sent(),
            octets: self.sender.octets_sent(),
            rtp_timestamp: ts.wrapping_add(
                (now.saturating_duration_since(at).as_micros() as u64 * 8 / 1_000) as u32,
            ),
        });
        let Some(mut report) = self
            .rtcp_session
            .poll_report(now, &mut self.receiver, sender)
        else {
            return Ok(());
        };
        if let Some((sender, _)) = &mut self.srtp {
            report = sender
                .protect_rtcp(&report)
                .map_err(|e| MediaError::Socket {
                    port: self.port + 1,
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
        if let Some(to) = self.rtcp_latch.send_to() {
            self.rtcp
                .send_to(&report, to)
                .await
                .map_err(|source| MediaError::Socket {
                    port: self.port + 1,
                    source,
                })?;
        }
        Ok(())
    }

    /// Takes in one RTCP datagram; malformed ones are counted and dropped.
    pub(super) fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let plain;
        let datagram = match &mut self.srtp {
            Some((_, receiver)) => match receiver.unprotect_rtcp(datagram) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(_) => {
                    self.unauthenticated += 1;
                    return;
                }
            },
            None => datagram,
        };
        match self.rtcp_session.handle_rtcp(now, datagram) {
            Ok(_) => {
                self.rtcp_latch.handle_packet(now, from, true);
            }
            Err(e) => {
                self.malformed += 1;
                tracing::debug!(port = self.port + 1, error = %e, "RTCP refused");
            }
        }
    }

    /// The RTCP socket, for loops that wait on it beside the RTP socket.
    pub(super) fn rtcp_socket(&self) -> std::sync::Arc<UdpSocket> {
        self.rtcp.clone()
    }

    /// Our SSRC on this leg.
    pub fn ssrc(&self) -> u32 {
        self.sender.ssrc()
    }

    /// A relay writing onto this leg under our SSRC, from our random initial numbering.
    pub(super) fn relay_onto(&self) -> callgate_media::bridge::StreamRelay {
        callgate_media::bridge::StreamRelay::new(
            self.format,
            self.sender.ssrc(),
            self.sender.next_sequence(),
            self.sender.next_timestamp(),
        )
    }

    /// Sends the RTCP BYE (best effort) and sums up the leg.
    pub(super) async fn finish(
        mut self,
        jitter: JitterStats,
        frames_not_consumed: u64,
    ) -> LegReport {
        if let Some(to) = self.rtcp_latch.send_to() {
            let mut bye = self.rtcp_session.bye(&mut self.receiver);
            if let Some((sender, _)) = &mut self.srtp {
                match sender.protect_rtcp(&bye) {
                    Ok(protected) => bye = protected,
                    Err(_) => bye.clear(),
                }
            }
            // Best effort: the call is over either way.
            if !bye.is_empty() {
                let _ = self.rtcp.send_to(&bye, to).await;
            }
        }
        LegReport {
            quality: self.quality(&jitter),
            remote_reception: self.rtcp_session.remote_reception(),
            receive: self.receiver.stats(),
            jitter,
            packets_sent: self.sent,
            relayed: self.sender.relayed_packets(),
            refused: self.refused,
            malformed: self.malformed,
            unauthenticated: self.unauthenticated,
            frames_not_consumed,
            remote: self.latch.send_to(),
        }
    }

    /// The quality estimate from what we measured and what the far end reported.
    fn quality(&self, jitter: &JitterStats) -> LegQuality {
        let played = jitter.played_samples + jitter.concealed_samples;
        let loss_percent = if played == 0 {
            0.0
        } else {
            jitter.concealed_samples as f64 * 100.0 / played as f64
        };
        estimate(&QualityInputs {
            loss_percent,
            round_trip_ms: self
                .rtcp_session
                .remote_reception()
                .and_then(|r| r.round_trip)
                .map(|d| d.as_secs_f64() * 1_000.0),
            jitter_buffer_ms: f64::from(jitter.target_delay_ms),
            ptime_ms: f64::from(self.ptime_ms),
        })
    }
}

/// In-band DTMF: the key's dual tone for `ms`, then as long again of silence, in frames.
fn key_tone_frames(digit: Digit, ms: u32, frame: usize) -> Vec<Vec<i16>> {
    let (row, col) = digit.frequencies();
    let n = ms as usize * 8;
    let mut samples = ToneGenerator::new(row, 6_000).next_samples(n);
    mix_into(
        &mut samples,
        &ToneGenerator::new(col, 6_000).next_samples(n),
    );
    samples.resize(2 * n, 0);
    samples
        .chunks(frame)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(frame, 0);
            f
        })
        .collect()
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
    /// Of those, packets a bridge relayed onto this leg (counted in its RTCP sender reports).
    pub relayed: u64,
    /// Packets refused by the latch or for an unnegotiated payload type.
    pub refused: u64,
    pub malformed: u64,
    /// SRTP/SRTCP packets refused for failed authentication or replay.
    pub unauthenticated: u64,
    /// Frames the consumer did not take in time (its channel was full); counted, never hidden.
    pub frames_not_consumed: u64,
    pub remote: Option<SocketAddr>,
    /// What the far end last reported about our stream (RTCP).
    pub remote_reception: Option<RemoteReception>,
    /// E-model estimate for what this leg's listener (us) heard, with RTCP round trip.
    pub quality: LegQuality,
}

/// Runs a leg in real time: every packet time, sends the next frame from `outgoing` (or
/// advances the clock over silence when none is ready) and hands the next played-out frame to
/// `incoming`; in between, receives packets into the jitter buffer and RFC 4733 receiver.
/// Ends when `outgoing` is closed.
pub async fn run_audio_leg(
    leg: RtpLeg,
    outgoing: mpsc::Receiver<Vec<i16>>,
    incoming: mpsc::Sender<LegAudio>,
) -> Result<LegReport, MediaError> {
    let (_no_keys_tx, no_keys) = mpsc::channel(1);
    run_audio_leg_with_keys(leg, outgoing, no_keys, incoming).await
}

/// A key press to send: the key and how long it is held, ms.
pub type KeyPress = (Digit, u32);

/// As [`run_audio_leg`], also sending the key presses from `keys`: as RFC 4733 events when the
/// leg negotiated telephone-event (one event packet per packet time, the audio frame of that
/// packet time being skipped), else as in-band dual tones. On a leg without telephone-event,
/// received audio also goes through the Goertzel detector, so key presses arrive as
/// [`LegAudio::Dtmf`] either way.
pub async fn run_audio_leg_with_keys(
    mut leg: RtpLeg,
    mut outgoing: mpsc::Receiver<Vec<i16>>,
    mut keys: mpsc::Receiver<KeyPress>,
    incoming: mpsc::Sender<LegAudio>,
) -> Result<LegReport, MediaError> {
    let mut pending_events: std::collections::VecDeque<RtpPacket> = Default::default();
    let mut pending_tones: std::collections::VecDeque<Vec<i16>> = Default::default();
    let mut detector = leg
        .format
        .telephone_event_pt
        .is_none()
        .then(ToneDetector::new);
    let frame = leg.ptime_ms * 8;
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(leg.ptime_ms)));
    let mut jitter = JitterBuffer::new(JitterConfig {
        frame_samples: frame,
        ..JitterConfig::default()
    });
    let mut events = EventReceiver::new();
    let mut frames_not_consumed = 0;
    let mut rtcp_buf = vec![0u8; 1_500];
    let rtcp = leg.rtcp.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Ok((digit, ms)) = keys.try_recv() {
                    match leg.format.telephone_event_pt {
                        Some(pt) => pending_events.extend(key_press_packets(&mut leg.sender, pt, digit, ms, leg.ptime_ms)),
                        None => pending_tones.extend(key_tone_frames(digit, ms, frame as usize)),
                    }
                }
                let next = outgoing.try_recv();
                if let Some(event) = pending_events.pop_front() {
                    // The event stands in for this packet time's audio.
                    leg.send_own_packet(&event).await?;
                } else {
                    match next {
                        Ok(samples) => {
                            let samples = pending_tones.pop_front().unwrap_or(samples);
                            leg.send_audio(&samples).await?;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => match pending_tones.pop_front() {
                            Some(tone) => {
                                leg.send_audio(&tone).await?;
                            }
                            None => leg.sender.skip_samples(frame),
                        },
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
                let now = Instant::now();
                if let Some(f) = jitter.pop(now) {
                    if let Some(d) = &mut detector {
                        for report in d.feed(&f.samples) {
                            if incoming.try_send(LegAudio::Dtmf(report)).is_err() {
                                tracing::warn!(port = leg.port, ?report, "DTMF report not consumed");
                            }
                        }
                    }
                    if incoming.try_send(LegAudio::Frame(f)).is_err() {
                        frames_not_consumed += 1;
                    }
                }
                leg.send_rtcp_if_due(now).await?;
            }
            received = rtcp.recv_from(&mut rtcp_buf) => {
                let (len, from) = received.map_err(|source| MediaError::Socket { port: leg.port + 1, source })?;
                leg.handle_rtcp(Instant::now(), from, &rtcp_buf[..len]);
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
    Ok(leg.finish(jitter.stats(), frames_not_consumed).await)
}
