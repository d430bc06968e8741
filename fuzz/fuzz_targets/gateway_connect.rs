//! The target of a request line (CONNECT authority form, or an absolute `http://` URI), read
//! the way the front end reads it: whatever it accepts names a target the policy can check,
//! with a port from 1 to 65535 and an authority without user info.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safehouse_gateway::target::parse_request_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let method = if first & 1 == 0 { http::Method::CONNECT } else { http::Method::GET };
    if let Ok(t) = parse_request_target(&method, s) {
        assert!(t.port >= 1);
        assert!(!t.authority.contains('@'), "{}", t.authority);
        // The host as a policy target again: parsing is stable.
        let again = safehouse_policy::network::parse_target(&t.target.to_string());
        assert!(again.is_ok(), "{:?} -> {:?}", t.target, again);
    }
});
