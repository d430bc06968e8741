//! libFuzzer's wrapper of `safehouse_fuzzing::protocol::frames` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safehouse_fuzzing::protocol::frames(data));
