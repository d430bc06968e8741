//! Where a proxied request goes: the sandbox, the port and the path inside, read from the
//! raw (still percent-encoded) request path so the service sees exactly what was sent.

use axum::http::Uri;

use crate::errors::ApiError;
use crate::params::is_sandbox_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub port: u16,
    /// The path after `/ports/{port}` (`/` when there is none) and the query, verbatim.
    pub path_and_query: String,
}

impl Target {
    /// Parses `/v1/sandboxes/{id}/ports/{port}[/rest][?query]`. A malformed id is 404
    /// like everywhere else; a port that is not 1..=65535 in plain decimal is 400.
    pub fn parse(uri: &Uri) -> Result<Target, ApiError> {
        let path = uri.path();
        let after = path.strip_prefix("/v1/sandboxes/").ok_or_else(ApiError::no_sandbox)?;
        let (id, after) = after.split_once('/').ok_or_else(ApiError::no_sandbox)?;
        if !is_sandbox_id(id) {
            return Err(ApiError::no_sandbox());
        }
        let after = after.strip_prefix("ports/").ok_or_else(|| ApiError::not_found("no such route"))?;
        let (port, rest) = match after.find('/') {
            Some(i) => after.split_at(i),
            None => (after, ""),
        };
        let port = parse_port(port)?;
        let mut path_and_query = if rest.is_empty() { "/".to_string() } else { rest.to_string() };
        if let Some(q) = uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Ok(Target { id: id.to_string(), port, path_and_query })
    }

    /// The route's own prefix, sent as `X-Forwarded-Prefix` so an app can build links.
    pub fn prefix(&self) -> String {
        format!("/v1/sandboxes/{}/ports/{}", self.id, self.port)
    }

    /// The origin-form request target for the service.
    pub fn upstream_uri(&self) -> Result<Uri, ApiError> {
        self.path_and_query.parse().map_err(|e| ApiError::invalid(format!("cannot forward this path: {e}")))
    }
}

/// A TCP port: 1 to 65535, decimal digits only, no sign or leading zero.
pub fn parse_port(s: &str) -> Result<u16, ApiError> {
    let bad = || ApiError::invalid(format!("port must be a number from 1 to 65535, not {:?}", truncate(s)));
    if s.is_empty() || s.len() > 5 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse::<u16>().map_err(|_| bad())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(16) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    const SB: &str = "sb_aaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn parse(p: &str) -> Result<Target, ApiError> {
        Target::parse(&p.parse::<Uri>().unwrap())
    }

    #[test]
    fn paths_and_queries_pass_verbatim() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("/index.html", "/index.html"),
            ("/a/b/?x=1&y=%2F", "/a/b/?x=1&y=%2F"),
            ("?q=a+b", "/?q=a+b"),
            ("/%2e%2e/%2Fetc", "/%2e%2e/%2Fetc"),
            ("/../../v1/keys", "/../../v1/keys"),
            ("//x", "//x"),
        ];
        for (rest, want) in cases {
            let t = parse(&format!("/v1/sandboxes/{SB}/ports/8000{rest}")).unwrap();
            assert_eq!(t, Target { id: SB.into(), port: 8000, path_and_query: want.into() }, "{rest}");
            assert_eq!(t.upstream_uri().unwrap().to_string(), want);
        }
        let t = parse(&format!("/v1/sandboxes/{SB}/ports/65535/x")).unwrap();
        assert_eq!((t.port, t.prefix()), (65535, format!("/v1/sandboxes/{SB}/ports/65535")));
    }

    #[test]
    fn bad_ports_are_400() {
        for port in ["0", "65536", "70000", "99999999999", "-1", "+80", "080", "8o", "%38000", "", "1e3"] {
            let e = parse(&format!("/v1/sandboxes/{SB}/ports/{port}/x")).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "invalid_request"), "{port:?}");
        }
        for port in ["1", "80", "3128", "65535"] {
            assert!(parse_port(port).is_ok(), "{port}");
        }
    }

    #[test]
    fn bad_ids_are_404() {
        for id in ["nope", "SB_AAAAAAAAAAAAAAAAAAAAAAAAAA", "sb_%61aaaaaaaaaaaaaaaaaaaaaaaaa"] {
            let e = parse(&format!("/v1/sandboxes/{id}/ports/80")).unwrap_err();
            assert_eq!(e.status.as_u16(), 404, "{id}");
        }
    }
}
