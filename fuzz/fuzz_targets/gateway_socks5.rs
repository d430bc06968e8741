//! The SOCKS5 handshake parsers (RFC 1928), fed the way the front end feeds them: greeting
//! then request from one buffer, in pieces of every size. A prefix of a message is
//! `Incomplete`, never a different answer; what a request consumes is within the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safehouse_gateway::socks::{parse_greeting, parse_request, request_target, Parsed};

fuzz_target!(|data: &[u8]| {
    let whole = parse_greeting(data);
    let rest = match &whole {
        Ok(Parsed::Done(_, used)) => {
            assert!(*used <= data.len());
            &data[*used..]
        }
        _ => data,
    };
    if let Ok(Parsed::Done(req, used)) = parse_request(rest) {
        assert!(used <= rest.len());
        let _ = request_target(&req.addr);
        for cut in 0..used {
            assert_eq!(parse_request(&rest[..cut]), Ok(Parsed::Incomplete), "cut {cut}");
        }
    }
});
