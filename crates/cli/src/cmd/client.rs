//! A small synchronous client for the daemon's HTTP API (docs/api.md): where the daemon is
//! (`SAFEHOUSE_URL`), which key to use (`SAFEHOUSE_API_KEY`), and failures turned into
//! messages a person can act on. Shared by `sandbox`, `exec`, `shell`, `files` and `keys`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

/// Where clients look for the daemon when `SAFEHOUSE_URL` is unset.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8700";

/// Exit status of a client command that failed (bad arguments, daemon errors).
pub const EXIT_FAILURE: i32 = 1;

/// An error answered by the daemon: `{"error": {"code", "message"}}` with its status.
#[derive(Debug)]
// `status` and `code` are for callers that branch on the answer (and for the tests).
#[allow(dead_code)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

pub struct Client {
    base: String,
    key: String,
    agent: ureq::Agent,
    /// For an `https://` daemon: how its certificate is verified (docs/tls.md).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    /// The daemon named by the environment, with its key. With neither `SAFEHOUSE_URL` nor
    /// `SAFEHOUSE_API_KEY` set: the per-user local daemon, started if needed (local mode).
    pub fn from_env() -> Result<Client> {
        let base = std::env::var("SAFEHOUSE_URL").ok().filter(|u| !u.trim().is_empty());
        let key = std::env::var("SAFEHOUSE_API_KEY").ok().map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        if base.is_none() && key.is_none() {
            let d = super::local::ensure()?;
            return Client::new(d.url.clone(), d.key()?);
        }
        let base = base.unwrap_or_else(|| DEFAULT_URL.to_string()).trim().trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("SAFEHOUSE_URL={base:?}: write a URL like {DEFAULT_URL}");
        }
        let Some(key) = key else {
            bail!(
                "no API key: set SAFEHOUSE_API_KEY (the daemon's admin key is in DATA_DIR/admin.key; \
                 `safehouse keys create` makes tenant keys)"
            );
        };
        Client::new(base, key)
    }

    /// A client of the daemon at `base`; an `https://` one verifies the daemon's certificate
    /// as `SAFEHOUSE_CA_CERT` and `SAFEHOUSE_TLS_FINGERPRINT` say (docs/tls.md).
    pub fn new(base: String, key: String) -> Result<Client> {
        let tls = if base.starts_with("https://") { Some(super::tls::client_config()?) } else { None };
        // No overall timeout: uploads, downloads and long requests are legitimate. A read that
        // stalls this long means the daemon is wedged.
        let agent = Client::agent_builder(&tls)
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .user_agent(concat!("safehouse/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client { base, key, agent, tls })
    }

    /// An agent builder that connects within 10 s and speaks TLS with `tls`.
    fn agent_builder(tls: &Option<std::sync::Arc<rustls::ClientConfig>>) -> ureq::AgentBuilder {
        let b = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10));
        match tls {
            Some(config) => b.tls_connector(std::sync::Arc::new(super::tls::Connector(config.clone()))),
            None => b,
        }
    }

    /// A fresh agent builder with this client's TLS trust (for callers with their own timeouts).
    pub fn new_agent(&self) -> ureq::AgentBuilder {
        Client::agent_builder(&self.tls)
    }

    /// The TLS configuration for an `https://` daemon.
    pub fn tls(&self) -> Option<&std::sync::Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// A request to `path` (which starts with `/`) carrying the key.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.key))
    }

    /// Turns ureq's outcome into the response or an error that says what to do.
    pub fn check(&self, r: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => Err(api_error(status, resp).into()),
            Err(ureq::Error::Transport(t)) => Err(self.transport_error(&t)),
        }
    }

    fn transport_error(&self, t: &ureq::Transport) -> anyhow::Error {
        if let Some(tls) = super::tls::failure_in(t) {
            return anyhow::anyhow!("cannot talk to the daemon at {}: {tls}", self.base);
        }
        match t.kind() {
            ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                anyhow::anyhow!("cannot reach the daemon at {}; is `safehouse serve` running?", self.base)
            }
            _ => anyhow::anyhow!("cannot talk to the daemon at {}: {t}", self.base),
        }
    }

    pub fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut req = self.request("GET", path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        json_body(self.check(req.call())?)
    }

    /// Sends `body` as JSON; a 204 answer is `Value::Null`.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        json_body(self.check(self.request(method, path).send_json(body))?)
    }

    pub fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<()> {
        let mut req = self.request("DELETE", path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.check(req.call())?;
        Ok(())
    }

    /// The WebSocket URL (`ws://` or `wss://`) of `path`.
    pub fn ws_url(&self, path: &str) -> String {
        let rest = self.base.strip_prefix("https://").map(|r| format!("wss://{r}"));
        let base = rest.unwrap_or_else(|| self.base.replacen("http://", "ws://", 1));
        format!("{base}{path}")
    }
}

fn api_error(status: u16, resp: ureq::Response) -> ApiError {
    ApiError::from_body(status, &resp.into_string().unwrap_or_default())
}

/// The daemon's hints name its HTTP routes (right for HTTP callers); a person at the CLI
/// gets the command instead.
const HINTS: &[(&str, &str)] = &[
    ("check the id with GET /v1/sandboxes", "check the id with `safehouse sandbox ls`"),
    ("see GET /v1/keys", "see `safehouse keys ls`"),
];

fn cli_hints(mut message: String) -> String {
    for (route, command) in HINTS {
        message = message.replace(route, command);
    }
    message
}

impl ApiError {
    /// The daemon's error document, or a stand-in naming the status when the body is not one.
    pub fn from_body(status: u16, text: &str) -> ApiError {
        let parsed: Option<(String, String)> = serde_json::from_str::<Value>(text).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((e.get("code")?.as_str()?.to_string(), e.get("message")?.as_str()?.to_string()))
        });
        if let Some((code, message)) = parsed {
            return ApiError { status, code, message: cli_hints(message) };
        }
        let snippet: String = text.trim().chars().take(200).collect();
        let message = if snippet.is_empty() {
            format!("the daemon answered HTTP {status}")
        } else {
            format!("the daemon answered HTTP {status}: {snippet}")
        };
        ApiError { status, code: "http_error".into(), message }
    }
}

fn json_body(resp: ureq::Response) -> Result<Value> {
    if resp.status() == 204 {
        return Ok(Value::Null);
    }
    let text = resp.into_string()?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("the daemon sent invalid JSON: {e}"))
}

/// Percent-encodes one path segment (a sandbox or key id typed by a person), so that it
/// cannot name another route.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/v1/sandboxes/{id}` followed by `rest`.
pub fn sandbox_path(id: &str, rest: &str) -> String {
    format!("/v1/sandboxes/{}{rest}", seg(id))
}

/// `KEY=VALUE` flags into a map; `flag` names the option in the error.
pub fn parse_pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for kv in items {
        let Some((k, v)) = kv.split_once('=') else { bail!("{flag} {kv:?}: write KEY=VALUE") };
        if k.is_empty() {
            bail!("{flag} {kv:?}: the key is empty");
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A string field of a JSON object, or `-`.
pub fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Prints rows as left-aligned columns (the last one unpadded).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Runs a client command: errors print as `safehouse: <message>` and exit 1.
pub fn finish(r: Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("safehouse: {e:#}");
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("sb_abc123"), "sb_abc123");
        assert_eq!(seg("../keys"), "..%2Fkeys");
        assert_eq!(seg("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn pairs() {
        let m = parse_pairs(&["a=1".into(), "b=x=y".into(), "c=".into()], "--env").unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x=y");
        assert_eq!(m["c"], "");
        assert!(parse_pairs(&["novalue".into()], "--env").is_err());
        assert!(parse_pairs(&["=v".into()], "--env").is_err());
    }

    #[test]
    fn ws_urls() {
        let c = Client::new("http://127.0.0.1:8700".into(), "k".into()).unwrap();
        assert_eq!(c.ws_url("/v1/x"), "ws://127.0.0.1:8700/v1/x");
        let c = Client::new("https://h".into(), "k".into()).unwrap();
        assert_eq!(c.ws_url("/v1/x"), "wss://h/v1/x");
    }

    #[test]
    fn error_bodies() {
        let resp =
            ureq::Response::new(404, "Not Found", r#"{"error":{"code":"not_found","message":"no such sandbox"}}"#)
                .unwrap();
        let e = api_error(404, resp);
        assert_eq!((e.code.as_str(), e.to_string().as_str()), ("not_found", "no such sandbox"));
        let resp = ureq::Response::new(502, "Bad Gateway", "upstream down").unwrap();
        assert_eq!(api_error(502, resp).to_string(), "the daemon answered HTTP 502: upstream down");
    }
}
