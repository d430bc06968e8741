//! Denied execs as policy violations. With `tools.allow`, Landlock grants EXECUTE on the
//! files the patterns named when the sandbox started (and their ELF interpreters), and
//! the kernel fails every other `execve` with EACCES. The kernel does not tell the daemon,
//! but the exec watcher sees every exec request: this checks the requested file against
//! the same set, expanded the same way in the sandbox's view (beneath `/proc/<agent>/root`),
//! and an exec of any other file is a `policy.violation`.
//!
//! The check is by inode, like Landlock's rules: a renamed or linked tool is still the
//! tool, a file put in a globbed directory later is not. What it cannot see: an allowed
//! script whose `#!` interpreter is not allowed (the kernel denies the interpreter), and
//! a path the caller changes between the request and the kernel's read (docs/threat-model.md).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use safehouse_policy::tools::{elf_interpreter, Pattern};
use safehouse_sys::files as sys;

/// Most files one sandbox's patterns expand to (as in the jail).
const MAX_GRANTS: usize = 16_384;

/// The files a sandbox may exec, by (device, inode), and its root to resolve requests in.
pub(crate) struct AllowedExecs {
    root: OwnedFd,
    inodes: HashSet<(u64, u64)>,
}

fn resolve_flags() -> u64 {
    sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS
}

/// `path` (absolute, in the sandbox's view) opened beneath `root`, symlinks followed
/// inside it. `O_PATH`: the file itself is never opened (a path the sandbox chose may name
/// a FIFO or a device, where an open could block or act).
fn open_in(root: &OwnedFd, path: &str) -> Option<OwnedFd> {
    let rel = CString::new(path.trim_start_matches('/')).ok()?;
    let rel = if rel.as_bytes().is_empty() { CString::from(c".") } else { rel };
    sys::openat2(root.as_fd(), &rel, libc::O_PATH, 0, resolve_flags()).ok()
}

impl AllowedExecs {
    /// Expands `allow` beneath `root` (the sandbox's `/proc/<agent>/root`).
    pub(crate) fn expand(root: OwnedFd, allow: &[String]) -> AllowedExecs {
        let mut files: Vec<OwnedFd> = Vec::new();
        for text in allow {
            let Ok(pattern) = Pattern::parse("tools.allow", text) else { continue };
            if !pattern.is_glob() {
                files.extend(open_in(&root, text));
                continue;
            }
            let Ok(rel) = CString::new(pattern.dir.trim_start_matches('/')) else { continue };
            let rel = if rel.as_bytes().is_empty() { CString::from(c".") } else { rel };
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            let Ok(dir) = sys::openat2(root.as_fd(), &rel, flags, 0, resolve_flags()) else { continue };
            let mut budget = MAX_GRANTS;
            for (raw, _) in super::fswatch::scan(dir.as_fd(), &mut budget) {
                let name = String::from_utf8_lossy(&raw);
                if pattern.matches(&name) {
                    files.extend(open_in(&root, &pattern.join(&name)));
                }
            }
        }
        let mut inodes = HashSet::new();
        let mut interps = Vec::new();
        for f in files.iter().take(MAX_GRANTS) {
            let Ok(st) = sys::fstat(f.as_fd()) else { continue };
            if st.mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            inodes.insert((st.dev, st.ino));
            // A regular file (checked above): reopened for reading its ELF header.
            if let Ok(mut file) = File::open(format!("/proc/self/fd/{}", f.as_raw_fd())) {
                if let Ok(Some(interp)) = elf_interpreter(&mut file) {
                    interps.push(interp);
                }
            }
        }
        for interp in interps {
            if let Some(f) = open_in(&root, &interp) {
                if let Ok(st) = sys::fstat(f.as_fd()) {
                    inodes.insert((st.dev, st.ino));
                }
            }
        }
        AllowedExecs { root, inodes }
    }

    /// Whether the kernel refuses to exec `path` (as given to execve, relative to `cwd`):
    /// it names a file the patterns did not grant. A path that resolves to nothing is not
    /// a denial (ENOENT, as without tools.allow).
    pub(crate) fn denies(&self, path: &str, cwd: &str) -> bool {
        let full =
            if path.starts_with('/') { path.to_string() } else { format!("{}/{path}", cwd.trim_end_matches('/')) };
        let Some(f) = open_in(&self.root, &full) else { return false };
        match sys::fstat(f.as_fd()) {
            Ok(st) => !self.inodes.contains(&(st.dev, st.ino)),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_files_and_their_interpreter_pass_others_are_denied() {
        let root: OwnedFd = File::open("/").unwrap().into();
        let a = AllowedExecs::expand(root, &["/bin/tru?".to_string(), "/usr/bin/env".to_string()]);
        assert!(!a.denies("/bin/true", "/"));
        assert!(!a.denies("bin/true", "/"), "relative to the cwd");
        assert!(!a.denies("/usr/bin/env", "/tmp"));
        assert!(a.denies("/bin/ls", "/"));
        assert!(!a.denies("/no/such/file", "/"), "ENOENT is not a denial");
        // The dynamic loader of an allowed dynamic binary is executable too.
        let mut env = File::open("/usr/bin/env").unwrap();
        if let Ok(Some(interp)) = elf_interpreter(&mut env) {
            assert!(!a.denies(&interp, "/"), "{interp}");
        }
    }
}
