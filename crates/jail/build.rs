//! Compiles the sandbox's seccomp profile (reviewed data in safehouse-policy) to BPF at
//! build time, so starting a sandbox does not pay for the compilation. A unit test in
//! `seccomp_program.rs` checks the embedded program equals a fresh compilation.

#![forbid(unsafe_code)]

use std::fmt::Write;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let mut out = String::new();
    emit(
        &mut out,
        "SANDBOX_FILTER",
        "The sandbox's seccomp program, compiled from the policy crate's table at build time.",
        &safehouse_policy::seccomp::sandbox_filter(),
    );
    emit(
        &mut out,
        "BUILD_STEP_FILTER",
        "A template build's RUN steps' program (the sandbox's, setid chmods skipped), compiled at build time.",
        &safehouse_policy::seccomp::build_step_filter(),
    );
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("seccomp_filter.rs");
    std::fs::write(dest, out).unwrap();
}

fn emit(out: &mut String, name: &str, doc: &str, program: &[safehouse_policy::seccomp::SockFilter]) {
    writeln!(out, "/// {doc}").unwrap();
    writeln!(out, "pub static {name}: [libc::sock_filter; {}] = [", program.len()).unwrap();
    for i in program {
        writeln!(
            out,
            "    libc::sock_filter {{ code: {:#06x}, jt: {}, jf: {}, k: {:#010x} }},",
            i.code, i.jt, i.jf, i.k
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
}
