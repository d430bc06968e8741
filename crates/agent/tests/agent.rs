//! The agent driven over its socket as the daemon drives it. No root needed: the agent
//! runs in a forked child of the test, outside any sandbox.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{request, Agent};
use safehouse_protocol::{
    Buffered, FromAgent, Incoming, ProcessInfo, StdinMode, Stream, ToAgent, WinSize, CAPTURE_LIMIT, DISCONNECTED_BUFFER,
};
use safehouse_sys::fs;

fn wait_status_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

#[test]
fn captured_echo() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(safehouse_protocol::SpawnRequest { capture: true, ..request(&["echo", "hi"]) }).unwrap();
    let c = d.collect(pid);
    assert!(c.stdout.is_empty() && c.stderr.is_empty(), "captured output must not be streamed");
    let e = c.exited.unwrap();
    assert_eq!((e.status, e.stdout.as_deref(), e.stderr.as_deref()), (0, Some(&b"hi\n"[..]), Some(&b""[..])));
    assert!(!e.stdout_truncated && !e.stderr_truncated);
    assert!(e.maxrss_kib > 0);
}

#[test]
fn captured_output_is_capped_and_flagged() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let script = format!("head -c {} /dev/zero; echo err >&2; exit 3", CAPTURE_LIMIT + 1000);
    let pid = d.spawn(safehouse_protocol::SpawnRequest { capture: true, ..request(&["sh", "-c", &script]) }).unwrap();
    let e = d.collect(pid).exited.unwrap();
    assert_eq!(wait_status_code(e.status), Some(3));
    assert_eq!(e.stdout.as_ref().map(Vec::len), Some(CAPTURE_LIMIT));
    assert!(e.stdout_truncated);
    assert_eq!((e.stderr.as_deref(), e.stderr_truncated), (Some(&b"err\n"[..]), false));
}

#[test]
fn streamed_output_arrives_as_data_frames() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(request(&["sh", "-c", "echo a; echo b >&2"])).unwrap();
    let c = d.collect(pid);
    assert_eq!((c.stdout.as_slice(), c.stderr.as_slice()), (&b"a\n"[..], &b"b\n"[..]));
    let e = c.exited.unwrap();
    assert_eq!((e.status, e.stdout, e.stderr), (0, None, None));
}

#[test]
fn environment_and_working_directory() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let mut req = request(&["sh", "-c", "echo \"$HOME $X $PWD\""]);
    req.env = vec![("X".into(), "1".into()), ("HOME".into(), "/h".into())];
    req.cwd = Some("/usr".into());
    req.capture = true;
    let pid = d.spawn(req.clone()).unwrap();
    assert_eq!(d.collect(pid).exited.unwrap().stdout.unwrap(), b"/h 1 /usr\n");
    // A directory that was asked for and does not exist: the spawn fails, naming it.
    req.cwd = Some("/no/such/dir".into());
    let (errno, message) = d.spawn(req.clone()).unwrap_err();
    assert_eq!(errno, libc::ENOENT);
    assert!(message.contains("working directory"), "{message}");
    // Without a cwd, the default applies.
    req.cwd = None;
    let pid = d.spawn(req).unwrap();
    assert!(!d.collect(pid).exited.unwrap().stdout.unwrap().is_empty());
}

#[test]
fn stdin_is_piped() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(safehouse_protocol::SpawnRequest { stdin: StdinMode::Pipe, ..request(&["cat"]) }).unwrap();
    d.send(&ToAgent::Stdin { pid, data: b"hello ".to_vec() });
    d.writer.send_data(pid, Stream::Stdin, b"world").unwrap();
    d.send(&ToAgent::CloseStdin { pid });
    let c = d.collect(pid);
    assert_eq!(c.stdout, b"hello world");
    assert_eq!(c.exited.unwrap().status, 0);

    // Bytes, then end of file, without blocking the agent on a large input.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let req = safehouse_protocol::SpawnRequest { stdin: StdinMode::Bytes(big.clone()), ..request(&["wc", "-c"]) };
    let pid = d.spawn(safehouse_protocol::SpawnRequest { capture: true, ..req }).unwrap();
    d.ping();
    assert_eq!(d.collect(pid).exited.unwrap().stdout.unwrap(), b"3000000\n");

    // Null stdin is an immediate end of file.
    let pid = d.spawn(safehouse_protocol::SpawnRequest { capture: true, ..request(&["cat"]) }).unwrap();
    assert_eq!(d.collect(pid).exited.unwrap().stdout.unwrap(), b"");
}

#[test]
fn signals_reach_the_process_group() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(request(&["sleep", "100"])).unwrap();
    d.send(&ToAgent::Signal { pid, signal: libc::SIGTERM });
    let e = d.collect(pid).exited.unwrap();
    assert_eq!(e.signal(), Some(libc::SIGTERM));

    // The whole group: a shell and its child both get it.
    let pid = d.spawn(request(&["sh", "-c", "sleep 100 & wait"])).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.send(&ToAgent::Signal { pid, signal: libc::SIGKILL });
    assert_eq!(d.collect(pid).exited.unwrap().signal(), Some(libc::SIGKILL));
    // Invalid and unknown targets are ignored.
    d.send(&ToAgent::Signal { pid: 999_999, signal: 9 });
    d.send(&ToAgent::Signal { pid, signal: 1000 });
    d.ping();
}

#[test]
fn pty_spawn_and_resize() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let mut req = request(&["sh", "-c", "tty; stty size; read x; stty size"]);
    req.pty = Some(WinSize { rows: 24, cols: 80 });
    req.stdin = StdinMode::Pipe;
    let pid = d.spawn(req).unwrap();
    let first = d.read_until(pid, "24 80");
    assert!(first.contains("/dev/pts/"), "{first:?}");
    d.send(&ToAgent::Resize { pid, rows: 40, cols: 100 });
    d.send(&ToAgent::Stdin { pid, data: b"go\n".to_vec() });
    let c = d.collect(pid);
    let rest = String::from_utf8_lossy(&c.stdout);
    assert!(rest.contains("40 100"), "{rest:?}");
    assert!(c.stderr.is_empty());
    assert_eq!(c.exited.unwrap().status, 0);

    // CloseStdin on a pty is the end-of-file character. The terminal stays open until
    // the exit is collected: closing it as soon as the command closed its side would
    // hang it up, and SIGHUP would kill the command while it exits (a race, so repeat).
    for _ in 0..5 {
        let mut req = request(&["cat"]);
        req.pty = Some(WinSize { rows: 24, cols: 80 });
        req.stdin = StdinMode::Pipe;
        let pid = d.spawn(req).unwrap();
        d.send(&ToAgent::CloseStdin { pid });
        let c = d.collect(pid);
        assert_eq!(c.exited.as_ref().unwrap().status, 0, "{c:?}");
    }
}

#[test]
fn exec_failures_are_reported() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let (errno, message) = d.spawn(request(&["no-such-binary-here"])).unwrap_err();
    assert_eq!(errno, libc::ENOENT, "{message}");
    assert!(message.contains("no-such-binary-here"), "{message}");
    assert_eq!(d.spawn(request(&["/no/such/path"])).unwrap_err().0, libc::ENOENT);
    assert_eq!(d.spawn(request(&["/etc/passwd"])).unwrap_err().0, libc::EACCES);
    assert_eq!(d.spawn(request(&[])).unwrap_err().0, libc::EINVAL);
    let mut bad_env = request(&["true"]);
    bad_env.env = vec![("A=B".into(), "1".into())];
    assert_eq!(d.spawn(bad_env).unwrap_err().0, libc::EINVAL);
    // The agent is still fine, and failed children were collected.
    d.ping();
    assert!(agent.children().is_empty());
}

#[test]
fn processes_are_listed() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(request(&["sleep", "100"])).unwrap();
    d.send(&ToAgent::List { id: 77 });
    let list = match d.wait_for(|m| matches!(m, Incoming::Message(FromAgent::Processes { id: 77, .. }))) {
        Incoming::Message(FromAgent::Processes { list, .. }) => list,
        _ => unreachable!(),
    };
    assert_eq!(list, vec![ProcessInfo { pid, argv: vec!["sleep".into(), "100".into()], pty: false, running: true }]);
    d.send(&ToAgent::Signal { pid, signal: libc::SIGKILL });
    d.collect(pid);
}

#[test]
fn output_while_disconnected_is_replayed() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(request(&["sh", "-c", "sleep 0.3; echo out1; echo err1 >&2"])).unwrap();
    drop(d);
    std::thread::sleep(Duration::from_millis(800));
    let (mut d, hello) = agent.connect_raw();
    match hello {
        FromAgent::Hello { buffered, agent_pid, .. } => {
            assert_eq!(agent_pid as i32, agent.pid);
            assert_eq!(
                buffered,
                vec![Buffered { pid, stdout: 5, stderr: 5, stdout_dropped: 0, stderr_dropped: 0, exited: true }]
            );
        }
        other => panic!("expected hello, got {other:?}"),
    }
    let c = d.collect(pid);
    assert_eq!((c.stdout.as_slice(), c.stderr.as_slice()), (&b"out1\n"[..], &b"err1\n"[..]));
    assert_eq!(c.exited.unwrap().status, 0);
}

#[test]
fn output_beyond_the_buffer_is_dropped_and_counted() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let total = DISCONNECTED_BUFFER + 50_000;
    let script = format!("sleep 0.3; head -c {} /dev/zero | tr '\\0' x; echo tail", total - 5);
    let pid = d.spawn(request(&["sh", "-c", &script])).unwrap();
    // A captured command that ends meanwhile keeps its whole result.
    let cap = d
        .spawn(safehouse_protocol::SpawnRequest { capture: true, ..request(&["sh", "-c", "sleep 0.3; echo kept"]) })
        .unwrap();
    drop(d);
    std::thread::sleep(Duration::from_millis(1000));
    let (mut d, hello) = agent.connect_raw();
    let FromAgent::Hello { buffered, .. } = hello else { panic!("expected hello, got {hello:?}") };
    let entry = buffered.iter().find(|b| b.pid == pid).expect("the streamed process is buffered");
    assert_eq!((entry.stdout, entry.stdout_dropped), (DISCONNECTED_BUFFER as u64, 50_000));
    // Dropped, then the newest bytes, then the exit.
    let mut seen_dropped = false;
    let mut out = Vec::new();
    let mut cap_exit = None;
    loop {
        match d.recv() {
            Incoming::Message(FromAgent::Dropped { pid: p, stream, bytes }) if p == pid => {
                assert!(out.is_empty(), "Dropped precedes the replayed bytes");
                assert_eq!((stream, bytes), (Stream::Stdout, 50_000));
                seen_dropped = true;
            }
            Incoming::Data(x) if x.pid == pid => out.extend(x.bytes),
            Incoming::Message(FromAgent::Exited(e)) if e.pid == pid => break,
            Incoming::Message(FromAgent::Exited(e)) if e.pid == cap => cap_exit = Some(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen_dropped);
    assert_eq!(out.len(), DISCONNECTED_BUFFER);
    assert!(out.ends_with(b"xxtail\n"));
    let cap_exit = cap_exit.unwrap_or_else(|| match d.recv() {
        Incoming::Message(FromAgent::Exited(e)) => e,
        other => panic!("expected the captured exit, got {other:?}"),
    });
    assert_eq!(cap_exit.stdout.unwrap(), b"kept\n");
}

#[test]
fn a_garbage_speaking_daemon_is_disconnected() {
    let agent = Agent::start();
    let garbage: [&[u8]; 5] = [
        &[0xff, 0xff, 0xff, 0xff, 1],                 // oversized
        &[0, 0, 0, 0],                                // empty frame
        &[3, 0, 0, 0, 9, 1, 2],                       // unknown kind
        b"\x0c\x00\x00\x00\x01{\"type\":\"x\"}",      // unknown message
        b"\x07\x00\x00\x00\x02\x01\x00\x00\x00\x01z", // stdout data sent to the agent
    ];
    for bytes in garbage {
        let mut d = agent.connect();
        d.sock.write_all(bytes).unwrap();
        assert!(d.closed_by_agent(), "{bytes:?}");
        // A new connection works.
        let mut d = agent.connect();
        d.ping();
    }
    // A spawn announcing descriptors that never came.
    let mut d = agent.connect();
    let mut req = request(&["true"]);
    req.cgroup_fds = 1;
    d.send(&ToAgent::Spawn(req));
    assert!(d.closed_by_agent());
    // Descriptors nobody claims.
    let mut d = agent.connect();
    let (_r, w) = fs::pipe().unwrap();
    let mut frame = Vec::new();
    safehouse_protocol::Message::encode(&ToAgent::Ping { id: 5 }, &mut frame).unwrap();
    safehouse_sys::agent_support::send_with_fds(&d.sock, &frame, &[w.as_raw_fd()]).unwrap();
    assert!(d.closed_by_agent());
    agent.connect().ping();
}

#[test]
fn a_new_connection_replaces_the_old() {
    let agent = Agent::start();
    let mut first = agent.connect();
    first.ping();
    let mut second = agent.connect();
    assert!(first.closed_by_agent());
    second.ping();
    let pid = second.spawn(safehouse_protocol::SpawnRequest { capture: true, ..request(&["echo", "x"]) }).unwrap();
    assert_eq!(second.collect(pid).exited.unwrap().stdout.unwrap(), b"x\n");
}

#[test]
fn cgroup_descriptors_are_written_before_exec() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let (r1, w1) = fs::pipe().unwrap();
    let (r2, w2) = fs::pipe().unwrap();
    let req = safehouse_protocol::SpawnRequest { capture: true, ..request(&["sh", "-c", "ls /proc/self/fd | wc -l"]) };
    let pid = d.spawn_with_fds(req, &[w1.as_raw_fd(), w2.as_raw_fd()]).unwrap();
    drop((w1, w2));
    for r in [r1, r2] {
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "0");
    }
    // The command sees only its stdio (and the descriptor `ls` opens for the listing).
    let e = d.collect(pid).exited.unwrap();
    assert_eq!(e.stdout.unwrap(), b"4\n");

    // A descriptor that cannot be written fails the spawn: nothing runs outside its cgroup.
    let (r, _w) = fs::pipe().unwrap();
    let (errno, message) = d.spawn_with_fds(request(&["true"]), &[r.as_raw_fd()]).unwrap_err();
    assert_eq!(errno, libc::EBADF, "{message}");
    assert!(message.contains("cgroup"), "{message}");
}

#[test]
fn orphans_are_reaped() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let pid = d.spawn(request(&["sh", "-c", "sleep 0.2 >/dev/null 2>&1 & exit 0"])).unwrap();
    assert_eq!(d.collect(pid).exited.unwrap().status, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.children().is_empty() {
        assert!(Instant::now() < deadline, "children left: {:?}", agent.children());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ping();
}

#[test]
fn background_writers_do_not_delay_exit_or_get_sigpipe() {
    let agent = Agent::start();
    let mut d = agent.connect();
    // The background job keeps stdout open and writes after its parent ended.
    let marker = std::env::temp_dir().join(format!("safehouse-agent-bg-{}", agent.pid));
    let script = format!("(sleep 0.3; echo late; echo ok > {}) & echo early", marker.display());
    let pid = d.spawn(request(&["sh", "-c", &script])).unwrap();
    let c = d.collect(pid);
    assert_eq!(c.stdout, b"early\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the background job died writing its output");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&marker);
    // Nothing of it arrives after Exited.
    d.ping();
}

#[test]
fn idle_memory_stays_small() {
    let agent = Agent::start();
    let mut d = agent.connect();
    d.ping();
    for i in 0..20 {
        let capture = i % 2 == 0;
        let req = safehouse_protocol::SpawnRequest { capture, ..request(&["sh", "-c", "head -c 3000000 /dev/zero"]) };
        let pid = d.spawn(req).unwrap();
        d.collect(pid);
    }
    let pid = d.spawn(request(&["sh", "-c", "sleep 0.2; head -c 3000000 /dev/zero"])).unwrap();
    drop(d);
    std::thread::sleep(Duration::from_millis(800));
    let mut d = agent.connect();
    d.collect(pid);
    d.ping();
    let growth = agent.rss_anon_kib().saturating_sub(agent.baseline_anon_kib);
    eprintln!("agent anonymous memory: {} KiB at start, grew by {growth} KiB", agent.baseline_anon_kib);
    assert!(growth <= 1024, "anonymous memory grew by {growth} KiB");
}

#[test]
fn a_slow_daemon_gets_all_output_and_the_agent_stays_small() {
    let agent = Agent::start();
    let mut d = agent.connect();
    let total = 8_000_000;
    let pid = d.spawn(request(&["head", "-c", &total.to_string(), "/dev/urandom"])).unwrap();
    // Not reading: the agent stops reading the pipe once 1 MiB waits for the daemon.
    std::thread::sleep(Duration::from_millis(500));
    let growth = agent.rss_anon_kib().saturating_sub(agent.baseline_anon_kib);
    assert!(growth < 4096, "the agent buffered {growth} KiB for a slow daemon");
    let c = d.collect(pid);
    assert_eq!((c.stdout.len(), c.exited.unwrap().status), (total, 0));
}
