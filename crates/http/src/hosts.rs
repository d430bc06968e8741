//! The `Host` and `Origin` allowlist: a page on another site that rebinds its DNS name to
//! 127.0.0.1, or simply posts to http://127.0.0.1:8700, must not reach the API.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, StatusCode, Uri};

use crate::errors::ApiError;

#[derive(Debug, Clone)]
pub struct HostAllowlist {
    port: u16,
    /// Names allowed with no port or the listen port (lowercase; IPv6 in brackets).
    local: Vec<String>,
    /// `--allowed-host` entries: a name alone allows any port; `name:port` only that one.
    extra: Vec<(String, Option<u16>)>,
}

impl HostAllowlist {
    pub fn new(listen: SocketAddr, allowed_hosts: &[String]) -> HostAllowlist {
        let ip = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let mut local = vec!["localhost".to_string(), "127.0.0.1".to_string(), "[::1]".to_string()];
        if !local.contains(&ip) {
            local.push(ip);
        }
        let extra = allowed_hosts.iter().filter_map(|h| split_host_port(&h.trim().to_ascii_lowercase()).ok()).collect();
        HostAllowlist { port: listen.port(), local, extra }
    }

    /// Whether a `host[:port]` authority names this daemon.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok((host, port)) = split_host_port(&authority.to_ascii_lowercase()) else { return false };
        if self.local.contains(&host) && port.is_none_or(|p| p == self.port) {
            return true;
        }
        self.extra.iter().any(|(h, p)| *h == host && (p.is_none() || *p == port))
    }

    /// The `Host` header (or the authority of an absolute-form request line) must be allowed.
    pub fn check_host(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h.to_str().ok().map(str::to_string),
            (None, _) => uri.authority().map(|a| a.as_str().to_string()),
            (Some(_), Some(_)) => None,
        };
        if let (Some(h), Some(a)) = (&host, uri.authority()) {
            if !h.eq_ignore_ascii_case(a.as_str()) {
                return Err(forbidden_host());
            }
        }
        match host {
            Some(h) if self.allows(&h) => Ok(()),
            _ => Err(forbidden_host()),
        }
    }

    /// A browser's `Origin`, when sent, must be this daemon too (no cross-site requests).
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let origin = match (origins.next(), origins.next()) {
            (None, _) => return Ok(()),
            (Some(o), None) => o.to_str().unwrap_or(""),
            (Some(_), Some(_)) => "",
        };
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        match authority {
            Some(a) if !a.contains('/') && self.allows(a) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "cross-site requests are refused; call the API from a client, not a web page",
            )),
        }
    }
}

fn forbidden_host() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_host",
        "the Host header does not name this daemon; use its listen address or start it with --allowed-host NAME",
    )
}

/// `name`, `name:port`, `[v6]`, `[v6]:port` → (host, port). Empty names, empty or
/// non-numeric ports, userinfo and stray characters are errors.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), ()> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(())?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(())?),
        };
        (format!("[{inside}]"), port)
    } else {
        let (h, p) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
            return Err(());
        }
        (h.to_string(), p)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| ())?)
        }
        Some(_) => return Err(()),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn list() -> HostAllowlist {
        HostAllowlist::new("127.0.0.1:8700".parse().unwrap(), &["api.example.com".into(), "box.lan:9000".into()])
    }

    #[test]
    fn allowed_hosts() {
        let l = list();
        for ok in [
            "127.0.0.1:8700",
            "127.0.0.1",
            "localhost:8700",
            "LOCALHOST",
            "[::1]:8700",
            "[::1]",
            "api.example.com",
            "api.example.com:443",
            "box.lan:9000",
        ] {
            assert!(l.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8700",
            "localhost:8701",
            "127.0.0.1:80",
            "box.lan",
            "box.lan:9001",
            "localhost.",
            "user@localhost",
            "localhost:",
            "localhost:abc",
            "[::1",
            "127.0.0.1:8700/x",
            "",
            "localhost:99999999",
        ] {
            assert!(!l.allows(bad), "{bad}");
        }
    }

    #[test]
    fn listen_address_is_allowed() {
        let l = HostAllowlist::new("[::]:7000".parse().unwrap(), &[]);
        assert!(l.allows("[::]:7000"));
        assert!(l.allows("localhost:7000"));
        let l = HostAllowlist::new("10.1.2.3:7000".parse().unwrap(), &[]);
        assert!(l.allows("10.1.2.3:7000"));
        assert!(!l.allows("10.1.2.4:7000"));
    }

    #[test]
    fn host_header_checks() {
        let l = list();
        let uri: Uri = "/v1/sandboxes".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(l.check_host(&h, &uri).unwrap_err().code, "forbidden_host");
        h.insert(header::HOST, HeaderValue::from_static("localhost:8700"));
        l.check_host(&h, &uri).unwrap();
        h.append(header::HOST, HeaderValue::from_static("localhost:8700"));
        assert!(l.check_host(&h, &uri).is_err(), "two Host headers");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(l.check_host(&h, &uri).unwrap_err().status, 403);
        // An absolute-form target must agree with Host.
        let abs: Uri = "http://evil.example/v1/sandboxes".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("localhost:8700"));
        assert!(l.check_host(&h, &abs).is_err());
    }

    #[test]
    fn origin_checks() {
        let l = list();
        let mut h = HeaderMap::new();
        l.check_origin(&h).unwrap();
        for ok in ["http://localhost:8700", "https://api.example.com"] {
            h.insert(header::ORIGIN, HeaderValue::from_static(ok));
            l.check_origin(&h).unwrap();
        }
        for bad in ["http://evil.example", "null", "file://", "http://localhost:8700/x", "ftp://localhost:8700"] {
            h.insert(header::ORIGIN, HeaderValue::from_static(bad));
            assert_eq!(l.check_origin(&h).unwrap_err().code, "forbidden_origin", "{bad}");
        }
    }
}
