//! What the gateway process costs: starting it (spawn, confinement, ready), handing it a
//! sandbox's listener (`Start` and back), asking it for counters (a round trip over the
//! channel), and its memory, idle and with many gateways. The data path is the same as in
//! one process (the process accepts on the sandbox's listener itself), so requests pay
//! nothing for the split; `scripts/bench_gateway.py` measures them end to end.
//!
//! `SAFEHOUSE_BIN=target/safehouse cargo run --release -p safehouse-gateway --example
//! process_bench [-- STARTS GATEWAYS]`

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use safehouse_gateway::process::{Confinement, GatewayHost, HostConfig};
use safehouse_gateway::{Config, Event, FixedHostAddrs, NetPolicy};
use safehouse_policy::network::{parse_rule, HostAddrs};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let starts = args.first().copied().unwrap_or(20);
    let many = args.get(1).copied().unwrap_or(200);
    let program: std::path::PathBuf =
        std::env::var_os("SAFEHOUSE_BIN").expect("set SAFEHOUSE_BIN to the safehouse binary").into();
    let watch = safehouse_gateway::hostaddrs::watch().unwrap();
    let config = || HostConfig {
        program: program.clone(),
        resolver: Default::default(),
        host_addrs: watch.clone(),
        confinement: Confinement::default(),
        on_crash: None,
    };
    let mut start = Vec::new();
    for _ in 0..starts {
        let t = Instant::now();
        let host = GatewayHost::start(config()).await.unwrap();
        start.push(t.elapsed());
        drop(host);
    }
    let host = GatewayHost::start(config()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = host.pid().unwrap();
    let idle = rss_kib(pid);
    let policy = NetPolicy { rules: vec![parse_rule("example.com").unwrap()], ..NetPolicy::default() };
    let cfg = Config::new(policy.clone(), Default::default(), Arc::new(FixedHostAddrs(Arc::new(HostAddrs::default()))));
    let mut serve = Vec::new();
    let mut handles = Vec::new();
    for i in 0..many {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t = Instant::now();
        let h = host
            .serve(&format!("s{i}"), &policy, &cfg, OwnedFd::from(l), Arc::new(|_: &Event| {}), None)
            .await
            .unwrap();
        serve.push(t.elapsed());
        handles.push(h);
    }
    let mut stats = Vec::new();
    for h in handles.iter().take(200) {
        let t = Instant::now();
        let _ = h.stats().await;
        stats.push(t.elapsed());
    }
    let full = rss_kib(pid);
    println!("gateway process, {starts} starts, {many} gateways");
    println!("  start (spawn, Init, confinement, Ready)  median {:>8.2?}", median(start));
    println!("  serve a sandbox (Start and back)          median {:>8.2?}", median(serve));
    println!("  counters (Stats and back)                 median {:>8.2?}", median(stats));
    println!(
        "  resident memory: idle {idle} KiB, with {many} gateways {full} KiB ({:.1} KiB each)",
        (full.saturating_sub(idle)) as f64 / many as f64
    );
}
