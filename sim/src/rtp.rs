//! The media of one simulated call leg: answers the SDP offer (`callgate_media::sdp`),
//! then a tokio task sends a [`Voice`] as G.711 RTP every 20 ms and counts what arrives
//! (packets and frames with audible energy). Owns the leg's UDP socket; no SIP.

use crate::voice::{rms, Voice};
use crate::SimError;
use callgate_media::g711::Codec;
use callgate_media::rtp::{RtpPacket, RtpSender};
use callgate_media::sdp::{answer_offer, Direction, LocalMedia, NegotiatedAudio};
use callgate_media::sdp::{create_offer, SessionDescription};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What one leg sent and heard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// RTP packets sent.
    pub sent: u64,
    /// RTP packets received.
    pub received: u64,
    /// Received 20-ms frames with audible energy (RMS over 200).
    pub audible: u64,
}

/// A leg's socket, bound and not yet playing.
#[derive(Debug)]
pub struct MediaSocket {
    socket: UdpSocket,
    local: SocketAddr,
}

impl MediaSocket {
    /// Binds a free port on `ip`.
    pub async fn bind(ip: IpAddr) -> Result<MediaSocket, SimError> {
        let addr = SocketAddr::new(ip, 0);
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        Ok(MediaSocket { socket, local })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn local_media(&self, session_id: u64) -> LocalMedia {
        LocalMedia {
            address: self.local.ip(),
            rtp_port: self.local.port(),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            session_id,
            session_version: 1,
            srtp: None,
        }
    }

    /// Answers `offer`: our SDP and what was agreed. A refusal carries the SIP status to
    /// answer with (488 for no common codec).
    pub fn answer(&self, offer: &[u8], session_id: u64) -> Result<(Vec<u8>, NegotiatedAudio), u16> {
        let text = std::str::from_utf8(offer).map_err(|_| 400u16)?;
        let offer = SessionDescription::parse(text).map_err(|e| e.status_code())?;
        let oa =
            answer_offer(&offer, &self.local_media(session_id)).map_err(|e| e.status_code())?;
        Ok((oa.answer.to_string().into_bytes(), oa.audio))
    }

    /// Our offer (for calls we place).
    pub fn offer(&self, session_id: u64) -> Vec<u8> {
        create_offer(&self.local_media(session_id))
            .to_string()
            .into_bytes()
    }

    /// Starts sending `voice` to the negotiated address (or, without one, to wherever the
    /// peer's RTP comes from) until `stop` turns true; the task returns the counts.
    pub fn play(
        self,
        audio: NegotiatedAudio,
        mut voice: Voice,
        ssrc: u32,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<RtpStats> {
        tokio::spawn(async move {
            let mut stats = RtpStats::default();
            let mut sender = RtpSender::new(ssrc, (ssrc >> 16) as u16, ssrc);
            let mut remote = audio.remote;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut buf = vec![0u8; 2048];
            let mut pcm = Vec::with_capacity(160);
            let mut payload = Vec::with_capacity(160);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let frame = voice.next_frame();
                        payload.clear();
                        audio.codec.encode(&frame, &mut payload);
                        let packet = sender.audio(audio.payload_type, payload.clone());
                        if let (Some(to), Ok(bytes)) = (remote, packet.to_bytes()) {
                            if self.socket.send_to(&bytes, to).await.is_ok() {
                                stats.sent += 1;
                            }
                        }
                    }
                    r = self.socket.recv_from(&mut buf) => {
                        let Ok((n, from)) = r else { continue };
                        let Ok(p) = RtpPacket::parse(&buf[..n]) else { continue };
                        stats.received += 1;
                        if remote.is_none() {
                            remote = Some(from);
                        }
                        if p.payload_type == audio.payload_type {
                            pcm.clear();
                            audio.codec.decode(&p.payload, &mut pcm);
                            if rms(&pcm) > 200.0 {
                                stats.audible += 1;
                            }
                        }
                    }
                    () = crate::stopped(&mut stop) => return stats,
                }
            }
        })
    }
}
