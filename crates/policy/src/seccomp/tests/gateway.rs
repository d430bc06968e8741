//! The gateway process's filter, run through the interpreter: what it lets the gateway do,
//! what it refuses, and that every entry compiles to what its rule says.

use std::sync::OnceLock;

use libc::{
    AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNIX, CLONE_CHILD_CLEARTID, CLONE_FILES, CLONE_FS, CLONE_NEWNS,
    CLONE_NEWUSER, CLONE_PARENT_SETTID, CLONE_SETTLS, CLONE_SIGHAND, CLONE_SYSVSEM, CLONE_THREAD, CLONE_VM, SIGCHLD,
    SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_RAW, SOCK_SEQPACKET, SOCK_STREAM,
};

use super::super::interp::{check, run, SeccompData};
use super::super::syscalls::AUDIT_ARCH_I386;
use super::super::{gateway_filter, SockFilter, GATEWAY, NATIVE};
use super::{model, nr, probe_args, ALLOW, EAFNOSUPPORT, ENOSYS, EPERM, EPROTONOSUPPORT, ESOCKTNOSUPPORT, KILL};

fn filter() -> &'static [SockFilter] {
    static FILTER: OnceLock<Vec<SockFilter>> = OnceLock::new();
    FILTER.get_or_init(gateway_filter)
}

fn verdict_raw(arch: u32, nr: u32, args: &[u64]) -> u32 {
    let mut data = SeccompData { nr: nr as i32, arch, instruction_pointer: 0x7fff_dead_beef, args: [0; 6] };
    data.args[..args.len()].copy_from_slice(args);
    run(filter(), &data).expect("the gateway filter runs")
}

fn verdict(name: &str, args: &[u64]) -> u32 {
    verdict_raw(NATIVE.audit_arch, nr(name), args)
}

fn u(v: i32) -> u64 {
    u64::from(v as u32)
}

#[test]
fn passes_the_kernel_checks_and_is_small() {
    check(filter()).expect("the kernel would accept the gateway filter");
    assert!(filter().len() <= 512, "{} instructions", filter().len());
}

#[test]
fn what_a_proxy_needs_is_allowed() {
    for name in [
        "read",
        "write",
        "close",
        "splice",
        "pipe2",
        "epoll_pwait",
        "epoll_ctl",
        "eventfd2",
        "futex",
        "connect",
        "accept4",
        "recvmsg",
        "sendmsg",
        "getsockopt",
        "setsockopt",
        "shutdown",
        "getrandom",
        "clock_nanosleep",
        "munmap",
        "exit_group",
    ] {
        assert_eq!(verdict(name, &[]), ALLOW, "{name}");
    }
    let thread = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;
    assert_eq!(verdict("clone", &[u(thread)]), ALLOW);
    for ty in [SOCK_STREAM, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK] {
        assert_eq!(verdict("socket", &[u(AF_INET), u(ty), 0]), ALLOW);
        assert_eq!(verdict("socket", &[u(AF_INET6), u(ty), 0]), ALLOW);
    }
    let rw = u(libc::PROT_READ | libc::PROT_WRITE);
    assert_eq!(verdict("mmap", &[0, 4096, rw]), ALLOW);
    assert_eq!(verdict("mprotect", &[0, 4096, u(libc::PROT_NONE)]), ALLOW);
    assert_eq!(verdict("fcntl", &[3, u(libc::F_SETPIPE_SZ), 1 << 20]), ALLOW);
    assert_eq!(verdict("ioctl", &[3, u64::from(libc::FIONBIO as u32)]), ALLOW);
    assert_eq!(verdict("prctl", &[u(libc::PR_SET_NAME)]), ALLOW);
}

#[test]
fn what_would_widen_a_compromised_gateway_is_refused() {
    // No file: the data dir, the keys and the audit log are out of reach by path.
    for name in ["openat", "openat2", "execve", "execveat", "listen", "kill", "tgkill", "ptrace"] {
        assert_eq!(verdict(name, &[]), EPERM, "{name}");
    }
    for name in ["memfd_create", "unshare", "setns", "mount", "bpf", "io_uring_setup", "setresuid", "seccomp"] {
        assert_eq!(verdict(name, &[]), EPERM, "{name}");
    }
    // Unlisted calls look unimplemented.
    for name in ["newfstatat", "statx", "getdents64", "chdir", "uname", "sched_setaffinity", "inotify_init1"] {
        assert_eq!(verdict(name, &[]), ENOSYS, "{name}");
    }
    assert_eq!(verdict("clone3", &[]), ENOSYS);
    // A process, not a thread; or a namespace even with CLONE_THREAD.
    assert_eq!(verdict("clone", &[u(SIGCHLD)]), EPERM);
    assert_eq!(verdict("clone", &[u(CLONE_THREAD | CLONE_VM | CLONE_SIGHAND | CLONE_NEWUSER)]), EPERM);
    assert_eq!(verdict("clone", &[u(CLONE_THREAD | CLONE_NEWNS)]), EPERM);
    // Sockets: unix (the daemon's and host services), netlink, packet, raw.
    for family in [AF_UNIX, AF_NETLINK, AF_PACKET] {
        assert_eq!(verdict("socket", &[u(family), u(SOCK_STREAM), 0]), EAFNOSUPPORT, "{family}");
    }
    assert_eq!(verdict("socketpair", &[u(AF_UNIX), u(SOCK_STREAM), 0]), ALLOW);
    assert_eq!(verdict("socketpair", &[u(AF_NETLINK), u(SOCK_STREAM), 0]), EAFNOSUPPORT);
    assert_eq!(verdict("socket", &[u(AF_INET), u(SOCK_RAW), 0]), ESOCKTNOSUPPORT);
    assert_eq!(verdict("socket", &[u(AF_INET), u(SOCK_SEQPACKET), 0]), ESOCKTNOSUPPORT);
    assert_eq!(verdict("socket", &[u(AF_INET), u(SOCK_STREAM), 262]), EPROTONOSUPPORT, "MPTCP");
    // Executable memory.
    let rwx = u(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
    assert_eq!(verdict("mmap", &[0, 4096, rwx]), EPERM);
    assert_eq!(verdict("mprotect", &[0, 4096, u(libc::PROT_EXEC)]), EPERM);
    // Other descriptor commands, ioctls and prctls.
    assert_eq!(verdict("fcntl", &[3, u(libc::F_SETOWN)]), EPERM);
    assert_eq!(verdict("ioctl", &[0, u64::from(libc::TIOCSTI as u32)]), EPERM);
    assert_eq!(verdict("prctl", &[u(libc::PR_SET_DUMPABLE), 1]), EPERM);
    assert_eq!(verdict("prctl", &[u(libc::PR_SET_NO_NEW_PRIVS), 1]), EPERM);
}

#[test]
fn foreign_abis_are_killed() {
    assert_eq!(verdict_raw(AUDIT_ARCH_I386, 5, &[]), KILL);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(verdict_raw(NATIVE.audit_arch, nr("read") | super::super::syscalls::X32_SYSCALL_BIT, &[]), KILL);
}

/// Every entry, every branch: the compiled program agrees with the table.
#[test]
fn every_entry_compiles_to_its_rule() {
    let mut names: Vec<&str> = GATEWAY.iter().map(|e| e.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a syscall is listed twice");
    for entry in GATEWAY {
        let Some(number) = NATIVE.nr(entry.name) else { continue };
        for args in probe_args(&entry.rule) {
            let want = match model(&entry.rule, &args) {
                super::super::Action::Allow => ALLOW,
                super::super::Action::Errno(e) => libc::SECCOMP_RET_ERRNO | e as u32,
                super::super::Action::KillProcess => KILL,
                super::super::Action::Skip => libc::SECCOMP_RET_ERRNO,
            };
            assert_eq!(verdict_raw(NATIVE.audit_arch, number, &args), want, "{} {args:x?}", entry.name);
        }
    }
}
