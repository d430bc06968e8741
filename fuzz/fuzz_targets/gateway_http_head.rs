//! libFuzzer's wrapper of `safehouse_fuzzing::gateway::http_head` (what it checks is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safehouse_fuzzing::gateway::http_head(data));
