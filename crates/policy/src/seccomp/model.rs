//! The shape of a seccomp profile: what a rule can say, and how it reads.
//!
//! Argument checks see the low 32 bits of an argument only. That is exact for every
//! argument a profile checks, provided the kernel truncates it to 32 bits or fewer before
//! use (`int`, `unsigned int`, `umode_t`, or `lower_32_bits()` for clone's flags): the high
//! half then cannot change what the kernel does. Do not check an argument the kernel uses
//! as 64 bits (a pointer, a length, an offset) with these tests.

use std::fmt;

use libc::{EAFNOSUPPORT, ENOSYS, EPERM, EPROTONOSUPPORT, ESOCKTNOSUPPORT};

/// What the filter returns for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the call run.
    Allow,
    /// Fail the call with this errno; it never reaches the kernel's implementation.
    Errno(i32),
    /// Kill the whole process (used for calls from a foreign ABI).
    KillProcess,
    /// Return 0 without running the call: it "succeeds" having done nothing. Only for
    /// calls whose success value is 0 and whose effect may be left out (the build steps'
    /// setid chmods, [`super::rules::BUILD_STEP_OVERRIDES`]).
    Skip,
}

/// A test on one argument, after masking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `(arg & mask) & bits != 0`.
    AnyBit(u32),
    /// `arg & mask` equals one of these.
    In(&'static [u32]),
    /// `arg & mask` equals none of these.
    NotIn(&'static [u32]),
}

/// One step of an argument filter: if the test holds, `then` decides the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCheck {
    /// Index into `seccomp_data.args` (0..=5).
    pub arg: u8,
    /// The argument's name in the man page, for [`describe`](super::describe).
    pub name: &'static str,
    /// Applied to the argument's low 32 bits before the test; `u32::MAX` for none.
    pub mask: u32,
    pub test: Test,
    pub then: Action,
}

/// What the profile does with one syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Allow,
    Errno(i32),
    /// The first check that holds decides; if none does, `otherwise`.
    Args {
        checks: &'static [ArgCheck],
        otherwise: Action,
    },
}

/// One reviewed line of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub rule: Rule,
    /// Why the rule is what it is; for denials, the SECURITY.md ID it answers.
    pub why: &'static str,
}

/// The symbolic name of the errnos this profile uses.
fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        EPERM => "EPERM",
        ENOSYS => "ENOSYS",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EPROTONOSUPPORT => "EPROTONOSUPPORT",
        ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        _ => return None,
    })
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Allow => f.write_str("allow"),
            Action::Errno(errno) => match errno_name(errno) {
                Some(name) => f.write_str(name),
                None => write!(f, "errno {errno}"),
            },
            Action::KillProcess => f.write_str("kill process"),
            Action::Skip => f.write_str("return 0, not run"),
        }
    }
}

impl fmt::Display for ArgCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |values: &[u32]| {
            let list: Vec<String> = values.iter().map(|v| format!("{v:#x}")).collect();
            list.join(", ")
        };
        write!(f, "{} if {} (arg{}", self.then, self.name, self.arg)?;
        if self.mask != u32::MAX {
            write!(f, " & {:#x}", self.mask)?;
        }
        match self.test {
            Test::AnyBit(bits) => write!(f, ") has any of {bits:#x}"),
            Test::In(values) => write!(f, ") is one of [{}]", hex(values)),
            Test::NotIn(values) => write!(f, ") is none of [{}]", hex(values)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rule::Allow => Action::Allow.fmt(f),
            Rule::Errno(errno) => Action::Errno(errno).fmt(f),
            Rule::Args { checks, otherwise } => {
                for check in checks {
                    write!(f, "{check}; ")?;
                }
                write!(f, "otherwise {otherwise}")
            }
        }
    }
}
