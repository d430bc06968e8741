//! Property tests, a fixed number of cases each so they run in every `cargo test`: parsers fed
//! arbitrary bytes never panic, and every spelling of an IPv4 address gets one verdict.

use std::net::{IpAddr, Ipv4Addr};

use hyper::Method;
use proptest::prelude::*;
use safehouse_gateway::dns::{build_query, parse_response, TYPE_A, TYPE_AAAA};
use safehouse_gateway::socks::{parse_greeting, parse_request, request_target};
use safehouse_gateway::target::parse_request_target;
use safehouse_policy::network::{parse_rule, parse_target, HostAddrs, HostBlock, HostReach, NetPolicy};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn socks_parsers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_greeting(&buf);
        if let Ok(safehouse_gateway::socks::Parsed::Done(req, used)) = parse_request(&buf) {
            prop_assert!(used <= buf.len());
            let _ = request_target(&req.addr);
        }
    }

    #[test]
    fn socks_request_prefixes_are_incomplete_never_wrong(name in "[a-z]{1,20}\\.test", port in 1u16..) {
        let mut req = vec![5, 1, 0, 3, name.len() as u8];
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(&port.to_be_bytes());
        for cut in 0..req.len() {
            prop_assert_eq!(parse_request(&req[..cut]), Ok(safehouse_gateway::socks::Parsed::Incomplete));
        }
        prop_assert!(matches!(parse_request(&req), Ok(safehouse_gateway::socks::Parsed::Done(_, n)) if n == req.len()));
    }

    #[test]
    fn dns_parser_never_panics(mut buf in proptest::collection::vec(any::<u8>(), 0..600), id in any::<u16>()) {
        let _ = parse_response(&buf, id, "a.test", TYPE_A);
        // get past the header checks: our ID, a response, one question
        if buf.len() >= 6 {
            buf[0..2].copy_from_slice(&id.to_be_bytes());
            buf[2] = 0x80 | (buf[2] & 0x07);
            buf[4..6].copy_from_slice(&[0, 1]);
        }
        let _ = parse_response(&buf, id, "a.test", TYPE_A);
        let _ = parse_response(&buf, id, "a.test", TYPE_AAAA);
    }

    #[test]
    fn dns_parser_survives_mutated_answers(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        // a valid answer with a compressed owner name, then bytes overwritten at random
        let mut m = build_query(0x1234, "a.test", TYPE_A).unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2;
        for ip in [[192, 0, 2, 1], [192, 0, 2, 2]] {
            m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(&ip);
        }
        prop_assert_eq!(parse_response(&m, 0x1234, "a.test", TYPE_A).unwrap().addrs.len(), 2);
        for (at, byte) in flips {
            let i = at % m.len();
            m[i] = byte;
        }
        let _ = parse_response(&m, 0x1234, "a.test", TYPE_A);
    }

    #[test]
    fn request_target_parser_never_panics(s in "\\PC{0,80}", connect in any::<bool>()) {
        let method = if connect { Method::CONNECT } else { Method::GET };
        let _ = parse_request_target(&method, &s);
        let _ = parse_request_target(&method, &format!("http://{s}"));
        let _ = parse_target(&s);
    }

    #[test]
    fn parse_rule_never_panics_and_its_source_reparses_to_the_same_rule(s in "\\PC{0,40}") {
        if let Ok(rule) = parse_rule(&s) {
            prop_assert_eq!(parse_rule(&rule.source), Ok(rule));
        }
    }

    #[test]
    fn parse_rule_on_rule_shaped_input(
        host in prop_oneof![
            "[a-z0-9*.-]{1,20}",
            any::<u32>().prop_map(|v| Ipv4Addr::from(v).to_string()),
            any::<u128>().prop_map(|v| format!("[{}]", std::net::Ipv6Addr::from(v))),
        ],
        cidr in proptest::option::of(0u8..140),
        port in proptest::option::of("[0-9*-]{1,12}"),
    ) {
        let mut s = host;
        if let Some(c) = cidr { s = format!("{s}/{c}"); }
        if let Some(p) = port { s = format!("{s}:{p}"); }
        if let Ok(rule) = parse_rule(&s) {
            prop_assert_eq!(parse_rule(&rule.source), Ok(rule));
        }
    }

    #[test]
    fn every_ipv4_spelling_gets_the_same_verdict(v in any::<u32>(), port in prop_oneof![Just(80u16), Just(443u16), 1u16..]) {
        let a = Ipv4Addr::from(v);
        let [b0, b1, b2, b3] = a.octets();
        let spellings = [
            a.to_string(),
            format!("{v}"),
            format!("{v:#x}"),
            format!("0{v:o}"),
            format!("{b0:#x}.{b1:#x}.{b2:#x}.{b3:#x}"),
            format!("0{b0:o}.0{b1:o}.0{b2:o}.0{b3:o}"),
            format!("{b0}.{}", (b1 as u32) << 16 | (b2 as u32) << 8 | b3 as u32),
            format!("{b0}.{b1}.{}", (b2 as u32) << 8 | b3 as u32),
            format!("[::ffff:{a}]"),
            format!("[::ffff:{:x}:{:x}]", v >> 16, v & 0xffff),
        ];
        for policy in policies() {
            let host = host();
            let want = policy.check_target(&parse_target(&a.to_string()).unwrap(), port, &host);
            for s in &spellings {
                let t = parse_target(s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
                prop_assert_eq!(&t, &safehouse_policy::network::Target::Ip(IpAddr::V4(a)), "{}", s);
                prop_assert_eq!(&policy.check_target(&t, port, &host), &want, "{}", s);
            }
        }
    }
}

/// A host with loopback, a public address and an AnyIP block.
fn host() -> HostAddrs {
    HostAddrs::new(
        [("127.0.0.0", 8), ("192.0.2.7", 32), ("198.51.100.0", 24)]
            .iter()
            .map(|(a, p)| HostBlock::new(a.parse().unwrap(), *p)),
    )
}

fn policies() -> Vec<NetPolicy> {
    let p = |rules: &[&str]| NetPolicy {
        rules: rules.iter().map(|r| parse_rule(r).unwrap()).collect(),
        egress_bytes: None,
        host_reach: HostReach::ExactAddressRules,
    };
    vec![
        p(&["*"]),
        p(&["127.0.0.0/8:*", "10.0.0.0/8"]),
        p(&["example.com", "192.0.2.0/24:443"]),
        p(&["192.0.2.7:*", "198.51.100.9"]),
        p(&[]),
    ]
}
