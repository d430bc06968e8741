//! Reading what an HTTP client asked for: the absolute-form URI of a forwarded request, or the
//! authority of a CONNECT. Pure; the host is read by the policy's `parse_target`.

use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use safehouse_policy::network::{parse_target, Target};

/// A request target, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub target: Target,
    pub port: u16,
    /// `host[:port]` as the client wrote it (no user info): the `Host` sent upstream.
    pub authority: String,
}

/// Why a request target cannot be served; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "this is the safehouse egress proxy, not the server: send requests in proxy form \
         (\"GET http://host/path\"), e.g. through HTTP_PROXY, or use CONNECT host:port"
    )]
    NotProxyForm,
    #[error("{0}:// URLs cannot be forwarded; the proxy forwards http:// only, use CONNECT (HTTPS_PROXY) for https")]
    Scheme(String),
    #[error("CONNECT needs host:port, e.g. \"CONNECT example.com:443\"")]
    ConnectForm,
    #[error("{0:?} is not a port; write a number from 1 to 65535")]
    Port(String),
    #[error("bad host: {0}")]
    Host(String),
    #[error("the request target is not a URI: {0}")]
    Uri(String),
}

/// The target of a non-CONNECT request: `http://host[:port]/...` only.
pub fn forward_target(uri: &Uri) -> Result<RequestTarget, TargetError> {
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        return Err(TargetError::NotProxyForm);
    };
    if *scheme != Scheme::HTTP {
        return Err(TargetError::Scheme(scheme.as_str().to_ascii_lowercase()));
    }
    read_authority(authority, Some(80))
}

/// The target of a CONNECT: `host:port`, port required.
pub fn connect_target(uri: &Uri) -> Result<RequestTarget, TargetError> {
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty()) {
        return Err(TargetError::ConnectForm);
    }
    let authority = uri.authority().ok_or(TargetError::ConnectForm)?;
    read_authority(authority, None)
}

/// Reads a request line's target the way the HTTP front end does (for tests and fuzzing).
pub fn parse_request_target(method: &Method, target: &str) -> Result<RequestTarget, TargetError> {
    let uri: Uri = target.parse().map_err(|e: http::uri::InvalidUri| TargetError::Uri(e.to_string()))?;
    if method == Method::CONNECT {
        connect_target(&uri)
    } else {
        forward_target(&uri)
    }
}

fn read_authority(a: &Authority, default_port: Option<u16>) -> Result<RequestTarget, TargetError> {
    let s = a.as_str();
    let host_port = s.rsplit_once('@').map_or(s, |(_, hp)| hp);
    let port = match (a.port(), default_port) {
        (Some(p), _) => match p.as_u16() {
            0 => return Err(TargetError::Port(p.to_string())),
            n => n,
        },
        (None, Some(d)) => d,
        (None, None) => return Err(TargetError::ConnectForm),
    };
    // A port that does not fit in u16 leaves `a.port()` None with a ':' still there.
    if a.port().is_none() && host_port.rsplit_once(']').map_or(host_port, |(_, after)| after).contains(':') {
        let p = host_port.rsplit_once(':').map_or("", |(_, p)| p);
        return Err(TargetError::Port(p.to_string()));
    }
    let target = parse_target(a.host()).map_err(TargetError::Host)?;
    Ok(RequestTarget { target, port, authority: host_port.to_string() })
}

/// `host:port` for messages and records, with IPv6 in brackets.
pub fn describe(target: &Target, port: u16) -> String {
    format!("{target}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn get(s: &str) -> Result<RequestTarget, TargetError> {
        parse_request_target(&Method::GET, s)
    }

    #[test]
    fn reads_forward_targets() {
        let t = get("http://Allowed.Test:8080/x?y").unwrap();
        assert_eq!(
            (t.target, t.port, t.authority.as_str()),
            (Target::Name("allowed.test".into()), 8080, "Allowed.Test:8080")
        );
        let t = get("http://user:pw@a.test/").unwrap();
        assert_eq!((t.port, t.authority.as_str()), (80, "a.test"));
        let t = get("http://0x7f.1:81/").unwrap();
        assert_eq!(t.target, Target::Ip("127.0.0.1".parse::<IpAddr>().unwrap()));
        let t = get("http://[::ffff:127.0.0.1]:81/").unwrap();
        assert_eq!(t.target, Target::Ip("127.0.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(get("/path"), Err(TargetError::NotProxyForm));
        assert_eq!(get("https://a.test/"), Err(TargetError::Scheme("https".into())));
        assert!(matches!(get("http://a.test:0/"), Err(TargetError::Port(_))));
        assert!(get("http://a.test:99999/").is_err());
        assert!(matches!(get("http://1.2.3.999/"), Err(TargetError::Host(_))));
    }

    #[test]
    fn reads_connect_targets() {
        let t = parse_request_target(&Method::CONNECT, "a.test:443").unwrap();
        assert_eq!((t.target, t.port), (Target::Name("a.test".into()), 443));
        let t = parse_request_target(&Method::CONNECT, "[::1]:443").unwrap();
        assert_eq!(t.target, Target::Ip("::1".parse::<IpAddr>().unwrap()));
        assert!(parse_request_target(&Method::CONNECT, "a.test").is_err());
        assert!(parse_request_target(&Method::CONNECT, "http://a.test:443/").is_err());
    }
}
