//! Exec questions: `tools.allow` patterns (absolute paths, `*` and `?` in the last
//! component only) and the filesystem that must show the file.
//!
//! The matcher here is explain's own until the enforcement's matcher lands (it is being
//! written alongside the tool allowlist); then this one should call it.

use crate::model::Policy;
use crate::plan::HostView;

use super::fs::{executable, locate, read_reason, rule};
use super::{Answer, ExplainError};

/// Whether `pattern` (an absolute path whose last component may hold `*` and `?`) matches
/// the absolute `path`. `*` and `?` never match a `/`; the directory part is literal.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    match (pattern.rsplit_once('/'), path.rsplit_once('/')) {
        (Some((pdir, pname)), Some((dir, name))) => pdir == dir && glob(pname.as_bytes(), name.as_bytes()),
        _ => false,
    }
}

/// Glob over one path component: `*` any run of bytes, `?` one byte, others literal.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (pattern index after *, s index it matched up to)
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((after, matched)) => {
                    pi = after;
                    si = matched + 1;
                    star = Some((after, matched + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

pub(super) fn exec(policy: &Policy, host: &HostView, path: &str) -> Result<Answer, ExplainError> {
    let (place, mut notes) = locate(policy, host, path)?;
    let question = format!("exec {path}");
    let tools = &policy.tools;
    if !executable(&place) {
        let hint = if super::fs::runtime_fixed(&place) {
            "this is fixed by the runtime; run executables from the system directories, /workspace or /tmp".to_string()
        } else {
            format!("the sandbox must see the file first; see `safehouse policy explain --read {path}`")
        };
        let reason = if executable_mount_only(&place) {
            format!("{path} is on a noexec mount (procfs, sysfs and /dev)")
        } else {
            read_reason(&place, path)
        };
        return Ok(Answer { question, allowed: false, rule: rule(&place), reason, hint, notes });
    }
    if tools.allow.is_empty() {
        return Ok(Answer {
            question,
            allowed: true,
            rule: rule(&place),
            reason: format!(
                "tools.allow is empty, so any executable the sandbox can see may run; {}",
                read_reason(&place, path)
            ),
            hint: format!("to allow only some executables, list them in tools.allow, e.g. [{path:?}]"),
            notes,
        });
    }
    let Some(index) = tools.allow.iter().position(|p| pattern_matches(p, path)) else {
        return Ok(Answer {
            question,
            allowed: false,
            rule: "tools.allow (no pattern matches)".into(),
            reason: format!("{path} matches none of the {} tools.allow patterns", tools.allow.len()),
            hint: format!("to allow it, add {path:?} to tools.allow"),
            notes,
        });
    };
    let pattern = &tools.allow[index];
    for (key, limits) in &tools.limits {
        if pattern_matches(key, path) {
            let mut parts = Vec::new();
            if let Some(t) = limits.timeout {
                parts.push(format!("timeout {}", crate::units::format_duration(t.0)));
            }
            if let Some(m) = limits.memory {
                parts.push(format!("memory {}", crate::units::format_size(m.0)));
            }
            notes.push(format!("tools.limits.{key:?} applies: {}", parts.join(", ")));
        }
    }
    Ok(Answer {
        question,
        allowed: true,
        rule: format!("tools.allow[{index}] = {pattern:?}"),
        reason: format!("{path} matches the pattern {pattern:?}; {}", read_reason(&place, path)),
        hint: format!("to deny it, remove {pattern:?} from tools.allow"),
        notes,
    })
}

fn executable_mount_only(place: &super::fs::Place) -> bool {
    use super::fs::Place;
    matches!(place, Place::Proc | Place::ProcReadOnly(_) | Place::Sys | Place::Device(_) | Place::DevPts)
}
