//! SOCKS5 on the same port, against a real upstream on loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;
use safehouse_gateway::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn socks5_domain_connect_reaches_an_allowed_name() {
    let up = upstream().await;
    let port = up.addr.port();
    let gw = gateway(Config::new(policy(&[&format!("allowed.test:{port}")]), test_resolver(&up), host())).await;
    let (code, mut s) = socks(gw.addr, &socks_domain("allowed.test", port)).await;
    assert_eq!(code, 0);
    s.write_all(b"GET /via-socks HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await.unwrap();
    let r = read_response(&mut s).await.unwrap();
    assert_eq!(r.header("x-seen-path"), Some("/via-socks"));
}

#[tokio::test]
async fn socks5_ip_targets_follow_address_rules() {
    let up = upstream().await;
    let port = up.addr.port();
    let gw = gateway(Config::new(policy(&[&format!("127.0.0.1:{port}")]), test_resolver(&up), host())).await;
    let mut v4 = vec![5, 1, 0, 1, 127, 0, 0, 1];
    v4.extend_from_slice(&port.to_be_bytes());
    assert_eq!(socks(gw.addr, &v4).await.0, 0);
    // the v4-mapped IPv6 form is the same address
    let mut v6 = vec![5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
    v6.extend_from_slice(&port.to_be_bytes());
    assert_eq!(socks(gw.addr, &v6).await.0, 0);
    // a name spelling an address is that address
    assert_eq!(socks(gw.addr, &socks_domain("0x7f000001", port)).await.0, 0);
    // another port is not granted
    let mut other = vec![5, 1, 0, 1, 127, 0, 0, 1];
    other.extend_from_slice(&(port ^ 1).to_be_bytes());
    assert_eq!(socks(gw.addr, &other).await.0, 2);
}

#[tokio::test]
async fn socks5_denials_and_unsupported_requests_get_their_codes() {
    let up = upstream().await;
    let gw = gateway(Config::new(policy(&["allowed.test"]), test_resolver(&up), host())).await;
    assert_eq!(socks(gw.addr, &socks_domain("other.test", 443)).await.0, 0x02);
    let mut meta = vec![5, 1, 0, 1, 169, 254, 169, 254];
    meta.extend_from_slice(&80u16.to_be_bytes());
    assert_eq!(socks(gw.addr, &meta).await.0, 0x02);
    assert_eq!(socks(gw.addr, &[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await.0, 0x07); // BIND
    assert_eq!(socks(gw.addr, &[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]).await.0, 0x08);
    assert_eq!(gw.gw.stats().denied, 2);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn socks5_without_no_auth_method_is_refused() {
    let up = upstream().await;
    let gw = gateway(Config::new(policy(&["allowed.test"]), test_resolver(&up), host())).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap(); // username/password only
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0xFF]);
    assert_eq!(s.read(&mut m).await.unwrap(), 0);
}

#[tokio::test]
async fn short_or_silent_clients_are_closed_after_the_handshake_timeout() {
    let up = upstream().await;
    let mut config = Config::new(policy(&["allowed.test"]), test_resolver(&up), host());
    config.handshake_timeout = Duration::from_millis(300);
    let gw = gateway(config).await;
    for partial in [&b""[..], &[5][..], &[5, 1, 0, 5, 1][..], b"GET http://allowed.test/ HTTP/1.1\r\nHost"] {
        let start = Instant::now();
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{partial:?}: not closed");
        assert!(start.elapsed() < Duration::from_secs(3), "{partial:?}");
    }
    assert_eq!(gw.gw.stats().active_connections, 0);
}
