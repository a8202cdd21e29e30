//! cargo-fuzz target: Geneve receive validation and every other view,
//! parser and builder of the `geneve` crate on arbitrary bytes
//! (`cargo fuzz run geneve_parse`; seeds in `corpus/geneve_parse/seed-*`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = geneve::geneve::parse(data);
    geneve::fuzz_all(data);
});
