//! The gateway process's seccomp profile, as reviewed data.
//!
//! The gateway process parses what sandboxed code (and the internet) sends: HTTP heads,
//! SOCKS5 handshakes, DNS answers. Its whole job is sockets, pipes, threads, timers and
//! memory, so that is all this table allows. It opens no file (its resolver settings and
//! host addresses come as data from the daemon), starts no program, signals nobody,
//! creates no listener (its listeners are handed to it) and no unix socket that could reach
//! anything (it talks to the daemon over one inherited socket). Anything not listed fails with [`DEFAULT_ERRNO`]
//! (`ENOSYS`); the calls that would give a compromised gateway more reach are listed with
//! `EPERM`, so a probe sees "forbidden". Calls from another ABI kill the process.
//!
//! The profile is installed last, after the process dropped its identity, its filesystem
//! view and its privileges (`safehouse_gateway::process::confine`).

use libc::{EAFNOSUPPORT, ENOSYS, EPERM, EPROTONOSUPPORT, ESOCKTNOSUPPORT};

use super::model::{Action, ArgCheck, Entry, Rule, Test};
use super::rules::{CLONE_NAMESPACE_FLAGS, SOCK_TYPE_MASK};

const fn allow(name: &'static str, why: &'static str) -> Entry {
    Entry { name, rule: Rule::Allow, why }
}

const fn eperm(name: &'static str, why: &'static str) -> Entry {
    Entry { name, rule: Rule::Errno(EPERM), why }
}

const fn args(name: &'static str, rule: Rule, why: &'static str) -> Entry {
    Entry { name, rule, why }
}

/// Threads only: a call without `CLONE_THREAD` would start a process.
const CLONE: Rule = Rule::Args {
    checks: &[
        ArgCheck {
            arg: 0,
            name: "flags",
            mask: u32::MAX,
            test: Test::AnyBit(CLONE_NAMESPACE_FLAGS),
            then: Action::Errno(EPERM),
        },
        ArgCheck {
            arg: 0,
            name: "flags",
            mask: u32::MAX,
            test: Test::AnyBit(libc::CLONE_THREAD as u32),
            then: Action::Allow,
        },
    ],
    otherwise: Action::Errno(EPERM),
};

const INET_FAMILIES: &[u32] = &[libc::AF_INET as u32, libc::AF_INET6 as u32];

/// Outgoing TCP and the resolver's UDP, nothing else: no unix socket (the daemon's and
/// the host's services are unix sockets), no netlink, no raw or packet socket.
const SOCKET: Rule = Rule::Args {
    checks: &[
        ArgCheck {
            arg: 0,
            name: "domain",
            mask: u32::MAX,
            test: Test::NotIn(INET_FAMILIES),
            then: Action::Errno(EAFNOSUPPORT),
        },
        ArgCheck {
            arg: 1,
            name: "type",
            mask: SOCK_TYPE_MASK,
            test: Test::NotIn(&[libc::SOCK_STREAM as u32, libc::SOCK_DGRAM as u32]),
            then: Action::Errno(ESOCKTNOSUPPORT),
        },
        ArgCheck {
            arg: 2,
            name: "protocol",
            mask: u32::MAX,
            test: Test::NotIn(&[0, libc::IPPROTO_TCP as u32, libc::IPPROTO_UDP as u32]),
            then: Action::Errno(EPROTONOSUPPORT),
        },
    ],
    otherwise: Action::Allow,
};

/// A connected pair only (the runtime's signal wake-up); it reaches nothing.
const SOCKETPAIR: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 0,
        name: "domain",
        mask: u32::MAX,
        test: Test::NotIn(&[libc::AF_UNIX as u32]),
        then: Action::Errno(EAFNOSUPPORT),
    }],
    otherwise: Action::Allow,
};

/// Never executable memory: the process runs the code it was started with (a static
/// binary, no loader, no JIT), so a parser bug cannot map shellcode.
const NO_EXEC: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 2,
        name: "prot",
        mask: u32::MAX,
        test: Test::AnyBit(libc::PROT_EXEC as u32),
        then: Action::Errno(EPERM),
    }],
    otherwise: Action::Allow,
};

/// Descriptor flags and pipe sizes.
pub const GATEWAY_FCNTLS: &[u32] = &[
    libc::F_GETFD as u32,
    libc::F_SETFD as u32,
    libc::F_GETFL as u32,
    libc::F_SETFL as u32,
    libc::F_DUPFD_CLOEXEC as u32,
    libc::F_GETPIPE_SZ as u32,
    libc::F_SETPIPE_SZ as u32,
];

const FCNTL: Rule = Rule::Args {
    checks: &[ArgCheck { arg: 1, name: "cmd", mask: u32::MAX, test: Test::In(GATEWAY_FCNTLS), then: Action::Allow }],
    otherwise: Action::Errno(EPERM),
};

/// Non-blocking and close-on-exec switches (std sets O_NONBLOCK with FIONBIO).
pub const GATEWAY_IOCTLS: &[u32] = &[libc::FIONBIO as u32, libc::FIOCLEX as u32, libc::FIONCLEX as u32];

const IOCTL: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 1,
        name: "request",
        mask: u32::MAX,
        test: Test::In(GATEWAY_IOCTLS),
        then: Action::Allow,
    }],
    otherwise: Action::Errno(EPERM),
};

/// `PR_SET_VMA` (names anonymous mappings; glibc may name thread stacks).
const PR_SET_VMA: u32 = 0x5356_4d41;

/// Thread names (std names its threads), and naming memory.
const PRCTL: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 0,
        name: "option",
        mask: u32::MAX,
        test: Test::In(&[libc::PR_SET_NAME as u32, libc::PR_GET_NAME as u32, PR_SET_VMA]),
        then: Action::Allow,
    }],
    otherwise: Action::Errno(EPERM),
};

/// The profile of the gateway process.
#[rustfmt::skip]
pub const GATEWAY: &[Entry] = &[
    // Bytes through descriptors it holds.
    allow("read", "sockets and pipes"),
    allow("write", "sockets, pipes, and log lines to stderr"),
    allow("readv", "sockets"),
    allow("writev", "sockets"),
    allow("close", "descriptors"),
    args("fcntl", FCNTL, "descriptor flags and pipe sizes only"),
    args("ioctl", IOCTL, "FIONBIO/FIOCLEX only"),
    allow("pipe2", "the splice pipes of tunnels and bodies"),
    allow("splice", "moving tunnel and body bytes between sockets without copying"),
    // Memory.
    allow("brk", "memory"),
    args("mmap", NO_EXEC, "memory; never executable"),
    args("mprotect", NO_EXEC, "memory (thread stack guards); never executable"),
    allow("munmap", "memory"),
    allow("mremap", "memory"),
    allow("madvise", "memory"),
    allow("mseal", "only restricts the caller's own mappings"),
    allow("map_shadow_stack", "CET shadow stacks (glibc with SHSTK)"),
    // Threads of the runtime.
    args("clone", CLONE, "threads only: no process, no namespace"),
    Entry { name: "clone3", rule: Rule::Errno(ENOSYS), why: "flags sit in memory a filter cannot read; libc falls back to clone" },
    allow("set_robust_list", "threads"),
    allow("set_tid_address", "threads"),
    allow("rseq", "restartable sequences (glibc registers one per thread)"),
    allow("futex", "threads"),
    allow("gettid", "threads"),
    allow("getpid", "identity (the runtime, the resolver's query ids)"),
    allow("sched_yield", "scheduling"),
    allow("sched_getaffinity", "the runtime sizes its thread pool"),
    args("prctl", PRCTL, "thread names only"),
    allow("exit", "threads"),
    allow("exit_group", "the process"),
    // Signals: its own handlers and masks only.
    allow("rt_sigaction", "signal handlers (std's stack-overflow guard)"),
    allow("rt_sigprocmask", "signal masks"),
    allow("rt_sigreturn", "signals"),
    allow("sigaltstack", "std's stack-overflow guard"),
    allow("restart_syscall", "signals"),
    // Time.
    allow("clock_gettime", "time"),
    allow("clock_getres", "time"),
    allow("clock_nanosleep", "timers"),
    allow("nanosleep", "timers"),
    allow("gettimeofday", "time"),
    // The event loop.
    allow("epoll_create1", "the event loop"),
    allow("epoll_ctl", "the event loop"),
    allow("epoll_wait", "the event loop"),
    allow("epoll_pwait", "the event loop"),
    allow("epoll_pwait2", "the event loop"),
    allow("eventfd2", "waking the event loop"),
    // Sockets.
    args("socket", SOCKET, "TCP out and the resolver's UDP only"),
    args("socketpair", SOCKETPAIR, "unix pairs only: the runtime's wake-up channel; a pair reaches nothing"),
    allow("connect", "dialling approved addresses; the resolver's UDP"),
    allow("accept", "the sandbox's listener, handed over by the daemon"),
    allow("accept4", "the sandbox's listener, handed over by the daemon"),
    allow("bind", "the resolver's UDP port (TCP binds are refused by Landlock)"),
    allow("shutdown", "half-closing tunnels"),
    allow("sendto", "sockets"),
    allow("recvfrom", "sockets"),
    allow("sendmsg", "sockets; the daemon's channel"),
    allow("recvmsg", "sockets; the daemon's channel (listeners arrive as SCM_RIGHTS)"),
    allow("getsockname", "sockets"),
    allow("getpeername", "sockets"),
    allow("setsockopt", "TCP_NODELAY and buffer sizes"),
    allow("getsockopt", "SO_ERROR after a non-blocking connect"),
    allow("getrandom", "DNS query ids and source ports"),
    // ---- explicit denials: what would give a compromised gateway more reach ------------
    eperm("open", "it opens no file: no data dir, no keys, no audit log (its view is empty too)"),
    eperm("openat", "it opens no file: no data dir, no keys, no audit log (its view is empty too)"),
    eperm("openat2", "it opens no file"),
    eperm("creat", "it opens no file"),
    eperm("open_by_handle_at", "FS-05: file handles bypass path walks"),
    eperm("name_to_handle_at", "FS-05"),
    eperm("execve", "it starts no program"),
    eperm("execveat", "it starts no program"),
    eperm("fork", "it starts no process"),
    eperm("vfork", "it starts no process"),
    eperm("listen", "its listeners come from the daemon; it opens no port of its own"),
    eperm("kill", "it signals nobody"),
    eperm("tkill", "it signals nobody"),
    eperm("tgkill", "it signals nobody"),
    eperm("rt_sigqueueinfo", "it signals nobody"),
    eperm("rt_tgsigqueueinfo", "it signals nobody"),
    eperm("pidfd_open", "it signals nobody"),
    eperm("pidfd_send_signal", "it signals nobody"),
    eperm("pidfd_getfd", "PR-01: steals another process's descriptors"),
    eperm("ptrace", "PR-01"),
    eperm("process_vm_readv", "PR-01"),
    eperm("process_vm_writev", "PR-01"),
    eperm("memfd_create", "no anonymous files (no code to load)"),
    eperm("mount", "FS-03"),
    eperm("umount2", "FS-03"),
    eperm("pivot_root", "FS-03"),
    eperm("chroot", "FS-03"),
    eperm("fsopen", "FS-04"),
    eperm("fsmount", "FS-04"),
    eperm("open_tree", "FS-04"),
    eperm("move_mount", "FS-04"),
    eperm("unshare", "PR-05"),
    eperm("setns", "PR-05"),
    eperm("setuid", "its identity is set before the filter"),
    eperm("setgid", "its identity is set before the filter"),
    eperm("setresuid", "its identity is set before the filter"),
    eperm("setresgid", "its identity is set before the filter"),
    eperm("setgroups", "its identity is set before the filter"),
    eperm("capset", "PR-03"),
    eperm("keyctl", "PR-06"),
    eperm("add_key", "PR-06"),
    eperm("request_key", "PR-06"),
    eperm("bpf", "PR-07"),
    eperm("perf_event_open", "PR-07"),
    eperm("userfaultfd", "PR-07"),
    eperm("io_uring_setup", "PR-07: io_uring bypasses this filter"),
    eperm("io_uring_enter", "PR-07"),
    eperm("io_uring_register", "PR-07"),
    eperm("seccomp", "the filter is final"),
    eperm("landlock_create_ruleset", "the restrictions are final"),
    eperm("prlimit64", "its limits are set before the filter"),
    eperm("setrlimit", "its limits are set before the filter"),
    eperm("init_module", "KS-01"),
    eperm("finit_module", "KS-01"),
    eperm("kexec_load", "KS-01"),
    eperm("reboot", "KS-01"),
    eperm("syslog", "KS-03"),
];
