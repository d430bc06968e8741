//! A classic-BPF interpreter and checker for the instructions the compiler emits, so tests
//! can prove the filter's decisions without loading it into a kernel.

use super::bpf::{AND_K, JA, JEQ_K, JGE_K, JSET_K, LD_ABS, MAX_INSNS, RET_K};
use super::SockFilter;

/// `struct seccomp_data` as the kernel lays it out.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `sizeof(struct seccomp_data)`.
const DATA_LEN: usize = 64;

impl SeccompData {
    fn bytes(&self) -> [u8; DATA_LEN] {
        let mut out = [0u8; DATA_LEN];
        out[0..4].copy_from_slice(&self.nr.to_le_bytes());
        out[4..8].copy_from_slice(&self.arch.to_le_bytes());
        out[8..16].copy_from_slice(&self.instruction_pointer.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        out
    }
}

/// Why a program was rejected or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Length(usize),
    Unsupported { pc: usize, code: u16 },
    BadLoad { pc: usize, k: u32 },
    JumpOutOfRange { pc: usize },
    LastNotRet,
}

/// The static checks the kernel applies before accepting a seccomp program
/// (`bpf_check_classic` and `seccomp_check_filter`), restricted to the instructions the
/// compiler uses: anything else is reported as unsupported.
pub(crate) fn check(prog: &[SockFilter]) -> Result<(), Fault> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(Fault::Length(prog.len()));
    }
    for (pc, insn) in prog.iter().enumerate() {
        let remaining = prog.len() - pc - 1;
        match insn.code {
            LD_ABS => {
                if insn.k % 4 != 0 || insn.k as usize >= DATA_LEN {
                    return Err(Fault::BadLoad { pc, k: insn.k });
                }
            }
            AND_K | RET_K => {}
            JA => {
                if insn.k as usize >= remaining {
                    return Err(Fault::JumpOutOfRange { pc });
                }
            }
            JEQ_K | JGE_K | JSET_K => {
                if usize::from(insn.jt) >= remaining || usize::from(insn.jf) >= remaining {
                    return Err(Fault::JumpOutOfRange { pc });
                }
            }
            code => return Err(Fault::Unsupported { pc, code }),
        }
    }
    match prog.last() {
        Some(insn) if insn.code == RET_K => Ok(()),
        _ => Err(Fault::LastNotRet),
    }
}

/// Runs a checked program on `data` and returns its `SECCOMP_RET_*` value.
pub(crate) fn run(prog: &[SockFilter], data: &SeccompData) -> Result<u32, Fault> {
    check(prog)?;
    let bytes = data.bytes();
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    // Jumps only go forward and `check` bounds them, so this terminates inside `prog`.
    loop {
        let insn = prog[pc];
        let mut next = pc + 1;
        match insn.code {
            LD_ABS => {
                let k = insn.k as usize;
                acc = u32::from_le_bytes([bytes[k], bytes[k + 1], bytes[k + 2], bytes[k + 3]]);
            }
            AND_K => acc &= insn.k,
            JA => next += insn.k as usize,
            JEQ_K | JGE_K | JSET_K => {
                let taken = match insn.code {
                    JEQ_K => acc == insn.k,
                    JGE_K => acc >= insn.k,
                    _ => acc & insn.k != 0,
                };
                next += usize::from(if taken { insn.jt } else { insn.jf });
            }
            RET_K => return Ok(insn.k),
            code => return Err(Fault::Unsupported { pc, code }),
        }
        pc = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    #[test]
    fn loads_little_endian_fields() {
        let data =
            SeccompData { nr: 7, arch: 0xc000_003e, args: [0, 0x1_0000_5412, 0, 0, 0, 0], ..SeccompData::default() };
        let load =
            |k| run(&[insn(LD_ABS, 0, 0, k), insn(JEQ_K, 0, 1, 0), insn(RET_K, 0, 0, 1), insn(RET_K, 0, 0, 2)], &data);
        assert_eq!(load(0), Ok(2));
        let echo = |k: u32| {
            // ret A is not used by the compiler; compare against candidates instead.
            let candidates = [7u32, 0xc000_003e, 0x5412, 1];
            candidates.iter().copied().find(|&c| {
                run(&[insn(LD_ABS, 0, 0, k), insn(JEQ_K, 0, 1, c), insn(RET_K, 0, 0, 1), insn(RET_K, 0, 0, 0)], &data)
                    == Ok(1)
            })
        };
        assert_eq!(echo(0), Some(7));
        assert_eq!(echo(4), Some(0xc000_003e));
        assert_eq!(echo(24), Some(0x5412), "low word of args[1]");
        assert_eq!(echo(28), Some(1), "high word of args[1]");
    }

    #[test]
    fn rejects_what_the_kernel_rejects() {
        assert_eq!(check(&[]), Err(Fault::Length(0)));
        assert_eq!(check(&[insn(LD_ABS, 0, 0, 2), insn(RET_K, 0, 0, 0)]), Err(Fault::BadLoad { pc: 0, k: 2 }));
        assert_eq!(check(&[insn(LD_ABS, 0, 0, 64), insn(RET_K, 0, 0, 0)]), Err(Fault::BadLoad { pc: 0, k: 64 }));
        assert_eq!(check(&[insn(JEQ_K, 1, 0, 0), insn(RET_K, 0, 0, 0)]), Err(Fault::JumpOutOfRange { pc: 0 }));
        assert_eq!(check(&[insn(JA, 0, 0, 1), insn(RET_K, 0, 0, 0)]), Err(Fault::JumpOutOfRange { pc: 0 }));
        assert_eq!(check(&[insn(RET_K, 0, 0, 0), insn(AND_K, 0, 0, 1)]), Err(Fault::LastNotRet));
        assert_eq!(check(&[insn(0x16, 0, 0, 0)]), Err(Fault::Unsupported { pc: 0, code: 0x16 }));
    }

    #[test]
    fn jumps_and_masks() {
        let prog = [
            insn(LD_ABS, 0, 0, 16),
            insn(AND_K, 0, 0, 0xf),
            insn(JSET_K, 0, 1, 0x8),
            insn(RET_K, 0, 0, 8),
            insn(JGE_K, 0, 1, 3),
            insn(JA, 0, 0, 1),
            insn(RET_K, 0, 0, 1),
            insn(RET_K, 0, 0, 3),
        ];
        let with = |arg0| run(&prog, &SeccompData { args: [arg0, 0, 0, 0, 0, 0], ..SeccompData::default() });
        assert_eq!(with(0x18), Ok(8));
        assert_eq!(with(0x1), Ok(1));
        assert_eq!(with(0xf3), Ok(3));
    }
}
