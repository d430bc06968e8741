//! Compiles a rule table to a classic-BPF seccomp program.
//!
//! The program, top to bottom:
//!
//! ```text
//!   ld   arch                      ; seccomp_data.arch
//!   jeq  AUDIT_ARCH, +1, +0
//!   ret  KILL_PROCESS              ; another ABI (i386 via int 0x80, arm32 compat)
//!   ld   nr                        ; seccomp_data.nr
//!   jge  0x40000000, +0, +1        ; x86_64 only
//!   ret  KILL_PROCESS              ; x32 (and negative numbers)
//!   <dispatch tree>
//! ```
//!
//! The dispatch is a binary search over number ranges. The compiler cuts the syscall numbers
//! into intervals that share one decision: a run of allowed calls, a gap of unlisted ones
//! (default), one filtered call. An inner node of the tree is one `jge lo` that picks a
//! half, with a `ja` added when the lower half is longer than a conditional jump can skip;
//! a leaf is its interval's rule, entered without further comparisons. A call costs about
//! log2(intervals) comparisons instead of one per listed syscall, the program stays small,
//! and every conditional jump is short by construction (it skips one subtree of at most 255
//! instructions, or one `ja`, whose offset is 32 bits), so no layout fix-up pass is needed.
//!
//! Rules with argument checks load the low word of `seccomp_data.args[i]` and compare; see
//! [`model`](super::model) for why the low word is enough. Every path ends in `ret`. The
//! prelude and the dispatch use only instructions the kernel's action cache can emulate
//! (loads of `nr` and `arch`, `jeq`/`jge`/`ja`, `ret`), so since Linux 5.11 a syscall whose
//! interval is a plain `ret ALLOW` is cached per process and skips the filter entirely.

use libc::{
    BPF_ABS, BPF_ALU, BPF_AND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_MAXINSNS, BPF_RET,
    BPF_W, SECCOMP_RET_ALLOW, SECCOMP_RET_DATA, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS,
};

use super::model::{Action, ArgCheck, Entry, Rule, Test};
use super::syscalls::Target;
use super::SockFilter;

pub(crate) const LD_ABS: u16 = (BPF_LD | BPF_W | BPF_ABS) as u16;
pub(crate) const AND_K: u16 = (BPF_ALU | BPF_AND | BPF_K) as u16;
pub(crate) const JA: u16 = (BPF_JMP | BPF_JA) as u16;
pub(crate) const JEQ_K: u16 = (BPF_JMP | BPF_JEQ | BPF_K) as u16;
pub(crate) const JGE_K: u16 = (BPF_JMP | BPF_JGE | BPF_K) as u16;
pub(crate) const JSET_K: u16 = (BPF_JMP | BPF_JSET | BPF_K) as u16;
pub(crate) const RET_K: u16 = (BPF_RET | BPF_K) as u16;

/// The kernel's limit on a classic-BPF program.
pub const MAX_INSNS: usize = BPF_MAXINSNS as usize;
/// The largest errno the kernel returns (`MAX_ERRNO`).
pub const MAX_ERRNO: i32 = 4095;

/// `offsetof(struct seccomp_data, nr)`.
pub(crate) const NR_OFFSET: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
pub(crate) const ARCH_OFFSET: u32 = 4;
/// `offsetof(struct seccomp_data, args)`; each argument is a `u64`.
pub(crate) const ARGS_OFFSET: u32 = 16;

/// The farthest a conditional jump reaches.
const MAX_SHORT_JUMP: usize = u8::MAX as usize;
/// Most values one argument test may list, so its jumps stay short.
const MAX_VALUES: usize = 32;

/// Why a table does not compile. Each is a mistake in the table, caught by the unit tests
/// for the built-in profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("seccomp rule `{name}` repeats syscall number {nr}, already ruled by `{first}`")]
    Duplicate { name: &'static str, first: &'static str, nr: u32 },
    #[error("seccomp rule `{name}` returns errno {errno}; use 1..={MAX_ERRNO}")]
    Errno { name: &'static str, errno: i32 },
    #[error("seccomp rule `{name}` checks argument {arg}; syscalls have arguments 0..=5")]
    ArgIndex { name: &'static str, arg: u8 },
    #[error("seccomp rule `{name}` tests {len} values; use 1..={MAX_VALUES}")]
    Values { name: &'static str, len: usize },
    #[error("seccomp rule `{name}` compiles to {len} instructions; a rule may take {MAX_SHORT_JUMP}")]
    RuleTooLong { name: &'static str, len: usize },
    #[error("seccomp program has {len} instructions; the kernel accepts {MAX_INSNS}")]
    ProgramTooLong { len: usize },
}

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter { code, jt: 0, jf: 0, k }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The `SECCOMP_RET_*` value of an action.
pub(crate) const fn ret_value(action: Action) -> u32 {
    match action {
        Action::Allow => SECCOMP_RET_ALLOW,
        Action::Errno(errno) => SECCOMP_RET_ERRNO | (errno as u32 & SECCOMP_RET_DATA),
        Action::KillProcess => SECCOMP_RET_KILL_PROCESS,
        // SECCOMP_RET_ERRNO with errno 0: the call returns 0 and is not run.
        Action::Skip => SECCOMP_RET_ERRNO,
    }
}

const fn ret(action: Action) -> SockFilter {
    stmt(RET_K, ret_value(action))
}

/// Offset of the low 32 bits of `seccomp_data.args[arg]` (the crate only builds for
/// little-endian targets, where the low word comes first).
pub(crate) const fn arg_low_offset(arg: u8) -> u32 {
    ARGS_OFFSET + 8 * arg as u32
}

/// The instructions every program starts with: the arch check, then the syscall number in
/// the accumulator with foreign-ABI numbers killed.
pub fn prelude(target: &Target) -> Vec<SockFilter> {
    let kill = ret(Action::KillProcess);
    let mut out = vec![stmt(LD_ABS, ARCH_OFFSET), jump(JEQ_K, target.audit_arch, 1, 0), kill, stmt(LD_ABS, NR_OFFSET)];
    if let Some(first_foreign) = target.foreign_nr_from {
        out.push(jump(JGE_K, first_foreign, 0, 1));
        out.push(kill);
    }
    out
}

/// The small filter that hands every `execve` and `execveat` to a supervisor
/// (`SECCOMP_RET_USER_NOTIF`) so it can put a limited tool in its own cgroup before the
/// exec proceeds; everything else passes on to the sandbox filter stacked after it. Calls
/// from another ABI are killed here too, so the x32 twin of execve cannot slip past.
pub fn exec_notify_filter(target: &Target) -> Vec<SockFilter> {
    let notify = stmt(RET_K, libc::SECCOMP_RET_USER_NOTIF);
    let allow = ret(Action::Allow);
    let mut out = prelude(target);
    for name in ["execve", "execveat"] {
        if let Some(nr) = target.nr(name) {
            out.push(jump(JEQ_K, nr, 0, 1));
            out.push(notify);
        }
    }
    out.push(allow);
    out
}

/// Compiles `entries` for `target`, with `default` for syscalls they do not list. Entries
/// naming a syscall the target does not have are skipped.
pub fn compile(entries: &[Entry], target: &Target, default: Action) -> Result<Vec<SockFilter>, CompileError> {
    let mut resolved: Vec<(u32, &'static str, Vec<SockFilter>)> = Vec::new();
    for entry in entries {
        let Some(nr) = target.nr(entry.name) else {
            continue;
        };
        resolved.push((nr, entry.name, rule_code(entry.name, &entry.rule)?));
    }
    resolved.sort_by_key(|&(nr, _, _)| nr);
    for pair in resolved.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(CompileError::Duplicate { name: pair[1].1, first: pair[0].1, nr: pair[0].0 });
        }
    }
    check_action(default, "<default>")?;

    let intervals = intervals(resolved.into_iter().map(|(nr, _, code)| (nr, code)), default);
    let mut program = prelude(target);
    program.extend(dispatch(&intervals));
    if program.len() > MAX_INSNS {
        return Err(CompileError::ProgramTooLong { len: program.len() });
    }
    Ok(program)
}

/// Cuts the numbers `0..=u32::MAX` into intervals `(first number, rule code)`, sorted and
/// contiguous: one per listed syscall, one per gap between them (with `default`), and
/// neighbours with identical code merged. Rule code never depends on the number, so
/// merging is exact.
fn intervals(sorted: impl Iterator<Item = (u32, Vec<SockFilter>)>, default: Action) -> Vec<(u32, Vec<SockFilter>)> {
    let default = vec![ret(default)];
    let mut out: Vec<(u32, Vec<SockFilter>)> = Vec::new();
    let mut push = |lo: u32, code: Vec<SockFilter>| match out.last() {
        Some((_, last)) if *last == code => {}
        _ => out.push((lo, code)),
    };
    let mut next: Option<u32> = Some(0);
    for (nr, code) in sorted {
        if let Some(gap) = next.filter(|&gap| gap < nr) {
            push(gap, default.clone());
        }
        push(nr, code);
        next = nr.checked_add(1);
    }
    if let Some(gap) = next {
        push(gap, default);
    }
    out
}

fn check_action(action: Action, name: &'static str) -> Result<(), CompileError> {
    match action {
        Action::Errno(errno) if !(1..=MAX_ERRNO).contains(&errno) => Err(CompileError::Errno { name, errno }),
        _ => Ok(()),
    }
}

/// The instructions deciding one syscall, entered with anything in the accumulator. Every
/// path ends in `ret`.
fn rule_code(name: &'static str, rule: &Rule) -> Result<Vec<SockFilter>, CompileError> {
    let code = match *rule {
        Rule::Allow => vec![ret(Action::Allow)],
        Rule::Errno(errno) => {
            check_action(Action::Errno(errno), name)?;
            vec![ret(Action::Errno(errno))]
        }
        Rule::Args { checks, otherwise } => {
            let mut code = Vec::new();
            for check in checks {
                check_code(name, check, &mut code)?;
            }
            check_action(otherwise, name)?;
            code.push(ret(otherwise));
            code
        }
    };
    if code.len() > MAX_SHORT_JUMP {
        return Err(CompileError::RuleTooLong { name, len: code.len() });
    }
    Ok(code)
}

/// One check: load the argument, mask it, test it, and `ret then` if the test holds; else
/// fall through to whatever follows.
fn check_code(name: &'static str, check: &ArgCheck, code: &mut Vec<SockFilter>) -> Result<(), CompileError> {
    if check.arg > 5 {
        return Err(CompileError::ArgIndex { name, arg: check.arg });
    }
    check_action(check.then, name)?;
    code.push(stmt(LD_ABS, arg_low_offset(check.arg)));
    if check.mask != u32::MAX {
        code.push(stmt(AND_K, check.mask));
    }
    match check.test {
        Test::AnyBit(bits) => {
            // Holds: fall into the ret. Fails: skip it.
            code.push(jump(JSET_K, bits, 0, 1));
        }
        Test::In(values) | Test::NotIn(values) => {
            let n = values.len();
            if n == 0 || n > MAX_VALUES {
                return Err(CompileError::Values { name, len: n });
            }
            let holds_on_match = matches!(check.test, Test::In(_));
            // Layout: jeq v0 .. jeq v(n-1), ret then, <next>. From jeq i, `n - 1 - i` skips
            // to the ret and `n - i` skips past it; offsets are below MAX_VALUES.
            for (i, &value) in values.iter().enumerate() {
                let to_ret = (n - 1 - i) as u8;
                let past_ret = (n - i) as u8;
                let last = i == n - 1;
                let (jt, jf) = match (holds_on_match, last) {
                    (true, false) => (to_ret, 0),
                    (true, true) => (0, 1),
                    (false, _) => (past_ret, 0),
                };
                code.push(jump(JEQ_K, value, jt, jf));
            }
        }
    }
    code.push(ret(check.then));
    Ok(())
}

/// The binary-search dispatch over contiguous `(first number, rule code)` intervals,
/// entered with the syscall number in the accumulator.
fn dispatch(intervals: &[(u32, Vec<SockFilter>)]) -> Vec<SockFilter> {
    match intervals {
        [] => return Vec::new(), // `intervals` always yields at least one
        [(_, code)] => return code.clone(),
        _ => {}
    }
    let mid = intervals.len() / 2;
    let pivot = intervals[mid].0;
    let left = dispatch(&intervals[..mid]);
    let right = dispatch(&intervals[mid..]);
    let mut out = Vec::with_capacity(left.len() + right.len() + 2);
    if left.len() <= MAX_SHORT_JUMP {
        // nr >= pivot: skip the lower half.
        out.push(jump(JGE_K, pivot, left.len() as u8, 0));
    } else {
        // nr >= pivot: fall into the `ja` over the lower half; else skip the `ja`.
        out.push(jump(JGE_K, pivot, 0, 1));
        out.push(stmt(JA, left.len() as u32));
    }
    out.extend(left);
    out.extend(right);
    out
}
