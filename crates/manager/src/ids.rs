//! Unguessable identifiers, and the shapes of the ids routes carry.

/// `sb_` + 26 lowercase base32 characters: 130 bits from the OS's CSPRNG.
pub fn sandbox_id() -> String {
    random_id("sb_")
}

/// `snap_` + 26 lowercase base32 characters, like a sandbox id.
pub fn snapshot_id() -> String {
    random_id("snap_")
}

/// `tb_` + 26 lowercase base32 characters: a template build (its events' subject).
pub fn build_id() -> String {
    random_id("tb_")
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 26];
    getrandom::getrandom(&mut bytes).expect("the kernel's random source is available");
    let mut id = String::from(prefix);
    id.extend(bytes.iter().map(|b| ALPHABET[(b & 31) as usize] as char));
    id
}

/// Whether `s` has the shape of a snapshot id.
pub fn is_snapshot_id(s: &str) -> bool {
    s.len() == 31 && s.starts_with("snap_") && s[5..].bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

/// Whether `s` has the shape of a sandbox id (checked before any lookup).
pub fn is_sandbox_id(s: &str) -> bool {
    s.len() == 29 && s.starts_with("sb_") && s[3..].bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

/// A decimal pid: digits only, no sign or leading zero, non-zero, within u32.
pub fn parse_pid(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape() {
        let a = super::sandbox_id();
        assert!(super::is_sandbox_id(&a), "{a}");
        assert_ne!(a, super::sandbox_id());
        assert!(!super::is_sandbox_id("sb_../../etc"));
        assert!(!super::is_sandbox_id("SB_AAAAAAAAAAAAAAAAAAAAAAAAAA"));
    }
}
