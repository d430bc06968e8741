//! The sandbox's seccomp profile, as reviewed data.
//!
//! One entry per syscall: its name, what the filter does with it, and why. The profile is an
//! allowlist. A syscall that is not listed gets [`DEFAULT_ACTION`] (`ENOSYS`), so a syscall
//! newer than this table looks unimplemented and libc falls back to an older one. The
//! dangerous syscalls the kernel already knows are listed anyway, with `EPERM` and the
//! catalogue ID from SECURITY.md they answer, so a probe sees "forbidden", not "missing".
//!
//! Argument checks compare the low 32 bits of an argument only; each checked argument below
//! is one the kernel truncates to 32 bits or fewer (see [`model`](super::model)).

use libc::{EAFNOSUPPORT, ENOSYS, EPERM, EPROTONOSUPPORT, ESOCKTNOSUPPORT};

use super::model::{Action, ArgCheck, Entry, Rule, Test};

/// The errno of an unlisted syscall: it looks unimplemented, so callers fall back.
pub const DEFAULT_ERRNO: i32 = ENOSYS;
/// What the filter does with a syscall the table does not list.
pub const DEFAULT_ACTION: Action = Action::Errno(DEFAULT_ERRNO);
/// The errno of a listed, forbidden syscall.
pub const DENY_ERRNO: i32 = EPERM;

const fn allow(name: &'static str, why: &'static str) -> Entry {
    Entry { name, rule: Rule::Allow, why }
}

const fn eperm(name: &'static str, why: &'static str) -> Entry {
    Entry { name, rule: Rule::Errno(DENY_ERRNO), why }
}

const fn errno(name: &'static str, errno: i32, why: &'static str) -> Entry {
    Entry { name, rule: Rule::Errno(errno), why }
}

const fn args(name: &'static str, rule: Rule, why: &'static str) -> Entry {
    Entry { name, rule, why }
}

// ---- argument filters -------------------------------------------------------------------

/// Every `CLONE_NEW*` flag. `CLONE_NEWTIME` (0x80) shares its bit with the exit-signal
/// field of clone(2) and the kernel ignores it there; a signal number with that bit is
/// invalid anyway, so denying it costs nothing.
pub const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u32;

const CLONE: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 0,
        name: "flags",
        mask: u32::MAX,
        test: Test::AnyBit(CLONE_NAMESPACE_FLAGS),
        then: Action::Errno(EPERM),
    }],
    otherwise: Action::Allow,
};

/// `SOCK_TYPE_MASK` in the kernel: the type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
pub const SOCK_TYPE_MASK: u32 = 0xf;
/// Obsolete packet-capture type on inet sockets; libc does not export it.
pub const SOCK_PACKET: u32 = 10;
const AF_UNIX: u32 = libc::AF_UNIX as u32;
const INET_FAMILIES: &[u32] = &[libc::AF_INET as u32, libc::AF_INET6 as u32];

/// `SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`: the policies cpu.max throttles.
pub const FAIR_SCHED_POLICIES: &[u32] = &[libc::SCHED_OTHER as u32, libc::SCHED_BATCH as u32, libc::SCHED_IDLE as u32];
/// May be OR'd into the policy; it only drops a policy on fork.
pub const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;

const SCHED_SETSCHEDULER: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 1,
        name: "policy",
        mask: !SCHED_RESET_ON_FORK,
        test: Test::In(FAIR_SCHED_POLICIES),
        then: Action::Allow,
    }],
    otherwise: Action::Errno(EPERM),
};

const SOCKET: Rule = Rule::Args {
    checks: &[
        ArgCheck { arg: 0, name: "domain", mask: u32::MAX, test: Test::In(&[AF_UNIX]), then: Action::Allow },
        ArgCheck {
            arg: 0,
            name: "domain",
            mask: u32::MAX,
            test: Test::NotIn(INET_FAMILIES),
            then: Action::Errno(EAFNOSUPPORT),
        },
        // Only AF_INET and AF_INET6 get here.
        ArgCheck {
            arg: 1,
            name: "type",
            mask: SOCK_TYPE_MASK,
            test: Test::In(&[libc::SOCK_RAW as u32, SOCK_PACKET]),
            then: Action::Errno(EPERM),
        },
        // TCP and UDP only (the threat model's list): no SCTP/DCCP/RDM types. The kernel's
        // own errno for a type it lacks, so programs fall back as they would on a host
        // without that protocol.
        ArgCheck {
            arg: 1,
            name: "type",
            mask: SOCK_TYPE_MASK,
            test: Test::NotIn(&[libc::SOCK_STREAM as u32, libc::SOCK_DGRAM as u32]),
            then: Action::Errno(ESOCKTNOSUPPORT),
        },
        // Stream and datagram sockets name their protocol in `protocol`: MPTCP (262),
        // UDP-Lite (136), SMC over inet (256), ICMP and ICMPv6 ping sockets, L2TP... are
        // refused as the kernel refuses a protocol it does not have (Go and curl fall back
        // to TCP on EPROTONOSUPPORT). A mismatched pair (stream + UDP) gets the kernel's
        // own EPROTONOSUPPORT.
        ArgCheck {
            arg: 2,
            name: "protocol",
            mask: u32::MAX,
            test: Test::NotIn(INET_PROTOCOLS),
            then: Action::Errno(EPROTONOSUPPORT),
        },
    ],
    otherwise: Action::Allow,
};

/// `protocol` values an inet socket may name: the default for its type, TCP, UDP.
const INET_PROTOCOLS: &[u32] = &[0, libc::IPPROTO_TCP as u32, libc::IPPROTO_UDP as u32];

const SOCKETPAIR: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 0,
        name: "domain",
        mask: u32::MAX,
        test: Test::NotIn(&[AF_UNIX]),
        then: Action::Errno(EAFNOSUPPORT),
    }],
    otherwise: Action::Allow,
};

/// Terminal ioctls that inject input into, or drive, the controlling terminal.
pub const TERMINAL_INJECTION_IOCTLS: &[u32] = &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

/// The ioctl type byte of btrfs (`BTRFS_IOCTL_MAGIC`), in place within a request code.
pub const BTRFS_IOCTL_TYPE: u32 = 0x94 << 8;

const IOCTL: Rule = Rule::Args {
    checks: &[
        ArgCheck {
            arg: 1,
            name: "request",
            mask: u32::MAX,
            test: Test::In(TERMINAL_INJECTION_IOCTLS),
            then: Action::Errno(EPERM),
        },
        // Disk-backed layers and volumes are btrfs subvolumes capped by their quota group;
        // a subvolume created or snapshotted inside one gets a quota group of its own,
        // uncapped, so these ioctls would escape the disk cap (RES-03). The whole type is
        // refused: it also holds FICLONE/FIDEDUPERANGE, and cp falls back to copying.
        ArgCheck {
            arg: 1,
            name: "request",
            mask: 0xff00,
            test: Test::In(&[BTRFS_IOCTL_TYPE]),
            then: Action::Errno(EPERM),
        },
    ],
    otherwise: Action::Allow,
};

/// Docker's set: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff
/// (query the current persona without changing it).
pub const ALLOWED_PERSONAS: &[u32] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const PERSONALITY: Rule = Rule::Args {
    checks: &[ArgCheck {
        arg: 0,
        name: "persona",
        mask: u32::MAX,
        test: Test::In(ALLOWED_PERSONAS),
        then: Action::Allow,
    }],
    otherwise: Action::Errno(EPERM),
};

/// mknod(2) also makes FIFOs and sockets (mkfifo is mknodat underneath); only device nodes
/// are refused. `mode` is a `umode_t` (16 bits), so masking the file-type bits is exact.
const fn device_nodes(mode_arg: u8) -> ArgCheck {
    ArgCheck {
        arg: mode_arg,
        name: "mode",
        mask: libc::S_IFMT,
        test: Test::In(&[libc::S_IFCHR, libc::S_IFBLK]),
        then: Action::Errno(EPERM),
    }
}

/// Setuid and setgid bits. A file the sandbox creates in a writable bind lives on the host
/// (in root mode, idmapped to the directory's owner, possibly root), where `nosuid` no
/// longer applies: a setuid bit set inside would make a host setuid binary (FS-15). So
/// no call may set them. `mode` is a `umode_t`: the low 32 bits are exact.
pub const SETID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

const fn setid_bits(mode_arg: u8) -> ArgCheck {
    ArgCheck { arg: mode_arg, name: "mode", mask: u32::MAX, test: Test::AnyBit(SETID_BITS), then: Action::Errno(EPERM) }
}

/// The open flags that make `mode` matter (O_CREAT, and __O_TMPFILE, part of O_TMPFILE).
const CREATING: u32 = (libc::O_CREAT | libc::O_TMPFILE & !libc::O_DIRECTORY) as u32;

/// Opening without creating: the mode argument is ignored (and may be garbage), so allow.
const fn not_creating(flags_arg: u8) -> ArgCheck {
    ArgCheck { arg: flags_arg, name: "flags", mask: CREATING, test: Test::In(&[0]), then: Action::Allow }
}

const CHMOD: Rule = Rule::Args { checks: &[setid_bits(1)], otherwise: Action::Allow };
const FCHMODAT: Rule = Rule::Args { checks: &[setid_bits(2)], otherwise: Action::Allow };

/// A build step's chmod with setid bits: returns 0 and leaves the mode as it was.
const fn setid_bits_skipped(mode_arg: u8) -> ArgCheck {
    ArgCheck { arg: mode_arg, name: "mode", mask: u32::MAX, test: Test::AnyBit(SETID_BITS), then: Action::Skip }
}
const CHMOD_BUILD: Rule = Rule::Args { checks: &[setid_bits_skipped(1)], otherwise: Action::Allow };
const FCHMODAT_BUILD: Rule = Rule::Args { checks: &[setid_bits_skipped(2)], otherwise: Action::Allow };

/// What a template build's RUN step runs under instead of [`SANDBOX`]'s entry of the same
/// name: a chmod that sets setuid/setgid bits succeeds without setting them. Package
/// scripts set them (fontconfig's `chmod 2775 /usr/local/share/fonts`; `dpkg` installing
/// `passwd` or `sudo`), and an EPERM fails the install; the layer the step makes would
/// lose the bits anyway (the unpacker clears them, docs/images.md), so no setid file exists
/// on the host at any time (FS-15 holds). Only the chmod family: for open, creat and mknod
/// a faked 0 would be a descriptor or a file that does not exist, so those keep EPERM.
pub const BUILD_STEP_OVERRIDES: &[Entry] = &[
    args(
        "chmod",
        CHMOD_BUILD,
        "build steps: setuid/setgid bits dropped, the call succeeds (FS-15: no setid file on the host)",
    ),
    args("fchmod", CHMOD_BUILD, "build steps: setuid/setgid bits dropped, the call succeeds (FS-15)"),
    args("fchmodat", FCHMODAT_BUILD, "build steps: setuid/setgid bits dropped, the call succeeds (FS-15)"),
    args("fchmodat2", FCHMODAT_BUILD, "build steps: setuid/setgid bits dropped, the call succeeds (FS-15)"),
];
const OPEN: Rule = Rule::Args { checks: &[not_creating(1), setid_bits(2)], otherwise: Action::Allow };
const OPENAT: Rule = Rule::Args { checks: &[not_creating(2), setid_bits(3)], otherwise: Action::Allow };
const CREAT: Rule = Rule::Args { checks: &[setid_bits(1)], otherwise: Action::Allow };

const MKNOD: Rule = Rule::Args { checks: &[device_nodes(1), setid_bits(1)], otherwise: Action::Allow };

const MKNODAT: Rule = Rule::Args { checks: &[device_nodes(2), setid_bits(2)], otherwise: Action::Allow };

// ---- the table --------------------------------------------------------------------------

/// The profile for every process inside a sandbox.
#[rustfmt::skip]
pub const SANDBOX: &[Entry] = &[
    // Files and directories.
    allow("read", "file I/O"),
    allow("write", "file I/O"),
    args("open", OPEN, "file I/O; creating setuid/setgid files refused (FS-15)"),
    args("openat", OPENAT, "file I/O; creating setuid/setgid files refused (FS-15)"),
    errno("openat2", ENOSYS, "its mode sits in a struct the filter cannot read (FS-15); libc falls back to openat"),
    args("creat", CREAT, "file I/O; creating setuid/setgid files refused (FS-15)"),
    allow("close", "file I/O"),
    allow("close_range", "file I/O"),
    allow("pread64", "file I/O"),
    allow("pwrite64", "file I/O"),
    allow("readv", "file I/O"),
    allow("writev", "file I/O"),
    allow("preadv", "file I/O"),
    allow("pwritev", "file I/O"),
    allow("preadv2", "file I/O"),
    allow("pwritev2", "file I/O"),
    allow("lseek", "file I/O"),
    allow("stat", "file metadata"),
    allow("fstat", "file metadata"),
    allow("lstat", "file metadata"),
    allow("newfstatat", "file metadata"),
    allow("statx", "file metadata"),
    allow("statfs", "file metadata"),
    allow("fstatfs", "file metadata"),
    allow("access", "file metadata"),
    allow("faccessat", "file metadata"),
    allow("faccessat2", "file metadata"),
    allow("readlink", "file metadata"),
    allow("readlinkat", "file metadata"),
    allow("getdents", "directory listing"),
    allow("getdents64", "directory listing"),
    allow("getcwd", "working directory"),
    allow("chdir", "working directory"),
    allow("fchdir", "working directory"),
    allow("rename", "namespace edits inside the sandbox's own tree"),
    allow("renameat", "namespace edits inside the sandbox's own tree"),
    allow("renameat2", "namespace edits inside the sandbox's own tree"),
    allow("mkdir", "namespace edits inside the sandbox's own tree"),
    allow("mkdirat", "namespace edits inside the sandbox's own tree"),
    allow("rmdir", "namespace edits inside the sandbox's own tree"),
    allow("link", "namespace edits inside the sandbox's own tree"),
    allow("linkat", "namespace edits inside the sandbox's own tree"),
    allow("unlink", "namespace edits inside the sandbox's own tree"),
    allow("unlinkat", "namespace edits inside the sandbox's own tree"),
    allow("symlink", "namespace edits inside the sandbox's own tree"),
    allow("symlinkat", "namespace edits inside the sandbox's own tree"),
    args("mknod", MKNOD, "FIFOs and sockets; device nodes (FS-06) and setuid/setgid bits (FS-15) refused"),
    args("mknodat", MKNODAT, "FIFOs and sockets; device nodes (FS-06) and setuid/setgid bits (FS-15) refused"),
    args("chmod", CHMOD, "permissions; setuid/setgid bits refused: they would be live on the host side of a bind (FS-15)"),
    args("fchmod", CHMOD, "permissions; setuid/setgid bits refused: they would be live on the host side of a bind (FS-15)"),
    args("fchmodat", FCHMODAT, "permissions; setuid/setgid bits refused: they would be live on the host side of a bind (FS-15)"),
    args("fchmodat2", FCHMODAT, "permissions (lchmod, AT_SYMLINK_NOFOLLOW); setuid/setgid bits refused (FS-15)"),
    allow("chown", "ownership; needs CAP_CHOWN beyond the caller's own ids"),
    allow("fchown", "ownership; needs CAP_CHOWN beyond the caller's own ids"),
    allow("lchown", "ownership; needs CAP_CHOWN beyond the caller's own ids"),
    allow("fchownat", "ownership; needs CAP_CHOWN beyond the caller's own ids"),
    allow("umask", "file creation mask"),
    allow("truncate", "file size; capped by the disk quota (RES-03)"),
    allow("ftruncate", "file size; capped by the disk quota (RES-03)"),
    allow("fallocate", "file size; capped by the disk quota (RES-03)"),
    allow("utime", "timestamps"),
    allow("utimes", "timestamps"),
    allow("futimesat", "timestamps"),
    allow("utimensat", "timestamps"),
    allow("fsync", "durability"),
    allow("fdatasync", "durability"),
    allow("sync", "durability"),
    allow("syncfs", "durability"),
    allow("sync_file_range", "durability"),
    allow("readahead", "page-cache hints"),
    allow("fadvise64", "page-cache hints"),
    allow("flock", "advisory locks"),
    allow("fcntl", "descriptor flags and record locks"),
    allow("dup", "descriptors"),
    allow("dup2", "descriptors"),
    allow("dup3", "descriptors"),
    allow("pipe", "pipes"),
    allow("pipe2", "pipes"),
    allow("sendfile", "in-kernel copies between the caller's own descriptors"),
    allow("splice", "in-kernel copies between the caller's own descriptors"),
    allow("tee", "in-kernel copies between the caller's own descriptors"),
    allow("vmsplice", "in-kernel copies between the caller's own descriptors"),
    allow("copy_file_range", "in-kernel copies between the caller's own descriptors"),
    args("ioctl", IOCTL, "TIOCSTI/TIOCLINUX refused: terminal injection (CVE-2017-5226); btrfs ioctls refused: nested subvolumes escape the disk cap (RES-03)"),
    allow("setxattr", "extended attributes; trusted.* and security.* need capabilities"),
    allow("lsetxattr", "extended attributes"),
    allow("fsetxattr", "extended attributes"),
    allow("getxattr", "extended attributes"),
    allow("lgetxattr", "extended attributes"),
    allow("fgetxattr", "extended attributes"),
    allow("listxattr", "extended attributes"),
    allow("llistxattr", "extended attributes"),
    allow("flistxattr", "extended attributes"),
    allow("removexattr", "extended attributes"),
    allow("lremovexattr", "extended attributes"),
    allow("fremovexattr", "extended attributes"),
    // Memory.
    allow("brk", "memory"),
    allow("mmap", "memory"),
    allow("munmap", "memory"),
    allow("mprotect", "memory"),
    allow("mremap", "memory"),
    allow("madvise", "memory"),
    allow("msync", "memory"),
    allow("mincore", "memory"),
    allow("remap_file_pages", "memory (emulated with mmap since 4.0)"),
    allow("mlock", "memory; bounded by RLIMIT_MEMLOCK and the memory cgroup"),
    allow("mlock2", "memory; bounded by RLIMIT_MEMLOCK and the memory cgroup"),
    allow("munlock", "memory"),
    allow("mlockall", "memory; bounded by RLIMIT_MEMLOCK and the memory cgroup"),
    allow("munlockall", "memory"),
    allow("memfd_create", "anonymous files (JITs, python multiprocessing)"),
    allow("membarrier", "memory ordering (JITs, liburcu)"),
    allow("pkey_mprotect", "memory protection keys"),
    allow("pkey_alloc", "memory protection keys"),
    allow("pkey_free", "memory protection keys"),
    allow("map_shadow_stack", "CET shadow stacks (glibc with SHSTK)"),
    allow("mseal", "only restricts the caller's own mappings"),
    // Processes and threads.
    args("clone", CLONE, "namespace flags refused (PR-05, CVE-2022-0185)"),
    errno("clone3", ENOSYS, "flags sit in memory a filter cannot read; libc falls back to clone"),
    allow("fork", "processes; capped by the pids cgroup (RES-01)"),
    allow("vfork", "processes; capped by the pids cgroup (RES-01)"),
    allow("execve", "processes; NoNewPrivs holds across exec"),
    allow("execveat", "processes; NoNewPrivs holds across exec"),
    allow("exit", "processes"),
    allow("exit_group", "processes"),
    allow("wait4", "processes"),
    allow("waitid", "processes"),
    allow("getpid", "identity"),
    allow("getppid", "identity"),
    allow("gettid", "identity"),
    allow("set_tid_address", "threads"),
    allow("set_robust_list", "threads"),
    allow("get_robust_list", "threads; other tasks need ptrace access"),
    allow("rseq", "restartable sequences (glibc registers one per thread)"),
    allow("futex", "threads"),
    allow("futex_waitv", "threads (wine, games)"),
    allow("prctl", "process attributes; the dangerous options need capabilities"),
    allow("arch_prctl", "thread-local storage"),
    args("personality", PERSONALITY, "Docker's personas only; others weaken ASLR or NX"),
    allow("seccomp", "only adds filters"),
    allow("landlock_create_ruleset", "only restricts the caller"),
    allow("landlock_add_rule", "only restricts the caller"),
    allow("landlock_restrict_self", "only restricts the caller"),
    allow("prlimit64", "limits; raising hard limits needs CAP_SYS_RESOURCE"),
    allow("getrlimit", "limits"),
    allow("setrlimit", "limits; raising hard limits needs CAP_SYS_RESOURCE"),
    allow("getrusage", "accounting"),
    allow("times", "accounting"),
    allow("getpriority", "scheduling"),
    allow("setpriority", "scheduling; raising priority needs CAP_SYS_NICE"),
    allow("ioprio_get", "scheduling"),
    allow("ioprio_set", "scheduling; the realtime class needs capabilities"),
    allow("sched_yield", "scheduling"),
    allow("sched_getaffinity", "scheduling"),
    allow("sched_setaffinity", "pins threads to CPUs; CPU time stays capped by the cgroup (RES-06)"),
    allow("sched_getparam", "scheduling"),
    allow("sched_getscheduler", "scheduling"),
    allow("sched_getattr", "scheduling"),
    allow("sched_get_priority_max", "scheduling"),
    allow("sched_get_priority_min", "scheduling"),
    allow("sched_rr_get_interval", "scheduling"),
    eperm("sched_setparam", "realtime policies escape cpu.max throttling (RES-06)"),
    args(
        "sched_setscheduler",
        SCHED_SETSCHEDULER,
        "realtime policies escape cpu.max throttling (RES-06); the fair ones are allowed: libzmq (Jupyter \
         kernels) sets its threads' own SCHED_OTHER and aborts on EPERM",
    ),
    eperm("sched_setattr", "realtime and deadline policies escape cpu.max throttling (RES-06)"),
    allow("getpgid", "sessions and process groups"),
    allow("setpgid", "sessions and process groups"),
    allow("getpgrp", "sessions and process groups"),
    allow("getsid", "sessions and process groups"),
    allow("setsid", "sessions and process groups"),
    // Credentials: changing ids needs CAP_SETUID/CAP_SETGID, which no sandbox holds.
    allow("getuid", "credentials"),
    allow("geteuid", "credentials"),
    allow("getresuid", "credentials"),
    allow("getgid", "credentials"),
    allow("getegid", "credentials"),
    allow("getresgid", "credentials"),
    allow("getgroups", "credentials"),
    allow("setuid", "credentials; harmless without CAP_SETUID"),
    allow("setreuid", "credentials; harmless without CAP_SETUID"),
    allow("setresuid", "credentials; harmless without CAP_SETUID"),
    allow("setfsuid", "credentials; harmless without CAP_SETUID"),
    allow("setgid", "credentials; harmless without CAP_SETGID"),
    allow("setregid", "credentials; harmless without CAP_SETGID"),
    allow("setresgid", "credentials; harmless without CAP_SETGID"),
    allow("setfsgid", "credentials; harmless without CAP_SETGID"),
    allow("setgroups", "credentials; harmless without CAP_SETGID"),
    allow("capget", "reading capabilities; all sets are empty (PR-03)"),
    // Signals. The pid namespace hides every process outside the sandbox (PR-02).
    allow("rt_sigaction", "signals"),
    allow("rt_sigprocmask", "signals"),
    allow("rt_sigreturn", "signals"),
    allow("rt_sigpending", "signals"),
    allow("rt_sigtimedwait", "signals"),
    allow("rt_sigsuspend", "signals"),
    allow("rt_sigqueueinfo", "signals; sandbox pids only (PR-02)"),
    allow("rt_tgsigqueueinfo", "signals; sandbox pids only (PR-02)"),
    allow("sigaltstack", "signals"),
    allow("kill", "signals; sandbox pids only (PR-02)"),
    allow("tkill", "signals; sandbox pids only (PR-02)"),
    allow("tgkill", "signals; sandbox pids only (PR-02)"),
    allow("pidfd_open", "process handles; sandbox pids only (PR-02)"),
    allow("pidfd_send_signal", "signals; sandbox pids only (PR-02)"),
    allow("pause", "signals"),
    allow("restart_syscall", "signals"),
    // Time.
    allow("clock_gettime", "time"),
    allow("clock_getres", "time"),
    allow("clock_nanosleep", "time"),
    allow("nanosleep", "time"),
    allow("gettimeofday", "time"),
    allow("time", "time"),
    allow("alarm", "timers"),
    allow("getitimer", "timers"),
    allow("setitimer", "timers"),
    allow("timer_create", "timers"),
    allow("timer_settime", "timers"),
    allow("timer_gettime", "timers"),
    allow("timer_getoverrun", "timers"),
    allow("timer_delete", "timers"),
    // Waiting on descriptors.
    allow("poll", "event loops"),
    allow("ppoll", "event loops"),
    allow("select", "event loops"),
    allow("pselect6", "event loops"),
    allow("epoll_create", "event loops"),
    allow("epoll_create1", "event loops"),
    allow("epoll_ctl", "event loops"),
    allow("epoll_wait", "event loops"),
    allow("epoll_pwait", "event loops"),
    allow("epoll_pwait2", "event loops"),
    allow("eventfd", "event loops"),
    allow("eventfd2", "event loops"),
    allow("signalfd", "event loops"),
    allow("signalfd4", "event loops"),
    allow("timerfd_create", "event loops"),
    allow("timerfd_settime", "event loops"),
    allow("timerfd_gettime", "event loops"),
    allow("inotify_init", "file watching (node, build tools); watches capped (RES-05)"),
    allow("inotify_init1", "file watching (node, build tools); watches capped (RES-05)"),
    allow("inotify_add_watch", "file watching (node, build tools); watches capped (RES-05)"),
    allow("inotify_rm_watch", "file watching"),
    // Native asynchronous I/O (libaio: databases, qemu-img).
    allow("io_setup", "Linux AIO"),
    allow("io_destroy", "Linux AIO"),
    allow("io_submit", "Linux AIO"),
    allow("io_cancel", "Linux AIO"),
    allow("io_getevents", "Linux AIO"),
    allow("io_pgetevents", "Linux AIO"),
    // Inter-process communication; the IPC namespace is private to the sandbox (LK-04).
    allow("shmget", "SysV IPC, private namespace"),
    allow("shmat", "SysV IPC, private namespace"),
    allow("shmdt", "SysV IPC, private namespace"),
    allow("shmctl", "SysV IPC, private namespace"),
    allow("semget", "SysV IPC, private namespace"),
    allow("semop", "SysV IPC, private namespace"),
    allow("semtimedop", "SysV IPC, private namespace"),
    allow("semctl", "SysV IPC, private namespace"),
    allow("msgget", "SysV IPC, private namespace"),
    allow("msgsnd", "SysV IPC, private namespace"),
    allow("msgrcv", "SysV IPC, private namespace"),
    allow("msgctl", "SysV IPC, private namespace"),
    allow("mq_open", "POSIX message queues, private namespace"),
    allow("mq_unlink", "POSIX message queues, private namespace"),
    allow("mq_timedsend", "POSIX message queues, private namespace"),
    allow("mq_timedreceive", "POSIX message queues, private namespace"),
    allow("mq_notify", "POSIX message queues, private namespace"),
    allow("mq_getsetattr", "POSIX message queues, private namespace"),
    // Sockets: families and types are filtered at creation; the network namespace and the
    // gateway decide what a socket can reach (NET-*).
    args("socket", SOCKET, "unix, and inet/inet6 TCP and UDP only (KS-02); no raw or packet (NET-12)"),
    args("socketpair", SOCKETPAIR, "unix only (KS-02)"),
    allow("connect", "sockets"),
    allow("accept", "sockets"),
    allow("accept4", "sockets"),
    allow("bind", "sockets"),
    allow("listen", "sockets"),
    allow("shutdown", "sockets"),
    allow("sendto", "sockets"),
    allow("recvfrom", "sockets"),
    allow("sendmsg", "sockets"),
    allow("recvmsg", "sockets"),
    allow("sendmmsg", "sockets"),
    allow("recvmmsg", "sockets"),
    allow("getsockname", "sockets"),
    allow("getpeername", "sockets"),
    allow("setsockopt", "sockets"),
    allow("getsockopt", "sockets"),
    // System information.
    allow("uname", "system information; the UTS namespace is private (LK-03)"),
    allow("sysinfo", "system information"),
    allow("getcpu", "system information"),
    allow("getrandom", "randomness"),
    // ---- explicit denials -------------------------------------------------------------
    eperm("mount", "FS-03: mounts are the runtime's job"),
    eperm("umount2", "FS-03: unmounting would expose what a mount hides"),
    eperm("pivot_root", "FS-03"),
    eperm("chroot", "FS-03: chroot double-chdir escapes"),
    eperm("fsopen", "FS-04: new mount API (CVE-2021-41133, CVE-2022-0185)"),
    eperm("fsconfig", "FS-04: new mount API"),
    eperm("fsmount", "FS-04: new mount API"),
    eperm("fspick", "FS-04: new mount API"),
    eperm("open_tree", "FS-04: new mount API"),
    eperm("open_tree_attr", "FS-04: new mount API"),
    eperm("move_mount", "FS-04: new mount API"),
    eperm("mount_setattr", "FS-04: new mount API"),
    eperm("statmount", "FS-04: mount topology; nothing inside needs it"),
    eperm("listmount", "FS-04: mount topology; nothing inside needs it"),
    eperm("listns", "LK-04: enumerates namespaces"),
    eperm("open_by_handle_at", "FS-05: file handles bypass path walks (shocker)"),
    eperm("name_to_handle_at", "FS-05: file handles"),
    eperm("quotactl", "FS-07: filesystem administration"),
    eperm("quotactl_fd", "FS-07: filesystem administration"),
    eperm("swapon", "KS-01: system administration"),
    eperm("swapoff", "KS-01: system administration"),
    eperm("reboot", "KS-01: system administration"),
    eperm("acct", "KS-01: system administration"),
    eperm("vhangup", "KS-01: system administration"),
    eperm("sethostname", "KS-04: host identity"),
    eperm("setdomainname", "KS-04: host identity"),
    eperm("settimeofday", "KS-04: host clock"),
    eperm("clock_settime", "KS-04: host clock"),
    eperm("clock_adjtime", "KS-04: host clock"),
    eperm("adjtimex", "KS-04: host clock"),
    eperm("syslog", "KS-03: kernel log"),
    eperm("init_module", "KS-01: kernel modules"),
    eperm("finit_module", "KS-01: kernel modules"),
    eperm("delete_module", "KS-01: kernel modules"),
    eperm("create_module", "KS-01: kernel modules (removed in 2.6)"),
    eperm("get_kernel_syms", "KS-01: kernel modules (removed in 2.6)"),
    eperm("query_module", "KS-01: kernel modules (removed in 2.6)"),
    eperm("kexec_load", "KS-01: replaces the kernel"),
    eperm("kexec_file_load", "KS-01: replaces the kernel"),
    eperm("ptrace", "PR-01: inspects and controls other processes"),
    eperm("process_vm_readv", "PR-01: reads another process's memory"),
    eperm("process_vm_writev", "PR-01: writes another process's memory"),
    eperm("process_madvise", "PR-01: acts on another process's memory"),
    eperm("kcmp", "PR-01: compares kernel objects across processes (KASLR oracle)"),
    eperm("pidfd_getfd", "PR-01: steals another process's descriptors"),
    eperm("capset", "PR-03: capabilities stay empty"),
    eperm("unshare", "PR-05: new namespaces (CVE-2022-0185, CVE-2024-1086)"),
    eperm("setns", "PR-05: joining namespaces"),
    eperm("keyctl", "PR-06: keyrings are not namespaced"),
    eperm("add_key", "PR-06: keyrings are not namespaced"),
    eperm("request_key", "PR-06: keyrings are not namespaced"),
    eperm("bpf", "PR-07: eBPF"),
    eperm("perf_event_open", "PR-07: perf"),
    eperm("userfaultfd", "PR-07: stalls the kernel mid-copy (race exploits)"),
    eperm("io_uring_setup", "PR-07: io_uring bypasses this filter"),
    eperm("io_uring_enter", "PR-07: io_uring bypasses this filter"),
    eperm("io_uring_register", "PR-07: io_uring bypasses this filter"),
    eperm("fanotify_init", "PR-07: filesystem-wide monitoring"),
    eperm("fanotify_mark", "PR-07: filesystem-wide monitoring"),
    eperm("lookup_dcookie", "KS-01: profiling interface"),
    eperm("iopl", "KS-01: raw I/O ports"),
    eperm("ioperm", "KS-01: raw I/O ports"),
    eperm("modify_ldt", "KS-01: segment descriptors (CVE-2015-5157 class)"),
    eperm("uselib", "KS-01: obsolete a.out loader"),
    eperm("ustat", "KS-01: obsolete"),
    eperm("sysfs", "KS-01: obsolete"),
    eperm("_sysctl", "KS-01: obsolete sysctl interface"),
    eperm("nfsservctl", "KS-01: obsolete"),
    eperm("mbind", "KS-01: NUMA policy is the host's"),
    eperm("set_mempolicy", "KS-01: NUMA policy is the host's"),
    eperm("get_mempolicy", "KS-01: NUMA policy is the host's"),
    eperm("set_mempolicy_home_node", "KS-01: NUMA policy is the host's"),
    eperm("migrate_pages", "KS-01: NUMA placement is the host's"),
    eperm("move_pages", "KS-01: NUMA placement is the host's"),
    eperm("lsm_get_self_attr", "KS-01: LSM attributes are set by the runtime"),
    eperm("lsm_set_self_attr", "KS-01: LSM attributes are set by the runtime"),
    eperm("lsm_list_modules", "KS-01: LSM attributes are set by the runtime"),
];
