//! Golden values and whole-table properties of the built-in profile.

use std::collections::BTreeSet;

use super::super::bpf::{prelude, ret_value, JA, JGE_K};
use super::super::interp::check;
use super::super::model::Rule;
use super::super::rules::{DEFAULT_ACTION, SANDBOX};
use super::super::{describe, SockFilter, MAX_INSNS, NATIVE};
use super::{filter, model, probe_args, verdict_raw, ENOSYS, KILL};

#[test]
fn sock_filter_matches_the_kernel_layout() {
    assert_eq!(std::mem::size_of::<SockFilter>(), 8);
    assert_eq!(std::mem::align_of::<SockFilter>(), 4);
}

#[test]
fn program_passes_the_kernel_checks_and_fits() {
    let prog = filter();
    check(prog).expect("the kernel would accept the filter");
    assert!(prog.len() <= MAX_INSNS, "{} instructions", prog.len());
    // Far below the limit, so the table can grow; a jump here means a compiler change.
    assert!(prog.len() <= 1024, "{} instructions", prog.len());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn program_starts_with_the_arch_and_x32_checks() {
    let insn = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    pretty_assertions::assert_eq!(
        filter()[..6],
        [
            insn(0x20, 0, 0, 4),           // ld  [4]: seccomp_data.arch
            insn(0x15, 1, 0, 0xc000_003e), // jeq AUDIT_ARCH_X86_64, +1
            insn(0x06, 0, 0, 0x8000_0000), // ret SECCOMP_RET_KILL_PROCESS
            insn(0x20, 0, 0, 0),           // ld  [0]: seccomp_data.nr
            insn(0x35, 0, 1, 0x4000_0000), // jge __X32_SYSCALL_BIT, +0, +1
            insn(0x06, 0, 0, 0x8000_0000), // ret SECCOMP_RET_KILL_PROCESS
        ]
    );
}

/// The dispatch is a search tree: no syscall needs more than a handful of comparisons.
#[test]
fn dispatch_depth_is_logarithmic() {
    let prog = filter();
    let dispatch_start = prelude(&NATIVE).len();
    let mut worst = 0;
    for nr in (0..600).chain(NATIVE.table.iter().map(|&(_, nr)| nr)) {
        // Follow the `jge`/`ja` tree until it reaches a rule.
        let mut pc = dispatch_start;
        let mut compares = 0;
        loop {
            let insn = prog[pc];
            match insn.code {
                JGE_K => {
                    compares += 1;
                    pc += 1 + usize::from(if nr >= insn.k { insn.jt } else { insn.jf });
                }
                JA => pc += 1 + insn.k as usize,
                _ => break,
            }
        }
        worst = worst.max(compares);
    }
    assert!(worst <= 10, "worst case {worst} comparisons");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn every_name_resolves_on_x86_64() {
    let missing: Vec<&str> = SANDBOX.iter().map(|e| e.name).filter(|name| NATIVE.nr(name).is_none()).collect();
    assert!(missing.is_empty(), "not x86_64 syscalls: {missing:?}");
}

#[test]
fn names_and_numbers_are_unique() {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for entry in SANDBOX {
        assert!(names.insert(entry.name), "`{}` is listed twice", entry.name);
        if let Some(nr) = NATIVE.nr(entry.name) {
            assert!(numbers.insert(nr), "`{}` shares number {nr}", entry.name);
        }
    }
    let mut table_numbers = BTreeSet::new();
    for &(name, nr) in NATIVE.table {
        assert!(table_numbers.insert(nr), "`{name}` shares number {nr} in the arch table");
    }
}

#[test]
fn every_entry_says_why_and_denials_cite_the_catalogue() {
    let cites_id = |why: &str| {
        why.as_bytes().windows(5).any(|w| {
            w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
                && w[2] == b'-'
                && w[3].is_ascii_digit()
                && w[4].is_ascii_digit()
        })
    };
    for entry in SANDBOX {
        assert!(!entry.why.trim().is_empty(), "`{}` has no reason", entry.name);
        if entry.rule == Rule::Errno(libc::EPERM) {
            assert!(cites_id(entry.why), "`{}`: cite a SECURITY.md ID", entry.name);
        }
    }
}

/// Every listed syscall decides as its rule says, for arguments covering every branch; the
/// dispatch tree reaches each one.
#[test]
fn compiled_decisions_match_the_table() {
    for entry in SANDBOX {
        let Some(nr) = NATIVE.nr(entry.name) else {
            continue;
        };
        for args in probe_args(&entry.rule) {
            assert_eq!(
                verdict_raw(NATIVE.audit_arch, nr, &args),
                ret_value(model(&entry.rule, &args)),
                "{}({args:#x?})",
                entry.name
            );
        }
    }
}

/// Every number the table does not list, up to well past the last syscall, gets ENOSYS.
#[test]
fn unlisted_numbers_get_the_default() {
    let listed: BTreeSet<u32> = SANDBOX.iter().filter_map(|e| NATIVE.nr(e.name)).collect();
    assert_eq!(ret_value(DEFAULT_ACTION), ENOSYS);
    for nr in (0..2048).chain([0x3fff_ffff]) {
        if !listed.contains(&nr) {
            assert_eq!(verdict_raw(NATIVE.audit_arch, nr, &[]), ENOSYS, "nr {nr}");
        }
    }
    #[cfg(target_arch = "x86_64")]
    for nr in [0x4000_0000u32, 0x4000_0200, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
        assert_eq!(verdict_raw(NATIVE.audit_arch, nr, &[]), KILL, "nr {nr:#x}");
    }
}

/// The x86_64 syscalls left to the default, for review: unimplemented stubs, the
/// 32-bit-only TLS calls, and recent calls libc does not need yet.
#[cfg(target_arch = "x86_64")]
#[test]
fn unlisted_x86_64_syscalls() {
    let listed: BTreeSet<&str> = SANDBOX.iter().map(|e| e.name).collect();
    let mut unlisted: Vec<(u32, &str)> =
        NATIVE.table.iter().filter(|(name, _)| !listed.contains(name)).map(|&(name, nr)| (nr, name)).collect();
    unlisted.sort_unstable();
    let names: Vec<&str> = unlisted.into_iter().map(|(_, name)| name).collect();
    pretty_assertions::assert_eq!(names, UNLISTED_X86_64);
}

#[cfg(target_arch = "x86_64")]
const UNLISTED_X86_64: &[&str] = &[
    // Never implemented on x86_64 (sys_ni_syscall).
    "getpmsg",
    "putpmsg",
    "afs_syscall",
    "tuxcall",
    "security",
    // 32-bit TLS segments; 64-bit code uses arch_prctl.
    "set_thread_area",
    "get_thread_area",
    // Never implemented on x86_64.
    "epoll_ctl_old",
    "epoll_wait_old",
    "vserver",
    // Unneeded: secret memory, reaping other processes' memory.
    "memfd_secret",
    "process_mrelease",
    // 6.5+ calls libc does not use yet; callers fall back on ENOSYS.
    "cachestat",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "setxattrat",
    "getxattrat",
    "listxattrat",
    "removexattrat",
    "file_getattr",
    "file_setattr",
];

#[test]
fn describe_prints_each_rule() {
    let lines: Vec<(&str, String)> = describe().collect();
    let resolvable = SANDBOX.iter().filter(|e| NATIVE.nr(e.name).is_some()).count();
    assert_eq!(lines.len(), resolvable);
    let find = |name: &str| lines.iter().find(|(n, _)| *n == name).map(|(_, d)| d.as_str());
    assert_eq!(find("read"), Some("allow"));
    assert_eq!(find("mount"), Some("EPERM"));
    assert_eq!(find("clone3"), Some("ENOSYS"));
    assert_eq!(find("clone"), Some("EPERM if flags (arg0) has any of 0x7e020080; otherwise allow"));
    assert_eq!(
        find("socket"),
        Some(
            "allow if domain (arg0) is one of [0x1]; \
             EAFNOSUPPORT if domain (arg0) is none of [0x2, 0xa]; \
             EPERM if type (arg1 & 0xf) is one of [0x3, 0xa]; \
             ESOCKTNOSUPPORT if type (arg1 & 0xf) is none of [0x1, 0x2]; \
             EPROTONOSUPPORT if protocol (arg2) is none of [0x0, 0x6, 0x11]; otherwise allow"
        )
    );
    assert_eq!(
        find("ioctl"),
        Some("EPERM if request (arg1) is one of [0x5412, 0x541c]; EPERM if request (arg1 & 0xff00) is one of [0x9400]; otherwise allow")
    );
}
