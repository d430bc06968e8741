//! Read and write questions: what the sandbox has at a path, found by replaying the mount
//! plan in order. The mount that decides is the *last* one made at the path or above it —
//! a later mount at a parent hides everything mounted beneath it before — which for the
//! plan's order (system dirs, runtime files, writable dirs, binds parents first, hidden
//! paths) is the most specific one, except where a bind covers a built-in writable dir.

use crate::model::{Control, Policy, Rootfs, Tools};
use crate::plan::{self, HostView, MountOp, RunRequest, DEVICES, WRITABLE_DIRS};

use super::{Answer, ExplainError};

/// What is at a sandbox path, and which rule put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// Nothing mounted there: the bare root tmpfs (`rootfs = "host"`).
    Absent,
    /// Inside the rootfs directory (`rootfs = DIR`), read-only.
    RootfsDir(String),
    /// Inside an image (`rootfs = "image:REF"`): writable, in the sandbox's own layer.
    Image(String),
    /// A host system directory under `rootfs = "host"`.
    SystemDir(String),
    /// A policy bind: `filesystem.read_only[i]` or `filesystem.read_write[i]`.
    PolicyBind { field: &'static str, index: usize, host: String, path: String, writable: bool },
    /// Any other bind (`--mount`, `--workdir`).
    OtherBind { host: String, path: String, writable: bool },
    /// /tmp, /var/tmp, /home/user, /workspace.
    BuiltinWritable(String),
    /// `filesystem.scratch[i]`.
    Scratch { index: usize, path: String },
    /// /etc/passwd, /etc/hosts...: written by the runtime, read-only.
    Generated(String),
    /// A host secret hidden under `rootfs = "host"` (/etc/shadow...).
    HostSecret(String),
    /// `filesystem.hidden[i]`.
    Hidden { index: usize, path: String },
    /// A /proc entry replaced by an empty file or directory.
    ProcMask(String),
    /// A /proc directory kept read-only.
    ProcReadOnly(String),
    /// The sandbox's own procfs.
    Proc,
    /// sysfs, read-only.
    Sys,
    /// A device node bound from the host.
    Device(String),
    /// /dev/shm: a tmpfs of its own.
    DevShm,
    /// /dev/pts and /dev/ptmx: the sandbox's own terminals.
    DevPts,
    /// Under /dev, anything else: not there.
    DevAbsent,
}

/// The place at `path`, and the symlinks followed to get there.
pub(super) fn locate(policy: &Policy, host: &HostView, path: &str) -> Result<(Place, Vec<String>), ExplainError> {
    // The tool and control sections play no part in the mount plan; set aside so a policy
    // this version would refuse for them can still be explained.
    let mut p = policy.clone();
    p.tools = Tools::default();
    p.control = Control::default();
    // An image's content is unknown here: any path that no mount decides is the image's.
    let image = match &p.filesystem.rootfs {
        Rootfs::Image(r) => Some(plan::ImageRoot {
            reference: r.clone(),
            layers: vec!["/".into()],
            home: "/root".into(),
            ..Default::default()
        }),
        _ => None,
    };
    let req = RunRequest { policy: p, image, ..Default::default() };
    let plan = plan::compile(&req, host)?;
    let mut via = Vec::new();
    let mut path = path.to_string();
    for _ in 0..8 {
        match place_in(&plan.ops, policy, &path) {
            Followed::Place(place) => return Ok((place, via)),
            Followed::Link { link, target } => {
                let rest = &path[link.len()..];
                let target_abs = if target.starts_with('/') {
                    target.trim_end_matches('/').to_string()
                } else {
                    format!("{}/{}", parent(&link).trim_end_matches('/'), target.trim_end_matches('/'))
                };
                let joined = format!("{target_abs}{rest}");
                via.push(format!("{link} is a symlink to {target}: {path} is {joined}"));
                path = joined;
            }
        }
    }
    Ok((Place::Absent, via))
}

enum Followed {
    Place(Place),
    Link { link: String, target: String },
}

fn parent(p: &str) -> &str {
    match p.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

/// `op_path` is `path` or one of its ancestors.
fn covers(op_path: &str, path: &str) -> bool {
    path == op_path || (path.starts_with(op_path) && path.as_bytes().get(op_path.len()) == Some(&b'/'))
}

fn place_in(ops: &[MountOp], policy: &Policy, path: &str) -> Followed {
    let fs = &policy.filesystem;
    let mut found: Option<Followed> = None;
    for op in ops {
        let hit = match op {
            MountOp::Bind { host, path: at, writable, dir } if covers(at, path) && (*dir || at == path) => {
                let index_in = |list: &[crate::model::Bind]| list.iter().position(|b| &b.path == at);
                Some(if plan::HOST_SYSTEM_DIRS.contains(&at.as_str()) && host == at {
                    Place::SystemDir(at.clone())
                } else if let (false, Some(index)) = (*writable, index_in(&fs.read_only)) {
                    Place::PolicyBind {
                        field: "read_only",
                        index,
                        host: host.clone(),
                        path: at.clone(),
                        writable: false,
                    }
                } else if let (true, Some(index)) = (*writable, index_in(&fs.read_write)) {
                    Place::PolicyBind {
                        field: "read_write",
                        index,
                        host: host.clone(),
                        path: at.clone(),
                        writable: true,
                    }
                } else {
                    Place::OtherBind { host: host.clone(), path: at.clone(), writable: *writable }
                })
            }
            MountOp::Symlink { target, path: at } if covers(at, path) => {
                found = Some(Followed::Link { link: at.clone(), target: target.clone() });
                None
            }
            MountOp::WritableDir { path: at } if covers(at, path) => Some(if WRITABLE_DIRS.contains(&at.as_str()) {
                Place::BuiltinWritable(at.clone())
            } else {
                let index = fs.scratch.iter().position(|s| s == at).unwrap_or(0);
                Place::Scratch { index, path: at.clone() }
            }),
            MountOp::Proc { path: at } if covers(at, path) => Some(Place::Proc),
            MountOp::Sysfs { path: at } if covers(at, path) => Some(Place::Sys),
            MountOp::Dev { path: at, devices, .. } if covers(at, path) => {
                let rest = path.strip_prefix(at.as_str()).unwrap_or("").trim_start_matches('/');
                let first = rest.split('/').next().unwrap_or("");
                Some(if rest.is_empty() {
                    Place::DevAbsent
                } else if devices.iter().any(|d| d == rest) {
                    Place::Device(path.to_string())
                } else if first == "shm" {
                    Place::DevShm
                } else if first == "pts" || rest == "ptmx" {
                    Place::DevPts
                } else {
                    Place::DevAbsent
                })
            }
            MountOp::Generated { path: at, .. } if at == path => Some(Place::Generated(at.clone())),
            MountOp::HideFile { path: at } if at == path => Some(Place::HostSecret(at.clone())),
            MountOp::HideDir { path: at } if covers(at, path) => Some(Place::HostSecret(at.clone())),
            MountOp::MaskWithNull { path: at } if at == path => Some(Place::ProcMask(at.clone())),
            MountOp::MaskDir { path: at } if covers(at, path) => Some(Place::ProcMask(at.clone())),
            MountOp::ReadOnlyDir { path: at } if covers(at, path) => Some(Place::ProcReadOnly(at.clone())),
            MountOp::Hide { path: at } if covers(at, path) => {
                let index = fs.hidden.iter().position(|h| h == at).unwrap_or(0);
                Some(Place::Hidden { index, path: at.clone() })
            }
            _ => None,
        };
        if let Some(place) = hit {
            found = Some(Followed::Place(place));
        }
    }
    found.unwrap_or_else(|| {
        Followed::Place(match &fs.rootfs {
            Rootfs::Host => Place::Absent,
            Rootfs::Dir(d) => Place::RootfsDir(d.clone()),
            Rootfs::Image(r) => Place::Image(r.clone()),
        })
    })
}

/// The rule that names a place, as the answer prints it.
pub(super) fn rule(place: &Place) -> String {
    match place {
        Place::Absent => "not in the sandbox (nothing is mounted there)".into(),
        Place::RootfsDir(d) => format!("filesystem.rootfs = {d:?}"),
        Place::Image(r) => format!("filesystem.rootfs = \"image:{r}\""),
        Place::SystemDir(d) => format!("filesystem.rootfs = \"host\" ({d}, read-only)"),
        Place::PolicyBind { field, index, host, path, .. } => {
            format!("filesystem.{field}[{index}] = {{ host = {host:?}, path = {path:?} }}")
        }
        Place::OtherBind { host, path, writable } => {
            format!("--mount {host}:{path}:{}", if *writable { "rw" } else { "ro" })
        }
        Place::BuiltinWritable(d) => format!("built-in writable directory {d}"),
        Place::Scratch { index, path } => format!("filesystem.scratch[{index}] = {path:?}"),
        Place::Generated(p) => format!("runtime-generated {p}"),
        Place::HostSecret(p) => format!("built-in hidden host secret {p}"),
        Place::Hidden { index, path } => format!("filesystem.hidden[{index}] = {path:?}"),
        Place::ProcMask(p) => format!("runtime mask {p}"),
        Place::ProcReadOnly(p) => format!("runtime: {p} is read-only"),
        Place::Proc => "runtime: /proc is the sandbox's own procfs".into(),
        Place::Sys => "runtime: /sys is read-only".into(),
        Place::Device(p) => format!("runtime device {p}"),
        Place::DevShm => "runtime: /dev/shm (a tmpfs capped by limits.disk)".into(),
        Place::DevPts => "runtime: /dev/pts (the sandbox's own terminals)".into(),
        Place::DevAbsent => "runtime: /dev holds only the listed devices, pts and shm".into(),
    }
}

/// Whether the sandbox sees what is at the place (contents may still be closed by the
/// host's permission bits on binds).
fn readable(place: &Place) -> bool {
    !matches!(
        place,
        Place::Absent | Place::HostSecret(_) | Place::Hidden { .. } | Place::ProcMask(_) | Place::DevAbsent
    )
}

fn writable(place: &Place) -> bool {
    matches!(
        place,
        Place::PolicyBind { writable: true, .. }
            | Place::OtherBind { writable: true, .. }
            | Place::BuiltinWritable(_)
            | Place::Scratch { .. }
            | Place::Image(_)
            | Place::Device(_)
            | Place::DevShm
            | Place::DevPts
    )
}

/// Places the runtime owns: no policy field changes what they are.
pub(super) fn runtime_fixed(place: &Place) -> bool {
    matches!(
        place,
        Place::Generated(_)
            | Place::ProcMask(_)
            | Place::ProcReadOnly(_)
            | Place::Proc
            | Place::Sys
            | Place::Device(_)
            | Place::DevShm
            | Place::DevPts
            | Place::DevAbsent
    )
}

/// Whether the mount allows exec (procfs, sysfs and the /dev tmpfs are noexec).
pub(super) fn executable(place: &Place) -> bool {
    readable(place)
        && !matches!(place, Place::Proc | Place::ProcReadOnly(_) | Place::Sys | Place::Device(_) | Place::DevPts)
}

/// Why a path at `place` is or is not readable.
pub(super) fn read_reason(place: &Place, path: &str) -> String {
    match place {
        Place::Absent => format!("{path} is not part of the sandbox: only the system directories, the writable directories and the policy's binds are"),
        Place::RootfsDir(d) => format!("{path} comes from the root filesystem directory {d} (if it exists there), read-only"),
        Place::Image(r) => format!("{path} comes from the image {r} (if it has it)"),
        Place::SystemDir(d) => format!("{path} is under {d}, one of the host's system directories, visible read-only"),
        Place::PolicyBind { host, path: at, .. } | Place::OtherBind { host, path: at, .. } => {
            format!("{path} is under {at}, the host's {host} bound into the sandbox (host permissions still apply)")
        }
        Place::BuiltinWritable(d) | Place::Scratch { path: d, .. } => {
            format!("{path} is under {d}, a directory of the sandbox's own writable layer")
        }
        Place::Generated(p) => format!("{p} is written by the runtime for the sandbox, not the host's"),
        Place::HostSecret(p) => format!("{p} is a host secret, always hidden with rootfs = \"host\": any access fails with EACCES"),
        Place::Hidden { path: h, .. } => format!("{h} is hidden by the policy: any access fails with EACCES"),
        Place::ProcMask(p) => format!("{p} reveals host kernel state; the runtime masks it (empty, nothing to read)"),
        Place::ProcReadOnly(p) => format!("{path} is under {p}, readable but never writable"),
        Place::Proc => format!("{path} is in the sandbox's own /proc: it shows the sandbox's processes only"),
        Place::Sys => format!("{path} is in /sys, mounted read-only"),
        Place::Device(p) => format!("{p} is a device node the sandbox may use"),
        Place::DevShm => format!("{path} is in /dev/shm, writable shared memory capped by limits.disk"),
        Place::DevPts => format!("{path} is one of the sandbox's own terminal devices"),
        Place::DevAbsent => format!("{path} is not one of the sandbox's devices ({})", DEVICES.join(", ")),
    }
}

pub(super) fn read(policy: &Policy, host: &HostView, path: &str) -> Result<Answer, ExplainError> {
    let (place, notes) = locate(policy, host, path)?;
    let allowed = readable(&place);
    let hint = match &place {
        Place::Absent => format!(
            "to make a host path visible there, add {{ host = \"/host/dir\", path = {:?} }} to filesystem.read_only",
            top(path)
        ),
        Place::Hidden { path: h, .. } => format!("to make it visible, remove {h:?} from filesystem.hidden"),
        Place::HostSecret(_) => {
            "host secrets are always hidden with rootfs = \"host\"; bind a copy elsewhere if the sandbox really needs it"
                .into()
        }
        _ if runtime_fixed(&place) => "this is fixed by the runtime; no policy field changes it".into(),
        Place::PolicyBind { field, index, .. } => {
            format!("to hide it, remove filesystem.{field}[{index}] or add {path:?} to filesystem.hidden")
        }
        _ => format!("to hide it, add {path:?} to filesystem.hidden"),
    };
    Ok(Answer {
        question: format!("read {path}"),
        allowed,
        rule: rule(&place),
        reason: read_reason(&place, path),
        hint,
        notes,
    })
}

pub(super) fn write(policy: &Policy, host: &HostView, path: &str) -> Result<Answer, ExplainError> {
    let (place, notes) = locate(policy, host, path)?;
    let allowed = writable(&place);
    let reason = match &place {
        _ if !readable(&place) => read_reason(&place, path),
        Place::PolicyBind { writable: true, host, path: at, .. }
        | Place::OtherBind { writable: true, host, path: at, .. } => {
            format!("{path} is under {at}, the host's {host} bound read-write: writes reach the host (host permissions still apply)")
        }
        Place::BuiltinWritable(d) | Place::Scratch { path: d, .. } => {
            format!("{path} is under {d}, writable; it lives in the writable layer, capped by limits.disk and limits.inodes")
        }
        Place::PolicyBind { host, path: at, .. } | Place::OtherBind { host, path: at, .. } => {
            format!("{path} is under {at}, the host's {host} bound read-only: writes fail with EROFS")
        }
        Place::Device(p) => format!("{p} is a device node the sandbox may write"),
        Place::Image(r) => format!(
            "{path} comes from the image {r}; writes land in the sandbox's own layer (capped by limits.disk), never in the image"
        ),
        Place::DevShm | Place::DevPts => read_reason(&place, path),
        Place::RootfsDir(_) | Place::SystemDir(_) | Place::Generated(_) | Place::ProcReadOnly(_) | Place::Sys => {
            format!("{}; writes fail with EROFS", read_reason(&place, path))
        }
        Place::Proc => format!("{path} is in the sandbox's /proc; Landlock grants no writes there"),
        _ => read_reason(&place, path),
    };
    let where_to =
        "write under /workspace or /tmp, or add a filesystem.scratch directory or a filesystem.read_write bind";
    let hint = match &place {
        Place::PolicyBind { field: "read_only", index, .. } => {
            format!("to make it writable, move filesystem.read_only[{index}] to filesystem.read_write")
        }
        Place::PolicyBind { field, index, .. } => format!("to make it read-only, move filesystem.{field}[{index}] to filesystem.read_only"),
        Place::Scratch { index, .. } => format!("to make it read-only, remove filesystem.scratch[{index}]"),
        Place::BuiltinWritable(_) => "built in and always writable (in the writable layer, capped by limits.disk)".into(),
        Place::Image(_) => "to make it read-only, bind a host directory there with filesystem.read_only, or hide it with filesystem.hidden".into(),
        Place::Hidden { path: h, .. } => format!("to make it visible, remove {h:?} from filesystem.hidden"),
        Place::Absent => format!(
            "to make {:?} writable, add it to filesystem.scratch (empty) or bind a host dir there with filesystem.read_write",
            top(path)
        ),
        Place::SystemDir(_) | Place::RootfsDir(_) => format!("the root filesystem is always read-only; {where_to}"),
        _ => format!("this is fixed by the runtime; {where_to}"),
    };
    Ok(Answer { question: format!("write {path}"), allowed, rule: rule(&place), reason, hint, notes })
}

/// The first component of a path, as a mount target to suggest (`/data/x` -> `/data`).
fn top(path: &str) -> String {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    format!("/{first}")
}
