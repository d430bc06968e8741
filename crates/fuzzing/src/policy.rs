//! The policy document (TOML from files and the CLI, JSON from the API).

use safehouse_policy::model::{parse_json, parse_toml};
use safehouse_policy::network::{parse_rule, NetPolicy};
use safehouse_policy::tools::{Pattern, ToolsPlan};
use safehouse_policy::Policy;

/// `policy_parse`: a document, TOML when the first byte is even, JSON when odd. An accepted
/// policy validates, compiles (network rules, tools, limits) and round-trips: serialised to
/// TOML and to JSON, each parses back to the same policy.
pub fn parse(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let parsed = if sel & 1 == 0 { parse_toml(text, "fuzz") } else { parse_json(text, "fuzz") };
    let Ok(policy) = parsed else { return };
    check(&policy);
    let toml_text = toml::to_string(&policy).unwrap_or_else(|e| panic!("{policy:?} does not serialise to TOML: {e}"));
    match parse_toml(&toml_text, "again") {
        Ok(again) => assert_eq!(again, policy, "TOML round trip:\n{toml_text}"),
        Err(e) => panic!("an accepted policy, written as TOML, is refused: {e}\n{toml_text}"),
    }
    let json_text = serde_json::to_string(&policy).expect("a policy serialises to JSON");
    match parse_json(&json_text, "again") {
        Ok(again) => assert_eq!(again, policy, "JSON round trip:\n{json_text}"),
        Err(e) => panic!("an accepted policy, written as JSON, is refused: {e}\n{json_text}"),
    }
}

/// What the code after parsing relies on for an accepted policy.
fn check(policy: &Policy) {
    policy.validate().expect("an accepted policy validates again");
    let net = NetPolicy::compile(&policy.network).expect("an accepted policy's network compiles");
    assert_eq!(net.rules.len(), policy.network.allow.len());
    for rule in &net.rules {
        assert_eq!(parse_rule(&rule.source).as_ref(), Ok(rule), "a rule parses to itself again");
    }
    let plan = ToolsPlan::compile(&policy.tools);
    assert_eq!(plan.restricts_exec(), !policy.tools.allow.is_empty());
    for p in &policy.tools.allow {
        let pattern = Pattern::parse("tools.allow", p).expect("an accepted tools.allow entry parses");
        assert!(pattern.dir.starts_with('/'), "{pattern:?}");
        assert!(!pattern.name.contains('/'), "{pattern:?}");
    }
    let _ = safehouse_policy::plan::resolve_limits(policy);
}
