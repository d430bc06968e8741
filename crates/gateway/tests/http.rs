//! The HTTP forward proxy and CONNECT, against a real upstream on loopback.

mod common;

use common::*;
use safehouse_gateway::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(rules: &[&str]) -> (Upstream, Running) {
    let up = upstream().await;
    let gw = gateway(Config::new(policy(rules), test_resolver(&up), host())).await;
    (up, gw)
}

#[tokio::test]
async fn forwards_allowed_names_exact_wildcard_and_port() {
    let up = upstream().await;
    let port = up.addr.port();
    let rules = [format!("allowed.test:{port}"), format!("*.wild.test:{port}")];
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let resolver = test_resolver(&up).with_override("a.wild.test", &[up.addr.ip()]);
    let gw = gateway(Config::new(policy(&rules), resolver, host())).await;

    let r = get(gw.addr, &format!("http://allowed.test:{port}/x?y=1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello\n");
    // origin form upstream, Host replaced by the checked authority
    assert_eq!(r.header("x-seen-path"), Some("/x?y=1"));
    assert_eq!(r.header("x-seen-host"), Some(format!("allowed.test:{port}").as_str()));

    let r = get(gw.addr, &format!("http://a.wild.test:{port}/")).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // the wildcard does not cover the name itself; other.test has no rule; another port is not granted
    for url in
        [format!("http://wild.test:{port}/"), format!("http://other.test:{port}/"), "http://allowed.test/".into()]
    {
        let r = get(gw.addr, &url).await;
        assert_eq!(r.status, 403, "{url}: {}", r.text());
        assert_eq!(r.header("x-safehouse-denied"), Some("default deny"));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    let s = gw.gw.stats();
    assert_eq!((s.allowed, s.denied, s.recent_denials.len()), (2, 3, 3));
}

#[tokio::test]
async fn denial_body_names_request_rule_reason_and_hint() {
    let (up, gw) = setup(&["allowed.test:1"]).await;
    let r = get(gw.addr, "http://other.test:8080/secret").await;
    assert_eq!(r.status, 403);
    let body = r.text();
    assert!(body.contains("GET http://other.test:8080/secret"), "{body}");
    assert!(body.contains("rule: default deny"), "{body}");
    assert!(body.contains("no network.allow entry matches other.test:8080"), "{body}");
    assert!(body.contains("add \"other.test:8080\" to network.allow"), "{body}");
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn exact_rule_reaches_a_host_address_and_spellings_are_one_address() {
    let up = upstream().await;
    let port = up.addr.port();
    // 127.0.0.1 is the host's: a block never opens it, only the exact address does.
    let block = gateway(Config::new(policy(&[&format!("127.0.0.0/8:{port}")]), test_resolver(&up), host())).await;
    let r = get(block.addr, &format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-safehouse-denied"), Some("this host (127.0.0.0/8)"));
    let rule = format!("127.0.0.1:{port}");
    let gw = gateway(Config::new(policy(&[&rule]), test_resolver(&up), host())).await;
    for host in ["127.0.0.1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "0177.0.0.1"] {
        let r = get(gw.addr, &format!("http://{host}:{port}/")).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    // not the gateway's own port, nor another port
    let r = get(gw.addr, &format!("http://127.0.0.1:{}/", gw.addr.port())).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn loopback_in_any_spelling_is_denied_without_an_address_rule() {
    let (up, gw) = setup(&["*"]).await;
    let port = up.addr.port();
    for host in ["127.0.0.1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "[::1]", "localhost.", "0"] {
        let r = get(gw.addr, &format!("http://{host}:{port}/")).await;
        assert!(r.status == 403 || r.status == 400, "{host}: {} {}", r.status, r.text());
    }
    let r = get(gw.addr, &format!("http://0x7f.1:{port}/")).await;
    assert_eq!(r.header("x-safehouse-denied"), Some("this host (127.0.0.0/8)"));
    assert!(r.text().contains("127.0.0.1 is a loopback address of this host"), "{}", r.text());
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn cloud_metadata_is_denied() {
    // NET-04: no rule for them (and `*` does not cover special addresses)
    for rules in [&["allowed.test"][..], &["*"][..]] {
        let (_up, gw) = setup(rules).await;
        for url in ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://0xa9fea9fe/"] {
            let r = get(gw.addr, url).await;
            assert_eq!(r.status, 403, "{url}");
            assert!(r.text().contains("metadata"), "{url}: {}", r.text());
        }
        if rules == ["allowed.test"] {
            let r = get(gw.addr, "http://metadata.google.internal/computeMetadata/v1/").await;
            assert_eq!(r.status, 403);
            assert_eq!(r.header("x-safehouse-denied"), Some("default deny"));
        }
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let up = upstream().await;
    let port = up.addr.port();
    let gw = gateway(Config::new(policy(&[&format!("allowed.test:{port}")]), test_resolver(&up), host())).await;
    let req = format!(
        "GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic eA==\r\n\
         Proxy-Connection: keep-alive\r\nConnection: keep-alive, x-private\r\nX-Private: 1\r\nX-Kept: 1\r\n\r\n"
    );
    let r = raw(gw.addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.header("x-seen-headers").unwrap();
    assert!(seen.contains("x-kept"), "{seen}");
    for h in ["proxy-authorization", "proxy-connection", "x-private", "connection"] {
        assert!(!seen.split(',').any(|s| s == h), "{h} forwarded: {seen}");
    }
    assert_eq!(r.header("x-seen-host"), Some(format!("allowed.test:{port}").as_str()));
}

#[tokio::test]
async fn malformed_and_origin_form_requests_get_400() {
    let (_up, gw) = setup(&["allowed.test"]).await;
    let r = raw(gw.addr, "GET /index.html HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("proxy"), "{}", r.text());
    let r = raw(gw.addr, "GET https://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("CONNECT"), "{}", r.text());
    let r = raw(gw.addr, "CONNECT allowed.test HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 400);
    let r = raw(gw.addr, "garbage\r\n\r\n").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn keep_alive_reuses_one_upstream_connection() {
    let up = upstream().await;
    let port = up.addr.port();
    let gw = gateway(Config::new(policy(&[&format!("allowed.test:{port}")]), test_resolver(&up), host())).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    for i in 0..100 {
        let req = format!("GET http://allowed.test:{port}/{i} HTTP/1.1\r\nHost: allowed.test\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-seen-path"), Some(format!("/{i}").as_str()));
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 100);
    assert_eq!(gw.gw.stats().allowed, 100);
}

#[tokio::test]
async fn connect_tunnels_to_an_allowed_target() {
    let up = upstream().await;
    let port = up.addr.port();
    let gw = gateway(Config::new(policy(&[&format!("allowed.test:{port}")]), test_resolver(&up), host())).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 Connection established\r\n"), "{head}");
    // speak HTTP to the upstream through the tunnel
    s.write_all(b"GET /in-tunnel HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await.unwrap();
    let r = read_response(&mut s).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-path"), Some("/in-tunnel"));
    drop(s);
    let stats = gw.gw.stats();
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0, "{stats:?}");
}

#[tokio::test]
async fn connect_to_ungranted_port_or_the_gateway_itself_is_403() {
    // NET-09
    let up = upstream().await;
    let port = up.addr.port();
    let gw = gateway(Config::new(policy(&["allowed.test:443", "*"]), test_resolver(&up), host())).await;
    for target in [
        format!("allowed.test:{port}"),
        format!("127.0.0.1:{}", gw.addr.port()),
        format!("localhost:{}", gw.addr.port()),
        format!("[::1]:{}", gw.addr.port()),
        "169.254.169.254:80".into(),
    ] {
        let r = raw(gw.addr, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert_eq!(r.status, 403, "{target}: {}", r.text());
        assert!(r.header("x-safehouse-denied").is_some());
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn upstream_connect_failure_is_502() {
    let up = upstream().await;
    // a port nothing listens on: bind, read the port, close
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = gateway(Config::new(policy(&[&format!("allowed.test:{closed}")]), test_resolver(&up), host())).await;
    let r = get(gw.addr, &format!("http://allowed.test:{closed}/")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("could not reach"), "{}", r.text());
    let r = raw(gw.addr, &format!("CONNECT allowed.test:{closed} HTTP/1.1\r\n\r\n")).await;
    assert_eq!(r.status, 502);
    let r = get(gw.addr, &format!("http://allowed.test:{}/", closed)).await;
    assert_eq!(r.status, 502);
    assert_eq!(gw.gw.stats().failed, 3);
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let (_up, gw) = setup(&["allowed.test"]).await;
    let big = "x".repeat(70 * 1024);
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let req = format!("GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    match read_response(&mut s).await {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => assert!(e.kind() != std::io::ErrorKind::TimedOut, "{e}"), // closed is fine too
    }
}
