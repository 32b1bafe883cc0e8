//! RFC 3264 offer/answer for one G.711 audio stream per call leg.
//!
//! The appliance is the offerer towards carriers (outbound dialling) and phones it rings, and
//! the answerer for re-INVITEs (hold) and inbound calls. It carries exactly one audio stream:
//! any other stream is answered with port 0, as §6 requires.

use super::description::{Attribute, Connection, MediaDescription, Origin, SessionDescription};
use super::SdpError;
use crate::g711::Codec;
use crate::rtp::srtp::{CryptoAttribute, MasterKey};
use std::net::{IpAddr, SocketAddr};

/// The dynamic payload type we offer for RFC 4733 `telephone-event`.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// Shortest and longest packetisation we accept for G.711, in milliseconds.
const PTIME_RANGE_MS: std::ops::RangeInclusive<u32> = 10..=60;

/// Which way media flows, from the point of view of the description that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    /// Neither way, e.g. both ends on hold.
    Inactive,
}

impl Direction {
    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether the side that wrote this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The SDP attribute name.
    pub fn attribute_name(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction seen from the other end (`sendonly` ⇄ `recvonly`).
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// The direction written by a media section, else by the session, else `sendrecv`.
    fn of(session: &SessionDescription, m: &MediaDescription) -> Direction {
        let pick = |attrs: &[Attribute]| {
            attrs.iter().find_map(|a| match a.name.as_str() {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            })
        };
        pick(&m.attributes)
            .or_else(|| pick(&session.attributes))
            .unwrap_or(Direction::SendRecv)
    }
}

/// What this end of a leg can do, supplied by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address our RTP socket is reachable on.
    pub address: IpAddr,
    /// Our RTP port (RTCP on the next port up).
    pub rtp_port: u16,
    /// Codecs we carry on this leg, in our order of preference (used when we offer).
    pub codecs: Vec<Codec>,
    /// Whether we offer/accept RFC 4733 `telephone-event`.
    pub telephone_event: bool,
    /// Our preferred packetisation in milliseconds.
    pub ptime_ms: u32,
    /// The direction we want (e.g. `SendOnly` to put the other end on hold).
    pub direction: Direction,
    /// `o=` session id, fixed for the dialog.
    pub session_id: u64,
    /// `o=` version; the caller increments it for each new offer or changed answer.
    pub session_version: u64,
    /// Our SRTP master key when this leg may be encrypted (fresh random material per call):
    /// our offers then go out as RTP/SAVP with `a=crypto`, and RTP/SAVP offers are accepted.
    /// Plain RTP/AVP offers are still answered in the clear.
    pub srtp: Option<MasterKey>,
}

/// The SDES keys of an encrypted leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Protects what we send.
    pub ours: MasterKey,
    /// Checks and decrypts what the peer sends.
    pub theirs: MasterKey,
}

/// The result of a successful negotiation, from our point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// Where to send RTP; `None` when the peer gave port 0 or the hold address `0.0.0.0`.
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    /// The payload type carrying `codec` on this leg.
    pub payload_type: u8,
    /// The payload type of `telephone-event`, if both ends speak RFC 4733.
    pub telephone_event_pt: Option<u8>,
    pub ptime_ms: u32,
    /// Whether we send and/or receive.
    pub direction: Direction,
    /// Keys when the leg runs SRTP (RTP/SAVP), `None` for plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// Our answer to an offer and what it means for the leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    pub answer: SessionDescription,
    pub audio: NegotiatedAudio,
}

/// What one format token of an `m=` line is, to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Audio(Codec, u8),
    TelephoneEvent(u8),
    Other,
}

fn classify(m: &MediaDescription, token: &str) -> Format {
    let Ok(pt) = token.parse::<u8>() else {
        return Format::Other;
    };
    match m.rtpmap(token) {
        Some((name, 8000)) => {
            if let Some(codec) = Codec::from_encoding_name(name) {
                Format::Audio(codec, pt)
            } else if name.eq_ignore_ascii_case("telephone-event") {
                Format::TelephoneEvent(pt)
            } else {
                Format::Other
            }
        }
        Some(_) => Format::Other,
        None => match pt {
            0 => Format::Audio(Codec::Pcmu, 0),
            8 => Format::Audio(Codec::Pcma, 8),
            _ => Format::Other,
        },
    }
}

fn describe_formats(m: &MediaDescription) -> String {
    m.formats
        .iter()
        .map(|f| match m.rtpmap(f) {
            Some((name, rate)) => format!("{f} ({name}/{rate})"),
            None => f.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// For an audio stream over a transport we speak: whether it is SRTP (RTP/SAVP).
fn audio_transport(m: &MediaDescription) -> Option<bool> {
    if !m.media.eq_ignore_ascii_case("audio") {
        return None;
    }
    if m.proto.eq_ignore_ascii_case("RTP/AVP") {
        Some(false)
    } else if m.proto.eq_ignore_ascii_case("RTP/SAVP") {
        Some(true)
    } else {
        None
    }
}

/// The `a=crypto` lines of a stream that carry our suite, in the sender's order.
fn crypto_lines(m: &MediaDescription) -> Vec<CryptoAttribute> {
    m.attributes
        .iter()
        .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
        .filter_map(|a| CryptoAttribute::parse(a.value.as_deref()?).ok())
        .collect()
}

fn ptime_of(m: &MediaDescription, fallback: u32) -> u32 {
    m.attribute("ptime")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|p| PTIME_RANGE_MS.contains(p) && p % 10 == 0)
        .unwrap_or(fallback)
}

fn remote_of(
    session: &SessionDescription,
    m: &MediaDescription,
) -> Result<Option<SocketAddr>, SdpError> {
    let connection = session
        .connection_for(m)
        .ok_or_else(|| SdpError::BadAddress("no `c=` line for the audio stream".to_owned()))?;
    let ip = connection.ip()?;
    if ip.is_unspecified() || m.port == 0 {
        return Ok(None);
    }
    Ok(Some(SocketAddr::new(ip, m.port)))
}

fn origin(local: &LocalMedia) -> Origin {
    Origin {
        username: "callgate".to_owned(),
        session_id: local.session_id,
        session_version: local.session_version,
        addr_type: if local.address.is_ipv4() {
            "IP4"
        } else {
            "IP6"
        }
        .to_owned(),
        address: local.address.to_string(),
    }
}

fn audio_section(
    local: &LocalMedia,
    formats: &[(Codec, u8)],
    telephone_event_pt: Option<u8>,
    ptime_ms: u32,
    direction: Direction,
    crypto: Option<CryptoAttribute>,
) -> MediaDescription {
    let mut tokens: Vec<String> = formats.iter().map(|(_, pt)| pt.to_string()).collect();
    let mut attributes: Vec<Attribute> = formats
        .iter()
        .map(|(codec, pt)| {
            Attribute::with_value("rtpmap", format!("{pt} {}/8000", codec.encoding_name()))
        })
        .collect();
    if let Some(pt) = telephone_event_pt {
        tokens.push(pt.to_string());
        attributes.push(Attribute::with_value(
            "rtpmap",
            format!("{pt} telephone-event/8000"),
        ));
        attributes.push(Attribute::with_value("fmtp", format!("{pt} 0-16")));
    }
    attributes.push(Attribute::with_value("ptime", ptime_ms.to_string()));
    attributes.push(Attribute::flag(direction.attribute_name()));
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    if let Some(c) = crypto {
        attributes.push(Attribute::with_value("crypto", c.to_value()));
    }
    MediaDescription {
        media: "audio".to_owned(),
        port: local.rtp_port,
        proto: proto.to_owned(),
        formats: tokens,
        connection: None,
        other: Vec::new(),
        attributes,
    }
}

fn session(local: &LocalMedia, media: Vec<MediaDescription>) -> SessionDescription {
    SessionDescription {
        origin: origin(local),
        session_name: "callgate".to_owned(),
        connection: Some(Connection::for_ip(local.address)),
        other: Vec::new(),
        timing: "0 0".to_owned(),
        attributes: Vec::new(),
        media,
    }
}

/// Builds our offer: one audio stream with our codecs, `telephone-event` if enabled, our ptime
/// and direction.
pub fn create_offer(local: &LocalMedia) -> SessionDescription {
    let formats: Vec<(Codec, u8)> = local
        .codecs
        .iter()
        .map(|c| (*c, c.static_payload_type()))
        .collect();
    let te = local.telephone_event.then_some(TELEPHONE_EVENT_PT);
    session(
        local,
        vec![audio_section(
            local,
            &formats,
            te,
            local.ptime_ms,
            local.direction,
            local
                .srtp
                .clone()
                .map(|key| CryptoAttribute { tag: 1, key }),
        )],
    )
}

/// Answers an offer (RFC 3264 §6): accepts the first audio stream over RTP/AVP that shares a
/// codec with us, choosing the first such codec in the offerer's order; rejects every other
/// stream with port 0.
///
/// Errors when no stream can be accepted; [`SdpError::status_code`] and [`SdpError::warning`]
/// give the 488 response and its `Warning`.
pub fn answer_offer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<OfferAnswer, SdpError> {
    let mut chosen: Option<(usize, NegotiatedAudio)> = None;
    let mut no_codec: Option<SdpError> = None;
    let mut chosen_crypto: Option<CryptoAttribute> = None;
    for (index, m) in offer.media.iter().enumerate() {
        if chosen.is_some() || m.port == 0 {
            continue;
        }
        let Some(secure) = audio_transport(m) else {
            continue;
        };
        let crypto = if secure {
            let offered = crypto_lines(m);
            match (&local.srtp, offered.first()) {
                (Some(ours), Some(theirs)) => Some((ours.clone(), theirs.clone())),
                _ => {
                    let suites: Vec<&str> = m
                        .attributes
                        .iter()
                        .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
                        .filter_map(|a| a.value.as_deref()?.split_whitespace().nth(1))
                        .collect();
                    let offered = match (&local.srtp, suites.is_empty()) {
                        (None, _) => "RTP/SAVP to a leg that runs plain RTP".to_owned(),
                        (Some(_), true) => "RTP/SAVP without an a=crypto line".to_owned(),
                        (Some(_), false) => suites.join(", "),
                    };
                    no_codec.get_or_insert(SdpError::NoCommonCrypto { offered });
                    continue;
                }
            }
        } else {
            None
        };
        let formats: Vec<Format> = m.formats.iter().map(|f| classify(m, f)).collect();
        let Some((codec, pt)) = formats.iter().find_map(|f| match f {
            Format::Audio(codec, pt) if local.codecs.contains(codec) => Some((*codec, *pt)),
            _ => None,
        }) else {
            no_codec.get_or_insert(SdpError::NoCommonCodec {
                offered: describe_formats(m),
            });
            continue;
        };
        let telephone_event_pt = formats
            .iter()
            .find_map(|f| match f {
                Format::TelephoneEvent(pt) => Some(*pt),
                _ => None,
            })
            .filter(|_| local.telephone_event);
        let offered = Direction::of(offer, m);
        let remote = remote_of(offer, m)?;
        // An old-style hold (c=0.0.0.0) means "do not send to me".
        let offered = if remote.is_none() {
            Direction::from_flags(offered.sends(), false)
        } else {
            offered
        };
        let direction = Direction::from_flags(
            local.direction.sends() && offered.receives(),
            local.direction.receives() && offered.sends(),
        );
        chosen_crypto = crypto.as_ref().map(|(ours, theirs)| CryptoAttribute {
            tag: theirs.tag,
            key: ours.clone(),
        });
        chosen = Some((
            index,
            NegotiatedAudio {
                remote,
                codec,
                payload_type: pt,
                telephone_event_pt,
                ptime_ms: ptime_of(m, local.ptime_ms),
                direction,
                srtp: crypto.map(|(ours, theirs)| SrtpKeys {
                    ours,
                    theirs: theirs.key,
                }),
            },
        ));
    }
    let Some((accepted, audio)) = chosen else {
        return Err(no_codec.unwrap_or_else(|| SdpError::NoAudioStream {
            offered: offer
                .media
                .iter()
                .map(|m| format!("{} {} port {}", m.media, m.proto, m.port))
                .collect::<Vec<_>>()
                .join(", "),
        }));
    };
    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(index, m)| {
            if index == accepted {
                audio_section(
                    local,
                    &[(audio.codec, audio.payload_type)],
                    audio.telephone_event_pt,
                    audio.ptime_ms,
                    audio.direction,
                    chosen_crypto.clone(),
                )
            } else {
                MediaDescription {
                    media: m.media.clone(),
                    port: 0,
                    proto: m.proto.clone(),
                    formats: m.formats.iter().take(1).cloned().collect(),
                    connection: None,
                    other: Vec::new(),
                    attributes: Vec::new(),
                }
            }
        })
        .collect();
    Ok(OfferAnswer {
        answer: session(local, media),
        audio,
    })
}

/// Reads the answer to an offer we made (RFC 3264 §5/§6): the peer must keep our stream
/// layout and pick a codec we offered.
pub fn accept_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedAudio, SdpError> {
    if answer.media.len() != our_offer.media.len() {
        return Err(SdpError::AnswerMismatch(format!(
            "we offered {} stream(s), the answer has {}",
            our_offer.media.len(),
            answer.media.len()
        )));
    }
    let (ours, theirs) = our_offer
        .media
        .iter()
        .zip(&answer.media)
        .find(|(o, _)| audio_transport(o).is_some() && o.port != 0)
        .ok_or_else(|| SdpError::AnswerMismatch("our offer had no audio stream".to_owned()))?;
    if theirs.port == 0 {
        return Err(SdpError::NoAudioStream {
            offered: "the answer rejected our audio stream (port 0)".to_owned(),
        });
    }
    if audio_transport(theirs) != audio_transport(ours) {
        return Err(SdpError::AnswerMismatch(format!(
            "answered {} {} for our audio {} stream",
            theirs.media, theirs.proto, ours.proto
        )));
    }
    let srtp = if audio_transport(ours) == Some(true) {
        let theirs_crypto = crypto_lines(theirs).into_iter().next().ok_or_else(|| {
            SdpError::AnswerMismatch("the RTP/SAVP answer has no usable a=crypto".to_owned())
        })?;
        let ours_crypto = crypto_lines(ours)
            .into_iter()
            .find(|c| c.tag == theirs_crypto.tag)
            .ok_or_else(|| {
                SdpError::AnswerMismatch(format!(
                    "the answer's a=crypto tag {} is not one we offered",
                    theirs_crypto.tag
                ))
            })?;
        Some(SrtpKeys {
            ours: ours_crypto.key,
            theirs: theirs_crypto.key,
        })
    } else {
        None
    };
    let offered: Vec<Format> = ours.formats.iter().map(|f| classify(ours, f)).collect();
    let answered: Vec<Format> = theirs.formats.iter().map(|f| classify(theirs, f)).collect();
    let (codec, payload_type) = answered
        .iter()
        .find_map(|f| match f {
            Format::Audio(codec, pt) => Some((*codec, *pt)),
            _ => None,
        })
        .ok_or_else(|| SdpError::NoCommonCodec {
            offered: describe_formats(theirs),
        })?;
    if !offered
        .iter()
        .any(|f| matches!(f, Format::Audio(c, _) if *c == codec))
    {
        return Err(SdpError::AnswerMismatch(format!(
            "the answer chose {}, which we did not offer",
            codec.encoding_name()
        )));
    }
    let offered_te = offered
        .iter()
        .any(|f| matches!(f, Format::TelephoneEvent(_)));
    let telephone_event_pt = answered
        .iter()
        .find_map(|f| match f {
            Format::TelephoneEvent(pt) => Some(*pt),
            _ => None,
        })
        .filter(|_| offered_te);
    let remote = remote_of(answer, theirs)?;
    let theirs_dir = Direction::of(answer, theirs);
    let ours_dir = Direction::of(our_offer, ours);
    let direction = Direction::from_flags(
        ours_dir.sends() && theirs_dir.receives() && remote.is_some(),
        ours_dir.receives() && theirs_dir.sends(),
    );
    Ok(NegotiatedAudio {
        remote,
        codec,
        payload_type,
        telephone_event_pt,
        ptime_ms: ptime_of(theirs, ptime_of(ours, 20)),
        direction,
        srtp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia {
            address: "127.0.0.2".parse().unwrap(),
            rtp_port: 20_000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            session_id: 42,
            session_version: 1,
            srtp: None,
        }
    }

    fn offer(m_line: &str, extra: &str) -> SessionDescription {
        SessionDescription::parse(&format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m_line}\r\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn answers_pcmu_with_telephone_event_at_the_offered_address() {
        let o = offer(
            "m=audio 6000 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        );
        let oa = answer_offer(&o, &local()).unwrap();
        assert_eq!(oa.audio.remote, Some("10.0.0.1:6000".parse().unwrap()));
        assert_eq!(oa.audio.codec, Codec::Pcmu);
        assert_eq!(oa.audio.telephone_event_pt, Some(101));
        assert_eq!(oa.audio.direction, Direction::SendRecv);
        let m = &oa.answer.media[0];
        assert_eq!(m.port, 20_000);
        assert_eq!(m.formats, ["0", "101"]);
        assert!(m.has_flag("sendrecv"));
        assert_eq!(oa.answer.connection.as_ref().unwrap().address, "127.0.0.2");
    }

    #[test]
    fn follows_the_offerers_codec_order() {
        let oa = answer_offer(&offer("m=audio 6000 RTP/AVP 18 8 0", ""), &local()).unwrap();
        assert_eq!((oa.audio.codec, oa.audio.payload_type), (Codec::Pcma, 8));
        assert_eq!(oa.answer.media[0].formats, ["8"]);
        assert_eq!(
            oa.audio.telephone_event_pt, None,
            "telephone-event was not offered"
        );
    }

    #[test]
    fn recognises_g711_on_a_dynamic_payload_type() {
        let o = offer("m=audio 6000 RTP/AVP 96", "a=rtpmap:96 pcma/8000\r\n");
        let oa = answer_offer(&o, &local()).unwrap();
        assert_eq!((oa.audio.codec, oa.audio.payload_type), (Codec::Pcma, 96));
        assert_eq!(oa.answer.media[0].rtpmap("96"), Some(("PCMA", 8000)));
    }

    #[test]
    fn refuses_an_offer_without_g711_with_488_and_warning_305() {
        let o = offer("m=audio 6000 RTP/AVP 18 9", "a=rtpmap:18 G729/8000\r\n");
        let err = answer_offer(&o, &local()).unwrap_err();
        assert!(matches!(err, SdpError::NoCommonCodec { .. }));
        assert_eq!(err.status_code(), 488);
        let w = err.warning().unwrap();
        assert_eq!(w.code, 305);
        let header = w.header_value("gw.example");
        assert!(header.starts_with("305 gw.example \""), "{header}");
        assert!(header.contains("18 (G729/8000)"), "{header}");
    }

    const OFFERED_CRYPTO: &str =
        "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 30])
    }

    #[test]
    fn an_srtp_offer_is_answered_with_our_key_under_its_tag() {
        let mut me = local();
        me.srtp = Some(key(7));
        let o = offer("m=audio 6000 RTP/SAVP 0", OFFERED_CRYPTO);
        let oa = answer_offer(&o, &me).unwrap();
        let m = &oa.answer.media[0];
        assert_eq!(m.proto, "RTP/SAVP");
        let answered = CryptoAttribute::parse(m.attribute("crypto").unwrap()).unwrap();
        assert_eq!((answered.tag, &answered.key), (3, &key(7)));
        let keys = oa.audio.srtp.unwrap();
        assert_eq!(keys.ours, key(7));
        assert_eq!(
            keys.theirs,
            CryptoAttribute::parse(OFFERED_CRYPTO.trim_start_matches("a=crypto:").trim_end())
                .unwrap()
                .key
        );
    }

    #[test]
    fn a_plain_offer_stays_plain_even_when_we_could_encrypt() {
        let mut me = local();
        me.srtp = Some(key(7));
        let oa = answer_offer(&offer("m=audio 6000 RTP/AVP 0", ""), &me).unwrap();
        assert_eq!(oa.answer.media[0].proto, "RTP/AVP");
        assert_eq!(oa.audio.srtp, None);
    }

    #[test]
    fn an_srtp_offer_with_only_unknown_suites_gets_488() {
        let mut me = local();
        me.srtp = Some(key(7));
        let o = offer(
            "m=audio 6000 RTP/SAVP 0",
            "a=crypto:1 AEAD_AES_256_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
        );
        let err = answer_offer(&o, &me).unwrap_err();
        assert!(matches!(err, SdpError::NoCommonCrypto { .. }), "{err}");
        assert!(err.to_string().contains("AEAD_AES_256_GCM"), "{err}");
        assert_eq!((err.status_code(), err.warning().unwrap().code), (488, 305));
    }

    #[test]
    fn our_srtp_offer_and_the_peers_answer_give_both_keys() {
        let mut me = local();
        me.srtp = Some(key(1));
        let mut peer = local();
        peer.srtp = Some(key(2));
        let our_offer = create_offer(&me);
        assert_eq!(our_offer.media[0].proto, "RTP/SAVP");
        let theirs = answer_offer(
            &SessionDescription::parse(&our_offer.to_string()).unwrap(),
            &peer,
        )
        .unwrap();
        let ours = accept_answer(&our_offer, &theirs.answer).unwrap();
        assert_eq!(
            ours.srtp,
            Some(SrtpKeys {
                ours: key(1),
                theirs: key(2)
            })
        );
        assert_eq!(
            theirs.audio.srtp,
            Some(SrtpKeys {
                ours: key(2),
                theirs: key(1)
            })
        );
    }

    #[test]
    fn refuses_video_only_and_unknown_transport_offers_with_warning_304() {
        for m in [
            "m=audio 6000 UDP/TLS/RTP/SAVPF 0",
            "m=video 6000 RTP/AVP 96",
        ] {
            let err = answer_offer(&offer(m, ""), &local()).unwrap_err();
            assert!(matches!(err, SdpError::NoAudioStream { .. }), "{m}: {err}");
            assert_eq!((err.status_code(), err.warning().unwrap().code), (488, 304));
        }
    }

    #[test]
    fn refuses_srtp_on_a_leg_without_a_key_with_warning_305() {
        let err =
            answer_offer(&offer("m=audio 6000 RTP/SAVP 0", OFFERED_CRYPTO), &local()).unwrap_err();
        assert!(matches!(err, SdpError::NoCommonCrypto { .. }), "{err}");
        assert!(err.to_string().contains("plain RTP"), "{err}");
        assert_eq!(err.warning().unwrap().code, 305);
    }

    #[test]
    fn refuses_a_hostname_connection_with_warning_301() {
        let o = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 x\r\ns=-\r\nc=IN IP4 pbx.example\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        )
        .unwrap();
        let err = answer_offer(&o, &local()).unwrap_err();
        assert_eq!(err.warning().unwrap().code, 301);
    }

    #[test]
    fn rejects_extra_streams_with_port_zero_in_order() {
        let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 7000 RTP/AVP 96\r\nm=audio 6000 RTP/AVP 0\r\nm=audio 6002 RTP/AVP 8\r\n";
        let oa = answer_offer(&SessionDescription::parse(text).unwrap(), &local()).unwrap();
        let ports: Vec<u16> = oa.answer.media.iter().map(|m| m.port).collect();
        assert_eq!(ports, [0, 20_000, 0]);
        assert_eq!(oa.answer.media[0].media, "video");
        assert_eq!(oa.audio.remote.unwrap().port(), 6000);
    }

    #[test]
    fn hold_offers_get_the_mirrored_direction() {
        let cases = [
            ("a=sendonly\r\n", Direction::RecvOnly),
            ("a=recvonly\r\n", Direction::SendOnly),
            ("a=inactive\r\n", Direction::Inactive),
            ("", Direction::SendRecv),
        ];
        for (attr, expected) in cases {
            let oa = answer_offer(&offer("m=audio 6000 RTP/AVP 0", attr), &local()).unwrap();
            assert_eq!(oa.audio.direction, expected, "{attr}");
            assert!(oa.answer.media[0].has_flag(expected.attribute_name()));
        }
    }

    #[test]
    fn session_level_direction_applies_when_the_stream_has_none() {
        let o = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(
            answer_offer(&o, &local()).unwrap().audio.direction,
            Direction::RecvOnly
        );
    }

    #[test]
    fn old_style_hold_address_stops_our_sending() {
        let o = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        )
        .unwrap();
        let oa = answer_offer(&o, &local()).unwrap();
        assert_eq!(oa.audio.remote, None);
        assert_eq!(oa.audio.direction, Direction::RecvOnly);
    }

    #[test]
    fn our_own_hold_wish_limits_the_answer() {
        let mut me = local();
        me.direction = Direction::SendOnly;
        let oa = answer_offer(&offer("m=audio 6000 RTP/AVP 0", ""), &me).unwrap();
        assert_eq!(oa.audio.direction, Direction::SendOnly);
    }

    #[test]
    fn offered_ptime_is_kept_and_nonsense_falls_back() {
        let oa =
            answer_offer(&offer("m=audio 6000 RTP/AVP 0", "a=ptime:30\r\n"), &local()).unwrap();
        assert_eq!(oa.audio.ptime_ms, 30);
        assert_eq!(oa.answer.media[0].attribute("ptime"), Some("30"));
        let oa = answer_offer(&offer("m=audio 6000 RTP/AVP 0", "a=ptime:7\r\n"), &local()).unwrap();
        assert_eq!(oa.audio.ptime_ms, 20);
    }

    #[test]
    fn ipv6_offers_are_answered() {
        let o = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8\r\n",
        )
        .unwrap();
        let oa = answer_offer(&o, &local()).unwrap();
        assert_eq!(oa.audio.remote, Some("[::1]:6000".parse().unwrap()));
    }

    #[test]
    fn our_offer_answered_by_a_pcma_only_peer_negotiates_pcma_both_ways() {
        let me = local();
        let our_offer = create_offer(&me);
        let text = our_offer.to_string();
        assert!(text.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{text}");
        let mut peer = local();
        peer.codecs = vec![Codec::Pcma];
        peer.address = "127.0.0.3".parse().unwrap();
        peer.rtp_port = 30_000;
        let theirs = answer_offer(&SessionDescription::parse(&text).unwrap(), &peer).unwrap();
        let ours = accept_answer(
            &our_offer,
            &SessionDescription::parse(&theirs.answer.to_string()).unwrap(),
        )
        .unwrap();
        assert_eq!(ours.codec, Codec::Pcma);
        assert_eq!(ours.remote, Some("127.0.0.3:30000".parse().unwrap()));
        assert_eq!(ours.telephone_event_pt, Some(TELEPHONE_EVENT_PT));
        assert_eq!(
            theirs.audio.remote,
            Some("127.0.0.2:20000".parse().unwrap())
        );
    }

    #[test]
    fn our_hold_offer_leaves_us_sending_only() {
        let mut me = local();
        me.direction = Direction::SendOnly;
        let our_offer = create_offer(&me);
        let theirs = answer_offer(&our_offer, &local()).unwrap();
        assert!(theirs.answer.media[0].has_flag("recvonly"));
        let ours = accept_answer(&our_offer, &theirs.answer).unwrap();
        assert_eq!(ours.direction, Direction::SendOnly);
    }

    #[test]
    fn an_answer_with_a_codec_we_did_not_offer_is_refused() {
        let mut me = local();
        me.codecs = vec![Codec::Pcmu];
        let our_offer = create_offer(&me);
        let mut answer = answer_offer(&our_offer, &local()).unwrap().answer;
        answer.media[0].formats = vec!["8".into()];
        answer.media[0].attributes.clear();
        let err = accept_answer(&our_offer, &answer).unwrap_err();
        assert!(matches!(err, SdpError::AnswerMismatch(_)), "{err}");
    }

    #[test]
    fn an_answer_with_a_different_stream_count_is_refused() {
        let our_offer = create_offer(&local());
        let mut answer = answer_offer(&our_offer, &local()).unwrap().answer;
        answer.media.push(answer.media[0].clone());
        assert!(matches!(
            accept_answer(&our_offer, &answer),
            Err(SdpError::AnswerMismatch(_))
        ));
    }

    #[test]
    fn an_answer_rejecting_our_audio_is_an_error() {
        let our_offer = create_offer(&local());
        let mut answer = answer_offer(&our_offer, &local()).unwrap().answer;
        answer.media[0].port = 0;
        assert!(matches!(
            accept_answer(&our_offer, &answer),
            Err(SdpError::NoAudioStream { .. })
        ));
    }
}
