//! Landlock rules for a sandbox, as plain data: which access rights are handled, and which
//! are granted beneath which paths. The jail applies them; the ABI decides how many of the
//! handled rights the kernel understands.

use serde::{Deserialize, Serialize};

// Filesystem access rights (include/uapi/linux/landlock.h).
pub const EXECUTE: u64 = 1 << 0;
pub const WRITE_FILE: u64 = 1 << 1;
pub const READ_FILE: u64 = 1 << 2;
pub const READ_DIR: u64 = 1 << 3;
pub const REMOVE_DIR: u64 = 1 << 4;
pub const REMOVE_FILE: u64 = 1 << 5;
pub const MAKE_CHAR: u64 = 1 << 6;
pub const MAKE_DIR: u64 = 1 << 7;
pub const MAKE_REG: u64 = 1 << 8;
pub const MAKE_SOCK: u64 = 1 << 9;
pub const MAKE_FIFO: u64 = 1 << 10;
pub const MAKE_BLOCK: u64 = 1 << 11;
pub const MAKE_SYM: u64 = 1 << 12;
/// ABI 2.
pub const REFER: u64 = 1 << 13;
/// ABI 3.
pub const TRUNCATE: u64 = 1 << 14;
/// ABI 5.
pub const IOCTL_DEV: u64 = 1 << 15;

// Scopes (ABI 6).
pub const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
pub const SCOPE_SIGNAL: u64 = 1 << 1;

/// The oldest ABI the sandbox accepts: below it the filesystem layer is refused.
pub const MIN_ABI: u32 = 1;

/// Every filesystem right a kernel with this ABI knows.
pub fn fs_rights_for_abi(abi: u32) -> u64 {
    let mut all = (1 << 13) - 1; // ABI 1: EXECUTE ..= MAKE_SYM
    if abi >= 2 {
        all |= REFER;
    }
    if abi >= 3 {
        all |= TRUNCATE;
    }
    if abi >= 5 {
        all |= IOCTL_DEV;
    }
    all
}

pub fn scopes_for_abi(abi: u32) -> u64 {
    if abi >= 6 {
        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    } else {
        0
    }
}

/// Read anything visible and run it.
pub const READ_EXEC: u64 = EXECUTE | READ_FILE | READ_DIR;
/// Full use of a writable tree, except creating device nodes.
pub const READ_WRITE: u64 = READ_EXEC
    | WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_SYM
    | REFER
    | TRUNCATE;
/// Character devices the sandbox may open for reading, writing and terminal ioctls.
pub const DEVICE_RW: u64 = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    pub path: String,
    pub access: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockRules {
    /// Rights the ruleset handles (denied unless a rule grants them), before ABI masking.
    pub handled: u64,
    pub rules: Vec<PathRule>,
    /// Scopes requested (ABI 6+): abstract unix sockets and signals stay inside the sandbox.
    pub scopes: u64,
}

/// The sandbox's rules: read and execute anywhere visible (the mount plan decides what is
/// visible), write only beneath the writable directories, devices only as listed.
///
/// With `exec_listed_only` (a non-empty `tools.allow`), no rule here grants EXECUTE: not
/// beneath "/", and not beneath the writable directories either (or a copy of any binary
/// into /tmp would run). The jail then adds one file-level EXECUTE rule per allowed
/// executable and its ELF interpreter, expanded in the sandbox's own view.
pub fn rules_for(writable: &[String], exec_listed_only: bool) -> LandlockRules {
    let strip = |access: u64| if exec_listed_only { access & !EXECUTE } else { access };
    let mut rules = vec![PathRule { path: "/".into(), access: strip(READ_EXEC) }];
    for w in writable {
        rules.push(PathRule { path: w.clone(), access: strip(READ_WRITE) });
    }
    for dev in ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"] {
        rules.push(PathRule { path: dev.into(), access: DEVICE_RW });
    }
    rules.push(PathRule { path: "/dev/pts".into(), access: DEVICE_RW | READ_DIR });
    rules.push(PathRule { path: "/dev/shm".into(), access: strip(READ_WRITE) });
    LandlockRules { handled: fs_rights_for_abi(u32::MAX), rules, scopes: SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL }
}

/// The right a file-level rule grants an allowed executable (reading it is already granted
/// beneath "/").
pub const EXECUTE_FILE: u64 = EXECUTE;

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn abi_masks() {
        assert_eq!(fs_rights_for_abi(1), 0x1fff);
        assert_eq!(fs_rights_for_abi(2), 0x3fff);
        assert_eq!(fs_rights_for_abi(4), 0x7fff);
        assert_eq!(fs_rights_for_abi(7), 0xffff);
        assert_eq!(scopes_for_abi(5), 0);
        assert_eq!(scopes_for_abi(7), 3);
    }

    #[test]
    fn golden_rules() {
        let r = rules_for(&["/tmp".to_string(), "/workspace".to_string()], false);
        assert_eq!(r.handled, 0xffff);
        assert_eq!(r.scopes, 3);
        assert_eq!(r.rules[0], PathRule { path: "/".into(), access: 0b1101 });
        assert_eq!(r.rules[1], PathRule { path: "/tmp".into(), access: 0x77bf });
        assert_eq!(r.rules[2].path, "/workspace");
        // No rule ever grants creating device nodes.
        assert!(r.rules.iter().all(|p| p.access & (MAKE_CHAR | MAKE_BLOCK) == 0));
        // Nothing outside the writable set may be written.
        for p in &r.rules {
            if p.access & WRITE_FILE != 0 {
                assert!(
                    p.path.starts_with("/tmp") || p.path.starts_with("/workspace") || p.path.starts_with("/dev/"),
                    "{}",
                    p.path
                );
            }
        }
    }

    #[test]
    fn golden_rules_with_a_tool_allowlist() {
        let writable = ["/tmp".to_string(), "/workspace".to_string()];
        let open = rules_for(&writable, false);
        let listed = rules_for(&writable, true);
        assert_eq!(listed.handled, 0xffff, "EXECUTE stays handled, so it is denied unless granted");
        assert_eq!(listed.rules[0], PathRule { path: "/".into(), access: 0b1100 });
        assert_eq!(listed.rules[1], PathRule { path: "/tmp".into(), access: 0x77be });
        assert_eq!(listed.rules.len(), open.rules.len());
        for (a, b) in listed.rules.iter().zip(&open.rules) {
            assert_eq!(a.path, b.path);
            assert_eq!(a.access, b.access & !EXECUTE, "{}", a.path);
        }
        // No tree-wide rule grants EXECUTE: it comes only from file-level rules.
        assert!(listed.rules.iter().all(|p| p.access & EXECUTE == 0));
    }
}
