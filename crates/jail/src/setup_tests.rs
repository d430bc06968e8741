//! The setup sequence against a fake kernel (no root): the order of the steps, and that
//! each failing call stops the sandbox with the step and the errno named, before any
//! later step (seccomp last, and nothing of the command) runs.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use safehouse_policy::plan::{self, HostView, Plan, RunRequest};
use safehouse_policy::tools::ToolsPlan;

use super::*;
use crate::tools::{Grant, ToolsError};

/// Records every call by name; the call named `fail` (its `nth` occurrence) fails with
/// `errno`.
#[derive(Default)]
struct Fake {
    calls: Vec<&'static str>,
    fail: Option<(&'static str, usize, i32)>,
    /// What `wait_for_host` returns on its second call (the cgroup's `tasks` files).
    tasks: usize,
}

impl Fake {
    fn call(&mut self, name: &'static str) -> io::Result<()> {
        self.calls.push(name);
        match self.fail {
            Some((f, nth, errno)) if f == name && self.calls.iter().filter(|c| **c == name).count() == nth => {
                Err(io::Error::from_raw_os_error(errno))
            }
            _ => Ok(()),
        }
    }

    fn fd(&mut self, name: &'static str) -> io::Result<OwnedFd> {
        self.call(name)?;
        Ok(File::open("/dev/null")?.into())
    }
}

impl Kernel for Fake {
    fn close_fds_except(&mut self, _: &[RawFd]) -> io::Result<()> {
        self.call("close_fds_except")
    }
    fn erase_host_args(&mut self) -> io::Result<()> {
        self.call("erase_host_args")
    }
    fn set_parent_death_signal(&mut self) -> io::Result<()> {
        self.call("set_parent_death_signal")
    }
    fn wait_for_host(&mut self, _: &OwnedFd) -> io::Result<Vec<OwnedFd>> {
        self.call("wait_for_host")?;
        let n = if self.calls.iter().filter(|c| **c == "wait_for_host").count() == 2 { self.tasks } else { 0 };
        (0..n).map(|_| Ok(File::open("/dev/null")?.into())).collect()
    }
    fn send_to_host(&mut self, _: &OwnedFd, _: &[u8], _: &[RawFd]) -> io::Result<()> {
        self.call("send_to_host")
    }
    fn host_gone(&mut self, _: &OwnedFd) -> bool {
        self.call("host_gone").is_err()
    }
    fn keep_capabilities(&mut self) -> io::Result<()> {
        self.call("keep_capabilities")
    }
    fn drop_supplementary_groups(&mut self) -> io::Result<()> {
        self.call("drop_supplementary_groups")
    }
    fn set_gid(&mut self, _: u32) -> io::Result<()> {
        self.call("set_gid")
    }
    fn set_uid(&mut self, _: u32) -> io::Result<()> {
        self.call("set_uid")
    }
    fn set_umask(&mut self, _: u32) {
        let _ = self.call("set_umask");
    }
    fn build_filesystem(&mut self, _: &Plan, _: &mut Prepared, _: &[OwnedFd], _: Option<&OwnedFd>) -> io::Result<()> {
        self.call("build_filesystem")
    }
    fn open_terminal(&mut self) -> io::Result<(OwnedFd, OwnedFd)> {
        Ok((self.fd("open_terminal")?, File::open("/dev/null")?.into()))
    }
    fn set_hostname(&mut self, _: &str) -> io::Result<()> {
        self.call("set_hostname")
    }
    fn bring_up_loopback(&mut self) -> io::Result<()> {
        self.call("bring_up_loopback")
    }
    fn listen_on_loopback(&mut self, _: u16, _: i32) -> io::Result<OwnedFd> {
        self.fd("listen_on_loopback")
    }
    fn open_root(&mut self) -> io::Result<OwnedFd> {
        self.fd("open_root")
    }
    fn set_rlimit(&mut self, _: libc::__rlimit_resource_t, _: u64, _: u64) -> io::Result<()> {
        self.call("set_rlimit")
    }
    fn join_cgroup(&mut self, _: OwnedFd) -> io::Result<()> {
        self.call("join_cgroup")
    }
    fn unshare_cgroup_namespace(&mut self) -> io::Result<()> {
        self.call("unshare_cgroup_namespace")
    }
    fn expand_tools(&mut self, _: &ToolsPlan) -> Result<Vec<Grant>, ToolsError> {
        self.call("expand_tools").map_err(|_| ToolsError::NoMatch { pattern: "/usr/bin/typo".into() })?;
        Ok(Vec::new())
    }
    fn landlock_abi(&mut self) -> io::Result<u32> {
        self.call("landlock_abi").map(|()| 7)
    }
    fn landlock_ruleset(&mut self, _: u64, _: u64) -> io::Result<OwnedFd> {
        self.fd("landlock_ruleset")
    }
    fn landlock_path_rule(&mut self, _: &OwnedFd, _: &str, _: u64) -> io::Result<()> {
        self.call("landlock_path_rule")
    }
    fn landlock_fd_rule(&mut self, _: &OwnedFd, _: &Grant, _: u64) -> io::Result<()> {
        self.call("landlock_fd_rule")
    }
    fn landlock_restrict(&mut self, _: &OwnedFd) -> io::Result<()> {
        self.call("landlock_restrict")
    }
    fn lock_securebits(&mut self) -> io::Result<()> {
        self.call("lock_securebits")
    }
    fn drop_bounding_set(&mut self) -> io::Result<()> {
        self.call("drop_bounding_set")
    }
    fn keep_only_capabilities(&mut self, _: u64) -> io::Result<()> {
        self.call("keep_only_capabilities")
    }
    fn clear_ambient_capabilities(&mut self) -> io::Result<()> {
        self.call("clear_ambient_capabilities")
    }
    fn drop_capabilities(&mut self) -> io::Result<()> {
        self.call("drop_capabilities")
    }
    fn set_no_new_privs(&mut self) -> io::Result<()> {
        self.call("set_no_new_privs")
    }
    fn make_non_dumpable(&mut self) -> io::Result<()> {
        self.call("make_non_dumpable")
    }
    fn install_exec_listener(&mut self, _: &[libc::sock_filter]) -> io::Result<OwnedFd> {
        self.fd("install_exec_listener")
    }
    fn install_seccomp(&mut self, _: &[libc::sock_filter]) -> io::Result<()> {
        self.call("install_seccomp")
    }
}

fn plan() -> Plan {
    plan::compile(&RunRequest::default(), &HostView::default()).expect("the default policy compiles")
}

/// A `run` sandbox's context (root mode), or a daemon's with `agent`.
fn context(plan: Plan, daemon: bool) -> ChildContext {
    fn noop(_: OwnedFd, _: &Plan) -> ! {
        unreachable!("the fake never starts the agent")
    }
    let null = || -> OwnedFd { File::open("/dev/null").unwrap().into() };
    ChildContext {
        plan,
        argv: vec!["/bin/true".into()],
        sync_read: null(),
        status_write: File::create("/dev/null").unwrap(),
        prepared: Prepared::new(),
        lower_fds: Vec::new(),
        layer_fd: None,
        privileged: true,
        agent: daemon.then(|| AgentEntry { run: noop, listener: null() }),
        tty: false,
        tty_slave: None,
        watch_execs: daemon,
    }
}

/// The calls of a successful setup, with each call's step (from the error a failure
/// there gives).
fn run(fake: &mut Fake, plan: Plan, daemon: bool) -> Result<(), SetupError> {
    set_up(fake, &mut context(plan, daemon))
}

/// Collapses runs of one call ("set_rlimit" x4 → one).
fn distinct(calls: &[&'static str]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for c in calls {
        if out.last() != Some(c) {
            out.push(c);
        }
    }
    out
}

#[test]
fn steps_run_in_order_privileges_dropped_and_seccomp_last() {
    let mut fake = Fake { tasks: 2, ..Fake::default() };
    run(&mut fake, plan(), false).unwrap();
    let want = [
        "close_fds_except",
        "erase_host_args",
        "set_parent_death_signal",
        "wait_for_host",
        "keep_capabilities",
        "drop_supplementary_groups",
        "set_gid",
        "set_uid",
        "set_umask",
        "build_filesystem",
        "set_hostname",
        "bring_up_loopback",
        "set_rlimit",
        "wait_for_host",
        "join_cgroup",
        "unshare_cgroup_namespace",
        "landlock_abi",
        "landlock_ruleset",
        "landlock_path_rule",
        "set_no_new_privs",
        "landlock_restrict",
        "lock_securebits",
        "drop_bounding_set",
        "clear_ambient_capabilities",
        "drop_capabilities",
        "set_no_new_privs",
        "make_non_dumpable",
        "set_parent_death_signal",
        "host_gone",
        "install_seccomp",
    ];
    pretty_assertions::assert_eq!(distinct(&fake.calls), want);
    assert_eq!(fake.calls.iter().filter(|c| **c == "set_rlimit").count(), 4);
    assert_eq!(fake.calls.iter().filter(|c| **c == "join_cgroup").count(), 2);
}

#[test]
fn a_daemon_sandbox_hands_over_its_root_and_exec_listener() {
    let mut p = plan();
    p.gateway = true;
    p.tools = ToolsPlan { allow: vec!["/bin/sh".into()], limits: Vec::new() };
    let mut fake = Fake::default();
    run(&mut fake, p, true).unwrap();
    let calls = distinct(&fake.calls);
    // No parent-death signal (the sandbox outlives its creator); the gateway's listener,
    // the root, then (after privileges are dropped) the exec listener go to the host.
    assert!(!calls.contains(&"set_parent_death_signal"), "{calls:?}");
    let at = |name: &str| calls.iter().position(|c| *c == name).unwrap_or_else(|| panic!("{name}: {calls:?}"));
    assert!(at("bring_up_loopback") < at("listen_on_loopback") && at("listen_on_loopback") < at("open_root"));
    assert!(at("unshare_cgroup_namespace") < at("expand_tools") && at("expand_tools") < at("landlock_abi"));
    assert!(at("make_non_dumpable") < at("install_exec_listener"));
    assert_eq!(calls[calls.len() - 3..], ["install_exec_listener", "send_to_host", "install_seccomp"]);
}

#[test]
fn every_failing_call_stops_the_setup_at_its_step() {
    // The calls of a successful daemon setup with everything on, in order; each is made
    // to fail in turn.
    let full = || {
        let mut p = plan();
        p.gateway = true;
        p.tools = ToolsPlan { allow: vec!["/bin/sh".into()], limits: Vec::new() };
        p
    };
    for daemon in [false, true] {
        let mut ok = Fake { tasks: 1, ..Fake::default() };
        run(&mut ok, full(), daemon).unwrap();
        let mut last_step = Step::ForgetHost;
        for (i, name) in ok.calls.iter().enumerate() {
            if *name == "set_umask" {
                continue; // umask cannot fail
            }
            let nth = ok.calls[..=i].iter().filter(|c| *c == name).count();
            let mut fake = Fake { tasks: 1, fail: Some((name, nth, libc::EPERM)), ..Fake::default() };
            let err = run(&mut fake, full(), daemon).expect_err(name);
            // Nothing after the failing call ran: in particular no later step, and no
            // seccomp unless it was the one failing (the caller exits 125; the command
            // never starts).
            assert_eq!(fake.calls.len(), i + 1, "{name}: {:?}", fake.calls);
            assert!(err.step >= last_step, "{name}: {} came before {last_step}", err.step);
            last_step = err.step;
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{}: ", err.step)), "{msg}");
            match *name {
                // Reported with their own reason (no errno from the kernel there).
                "host_gone" => assert!(msg.contains("went away"), "{msg}"),
                "landlock_abi" => assert!(msg.contains("unavailable"), "{msg}"),
                "expand_tools" => assert!(msg.contains("tools.allow: /usr/bin/typo"), "{msg}"),
                _ => assert_eq!(err.errno(), Some(libc::EPERM), "{name}: {msg}"),
            }
        }
        assert_eq!(last_step, Step::Seccomp);
    }
}

#[test]
fn a_missing_landlock_path_is_skipped_other_rule_errors_stop() {
    let mut fake = Fake { fail: Some(("landlock_path_rule", 1, libc::ENOENT)), ..Fake::default() };
    run(&mut fake, plan(), false).unwrap();
    assert_eq!(fake.calls.last(), Some(&"install_seccomp"));
    let mut fake = Fake { fail: Some(("landlock_path_rule", 1, libc::EACCES)), ..Fake::default() };
    let err = run(&mut fake, plan(), false).unwrap_err();
    assert_eq!((err.step, err.errno()), (Step::Landlock, Some(libc::EACCES)));
    assert!(!fake.calls.contains(&"install_seccomp"));
}

#[test]
fn tools_limits_in_a_daemon_sandbox_need_the_exec_watcher() {
    let mut p = plan();
    p.tools = ToolsPlan {
        allow: vec!["/bin/sh".into()],
        limits: vec![safehouse_policy::tools::ToolLimit { pattern: "/bin/sh".into(), timeout: None, memory: None }],
    };
    let mut ctx = context(p, true);
    ctx.watch_execs = false;
    let mut fake = Fake::default();
    let err = set_up(&mut fake, &mut ctx).unwrap_err();
    assert_eq!(err.step, Step::ExecNotification);
    assert!(err.to_string().contains("SAFEHOUSE_EXECWATCH"), "{err}");
    assert!(!fake.calls.contains(&"install_seccomp"));
}

#[test]
fn a_terminal_is_opened_in_the_new_filesystem_and_its_master_handed_over() {
    let mut ctx = context(plan(), false);
    ctx.tty = true;
    let mut fake = Fake { tasks: 1, ..Fake::default() };
    set_up(&mut fake, &mut ctx).unwrap();
    let calls = distinct(&fake.calls);
    let at = |name: &str| calls.iter().position(|c| *c == name).unwrap_or_else(|| panic!("{name}: {calls:?}"));
    // After the sandbox's own /dev/pts exists, before anything of the network step.
    assert_eq!(calls[at("build_filesystem") + 1..at("set_hostname")], ["open_terminal", "send_to_host"]);
    assert!(ctx.tty_slave.is_some(), "the other end stays with the sandbox's init");

    let mut fake = Fake { fail: Some(("open_terminal", 1, libc::ENOSPC)), ..Fake::default() };
    let mut ctx = context(plan(), false);
    ctx.tty = true;
    let err = set_up(&mut fake, &mut ctx).unwrap_err();
    assert_eq!((err.step, err.errno()), (Step::Terminal, Some(libc::ENOSPC)));
    assert_eq!(fake.calls.last(), Some(&"open_terminal"));
}
