//! Tests of the compiled sandbox filter, run through the interpreter: no root, no kernel.

mod compiler;
mod decisions;
mod gateway;
mod golden;

use std::sync::OnceLock;

use libc::{SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS};

use super::interp::{run, SeccompData};
use super::{sandbox_filter, SockFilter, NATIVE};

const ALLOW: u32 = SECCOMP_RET_ALLOW;
const KILL: u32 = SECCOMP_RET_KILL_PROCESS;

const fn errno(errno: i32) -> u32 {
    SECCOMP_RET_ERRNO | errno as u32
}

const EPERM: u32 = errno(libc::EPERM);
const ENOSYS: u32 = errno(libc::ENOSYS);
const EAFNOSUPPORT: u32 = errno(libc::EAFNOSUPPORT);
const EPROTONOSUPPORT: u32 = errno(libc::EPROTONOSUPPORT);
const ESOCKTNOSUPPORT: u32 = errno(libc::ESOCKTNOSUPPORT);

fn filter() -> &'static [SockFilter] {
    static FILTER: OnceLock<Vec<SockFilter>> = OnceLock::new();
    FILTER.get_or_init(sandbox_filter)
}

fn nr(name: &str) -> u32 {
    NATIVE.nr(name).unwrap_or_else(|| panic!("`{name}` has no syscall number on this architecture"))
}

/// The filter's verdict for a raw `seccomp_data`.
fn verdict_raw(arch: u32, nr: u32, args: &[u64]) -> u32 {
    let mut data = SeccompData { nr: nr as i32, arch, instruction_pointer: 0x7fff_dead_beef, args: [0; 6] };
    data.args[..args.len()].copy_from_slice(args);
    run(filter(), &data).expect("the sandbox filter runs")
}

/// The filter's verdict for a native call of `name` with `args`.
fn verdict(name: &str, args: &[u64]) -> u32 {
    verdict_raw(NATIVE.audit_arch, nr(name), args)
}

use super::model::{Action, Rule, Test};

/// The meaning of a rule, evaluated directly: the reference the compiled code must match.
fn model(rule: &Rule, args: &[u64; 6]) -> Action {
    match *rule {
        Rule::Allow => Action::Allow,
        Rule::Errno(errno) => Action::Errno(errno),
        Rule::Args { checks, otherwise } => {
            for check in checks {
                // Truncation to the low word is the documented semantics.
                let value = args[usize::from(check.arg)] as u32 & check.mask;
                let holds = match check.test {
                    Test::AnyBit(bits) => value & bits != 0,
                    Test::In(values) => values.contains(&value),
                    Test::NotIn(values) => !values.contains(&value),
                };
                if holds {
                    return check.then;
                }
            }
            otherwise
        }
    }
}

/// Argument vectors that exercise every branch of `rule`: each tested value, its
/// neighbours, the same with high bits set, and the masked-off bits flipped.
fn probe_args(rule: &Rule) -> Vec<[u64; 6]> {
    let Rule::Args { checks, .. } = *rule else {
        return vec![[0; 6]];
    };
    let mut per_arg: [Vec<u64>; 6] = Default::default();
    for list in per_arg.iter_mut() {
        list.push(0);
    }
    for check in checks {
        let list = &mut per_arg[usize::from(check.arg)];
        let mut seeds: Vec<u32> = vec![0, 1, u32::MAX, !check.mask];
        match check.test {
            Test::AnyBit(bits) => {
                seeds.push(bits);
                seeds.push(!bits);
                seeds.extend((0..32).map(|i| 1u32 << i).filter(|bit| bits & bit != 0));
            }
            Test::In(values) | Test::NotIn(values) => {
                for &value in values {
                    seeds.extend([value, value ^ 1, value.wrapping_add(1), value | !check.mask]);
                }
            }
        }
        for seed in seeds {
            let seed = u64::from(seed);
            list.extend([seed, seed | 1 << 32, seed | 0xffff_ffff_0000_0000]);
        }
    }
    for list in per_arg.iter_mut() {
        list.sort_unstable();
        list.dedup();
    }
    // The cartesian product over the arguments that are checked (at most two here).
    let mut out = vec![[0u64; 6]];
    for (i, values) in per_arg.iter().enumerate() {
        out = out
            .iter()
            .flat_map(|args| {
                values.iter().map(move |&value| {
                    let mut next = *args;
                    next[i] = value;
                    next
                })
            })
            .collect();
    }
    out
}
