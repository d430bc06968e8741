//! The bodies of the fuzz targets: one function per target, taking the fuzzer's bytes, that
//! runs a parser of attacker-controlled input the way its caller does and asserts what the
//! caller relies on (a panic is a finding). `fuzz/` wraps each in libFuzzer's
//! `fuzz_target!` (`fuzz/fuzz_targets/<target>.rs`); `tests/corpus.rs` replays every file of
//! `fuzz/corpus/<target>/` through the same function in a plain `cargo test`, so the corpora
//! (and the inputs of past crashes) are regression tests without libFuzzer.
//!
//! Targets take a selector byte first where one target covers several parsers.

#![forbid(unsafe_code)]

pub mod api;
pub mod e2b;
pub mod gateway;
pub mod images;
pub mod policy;
pub mod protocol;

/// A target's body: the fuzzer's bytes in, a panic when a property fails.
pub type Body = fn(&[u8]);

/// Every target: its name (`fuzz/fuzz_targets/NAME.rs`, `fuzz/corpus/NAME/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("gateway_http_head", gateway::http_head),
    ("gateway_connect", gateway::connect),
    ("gateway_socks5", gateway::socks5),
    ("gateway_dns", gateway::dns),
    ("policy_parse", policy::parse),
    ("api_request", api::request),
    ("protocol_frames", protocol::frames),
    ("e2b_connect", e2b::connect),
    ("images_dockerfile", images::dockerfile),
    ("images_layer", images::layer),
];
