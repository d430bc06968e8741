//! The compiler on synthetic tables: long jumps, skipped names, and table mistakes.

use super::super::bpf::{compile, ret_value, CompileError, JA};
use super::super::interp::{check, run, SeccompData};
use super::super::model::{Action, ArgCheck, Entry, Rule, Test};
use super::super::syscalls::Target;
use super::model;

const ARCH: u32 = 0x1234_5678;
const DEFAULT: Action = Action::Errno(libc::ENOSYS);

/// A made-up architecture with syscalls `s0`, `s1`, ... numbered `3 * i`.
fn target(count: usize) -> Target {
    let table: Vec<(&'static str, u32)> =
        (0..count).map(|i| (&*Box::leak(format!("s{i}").into_boxed_str()), 3 * i as u32)).collect();
    Target { audit_arch: ARCH, foreign_nr_from: Some(0x4000_0000), table: Box::leak(table.into_boxed_slice()) }
}

fn name(i: usize) -> &'static str {
    Box::leak(format!("s{i}").into_boxed_str())
}

const FILTERED: Rule = Rule::Args {
    checks: &[
        ArgCheck { arg: 2, name: "x", mask: 0xff, test: Test::In(&[1, 2, 3]), then: Action::Errno(libc::EPERM) },
        ArgCheck { arg: 5, name: "y", mask: u32::MAX, test: Test::AnyBit(0x8000_0000), then: Action::KillProcess },
    ],
    otherwise: Action::Allow,
};

fn decide(prog: &[super::SockFilter], nr: u32, args: [u64; 6]) -> u32 {
    run(prog, &SeccompData { nr: nr as i32, arch: ARCH, instruction_pointer: 0, args }).expect("program runs")
}

/// A table big enough that subtrees exceed a conditional jump's reach: the compiler must
/// bridge them with `ja`, and every syscall must still be found.
#[test]
fn large_tables_use_long_jumps_and_stay_correct() {
    let count = 400;
    let target = target(count);
    let entries: Vec<Entry> = (0..count)
        .map(|i| Entry {
            name: name(i),
            rule: match i % 3 {
                0 => Rule::Allow,
                1 => Rule::Errno(1 + (i % 200) as i32),
                _ => FILTERED,
            },
            why: "test",
        })
        .collect();
    let prog = compile(&entries, &target, DEFAULT).expect("compiles");
    check(&prog).expect("passes the kernel checks");
    assert!(prog.iter().any(|insn| insn.code == JA), "expected long jumps");
    for (i, entry) in entries.iter().enumerate() {
        let nr = 3 * i as u32;
        for args in [[0; 6], [0, 0, 2, 0, 0, 0], [0, 0, 0x1_0000_0102, 0, 0, 1 << 31]] {
            assert_eq!(decide(&prog, nr, args), ret_value(model(&entry.rule, &args)), "s{i}");
        }
        // The numbers between listed ones fall to the default.
        assert_eq!(decide(&prog, nr + 1, [0; 6]), ret_value(DEFAULT), "after s{i}");
    }
}

#[test]
fn names_the_target_lacks_are_skipped() {
    let target = target(3);
    let entries =
        [Entry { name: "s1", rule: Rule::Allow, why: "" }, Entry { name: "not_here", rule: Rule::Allow, why: "" }];
    let prog = compile(&entries, &target, DEFAULT).expect("compiles");
    assert_eq!(decide(&prog, 3, [0; 6]), ret_value(Action::Allow));
    assert_eq!(decide(&prog, 0, [0; 6]), ret_value(DEFAULT));
}

#[test]
fn table_mistakes_are_errors() {
    let target = target(8);
    let compile_one = |rule: Rule| compile(&[Entry { name: "s1", rule, why: "" }], &target, DEFAULT);
    assert_eq!(
        compile(
            &[Entry { name: "s1", rule: Rule::Allow, why: "" }, Entry { name: "s1", rule: Rule::Errno(1), why: "" }],
            &target,
            DEFAULT
        ),
        Err(CompileError::Duplicate { name: "s1", first: "s1", nr: 3 })
    );
    assert_eq!(compile_one(Rule::Errno(0)), Err(CompileError::Errno { name: "s1", errno: 0 }));
    assert_eq!(compile_one(Rule::Errno(4096)), Err(CompileError::Errno { name: "s1", errno: 4096 }));
    let check = |arg, test| ArgCheck { arg, name: "a", mask: u32::MAX, test, then: Action::Allow };
    let bad_arg: &'static [ArgCheck] = Box::leak(Box::new([check(6, Test::AnyBit(1))]));
    assert_eq!(
        compile_one(Rule::Args { checks: bad_arg, otherwise: Action::Allow }),
        Err(CompileError::ArgIndex { name: "s1", arg: 6 })
    );
    let empty: &'static [ArgCheck] = Box::leak(Box::new([check(0, Test::In(&[]))]));
    assert_eq!(
        compile_one(Rule::Args { checks: empty, otherwise: Action::Allow }),
        Err(CompileError::Values { name: "s1", len: 0 })
    );
    let bad_default = compile(&[], &target, Action::Errno(-1));
    assert_eq!(bad_default, Err(CompileError::Errno { name: "<default>", errno: -1 }));
}

#[test]
fn oversized_rules_and_programs_are_errors() {
    let target = target(2000);
    let many: &'static [u32] = Box::leak((0..32).collect::<Vec<u32>>().into_boxed_slice());
    let long_check = ArgCheck { arg: 0, name: "a", mask: 0xff, test: Test::In(many), then: Action::Allow };
    let checks: &'static [ArgCheck] = Box::leak(vec![long_check; 8].into_boxed_slice());
    let long_rule = Rule::Args { checks, otherwise: Action::Allow };
    assert!(matches!(
        compile(&[Entry { name: "s0", rule: long_rule, why: "" }], &target, DEFAULT),
        Err(CompileError::RuleTooLong { name: "s0", .. })
    ));
    let entries: Vec<Entry> = (0..2000).map(|i| Entry { name: name(i), rule: Rule::Errno(1), why: "" }).collect();
    assert!(matches!(compile(&entries, &target, DEFAULT), Err(CompileError::ProgramTooLong { .. })));
}

#[test]
fn exec_notify_filter_notifies_exec_only() {
    use crate::seccomp::{exec_notify_filter, NATIVE};
    let prog = exec_notify_filter(&NATIVE);
    check(&prog).unwrap();
    let verdict = |nr: u32| {
        run(&prog, &SeccompData { nr: nr as i32, arch: NATIVE.audit_arch, instruction_pointer: 0, args: [0; 6] })
            .unwrap()
    };
    assert_eq!(verdict(NATIVE.nr("execve").unwrap()), libc::SECCOMP_RET_USER_NOTIF);
    assert_eq!(verdict(NATIVE.nr("execveat").unwrap()), libc::SECCOMP_RET_USER_NOTIF);
    for other in ["read", "openat", "clone", "exit_group"] {
        assert_eq!(verdict(NATIVE.nr(other).unwrap()), ret_value(Action::Allow), "{other}");
    }
    let foreign = run(&prog, &SeccompData { nr: 11, arch: 0x4000_0003, instruction_pointer: 0, args: [0; 6] });
    assert_eq!(foreign.unwrap(), ret_value(Action::KillProcess));
}
