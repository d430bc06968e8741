//! `tools.limits` on the host side: the tool-limits part of the one exec pipeline
//! ([`crate::execwatch`]), which `safehouse run` and the daemon both run.
//!
//! Both stop every exec of the sandbox on a seccomp notification and identify the file
//! inside the sandbox's root by (dev, ino) (never by a host path). When it is a limited
//! tool, the [`Limiter`] moves the caller into a new cgroup with the tool's memory cap,
//! nested in the sandbox's (or in the enclosing tool's, so a limited tool cannot shed its
//! limits by starting another), and arms its timeout, before the exec continues.
//!
//! A tool cgroup is named `tool-<n>-<limit index>-<deadline in Unix ms, 0 for none>`: a
//! restarted daemon finds the cgroups of the tools still running ([`Limiter::adopt`]),
//! re-arms their timeouts and removes them when they end.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use safehouse_policy::tools::ToolLimit;

use crate::cgroup::{self, Cgroup, CgroupSupport};

/// The limited tools' files by `(dev, ino)` in the sandbox: index into `tools.limits`.
pub type ToolTable = BTreeMap<(u64, u64), usize>;

/// What happened to one limited tool run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ToolEvent {
    /// The `tools.allow` pattern it matched.
    pub tool: String,
    /// Its host pid at exec time.
    pub pid: i32,
    /// Killed at its `timeout`.
    pub timed_out: bool,
    /// Killed by the OOM killer at its `memory` cap.
    pub oom_killed: bool,
    /// The cgroup (its last component) the process was in when it exec'd the tool, when
    /// not the sandbox's own, e.g. a daemon command's `cmd-N`; a nested tool inherits its
    /// enclosing tool's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The limited tools' files, as the sandbox side sends them to the host: `(limit index,
/// dev, ino)` as text lines after a `T`.
pub fn encode_table(entries: impl IntoIterator<Item = (usize, u64, u64)>) -> Vec<u8> {
    let mut out = b"T\n".to_vec();
    for (i, dev, ino) in entries {
        out.extend(format!("{i} {dev} {ino}\n").into_bytes());
    }
    out
}

/// Parses [`encode_table`]'s output; `limits` bounds the indexes.
pub fn decode_table(msg: &[u8], limits: usize) -> Result<ToolTable, String> {
    let text = std::str::from_utf8(msg).map_err(|_| "tool table is not text".to_string())?;
    let body = text.strip_prefix("T\n").ok_or("expected the tool table, got another message")?;
    let mut table = BTreeMap::new();
    for line in body.lines() {
        let f: Vec<u64> =
            line.split(' ').map(|x| x.parse::<u64>()).collect::<Result<_, _>>().map_err(|_| "bad tool table line")?;
        match f.as_slice() {
            [i, dev, ino] if (*i as usize) < limits => {
                table.insert((*dev, *ino), *i as usize);
            }
            _ => return Err("bad tool table line".into()),
        }
    }
    Ok(table)
}

/// One nested cgroup of a running tool.
struct ToolCgroup {
    /// None once the tool has ended and its cgroup is removed.
    cg: Option<Box<dyn Cgroup>>,
    /// Index of the enclosing tool cgroup (a limited tool started by another).
    parent: Option<usize>,
    limit: usize,
    pid: i32,
    /// Unix ms; None without a timeout.
    deadline: Option<u64>,
    timed_out: bool,
    origin: Option<String>,
}

impl ToolCgroup {
    fn live(&self) -> Option<&dyn Cgroup> {
        self.cg.as_deref()
    }

    fn leaf(&self) -> Option<&str> {
        self.live().and_then(|cg| cg.name().rsplit('/').next())
    }
}

/// The tool cgroups of one sandbox. Not thread-safe by design: one thread (the
/// supervisor's or the watcher's) owns it.
pub struct Limiter {
    table: ToolTable,
    limits: Vec<ToolLimit>,
    /// The sandbox's cgroup; None when it could not be opened (every limited exec is then
    /// refused).
    parent: Option<Box<dyn Cgroup>>,
    support: CgroupSupport,
    tools: Vec<ToolCgroup>,
    events: Vec<ToolEvent>,
    next: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Limiter {
    /// A limiter nesting tool cgroups in the sandbox's cgroup `sandbox_cgroup`.
    pub fn new(table: ToolTable, limits: Vec<ToolLimit>, support: &CgroupSupport, sandbox_cgroup: &str) -> Limiter {
        let parent = cgroup::open(support, sandbox_cgroup).ok();
        Limiter { table, limits, parent, support: support.clone(), tools: Vec::new(), events: Vec::new(), next: 0 }
    }

    /// The limit index of the file `(dev, ino)`, if it is a limited tool.
    pub fn tool_of(&self, dev: u64, ino: u64) -> Option<usize> {
        self.table.get(&(dev, ino)).copied()
    }

    /// Whether any tool cgroup is still there (the owner then wakes now and then to reap).
    pub fn has_live(&self) -> bool {
        self.tools.iter().any(|t| t.live().is_some())
    }

    /// How long until the next timeout is due (None: no timeout armed).
    pub fn next_due(&self) -> Option<Duration> {
        let now = now_ms();
        self.tools
            .iter()
            .filter(|t| t.live().is_some() && !t.timed_out)
            .filter_map(|t| t.deadline)
            .map(|d| Duration::from_millis(d.saturating_sub(now)))
            .min()
    }

    /// Moves process `pid` into a new cgroup nested in the sandbox's (or in its current
    /// tool's) with limit `limit`'s memory cap and arms its timeout. Err: the errno the
    /// exec is refused with (the limits cannot be applied: fail closed). Ok: the run's
    /// origin (see [`ToolEvent::origin`]).
    pub fn confine(&mut self, pid: i32, limit: usize) -> Result<Option<String>, i32> {
        let l = self.limits[limit].clone();
        let within = self.current_tool(pid);
        let origin = match within {
            Some(i) => self.tools[i].origin.clone(),
            None => self.caller_cgroup(pid),
        };
        self.next += 1;
        let deadline = l.timeout.map(|t| now_ms() + t.as_millis() as u64);
        let name = format!("tool-{}-{limit}-{}", self.next, deadline.unwrap_or(0));
        let limits = cgroup::Limits { memory_bytes: l.memory, pids: None, cpus: None, only_limited: false };
        let made = match within {
            Some(i) => match self.tools[i].live() {
                Some(cg) => cg.child(&name, &limits),
                None => return Err(libc::EACCES),
            },
            None => match &self.parent {
                Some(p) => p.child(&name, &limits),
                None => return Err(libc::EACCES),
            },
        };
        let cg = made.map_err(|e| {
            eprintln!("safehouse: cannot apply tools.limits for {}: {e}; the exec is refused", l.pattern);
            libc::EACCES
        })?;
        if let Err(e) = cg.add_pid(pid) {
            eprintln!("safehouse: cannot apply tools.limits for {}: {e}; the exec is refused", l.pattern);
            let _ = cg.destroy();
            return Err(libc::EACCES);
        }
        self.tools.push(ToolCgroup {
            cg: Some(cg),
            parent: within,
            limit,
            pid,
            deadline,
            timed_out: false,
            origin: origin.clone(),
        });
        Ok(origin)
    }

    /// The last component of `pid`'s memory cgroup, when it is not the sandbox's own.
    fn caller_cgroup(&self, pid: i32) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let line = text.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory")))?;
        let leaf = line.rsplit('/').next()?;
        let own = self.parent.as_ref().and_then(|p| p.name().rsplit('/').next().map(str::to_string));
        (Some(leaf) != own.as_deref() && !leaf.is_empty()).then(|| leaf.to_string())
    }

    /// The live tool cgroup `pid` is in, from its /proc/PID/cgroup.
    fn current_tool(&self, pid: i32) -> Option<usize> {
        if !self.has_live() {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let leaf = text.lines().filter_map(|l| l.rsplit('/').next()).find(|c| c.starts_with("tool-"))?;
        self.tools.iter().position(|t| t.leaf() == Some(leaf))
    }

    /// After a daemon restart: takes over the tool cgroups left in the sandbox's cgroup
    /// (their names carry the limit and the deadline), so their timeouts fire and they are
    /// removed when they end. Returns how many were adopted.
    pub fn adopt(&mut self) -> usize {
        let mut queue: Vec<Option<usize>> = vec![None];
        while let Some(enclosing) = queue.pop() {
            let holder = match enclosing {
                None => self.parent.as_deref(),
                Some(i) => self.tools[i].live(),
            };
            let Some(holder) = holder else { continue };
            let path = holder.name().to_string();
            for (leaf, cg) in tool_children(&self.support, holder) {
                let Some((n, limit, deadline)) = parse_tool_name(&leaf) else { continue };
                if limit >= self.limits.len() {
                    let _ = cg.map(|c| c.destroy());
                    continue;
                }
                let Some(cg) = cg else { continue };
                debug_assert!(cg.name().starts_with(&path));
                self.next = self.next.max(n);
                let pid = cg.pids().ok().and_then(|p| p.first().copied()).unwrap_or(0);
                self.tools.push(ToolCgroup {
                    cg: Some(cg),
                    parent: enclosing,
                    limit,
                    pid,
                    deadline: (deadline > 0).then_some(deadline),
                    timed_out: false,
                    origin: None,
                });
                queue.push(Some(self.tools.len() - 1));
            }
        }
        self.tools.len()
    }

    /// Kills tools past their deadline, with everything nested in them.
    pub fn expire(&mut self) {
        let now = now_ms();
        for i in 0..self.tools.len() {
            let t = &self.tools[i];
            if t.live().is_none() || t.timed_out || t.deadline.is_none_or(|d| d > now) {
                continue;
            }
            self.tools[i].timed_out = true;
            // Outermost first: a tool waiting for a nested one must die by the signal, not
            // see its child die first and exit on its own.
            for j in self.subtree(i) {
                if let Some(cg) = self.tools[j].live() {
                    let _ = cg.kill_all();
                }
            }
        }
    }

    /// `i` and every tool cgroup nested in it, parents first.
    fn subtree(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        for (j, t) in self.tools.iter().enumerate().skip(i + 1) {
            if t.parent.is_some_and(|p| out.contains(&p)) {
                out.push(j);
            }
        }
        out
    }

    /// Removes the cgroups of tools that have ended (children before parents).
    pub fn reap(&mut self) {
        for i in (0..self.tools.len()).rev() {
            let has_live_child = self.tools.iter().any(|t| t.live().is_some() && t.parent == Some(i));
            if has_live_child || !self.tools[i].live().is_some_and(|cg| cg.is_empty()) {
                continue;
            }
            self.retire(i);
        }
        while self.tools.last().is_some_and(|t| t.live().is_none()) {
            self.tools.pop();
        }
    }

    fn retire(&mut self, i: usize) {
        let t = &mut self.tools[i];
        let Some(cg) = t.cg.take() else { return };
        let oom_killed = cg.oom_kills().unwrap_or(0) > 0;
        self.events.push(ToolEvent {
            tool: self.limits[t.limit].pattern.clone(),
            pid: t.pid,
            timed_out: t.timed_out,
            oom_killed,
            origin: t.origin.clone(),
        });
        let _ = cg.destroy();
    }

    /// The runs that ended since the last call.
    pub fn take_events(&mut self) -> Vec<ToolEvent> {
        std::mem::take(&mut self.events)
    }

    /// The limit of a finished run, for messages.
    pub fn limit_of(&self, tool: &str) -> Option<&ToolLimit> {
        self.limits.iter().find(|l| l.pattern == tool)
    }

    /// The sandbox is gone: kill and remove what is left, children first; returns every
    /// run not yet taken, ordered by pid.
    pub fn finish(mut self) -> Vec<ToolEvent> {
        for i in (0..self.tools.len()).rev() {
            if let Some(cg) = self.tools[i].live() {
                let _ = cg.kill_all();
                self.retire(i);
            }
        }
        let mut events = std::mem::take(&mut self.events);
        events.sort_by_key(|e| e.pid);
        events
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        // The handle on the sandbox's cgroup was opened, not made, here: its owner removes
        // it (a dropped handle would try to).
        if let Some(p) = self.parent.take() {
            std::mem::forget(p);
        }
    }
}

/// `tool-<n>-<limit>-<deadline ms>` → its three numbers.
fn parse_tool_name(leaf: &str) -> Option<(u64, usize, u64)> {
    let mut f = leaf.strip_prefix("tool-")?.split('-');
    let n = f.next()?.parse().ok()?;
    let limit = f.next()?.parse().ok()?;
    let deadline = f.next()?.parse().ok()?;
    f.next().is_none().then_some((n, limit, deadline))
}

/// The `tool-*` cgroups directly below `holder`, opened (None where opening failed).
fn tool_children(support: &CgroupSupport, holder: &dyn Cgroup) -> Vec<(String, Option<Box<dyn Cgroup>>)> {
    // v1: a tool cgroup exists in some hierarchies only (memory, pids, ...): the union.
    let mut names: Vec<String> = holder
        .dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("tool-"))
        .collect();
    names.sort();
    names.dedup();
    let path = holder.name();
    names.into_iter().map(|n| (n.clone(), cgroup::open_nested(support, &format!("{path}/{n}")).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_table_decodes_strictly() {
        let t = decode_table(b"T\n0 2049 1234\n1 2049 99\n", 2).unwrap();
        assert_eq!(t.get(&(2049, 1234)), Some(&0));
        assert_eq!(t.get(&(2049, 99)), Some(&1));
        assert!(decode_table(b"T\n", 0).unwrap().is_empty());
        for bad in [&b"X\n"[..], b"T\n2 1 1\n", b"T\n0 1\n", b"T\n0 a 1\n", b"T\n0 1 1 1\n"] {
            assert!(decode_table(bad, 2).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode_table(&encode_table([(1, 5, 6)]), 2).unwrap().get(&(5, 6)), Some(&1));
    }

    #[test]
    fn tool_cgroup_names_round_trip() {
        assert_eq!(parse_tool_name("tool-3-1-1700000000000"), Some((3, 1, 1_700_000_000_000)));
        assert_eq!(parse_tool_name("tool-3-0-0"), Some((3, 0, 0)));
        for bad in ["tool-3", "tool-a-1-0", "cmd-1", "tool-1-1-1-1"] {
            assert_eq!(parse_tool_name(bad), None, "{bad}");
        }
    }
}
