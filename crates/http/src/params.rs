//! Path and query parameters, validated before any handler sees them. A malformed sandbox
//! id or pid is answered exactly like an unknown one: 404.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::errors::ApiError;
use safehouse_manager::auth::{Lease, Tenant};

/// `sb_` + 26 lowercase base32 characters.
pub fn is_sandbox_id(s: &str) -> bool {
    safehouse_manager::ids::is_sandbox_id(s)
}

/// `key_` + 16 lowercase base32 characters.
pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix("key_").is_some_and(|r| r.len() == 16 && r.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
}

/// A decimal pid: digits only, no sign or leading zero, non-zero, within u32.
pub use safehouse_manager::ids::parse_pid;

/// The `{id}` of a sandbox route.
pub struct SandboxId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SandboxId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::no_sandbox())?;
        if is_sandbox_id(&id) {
            Ok(SandboxId(id))
        } else {
            Err(ApiError::no_sandbox())
        }
    }
}

/// The `{id}` and `{pid}` of a process route.
pub struct ProcessPath(pub String, pub u32);

impl<S: Send + Sync> FromRequestParts<S> for ProcessPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((id, pid)) =
            Path::<(String, String)>::from_request_parts(parts, state).await.map_err(|_| ApiError::no_sandbox())?;
        if !is_sandbox_id(&id) {
            return Err(ApiError::no_sandbox());
        }
        let pid = parse_pid(&pid).ok_or_else(|| ApiError::not_found("no such process in this sandbox"))?;
        Ok(ProcessPath(id, pid))
    }
}

/// The caller's tenant, put in the request by the auth guard.
pub struct Caller(pub Tenant);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // The guard authenticates every non-public route; a handler without a tenant is a
        // wiring bug, and it fails closed.
        parts.extensions.get::<Tenant>().cloned().map(Caller).ok_or_else(|| ApiError::unauthorized("missing API key"))
    }
}

/// The lease on the caller's key, put in the request by the guard (or the E2B data plane)
/// next to the tenant: what a handler whose work outlives the request selects on.
pub struct KeyLease(pub Lease);

impl<S: Send + Sync> FromRequestParts<S> for KeyLease {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Lease>().cloned().map(KeyLease).ok_or_else(|| ApiError::unauthorized("missing API key"))
    }
}

/// Decoded query pairs, in order. `+` is a space; `%XX` escapes must form UTF-8.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(QueryPairs)
    }
}

impl QueryPairs {
    /// Refuses parameters outside `allowed` (a trailing `.` allows a prefix) and repeats.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut seen = std::collections::HashSet::new();
        for (k, _) in &self.0 {
            let known =
                allowed.iter().any(|a| if a.ends_with('.') { k.starts_with(a) && k.len() > a.len() } else { k == a });
            if !known {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{k}`; allowed: {}",
                    allowed.join(", ")
                )));
            }
            if !seen.insert(k) {
                return Err(ApiError::invalid(format!("query parameter `{k}` given twice")));
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A `0`/`1`/`true`/`false` flag, false when absent.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") | Some("") => Ok(true),
            Some(v) => Err(ApiError::invalid(format!("`{key}` must be 1 or 0, not {v:?}"))),
        }
    }

    /// A required parameter.
    pub fn require(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| ApiError::invalid(format!("query parameter `{key}` is required")))
    }
}

pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("malformed query string: bad %-escape or not UTF-8");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids() {
        assert!(is_sandbox_id("sb_abcdefghijklmnopqrstuvwxyz"));
        assert!(is_sandbox_id("sb_234567abcdefghijklmnopqrst"));
        for bad in [
            "sb_ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "sb_abcdefghijklmnopqrstuvwxy",
            "sb_abcdefghijklmnopqrstuvwxyz0",
            "sb_abcdefghijklmnopqrstuvwx01",
            "SB_abcdefghijklmnopqrstuvwxyz",
            "../abcdefghijklmnopqrstuvwxyz",
            "",
        ] {
            assert!(!is_sandbox_id(bad), "{bad}");
        }
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pid("1"), Some(1));
        assert_eq!(parse_pid("4294967295"), Some(u32::MAX));
        for bad in ["0", "01", "-1", "+1", "4294967296", "1e3", " 1", "", "99999999999"] {
            assert_eq!(parse_pid(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries() {
        let q = QueryPairs(parse_query("metadata.team=red+x&state=running&path=%2Fa%20b").unwrap());
        assert_eq!(q.get("metadata.team"), Some("red x"));
        assert_eq!(q.get("path"), Some("/a b"));
        q.only(&["metadata.", "state", "path"]).unwrap();
        assert!(q.only(&["state", "path"]).is_err());
        assert!(QueryPairs(parse_query("metadata.=x").unwrap()).only(&["metadata."]).is_err());
        assert!(QueryPairs(parse_query("a=1&a=2").unwrap()).only(&["a"]).is_err());
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%ff").is_err());
        assert!(parse_query("a=%4").is_err());
        let f = QueryPairs(parse_query("x=1&y=0&z=maybe").unwrap());
        assert!(f.flag("x").unwrap());
        assert!(!f.flag("y").unwrap());
        assert!(!f.flag("w").unwrap());
        assert!(f.flag("z").is_err());
    }
}
