//! The seccomp program every sandboxed process runs under, embedded at build time.

include!(concat!(env!("OUT_DIR"), "/seccomp_filter.rs"));

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_program_matches_the_policy_table() {
        let fresh = safehouse_policy::seccomp::sandbox_filter();
        assert_eq!(fresh.len(), super::SANDBOX_FILTER.len());
        for (a, b) in fresh.iter().zip(super::SANDBOX_FILTER.iter()) {
            assert_eq!((a.code, a.jt, a.jf, a.k), (b.code, b.jt, b.jf, b.k));
        }
    }
}
