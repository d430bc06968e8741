//! DNS answers as the gateway's stub reads them (hickory-proto parses, the stub decides which
//! records count): any bytes, and a real answer mutated, for both question types. Every
//! address returned is of the asked family.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safehouse_gateway::dns::{parse_response, TYPE_A, TYPE_AAAA};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else { return };
    let qtype = if sel & 1 == 0 { TYPE_A } else { TYPE_AAAA };
    let name = if sel & 2 == 0 { "a.test" } else { "www.example.com" };
    let id = if msg.len() >= 2 { u16::from_be_bytes([msg[0], msg[1]]) } else { 0 };
    if let Ok(answer) = parse_response(msg, id, name, qtype) {
        for a in answer.addrs {
            assert_eq!(a.is_ipv4(), qtype == TYPE_A, "{a} for type {qtype}");
        }
    }
});
