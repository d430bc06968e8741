//! Compiles a policy and a run request into a plan: the exact mount sequence, limits,
//! environment and identity of a sandbox. Pure: the host is described by a [`HostView`]
//! the caller fills in, so the plan can be checked with golden values.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::landlock::{self, LandlockRules};
use crate::model::{check_abs, check_target, defaults, Policy, Rootfs};
use crate::tools::ToolsPlan;

/// The identity sandboxed code runs as, inside its user namespace.
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 1000;
pub const SANDBOX_USER: &str = "user";
pub const HOME: &str = "/home/user";
pub const WORKSPACE: &str = "/workspace";
pub const HOSTNAME: &str = "safehouse";
/// Where the capability gateway listens inside every sandbox whose policy allows egress
/// (on 127.0.0.1, in the sandbox's own network namespace; the host side holds the socket).
pub const GATEWAY_PORT: u16 = 3128;

/// The proxy variables set inside a sandbox with egress: one port serves HTTP forward
/// proxying, CONNECT and SOCKS5 (socks5h: the gateway resolves names).
pub fn proxy_env() -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{GATEWAY_PORT}");
    let socks = format!("socks5h://127.0.0.1:{GATEWAY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1".to_string();
    let mut env = Vec::new();
    for (name, value) in [("HTTP_PROXY", &http), ("HTTPS_PROXY", &http), ("ALL_PROXY", &socks), ("NO_PROXY", &no_proxy)]
    {
        env.push((name.to_string(), value.clone()));
        env.push((name.to_ascii_lowercase(), value.clone()));
    }
    env
}

pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Host directories that make up the `host` root filesystem, read-only. Nothing of /home,
/// /root, /var, /srv, /opt, /mnt, /media or the daemon's data is ever part of it.
pub const HOST_SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];

/// Host files under /etc that are hidden even though /etc is visible.
pub const HIDDEN_HOST_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/etc/security/opasswd",
];

/// Directories writable by sandboxed code; all live in the size-capped writable layer.
pub const WRITABLE_DIRS: &[&str] = &["/tmp", "/var/tmp", HOME, WORKSPACE];

/// An image root maps this many ids (0..65535 inside), like a container's user namespace.
pub const IMAGE_ID_RANGE: u32 = 65536;
/// Root mode, image roots: inside id `n` is host id `IMAGE_HOST_ID_BASE + n`, so that
/// inside id 1000 is the [`SANDBOX_UID`] every host-root sandbox runs as on the host
/// (1_000_000_000). The image store writes file owners with the same shift.
pub const IMAGE_HOST_ID_BASE: u32 = 999_999_000;
/// Most layers an image root may have (overlayfs' mount options must fit one page).
pub const MAX_IMAGE_LAYERS: usize = 128;

/// Device nodes bound from the host into the sandbox's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// /proc entries that reveal or reach host kernel state: replaced by an empty file.
pub const PROC_MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sysrq-trigger",
    "/proc/kallsyms",
    "/proc/modules",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/kpageflags",
    "/proc/kpagecount",
    "/proc/kpagecgroup",
    "/proc/config.gz",
];
/// /proc directories that stay readable but can never be written.
pub const PROC_READONLY_DIRS: &[&str] = &["/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"];
/// /proc directories replaced by an empty read-only directory.
pub const PROC_MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi", "/proc/driver"];

/// What a path is on the host (as `lstat` sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Missing,
    Dir,
    File,
    Symlink(String),
}

/// The few facts about the host the planner and `policy explain` need.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub entries: BTreeMap<String, HostEntry>,
    /// The host's own addresses (network questions); the planner does not use them.
    pub addrs: crate::network::HostAddrs,
}

impl HostView {
    pub fn get(&self, path: &str) -> HostEntry {
        self.entries.get(path).cloned().unwrap_or(HostEntry::Missing)
    }
    /// Every host path the planner may ask about for this request.
    pub fn wanted(req: &RunRequest) -> Vec<String> {
        let mut v: Vec<String> = HOST_SYSTEM_DIRS.iter().chain(HIDDEN_HOST_SECRETS).map(|s| s.to_string()).collect();
        v.extend(DEVICES.iter().map(|d| format!("/dev/{d}")));
        for m in req.all_binds() {
            v.push(m.host.clone());
        }
        if let Some(w) = &req.workdir {
            v.push(w.clone());
        }
        if let Rootfs::Dir(d) = &req.policy.filesystem.rootfs {
            v.push(d.clone());
        }
        for h in &req.policy.filesystem.hidden {
            v.push(h.clone());
        }
        v
    }
}

/// A `--mount SRC:DST[:ro|rw]` or a policy bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub host: String,
    pub path: String,
    pub writable: bool,
}

impl MountSpec {
    pub fn parse_flag(text: &str) -> Result<MountSpec, PolicyError> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, path, mode) = match parts.as_slice() {
            [h, p] => (*h, *p, "ro"),
            [h, p, m] => (*h, *p, *m),
            _ => {
                return Err(PolicyError::invalid(
                    "--mount",
                    format!("{text:?}: write SRC:DST, SRC:DST:ro or SRC:DST:rw"),
                ))
            }
        };
        let writable = match mode {
            "ro" => false,
            "rw" => true,
            other => {
                return Err(PolicyError::invalid(
                    "--mount",
                    format!("{text:?}: unknown mode {other:?}; write ro or rw"),
                ))
            }
        };
        check_abs("--mount", host)?;
        check_target("--mount", path)?;
        Ok(MountSpec { host: host.to_string(), path: path.to_string(), writable })
    }
}

/// An image resolved by the caller (the image store) for `rootfs = "image:REF"`: what the
/// planner needs of it, no I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRoot {
    /// The name it was asked for (messages).
    pub reference: String,
    /// Host directories of its layers, bottom first (overlayfs lower dirs).
    pub layers: Vec<String>,
    /// Its config's environment.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Its config's user, resolved in its own /etc/passwd and /etc/group.
    pub uid: u32,
    pub gid: u32,
    /// That user's home directory.
    pub home: String,
    /// Directories at the top of the image (`/usr`, `/etc`, ...): writable by the sandbox
    /// in its own layer; `/proc`, `/sys` and `/dev` never are.
    pub top_dirs: Vec<String>,
}

/// Everything `run` (or the daemon) asks for, on top of the policy.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub policy: Policy,
    /// Host directory mounted read-write at /workspace and used as the cwd.
    pub workdir: Option<String>,
    pub mounts: Vec<MountSpec>,
    pub env: Vec<(String, String)>,
    pub term: Option<String>,
    /// The resolved image when the policy's rootfs is `image:REF`.
    pub image: Option<ImageRoot>,
    /// A template build's RUN step: root in the sandbox keeps [`BUILD_CAPABILITIES`] over
    /// its own user namespace (image roots only; see [`Plan::build_capabilities`]).
    pub build_step: bool,
}

impl RunRequest {
    fn all_binds(&self) -> Vec<MountSpec> {
        let fs = &self.policy.filesystem;
        let mut v: Vec<MountSpec> = fs
            .read_only
            .iter()
            .map(|b| MountSpec { host: b.host.clone(), path: b.path.clone(), writable: false })
            .collect();
        v.extend(fs.read_write.iter().map(|b| MountSpec {
            host: b.host.clone(),
            path: b.path.clone(),
            writable: true,
        }));
        v.extend(self.mounts.iter().cloned());
        v
    }
}

/// A limit's value and whether the caller asked for it (then it must be enforced or the
/// sandbox refused) or it is a default (then rootless mode may report it unenforced).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limit<T> {
    pub value: T,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedLimits {
    pub memory: Limit<u64>,
    pub pids: Limit<u64>,
    pub cpus: Option<Limit<f64>>,
    pub disk: u64,
    pub inodes: u64,
    pub nofile: u64,
    pub timeout: Option<Duration>,
}

/// How the root of the sandbox is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSpec {
    /// A fresh tmpfs (size- and inode-capped) holding the whole writable layer.
    Tmpfs { size: u64, inodes: u64 },
    /// `lower` read-only under an overlay whose upper layer is a capped tmpfs.
    Overlay { lower: String, size: u64, inodes: u64 },
    /// An image: its layers (host directories, bottom first) read-only under an overlay
    /// whose upper layer, the sandbox's own, is a capped tmpfs. The root stays writable.
    Image { layers: Vec<String>, size: u64, inodes: u64 },
}

/// How the sandbox's user namespace maps ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMapping {
    /// One id: the sandbox user to its host identity (host roots, rootfs directories).
    #[default]
    One,
    /// Image roots: root mode maps [`IMAGE_ID_RANGE`] ids from [`IMAGE_HOST_ID_BASE`], so
    /// the image's files keep their owners; rootless maps the sandbox user to the caller
    /// (whose own files the image's are).
    ImageRange,
}

/// One step of the mount sequence, with sandbox paths relative to the new root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountOp {
    /// Bind a host path (recursively) at `path`; nosuid and nodev always, read-only unless
    /// `writable`.
    Bind { host: String, path: String, writable: bool, dir: bool },
    /// Recreate a host symlink (e.g. /bin -> usr/bin on merged-/usr systems).
    Symlink { target: String, path: String },
    /// A directory in the writable layer, made its own mount so it stays writable when the
    /// root turns read-only.
    WritableDir { path: String },
    /// A fresh procfs for the sandbox's pid namespace.
    Proc { path: String },
    /// sysfs, read-only.
    Sysfs { path: String },
    /// A small tmpfs for /dev with the listed host device nodes bound in.
    Dev { path: String, devices: Vec<String>, shm_size: u64, shm_inodes: u64 },
    /// A file whose content the runtime writes, bound read-only over `path`.
    Generated { path: String, contents: String },
    /// Replace a file with an empty, mode-000 file (reads fail with EACCES).
    HideFile { path: String },
    /// Replace a directory with an empty, mode-000 read-only directory.
    HideDir { path: String },
    /// Replace a file with /dev/null's content (empty), read-only.
    MaskWithNull { path: String },
    /// Replace a directory with the empty, mode-000 directory, read-only.
    MaskDir { path: String },
    /// A policy `hidden` path: whatever is at `path` in the sandbox once everything else is
    /// mounted (a file, a directory, something beneath a bind) is made inaccessible; a
    /// path that does not exist there has nothing to hide.
    Hide { path: String },
    /// Bind a directory onto itself read-only (so writes give EROFS).
    ReadOnlyDir { path: String },
    /// Make the root mount read-only (last).
    RootReadOnly,
    /// Detach the host like `RootReadOnly` but leave `/` writable: an image root, whose
    /// writes land in the sandbox's own capped layer (last).
    RootWritable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub root: RootSpec,
    pub ops: Vec<MountOp>,
    pub limits: ResolvedLimits,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub landlock: LandlockRules,
    /// The policy allows egress: the sandbox opens the gateway's listener on
    /// 127.0.0.1:[`GATEWAY_PORT`] and hands it to the host side.
    pub gateway: bool,
    /// `[tools]`: the executables Landlock lets run and their limits.
    #[serde(default)]
    pub tools: ToolsPlan,
    #[serde(default)]
    pub ids: IdMapping,
    /// A template build's RUN step on an image root as root: instead of dropping every
    /// capability, root keeps [`BUILD_CAPABILITIES`] (what package managers need to own
    /// and reach the image's files: apt's `_apt` directories, dpkg's chown) over the
    /// sandbox's own user namespace, whose ids are unprivileged host ids; securebits stay
    /// unlocked so root's exec keeps them, `no_new_privs` still bounds them.
    #[serde(default)]
    pub build_capabilities: bool,
    /// A host directory (a layer of the storage pool, `crates/storage`) that holds the
    /// sandbox's writable layer on disk, in place of the tmpfs: the root itself with a
    /// host root, the overlay's upper and work dirs with a rootfs directory or an image.
    /// Its size cap is the pool's (a quota group), not the plan's `disk`. The caller sets
    /// it after [`compile`]; `None`: RAM.
    #[serde(default)]
    pub disk_layer: Option<String>,
}

/// The capabilities a build step's root keeps: CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER,
/// CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID (Docker's defaults that concern files and
/// identities; no CAP_SYS_*, CAP_NET_*, CAP_MKNOD, CAP_SETFCAP or CAP_SETPCAP).
pub const BUILD_CAPABILITIES: u64 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7);

pub fn resolve_limits(policy: &Policy) -> ResolvedLimits {
    let l = &policy.limits;
    ResolvedLimits {
        memory: match l.memory {
            Some(m) => Limit { value: m.0, required: true },
            None => Limit { value: defaults::MEMORY, required: false },
        },
        pids: match l.pids {
            Some(p) => Limit { value: p, required: true },
            None => Limit { value: defaults::PIDS, required: false },
        },
        cpus: l.cpus.map(|c| Limit { value: c, required: true }),
        disk: l.disk.map(|d| d.0).unwrap_or(defaults::DISK),
        inodes: l.inodes.unwrap_or(defaults::INODES),
        nofile: l.nofile.unwrap_or(defaults::NOFILE),
        timeout: l.timeout.map(|t| t.0),
    }
}

/// Builds the sandbox's environment: empty but for PATH, HOME, TERM, LANG and what the
/// caller passes. Names are checked so an `=` or NUL can never smuggle a second variable.
pub fn build_env(req: &RunRequest) -> Result<Vec<(String, String)>, PolicyError> {
    let mut env: Vec<(String, String)> = match &req.image {
        None => vec![
            ("PATH".into(), PATH.into()),
            ("HOME".into(), HOME.into()),
            ("TERM".into(), req.term.clone().unwrap_or_else(|| "xterm".into())),
            ("LANG".into(), "C.UTF-8".into()),
        ],
        // An image's own environment comes first; PATH, HOME, TERM and LANG fill in what
        // it does not set.
        Some(img) => {
            let mut env = img.env.clone();
            let term = req.term.clone().unwrap_or_else(|| "xterm".into());
            for (k, v) in
                [("PATH", PATH.to_string()), ("HOME", img.home.clone()), ("TERM", term), ("LANG", "C.UTF-8".into())]
            {
                if !env.iter().any(|(name, _)| name == k) {
                    env.push((k.into(), v));
                }
            }
            env
        }
    };
    if !req.policy.network.allow.is_empty() {
        env.extend(proxy_env());
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(PolicyError::invalid(
                "--env",
                format!("{k:?}: a variable name must be non-empty and contain neither '=' nor NUL"),
            ));
        }
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

pub fn compile(req: &RunRequest, host: &HostView) -> Result<Plan, PolicyError> {
    req.policy.validate()?;
    let limits = resolve_limits(&req.policy);
    let fs = &req.policy.filesystem;
    let mut ops = Vec::new();

    let root = match &fs.rootfs {
        Rootfs::Host => {
            for dir in HOST_SYSTEM_DIRS {
                match host.get(dir) {
                    HostEntry::Dir => ops.push(MountOp::Bind {
                        host: dir.to_string(),
                        path: dir.to_string(),
                        writable: false,
                        dir: true,
                    }),
                    HostEntry::Symlink(target) => ops.push(MountOp::Symlink { target, path: dir.to_string() }),
                    HostEntry::File | HostEntry::Missing => {}
                }
            }
            RootSpec::Tmpfs { size: limits.disk, inodes: limits.inodes }
        }
        Rootfs::Dir(d) => {
            if host.get(d) != HostEntry::Dir {
                return Err(PolicyError::invalid("filesystem.rootfs", format!("{d} is not a directory on this host")));
            }
            RootSpec::Overlay { lower: d.clone(), size: limits.disk, inodes: limits.inodes }
        }
        Rootfs::Image(r) => {
            let Some(img) = &req.image else {
                return Err(PolicyError::invalid(
                    "filesystem.rootfs",
                    format!("image:{r} must be resolved in the image store before planning (an internal error)"),
                ));
            };
            if img.layers.is_empty() || img.layers.len() > MAX_IMAGE_LAYERS {
                return Err(PolicyError::invalid(
                    "filesystem.rootfs",
                    format!("image {r} has {} layers; a sandbox root takes 1 to {MAX_IMAGE_LAYERS}", img.layers.len()),
                ));
            }
            if img.uid >= IMAGE_ID_RANGE || img.gid >= IMAGE_ID_RANGE {
                return Err(PolicyError::invalid(
                    "filesystem.rootfs",
                    format!(
                        "image {r} runs as uid {} gid {}; a sandbox maps ids 0 to {}",
                        img.uid,
                        img.gid,
                        IMAGE_ID_RANGE - 1
                    ),
                ));
            }
            RootSpec::Image { layers: img.layers.clone(), size: limits.disk, inodes: limits.inodes }
        }
    };
    let image = matches!(fs.rootfs, Rootfs::Image(_));

    // Identity files: the sandbox's own, never the host's.
    let etc = [
        ("/etc/passwd", format!("root:x:0:0:root:/root:/bin/sh\n{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}::{HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")),
        ("/etc/group", format!("root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n")),
        ("/etc/hostname", format!("{HOSTNAME}\n")),
        ("/etc/hosts", format!("127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n")),
        ("/etc/resolv.conf", "# safehouse: no DNS inside the sandbox; with network.allow the gateway (HTTP_PROXY, ALL_PROXY) resolves names\noptions timeout:1 attempts:1\n".to_string()),
    ];
    for (path, contents) in etc {
        // An image keeps its own users and groups.
        if image && (path == "/etc/passwd" || path == "/etc/group") {
            continue;
        }
        ops.push(MountOp::Generated { path: path.to_string(), contents });
    }
    if fs.rootfs == Rootfs::Host {
        for secret in HIDDEN_HOST_SECRETS {
            match host.get(secret) {
                HostEntry::Dir => ops.push(MountOp::HideDir { path: secret.to_string() }),
                HostEntry::File => ops.push(MountOp::HideFile { path: secret.to_string() }),
                _ => {}
            }
        }
    }

    ops.push(MountOp::Proc { path: "/proc".into() });
    for f in PROC_MASKED_FILES {
        ops.push(MountOp::MaskWithNull { path: f.to_string() });
    }
    for d in PROC_READONLY_DIRS {
        ops.push(MountOp::ReadOnlyDir { path: d.to_string() });
    }
    for d in PROC_MASKED_DIRS {
        ops.push(MountOp::MaskDir { path: d.to_string() });
    }
    ops.push(MountOp::Sysfs { path: "/sys".into() });
    let devices: Vec<String> = DEVICES
        .iter()
        .filter(|d| host.get(&format!("/dev/{d}")) != HostEntry::Missing)
        .map(|d| d.to_string())
        .collect();
    ops.push(MountOp::Dev { path: "/dev".into(), devices, shm_size: limits.disk, shm_inodes: limits.inodes });

    // An image has its own home directories: /home/user is not made for it.
    let mut writable: Vec<String> =
        WRITABLE_DIRS.iter().filter(|d| !(image && **d == HOME)).map(|s| s.to_string()).collect();
    for s in &fs.scratch {
        if !writable.contains(s) {
            writable.push(s.clone());
        }
    }
    if req.workdir.is_some() {
        writable.retain(|w| w != WORKSPACE);
    }
    for w in &writable {
        ops.push(MountOp::WritableDir { path: w.clone() });
    }

    let mut binds = req.all_binds();
    if let Some(w) = &req.workdir {
        check_abs("--workdir", w)?;
        binds.push(MountSpec { host: w.clone(), path: WORKSPACE.into(), writable: true });
    }
    let mut seen: Vec<&str> = Vec::new();
    for b in &binds {
        if seen.contains(&b.path.as_str()) {
            return Err(PolicyError::invalid("mounts", format!("{} is mounted twice; keep one mount for it", b.path)));
        }
        seen.push(&b.path);
    }
    // Parents before children, so a bind inside another bind lands on top of it.
    binds.sort_by_key(|b| b.path.matches('/').count());
    for b in &binds {
        let dir = match host.get(&b.host) {
            HostEntry::Dir => true,
            HostEntry::File => false,
            HostEntry::Symlink(_) => {
                return Err(PolicyError::invalid(
                    "mounts",
                    format!("{} is a symlink; give the real path so the mount cannot be redirected", b.host),
                ))
            }
            HostEntry::Missing => {
                return Err(PolicyError::invalid("mounts", format!("{} does not exist on this host", b.host)))
            }
        };
        ops.push(MountOp::Bind { host: b.host.clone(), path: b.path.clone(), writable: b.writable, dir });
    }

    // Decided at mount time, in the sandbox's own view: a hidden path may lie beneath a
    // bind or in a rootfs directory, where the host's view says nothing about it.
    for h in &fs.hidden {
        ops.push(MountOp::Hide { path: h.clone() });
    }
    ops.push(if image { MountOp::RootWritable } else { MountOp::RootReadOnly });

    let mut writable_paths: Vec<String> =
        writable.iter().cloned().chain(binds.iter().filter(|b| b.writable).map(|b| b.path.clone())).collect();
    let mut cwd = WORKSPACE.to_string();
    let (mut uid, mut gid, mut ids) = (SANDBOX_UID, SANDBOX_GID, IdMapping::One);
    if let Some(img) = req.image.as_ref().filter(|_| image) {
        // The image's top directories are the sandbox's to write (in its own layer);
        // /proc, /sys and /dev stay as the mounts make them.
        for d in &img.top_dirs {
            if !["/proc", "/sys", "/dev"].contains(&d.as_str()) && !writable_paths.contains(d) {
                writable_paths.push(d.clone());
            }
        }
        // A build step may also make new entries at the top (`RUN mkdir /data`): Landlock
        // grants write on `/`; /proc, /sys and /dev stay as their mounts make them
        // (read-only masks, a read-only sysfs, a tmpfs of device nodes).
        if req.build_step && !writable_paths.iter().any(|p| p == "/") {
            writable_paths.push("/".into());
        }
        if req.workdir.is_none() {
            if let Some(w) = &img.working_dir {
                check_abs("the image's WorkingDir", w)?;
                cwd = w.clone();
            }
        }
        (uid, gid, ids) = (img.uid, img.gid, IdMapping::ImageRange);
    }
    let tools = ToolsPlan::compile(&req.policy.tools);
    Ok(Plan {
        root,
        ops,
        env: build_env(req)?,
        cwd,
        hostname: HOSTNAME.into(),
        uid,
        gid,
        ids,
        landlock: landlock::rules_for(&writable_paths, tools.restricts_exec()),
        tools,
        limits,
        gateway: !req.policy.network.allow.is_empty(),
        build_capabilities: req.build_step && ids == IdMapping::ImageRange && uid == 0,
        disk_layer: None,
    })
}

#[cfg(test)]
mod tests;
