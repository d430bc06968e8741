//! The seccomp program every sandboxed process runs under, embedded at build time.

include!(concat!(env!("OUT_DIR"), "/seccomp_filter.rs"));

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_programs_match_the_policy_tables() {
        for (fresh, embedded) in [
            (safehouse_policy::seccomp::sandbox_filter(), &super::SANDBOX_FILTER[..]),
            (safehouse_policy::seccomp::build_step_filter(), &super::BUILD_STEP_FILTER[..]),
        ] {
            assert_eq!(fresh.len(), embedded.len());
            for (a, b) in fresh.iter().zip(embedded.iter()) {
                assert_eq!((a.code, a.jt, a.jf, a.k), (b.code, b.jt, b.jf, b.k));
            }
        }
    }
}
