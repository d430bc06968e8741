//! For privileged tests (Rust, any crate): a test that cannot run here for lack of root
//! or of a kernel capability says why and returns, except under `CI=true`, where CI runs
//! as root on a host that has every capability the suite needs: there a skip would hide a
//! broken machine or test, so it fails the test with the same reason.

/// Reports that `test` cannot run here because of `reason`: returns (the test then
/// returns early) outside CI, panics under `CI` (any value but empty, "0" or "false").
pub fn skip_privileged(test: &str, reason: &str) {
    if under_ci() {
        panic!("{test}: a privileged test may not skip under CI: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

/// Whether the `CI` environment variable is set (to anything but "", "0", "false").
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ci_values() {
        // Only the parsing is checked here: the variable is process-wide.
        let ci = |v: &str| !matches!(v, "" | "0" | "false");
        assert!(ci("true") && ci("1") && !ci("") && !ci("0") && !ci("false"));
    }
}
