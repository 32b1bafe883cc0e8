//! Fuzzes `parse_datagram`: never panics, and whatever parses serializes to bytes that
//! parse back to a message serializing to the same bytes (Content-Length is normalized
//! on the first serialization).
#![no_main]
use callgate_sip::{parse_datagram, Incoming};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Incoming::Message(m)) = parse_datagram(data) {
        let once = m.to_bytes();
        match parse_datagram(&once) {
            Ok(Incoming::Message(again)) => assert_eq!(again.to_bytes(), once),
            other => panic!("our own serialization does not parse: {other:?}"),
        }
    }
});
