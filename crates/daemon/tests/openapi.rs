//! docs/openapi.json against the daemon's router: every native route (the API's and
//! MCP's) documented and nothing else; the E2B routes documented in docs/e2b.md instead.

use std::collections::BTreeSet;

use serde_json::Value;

use safehouse_api::openapi::DOCUMENT;

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn doc() -> Value {
    serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
}

#[test]
fn is_openapi_3_1() {
    let d = doc();
    assert_eq!(d["openapi"], "3.1.0");
    assert!(d["paths"].is_object());
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let d = doc();
    let mut documented = BTreeSet::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        for (key, _) in item.as_object().unwrap() {
            if METHODS.contains(&key.as_str()) {
                documented.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    // The router writes a catch-all `{*rest}`; OpenAPI has no such template, only `{rest}`.
    let routed: BTreeSet<_> = safehouse_api::ROUTES
        .iter()
        .chain(safehouse_mcp::ROUTES)
        .chain(safehouse_console::ROUTES)
        .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(missing.is_empty(), "routes missing from docs/openapi.json: {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

/// The E2B-compatible routes are E2B's API: documented in docs/e2b.md, exempt from the
/// OpenAPI document (and kept out of it, so the native API stays one contract).
#[test]
fn e2b_routes_are_documented_in_e2b_md_not_openapi() {
    let d = doc();
    let e2b_md = include_str!("../../../docs/e2b.md");
    for (method, path) in safehouse_e2b::ROUTES {
        assert!(d["paths"].get(*path).is_none(), "{path} is an E2B route; document it in docs/e2b.md only");
        assert!(e2b_md.contains(&format!("`{method} {path}`")), "docs/e2b.md does not list `{method} {path}`");
        assert!(!path.starts_with("/v1/"), "{path}: E2B routes cannot shadow the native API");
    }
}

#[test]
fn every_operation_documents_errors_and_auth() {
    let d = doc();
    for (path, item) in d["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let public = safehouse_http::guard::is_public(&method.to_uppercase().parse().unwrap(), path);
            assert_eq!(op.get("security") == Some(&serde_json::json!([])), public, "{method} {path}: security");
            assert!(responses.contains_key("403"), "{method} {path}: 403");
            if !public {
                for code in ["400", "401", "404"] {
                    assert!(responses.contains_key(code), "{method} {path}: {code}");
                }
            }
            for p in path.split('/').filter(|s| s.starts_with('{')) {
                let name = p.trim_matches(|c| c == '{' || c == '}');
                let params: Vec<_> =
                    item["parameters"].as_array().into_iter().chain(op["parameters"].as_array()).flatten().collect();
                assert!(params.iter().any(|x| x["name"] == name && x["in"] == "path"), "{method} {path}: {name}");
            }
        }
    }
}

#[test]
fn every_ref_resolves() {
    fn walk(v: &Value, root: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let ptr = r.strip_prefix('#').expect("local ref");
                    assert!(root.pointer(ptr).is_some(), "dangling {r}");
                }
                m.values().for_each(|x| walk(x, root));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, root)),
            _ => {}
        }
    }
    let d = doc();
    walk(&d, &d);
}
