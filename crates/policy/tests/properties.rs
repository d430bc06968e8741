//! Property tests for the policy parser: no input makes it panic, documents round-trip,
//! network rules re-parse from their own source, sizes and durations print back exactly.
//! Case counts keep the whole file to a few seconds; CI runs it with `cargo test`.

use std::time::Duration;

use proptest::prelude::*;

use safehouse_policy::model::{parse_json, parse_toml, Bind, Filesystem, Limits, Network, Policy, Rootfs};
use safehouse_policy::network::parse_rule;
use safehouse_policy::units::{format_duration, format_size, parse_duration, parse_size, ByteSize, Dur};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text that looks like TOML often enough to get past the tokenizer.
fn tomlish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("version = 1".to_string()),
        Just("[limits]".to_string()),
        Just("[filesystem]".to_string()),
        Just("[network]".to_string()),
        Just("[tools.limits.\"/usr/bin/x\"]".to_string()),
        "[a-z_]{1,10} = \"[0-9a-zA-Z ./*:-]{0,12}\"",
        "[a-z_]{1,10} = [0-9.-]{1,8}",
        "[a-z_]{1,10} = \\[(\"[a-z0-9./*:\\[\\]-]{0,16}\", ){0,3}\\]",
        "[a-z_]{1,10} = \\{ host = \"[a-z/]{0,8}\", path = \"[a-z/]{0,8}\" \\}",
        "[\\[\\]{}=\"',.# a-z0-9\\\\]{0,30}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn parse_toml_never_panics(text in any::<String>()) {
        let _ = parse_toml(&text, "fuzz");
    }

    #[test]
    fn parse_json_never_panics(text in any::<String>()) {
        let _ = parse_json(&text, "fuzz");
    }

    #[test]
    fn tomlish_errors_locate_syntax_errors(text in tomlish()) {
        let syntax_ok = text.parse::<toml::Table>().is_ok();
        if let Err(e) = parse_toml(&text, "fuzz") {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty());
            if !syntax_ok {
                prop_assert!(msg.starts_with("fuzz: line "), "{msg}");
                prop_assert!(msg.contains(" column "), "{msg}");
            }
        }
    }

    #[test]
    fn parse_rule_reparses_its_own_source(entry in prop_oneof![
        any::<String>(),
        "(\\*\\.)?[a-zA-Z0-9_.-]{1,24}(:([0-9]{1,5}|\\*|[0-9]{1,5}-[0-9]{1,5}))?",
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(/[0-9]{1,2})?(:[0-9]{1,5})?",
        "0x[0-9a-f]{1,8}(:[0-9]{1,5})?",
        "\\[?[0-9a-f:.]{2,30}(/[0-9]{1,3})?\\]?(:[0-9*]{1,5})?",
    ]) {
        if let Ok(rule) = parse_rule(&entry) {
            prop_assert_eq!(parse_rule(&rule.source), Ok(rule.clone()));
        }
    }

    #[test]
    fn sizes_print_back_exactly(n in 0u64..(1 << 53), unit in 0u32..5) {
        // Exact multiples of each binary unit, and arbitrary byte counts.
        let n = if unit == 0 { n } else { (n >> (10 * unit)) << (10 * unit) };
        prop_assert_eq!(parse_size(&format_size(n)), Ok(n));
    }

    #[test]
    fn durations_print_back_exactly(ms in 0u64..(10 * 365 * 86_400_000)) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}

const RULES: &[&str] = &[
    "pypi.org",
    "*.pythonhosted.org",
    "api.github.com:443",
    "10.20.0.0/16:5432",
    "[2001:db8::/32]:443",
    "203.0.113.7",
    "example.com:8000-8100",
    "*:*",
];
const PATHS: &[&str] = &["/data", "/input", "/output", "/srv/x", "/cache", "/workspace/in", "/tmp/a"];

fn opt<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop::option::of(s).boxed()
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        opt((4u64..65536).prop_map(|m| ByteSize(m << 20))),
        opt(1u64..100_000),
        opt(prop::sample::select(vec![0.01, 0.5, 1.0, 1.5, 2.0, 64.0])),
        opt((1u64..65536).prop_map(|m| ByteSize(m << 20))),
        opt(1u64..10_000_000),
        opt((1u64..86_400_000).prop_map(|ms| Dur(Duration::from_millis(ms)))),
        opt(1u64..=(1 << 20)),
    )
        .prop_map(|(memory, pids, cpus, disk, inodes, timeout, nofile)| Limits {
            memory,
            pids,
            cpus,
            disk,
            inodes,
            timeout,
            nofile,
        })
}

fn binds() -> impl Strategy<Value = Vec<Bind>> {
    prop::collection::vec(
        (prop::sample::select(PATHS), prop::sample::select(PATHS))
            .prop_map(|(h, p)| Bind { host: format!("/host{h}"), path: p.to_string() }),
        0..3,
    )
}

fn policies() -> impl Strategy<Value = Policy> {
    let paths = || prop::collection::vec(prop::sample::select(PATHS).prop_map(str::to_string), 0..3);
    let filesystem = (
        prop::sample::select(vec![Rootfs::Host, Rootfs::Dir("/srv/rootfs".into())]),
        binds(),
        binds(),
        paths(),
        paths(),
    )
        .prop_map(|(rootfs, read_only, read_write, scratch, hidden)| Filesystem {
            rootfs,
            read_only,
            read_write,
            scratch,
            hidden,
        });
    let network = (
        prop::collection::vec(prop::sample::select(RULES).prop_map(str::to_string), 0..4),
        opt((1u64..4096).prop_map(|m| ByteSize(m << 20))),
    )
        .prop_map(|(allow, egress_bytes)| Network { allow, egress_bytes });
    (limits(), filesystem, network).prop_map(|(limits, filesystem, network)| Policy {
        limits,
        filesystem,
        network,
        ..Policy::default()
    })
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn valid_policies_round_trip(p in policies()) {
        let toml_text = toml::to_string(&p).expect("every policy serialises to TOML");
        let json_text = serde_json::to_string(&p).expect("every policy serialises to JSON");
        match p.validate() {
            Ok(()) => {
                prop_assert_eq!(&parse_toml(&toml_text, "rt").unwrap(), &p, "{}", toml_text);
                prop_assert_eq!(&parse_json(&json_text, "rt").unwrap(), &p, "{}", json_text);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert_eq!(parse_toml(&toml_text, "rt").unwrap_err().to_string(), msg.clone());
                prop_assert_eq!(parse_json(&json_text, "rt").unwrap_err().to_string(), msg);
            }
        }
    }
}
