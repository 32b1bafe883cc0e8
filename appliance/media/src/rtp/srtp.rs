//! SRTP and SRTCP (RFC 3711) with the AES_CM_128_HMAC_SHA1_80 suite, keyed by SDES
//! (RFC 4568 `a=crypto`), for legs that offer it — phones first.
//!
//! Owns: the key derivation, per-SSRC rollover counters, the replay window, and the
//! `a=crypto` attribute's key parameter. Must not: generate keys (the driver supplies random
//! key material) or decide whether a leg must be encrypted (policy is the caller's).

use super::RtpError;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::collections::HashMap;

/// The only crypto suite we speak.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const TAG_LEN: usize = 10;
/// Packets remembered for replay protection (RFC 3711 §3.3.2 minimum).
const REPLAY_WINDOW: u64 = 64;

/// A 128-bit master key and 112-bit master salt.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; 16],
    salt: [u8; 14],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From 30 bytes of key material: 16 of key then 14 of salt.
    pub fn from_bytes(material: [u8; 30]) -> MasterKey {
        let mut key = [0; 16];
        let mut salt = [0; 14];
        key.copy_from_slice(&material[..16]);
        salt.copy_from_slice(&material[16..]);
        MasterKey { key, salt }
    }

    /// The `inline:` key parameter of an `a=crypto` line.
    pub fn to_inline(&self) -> String {
        let mut material = self.key.to_vec();
        material.extend_from_slice(&self.salt);
        format!(
            "inline:{}",
            base64::engine::general_purpose::STANDARD.encode(material)
        )
    }

    /// Parses an `inline:<base64>[|lifetime][|MKI:len]` key parameter. Lifetimes are accepted
    /// and ignored (we re-key per call); MKIs are refused (we do not carry them).
    pub fn from_inline(param: &str) -> Result<MasterKey, RtpError> {
        let bad = |why: &str| RtpError::BadCryptoAttribute(why.to_owned());
        let value = param
            .strip_prefix("inline:")
            .ok_or_else(|| bad("key method is not `inline:`"))?;
        let mut parts = value.split('|');
        let encoded = parts.next().unwrap_or("");
        if parts.any(|p| p.contains(':')) {
            return Err(bad("MKI is not supported"));
        }
        let material = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| bad("key is not base64"))?;
        let material: [u8; 30] = material
            .try_into()
            .map_err(|_| bad("key material is not 30 bytes"))?;
        Ok(MasterKey::from_bytes(material))
    }
}

/// One `a=crypto` line: `<tag> <suite> <key-params>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    pub tag: u32,
    pub key: MasterKey,
}

impl CryptoAttribute {
    /// Parses the attribute value; suites other than ours are [`RtpError::UnsupportedSuite`].
    pub fn parse(value: &str) -> Result<CryptoAttribute, RtpError> {
        let mut f = value.split_ascii_whitespace();
        let tag = f
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| RtpError::BadCryptoAttribute("tag is not a number".to_owned()))?;
        let suite = f.next().unwrap_or("");
        if suite != SUITE {
            return Err(RtpError::UnsupportedSuite(suite.to_owned()));
        }
        let key = MasterKey::from_inline(f.next().unwrap_or(""))?;
        Ok(CryptoAttribute { tag, key })
    }

    /// The attribute value.
    pub fn to_value(&self) -> String {
        format!("{} {SUITE} {}", self.tag, self.key.to_inline())
    }
}

/// Session keys for one direction of RTP or RTCP.
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; 14],
    auth: Hmac<Sha1>,
}

/// AES-CM keystream XORed into `data`, starting from counter block `iv`.
fn apply_keystream(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let mut counter = u128::from_be_bytes(iv);
    for chunk in data.chunks_mut(16) {
        let mut block = aes::Block::from(counter.to_be_bytes());
        cipher.encrypt_block(&mut block);
        for (d, k) in chunk.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
        // Only the low 16 bits count blocks; 2^16 blocks per packet is far beyond any MTU.
        counter = counter.wrapping_add(1);
    }
}

/// RFC 3711 §4.3.1 key derivation with a key derivation rate of 0.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let cipher = Aes128::new(&master.key.into());
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&master.salt);
    iv[7] ^= label;
    out.fill(0);
    apply_keystream(&cipher, iv, out);
}

fn session_keys(master: &MasterKey, rtcp: bool) -> SessionKeys {
    let base = if rtcp { 3 } else { 0 };
    let mut key = [0u8; 16];
    let mut auth = [0u8; 20];
    let mut salt = [0u8; 14];
    derive(master, base, &mut key);
    derive(master, base + 1, &mut auth);
    derive(master, base + 2, &mut salt);
    SessionKeys {
        cipher: Aes128::new(&key.into()),
        salt,
        auth: <Hmac<Sha1> as Mac>::new_from_slice(&auth).expect("HMAC takes any key length"),
    }
}

fn packet_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
        iv[8 + i] ^= b;
    }
    iv
}

fn tag(keys: &SessionKeys, parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut mac = keys.auth.clone();
    for p in parts {
        mac.update(p);
    }
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full[..TAG_LEN]);
    t
}

/// Length of an RTP header including CSRCs and extension.
fn rtp_header_len(packet: &[u8]) -> Result<usize, RtpError> {
    if packet.len() < 12 {
        return Err(RtpError::TooShort(packet.len()));
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(len + 2..len + 4).ok_or(RtpError::Truncated {
            header_len: len + 4,
            datagram_len: packet.len(),
        })?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if len > packet.len() {
        return Err(RtpError::Truncated {
            header_len: len,
            datagram_len: packet.len(),
        });
    }
    Ok(len)
}

fn ssrc_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
}

/// The sliding replay window over 48-bit (SRTP) or 31-bit (SRTCP) indexes.
#[derive(Debug, Default, Clone, Copy)]
struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: index `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> Result<(), RtpError> {
        let Some(h) = self.highest else { return Ok(()) };
        if index > h {
            return Ok(());
        }
        let behind = h - index;
        if behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0 {
            return Err(RtpError::Replayed { index });
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => self.seen |= 1 << (h - index),
            Some(h) => {
                self.seen = self.seen.checked_shl((index - h) as u32).unwrap_or(0) | 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// Protects our outgoing RTP and RTCP with our master key.
pub struct SrtpSender {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Per SSRC: rollover counter and last sequence number sent.
    rollover: HashMap<u32, (u32, u16)>,
    srtcp_index: u32,
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSender")
            .field("sources", &self.rollover.len())
            .finish()
    }
}

impl SrtpSender {
    /// A sender for `key` (the one we put in our `a=crypto`).
    pub fn new(key: &MasterKey) -> SrtpSender {
        SrtpSender {
            rtp: session_keys(key, false),
            rtcp: session_keys(key, true),
            rollover: HashMap::new(),
            srtcp_index: 0,
        }
    }

    /// Encrypts and authenticates one RTP datagram.
    pub fn protect(&mut self, packet: &[u8]) -> Result<Vec<u8>, RtpError> {
        let header = rtp_header_len(packet)?;
        let ssrc = ssrc_of(packet);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let entry = self.rollover.entry(ssrc).or_insert((0, seq));
        if seq < entry.1 && entry.1 - seq > 0x8000 {
            entry.0 = entry.0.wrapping_add(1);
        }
        if seq.wrapping_sub(entry.1) < 0x8000 {
            entry.1 = seq;
        }
        let roc = entry.0;
        let index = (u64::from(roc) << 16) | u64::from(seq);
        let mut out = packet.to_vec();
        apply_keystream(
            &self.rtp.cipher,
            packet_iv(&self.rtp.salt, ssrc, index),
            &mut out[header..],
        );
        let t = tag(&self.rtp, &[&out, &roc.to_be_bytes()]);
        out.extend_from_slice(&t);
        Ok(out)
    }

    /// Encrypts and authenticates one compound RTCP datagram (E flag set).
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, RtpError> {
        if packet.len() < 8 {
            return Err(RtpError::RtcpTruncated);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let index = self.srtcp_index & 0x7FFF_FFFF;
        self.srtcp_index = self.srtcp_index.wrapping_add(1);
        let mut out = packet.to_vec();
        apply_keystream(
            &self.rtcp.cipher,
            packet_iv(&self.rtcp.salt, ssrc, u64::from(index)),
            &mut out[8..],
        );
        out.extend_from_slice(&(0x8000_0000 | index).to_be_bytes());
        let t = tag(&self.rtcp, &[&out]);
        out.extend_from_slice(&t);
        Ok(out)
    }
}

/// Per-source receive state for SRTP.
#[derive(Debug, Default, Clone, Copy)]
struct SourceCrypto {
    roc: u32,
    highest_seq: Option<u16>,
    replay: ReplayWindow,
}

/// Checks and decrypts the peer's SRTP and SRTCP with the key from its `a=crypto`.
pub struct SrtpReceiver {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    sources: HashMap<u32, SourceCrypto>,
    rtcp_replay: HashMap<u32, ReplayWindow>,
}

impl std::fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl SrtpReceiver {
    /// A receiver for the peer's `key`.
    pub fn new(key: &MasterKey) -> SrtpReceiver {
        SrtpReceiver {
            rtp: session_keys(key, false),
            rtcp: session_keys(key, true),
            sources: HashMap::new(),
            rtcp_replay: HashMap::new(),
        }
    }

    /// Authenticates, replay-checks and decrypts one SRTP datagram into plain RTP. State only
    /// changes for packets that authenticate.
    pub fn unprotect(&mut self, datagram: &[u8]) -> Result<Vec<u8>, RtpError> {
        if datagram.len() < 12 + TAG_LEN {
            return Err(RtpError::TooShort(datagram.len()));
        }
        let (body, received_tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let header = rtp_header_len(body)?;
        let ssrc = ssrc_of(body);
        let seq = u16::from_be_bytes([body[2], body[3]]);
        let state = self.sources.get(&ssrc).copied().unwrap_or_default();
        // RFC 3711 §3.3.1: guess the rollover counter from the highest sequence number seen.
        let roc = match state.highest_seq {
            None => state.roc,
            Some(s_l) if s_l < 0x8000 => {
                if seq > s_l && seq - s_l > 0x8000 {
                    state.roc.wrapping_sub(1)
                } else {
                    state.roc
                }
            }
            Some(s_l) => {
                if seq < s_l - 0x8000 {
                    state.roc.wrapping_add(1)
                } else {
                    state.roc
                }
            }
        };
        let index = (u64::from(roc) << 16) | u64::from(seq);
        state.replay.check(index)?;
        let expected = tag(&self.rtp, &[body, &roc.to_be_bytes()]);
        if !constant_time_eq(&expected, received_tag) {
            return Err(RtpError::AuthenticationFailed);
        }
        let mut out = body.to_vec();
        apply_keystream(
            &self.rtp.cipher,
            packet_iv(&self.rtp.salt, ssrc, index),
            &mut out[header..],
        );
        let entry = self.sources.entry(ssrc).or_default();
        entry.replay.accept(index);
        let current = (u64::from(entry.roc) << 16) | u64::from(entry.highest_seq.unwrap_or(0));
        if entry.highest_seq.is_none() || index > current {
            entry.roc = roc;
            entry.highest_seq = Some(seq);
        }
        Ok(out)
    }

    /// Authenticates, replay-checks and decrypts one SRTCP datagram into plain RTCP.
    pub fn unprotect_rtcp(&mut self, datagram: &[u8]) -> Result<Vec<u8>, RtpError> {
        if datagram.len() < 8 + 4 + TAG_LEN {
            return Err(RtpError::RtcpTruncated);
        }
        let (authenticated, received_tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let expected = tag(&self.rtcp, &[authenticated]);
        if !constant_time_eq(&expected, received_tag) {
            return Err(RtpError::AuthenticationFailed);
        }
        let (packet, e_index) = authenticated.split_at(authenticated.len() - 4);
        let e_index = u32::from_be_bytes([e_index[0], e_index[1], e_index[2], e_index[3]]);
        let index = u64::from(e_index & 0x7FFF_FFFF);
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let window = self.rtcp_replay.entry(ssrc).or_default();
        window.check(index)?;
        window.accept(index);
        let mut out = packet.to_vec();
        if e_index & 0x8000_0000 != 0 {
            apply_keystream(
                &self.rtcp.cipher,
                packet_iv(&self.rtcp.salt, ssrc, index),
                &mut out[8..],
            );
        }
        Ok(out)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::rtcp::{parse_compound, write_compound, RtcpPacket};
    use crate::rtp::{RtpPacket, RtpSender};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn rfc_master() -> MasterKey {
        let mut m = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        m.extend(hex("0EC675AD498AFEEBB6960B3AABE6"));
        MasterKey::from_bytes(m.try_into().unwrap())
    }

    #[test]
    fn key_derivation_matches_rfc_3711_appendix_b3() {
        let m = rfc_master();
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive(&m, 0, &mut key);
        derive(&m, 2, &mut salt);
        derive(&m, 1, &mut auth);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn keystream_matches_rfc_3711_appendix_b2() {
        let cipher = Aes128::new_from_slice(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let mut stream = vec![0u8; 48];
        apply_keystream(&cipher, packet_iv(&salt, 0, 0), &mut stream);
        assert_eq!(
            stream[..16].to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4")
        );
        assert_eq!(
            stream[16..32].to_vec(),
            hex("D23513162B02D0F72A43A2FE4A5F97AB")
        );
        assert_eq!(
            stream[32..].to_vec(),
            hex("41E95B3BB0A2E8DD477901E4FCA894C0")
        );
    }

    fn pair() -> (SrtpSender, SrtpReceiver) {
        let key = MasterKey::from_bytes(std::array::from_fn(|i| i as u8 * 7));
        (SrtpSender::new(&key), SrtpReceiver::new(&key))
    }

    #[test]
    fn a_protected_packet_round_trips_and_hides_its_payload() {
        let (mut tx, mut rx) = pair();
        let plain = RtpSender::new(42, 1, 160)
            .audio(0, vec![0x55; 160])
            .to_bytes()
            .unwrap();
        let protected = tx.protect(&plain).unwrap();
        assert_eq!(protected.len(), plain.len() + 10);
        assert_eq!(protected[..12], plain[..12], "header stays in the clear");
        assert_ne!(protected[12..172], plain[12..], "payload is encrypted");
        assert_eq!(rx.unprotect(&protected).unwrap(), plain);
    }

    #[test]
    fn tampering_replay_and_a_wrong_key_are_refused() {
        let (mut tx, mut rx) = pair();
        let plain = RtpSender::new(42, 1, 160)
            .audio(0, vec![0x55; 160])
            .to_bytes()
            .unwrap();
        let protected = tx.protect(&plain).unwrap();
        let mut tampered = protected.clone();
        tampered[20] ^= 1;
        assert_eq!(rx.unprotect(&tampered), Err(RtpError::AuthenticationFailed));
        assert!(
            rx.unprotect(&protected).is_ok(),
            "a forgery does not poison the state"
        );
        assert_eq!(
            rx.unprotect(&protected),
            Err(RtpError::Replayed { index: 1 })
        );
        let mut stranger = SrtpReceiver::new(&MasterKey::from_bytes([9; 30]));
        assert_eq!(
            stranger.unprotect(&protected),
            Err(RtpError::AuthenticationFailed)
        );
    }

    #[test]
    fn the_rollover_counter_follows_sequence_wrap_and_reordering() {
        let (mut tx, mut rx) = pair();
        let mut rtp = RtpSender::new(7, 65_530, 0);
        let packets: Vec<Vec<u8>> = (0..12)
            .map(|_| {
                tx.protect(&rtp.audio(0, vec![1; 160]).to_bytes().unwrap())
                    .unwrap()
            })
            .collect();
        // Deliver across the wrap, with 65535 and 0 swapped.
        let mut order: Vec<usize> = (0..12).collect();
        order.swap(5, 6);
        for i in order {
            let plain = rx
                .unprotect(&packets[i])
                .unwrap_or_else(|e| panic!("packet {i}: {e}"));
            assert_eq!(RtpPacket::parse(&plain).unwrap().payload, vec![1; 160]);
        }
    }

    #[test]
    fn srtcp_round_trips_and_is_replay_protected() {
        let (mut tx, mut rx) = pair();
        let rr = write_compound(&[
            RtcpPacket::ReceiverReport {
                ssrc: 5,
                reports: vec![],
            },
            RtcpPacket::SourceDescription(vec![(5, "a@cg".into())]),
        ]);
        let protected = tx.protect_rtcp(&rr).unwrap();
        assert_ne!(protected[8..rr.len()], rr[8..]);
        let plain = rx.unprotect_rtcp(&protected).unwrap();
        assert_eq!(
            parse_compound(&plain).unwrap(),
            parse_compound(&rr).unwrap()
        );
        assert_eq!(
            rx.unprotect_rtcp(&protected),
            Err(RtpError::Replayed { index: 0 })
        );
        let mut tampered = tx.protect_rtcp(&rr).unwrap();
        tampered[9] ^= 0x80;
        assert_eq!(
            rx.unprotect_rtcp(&tampered),
            Err(RtpError::AuthenticationFailed)
        );
    }

    #[test]
    fn crypto_attributes_parse_and_print() {
        let a = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
        )
        .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(CryptoAttribute::parse(&a.to_value()).unwrap(), a);
        assert_eq!(
            CryptoAttribute::parse(
                "1 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
            ),
            Err(RtpError::UnsupportedSuite("AES_CM_128_HMAC_SHA1_32".into()))
        );
        assert!(matches!(
            CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"),
            Err(RtpError::BadCryptoAttribute(_))
        ));
        assert!(matches!(
            CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"),
            Err(RtpError::BadCryptoAttribute(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn unprotect_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let (_, mut rx) = pair();
            let _ = rx.unprotect(&bytes);
            let _ = rx.unprotect_rtcp(&bytes);
        }
    }
}
