//! Fuzzes `StreamFramer`: the first byte picks a chunk size; the framer never panics and
//! never holds more than its limit.
#![no_main]
use callgate_sip::framing::StreamFramer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut framer = StreamFramer::new(4096);
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        framer.push(piece);
        while framer.next_item().is_some() {}
        assert!(framer.buffered() <= 4096 + piece.len());
    }
});
