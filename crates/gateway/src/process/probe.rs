//! The confinement's own test subject (`safehouse __gateway-probe`): applies exactly the
//! gateway process's confinement ([`super::confine`]), with the layers named by `--skip`
//! left out (so a test can see each layer's own answer) or none of it (`--unconfined`, the
//! outside control), then tries each attempt named on the command line and prints one JSON
//! line per attempt: `{"attempt": ..., "ok": bool, "errno": n}`.
//!
//! Attempts: `read:PATH`, `list:DIR`, `append:PATH`, `unix:PATH` (connect to a unix
//! socket), `netlink` (a routing socket), `exec:PATH`, `bind-tcp` (listen on a loopback
//! port), `connect-tcp:ADDR` (must keep working), `udp` (a UDP socket, the resolver's).
//! It is a test tool: it does nothing the caller could not do unconfined.

use std::io;

use super::confine::{confine, Confinement, Layer};

fn attempt(what: &str) -> io::Result<()> {
    let (verb, arg) = what.split_once(':').unwrap_or((what, ""));
    match verb {
        "read" => std::fs::read(arg).map(drop),
        "list" => std::fs::read_dir(arg).map(drop),
        "append" => std::fs::OpenOptions::new().append(true).open(arg).map(drop),
        "unix" => std::os::unix::net::UnixStream::connect(arg).map(drop),
        "netlink" => netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).map(drop),
        "exec" => std::process::Command::new(arg).status().map(drop),
        "bind-tcp" => std::net::TcpListener::bind("127.0.0.1:0").map(drop),
        "connect-tcp" => std::net::TcpStream::connect(arg).map(drop),
        "udp" => std::net::UdpSocket::bind("0.0.0.0:0").map(drop),
        other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown attempt {other:?}"))),
    }
}

/// Runs the probe; returns its exit status.
pub fn main(args: &[String]) -> i32 {
    let mut confinement = Some(Confinement::default());
    let mut attempts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--unconfined" => confinement = None,
            "--skip" => {
                let Some(list) = it.next() else { return usage("--skip needs a list") };
                for name in list.split(',').filter(|s| !s.is_empty()) {
                    let layer = match name {
                        "mount_ns" => Layer::MountNs,
                        "identity" => Layer::Identity,
                        "landlock" => Layer::Landlock,
                        "seccomp" => Layer::Seccomp,
                        other => return usage(&format!("unknown layer {other:?}")),
                    };
                    if let Some(c) = confinement.as_mut() {
                        c.skip.push(layer);
                    }
                }
            }
            other => attempts.push(other.to_string()),
        }
    }
    if let Some(c) = &confinement {
        match confine(c, &[]) {
            Ok(applied) => println!("{}", serde_json::json!({ "confined": applied })),
            Err(e) => {
                println!("{}", serde_json::json!({ "refused": e.to_string() }));
                return 3;
            }
        }
    }
    for a in attempts {
        let r = attempt(&a);
        let line = serde_json::json!({
            "attempt": a,
            "ok": r.is_ok(),
            "errno": r.as_ref().err().and_then(io::Error::raw_os_error),
            "error": r.as_ref().err().map(ToString::to_string),
        });
        println!("{line}");
    }
    0
}

fn usage(why: &str) -> i32 {
    let usage = "[--unconfined] [--skip LAYER,...] ATTEMPT...";
    println!("{}", serde_json::json!({ "usage": usage, "error": why }));
    2
}
