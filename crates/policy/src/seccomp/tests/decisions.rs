//! What the sandbox filter decides for the calls that matter.

use libc::{
    AF_ALG, AF_INET, AF_INET6, AF_KEY, AF_NETLINK, AF_PACKET, AF_UNIX, AF_UNSPEC, CLONE_CHILD_CLEARTID, CLONE_FILES,
    CLONE_FS, CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWUSER,
    CLONE_NEWUTS, CLONE_PARENT_SETTID, CLONE_SETTLS, CLONE_SIGHAND, CLONE_SYSVSEM, CLONE_THREAD, CLONE_VFORK, CLONE_VM,
    SIGCHLD, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_RAW, SOCK_SEQPACKET, SOCK_STREAM, S_IFBLK, S_IFCHR, S_IFIFO,
    S_IFREG, S_IFSOCK,
};

use super::super::syscalls::{AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use super::{verdict, verdict_raw, ALLOW, EAFNOSUPPORT, ENOSYS, EPERM, EPROTONOSUPPORT, ESOCKTNOSUPPORT, KILL};
use crate::seccomp::NATIVE;

/// AF_VSOCK; musl's libc bindings lack it.
const AF_VSOCK: i32 = 40;
/// Linux's obsolete inet packet-capture type.
const SOCK_PACKET: i32 = 10;

fn u(value: i32) -> u64 {
    u64::from(value as u32)
}

#[test]
fn ordinary_calls_are_allowed() {
    for name in [
        "read",
        "write",
        "openat",
        "close",
        "newfstatat",
        "statx",
        "getdents64",
        "mmap",
        "mprotect",
        "munmap",
        "madvise",
        "mremap",
        "mlock",
        "memfd_create",
        "membarrier",
        "rseq",
        "map_shadow_stack",
        "futex",
        "futex_waitv",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "epoll_pwait",
        "ppoll",
        "pselect6",
        "eventfd2",
        "signalfd4",
        "timerfd_create",
        "inotify_init1",
        "pipe2",
        "shmget",
        "semop",
        "msgsnd",
        "wait4",
        "waitid",
        "execve",
        "execveat",
        "prctl",
        "prlimit64",
        "setuid",
        "setresgid",
        "getrandom",
        "sched_yield",
        "sched_getaffinity",
        "sched_setaffinity",
        "pidfd_open",
        "pidfd_send_signal",
        "kill",
        "tgkill",
        "capget",
        "close_range",
        "copy_file_range",
        "sendfile",
        "splice",
        "tee",
        "vmsplice",
        "fallocate",
        "flock",
        "fgetxattr",
        "setxattr",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
        "seccomp",
        "uname",
        "sysinfo",
        "times",
        "getcpu",
        "connect",
        "sendmsg",
        "recvmmsg",
        "mknodat",
        "fchmodat2",
        "exit_group",
        "getrlimit",
        "setrlimit",
    ] {
        assert_eq!(verdict(name, &[]), ALLOW, "{name}");
    }
}

#[test]
fn setuid_and_setgid_bits_are_refused() {
    let setuid = libc::S_ISUID as u64 | 0o755;
    let setgid = libc::S_ISGID as u64 | 0o755;
    let creat = libc::O_CREAT as u64 | libc::O_WRONLY as u64;
    for (name, args) in [
        ("fchmod", vec![3, setuid]),
        ("fchmodat", vec![3, 0, setgid]),
        ("fchmodat2", vec![3, 0, setuid]),
        ("openat", vec![3, 0, creat, setuid]),
        ("mknodat", vec![3, 0, libc::S_IFREG as u64 | setuid]),
    ] {
        assert_eq!(verdict(name, &args), EPERM, "{name} with setid bits");
    }
    // Plain modes pass; an open without O_CREAT ignores (possibly garbage) mode bits.
    assert_eq!(verdict("fchmod", &[3, 0o4_0755 & 0o777]), ALLOW);
    assert_eq!(verdict("openat", &[3, 0, creat, 0o644]), ALLOW);
    assert_eq!(verdict("openat", &[3, 0, libc::O_RDONLY as u64, setuid]), ALLOW);
    assert_eq!(verdict("openat2", &[]), ENOSYS);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn legacy_x86_64_calls_are_allowed() {
    for name in ["open", "stat", "fork", "vfork", "arch_prctl", "pipe", "poll", "select", "mknod"] {
        assert_eq!(verdict(name, &[]), ALLOW, "{name}");
    }
}

/// Every syscall on Docker's default deny list that exists on x86_64 (KS-01). `clone` and
/// `personality` are argument-filtered and tested below; `stime`, `umount`, `vm86` and
/// `vm86old` do not exist on x86_64.
#[cfg(target_arch = "x86_64")]
#[test]
fn docker_blocked_calls_fail_with_eperm() {
    for name in [
        "acct",
        "add_key",
        "adjtimex",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "perf_event_open",
        "pivot_root",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "query_module",
        "quotactl",
        "reboot",
        "request_key",
        "set_mempolicy",
        "setns",
        "settimeofday",
        "swapon",
        "swapoff",
        "sysfs",
        "_sysctl",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
    ] {
        assert_eq!(verdict(name, &[]), EPERM, "{name}");
    }
    for absent in ["stime", "umount", "vm86", "vm86old", "socketcall"] {
        assert_eq!(NATIVE.nr(absent), None, "{absent} is not an x86_64 syscall");
    }
}

/// The SECURITY.md probes a filter answers, by catalogue ID.
#[test]
fn catalogue_probes_fail_with_eperm() {
    let probes: &[(&str, &[&str])] = &[
        ("FS-03", &["mount", "umount2", "pivot_root", "chroot"]),
        (
            "FS-04",
            &["fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "open_tree_attr", "move_mount", "mount_setattr"],
        ),
        ("FS-05", &["open_by_handle_at"]),
        ("PR-01", &["ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd"]),
        ("PR-03", &["capset"]),
        ("PR-05", &["unshare", "setns"]),
        ("PR-06", &["keyctl", "add_key", "request_key"]),
        ("PR-07", &["bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register"]),
        ("KS-03", &["syslog"]),
        ("KS-04", &["sethostname", "setdomainname", "settimeofday", "clock_settime"]),
        (
            "other",
            &[
                "listmount",
                "statmount",
                "listns",
                "fanotify_init",
                "lsm_set_self_attr",
                "lsm_get_self_attr",
                "lsm_list_modules",
                "set_mempolicy_home_node",
                "migrate_pages",
                "quotactl_fd",
                "vhangup",
            ],
        ),
    ];
    for (id, names) in probes {
        for name in *names {
            assert_eq!(verdict(name, &[]), EPERM, "{id}: {name}");
        }
    }
}

#[test]
fn clone_refuses_namespace_flags() {
    let sigchld = u(SIGCHLD);
    assert_eq!(verdict("clone", &[sigchld]), ALLOW, "fork via clone");
    let thread = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;
    assert_eq!(verdict("clone", &[u(thread)]), ALLOW, "pthread_create");
    assert_eq!(verdict("clone", &[u(CLONE_VM | CLONE_VFORK | SIGCHLD)]), ALLOW, "posix_spawn");
    for flag in [
        CLONE_NEWNS,
        CLONE_NEWUTS,
        CLONE_NEWIPC,
        CLONE_NEWUSER,
        CLONE_NEWPID,
        CLONE_NEWNET,
        CLONE_NEWCGROUP,
        CLONE_NEWTIME,
    ] {
        assert_eq!(verdict("clone", &[u(flag | SIGCHLD)]), EPERM, "{flag:#x}");
    }
    // The kernel uses only the low 32 bits of clone's flags.
    assert_eq!(verdict("clone", &[1 << 32 | sigchld]), ALLOW);
    assert_eq!(verdict("clone", &[0xffff_ffff_0000_0000 | u(CLONE_NEWUSER)]), EPERM);
}

#[test]
fn clone3_looks_unimplemented() {
    assert_eq!(verdict("clone3", &[]), ENOSYS);
}

#[test]
fn unknown_syscalls_look_unimplemented() {
    assert_eq!(verdict_raw(NATIVE.audit_arch, 999, &[]), ENOSYS);
    assert_eq!(verdict_raw(NATIVE.audit_arch, 471, &[]), ENOSYS, "the next new syscall");
    assert_eq!(verdict_raw(NATIVE.audit_arch, 0x3fff_ffff, &[]), ENOSYS);
}

#[test]
fn socket_families_and_types() {
    let cases = [
        (AF_UNIX, SOCK_STREAM, ALLOW),
        (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, ALLOW),
        (AF_UNIX, SOCK_SEQPACKET, ALLOW),
        (AF_INET, SOCK_STREAM, ALLOW),
        (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ALLOW),
        (AF_INET6, SOCK_DGRAM, ALLOW),
        (AF_INET, SOCK_RAW, EPERM),
        (AF_INET, SOCK_RAW | SOCK_CLOEXEC, EPERM),
        (AF_INET6, SOCK_RAW | SOCK_NONBLOCK, EPERM),
        (AF_INET, SOCK_PACKET, EPERM),
        (AF_INET6, SOCK_PACKET | SOCK_CLOEXEC, EPERM),
        (AF_NETLINK, SOCK_RAW, EAFNOSUPPORT),
        (AF_NETLINK, SOCK_DGRAM, EAFNOSUPPORT),
        (AF_PACKET, SOCK_RAW, EAFNOSUPPORT),
        (AF_KEY, SOCK_RAW, EAFNOSUPPORT),
        (AF_ALG, SOCK_SEQPACKET, EAFNOSUPPORT),
        (AF_VSOCK, SOCK_STREAM, EAFNOSUPPORT),
        (AF_UNSPEC, SOCK_STREAM, EAFNOSUPPORT),
    ];
    for (domain, kind, expected) in cases {
        assert_eq!(verdict("socket", &[u(domain), u(kind)]), expected, "socket({domain}, {kind:#x})");
    }
    // High halves are ignored by the kernel (int arguments) and by the filter alike.
    assert_eq!(verdict("socket", &[1 << 32 | u(AF_INET), u(SOCK_STREAM)]), ALLOW);
    assert_eq!(verdict("socket", &[u(AF_INET), 1 << 40 | u(SOCK_RAW)]), EPERM);
    assert_eq!(verdict("socket", &[1 << 32 | u(AF_NETLINK), 0]), EAFNOSUPPORT);
}

#[test]
fn inet_sockets_are_tcp_and_udp_only() {
    const IPPROTO_MPTCP: i32 = 262;
    const IPPROTO_SMC: i32 = 256;
    const IPPROTO_L2TP: i32 = 115;
    let cases = [
        (AF_INET, SOCK_STREAM, 0, ALLOW),
        (AF_INET, SOCK_STREAM, libc::IPPROTO_TCP, ALLOW),
        (AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, libc::IPPROTO_TCP, ALLOW),
        (AF_INET, SOCK_DGRAM, 0, ALLOW),
        (AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, libc::IPPROTO_UDP, ALLOW),
        (AF_INET, SOCK_STREAM, IPPROTO_MPTCP, EPROTONOSUPPORT),
        (AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_MPTCP, EPROTONOSUPPORT),
        (AF_INET, SOCK_DGRAM, libc::IPPROTO_UDPLITE, EPROTONOSUPPORT),
        (AF_INET6, SOCK_DGRAM, libc::IPPROTO_UDPLITE, EPROTONOSUPPORT),
        (AF_INET, SOCK_STREAM, libc::IPPROTO_SCTP, EPROTONOSUPPORT),
        (AF_INET, SOCK_STREAM, IPPROTO_SMC, EPROTONOSUPPORT),
        (AF_INET, SOCK_DGRAM, libc::IPPROTO_ICMP, EPROTONOSUPPORT),
        (AF_INET6, SOCK_DGRAM, libc::IPPROTO_ICMPV6, EPROTONOSUPPORT),
        (AF_INET, SOCK_DGRAM, IPPROTO_L2TP, EPROTONOSUPPORT),
        (AF_INET, SOCK_SEQPACKET, libc::IPPROTO_SCTP, ESOCKTNOSUPPORT),
        (AF_INET, SOCK_SEQPACKET, 0, ESOCKTNOSUPPORT),
        (AF_INET6, libc::SOCK_RDM, 0, ESOCKTNOSUPPORT),
        (AF_INET, 6, 33, ESOCKTNOSUPPORT), // SOCK_DCCP, IPPROTO_DCCP
        // Unix sockets keep every type; the kernel checks their protocol itself.
        (AF_UNIX, SOCK_SEQPACKET, 0, ALLOW),
    ];
    for (domain, kind, proto, expected) in cases {
        assert_eq!(
            verdict("socket", &[u(domain), u(kind), u(proto)]),
            expected,
            "socket({domain}, {kind:#x}, {proto})"
        );
    }
    // The kernel reads `protocol` as an int: bits above it cannot smuggle MPTCP past the
    // filter, nor can they make TCP look refused.
    assert_eq!(verdict("socket", &[u(AF_INET), u(SOCK_STREAM), 1 << 32 | u(IPPROTO_MPTCP)]), EPROTONOSUPPORT);
    assert_eq!(verdict("socket", &[u(AF_INET), u(SOCK_STREAM), 1 << 32 | u(libc::IPPROTO_TCP)]), ALLOW);
}

#[test]
fn socketpair_is_unix_only() {
    assert_eq!(verdict("socketpair", &[u(AF_UNIX), u(SOCK_STREAM)]), ALLOW);
    assert_eq!(verdict("socketpair", &[u(AF_INET), u(SOCK_STREAM)]), EAFNOSUPPORT);
    assert_eq!(verdict("socketpair", &[u(AF_NETLINK), u(SOCK_RAW)]), EAFNOSUPPORT);
}

#[test]
fn ioctl_refuses_terminal_injection() {
    // Request constants are c_ulong in libc's glibc bindings and c_int in its musl ones.
    let tiocsti = u64::from(libc::TIOCSTI as u32);
    let tioclinux = u64::from(libc::TIOCLINUX as u32);
    assert_eq!(tiocsti, 0x5412);
    assert_eq!(verdict("ioctl", &[0, tiocsti]), EPERM);
    assert_eq!(verdict("ioctl", &[0, tioclinux]), EPERM);
    // The kernel takes the request as unsigned int: high bits do not smuggle it through.
    assert_eq!(verdict("ioctl", &[0, 0x1_0000_5412]), EPERM);
    assert_eq!(verdict("ioctl", &[0, 0xffff_ffff_0000_541c]), EPERM);
    for ordinary in [libc::TCGETS, libc::TIOCGWINSZ, libc::FIONREAD, 0].map(|r| u64::from(r as u32)) {
        assert_eq!(verdict("ioctl", &[1, ordinary]), ALLOW, "{ordinary:#x}");
    }
}

#[test]
fn ioctl_refuses_btrfs_subvolume_calls() {
    // BTRFS_IOC_SUBVOL_CREATE, SNAP_CREATE_V2, SUBVOL_CREATE_V2, QGROUP_LIMIT, FICLONE.
    for request in [0x5000_940e_u64, 0x5000_9417, 0x5000_9418, 0x8030_942b, 0x4004_9409] {
        assert_eq!(verdict("ioctl", &[3, request]), EPERM, "{request:#x}");
        assert_eq!(verdict("ioctl", &[3, 0xffff_ffff_0000_0000 | request]), EPERM, "{request:#x} with high bits");
    }
    // Same number, other types: FS_IOC_GETFLAGS (type 'f'), TCGETS.
    for other in [0x8008_6601_u64, 0x5401, 0x8004_9500] {
        assert_eq!(verdict("ioctl", &[3, other]), ALLOW, "{other:#x}");
    }
}

#[test]
fn personality_allows_dockers_personas_only() {
    for persona in [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        assert_eq!(verdict("personality", &[persona]), ALLOW, "{persona:#x}");
    }
    for persona in [u(libc::ADDR_NO_RANDOMIZE), u(libc::READ_IMPLIES_EXEC), u(libc::MMAP_PAGE_ZERO), 0x0040_0008, 0x1] {
        assert_eq!(verdict("personality", &[persona]), EPERM, "{persona:#x}");
    }
}

#[test]
fn mknod_makes_fifos_but_not_devices() {
    let dev = |name: &str, mode_arg: usize, mode: u32| {
        let mut args = [0u64; 4];
        args[mode_arg] = u64::from(mode | 0o644);
        verdict(name, &args)
    };
    #[cfg(target_arch = "x86_64")]
    let calls = [("mknod", 1), ("mknodat", 2)];
    #[cfg(not(target_arch = "x86_64"))]
    let calls = [("mknodat", 2)];
    for (name, mode_arg) in calls {
        assert_eq!(dev(name, mode_arg, S_IFCHR), EPERM, "{name} char device");
        assert_eq!(dev(name, mode_arg, S_IFBLK), EPERM, "{name} block device");
        assert_eq!(dev(name, mode_arg, S_IFIFO), ALLOW, "{name} fifo");
        assert_eq!(dev(name, mode_arg, S_IFSOCK), ALLOW, "{name} socket");
        assert_eq!(dev(name, mode_arg, S_IFREG), ALLOW, "{name} regular file");
        assert_eq!(dev(name, mode_arg, 0), ALLOW, "{name} mode 0 is a regular file");
        assert_eq!(dev(name, mode_arg, 0x1_0000 | S_IFCHR), EPERM, "{name} umode_t truncation");
    }
}

#[test]
fn foreign_abis_are_killed() {
    let mount = super::nr("mount");
    for arch in [AUDIT_ARCH_I386, AUDIT_ARCH_ARM, 0, u32::MAX] {
        assert_eq!(verdict_raw(arch, 0, &[]), KILL, "arch {arch:#x}, nr 0");
        assert_eq!(verdict_raw(arch, mount, &[]), KILL, "arch {arch:#x}, mount");
    }
    let other = if NATIVE.audit_arch == AUDIT_ARCH_X86_64 { AUDIT_ARCH_AARCH64 } else { AUDIT_ARCH_X86_64 };
    assert_eq!(verdict_raw(other, 0, &[]), KILL);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_calls_are_killed() {
    const X32: u32 = 0x4000_0000;
    assert_eq!(verdict_raw(AUDIT_ARCH_X86_64, X32, &[]), KILL, "x32 read");
    assert_eq!(verdict_raw(AUDIT_ARCH_X86_64, X32 + 59, &[]), KILL, "x32 execve (common)");
    assert_eq!(verdict_raw(AUDIT_ARCH_X86_64, X32 + 520, &[]), KILL, "x32 execve");
    assert_eq!(verdict_raw(AUDIT_ARCH_X86_64, X32 + 165, &[]), KILL, "x32 mount");
    assert_eq!(verdict_raw(AUDIT_ARCH_X86_64, u32::MAX, &[]), KILL, "nr -1");
}

#[test]
fn sched_setscheduler_allows_the_fair_policies_only() {
    // libzmq's threads (every Jupyter kernel) set their own SCHED_OTHER and abort on EPERM.
    for policy in [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE] {
        assert_eq!(verdict("sched_setscheduler", &[0, u(policy)]), ALLOW, "policy {policy}");
        assert_eq!(verdict("sched_setscheduler", &[0, u(policy | 0x4000_0000)]), ALLOW, "{policy} reset-on-fork");
    }
    // Realtime and deadline policies escape cpu.max throttling (RES-06).
    for policy in [libc::SCHED_FIFO, libc::SCHED_RR, 6 /* SCHED_DEADLINE */, 7] {
        assert_eq!(verdict("sched_setscheduler", &[0, u(policy)]), EPERM, "policy {policy}");
        assert_eq!(verdict("sched_setscheduler", &[0, u(policy | 0x4000_0000)]), EPERM, "{policy} reset-on-fork");
    }
    assert_eq!(verdict("sched_setparam", &[0, 0]), EPERM);
    assert_eq!(verdict("sched_setattr", &[0, 0, 0]), EPERM);
}

/// A template build's RUN steps: a setid chmod returns 0 without running (the mode stays),
/// what would create a setid file still fails with EPERM, and every other call decides
/// exactly as in the sandbox's own filter.
#[test]
fn build_steps_skip_setid_chmods_and_change_nothing_else() {
    use crate::seccomp::interp::{run, SeccompData};
    let build = crate::seccomp::build_step_filter();
    let decide = |name: &str, args: &[u64]| {
        let mut data =
            SeccompData { nr: super::nr(name) as i32, arch: NATIVE.audit_arch, instruction_pointer: 0, args: [0; 6] };
        data.args[..args.len()].copy_from_slice(args);
        run(&build, &data).expect("the build-step filter runs")
    };
    let setgid = libc::S_ISGID as u64 | 0o775;
    let setuid = libc::S_ISUID as u64 | 0o755;
    let skipped = libc::SECCOMP_RET_ERRNO; // errno 0: returns 0, not run
    for (name, args) in
        [("fchmod", vec![3, setgid]), ("fchmodat", vec![3, 0, setuid]), ("fchmodat2", vec![3, 0, setgid, 0])]
    {
        assert_eq!(decide(name, &args), skipped, "{name}");
        assert_eq!(verdict(name, &args), EPERM, "{name} outside a build step");
    }
    assert_eq!(decide("fchmod", &[3, 0o755]), ALLOW);
    let creat = libc::O_CREAT as u64 | libc::O_WRONLY as u64;
    assert_eq!(decide("openat", &[3, 0, creat, setuid]), EPERM, "a faked 0 would be a descriptor");
    assert_eq!(decide("mknodat", &[3, 0, libc::S_IFREG as u64 | setuid]), EPERM);
    // Nothing else differs: the same decision for every other entry and its probes.
    let table = crate::seccomp::build_step_table();
    for (b, s) in table.iter().zip(crate::seccomp::SANDBOX) {
        assert_eq!(b.name, s.name);
        if crate::seccomp::rules::BUILD_STEP_OVERRIDES.iter().any(|o| o.name == b.name) {
            continue;
        }
        assert_eq!(b.rule, s.rule, "{}", b.name);
        let Some(number) = NATIVE.nr(b.name) else { continue };
        for args in super::probe_args(&s.rule) {
            let data = SeccompData { nr: number as i32, arch: NATIVE.audit_arch, instruction_pointer: 0, args };
            assert_eq!(run(&build, &data).unwrap(), verdict_raw(NATIVE.audit_arch, number, &args), "{}", b.name);
        }
    }
}
