//! The target architecture: its audit identifier and its syscall numbers by name.
//!
//! The rules name syscalls; this module turns names into numbers for the architecture the
//! crate is compiled for. Numbers come from the `libc` crate where both its glibc and musl
//! bindings define them. The rest are spelled out below from the kernel's tables
//! (`arch/x86/entry/syscalls/syscall_64.tbl`, `include/uapi/asm-generic/unistd.h`): numbers
//! from 424 up are the same on every architecture, and a few older ones are missing from one
//! of libc's bindings. A name the architecture does not have (`open` on aarch64) resolves to
//! `None` and its rule is skipped there.

#![allow(non_upper_case_globals)]

/// How the compiler sees one architecture.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// `seccomp_data.arch` for native calls (`AUDIT_ARCH_*`).
    pub audit_arch: u32,
    /// Syscall numbers at or above this belong to another ABI sharing the same `arch` value
    /// (x32 on x86_64); the filter kills them.
    pub foreign_nr_from: Option<u32>,
    /// The syscall table: `(name, number)`.
    pub table: &'static [(&'static str, u32)],
}

impl Target {
    /// The number of the syscall called `name`, if this architecture has it.
    pub fn nr(&self, name: &str) -> Option<u32> {
        self.table.iter().find(|(n, _)| *n == name).map(|&(_, nr)| nr)
    }

    /// The name of syscall number `nr`, if this architecture has it.
    pub fn name(&self, nr: u32) -> Option<&'static str> {
        self.table.iter().find(|&&(_, n)| n == nr).map(|&(name, _)| name)
    }
}

// `<linux/audit.h>`: AUDIT_ARCH_* = EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. libc does
// not export these.
const AUDIT_ARCH_64BIT: u32 = 0x8000_0000;
const AUDIT_ARCH_LE: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64`: EM_X86_64 (62), 64-bit, little endian.
pub const AUDIT_ARCH_X86_64: u32 = 62 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE;
/// `AUDIT_ARCH_I386`: EM_386 (3), little endian — the `int 0x80` entry point on x86_64.
pub const AUDIT_ARCH_I386: u32 = 3 | AUDIT_ARCH_LE;
/// `AUDIT_ARCH_AARCH64`: EM_AARCH64 (183), 64-bit, little endian.
pub const AUDIT_ARCH_AARCH64: u32 = 183 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE;
/// `AUDIT_ARCH_ARM`: EM_ARM (40), little endian — 32-bit compat tasks on aarch64.
pub const AUDIT_ARCH_ARM: u32 = 40 | AUDIT_ARCH_LE;
/// `__X32_SYSCALL_BIT`: x32 calls enter through the x86_64 entry point with this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Builds a `(name, number)` table; the names keep libc's `SYS_` prefix until [`strip`].
macro_rules! numbers {
    (libc: [$($l:ident),* $(,)?], local: [$($x:ident),* $(,)?]) => {
        &strip(&[$((stringify!($l), libc::$l as u32),)* $((stringify!($x), $x as u32),)*])
    };
}

/// Drops the `SYS_` prefix from every name, at compile time.
const fn strip<const N: usize>(table: &[(&'static str, u32); N]) -> [(&'static str, u32); N] {
    let mut out = *table;
    let mut i = 0;
    while i < N {
        let (name, nr) = table[i];
        if let Some((_, rest)) = name.as_bytes().split_first_chunk::<4>() {
            if let Ok(rest) = core::str::from_utf8(rest) {
                out[i] = (rest, nr);
            }
        }
        i += 1;
    }
    out
}

/// Syscalls numbered 424 and up share one number on every architecture. Those libc lacks
/// on both targets:
mod unified {
    pub const SYS_cachestat: i64 = 451;
    pub const SYS_map_shadow_stack: i64 = 453;
    pub const SYS_futex_wake: i64 = 454;
    pub const SYS_futex_wait: i64 = 455;
    pub const SYS_futex_requeue: i64 = 456;
    pub const SYS_statmount: i64 = 457;
    pub const SYS_listmount: i64 = 458;
    pub const SYS_lsm_get_self_attr: i64 = 459;
    pub const SYS_lsm_set_self_attr: i64 = 460;
    pub const SYS_lsm_list_modules: i64 = 461;
    pub const SYS_setxattrat: i64 = 463;
    pub const SYS_getxattrat: i64 = 464;
    pub const SYS_listxattrat: i64 = 465;
    pub const SYS_removexattrat: i64 = 466;
    pub const SYS_open_tree_attr: i64 = 467;
    pub const SYS_file_getattr: i64 = 468;
    pub const SYS_file_setattr: i64 = 469;
    pub const SYS_listns: i64 = 470;
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::unified::*;
    use super::{strip, Target, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

    // Missing from libc: the three removed module calls (numbers still reserved, and on
    // Docker's deny list), and io_pgetevents (glibc bindings only).
    const SYS_create_module: i64 = 174;
    const SYS_get_kernel_syms: i64 = 177;
    const SYS_query_module: i64 = 178;
    const SYS_io_pgetevents: i64 = 333;

    pub const NATIVE: Target = Target {
        audit_arch: AUDIT_ARCH_X86_64,
        foreign_nr_from: Some(X32_SYSCALL_BIT),
        table: numbers!(
            libc: [
                SYS_read, SYS_write, SYS_open, SYS_close, SYS_stat, SYS_fstat, SYS_lstat, SYS_poll,
                SYS_lseek, SYS_mmap, SYS_mprotect, SYS_munmap, SYS_brk, SYS_rt_sigaction,
                SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_ioctl, SYS_pread64, SYS_pwrite64,
                SYS_readv, SYS_writev, SYS_access, SYS_pipe, SYS_select, SYS_sched_yield,
                SYS_mremap, SYS_msync, SYS_mincore, SYS_madvise, SYS_shmget, SYS_shmat, SYS_shmctl,
                SYS_dup, SYS_dup2, SYS_pause, SYS_nanosleep, SYS_getitimer, SYS_alarm,
                SYS_setitimer, SYS_getpid, SYS_sendfile, SYS_socket, SYS_connect, SYS_accept,
                SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_shutdown, SYS_bind,
                SYS_listen, SYS_getsockname, SYS_getpeername, SYS_socketpair, SYS_setsockopt,
                SYS_getsockopt, SYS_clone, SYS_fork, SYS_vfork, SYS_execve, SYS_exit, SYS_wait4,
                SYS_kill, SYS_uname, SYS_semget, SYS_semop, SYS_semctl, SYS_shmdt, SYS_msgget,
                SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_fcntl, SYS_flock, SYS_fsync, SYS_fdatasync,
                SYS_truncate, SYS_ftruncate, SYS_getdents, SYS_getcwd, SYS_chdir, SYS_fchdir,
                SYS_rename, SYS_mkdir, SYS_rmdir, SYS_creat, SYS_link, SYS_unlink, SYS_symlink,
                SYS_readlink, SYS_chmod, SYS_fchmod, SYS_chown, SYS_fchown, SYS_lchown, SYS_umask,
                SYS_gettimeofday, SYS_getrlimit, SYS_getrusage, SYS_sysinfo, SYS_times, SYS_ptrace,
                SYS_getuid, SYS_syslog, SYS_getgid, SYS_setuid, SYS_setgid, SYS_geteuid,
                SYS_getegid, SYS_setpgid, SYS_getppid, SYS_getpgrp, SYS_setsid, SYS_setreuid,
                SYS_setregid, SYS_getgroups, SYS_setgroups, SYS_setresuid, SYS_getresuid,
                SYS_setresgid, SYS_getresgid, SYS_getpgid, SYS_setfsuid, SYS_setfsgid, SYS_getsid,
                SYS_capget, SYS_capset, SYS_rt_sigpending, SYS_rt_sigtimedwait, SYS_rt_sigqueueinfo,
                SYS_rt_sigsuspend, SYS_sigaltstack, SYS_utime, SYS_mknod, SYS_uselib,
                SYS_personality, SYS_ustat, SYS_statfs, SYS_fstatfs, SYS_sysfs, SYS_getpriority,
                SYS_setpriority, SYS_sched_setparam, SYS_sched_getparam, SYS_sched_setscheduler,
                SYS_sched_getscheduler, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
                SYS_sched_rr_get_interval, SYS_mlock, SYS_munlock, SYS_mlockall, SYS_munlockall,
                SYS_vhangup, SYS_modify_ldt, SYS_pivot_root, SYS__sysctl, SYS_prctl, SYS_arch_prctl,
                SYS_adjtimex, SYS_setrlimit, SYS_chroot, SYS_sync, SYS_acct, SYS_settimeofday,
                SYS_mount, SYS_umount2, SYS_swapon, SYS_swapoff, SYS_reboot, SYS_sethostname,
                SYS_setdomainname, SYS_iopl, SYS_ioperm, SYS_init_module, SYS_delete_module,
                SYS_quotactl, SYS_nfsservctl, SYS_getpmsg, SYS_putpmsg, SYS_afs_syscall,
                SYS_tuxcall, SYS_security, SYS_gettid, SYS_readahead, SYS_setxattr, SYS_lsetxattr,
                SYS_fsetxattr, SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr, SYS_listxattr,
                SYS_llistxattr, SYS_flistxattr, SYS_removexattr, SYS_lremovexattr, SYS_fremovexattr,
                SYS_tkill, SYS_time, SYS_futex, SYS_sched_setaffinity, SYS_sched_getaffinity,
                SYS_set_thread_area, SYS_io_setup, SYS_io_destroy, SYS_io_getevents, SYS_io_submit,
                SYS_io_cancel, SYS_get_thread_area, SYS_lookup_dcookie, SYS_epoll_create,
                SYS_epoll_ctl_old, SYS_epoll_wait_old, SYS_remap_file_pages, SYS_getdents64,
                SYS_set_tid_address, SYS_restart_syscall, SYS_semtimedop, SYS_fadvise64,
                SYS_timer_create, SYS_timer_settime, SYS_timer_gettime, SYS_timer_getoverrun,
                SYS_timer_delete, SYS_clock_settime, SYS_clock_gettime, SYS_clock_getres,
                SYS_clock_nanosleep, SYS_exit_group, SYS_epoll_wait, SYS_epoll_ctl, SYS_tgkill,
                SYS_utimes, SYS_vserver, SYS_mbind, SYS_set_mempolicy, SYS_get_mempolicy,
                SYS_mq_open, SYS_mq_unlink, SYS_mq_timedsend, SYS_mq_timedreceive, SYS_mq_notify,
                SYS_mq_getsetattr, SYS_kexec_load, SYS_waitid, SYS_add_key, SYS_request_key,
                SYS_keyctl, SYS_ioprio_set, SYS_ioprio_get, SYS_inotify_init, SYS_inotify_add_watch,
                SYS_inotify_rm_watch, SYS_migrate_pages, SYS_openat, SYS_mkdirat, SYS_mknodat,
                SYS_fchownat, SYS_futimesat, SYS_newfstatat, SYS_unlinkat, SYS_renameat, SYS_linkat,
                SYS_symlinkat, SYS_readlinkat, SYS_fchmodat, SYS_faccessat, SYS_pselect6, SYS_ppoll,
                SYS_unshare, SYS_set_robust_list, SYS_get_robust_list, SYS_splice, SYS_tee,
                SYS_sync_file_range, SYS_vmsplice, SYS_move_pages, SYS_utimensat, SYS_epoll_pwait,
                SYS_signalfd, SYS_timerfd_create, SYS_eventfd, SYS_fallocate, SYS_timerfd_settime,
                SYS_timerfd_gettime, SYS_accept4, SYS_signalfd4, SYS_eventfd2, SYS_epoll_create1,
                SYS_dup3, SYS_pipe2, SYS_inotify_init1, SYS_preadv, SYS_pwritev,
                SYS_rt_tgsigqueueinfo, SYS_perf_event_open, SYS_recvmmsg, SYS_fanotify_init,
                SYS_fanotify_mark, SYS_prlimit64, SYS_name_to_handle_at, SYS_open_by_handle_at,
                SYS_clock_adjtime, SYS_syncfs, SYS_sendmmsg, SYS_setns, SYS_getcpu,
                SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_finit_module,
                SYS_sched_setattr, SYS_sched_getattr, SYS_renameat2, SYS_seccomp, SYS_getrandom,
                SYS_memfd_create, SYS_kexec_file_load, SYS_bpf, SYS_execveat, SYS_userfaultfd,
                SYS_membarrier, SYS_mlock2, SYS_copy_file_range, SYS_preadv2, SYS_pwritev2,
                SYS_pkey_mprotect, SYS_pkey_alloc, SYS_pkey_free, SYS_statx, SYS_rseq,
                SYS_pidfd_send_signal, SYS_io_uring_setup, SYS_io_uring_enter,
                SYS_io_uring_register, SYS_open_tree, SYS_move_mount, SYS_fsopen, SYS_fsconfig,
                SYS_fsmount, SYS_fspick, SYS_pidfd_open, SYS_clone3, SYS_close_range, SYS_openat2,
                SYS_pidfd_getfd, SYS_faccessat2, SYS_process_madvise, SYS_epoll_pwait2,
                SYS_mount_setattr, SYS_quotactl_fd, SYS_landlock_create_ruleset,
                SYS_landlock_add_rule, SYS_landlock_restrict_self, SYS_memfd_secret,
                SYS_process_mrelease, SYS_futex_waitv, SYS_set_mempolicy_home_node, SYS_fchmodat2,
                SYS_mseal,
            ],
            local: [
                SYS_create_module, SYS_get_kernel_syms, SYS_query_module, SYS_io_pgetevents,
                SYS_cachestat, SYS_map_shadow_stack, SYS_futex_wake, SYS_futex_wait,
                SYS_futex_requeue, SYS_statmount, SYS_listmount, SYS_lsm_get_self_attr,
                SYS_lsm_set_self_attr, SYS_lsm_list_modules, SYS_setxattrat, SYS_getxattrat,
                SYS_listxattrat, SYS_removexattrat, SYS_open_tree_attr, SYS_file_getattr,
                SYS_file_setattr, SYS_listns,
            ]
        ),
    };
}

#[cfg(target_arch = "aarch64")]
mod native {
    use super::unified::*;
    use super::{strip, Target, AUDIT_ARCH_AARCH64};

    // Missing from libc's glibc or musl bindings for aarch64 (asm-generic numbers, and
    // fchmodat2 from the unified range).
    const SYS_renameat: i64 = 38;
    const SYS_sync_file_range: i64 = 84;
    const SYS_getrlimit: i64 = 163;
    const SYS_setrlimit: i64 = 164;
    const SYS_io_pgetevents: i64 = 292;
    const SYS_kexec_file_load: i64 = 294;
    const SYS_fchmodat2: i64 = 452;

    pub const NATIVE: Target = Target {
        audit_arch: AUDIT_ARCH_AARCH64,
        // 32-bit tasks report AUDIT_ARCH_ARM and fail the arch check; there is no x32.
        foreign_nr_from: None,
        table: numbers!(
            libc: [
                SYS_io_setup, SYS_io_destroy, SYS_io_submit, SYS_io_cancel, SYS_io_getevents,
                SYS_setxattr, SYS_lsetxattr, SYS_fsetxattr, SYS_getxattr, SYS_lgetxattr,
                SYS_fgetxattr, SYS_listxattr, SYS_llistxattr, SYS_flistxattr, SYS_removexattr,
                SYS_lremovexattr, SYS_fremovexattr, SYS_getcwd, SYS_lookup_dcookie, SYS_eventfd2,
                SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_dup, SYS_dup3, SYS_fcntl,
                SYS_inotify_init1, SYS_inotify_add_watch, SYS_inotify_rm_watch, SYS_ioctl,
                SYS_ioprio_set, SYS_ioprio_get, SYS_flock, SYS_mknodat, SYS_mkdirat, SYS_unlinkat,
                SYS_symlinkat, SYS_linkat, SYS_umount2, SYS_mount, SYS_pivot_root, SYS_nfsservctl,
                SYS_statfs, SYS_fstatfs, SYS_truncate, SYS_ftruncate, SYS_fallocate, SYS_faccessat,
                SYS_chdir, SYS_fchdir, SYS_chroot, SYS_fchmod, SYS_fchmodat, SYS_fchownat,
                SYS_fchown, SYS_openat, SYS_close, SYS_vhangup, SYS_pipe2, SYS_quotactl,
                SYS_getdents64, SYS_lseek, SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64,
                SYS_pwrite64, SYS_preadv, SYS_pwritev, SYS_sendfile, SYS_pselect6, SYS_ppoll,
                SYS_signalfd4, SYS_vmsplice, SYS_splice, SYS_tee, SYS_readlinkat, SYS_newfstatat,
                SYS_fstat, SYS_sync, SYS_fsync, SYS_fdatasync, SYS_timerfd_create,
                SYS_timerfd_settime, SYS_timerfd_gettime, SYS_utimensat, SYS_acct, SYS_capget,
                SYS_capset, SYS_personality, SYS_exit, SYS_exit_group, SYS_waitid,
                SYS_set_tid_address, SYS_unshare, SYS_futex, SYS_set_robust_list,
                SYS_get_robust_list, SYS_nanosleep, SYS_getitimer, SYS_setitimer, SYS_kexec_load,
                SYS_init_module, SYS_delete_module, SYS_timer_create, SYS_timer_gettime,
                SYS_timer_getoverrun, SYS_timer_settime, SYS_timer_delete, SYS_clock_settime,
                SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_syslog, SYS_ptrace,
                SYS_sched_setparam, SYS_sched_setscheduler, SYS_sched_getscheduler,
                SYS_sched_getparam, SYS_sched_setaffinity, SYS_sched_getaffinity, SYS_sched_yield,
                SYS_sched_get_priority_max, SYS_sched_get_priority_min, SYS_sched_rr_get_interval,
                SYS_restart_syscall, SYS_kill, SYS_tkill, SYS_tgkill, SYS_sigaltstack,
                SYS_rt_sigsuspend, SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigpending,
                SYS_rt_sigtimedwait, SYS_rt_sigqueueinfo, SYS_rt_sigreturn, SYS_setpriority,
                SYS_getpriority, SYS_reboot, SYS_setregid, SYS_setgid, SYS_setreuid, SYS_setuid,
                SYS_setresuid, SYS_getresuid, SYS_setresgid, SYS_getresgid, SYS_setfsuid,
                SYS_setfsgid, SYS_times, SYS_setpgid, SYS_getpgid, SYS_getsid, SYS_setsid,
                SYS_getgroups, SYS_setgroups, SYS_uname, SYS_sethostname, SYS_setdomainname,
                SYS_getrusage, SYS_umask, SYS_prctl, SYS_getcpu, SYS_gettimeofday, SYS_settimeofday,
                SYS_adjtimex, SYS_getpid, SYS_getppid, SYS_getuid, SYS_geteuid, SYS_getgid,
                SYS_getegid, SYS_gettid, SYS_sysinfo, SYS_mq_open, SYS_mq_unlink, SYS_mq_timedsend,
                SYS_mq_timedreceive, SYS_mq_notify, SYS_mq_getsetattr, SYS_msgget, SYS_msgctl,
                SYS_msgrcv, SYS_msgsnd, SYS_semget, SYS_semctl, SYS_semtimedop, SYS_semop,
                SYS_shmget, SYS_shmctl, SYS_shmat, SYS_shmdt, SYS_socket, SYS_socketpair, SYS_bind,
                SYS_listen, SYS_accept, SYS_connect, SYS_getsockname, SYS_getpeername, SYS_sendto,
                SYS_recvfrom, SYS_setsockopt, SYS_getsockopt, SYS_shutdown, SYS_sendmsg,
                SYS_recvmsg, SYS_readahead, SYS_brk, SYS_munmap, SYS_mremap, SYS_add_key,
                SYS_request_key, SYS_keyctl, SYS_clone, SYS_execve, SYS_mmap, SYS_fadvise64,
                SYS_swapon, SYS_swapoff, SYS_mprotect, SYS_msync, SYS_mlock, SYS_munlock,
                SYS_mlockall, SYS_munlockall, SYS_mincore, SYS_madvise, SYS_remap_file_pages,
                SYS_mbind, SYS_get_mempolicy, SYS_set_mempolicy, SYS_migrate_pages, SYS_move_pages,
                SYS_rt_tgsigqueueinfo, SYS_perf_event_open, SYS_accept4, SYS_recvmmsg, SYS_wait4,
                SYS_prlimit64, SYS_fanotify_init, SYS_fanotify_mark, SYS_name_to_handle_at,
                SYS_open_by_handle_at, SYS_clock_adjtime, SYS_syncfs, SYS_setns, SYS_sendmmsg,
                SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_finit_module,
                SYS_sched_setattr, SYS_sched_getattr, SYS_renameat2, SYS_seccomp, SYS_getrandom,
                SYS_memfd_create, SYS_bpf, SYS_execveat, SYS_userfaultfd, SYS_membarrier,
                SYS_mlock2, SYS_copy_file_range, SYS_preadv2, SYS_pwritev2, SYS_pkey_mprotect,
                SYS_pkey_alloc, SYS_pkey_free, SYS_statx, SYS_rseq, SYS_pidfd_send_signal,
                SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_open_tree,
                SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_pidfd_open,
                SYS_clone3, SYS_close_range, SYS_openat2, SYS_pidfd_getfd, SYS_faccessat2,
                SYS_process_madvise, SYS_epoll_pwait2, SYS_mount_setattr, SYS_quotactl_fd,
                SYS_landlock_create_ruleset, SYS_landlock_add_rule, SYS_landlock_restrict_self,
                SYS_memfd_secret, SYS_process_mrelease, SYS_futex_waitv,
                SYS_set_mempolicy_home_node, SYS_mseal,
            ],
            local: [
                SYS_renameat, SYS_sync_file_range, SYS_getrlimit, SYS_setrlimit,
                SYS_io_pgetevents, SYS_kexec_file_load, SYS_cachestat, SYS_fchmodat2,
                SYS_map_shadow_stack, SYS_futex_wake, SYS_futex_wait, SYS_futex_requeue,
                SYS_statmount, SYS_listmount, SYS_lsm_get_self_attr, SYS_lsm_set_self_attr,
                SYS_lsm_list_modules, SYS_setxattrat, SYS_getxattrat, SYS_listxattrat,
                SYS_removexattrat, SYS_open_tree_attr, SYS_file_getattr, SYS_file_setattr,
                SYS_listns,
            ]
        ),
    };
}

/// The architecture this crate is compiled for.
pub use native::NATIVE;
