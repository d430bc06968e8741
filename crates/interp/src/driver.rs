//! The in-sandbox driver and how to start it.

/// The driver's source (Python 3.9+, needs `jupyter_client` and `ipykernel` for Python
/// contexts; bash contexts need only bash).
pub const SOURCE: &str = include_str!("../driver/driver.py");

/// What `python3 -c` runs: read the driver's length and source from stdin, run it; the
/// rest of stdin is the request stream.
const BOOT: &str = "import sys;b=sys.stdin.buffer;n=int(b.readline());\
exec(compile(b.read(n),'safehouse-interp','exec'),{'__name__':'__main__'})";

/// The driver's command line, with the sandbox's `python3` (found on its PATH).
pub fn argv() -> Vec<String> {
    ["python3", "-I", "-u", "-c", BOOT].iter().map(|s| s.to_string()).collect()
}

/// The daemon's environment variable naming a driver source file to send instead of the
/// embedded one: for developing the driver without rebuilding the binary (the daemon's
/// operator is trusted; sandboxes never see it).
pub const SOURCE_ENV: &str = "SAFEHOUSE_INTERP_DRIVER";

/// The first bytes to write to the driver's stdin: the source's length, a newline, the
/// source.
pub fn preamble() -> Vec<u8> {
    let source =
        std::env::var_os(SOURCE_ENV).and_then(|p| std::fs::read(p).ok()).unwrap_or_else(|| SOURCE.as_bytes().to_vec());
    let mut out = format!("{}\n", source.len()).into_bytes();
    out.extend_from_slice(&source);
    out
}

/// Modules a new Python kernel imports before its first cell when `preload` is asked
/// for, so the first chart does not pay for them (each is skipped if missing).
pub const PRELOAD: &str = "numpy,pandas,matplotlib.pyplot";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_is_length_then_source() {
        let p = preamble();
        let nl = p.iter().position(|b| *b == b'\n').unwrap();
        let n: usize = std::str::from_utf8(&p[..nl]).unwrap().parse().unwrap();
        assert_eq!(n, SOURCE.len());
        assert_eq!(&p[nl + 1..], SOURCE.as_bytes());
    }

    #[test]
    fn boot_is_one_short_argument() {
        let a = argv();
        assert_eq!(a[..4], ["python3", "-I", "-u", "-c"]);
        assert!(a[4].len() < 200 && !a[4].contains('\n'));
    }
}
