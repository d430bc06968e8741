//! The `[tools]` part of a policy, compiled: which executables the kernel lets run, and
//! the limits some of them run under.
//!
//! - Patterns are absolute paths; `*` (any run of characters, none included) and `?` (one
//!   character) may appear in the last component only, so a pattern names files of one
//!   directory and can be expanded by listing that directory.
//! - [`ToolsPlan`] is what the jail gets: the allow patterns (expanded inside the sandbox's
//!   own filesystem view, where they become file-level Landlock EXECUTE rules) and the
//!   limits by pattern.
//! - [`elf_interpreter`] reads an ELF file's `PT_INTERP` (the dynamic loader the kernel
//!   opens with exec semantics), which must be executable too for the tool to start.
//!
//! Pure: no syscalls; the readers are the caller's.

use std::io::{self, Read, Seek, SeekFrom};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::model::{check_abs, Tools};

/// The smallest per-tool memory cap: below it a dynamic binary cannot even start.
pub const MIN_TOOL_MEMORY: u64 = 4 << 20;

/// One executable pattern, split where the glob may be: a literal directory and a last
/// component that may hold `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The literal directory, absolute ("/" for a file in the root).
    pub dir: String,
    /// The last component: a literal name or a glob.
    pub name: String,
}

impl Pattern {
    /// Checks and splits `text`; `field` names it in errors.
    pub fn parse(field: &str, text: &str) -> Result<Pattern, PolicyError> {
        check_abs(field, text)?;
        if text.ends_with('/') {
            return Err(PolicyError::invalid(
                field,
                format!(
                    "{text:?} ends with /; name executables, not directories (for all of one directory write {}*)",
                    text
                ),
            ));
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\')) {
            return Err(PolicyError::invalid(
                field,
                format!("{text:?}: {c:?} is not supported; patterns know only * and ? (list each path otherwise)"),
            ));
        }
        let (dir, name) = text.rsplit_once('/').unwrap_or(("", text));
        if dir.contains(['*', '?']) {
            return Err(PolicyError::invalid(
                field,
                format!("{text:?}: * and ? may appear in the last component only; write the directory in full"),
            ));
        }
        if name.is_empty() {
            return Err(PolicyError::invalid(field, format!("{text:?} has an empty file name")));
        }
        Ok(Pattern { dir: if dir.is_empty() { "/".into() } else { dir.to_string() }, name: name.to_string() })
    }

    /// Whether the last component is a glob (else it names one file).
    pub fn is_glob(&self) -> bool {
        self.name.contains(['*', '?'])
    }

    /// Whether `name`, an entry of [`Pattern::dir`], matches the last component.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.name.as_bytes(), name.as_bytes())
    }

    /// The path of `name` in [`Pattern::dir`].
    pub fn join(&self, name: &str) -> String {
        if self.dir == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.dir)
        }
    }
}

/// `*` matches any run of bytes (none included), `?` exactly one; everything else itself.
/// Iterative with one backtrack point, so it is linear in practice and never recursive.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A per-tool limit, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolLimit {
    /// The `tools.allow` pattern it applies to.
    pub pattern: String,
    /// Wall-clock time from the exec to SIGKILL of the tool and everything it started.
    pub timeout: Option<Duration>,
    /// Memory cap (a nested cgroup) of the tool and everything it starts.
    pub memory: Option<u64>,
}

/// The tools part of a sandbox's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolsPlan {
    /// Executable patterns; empty means every visible executable may run.
    pub allow: Vec<String>,
    /// Limits, each keyed by one of `allow`.
    pub limits: Vec<ToolLimit>,
}

impl ToolsPlan {
    pub fn compile(tools: &Tools) -> ToolsPlan {
        ToolsPlan {
            allow: tools.allow.clone(),
            limits: tools
                .limits
                .iter()
                .map(|(pattern, l)| ToolLimit {
                    pattern: pattern.clone(),
                    timeout: l.timeout.map(|t| t.0),
                    memory: l.memory.map(|m| m.0),
                })
                .collect(),
        }
    }

    /// Whether exec is restricted to the listed tools.
    pub fn restricts_exec(&self) -> bool {
        !self.allow.is_empty()
    }
}

/// Checks `[tools]`: well-formed patterns, no duplicates, limits keyed by an allow pattern
/// and in range.
pub fn validate(tools: &Tools) -> Result<(), PolicyError> {
    for (i, a) in tools.allow.iter().enumerate() {
        Pattern::parse("tools.allow", a)?;
        if tools.allow[..i].contains(a) {
            return Err(PolicyError::invalid("tools.allow", format!("{a} is listed twice; keep one entry")));
        }
    }
    for (key, limits) in &tools.limits {
        let field = format!("tools.limits.{key:?}");
        if !tools.allow.contains(key) {
            let hint = if tools.allow.is_empty() {
                "limits apply to allowed tools: list it in tools.allow too".to_string()
            } else {
                format!("write it exactly as one of tools.allow ({})", tools.allow.join(", "))
            };
            return Err(PolicyError::invalid(field, format!("{key} is not a tools.allow pattern; {hint}")));
        }
        if limits.timeout.is_none() && limits.memory.is_none() {
            return Err(PolicyError::invalid(field, "sets no limit; give timeout, memory or both, or remove it"));
        }
        if let Some(t) = limits.timeout {
            if t.0.is_zero() {
                return Err(PolicyError::invalid(field, "timeout must be more than zero; omit it for no timeout"));
            }
        }
        if let Some(m) = limits.memory {
            if m.0 < MIN_TOOL_MEMORY {
                return Err(PolicyError::invalid(field, "memory must be at least 4MiB"));
            }
        }
    }
    Ok(())
}

/// The longest `PT_INTERP` accepted (the kernel's own bound is PATH_MAX).
const MAX_INTERP: u64 = 4096;
const PT_INTERP: u32 = 3;

/// The program interpreter (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`) of an ELF
/// executable; `None` when the file is not ELF (a script) or is statically linked.
/// 32- and 64-bit, either byte order. Malformed headers are errors.
pub fn elf_interpreter<R: Read + Seek>(file: &mut R) -> io::Result<Option<String>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed ELF file: {what}"));
    let mut ident = [0u8; 64];
    let got = read_up_to(file, &mut ident)?;
    if got < 16 || &ident[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown class")),
    };
    let big = match ident[5] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown byte order")),
    };
    let u16_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1]];
        if big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    };
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        if big {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        }
    };
    let header_len = if wide { 64 } else { 52 };
    if got < header_len {
        return Err(bad("short header"));
    }
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(&ident, 32), u16_at(&ident, 54) as usize, u16_at(&ident, 56) as usize)
    } else {
        (u32_at(&ident, 28) as u64, u16_at(&ident, 42) as usize, u16_at(&ident, 44) as usize)
    };
    let min_entry = if wide { 56 } else { 32 };
    if phnum == 0 {
        return Ok(None);
    }
    if phentsize < min_entry || phnum > 4096 {
        return Err(bad("program header table"));
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    if read_up_to(file, &mut table)? < table.len() {
        return Err(bad("truncated program headers"));
    }
    for entry in table.chunks_exact(phentsize) {
        if u32_at(entry, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (u64_at(entry, 8), u64_at(entry, 32))
        } else {
            (u32_at(entry, 4) as u64, u32_at(entry, 16) as u64)
        };
        if size == 0 || size > MAX_INTERP {
            return Err(bad("PT_INTERP size"));
        }
        let mut path = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset))?;
        if read_up_to(file, &mut path)? < path.len() {
            return Err(bad("truncated PT_INTERP"));
        }
        // The kernel wants it NUL-terminated; take what precedes the NUL.
        let end = path.iter().position(|&b| b == 0).ok_or_else(|| bad("PT_INTERP is not NUL-terminated"))?;
        let text = String::from_utf8(path[..end].to_vec()).map_err(|_| bad("PT_INTERP is not UTF-8"))?;
        if text.is_empty() {
            return Err(bad("empty PT_INTERP"));
        }
        return Ok(Some(text));
    }
    Ok(None)
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_toml;
    use pretty_assertions::assert_eq;

    #[test]
    fn glob_matching() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("python3*", "python3"));
        assert!(m("python3*", "python3.11"));
        assert!(m("python3*", "python3-config"));
        assert!(!m("python3*", "python2"));
        assert!(!m("python3*", "xpython3"));
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("?s", "ls"));
        assert!(!m("?s", "s"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abbbc"));
        assert!(!m("a*b*c", "abcb"));
        assert!(m("*.py", ".py"));
        assert!(m("sh", "sh"));
        assert!(!m("sh", "bash"));
        assert!(!m("", "x"));
        // Pathological input stays fast (one backtrack point).
        assert!(!m(&"*a".repeat(50), &"a".repeat(40)));
    }

    #[test]
    fn patterns_split_and_refuse() {
        assert_eq!(
            Pattern::parse("f", "/usr/bin/python3*").unwrap(),
            Pattern { dir: "/usr/bin".into(), name: "python3*".into() }
        );
        assert_eq!(Pattern::parse("f", "/init").unwrap(), Pattern { dir: "/".into(), name: "init".into() });
        assert!(!Pattern::parse("f", "/bin/sh").unwrap().is_glob());
        assert_eq!(Pattern::parse("f", "/bin/sh").unwrap().join("sh"), "/bin/sh");
        assert_eq!(Pattern::parse("f", "/init").unwrap().join("init"), "/init");
        for (bad, hint) in [
            ("python3", "absolute"),
            ("/usr/*/python3", "last component"),
            ("/usr/bin/", "not directories"),
            ("/usr/bin/py[23]", "only * and ?"),
            ("/usr/bin/{a,b}", "only * and ?"),
            ("/usr/../bin/sh", ". or .."),
        ] {
            let err = Pattern::parse("tools.allow", bad).unwrap_err().to_string();
            assert!(err.contains(hint) && err.starts_with("tools.allow"), "{bad}: {err}");
        }
    }

    fn refused(doc: &str) -> String {
        parse_toml(doc, "p.toml").unwrap_err().to_string()
    }

    #[test]
    fn tools_validate() {
        let ok = parse_toml(
            "[tools]\nallow = [\"/usr/bin/python3*\", \"/bin/sh\"]\n[tools.limits.\"/usr/bin/python3*\"]\ntimeout = \"2s\"\nmemory = \"64MiB\"\n",
            "p",
        )
        .unwrap();
        let plan = ToolsPlan::compile(&ok.tools);
        assert_eq!(
            plan.limits,
            vec![ToolLimit {
                pattern: "/usr/bin/python3*".into(),
                timeout: Some(Duration::from_secs(2)),
                memory: Some(64 << 20)
            }]
        );
        assert!(plan.restricts_exec());
        assert!(!ToolsPlan::default().restricts_exec());

        let err = refused("[tools]\nallow = [\"/bin/sh\"]\n[tools.limits.\"/bin/bash\"]\ntimeout = \"1s\"\n");
        assert!(err.contains("not a tools.allow pattern") && err.contains("/bin/sh"), "{err}");
        let err = refused("[tools.limits.\"/bin/sh\"]\ntimeout = \"1s\"\n");
        assert!(err.contains("list it in tools.allow"), "{err}");
        let err = refused("[tools]\nallow = [\"/bin/sh\"]\n[tools.limits.\"/bin/sh\"]\nmemory = \"1MiB\"\n");
        assert!(err.contains("at least 4MiB"), "{err}");
        let err = refused("[tools]\nallow = [\"/bin/sh\"]\n[tools.limits.\"/bin/sh\"]\ntimeout = \"0s\"\n");
        assert!(err.contains("more than zero"), "{err}");
        let err = refused("[tools]\nallow = [\"/bin/sh\"]\n[tools.limits.\"/bin/sh\"]\n");
        assert!(err.contains("sets no limit"), "{err}");
        let err = refused("[tools]\nallow = [\"/bin/sh\", \"/bin/sh\"]\n");
        assert!(err.contains("twice"), "{err}");
        let err = refused("[tools]\nallow = [\"/usr/*/sh\"]\n");
        assert!(err.contains("last component"), "{err}");
        let err = refused("[tools]\nallow = [\"sh\"]\n");
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn interpreter_of_bin_true() {
        let mut f = std::fs::File::open("/bin/true").unwrap();
        let interp = elf_interpreter(&mut f).unwrap().expect("/bin/true is dynamically linked");
        assert!(interp.starts_with('/') && interp.contains("ld-"), "{interp}");
        assert!(std::path::Path::new(&interp).exists(), "{interp}");
    }

    #[test]
    fn interpreter_of_non_elf_and_malformed() {
        let mut script = io::Cursor::new(b"#!/bin/sh\necho hi\n".to_vec());
        assert_eq!(elf_interpreter(&mut script).unwrap(), None);
        let mut empty = io::Cursor::new(Vec::new());
        assert_eq!(elf_interpreter(&mut empty).unwrap(), None);
        // A 64-bit little-endian header whose program headers lie past the end.
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[32..40].copy_from_slice(&4096u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&1u16.to_le_bytes());
        assert!(elf_interpreter(&mut io::Cursor::new(h.clone())).is_err());
        // The same with one PT_INTERP entry pointing at "/ld.so\0".
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[0..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        ph[32..40].copy_from_slice(&7u64.to_le_bytes());
        h.extend(ph);
        h.extend(b"/ld.so\0");
        assert_eq!(elf_interpreter(&mut io::Cursor::new(h)).unwrap().as_deref(), Some("/ld.so"));
    }
}
