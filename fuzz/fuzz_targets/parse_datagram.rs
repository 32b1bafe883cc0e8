//! Fuzzes `parse_datagram`: never panics, and whatever parses serializes to bytes that
//! parse back to the same message.
#![no_main]
use callgate_sip::{parse_datagram, Incoming};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Incoming::Message(m)) = parse_datagram(data) {
        let again = parse_datagram(&m.to_bytes());
        assert_eq!(again, Ok(Incoming::Message(m)));
    }
});
