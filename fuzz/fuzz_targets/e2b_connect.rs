//! libFuzzer's wrapper of `safehouse_fuzzing::e2b::connect` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safehouse_fuzzing::e2b::connect(data));
