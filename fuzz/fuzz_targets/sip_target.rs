//! Fuzzes `SipTarget::parse` (trunk `host[:port]` from config): never panics, and what it
//! accepts has a non-empty host.
#![no_main]
use callgate_sip_net::SipTarget;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = SipTarget::parse(s) {
            assert!(!t.host.is_empty());
        }
    }
});
