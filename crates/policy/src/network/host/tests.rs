//! The host's own addresses in the decisions, with golden values: the host here has the
//! public address 203.0.113.77 on a NIC, 2001:db8:5afe::77, loopback (127.0.0.0/8, ::1)
//! and an AnyIP local route 198.51.100.0/24.

use super::super::*;
use pretty_assertions::assert_eq;

fn host() -> HostAddrs {
    HostAddrs::new(
        [("203.0.113.77", 32), ("2001:db8:5afe::77", 128), ("127.0.0.0", 8), ("::1", 128), ("198.51.100.0", 24)]
            .iter()
            .map(|(a, p)| HostBlock::new(a.parse().unwrap(), *p)),
    )
}

fn policy(entries: &[&str], reach: HostReach) -> NetPolicy {
    let net = crate::model::Network { allow: entries.iter().map(|s| s.to_string()).collect(), egress_bytes: None };
    NetPolicy::compile(&net).unwrap().with_host_reach(reach)
}

fn ip(s: &str) -> Target {
    parse_target(s).unwrap()
}

fn deny_rule(v: Verdict) -> String {
    match v {
        Verdict::Deny { rule, .. } => rule,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn snapshots_are_canonical_and_always_hold_the_unspecified_addresses() {
    let h = HostAddrs::new([HostBlock::new("::ffff:203.0.113.77".parse().unwrap(), 128)]);
    let shown: Vec<String> = h.blocks().iter().map(|b| b.to_string()).collect();
    assert_eq!(shown, ["0.0.0.0/32", "203.0.113.77/32", "::/128"]);
    assert_eq!(HostBlock::new("10.1.2.3".parse().unwrap(), 8).to_string(), "10.0.0.0/8");
    assert_eq!(HostAddrs::default().blocks().len(), 2);
}

#[test]
fn every_spelling_of_a_host_address_is_found() {
    let h = host();
    for s in [
        "203.0.113.77",
        "::ffff:203.0.113.77",
        "::ffff:cb00:714d",
        "::203.0.113.77",
        "64:ff9b::203.0.113.77",
        "2002:cb00:714d::1",
        "0xcb00714d",
        "203.0.29005",
        "3405803853",
    ] {
        let Target::Ip(a) = ip(s) else { panic!("{s}") };
        assert_eq!(h.find(a).map(|b| b.to_string()).as_deref(), Some("203.0.113.77/32"), "{s}");
    }
    let found = |s: &str| h.find(s.parse().unwrap()).map(|b| b.to_string());
    assert_eq!(found("198.51.100.200").as_deref(), Some("198.51.100.0/24"));
    assert_eq!(found("2001:db8:5afe::77").as_deref(), Some("2001:db8:5afe::77/128"));
    assert_eq!(found("0.0.0.0").as_deref(), Some("0.0.0.0/32"));
    assert_eq!(found("::").as_deref(), Some("::/128"));
    assert_eq!(found("203.0.113.78"), None);
    assert_eq!(found("2001:db8:5afe::78"), None);
}

#[test]
fn star_blocks_and_names_never_reach_the_host() {
    let h = host();
    let p =
        policy(&["*:*", "203.0.113.0/24:*", "[2001:db8::/32]:*", "198.51.100.0/24:*"], HostReach::ExactAddressRules);
    for target in ["203.0.113.77", "[2001:db8:5afe::77]", "198.51.100.9", "[::ffff:203.0.113.77]", "0.0.0.0", "[::]"] {
        assert!(!p.check_target(&ip(target), 8080, &h).is_allowed(), "{target}");
    }
    // Beside the host, the same rules still work.
    assert_eq!(p.check_target(&ip("203.0.113.78"), 8080, &h), Verdict::Allow { rule: "203.0.113.0/24:*".into() });
    assert_eq!(p.check_target(&ip("93.184.216.34"), 443, &h), Verdict::Allow { rule: "*:*".into() });
    // The golden denial: the rule names the host block, the reason the address.
    assert_eq!(
        p.check_target(&ip("203.0.113.77"), 8080, &h),
        Verdict::Deny {
            rule: "this host (203.0.113.77/32)".into(),
            reason: "203.0.113.77 is an address of this host; the gateway never opens the host's own services to \"*\" or a CIDR block".into(),
            hint: "if the sandbox must reach this service of the host, add the exact address \"203.0.113.77:8080\" to network.allow".into(),
        }
    );
    // A name that resolves there (DNS, /etc/hosts): denied, naming both.
    assert_eq!(
        p.check_resolved("sneaky.example", "203.0.113.77".parse().unwrap(), 8080, "*:*", false, &h),
        Verdict::Deny {
            rule: "this host (203.0.113.77/32)".into(),
            reason: "sneaky.example resolves to 203.0.113.77, an address of this host; names never reach the host".into(),
            hint: "if the sandbox must reach this service of the host, add the exact address \"203.0.113.77:8080\" to network.allow".into(),
        }
    );
    assert_eq!(
        deny_rule(p.check_resolved("v6.example", "2001:db8:5afe::77".parse().unwrap(), 80, "*:*", false, &h)),
        "this host (2001:db8:5afe::77/128)"
    );
    // Loopback is the host too: the reason keeps the range's name.
    match p.check_target(&ip("127.0.0.1"), 80, &h) {
        Verdict::Deny { rule, reason, .. } => {
            assert_eq!(rule, "this host (127.0.0.0/8)");
            assert!(reason.contains("a loopback address of this host"), "{reason}");
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn an_exact_rule_opens_one_host_address_only_where_the_writer_may() {
    let h = host();
    let admin =
        policy(&["203.0.113.77:8080", "[2001:db8:5afe::77]:8080", "127.0.0.1:9000"], HostReach::ExactAddressRules);
    assert_eq!(admin.check_target(&ip("203.0.113.77"), 8080, &h), Verdict::Allow { rule: "203.0.113.77:8080".into() });
    assert_eq!(
        admin.check_target(&ip("[::ffff:203.0.113.77]"), 8080, &h),
        Verdict::Allow { rule: "203.0.113.77:8080".into() }
    );
    assert!(admin.check_target(&ip("[2001:db8:5afe::77]"), 8080, &h).is_allowed());
    assert!(admin.check_target(&ip("127.0.0.1"), 9000, &h).is_allowed());
    // Another port, another spelling that is another address (NAT64), another loopback address: no.
    assert!(!admin.check_target(&ip("203.0.113.77"), 8081, &h).is_allowed());
    assert!(!admin.check_target(&ip("[64:ff9b::203.0.113.77]"), 8080, &h).is_allowed());
    assert!(!admin.check_target(&ip("127.0.0.2"), 9000, &h).is_allowed());
    // A name resolving to the exact address passes the resolution check too.
    assert!(admin
        .check_resolved("svc.example", "203.0.113.77".parse().unwrap(), 8080, "svc.example:8080", false, &h)
        .is_allowed());
    // The same rules written by a tenant open nothing of the host.
    let tenant = policy(&["203.0.113.77:8080"], HostReach::Never);
    match tenant.check_target(&ip("203.0.113.77"), 8080, &h) {
        Verdict::Deny { rule, hint, .. } => {
            assert_eq!(rule, "this host (203.0.113.77/32)");
            assert!(hint.starts_with("only a policy of the admin tenant"), "{hint}");
        }
        v => panic!("{v:?}"),
    }
    // The default is Never.
    assert_eq!(NetPolicy::default().host_reach, HostReach::Never);
}

#[test]
fn trusted_overrides_are_the_operator_speaking() {
    let h = host();
    let p = policy(&["web.test:*"], HostReach::Never);
    assert!(p.check_resolved("web.test", "127.0.0.1".parse().unwrap(), 80, "web.test:*", true, &h).is_allowed());
    assert!(!p.check_resolved("web.test", "127.0.0.1".parse().unwrap(), 80, "web.test:*", false, &h).is_allowed());
}

#[test]
fn admission_names_the_rule_that_reaches_the_host() {
    let h = host();
    let found = |entries: &[&str]| policy(entries, HostReach::Never).host_rule(&h);
    assert_eq!(found(&["pypi.org", "*", "93.184.216.34"]), None);
    assert_eq!(
        found(&["pypi.org", "203.0.113.77:8080"]),
        Some(("203.0.113.77:8080".into(), "203.0.113.77 is an address of this host (203.0.113.77/32)".into()))
    );
    assert_eq!(
        found(&["203.0.0.0/16"]),
        Some(("203.0.0.0/16".into(), "the block 203.0.0.0/16 covers addresses of this host (203.0.113.77/32)".into()))
    );
    // Inside an AnyIP block, in IPv6, through NAT64 and 6to4 spellings.
    assert_eq!(found(&["198.51.100.5"]).map(|f| f.0).as_deref(), Some("198.51.100.5"));
    assert_eq!(found(&["[2001:db8:5afe::/48]:443"]).map(|f| f.0).as_deref(), Some("[2001:db8:5afe::/48]:443"));
    assert_eq!(found(&["64:ff9b::cb00:714d"]).map(|f| f.0).as_deref(), Some("64:ff9b::cb00:714d"));
    assert_eq!(found(&["[64:ff9b::cb00:7100/120]:80"]).map(|f| f.0).as_deref(), Some("[64:ff9b::cb00:7100/120]:80"));
    assert_eq!(found(&["[2002:cb00:7100::/40]:80"]).map(|f| f.0).as_deref(), Some("[2002:cb00:7100::/40]:80"));
    assert_eq!(found(&["[2002:cb00:7200::/40]:80"]), None);
    assert_eq!(found(&["0.0.0.0"]).map(|f| f.0).as_deref(), Some("0.0.0.0"));
}
