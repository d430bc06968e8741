//! The gateway in its own process, for real: the binary under test (`SAFEHOUSE_BIN`, built by
//! `scripts/build`) started by [`GatewayHost`] as the daemon starts it. Its confinement seen
//! from outside (`/proc`), each attempt of a compromised gateway run once unconfined (the
//! outside control, which must succeed) and once confined (the exact errno), a killed
//! process (egress fails closed, then recovers), and the budget across a restart.

mod common;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use safehouse_gateway::process::{Confinement, GatewayHost, HostConfig};
use safehouse_gateway::{Config, Event};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn binary(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SAFEHOUSE_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            safehouse_jail::testkit::skip_privileged(test, "SAFEHOUSE_BIN is not set (scripts/build, then export it)");
            None
        }
    }
}

fn root(test: &str) -> bool {
    if safehouse_sys::geteuid() == 0 {
        return true;
    }
    safehouse_jail::testkit::skip_privileged(test, "needs root");
    false
}

async fn start_host(bin: PathBuf, crashes: Arc<Mutex<Vec<String>>>) -> GatewayHost {
    let config = HostConfig {
        program: bin,
        resolver: Default::default(),
        host_addrs: safehouse_gateway::hostaddrs::watch().unwrap(),
        confinement: Confinement::default(),
        on_crash: Some(Arc::new(move |line: &str| crashes.lock().unwrap().push(line.to_string()))),
    };
    GatewayHost::start(config).await.unwrap()
}

/// A listener on 127.0.0.1:0 handed to the process, as a sandbox's would be.
fn listener() -> (std::net::SocketAddr, OwnedFd) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (l.local_addr().unwrap(), OwnedFd::from(l))
}

fn status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_else(|| panic!("{name} in {status}"))
}

#[tokio::test]
async fn the_process_serves_a_sandbox_and_reports_its_decisions() {
    let test = "the_process_serves_a_sandbox_and_reports_its_decisions";
    let Some(bin) = binary(test) else { return };
    let gateways = start_host(bin, Arc::default()).await;
    let up = upstream().await;
    let port = up.addr.port();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let config = Config::new(policy(&[&format!("127.0.0.1:{port}")]), Default::default(), host());
    let (addr, fd) = listener();
    let hook = Arc::new(move |e: &Event| ev.lock().unwrap().push(e.clone()));
    let gw = gateways.serve("t1", &config.policy, &config, fd, hook, None).await.unwrap();
    let r = get(addr, &format!("http://127.0.0.1:{port}/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-path"), Some("/x"));
    let r = get(addr, "http://other.test/").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-safehouse-denied"), Some("default deny"));
    let stats = gw.stats().await;
    assert_eq!((stats.requests, stats.allowed, stats.denied), (2, 1, 1), "{stats:?}");
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0, "{stats:?}");
    let deadline = Instant::now() + T;
    while events.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = events.lock().unwrap().clone();
    assert!(matches!(&events[..], [Event::Allowed { .. }, Event::Denied { .. }]), "{events:?}");
    let last = gw.stop().await;
    assert_eq!((last.allowed, last.denied), (1, 1));
    // Stopped: the listener is no longer served.
    let mut s = TcpStream::connect(addr).await;
    if let Ok(s) = s.as_mut() {
        let _ = s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n").await;
        let answered = tokio::time::timeout(Duration::from_millis(500), read_response(s)).await;
        assert!(!matches!(answered, Ok(Ok(_))), "a stopped gateway answered: {answered:?}");
    }
}

/// The gateway process as the daemon runs it, and an upstream it may reach by address.
async fn serving(test: &str, rules: &[&str], crashes: Arc<Mutex<Vec<String>>>) -> Option<(GatewayHost, Served)> {
    let bin = binary(test)?;
    let gateways = start_host(bin, crashes).await;
    let up = upstream().await;
    let port = up.addr.port();
    let rules: Vec<String> = rules.iter().map(|r| r.replace("PORT", &port.to_string())).collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let config = Config::new(policy(&rules), Default::default(), host());
    let (addr, fd) = listener();
    let handle = gateways.serve(test, &config.policy, &config, fd, Arc::new(|_: &Event| {}), None).await.unwrap();
    Some((gateways, Served { addr, up, handle }))
}

struct Served {
    addr: std::net::SocketAddr,
    up: Upstream,
    handle: safehouse_gateway::process::GatewayHandle,
}

#[tokio::test]
async fn posture_from_outside_no_identity_no_privilege_no_view_no_extra_descriptor() {
    let test = "posture_from_outside_no_identity_no_privilege_no_view_no_extra_descriptor";
    if !root(test) {
        return;
    }
    let Some((gateways, s)) = serving(test, &["127.0.0.1:PORT"], Arc::default()).await else { return };
    let r = get(s.addr, &format!("http://127.0.0.1:{}/", s.up.addr.port())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = gateways.pid().unwrap();
    let st = status(pid);
    // Outside control: this test process is root, unconfined, in the host's mount namespace.
    let me = status(std::process::id());
    assert_eq!(field(&me, "Uid:").split_whitespace().next(), Some("0"));
    assert_eq!(field(&me, "Seccomp:"), "0");
    for f in ["Uid:", "Gid:"] {
        assert!(field(&st, f).split_whitespace().all(|id| id == "65534"), "{f} {}", field(&st, f));
    }
    assert_eq!(field(&st, "Groups:"), "");
    for f in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(&st, f), "0000000000000000", "{f}");
    }
    assert_eq!(field(&st, "NoNewPrivs:"), "1");
    assert_eq!(field(&st, "Seccomp:"), "2");
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"), "the gateway shares the host's mount namespace");
    // Its root is an empty directory: nothing of the host is there.
    let entries: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root")).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
    // Descriptors: stdio, the control socket, the listener and the runtime's own (epoll,
    // eventfd), sockets and pipes; never a file.
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let n: u32 = fd.file_name().to_str().unwrap().parse().unwrap();
        let target = std::fs::read_link(fd.path()).unwrap().to_string_lossy().into_owned();
        let ok =
            n <= 2 || target.starts_with("socket:") || target.starts_with("pipe:") || target.starts_with("anon_inode:");
        assert!(ok, "fd {n} -> {target}");
    }
    drop(s);
}

/// Runs the confinement probe and returns (what it applied, errno per attempt).
fn probe(bin: &PathBuf, args: &[&str]) -> (Value, Vec<(String, Option<i32>)>) {
    let out = std::process::Command::new(bin).arg("__gateway-probe").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut applied = Value::Null;
    let mut results = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(c) = v.get("confined") {
            applied = c.clone();
        } else if let Some(a) = v.get("attempt") {
            let errno = if v["ok"].as_bool().unwrap() { None } else { Some(v["errno"].as_i64().unwrap_or(-1) as i32) };
            results.push((a.as_str().unwrap().to_string(), errno));
        }
    }
    (applied, results)
}

#[test]
fn a_compromised_gateway_cannot_reach_the_daemons_secrets_or_the_host() {
    let test = "a_compromised_gateway_cannot_reach_the_daemons_secrets_or_the_host";
    let Some(bin) = binary(test) else { return };
    if !root(test) {
        return;
    }
    // A stand-in for the daemon's data dir: a key file readable by its owner only, an audit
    // log, and a unix socket (the API of a daemon, or any host service).
    let dir = tempdir();
    let key = dir.join("admin.key");
    std::fs::write(&key, "secret").unwrap();
    let audit = dir.join("audit.log");
    std::fs::write(&audit, "").unwrap();
    let sock = dir.join("api.sock");
    let _listening = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reach = format!("connect-tcp:{}", tcp.local_addr().unwrap());
    let attempts = [
        format!("read:{}", key.display()),
        format!("list:{}", dir.display()),
        format!("append:{}", audit.display()),
        format!("unix:{}", sock.display()),
        "read:/etc/shadow".into(),
        "netlink".into(),
        "exec:/bin/true".into(),
        "bind-tcp".into(),
        reach.clone(),
        "udp".into(),
    ];
    let attempts: Vec<&str> = attempts.iter().map(String::as_str).collect();
    let errnos = |args: &[&str]| -> Vec<Option<i32>> {
        let mut all = args.to_vec();
        all.extend(&attempts);
        probe(&bin, &all).1.into_iter().map(|(_, e)| e).collect()
    };
    // Outside control: unconfined, every attempt succeeds.
    assert_eq!(errnos(&["--unconfined"]), vec![None; attempts.len()], "{attempts:?}");
    // The whole confinement: seccomp answers first.
    let (applied, _) = probe(&bin, &[]);
    assert_eq!(applied["layers"], serde_json::json!(["mount_ns", "identity", "landlock", "seccomp"]));
    use libc::{EACCES, EAFNOSUPPORT, ENOENT, EPERM};
    assert_eq!(
        errnos(&[]),
        vec![
            Some(EPERM),        // read the key: openat refused
            Some(EPERM),        // list the data dir
            Some(EPERM),        // open the audit log
            Some(EAFNOSUPPORT), // a unix socket
            Some(EPERM),        // /etc/shadow
            Some(EAFNOSUPPORT), // netlink
            Some(EPERM),        // exec: no new process
            Some(EACCES),       // a TCP port of its own: Landlock
            None,               // dialling out still works
            None,               // and the resolver's UDP
        ]
    );
    // Each layer alone, where it answers on its own.
    let without_seccomp = errnos(&["--skip", "seccomp"]);
    assert_eq!(without_seccomp[..5], [Some(ENOENT); 5], "the empty view: nothing is there");
    let landlock_only = errnos(&["--skip", "seccomp,mount_ns,identity"]);
    assert_eq!(landlock_only[..3], [Some(EACCES); 3], "Landlock, as root: no path may be opened");
    assert_eq!(landlock_only[4], Some(EACCES), "Landlock, as root: not even /etc/shadow");
    assert_eq!(landlock_only[7], Some(EACCES), "Landlock: no TCP port of its own");
    let identity_only = errnos(&["--skip", "seccomp,mount_ns,landlock"]);
    assert_eq!(identity_only[0], Some(EACCES), "uid 65534 cannot read a root-only key");
    assert_eq!(identity_only[3], Some(EACCES), "nor reach a socket in a root-only directory");
    assert_eq!(identity_only[4], Some(EACCES), "nor /etc/shadow");
}

#[tokio::test]
async fn a_killed_gateway_process_fails_closed_and_recovers() {
    let test = "a_killed_gateway_process_fails_closed_and_recovers";
    let crashes = Arc::new(Mutex::new(Vec::new()));
    let Some((gateways, s)) = serving(test, &["127.0.0.1:PORT"], crashes.clone()).await else { return };
    let url = format!("http://127.0.0.1:{}/", s.up.addr.port());
    assert_eq!(get(s.addr, &url).await.status, 200);
    let before = s.up.requests.load(SeqCst);
    // What the daemon's sampler would have read before the crash.
    let read = s.handle.stats().await;
    assert_eq!(read.allowed, 1);
    let pid = gateways.pid().unwrap();
    // Outside control: the pid is alive and is ours to kill.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    safehouse_sys::process::kill(pid as i32, libc::SIGKILL).unwrap();
    // While it is down nothing reaches the upstream: a request waits unanswered (in the
    // backlog) or fails; it never gets through the dead process.
    let mut waiting = TcpStream::connect(s.addr).await.unwrap();
    waiting.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    // It comes back and serves the same listener, queued requests included.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateways.pid().is_none_or(|p| p == pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(gateways.pid(), Some(pid));
    assert_eq!(gateways.restarts(), 1);
    let r = read_response(&mut waiting).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(s.addr, &url).await.status, 200);
    assert_eq!(s.up.requests.load(SeqCst), before + 2);
    let crashes = crashes.lock().unwrap().clone();
    assert_eq!(crashes.len(), 1, "{crashes:?}");
    assert!(crashes[0].contains("killed by signal 9"), "{crashes:?}");
    // Its counters go on from what was last read of the dead process.
    assert_eq!(s.handle.stats().await.allowed, 3);
}

#[tokio::test]
async fn the_budget_holds_across_a_restart() {
    let test = "the_budget_holds_across_a_restart";
    let Some(bin) = binary(test) else { return };
    let gateways = start_host(bin, Arc::default()).await;
    let up = upstream().await;
    let port = up.addr.port();
    const MIB: u64 = 1 << 20;
    let mut config = Config::new(policy(&[&format!("127.0.0.1:{port}")]), Default::default(), host());
    config.policy.egress_bytes = Some(3 * MIB);
    let (addr, fd) = listener();
    let gw = gateways.serve(test, &config.policy, &config, fd, Arc::new(|_: &Event| {}), None).await.unwrap();
    let fetch = |n: u64| {
        let url = format!("http://127.0.0.1:{port}/bytes/{n}");
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut got = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                use tokio::io::AsyncReadExt;
                match tokio::time::timeout(T, s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => got += n as u64,
                    _ => return got,
                }
            }
        }
    };
    let first = fetch(MIB).await;
    assert!(first > MIB, "{first}");
    let pid = gateways.pid().unwrap();
    safehouse_sys::process::kill(pid as i32, libc::SIGKILL).unwrap();
    while gateways.pid().is_none_or(|p| p == pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = fetch(8 * MIB).await;
    // Everything granted to the dead process counts as spent: the two together stay under
    // the budget.
    assert!(first + second <= 3 * MIB + 4096, "{first} + {second}");
    assert!(second < 2 * MIB, "{second}");
    let stats = gw.stats().await;
    assert!(stats.budget_exceeded, "{stats:?}");
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("safehouse-gwproc-{}-{:?}", std::process::id(), Instant::now()));
    let d = PathBuf::from(d.to_string_lossy().replace([' ', '{', '}', ':', ','], "_"));
    std::fs::create_dir_all(&d).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}
