use super::*;
use pretty_assertions::assert_eq;

/// A host with no addresses but the unspecified ones (tests of the other rules).
static NONE: std::sync::LazyLock<HostAddrs> = std::sync::LazyLock::new(HostAddrs::default);

fn policy(entries: &[&str]) -> NetPolicy {
    let net = Network { allow: entries.iter().map(|s| s.to_string()).collect(), egress_bytes: None };
    NetPolicy::compile(&net).unwrap()
}

fn name(n: &str) -> Target {
    Target::Name(n.into())
}

fn ip(s: &str) -> Target {
    parse_target(s).unwrap()
}

#[test]
fn rule_syntax() {
    let r = parse_rule("pypi.org").unwrap();
    assert_eq!((r.host, r.ports), (HostPattern::Name("pypi.org".into()), Ports::Web));
    let r = parse_rule("*.PythonHosted.org.").unwrap();
    assert_eq!(r.host, HostPattern::Below("pythonhosted.org".into()));
    assert_eq!(parse_rule("api.github.com:443").unwrap().ports, Ports::Range(443, 443));
    assert_eq!(parse_rule("h.example:8000-8100").unwrap().ports, Ports::Range(8000, 8100));
    assert_eq!(parse_rule("h.example:*").unwrap().ports, Ports::Any);
    let r = parse_rule("10.20.0.0/16:5432").unwrap();
    assert_eq!(r.host, HostPattern::Net { addr: "10.20.0.0".parse().unwrap(), prefix: 16 });
    let r = parse_rule("[2001:db8::/32]:443").unwrap();
    assert_eq!(r.host, HostPattern::Net { addr: "2001:db8::".parse().unwrap(), prefix: 32 });
    let r = parse_rule("2001:db8::1").unwrap();
    assert_eq!((r.host, r.ports), (HostPattern::Net { addr: "2001:db8::1".parse().unwrap(), prefix: 128 }, Ports::Web));
    assert_eq!(parse_rule("*").unwrap().host, HostPattern::Any);
    // ::ffff:10.0.0.1 is 10.0.0.1.
    assert_eq!(
        parse_rule("::ffff:10.0.0.1").unwrap().host,
        HostPattern::Net { addr: "10.0.0.1".parse().unwrap(), prefix: 32 }
    );
}

#[test]
fn bad_rules_say_what_to_write() {
    for (entry, expect) in [
        ("", "empty"),
        ("https://pypi.org", "just the host"),
        ("pypi.org:0", "1 to 65535"),
        ("pypi.org:99999", "1 to 65535"),
        ("pypi.org:443-80", "backwards"),
        ("10.0.0.1/8", "host bits"),
        ("10.0.0.0/33", "0 to 32"),
        ("127.1", "write 127.0.0.1"),
        ("0x7f000001", "write 127.0.0.1"),
        ("a.*.com", "first label"),
        ("*.com", "top-level"),
        ("exa mple.com", "not a valid host name"),
        ("[::1", "without its ]"),
        ("[::ffff:127.0.0.0/104]:80", "write 127.0.0.0/8"),
    ] {
        let err = parse_rule(entry).unwrap_err();
        assert!(err.contains(expect), "{entry:?}: {err}");
    }
    let net = Network { allow: vec!["ok.example".into(), "bad..example".into()], egress_bytes: None };
    let err = NetPolicy::compile(&net).unwrap_err().to_string();
    assert!(err.starts_with("network.allow[1]"), "{err}");
}

#[test]
fn address_spellings_are_one_address() {
    let loopback = Target::Ip("127.0.0.1".parse().unwrap());
    for s in [
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "2130706433",
        "017700000001",
        "0x7f.0.0.1",
        "[::ffff:127.0.0.1]",
        "::ffff:7f00:1",
        "[::127.0.0.1]",
    ] {
        assert_eq!(parse_target(s).unwrap(), loopback, "{s}");
    }
    assert_eq!(parse_target("[::1]").unwrap(), Target::Ip("::1".parse().unwrap()));
    assert_eq!(parse_target("Example.COM.").unwrap(), name("example.com"));
    for bad in ["1.2.3.999", "0x1.2.3.4.5", "fe80::1%eth0", "a..b", "", "-x.com"] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_ipv4_loose("1.2.3"), Some(Ipv4Addr::new(1, 2, 0, 3)));
    assert_eq!(parse_ipv4_loose("1.16777216"), None);
    assert_eq!(parse_ipv4_loose("08"), None);
}

#[test]
fn special_ranges_cover_every_spelling() {
    for (s, range) in [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "this-network"),
        ("100.64.0.1", "shared (carrier NAT)"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fd12::1", "unique-local (private)"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("2002:7f00:1::", "loopback"),
        ("2001:0:1::1", "Teredo tunnel"),
    ] {
        let ip: IpAddr = s.parse().unwrap();
        assert_eq!(special_range(ip).map(|r| r.name), Some(range), "{s}");
    }
    for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "64:ff9b::808:808"] {
        assert_eq!(special_range(public.parse().unwrap()), None, "{public}");
    }
}

#[test]
fn names_match_name_rules_only() {
    let p = policy(&["pypi.org", "*.pythonhosted.org", "api.github.com:443", "10.20.0.0/16:5432"]);
    assert!(p.check_target(&name("pypi.org"), 443, &NONE).is_allowed());
    assert!(p.check_target(&name("pypi.org"), 80, &NONE).is_allowed());
    assert!(!p.check_target(&name("pypi.org"), 22, &NONE).is_allowed());
    assert!(!p.check_target(&name("www.pypi.org"), 443, &NONE).is_allowed());
    assert!(p.check_target(&name("files.pythonhosted.org"), 443, &NONE).is_allowed());
    assert!(p.check_target(&name("a.b.pythonhosted.org"), 443, &NONE).is_allowed());
    assert!(!p.check_target(&name("pythonhosted.org"), 443, &NONE).is_allowed());
    assert!(!p.check_target(&name("evilpythonhosted.org"), 443, &NONE).is_allowed());
    assert!(!p.check_target(&name("api.github.com"), 80, &NONE).is_allowed());
    // A CIDR rule never lets a name be resolved to find out.
    assert!(!p.check_target(&name("db.internal"), 5432, &NONE).is_allowed());
    assert_eq!(p.check_target(&name("pypi.org"), 443, &NONE), Verdict::Allow { rule: "pypi.org".into() });
}

#[test]
fn addresses_match_address_rules_and_star_only_when_public() {
    let p = policy(&["10.20.0.0/16:5432", "*"]);
    assert_eq!(p.check_target(&ip("10.20.3.4"), 5432, &NONE), Verdict::Allow { rule: "10.20.0.0/16:5432".into() });
    assert!(!p.check_target(&ip("10.20.3.4"), 5433, &NONE).is_allowed());
    assert!(!p.check_target(&ip("10.21.0.1"), 5432, &NONE).is_allowed());
    assert_eq!(p.check_target(&ip("93.184.216.34"), 443, &NONE), Verdict::Allow { rule: "*".into() });
    assert!(!p.check_target(&ip("93.184.216.34"), 22, &NONE).is_allowed());
    for special in ["127.0.0.1", "0x7f.1", "[::1]", "169.254.169.254", "[fd00:ec2::254]", "[::ffff:a9fe:a9fe]"] {
        match p.check_target(&ip(special), 80, &NONE) {
            Verdict::Deny { rule, hint, .. } => {
                assert!(rule.contains('(') && hint.contains("network.allow"), "{special}: {rule} / {hint}")
            }
            v => panic!("{special}: {v:?}"),
        }
    }
}

#[test]
fn resolved_addresses_are_checked_again() {
    let p = policy(&["internal.example:443", "10.0.0.5:443"]);
    let allowed = |a: &str, trusted| p.check_resolved("internal.example", a.parse().unwrap(), 443, "r", trusted, &NONE);
    assert!(allowed("93.184.216.34", false).is_allowed());
    assert!(!allowed("127.0.0.1", false).is_allowed());
    assert!(!allowed("::ffff:127.0.0.1", false).is_allowed());
    assert!(!allowed("169.254.169.254", false).is_allowed());
    // Explicitly allowed private address: allowed, and the address rule is named.
    assert_eq!(allowed("10.0.0.5", false), Verdict::Allow { rule: "10.0.0.5:443".into() });
    assert!(!allowed("10.0.0.6", false).is_allowed());
    // Resolver overrides are the operator's word.
    assert!(allowed("127.0.0.1", true).is_allowed());
}

#[test]
fn denials_name_the_rule_and_the_fix() {
    let p = policy(&["pypi.org:443"]);
    match p.check_target(&name("evil.example"), 443, &NONE) {
        Verdict::Deny { rule, reason, hint } => {
            assert_eq!(rule, "default deny");
            assert!(reason.contains("evil.example:443"), "{reason}");
            assert!(hint.contains("\"evil.example:443\""), "{hint}");
        }
        v => panic!("{v:?}"),
    }
    match p.check_target(&name("pypi.org"), 22, &NONE) {
        Verdict::Deny { reason, .. } => assert!(reason.contains("not on port 22"), "{reason}"),
        v => panic!("{v:?}"),
    }
    match NetPolicy::default().check_target(&name("pypi.org"), 443, &NONE) {
        Verdict::Deny { reason, .. } => assert!(reason.contains("no network access"), "{reason}"),
        v => panic!("{v:?}"),
    }
}

#[test]
fn blocks_overlapping_special_ranges() {
    let check = |b: &str| {
        let r = parse_rule(b).unwrap();
        match r.host {
            HostPattern::Net { addr, prefix } => block_overlaps_special(addr, prefix).map(|r| r.name),
            _ => panic!(),
        }
    };
    assert_eq!(check("169.0.0.0/8"), Some("cloud metadata"));
    assert_eq!(check("100.0.0.0/8"), Some("cloud metadata"));
    assert_eq!(check("172.0.0.0/8"), Some("private"));
    assert_eq!(check("10.20.0.0/16"), Some("private"));
    assert_eq!(check("0.0.0.0/0"), Some("this-network"));
    assert_eq!(check("127.0.0.1"), Some("loopback"));
    assert_eq!(check("8.8.8.0/24"), None);
    assert_eq!(check("93.184.216.34"), None);
    assert_eq!(check("[::/0]:443"), Some("unspecified"));
    assert_eq!(check("[2002::/16]:443"), Some("this-network"));
    assert_eq!(check("[2606:4700::/32]:443"), None);
    assert_eq!(check("[fd00::/8]:443"), Some("unique-local (private)"));
}
