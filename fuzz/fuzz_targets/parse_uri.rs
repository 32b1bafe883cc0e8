//! Fuzzes `Uri::parse`: never panics, and a parsed URI prints to text that parses back
//! to the same URI.
#![no_main]
use callgate_sip::uri::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(u) = Uri::parse(s) {
            assert_eq!(Uri::parse(&u.to_string()), Ok(u));
        }
    }
});
