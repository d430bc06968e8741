//! Request paths: validated, made absolute (relative ones start at /workspace) and
//! cleaned lexically. `..` pops a component and stops at the root, as the kernel's
//! `RESOLVE_IN_ROOT` would; the kernel still clamps `..` found inside symlink targets.

use std::ffi::CString;

use super::error::{FileError, Result};
use super::{MAX_NAME_BYTES, MAX_PATH_BYTES};

/// Where relative request paths start.
const WORKDIR: &str = "workspace";

/// An absolute, cleaned path inside the sandbox: components are never empty, `.` or `..`,
/// and contain neither `/` nor NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SandboxPath {
    components: Vec<String>,
}

impl SandboxPath {
    pub(super) fn root() -> SandboxPath {
        SandboxPath { components: Vec::new() }
    }

    pub(super) fn parse(raw: &str) -> Result<SandboxPath> {
        let invalid = |reason: &str| FileError::InvalidPath { path: truncated(raw), reason: reason.into() };
        if raw.is_empty() {
            return Err(invalid("empty"));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(invalid(&format!("longer than {MAX_PATH_BYTES} bytes")));
        }
        if raw.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut components: Vec<String> = Vec::new();
        if !raw.starts_with('/') {
            components.push(WORKDIR.into());
        }
        for c in raw.split('/') {
            if c.len() > MAX_NAME_BYTES {
                return Err(invalid(&format!("a component is longer than {MAX_NAME_BYTES} bytes")));
            }
            match c {
                "" | "." => {}
                ".." => {
                    components.pop();
                }
                _ => components.push(c.into()),
            }
        }
        Ok(SandboxPath { components })
    }

    pub(super) fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The absolute path as shown to API callers.
    pub(super) fn display(&self) -> String {
        format!("/{}", self.components.join("/"))
    }

    /// The path relative to the root descriptor, `.` for the root itself.
    pub(super) fn relative(&self) -> CString {
        let s = if self.is_root() { ".".to_string() } else { self.components.join("/") };
        CString::new(s).expect("components were checked for NUL")
    }

    /// The containing directory and the last component; an error for the root.
    pub(super) fn split(&self) -> Result<(SandboxPath, &str)> {
        match self.components.split_last() {
            Some((name, parent)) => Ok((SandboxPath { components: parent.to_vec() }, name)),
            None => Err(FileError::InvalidPath { path: "/".into(), reason: "the sandbox root itself".into() }),
        }
    }

    pub(super) fn components(&self) -> &[String] {
        &self.components
    }

    /// The first `n` components.
    pub(super) fn prefix(&self, n: usize) -> SandboxPath {
        SandboxPath { components: self.components[..n].to_vec() }
    }
}

/// A name as a C string (names come from validated paths, so they hold no NUL).
pub(super) fn cname(name: &str) -> CString {
    CString::new(name).expect("components were checked for NUL")
}

/// `dir/name` for display, with a lossy rendering of non-UTF-8 names.
pub(super) fn join_display(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// At most 256 bytes of a raw path for error messages.
fn truncated(raw: &str) -> String {
    if raw.len() <= 256 {
        return raw.replace('\0', "\\0");
    }
    let mut end = 256;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", raw[..end].replace('\0', "\\0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(raw: &str) -> String {
        SandboxPath::parse(raw).unwrap().display()
    }

    #[test]
    fn relative_paths_start_at_workspace() {
        assert_eq!(shown("a/b.txt"), "/workspace/a/b.txt");
        assert_eq!(shown("."), "/workspace");
        assert_eq!(shown("/etc//passwd/"), "/etc/passwd");
    }

    #[test]
    fn dotdot_clamps_at_the_root() {
        assert_eq!(shown("../../../../etc/passwd"), "/etc/passwd");
        assert_eq!(shown("/.."), "/");
        assert_eq!(shown("/a/./b/../c"), "/a/c");
        assert!(SandboxPath::parse("/../..").unwrap().is_root());
        assert_eq!(SandboxPath::parse("/").unwrap().relative().to_str().unwrap(), ".");
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [String::new(), "a\0b".into(), "x".repeat(4097), format!("/{}", "n".repeat(256))] {
            assert!(matches!(SandboxPath::parse(&bad), Err(FileError::InvalidPath { .. })), "{bad:.20}");
        }
        assert!(SandboxPath::parse(&format!("/{}", "n".repeat(255))).is_ok());
    }

    #[test]
    fn split_gives_parent_and_name() {
        let p = SandboxPath::parse("/a/b/c").unwrap();
        let (parent, name) = p.split().unwrap();
        assert_eq!((parent.display().as_str(), name), ("/a/b", "c"));
        assert!(SandboxPath::root().split().is_err());
    }
}
