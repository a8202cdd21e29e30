//! cargo-fuzz target: the TCP header view, its options iterator and the
//! option and header emitters on arbitrary bytes
//! (`cargo fuzz run tcp_parse`; seeds in `corpus/tcp_parse/seed-*`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    geneve::fuzz_tcp(data);
});
