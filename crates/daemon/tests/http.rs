//! The HTTP layer on a real loopback socket with raw HTTP/1.1: auth on every route, route
//! tricks, Host/Origin checks, JSON hardening, header limits, slowloris, connection cap.
//! The manager is the real one without spawners: these tests never start a sandbox.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use safehouse_daemon::router;
use safehouse_http::server::{serve_listener, Limits};
use safehouse_manager::auth::{bootstrap_admin_key, Authenticator};
use safehouse_manager::{Manager, ManagerConfig, Store};
use serde_json::{json, Value};

const ADMIN: &str = "test-admin-key-0123456789";
const SB: &str = "sb_aaaaaaaaaaaaaaaaaaaaaaaaaa";

struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        Server::with_limits(Limits { header_read_timeout: Duration::from_secs(1), ..Limits::default() })
    }

    fn with_limits(limits: Limits) -> Server {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).unwrap();
        let dir =
            std::env::temp_dir().join(format!("safehouse-http-{}-{:x}", std::process::id(), u64::from_le_bytes(rnd)));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let d = dir.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let store = Arc::new(Store::open(&d).unwrap());
                let admin = bootstrap_admin_key(&d, Some(ADMIN)).unwrap();
                let manager =
                    Manager::new(ManagerConfig::new(d.clone()), store.clone(), Vec::new(), Default::default());
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let app = router(addr, &["api.example.com".to_string()], manager, Authenticator::new(store, &admin));
                tx.send(addr).unwrap();
                serve_listener(listener, app, limits, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("server started");
        Server { addr, dir, stop: Some(stop_tx), thread: Some(thread) }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends raw bytes on a fresh connection and reads the response until the server closes.
    fn raw(&self, req: &[u8]) -> Resp {
        let mut s = self.connect();
        let _ = s.write_all(req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Resp::parse(&out)
    }

    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&[u8]>) -> Resp {
        self.call_with(method, path, key, body, &[])
    }

    fn call_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
            req += "Connection: close\r\n";
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req += &format!("Host: {}\r\n", self.host());
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        if let Some(k) = key {
            req += &format!("Authorization: Bearer {k}\r\n");
        }
        let body = body.unwrap_or(b"");
        req += &format!("Content-Length: {}\r\n\r\n", body.len());
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.call(method, path, Some(ADMIN), body.map(str::as_bytes))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = raw[split..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Resp { status, head, body }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {self:?}")).to_string()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// Every route with its parameters filled in with well-formed values.
fn concrete_routes() -> Vec<(&'static str, String)> {
    safehouse_api::ROUTES
        .iter()
        .chain(safehouse_mcp::ROUTES)
        .chain(safehouse_console::ROUTES)
        .map(|(m, p)| {
            let path = p
                .replace("{pid}", "1")
                .replace("{port}", "8080")
                .replace("{*rest}", "x")
                .replace("{*path}", "index.html")
                .replace("{id}", if p.starts_with("/v1/keys") { "key_aaaaaaaaaaaaaaaa" } else { SB });
            (*m, path)
        })
        .collect()
}

fn is_public(m: &str, p: &str) -> bool {
    m == "GET" && (p == "/healthz" || p == "/v1/openapi.json" || p == "/" || p == "/ui" || p.starts_with("/ui/"))
}

#[test]
fn public_routes_need_no_key() {
    let srv = Server::start();
    let r = srv.call("GET", "/healthz", None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
    let r = srv.call("GET", "/v1/openapi.json", None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.1.0");
}

#[test]
fn every_route_refuses_missing_forged_malformed_and_revoked_keys() {
    let srv = Server::start();
    let r = srv.admin("POST", "/v1/keys", Some(r#"{"tenant":"acme"}"#));
    assert_eq!(r.status, 201, "{r:?}");
    let created = r.json();
    let revoked = created["key"].as_str().unwrap().to_string();
    let r = srv.admin("DELETE", &format!("/v1/keys/{}", created["id"].as_str().unwrap()), None);
    assert_eq!(r.status, 204);
    let forged = format!("sh_{}", "A".repeat(32));
    let almost_admin = format!("{ADMIN}x");
    let keys: [Option<&str>; 6] = [None, Some(&forged), Some("garbage"), Some(&revoked), Some(&almost_admin), Some("")];
    for (method, path) in concrete_routes() {
        if is_public(method, &path) {
            continue;
        }
        for key in keys {
            let r = srv.call(method, &path, key, Some(b"{}"));
            assert_eq!(r.status, 401, "{method} {path} key={key:?}: {r:?}");
            assert_eq!(r.code(), "unauthorized");
        }
        // Other schemes and duplicated headers are refused too.
        let r = srv.call_with(method, &path, None, None, &[("Authorization", &format!("Basic {ADMIN}"))]);
        assert_eq!(r.status, 401, "{method} {path}");
        let auth = format!("Bearer {ADMIN}");
        let r = srv.call_with(method, &path, None, None, &[("Authorization", &auth), ("Authorization", &auth)]);
        assert_eq!(r.status, 401, "{method} {path}");
    }
}

#[test]
fn route_tricks_do_not_skip_auth() {
    let srv = Server::start();
    for path in [
        "//healthz",
        "/healthz/",
        "/HEALTHZ",
        "/%68ealthz",
        "/v1/../healthz",
        "/./healthz",
        "/healthz?x=1/../v1/keys",
        "//v1/keys",
        "/v1//keys",
        "/V1/keys",
        "/v1/keys/",
        "/v1/./keys",
        "/v1/openapi.json/../keys",
        "/v1/sandboxes/../keys",
        "/v1/%6beys",
    ] {
        for method in ["GET", "POST", "DELETE"] {
            let r = srv.call(method, path, None, None);
            if method == "GET" && path.starts_with("/healthz?") {
                assert_eq!(r.status, 200, "{path}");
                continue;
            }
            assert_eq!(r.status, 401, "{method} {path}: {r:?}");
        }
    }
    // HEAD and other methods on public paths still need a key.
    for method in ["HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert_eq!(srv.call(method, "/healthz", None, None).status, 401, "{method}");
    }
    // Absolute-form request targets go through the same checks.
    let r = srv.raw(
        format!("GET http://{}/v1/keys HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", srv.host(), srv.host())
            .as_bytes(),
    );
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn unknown_routes_and_methods_are_json() {
    let srv = Server::start();
    let r = srv.admin("GET", "/v1/nothing", None);
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = srv.admin("GET", "//v1/sandboxes", None);
    assert_eq!(r.status, 404);
    let r = srv.admin("PATCH", "/v1/sandboxes", None);
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    let r = srv.admin("POST", "/healthz", None);
    assert_eq!(r.status, 405);
}

#[test]
fn bad_ids_are_404_like_unknown_ones() {
    let srv = Server::start();
    for path in [
        "/v1/sandboxes/nope",
        "/v1/sandboxes/SB_AAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaa1",
        "/v1/sandboxes/sb_%2e%2e%2faaaaaaaaaaaaaaaaaaaaa",
        "/v1/sandboxes/%ff%fe",
        &format!("/v1/sandboxes/{SB}"),
        &format!("/v1/sandboxes/{SB}/processes"),
        &format!("/v1/sandboxes/{SB}/fs/stat?path=/etc/passwd"),
        &format!("/v1/sandboxes/{SB}/files?path=/etc/passwd"),
    ] {
        let r = srv.admin("GET", path, None);
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{path}: {r:?}");
    }
    for pid in ["abc", "0", "-1", "01", "99999999999", "1.5"] {
        let r = srv.admin("POST", &format!("/v1/sandboxes/{SB}/processes/{pid}/signal"), Some(r#"{"signal":9}"#));
        assert_eq!(r.status, 404, "{pid}: {r:?}");
    }
    let r = srv.admin("DELETE", "/v1/keys/key_aaaaaaaaaaaaaaaa", None);
    assert_eq!(r.status, 404);
    let r = srv.admin("DELETE", "/v1/keys/..", None);
    assert_eq!(r.status, 404);
}

#[test]
fn another_tenants_sandbox_is_404() {
    let srv = Server::start();
    let key = srv.admin("POST", "/v1/keys", Some(r#"{"tenant":"acme","name":"ci"}"#)).json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = srv.call("GET", "/v1/sandboxes", Some(&key), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"sandboxes": []}));
    for (method, path) in concrete_routes() {
        if !path.starts_with("/v1/sandboxes/") {
            continue;
        }
        let query = if path.contains("/files") || path.contains("/fs") {
            "?path=/x"
        } else if path.ends_with("/explain") {
            "?net=pypi.org:443"
        } else {
            ""
        };
        let body: &[u8] = if path.ends_with("/signal") {
            br#"{"signal":"SIGTERM"}"#
        } else if path.ends_with("/exec") || path.ends_with("/processes") && method == "POST" {
            br#"{"cmd":["true"]}"#
        } else if path.ends_with("/timeout") {
            br#"{"timeout_s":60}"#
        } else if path.ends_with("/mkdir") {
            br#"{"path":"/x"}"#
        } else if path.ends_with("/move") {
            br#"{"from":"/x","to":"/y"}"#
        } else if path.ends_with("/code") {
            br#"{"code":"1+1"}"#
        } else {
            b""
        };
        let headers: &[(&str, &str)] = if path.ends_with("/attach") {
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade, close"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ]
        } else {
            &[]
        };
        let r = srv.call_with(method, &format!("{path}{query}"), Some(&key), Some(body), headers);
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
    }
}

#[test]
fn keys_are_admin_only_and_never_listed_with_secrets() {
    let srv = Server::start();
    let r = srv.admin("POST", "/v1/keys", Some(r#"{"tenant":"acme","name":"ci"}"#));
    assert_eq!(r.status, 201);
    let k = r.json();
    assert_eq!(k["tenant"], "acme");
    let secret = k["key"].as_str().unwrap();
    assert!(secret.starts_with("sh_") && secret.len() == 35);
    for (m, p, b) in [
        ("POST", "/v1/keys", r#"{"tenant":"evil"}"#),
        ("GET", "/v1/keys", ""),
        ("DELETE", "/v1/keys/key_aaaaaaaaaaaaaaaa", ""),
    ] {
        let r = srv.call(m, p, Some(secret), Some(b.as_bytes()));
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{m} {p}");
    }
    let list = srv.admin("GET", "/v1/keys", None);
    assert_eq!(list.status, 200);
    let text = String::from_utf8_lossy(&list.body).to_string();
    assert!(!text.contains(secret) && !text.contains("hash"), "{text}");
    assert_eq!(list.json()["keys"][0]["id"], k["id"]);
    let r = srv.admin("POST", "/v1/keys", Some(r#"{"tenant":"Not Valid"}"#));
    assert_eq!(r.status, 400);
    let r = srv.admin("POST", "/v1/keys", Some(r#"{"tenant":"a","extra":1}"#));
    assert_eq!(r.status, 400);
}

#[test]
fn foreign_host_and_origin_are_refused() {
    let srv = Server::start();
    let port = srv.addr.port();
    for host in ["evil.example", &format!("evil.example:{port}"), "localhost:1", "", "127.0.0.1.evil.example"] {
        for path in ["/healthz", "/v1/sandboxes"] {
            let r = srv.call_with("GET", path, Some(ADMIN), None, &[("Host", host)]);
            assert_eq!(r.status, 403, "{host} {path}: {r:?}");
            assert_eq!(r.code(), "forbidden_host");
        }
    }
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), "localhost".into(), "api.example.com".into()] {
        let r = srv.call_with("GET", "/healthz", None, None, &[("Host", &host)]);
        assert_eq!(r.status, 200, "{host}");
    }
    let r = srv.raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 403, "no Host: {r:?}");
    for origin in ["http://evil.example", "null", &format!("http://evil.example:{port}")] {
        let r = srv.call_with("POST", "/v1/keys", Some(ADMIN), Some(br#"{"tenant":"x"}"#), &[("Origin", origin)]);
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden_origin"), "{origin}");
    }
    let origin = format!("http://127.0.0.1:{port}");
    let r = srv.call_with("GET", "/healthz", None, None, &[("Origin", &origin)]);
    assert_eq!(r.status, 200);
}

#[test]
fn malformed_json_is_400_and_big_bodies_413() {
    let srv = Server::start();
    let deep = format!("{{\"policy\":{}{}}}", "[".repeat(40), "]".repeat(40));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (deep.into_bytes(), "deeper"),
        ("[".repeat(200_000).into_bytes(), "deeper"),
        (b"{\"preset\": \"\xff\xfe\"}".to_vec(), "UTF-8"),
        (br#"{"preset":"a","unknown":1}"#.to_vec(), "unknown field"),
        (br#"{"preset":"a","preset":"b"}"#.to_vec(), "duplicate key"),
        (br#"{"timeout_s": 99999999999999999999999999}"#.to_vec(), "out of range"),
        (br#"{"timeout_s": 1e400}"#.to_vec(), "out of range"),
        (br#"{"timeout_s": 100000}"#.to_vec(), "timeout_s"),
        (br#"{"timeout_s": -1}"#.to_vec(), "invalid"),
        (br#"{"metadata": {"a": 1}}"#.to_vec(), "invalid"),
        (b"{".to_vec(), "invalid"),
        (b"null".to_vec(), "invalid"),
        (br#"{"env": {"A=B": "x"}}"#.to_vec(), "environment"),
    ];
    for (body, want) in cases {
        let r = srv.admin("POST", "/v1/sandboxes", Some(std::str::from_utf8(&body).unwrap_or("\u{fffd}")));
        // Bad UTF-8 cannot travel through &str: send it raw.
        let r = if std::str::from_utf8(&body).is_err() {
            srv.call("POST", "/v1/sandboxes", Some(ADMIN), Some(&body))
        } else {
            r
        };
        assert_eq!(r.status, 400, "{want}: {r:?}");
        assert_eq!(r.code(), "invalid_request");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let meta: String = (0..65).map(|i| format!("\"k{i}\":\"v\"")).collect::<Vec<_>>().join(",");
    let r = srv.admin("POST", "/v1/sandboxes", Some(&format!("{{\"metadata\":{{{meta}}}}}")));
    assert_eq!(r.status, 400);
    let r = srv.admin("POST", &format!("/v1/sandboxes/{SB}/exec"), Some(r#"{"cmd":[]}"#));
    assert_eq!(r.status, 400);
    let r = srv.admin("POST", &format!("/v1/sandboxes/{SB}/exec"), Some(r#"{"cmd":["ls"],"bogus":true}"#));
    assert_eq!(r.status, 400);

    // > 1 MiB with Content-Length, and chunked without one.
    let big = format!("{{\"preset\":\"{}\"}}", "a".repeat(1024 * 1024));
    let r = srv.admin("POST", "/v1/sandboxes", Some(&big));
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    let mut req = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.host()
    )
    .into_bytes();
    for chunk in big.as_bytes().chunks(64 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = srv.raw(&req);
    assert_eq!(r.status, 413, "{:?}", r.head);
}

#[test]
fn bad_query_parameters_are_400() {
    let srv = Server::start();
    for path in [
        "/v1/sandboxes?bogus=1",
        "/v1/sandboxes?state=zombie",
        "/v1/sandboxes?metadata.=x",
        "/v1/sandboxes?state=running&state=killed",
        "/v1/sandboxes?x=%zz",
    ] {
        let r = srv.admin("GET", path, None);
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    let r = srv.admin("GET", "/v1/sandboxes?state=running&metadata.team=red", None);
    assert_eq!(r.status, 200);
    let r = srv.admin("GET", &format!("/v1/sandboxes/{SB}/fs/list?path=/&depth=17"), None);
    assert_eq!(r.status, 400);
    let r = srv.admin("GET", &format!("/v1/sandboxes/{SB}/fs/stat"), None);
    assert_eq!(r.status, 400);
}

#[test]
fn attach_requires_a_websocket_upgrade() {
    let srv = Server::start();
    let r = srv.admin("GET", &format!("/v1/sandboxes/{SB}/processes/1/attach"), None);
    assert_eq!((r.status, r.code().as_str()), (400, "websocket_required"));
}

#[test]
fn oversized_headers_are_refused() {
    let srv = Server::start();
    for size in [20 * 1024, 1024 * 1024] {
        let req = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            srv.host(),
            "a".repeat(size)
        );
        let r = srv.raw(req.as_bytes());
        assert!(r.status == 431 || r.status == 400 || r.status == 0, "{size}: {}", r.head);
        assert_ne!(r.status, 200);
    }
    // Just under the limit is fine.
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        srv.host(),
        "a".repeat(15 * 1024)
    );
    assert_eq!(srv.raw(req.as_bytes()).status, 200);
}

#[test]
fn slowloris_is_cut_off_and_others_are_served() {
    let srv = Server::start(); // 1 s header timeout
    let mut slow = srv.connect();
    let started = Instant::now();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", srv.host());
    let mut cut = false;
    for b in head.bytes().chain(std::iter::repeat(b'a')) {
        if slow.write_all(&[b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
        // Meanwhile other clients get answers.
        if started.elapsed() < Duration::from_millis(120) {
            assert_eq!(srv.call("GET", "/healthz", None, None).status, 200);
        }
    }
    if !cut {
        // The server may have closed without the write failing yet: the read says so.
        slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 512];
        let n = slow.read(&mut buf).unwrap_or(0);
        assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "still open");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not cut off in time");
}

#[test]
fn idle_keepalive_connections_are_closed() {
    let srv = Server::start(); // 1 s header timeout
    let mut s = srv.connect();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", srv.host()).as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    // Nothing more is sent: the server hangs up.
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn connection_cap() {
    let srv = Server::with_limits(Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(5),
        ..Limits::default()
    });
    let held: Vec<TcpStream> = (0..4).map(|_| srv.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = srv.connect();
    extra.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = extra.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", srv.host()).as_bytes());
    let mut buf = [0u8; 64];
    assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "a 5th connection was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(srv.call("GET", "/healthz", None, None).status, 200);
}

#[test]
fn shutdown_stops_listening() {
    let srv = Server::start();
    let addr = srv.addr;
    drop(srv);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn every_listed_route_reaches_a_handler() {
    let srv = Server::start();
    for (method, path) in concrete_routes() {
        let r = srv.admin(method, &path, None);
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert_ne!(r.status, 405, "{method} {path} is not routed: {body}");
        let message = serde_json::from_slice::<Value>(&r.body).ok().map(|v| v["error"]["message"].to_string());
        assert!(!message.unwrap_or_default().contains("no such route"), "{method} {path} is not routed: {body}");
    }
}

/// The E2B control plane: every route is routed, takes the key in `X-API-Key` (and only
/// there), and answers in E2B's error shape; the data plane needs the sandbox's token.
#[test]
fn e2b_routes_take_x_api_key_and_answer_in_e2b_shape() {
    let srv = Server::start();
    for (method, p) in safehouse_e2b::ROUTES {
        let path = p.replace("{id}", SB);
        let r = srv.call(method, &path, None, None);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status, v["code"].as_u64()), (401, Some(401)), "{method} {path} without a key: {v}");
        let r = srv.call_with(method, &path, None, Some(b"{}"), &[("X-API-Key", "sh_wrongwrongwrongwrongwrongwrong")]);
        assert_eq!(r.status, 401, "{method} {path} with a wrong key");
        let r = srv.call_with(method, &path, None, Some(b"{}"), &[("X-API-Key", ADMIN)]);
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert_ne!(r.status, 401, "{method} {path}: the admin key in X-API-Key is refused: {body}");
        assert!(!body.contains("no such route") && r.status != 405, "{method} {path} is not routed: {body}");
    }
    // X-API-Key opens nothing of the native API.
    let r = srv.call_with("GET", "/v1/sandboxes", None, None, &[("X-API-Key", ADMIN)]);
    assert_eq!(r.status, 401);
    // The data plane: no token, a wrong one: 401 before anything is looked up.
    let r = srv.call_with("POST", "/process.Process/List", None, Some(b"{}"), &[("E2b-Sandbox-Id", SB)]);
    assert_eq!(r.status, 401);
    let h = [("E2b-Sandbox-Id", SB), ("X-Access-Token", "sha_nope")];
    let r = srv.call_with("POST", "/process.Process/List", None, Some(b"{}"), &h);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["code"].as_str()), (401, Some("unauthenticated")), "{v}");
    // /health needs no token; an unknown sandbox is E2B's 502 "was not found".
    let r = srv.call_with("GET", "/health", None, None, &[("E2b-Sandbox-Id", SB)]);
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("was not found"));
}

#[test]
fn the_console_is_public_framed_by_nothing_and_checks_host() {
    let srv = Server::start();
    let r = srv.call("GET", "/ui/", None, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self';"), "{csp}");
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
    for p in ["/", "/ui"] {
        let r = srv.call("GET", p, None, None);
        assert_eq!((r.status, r.header("location").as_deref()), (308, Some("/ui/")), "{p}");
    }
    // A page rebound to this daemon's address still cannot load it.
    let r = srv.call_with("GET", "/ui/", None, None, &[("Host", "evil.example")]);
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden_host"));
    // Only reads are public: anything else below /ui needs a key like every route.
    for m in ["POST", "PUT", "DELETE"] {
        assert_eq!(srv.call(m, "/ui/", None, None).status, 401, "{m}");
    }
    // The key-less console routes do not open the API: a path below /ui/ is a file of the
    // console or nothing (the router does not resolve `..`).
    let r = srv.call("GET", "/ui/../v1/keys", None, None);
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").unwrap().starts_with("text/plain") && !r.head.contains("key_"));
}

#[test]
fn websocket_tickets_open_one_path_once() {
    let srv = Server::start();
    let path = format!("/v1/sandboxes/{SB}/processes/7/attach");
    // Only attach routes take tickets.
    let r = srv.admin("POST", "/v1/tickets", Some(r#"{"path":"/v1/kill-all"}"#));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"), "{r:?}");
    let ticket = || {
        let r = srv.admin("POST", "/v1/tickets", Some(&format!(r#"{{"path":"{path}"}}"#)));
        assert_eq!(r.status, 201, "{r:?}");
        r.json()["ticket"].as_str().unwrap().to_string()
    };
    let ws = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    // A good ticket gets the request past authentication (to the route: no such sandbox)...
    let t = ticket();
    let r = srv.call_with("GET", &format!("{path}?ticket={t}"), None, None, &ws);
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{r:?}");
    // ...once.
    let r = srv.call_with("GET", &format!("{path}?ticket={t}"), None, None, &ws);
    assert_eq!(r.status, 401, "{r:?}");
    // Not on another path, and that try uses it up.
    let t = ticket();
    let other = path.replace("/7/", "/8/");
    assert_eq!(srv.call_with("GET", &format!("{other}?ticket={t}"), None, None, &ws).status, 401);
    assert_eq!(srv.call_with("GET", &format!("{path}?ticket={t}"), None, None, &ws).status, 401);
    // Not without the WebSocket upgrade, nor as a key for anything else.
    let t = ticket();
    assert_eq!(srv.call("GET", &format!("{path}?ticket={t}"), None, None).status, 401);
    assert_eq!(srv.call("GET", "/v1/sandboxes", Some(&t), None).status, 401);
    let r = srv.call_with("GET", &format!("/v1/sandboxes?ticket={t}"), None, None, &ws);
    assert_eq!(r.status, 401, "{r:?}");
    // The ticket parameter is taken out of the query: the route sees only its own.
    let t = ticket();
    let r = srv.call_with("GET", &format!("{path}?binary=1&ticket={t}"), None, None, &ws);
    assert_eq!(r.status, 404, "{r:?}");
}
