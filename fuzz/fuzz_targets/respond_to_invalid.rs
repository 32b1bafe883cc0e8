//! Fuzzes `respond_to_invalid`, the lenient scan that answers unparseable requests: it
//! never panics, and what it produces always starts with a status line.
#![no_main]
use callgate_sip::{parse_datagram, respond_to_invalid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_datagram(data) {
        if let Some(resp) = respond_to_invalid(data, &e, "fuzz") {
            assert!(resp.starts_with(b"SIP/2.0 "));
        }
    }
});
