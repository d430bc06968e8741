//! Test fixtures on loopback: an upstream HTTP server, a DNS server, a gateway, and raw
//! clients that write proxy requests by hand.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use safehouse_gateway::{Config, Gateway, HostAddrSource, Resolver};
use safehouse_policy::network::{parse_rule, HostReach, NetPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub const T: Duration = Duration::from_secs(10);

/// An HTTP/1.1 upstream on 127.0.0.1:0. `/bytes/N` answers N bytes; anything else answers
/// `hello` with the request's Host in `x-seen-host` and its header names in `x-seen-headers`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            c.fetch_add(1, SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    r.fetch_add(1, SeqCst);
                    async move { Ok::<_, Infallible>(answer(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    Upstream { addr, connections, requests }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn answer(req: Request<hyper::body::Incoming>) -> Response<Body> {
    if let Some(n) = req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        let body = Zeros { left: n, chunk: Bytes::from(vec![b'x'; 256 * 1024]) };
        return Response::builder().header("content-length", n.to_string()).body(BodyExt::boxed(body)).unwrap();
    }
    let host = req.headers().get("host").map(|h| h.to_str().unwrap_or("?").to_string()).unwrap_or_default();
    let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    Response::builder()
        .header("x-seen-host", host)
        .header("x-seen-headers", names.join(","))
        .header("x-seen-path", req.uri().to_string())
        .body(Full::new(Bytes::from_static(b"hello\n")).boxed())
        .unwrap()
}

/// A body of `left` bytes, sent in slices of one shared chunk.
pub struct Zeros {
    pub left: u64,
    pub chunk: Bytes,
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.left) as usize;
        self.left -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// A policy from `network.allow` entries, written by the host's operator (an exact
/// address rule may open an address of the host, as in `safehouse run`).
pub fn policy(rules: &[&str]) -> NetPolicy {
    NetPolicy {
        rules: rules.iter().map(|r| parse_rule(r).unwrap()).collect(),
        egress_bytes: None,
        host_reach: HostReach::ExactAddressRules,
    }
}

/// The host's addresses as the gateway sees them in production: the live watcher.
pub fn host() -> Arc<dyn HostAddrSource> {
    safehouse_gateway::hostaddrs::watch().unwrap()
}

/// `allowed.test` and `other.test` resolve (trusted) to the upstream.
pub fn test_resolver(up: &Upstream) -> Resolver {
    let ip = up.addr.ip();
    Resolver::default().with_override("allowed.test", &[ip]).with_override("other.test", &[ip])
}

pub struct Running {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
}

pub async fn gateway(config: Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(config);
    tokio::spawn(gw.clone().serve(listener));
    Running { addr, gw }
}

/// A parsed response read off a raw socket.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads one response (Content-Length or chunked, or to EOF), leaving the stream after it.
pub async fn read_response(s: &mut TcpStream) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(T, s.read(&mut b)).await??;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("eof in head: {buf:?}")));
        }
        buf.push(b[0]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HashMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().unwrap();
        body.resize(len, 0);
        tokio::time::timeout(T, s.read_exact(&mut body)).await??;
    } else if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                let mut b = [0u8; 1];
                tokio::time::timeout(T, s.read_exact(&mut b)).await??;
                line.push(b[0]);
            }
            let n = usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            tokio::time::timeout(T, s.read_exact(&mut chunk)).await??;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else if status != 200 || !headers.is_empty() {
        tokio::time::timeout(T, s.read_to_end(&mut body)).await??;
    }
    Ok(Resp { status, headers, body })
}

/// Sends `raw` to the gateway on a fresh connection and reads one response.
pub async fn raw(gw: SocketAddr, raw: &str) -> Resp {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    read_response(&mut s).await.unwrap()
}

/// `GET <url>` through the proxy.
pub async fn get(gw: SocketAddr, url: &str) -> Resp {
    raw(gw, &format!("GET {url} HTTP/1.1\r\nHost: ignored.example\r\n\r\n")).await
}

/// SOCKS5: greeting + CONNECT request; returns the reply code and the stream.
pub async fn socks(gw: SocketAddr, request: &[u8]) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    tokio::time::timeout(T, s.read_exact(&mut m)).await.unwrap().unwrap();
    assert_eq!(m, [5, 0]);
    s.write_all(request).await.unwrap();
    let mut r = [0u8; 10];
    tokio::time::timeout(T, s.read_exact(&mut r)).await.unwrap().unwrap();
    assert_eq!(r[0], 5);
    (r[1], s)
}

pub fn socks_domain(name: &str, port: u16) -> Vec<u8> {
    let mut v = vec![5, 1, 0, 3, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// A DNS server on 127.0.0.1:0 answering A questions with `answer(name, nth_query)`;
/// AAAA questions get an empty answer. Counts and records every question.
pub struct Dns {
    pub addr: SocketAddr,
    pub queries: Arc<Mutex<Vec<String>>>,
}

pub async fn dns_server(answer: impl Fn(&str, usize) -> Vec<IpAddr> + Send + Sync + 'static) -> Dns {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let q = queries.clone();
    let a_count = AtomicUsize::new(0);
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
            let msg = &buf[..n];
            // header (12) + name + type + class
            let mut pos = 12;
            let mut labels = Vec::new();
            while pos < n && msg[pos] != 0 {
                let l = msg[pos] as usize;
                labels.push(String::from_utf8_lossy(&msg[pos + 1..pos + 1 + l]).into_owned());
                pos += 1 + l;
            }
            let name = labels.join(".");
            let qtype = u16::from_be_bytes([msg[pos + 1], msg[pos + 2]]);
            let qend = pos + 5;
            q.lock().unwrap().push(name.clone());
            let addrs: Vec<IpAddr> = if qtype == 1 {
                let i = a_count.fetch_add(1, SeqCst);
                answer(&name, i).into_iter().filter(|a| a.is_ipv4()).collect()
            } else {
                Vec::new()
            };
            let mut out = msg[..2].to_vec();
            out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, addrs.len() as u8, 0, 0, 0, 0]);
            out.extend_from_slice(&msg[12..qend]);
            for a in addrs {
                let IpAddr::V4(v4) = a else { continue };
                out.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
                out.extend_from_slice(&v4.octets());
            }
            let _ = sock.send_to(&out, from).await;
        }
    });
    Dns { addr, queries }
}
