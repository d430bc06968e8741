//! `tools.allow`, expanded: the files each pattern names in a sandbox's view, each opened
//! beneath the sandbox's root (`RESOLVE_IN_ROOT`: symlinks and `..` stay inside it, so a
//! symlink grants its target), plus the ELF interpreter of each.
//!
//! One expansion, two users: the sandbox's setup (the `landlock` step grants EXECUTE on
//! exactly these files; the root is the sandbox's own `/`), and the daemon's exec watcher,
//! whose [`AllowList`] tells which execs the kernel refused (a `policy.violation`; the root
//! is the descriptor the setup handed over). One rule for both: a pattern that matches no
//! file is an error naming it, so a typo never silently grants nothing. Two patterns may
//! name the same file (merged /usr: `/bin/sh` and `/usr/bin/sh`): each matched.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use thiserror::Error;

use safehouse_policy::tools::{elf_interpreter, Pattern, ToolsPlan};
use safehouse_policy::PolicyError;
use safehouse_sys::files::{self as sf, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};

pub use crate::toollimit::ToolEvent;

/// Most files one sandbox grants (a glob over a huge directory is a mistake).
pub const MAX_GRANTS: usize = 16_384;

/// Why `tools.allow` cannot be expanded. Every message starts with `tools.allow: ` and
/// names the pattern (the daemon answers such a setup failure with 400, not 500).
#[derive(Debug, Error)]
pub enum ToolsError {
    #[error(transparent)]
    Pattern(#[from] PolicyError),
    #[error("tools.allow: {pattern}: cannot list {dir} in the sandbox: {source}")]
    List { pattern: String, dir: String, source: std::io::Error },
    #[error("tools.allow: {pattern}: {reason}")]
    File { pattern: String, reason: String },
    #[error("tools.allow: {pattern} matches no file in the sandbox; check the pattern (paths are the sandbox's, e.g. /usr/bin/python3)")]
    NoMatch { pattern: String },
    #[error("tools.allow: more than {MAX_GRANTS} files; list fewer tools")]
    TooMany,
}

/// One executable the sandbox may run.
pub struct Grant {
    /// The sandbox path it was found at (for messages).
    pub path: String,
    /// O_PATH descriptor of the file itself (symlinks followed inside the root).
    pub fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    /// Index into `tools.limits` when this file is a limited tool.
    pub limit: Option<usize>,
}

/// Expands `tools.allow` beneath `root`: the files each pattern names, plus the ELF
/// interpreter of each (the kernel opens it with exec semantics). A pattern that matches
/// no file is an error; a missing interpreter is not (that tool's exec then fails with
/// ENOENT, as it would outside).
pub fn expand(root: BorrowedFd<'_>, tools: &ToolsPlan) -> Result<Vec<Grant>, ToolsError> {
    let mut grants: Vec<Grant> = Vec::new();
    for text in &tools.allow {
        let pattern = Pattern::parse("tools.allow", text)?;
        let limit = tools.limits.iter().position(|l| &l.pattern == text);
        let mut matched = false;
        if pattern.is_glob() {
            let list_error = |source| ToolsError::List { pattern: text.clone(), dir: pattern.dir.clone(), source };
            let dir = open_beneath(root, &pattern.dir, libc::O_RDONLY | libc::O_DIRECTORY).map_err(list_error)?;
            let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(list_error)?;
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| pattern.matches(n))
                .collect();
            names.sort();
            for name in names {
                // Directories, devices and dangling links are not executables: skipped.
                if let Ok(grant) = open_file(root, &pattern.join(&name), limit) {
                    push(&mut grants, grant)?;
                    matched = true;
                }
            }
        } else {
            let grant =
                open_file(root, text, limit).map_err(|reason| ToolsError::File { pattern: text.clone(), reason })?;
            push(&mut grants, grant)?;
            matched = true;
        }
        if !matched {
            return Err(ToolsError::NoMatch { pattern: text.clone() });
        }
    }
    let mut interps: Vec<String> = Vec::new();
    for g in &grants {
        let Ok(mut f) = File::open(format!("/proc/self/fd/{}", g.fd.as_raw_fd())) else { continue };
        if let Ok(Some(interp)) = elf_interpreter(&mut f) {
            if !interps.contains(&interp) {
                interps.push(interp);
            }
        }
    }
    for interp in interps {
        if let Ok(grant) = open_file(root, &interp, None) {
            push(&mut grants, grant)?;
        }
    }
    Ok(grants)
}

/// Adds `grant`, or merges it into the grant of the same file (one file reached by two
/// patterns: the first limit wins, patterns in order).
fn push(grants: &mut Vec<Grant>, grant: Grant) -> Result<(), ToolsError> {
    if let Some(same) = grants.iter_mut().find(|g| (g.dev, g.ino) == (grant.dev, grant.ino)) {
        same.limit = same.limit.or(grant.limit);
        return Ok(());
    }
    if grants.len() >= MAX_GRANTS {
        return Err(ToolsError::TooMany);
    }
    grants.push(grant);
    Ok(())
}

/// `path` (absolute, in the sandbox's view) opened beneath `root`.
fn open_beneath(root: BorrowedFd<'_>, path: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = CString::new(if rel.is_empty() { "." } else { rel })
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    sf::openat2(root, &rel, flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` O_PATH beneath `root`, following symlinks inside it; a regular file or
/// the reason it is not one.
fn open_file(root: BorrowedFd<'_>, path: &str, limit: Option<usize>) -> Result<Grant, String> {
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let fd = open_beneath(root, path, libc::O_PATH).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file in the sandbox".to_string(),
        _ => e.to_string(),
    })?;
    let st = sf::fstat(fd.as_fd()).map_err(|e| e.to_string())?;
    if st.file_type() != libc::S_IFREG {
        return Err("not a regular file; list executables, not directories".into());
    }
    Ok(Grant { path: path.to_string(), fd, dev: st.dev, ino: st.ino, limit })
}

/// The files a sandbox may exec, by (device, inode), as Landlock's rules name them: a
/// renamed or linked tool is still the tool, a file put in a globbed directory later is
/// not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    inodes: HashSet<(u64, u64)>,
}

impl AllowList {
    /// The allow list of `tools` beneath `root` (a sandbox's root directory).
    pub fn expand(root: BorrowedFd<'_>, tools: &ToolsPlan) -> Result<AllowList, ToolsError> {
        Ok(AllowList::of(&expand(root, tools)?))
    }

    pub fn of(grants: &[Grant]) -> AllowList {
        AllowList { inodes: grants.iter().map(|g| (g.dev, g.ino)).collect() }
    }

    /// Whether the file `(dev, ino)` may be exec'd.
    pub fn allows(&self, dev: u64, ino: u64) -> bool {
        self.inodes.contains(&(dev, ino))
    }
}

/// The limited tools' files, as the host side needs them (crate::toollimit::encode_table).
pub(crate) fn encode_table(grants: &[Grant]) -> Vec<u8> {
    crate::toollimit::encode_table(grants.iter().filter_map(|g| g.limit.map(|i| (i, g.dev, g.ino))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use safehouse_policy::tools::ToolLimit;

    fn plan(allow: &[&str]) -> ToolsPlan {
        ToolsPlan { allow: allow.iter().map(|s| s.to_string()).collect(), limits: Vec::new() }
    }

    fn host_root() -> OwnedFd {
        File::open("/").unwrap().into()
    }

    fn stat(path: &str) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn files_globs_and_interpreters_are_granted() {
        let root = host_root();
        let a = AllowList::expand(root.as_fd(), &plan(&["/bin/tru?", "/usr/bin/env"])).unwrap();
        let (dev, ino) = stat("/bin/true");
        assert!(a.allows(dev, ino));
        let (dev, ino) = stat("/usr/bin/env");
        assert!(a.allows(dev, ino));
        let (dev, ino) = stat("/bin/ls");
        assert!(!a.allows(dev, ino));
        // The dynamic loader of an allowed dynamic binary is executable too.
        let mut env = File::open("/usr/bin/env").unwrap();
        if let Ok(Some(interp)) = elf_interpreter(&mut env) {
            let (dev, ino) = stat(&interp);
            assert!(a.allows(dev, ino), "{interp}");
        }
    }

    #[test]
    fn two_patterns_naming_one_file_are_both_matched() {
        // Merged /usr: /bin is a symlink to usr/bin, so both name one file. Without it,
        // a hard-to-get-wrong stand-in: the same path twice through a symlinked dir.
        let dir = std::env::temp_dir().join(format!("safehouse-tools-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/tool"), b"#!/bin/sh\n").unwrap();
        let _ = std::os::unix::fs::symlink("real", dir.join("link"));
        let d = dir.display();
        let mut tools = plan(&[&format!("{d}/real/tool"), &format!("{d}/link/tool"), "/bin/sh", "/usr/bin/sh"]);
        tools.limits.push(ToolLimit { pattern: format!("{d}/link/tool"), timeout: None, memory: Some(1 << 20) });
        let grants = expand(host_root().as_fd(), &tools).unwrap();
        let tool = grants.iter().find(|g| g.path.ends_with("real/tool")).unwrap();
        // One grant for the file, carrying the limit the second pattern gave it.
        assert_eq!(tool.limit, Some(0));
        assert_eq!(grants.iter().filter(|g| (g.dev, g.ino) == (tool.dev, tool.ino)).count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_an_error_naming_it() {
        let root = host_root();
        for (pattern, want) in [
            ("/usr/bin/no-such-tool", "tools.allow: /usr/bin/no-such-tool: no such file in the sandbox"),
            ("/usr/bin/no-such-*", "tools.allow: /usr/bin/no-such-* matches no file in the sandbox"),
            ("/usr/bin", "tools.allow: /usr/bin: not a regular file"),
            ("/no/such/dir/*", "tools.allow: /no/such/dir/*: cannot list /no/such/dir"),
        ] {
            let err = expand(root.as_fd(), &plan(&["/bin/true", pattern])).err().unwrap().to_string();
            assert!(err.starts_with(want), "{pattern}: {err}");
        }
    }

    #[test]
    fn paths_stay_beneath_the_root() {
        // A root whose /bin/true is not the host's: absolute symlinks and `..` past the
        // top resolve inside it.
        let dir = std::env::temp_dir().join(format!("safehouse-root-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/true"), b"").unwrap();
        let _ = std::os::unix::fs::symlink("/bin/true", dir.join("bin/abs"));
        let _ = std::os::unix::fs::symlink("../../../../bin/true", dir.join("bin/up"));
        let root: OwnedFd = File::open(&dir).unwrap().into();
        let grants = expand(root.as_fd(), &plan(&["/bin/abs", "/bin/up"])).unwrap();
        let mine = stat(dir.join("bin/true").to_str().unwrap());
        assert_eq!(grants.len(), 1);
        assert_eq!((grants[0].dev, grants[0].ino), mine);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
