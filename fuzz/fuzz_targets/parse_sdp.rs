//! Fuzzes the SDP a peer sends in an INVITE or an answer: `SessionDescription::parse` never
//! panics; what parses prints to text that parses back and prints the same (printing is the
//! canonical form: RFC 8866 line order, the last `t=` kept); and
//! answering it as an offer (with SRTP allowed, so `a=crypto` is read too) never panics.
#![no_main]
use callgate_media::g711::Codec;
use callgate_media::rtp::srtp::MasterKey;
use callgate_media::sdp::negotiate::{answer_offer, Direction, LocalMedia};
use callgate_media::sdp::SessionDescription;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sdp) = SessionDescription::parse(text) else {
        return;
    };
    let printed = sdp.to_string();
    match SessionDescription::parse(&printed) {
        Ok(again) => assert_eq!(again.to_string(), printed),
        Err(e) => panic!("our own SDP does not parse ({e}): {printed}"),
    }
    let local = LocalMedia {
        address: "192.0.2.1".parse().unwrap(),
        rtp_port: 20_000,
        codecs: vec![Codec::Pcma, Codec::Pcmu],
        telephone_event: true,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        session_id: 1,
        session_version: 1,
        srtp: Some(MasterKey::from_bytes([7; 30])),
    };
    let _ = answer_offer(&sdp, &local);
});
