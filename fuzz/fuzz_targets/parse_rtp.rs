//! Fuzzes what arrives on an RTP/RTCP port from anyone: RTP packets, RTCP compounds and
//! RFC 4733 telephone-event payloads never panic the parsers.
#![no_main]
use callgate_media::dtmf::EventPayload;
use callgate_media::rtp::rtcp::parse_compound;
use callgate_media::rtp::RtpPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = RtpPacket::parse(data) {
        let _ = EventPayload::parse(&packet.payload);
    }
    let _ = parse_compound(data);
    let _ = EventPayload::parse(data);
});
