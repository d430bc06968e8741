//! Gateway overhead on loopback: 10,000 small keep-alive GETs and a 1 GiB download, direct to
//! an upstream and through the gateway, measured in the same run.
//!
//! `cargo run --release -p safehouse-gateway --example gateway_bench [-- REQUESTS GIB]`
//!
//! The gateway runs the way `safehouse run` runs it: `spawn_thread`, one current-thread
//! runtime. The upstream has its own thread; the client is this thread, blocking sockets.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use safehouse_gateway::{spawn_thread, Config, Resolver};
use safehouse_policy::network::{parse_rule, NetPolicy};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct Zeros(u64, Bytes);

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = (self.1.len() as u64).min(self.0) as usize;
        self.0 -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.1.slice(..n)))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0)
    }
}

fn answer(req: Request<hyper::body::Incoming>) -> Response<Body> {
    match req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        Some(n) => Response::new(Zeros(n, Bytes::from(vec![b'x'; 256 * 1024])).boxed()),
        None => Response::new(Full::new(Bytes::from_static(b"hello, world\n")).boxed()),
    }
}

/// An HTTP/1.1 upstream on its own thread and runtime.
fn upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(answer(req)) });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
    });
    addr
}

/// A blocking keep-alive client that reads Content-Length responses.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: vec![0; 1 << 20] }
    }

    /// A client whose requests go through a CONNECT tunnel to `authority`.
    fn tunnel(gw: SocketAddr, authority: &str) -> Client {
        let mut c = Client::new(gw);
        write!(c.s, "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
        c
    }

    /// Sends one GET, reads the whole response; returns the body length.
    fn get(&mut self, target: &str) -> u64 {
        write!(self.s, "GET {target} HTTP/1.1\r\nHost: bench.test\r\n\r\n").unwrap();
        let mut have = 0;
        let (head_end, len) = loop {
            let n = self.s.read(&mut self.buf[have..]).unwrap();
            assert!(n > 0, "connection closed");
            have += n;
            if let Some(i) = self.buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..i]).unwrap();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let len: u64 = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                break (i + 4, len);
            }
        };
        let mut left = len - (have - head_end) as u64;
        while left > 0 {
            let want = (self.buf.len() as u64).min(left) as usize;
            let n = self.s.read(&mut self.buf[..want]).unwrap();
            assert!(n > 0, "connection closed mid-body");
            left -= n as u64;
        }
        len
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn latencies(addr: SocketAddr, target: &str, n: usize) -> (Duration, Duration) {
    let mut c = Client::new(addr);
    for _ in 0..500 {
        c.get(target);
    }
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.get(target);
            t.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn throughput(mut c: Client, target: &str) -> f64 {
    let t = Instant::now();
    let n = c.get(target);
    n as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let gib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let up = upstream();
    let port = up.port();
    let policy = NetPolicy { rules: vec![parse_rule(&format!("bench.test:{port}")).unwrap()], ..NetPolicy::default() };
    let resolver = Resolver::default().with_override("bench.test", &[up.ip()]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_addr = listener.local_addr().unwrap();
    let gw =
        spawn_thread(Config::new(policy, resolver, safehouse_gateway::hostaddrs::watch().unwrap()), listener).unwrap();

    println!("gateway_bench: {requests} keep-alive GETs (13-byte body), {gib} GiB download; loopback, 2 cores");
    let (d50, d99) = latencies(up, "/", requests);
    let (g50, g99) = latencies(gw_addr, &format!("http://bench.test:{port}/"), requests);
    println!("small GET direct:        p50 {:>7.1} us  p99 {:>7.1} us", us(d50), us(d99));
    println!("small GET via gateway:   p50 {:>7.1} us  p99 {:>7.1} us", us(g50), us(g99));
    println!("added p50: {:.1} us (target <= 300 us)", us(g50) - us(d50));

    let path = format!("/bytes/{}", gib << 30);
    let direct = throughput(Client::new(up), &path);
    let via = throughput(Client::new(gw_addr), &format!("http://bench.test:{port}{path}"));
    let tunnel = throughput(Client::tunnel(gw_addr, &format!("bench.test:{port}")), &path);
    println!("{gib} GiB direct:                 {direct:>8.0} MB/s");
    println!("{gib} GiB via gateway (GET):      {via:>8.0} MB/s  ratio {:.2} (target >= 0.80)", via / direct);
    println!("{gib} GiB via gateway (CONNECT):  {tunnel:>8.0} MB/s  ratio {:.2}", tunnel / direct);
    let stats = gw.stop();
    println!("gateway stats: requests {} allowed {} bytes_in {}", stats.requests, stats.allowed, stats.bytes_in);
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
