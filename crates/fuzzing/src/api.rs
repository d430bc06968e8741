//! The native API's request bodies and query strings, read as the routes read them: bodies
//! through `safehouse_http::json::parse` (size, UTF-8, depth, numbers, duplicate keys, then
//! serde with unknown fields refused), then the checks the routes run before any state.

use safehouse_api::bodies::{
    CreateKey, ForkRequest, MkdirRequest, MoveRequest, SignalRequest, TicketRequest, TimeoutRequest, VolumeRequest,
};
use safehouse_http::json::{self, MAX_JSON_DEPTH};
use safehouse_http::params::{parse_query, QueryPairs};
use safehouse_manager::interp::{CodeRequest, CreateContext};
use safehouse_manager::{limits, Command, CreateRequest, ExecRequest, StartProcess};
use safehouse_policy::model::parse_json;
use serde_json::Value;

/// `api_request`: the first byte picks what the rest is: a body of one route (0-13) or a
/// query string (anything else). What `json::parse` accepts is JSON within the depth limit
/// whose numbers fit 64 bits; a query's pairs, encoded again, decode to the same pairs.
pub fn request(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else { return };
    match sel % 16 {
        0 => create(body),
        1 => {
            if let Ok(r) = json::parse::<ExecRequest>(body) {
                if limits::check_exec(&r).is_ok() {
                    let t = limits::exec_timeout(&r).expect("a checked exec has a timeout");
                    assert!(t.is_finite() && t > 0.0);
                    command(&r.cmd);
                    let _ = limits::command_memory(&r.limits);
                }
            }
        }
        2 => {
            if let Ok(r) = json::parse::<StartProcess>(body) {
                if limits::check_start(&r).is_ok() {
                    command(&r.cmd);
                }
            }
        }
        3 => {
            let _ = json::parse::<CodeRequest>(body);
        }
        4 => {
            let _ = json::parse::<CreateContext>(body);
        }
        5 => {
            let _ = json::parse::<CreateKey>(body);
        }
        6 => {
            let _ = json::parse::<ForkRequest>(body);
        }
        7 => {
            if let Ok(r) = json::parse::<VolumeRequest>(body) {
                let _ = r.bytes();
            }
        }
        8 => {
            if let Ok(r) = json::parse::<MkdirRequest>(body) {
                let _ = safehouse_http::files::check_path(&r.path);
            }
        }
        9 => {
            if let Ok(r) = json::parse::<MoveRequest>(body) {
                let _ = safehouse_http::files::check_path(&r.from);
                let _ = safehouse_http::files::check_path(&r.to);
            }
        }
        10 => {
            if let Ok(r) = json::parse::<SignalRequest>(body) {
                if let Ok(n) = r.signal.number() {
                    assert!((1..=64).contains(&n), "signal {n}");
                }
            }
        }
        11 => {
            if let Ok(r) = json::parse::<TicketRequest>(body) {
                let _ = safehouse_manager::auth::tickets::ticket_path_ok(&r.path);
            }
        }
        12 => {
            if let Ok(r) = json::parse::<TimeoutRequest>(body) {
                let _ = limits::check_timeout(r.timeout_s);
            }
        }
        13 => {
            if let Ok(v) = json::parse::<Value>(body) {
                assert!(depth(&v) <= MAX_JSON_DEPTH, "accepted JSON nested deeper than the limit");
                numbers_fit(&v);
            }
        }
        _ => query(body),
    }
}

/// `POST /v1/sandboxes`: its checks, then its policy as the manager reads it.
fn create(body: &[u8]) {
    let Ok(r) = json::parse::<CreateRequest>(body) else { return };
    if limits::check_create(&r).is_err() {
        return;
    }
    if let Some(v) = &r.policy {
        if let Ok(p) = parse_json(&v.to_string(), "policy") {
            p.validate().expect("an accepted policy validates");
        }
    }
    if let Some(p) = &r.preset {
        let _ = safehouse_policy::presets::load(p);
    }
}

fn command(cmd: &Command) {
    let argv = cmd.argv();
    assert!(!argv.is_empty() && !argv[0].is_empty(), "a checked command names a program");
    assert!(argv.iter().all(|a| !a.contains('\0')));
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn numbers_fit(v: &Value) {
    match v {
        Value::Number(n) => {
            assert!(n.is_i64() || n.is_u64() || n.as_f64().is_some_and(f64::is_finite), "number {n}")
        }
        Value::Array(a) => a.iter().for_each(numbers_fit),
        Value::Object(o) => o.values().for_each(numbers_fit),
        _ => {}
    }
}

/// A query string as every route reads it (`QueryPairs`).
fn query(raw: &[u8]) {
    let Ok(q) = std::str::from_utf8(raw) else { return };
    let Ok(pairs) = parse_query(q) else { return };
    let encoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    let again = parse_query(&encoded.join("&")).expect("an encoded query parses");
    assert_eq!(again, pairs, "{q:?}");
    let q = QueryPairs(pairs);
    let _ = q.only(&["metadata.", "state", "path", "depth", "follow", "since"]);
    let _ = q.flag("follow");
    let _ = q.require("path");
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
