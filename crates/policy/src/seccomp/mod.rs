//! Seccomp profiles as reviewed data, compiled to classic BPF by pure functions.
//!
//! - [`model`]: what a rule can say ([`Rule`], [`Action`], argument checks).
//! - [`rules`]: the sandbox's profile, one commented entry per syscall ([`SANDBOX`]).
//! - [`gateway`]: the gateway process's profile ([`GATEWAY`]).
//! - [`syscalls`]: the target architecture's audit id and syscall numbers.
//! - [`bpf`]: the compiler from a profile to a [`SockFilter`] program; its module docs show
//!   the program's layout.
//!
//! Tests (no root needed) run the compiled program through a small classic-BPF interpreter
//! that applies the kernel's own load-time checks.
//!
//! The resulting filter kills the process for any call from another ABI (i386 `int 0x80`,
//! x32, arm32 compat), returns the table's decision for listed syscalls, and `ENOSYS` for
//! everything else. Nothing here makes a syscall; installing the program is the `sys`
//! crate's job.

#[cfg(not(all(target_os = "linux", target_endian = "little", any(target_arch = "x86_64", target_arch = "aarch64"))))]
compile_error!("the seccomp profile supports Linux on x86_64 and aarch64 only");

pub mod bpf;
pub mod gateway;
pub mod model;
pub mod rules;
pub mod syscalls;

#[cfg(test)]
mod interp;
#[cfg(test)]
mod tests;

pub use bpf::{compile, exec_notify_filter, CompileError, MAX_INSNS};
pub use gateway::GATEWAY;
pub use model::{Action, ArgCheck, Entry, Rule, Test};
pub use rules::{DEFAULT_ACTION, DEFAULT_ERRNO, DENY_ERRNO, SANDBOX};
pub use syscalls::{Target, NATIVE};

/// One classic-BPF instruction, laid out like the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The filter every sandboxed process (and the sandbox init) runs under.
pub fn sandbox_filter() -> Vec<SockFilter> {
    // The table is a constant and the unit tests compile it; failing here is a bug in the
    // table, not a runtime condition.
    compile(SANDBOX, &NATIVE, DEFAULT_ACTION).expect("the built-in seccomp profile compiles")
}

/// The profile of a template build's RUN steps: [`SANDBOX`] with the entries of
/// [`rules::BUILD_STEP_OVERRIDES`] in place of the same names.
pub fn build_step_table() -> Vec<model::Entry> {
    SANDBOX.iter().map(|e| *rules::BUILD_STEP_OVERRIDES.iter().find(|o| o.name == e.name).unwrap_or(e)).collect()
}

/// The filter a template build's RUN steps run under (`Plan::build_capabilities`).
pub fn build_step_filter() -> Vec<SockFilter> {
    compile(&build_step_table(), &NATIVE, DEFAULT_ACTION).expect("the build-step seccomp profile compiles")
}

/// The filter the gateway process runs under (its own profile, [`GATEWAY`]).
pub fn gateway_filter() -> Vec<SockFilter> {
    // As for the sandbox's: a constant table, compiled by the unit tests.
    compile(GATEWAY, &NATIVE, DEFAULT_ACTION).expect("the gateway seccomp profile compiles")
}

/// The profile for this architecture, one line per listed syscall: its name and what the
/// filter does with it (`allow`, `EPERM`, or the argument checks). Syscalls not listed get
/// [`DEFAULT_ACTION`]; calls from another ABI kill the process. The reason for each line is
/// in [`SANDBOX`]'s `why`.
pub fn describe() -> impl Iterator<Item = (&'static str, String)> {
    SANDBOX.iter().filter(|entry| NATIVE.nr(entry.name).is_some()).map(|entry| (entry.name, entry.rule.to_string()))
}
