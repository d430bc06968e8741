//! The policy document (version 1): types, defaults, strict parsing and validation.
//!
//! Every field is optional in the document; a missing field takes the default documented
//! on it (and in docs/POLICY.md). Unknown keys are errors, so a typo never silently
//! weakens a policy.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::units::{ByteSize, Dur};

/// Defaults applied when neither the policy nor a flag sets a limit. In rootless mode on
/// hosts without a delegated cgroup, these (and only these) may go unenforced; the result
/// record says so. A limit the caller asked for is always enforced or refused.
pub mod defaults {
    pub const MEMORY: u64 = 1 << 30; // 1 GiB
    pub const PIDS: u64 = 512;
    pub const DISK: u64 = 1 << 30; // 1 GiB writable layer
    pub const NOFILE: u64 = 1024;
    pub const INODES: u64 = 262_144;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Schema version; must be 1.
    #[serde(default = "one")]
    pub version: u32,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub filesystem: Filesystem,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub tools: Tools,
    #[serde(default)]
    pub control: Control,
}

fn one() -> u32 {
    1
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: 1,
            limits: Limits::default(),
            filesystem: Filesystem::default(),
            network: Network::default(),
            tools: Tools::default(),
            control: Control::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory cap for everything in the sandbox (cgroup). Default 1GiB.
    pub memory: Option<ByteSize>,
    /// Maximum number of tasks (processes and threads). Default 512.
    pub pids: Option<u64>,
    /// CPU bandwidth in cores (0.5 = half a core). Default: unlimited.
    pub cpus: Option<f64>,
    /// Size cap of the writable layer (and of /dev/shm). Default 1GiB.
    pub disk: Option<ByteSize>,
    /// Inode cap of the writable layer. Default 262144.
    pub inodes: Option<u64>,
    /// Wall-clock lifetime. Default: none for `run`.
    pub timeout: Option<Dur>,
    /// Open file descriptors per process (RLIMIT_NOFILE). Default 1024.
    pub nofile: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// "host": the host's system directories read-only; an absolute path to a root
    /// filesystem directory, used read-only under a writable overlay; or "image:REF", an
    /// image of the store, its layers read-only under the sandbox's own writable layer.
    #[serde(default)]
    pub rootfs: Rootfs,
    /// Host paths mounted read-only.
    #[serde(default)]
    pub read_only: Vec<Bind>,
    /// Host paths mounted read-write.
    #[serde(default)]
    pub read_write: Vec<Bind>,
    /// Extra writable directories created empty in the writable layer.
    #[serde(default)]
    pub scratch: Vec<String>,
    /// Paths made inaccessible (EACCES) inside the sandbox.
    #[serde(default)]
    pub hidden: Vec<String>,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            rootfs: Rootfs::Host,
            read_only: Vec::new(),
            read_write: Vec::new(),
            scratch: Vec::new(),
            hidden: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Rootfs {
    #[default]
    Host,
    Dir(String),
    /// `image:REF`: an image (or template) of the image store, its layers shared
    /// read-only under the sandbox's own writable layer.
    Image(String),
}

impl Serialize for Rootfs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rootfs::Host => s.serialize_str("host"),
            Rootfs::Dir(d) => s.serialize_str(d),
            Rootfs::Image(r) => s.serialize_str(&format!("image:{r}")),
        }
    }
}

impl<'de> Deserialize<'de> for Rootfs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Rootfs::parse(&s))
    }
}

impl Rootfs {
    pub fn parse(s: &str) -> Rootfs {
        if s == "host" {
            Rootfs::Host
        } else if let Some(r) = s.strip_prefix("image:") {
            Rootfs::Image(r.to_string())
        } else {
            Rootfs::Dir(s.to_string())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// Absolute host path.
    pub host: String,
    /// Absolute path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Egress allowlist (through the gateway). Default: empty, no network but loopback.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Egress byte budget.
    pub egress_bytes: Option<ByteSize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    /// Executables the kernel lets run. Default: empty, meaning any executable visible.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Per-tool limits, keyed by an `allow` pattern. Default: none.
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, ToolLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolLimits {
    pub timeout: Option<Dur>,
    pub memory: Option<ByteSize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Kill the sandbox after this many policy violations. Default: never.
    pub kill_after_violations: Option<u64>,
    /// Kill the sandbox past this much CPU time. Default: never.
    pub cpu_budget: Option<Dur>,
}

/// Where a document came from, for error messages.
pub fn parse_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let policy: Policy = toml::from_str(text)
        .map_err(|e| PolicyError::Parse { origin: origin.to_string(), message: describe_toml_error(text, &e) })?;
    policy.validate()?;
    Ok(policy)
}

pub fn parse_json(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let policy: Policy = serde_json::from_str(text).map_err(|e| PolicyError::Parse {
        origin: origin.to_string(),
        message: format!("line {} column {}: {}", e.line(), e.column(), e),
    })?;
    policy.validate()?;
    Ok(policy)
}

fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim().to_string();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
            format!("line {line} column {col}: {msg}")
        }
        None => msg,
    }
}

impl Policy {
    /// Checks what the schema cannot: path shapes, ranges, contradictions, and features
    /// this version cannot enforce yet (refused, never silently ignored).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.version != 1 {
            return Err(PolicyError::invalid(
                "version",
                format!("unsupported version {}; write version = 1", self.version),
            ));
        }
        let l = &self.limits;
        if let Some(m) = l.memory {
            if m.0 < 4 << 20 {
                return Err(PolicyError::invalid("limits.memory", "must be at least 4MiB"));
            }
        }
        if l.pids == Some(0) {
            return Err(PolicyError::invalid("limits.pids", "must be at least 1"));
        }
        if let Some(c) = l.cpus {
            if !(c.is_finite() && (0.01..=4096.0).contains(&c)) {
                return Err(PolicyError::invalid(
                    "limits.cpus",
                    format!("{c} is out of range; write a number of cores between 0.01 and 4096"),
                ));
            }
        }
        if let Some(d) = l.disk {
            if d.0 < 1 << 20 {
                return Err(PolicyError::invalid("limits.disk", "must be at least 1MiB"));
            }
        }
        if l.inodes == Some(0) || l.nofile == Some(0) {
            return Err(PolicyError::invalid("limits", "inodes and nofile must be at least 1"));
        }
        if let Some(n) = l.nofile {
            if n > 1 << 20 {
                return Err(PolicyError::invalid("limits.nofile", "must be at most 1048576"));
            }
        }
        if let Some(t) = l.timeout {
            if t.0.is_zero() {
                return Err(PolicyError::invalid("limits.timeout", "must be more than zero; omit it for no timeout"));
            }
        }
        let fs = &self.filesystem;
        if let Rootfs::Image(r) = &fs.rootfs {
            if r.is_empty() || r.len() > 200 || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(PolicyError::invalid(
                    "filesystem.rootfs",
                    format!("{r:?} is not an image name; write \"image:NAME\", e.g. \"image:python:3.12\""),
                ));
            }
        }
        if let Rootfs::Dir(d) = &fs.rootfs {
            check_abs("filesystem.rootfs", d)?;
            if d == "/" {
                return Err(PolicyError::invalid(
                    "filesystem.rootfs",
                    "the host root cannot be the sandbox root; write rootfs = \"host\"",
                ));
            }
        }
        let mut targets: Vec<&str> = Vec::new();
        for (field, binds) in [("filesystem.read_only", &fs.read_only), ("filesystem.read_write", &fs.read_write)] {
            for b in binds.iter() {
                check_abs(field, &b.host)?;
                check_target(field, &b.path)?;
                if targets.contains(&b.path.as_str()) {
                    return Err(PolicyError::invalid(
                        field,
                        format!("{} is mounted twice; keep one entry for it", b.path),
                    ));
                }
                targets.push(&b.path);
            }
        }
        for s in &fs.scratch {
            check_target("filesystem.scratch", s)?;
        }
        for h in &fs.hidden {
            check_abs("filesystem.hidden", h)?;
            if targets.contains(&h.as_str()) {
                return Err(PolicyError::invalid(
                    "filesystem.hidden",
                    format!("{h} is both mounted and hidden; remove one"),
                ));
            }
        }
        let net = crate::network::NetPolicy::compile(&self.network)?;
        if let Some(b) = self.network.egress_bytes {
            if !net.enabled() {
                return Err(PolicyError::invalid(
                    "network.egress_bytes",
                    "a byte budget without network.allow has nothing to count; add network.allow entries or remove it",
                ));
            }
            if b.0 == 0 {
                return Err(PolicyError::invalid(
                    "network.egress_bytes",
                    "must be more than zero; to forbid the network, leave network.allow empty",
                ));
            }
        }
        if self.control.kill_after_violations == Some(0) {
            return Err(PolicyError::invalid(
                "control.kill_after_violations",
                "must be at least 1; to never kill for violations, leave it out",
            ));
        }
        if self.control.cpu_budget.is_some_and(|d| d.0.is_zero()) {
            return Err(PolicyError::invalid(
                "control.cpu_budget",
                "must be more than zero; to set no budget, leave it out",
            ));
        }
        crate::tools::validate(&self.tools)?;
        Ok(())
    }
}

/// Sandbox paths that the runtime owns and no bind may replace.
const RESERVED: &[&str] = &["/", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64"];

pub fn check_abs(field: &str, p: &str) -> Result<(), PolicyError> {
    if p.is_empty() || !p.starts_with('/') {
        return Err(PolicyError::invalid(
            field,
            format!("{p:?} is not an absolute path; write a path starting with /"),
        ));
    }
    if p.contains('\0') {
        return Err(PolicyError::invalid(field, format!("{p:?} contains a NUL byte")));
    }
    if Path::new(p).components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err(PolicyError::invalid(field, format!("{p:?} contains . or .. components; write the plain path")));
    }
    Ok(())
}

pub fn check_target(field: &str, p: &str) -> Result<(), PolicyError> {
    check_abs(field, p)?;
    let norm = p.trim_end_matches('/');
    let norm = if norm.is_empty() { "/" } else { norm };
    let reserved_prefix = ["/proc/", "/dev/", "/sys/", "/oldroot/"].iter().any(|pre| norm.starts_with(pre));
    if RESERVED.contains(&norm) || reserved_prefix || norm == "/oldroot" || norm.starts_with("/.safehouse") {
        return Err(PolicyError::invalid(
            field,
            format!("{p} is managed by safehouse and cannot be a mount target; choose another path such as /data"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_document_parses() {
        let p = parse_toml(
            r#"
version = 1
[limits]
memory = "512MiB"
pids = 256
cpus = 1.0
disk = "1GiB"
timeout = "15m"
[filesystem]
rootfs = "host"
read_only  = [{ host = "/srv/data", path = "/input" }]
read_write = [{ host = "/srv/out",  path = "/output" }]
scratch = ["/workspace", "/tmp"]
hidden = ["/etc/ssh"]
"#,
            "test.toml",
        )
        .unwrap();
        assert_eq!(p.limits.memory, Some(ByteSize(512 << 20)));
        assert_eq!(p.limits.timeout, Some(Dur(std::time::Duration::from_secs(900))));
        assert_eq!(p.filesystem.read_write[0].path, "/output");
    }

    #[test]
    fn control_rules_parse_and_are_checked() {
        let p = parse_toml("[control]\nkill_after_violations = 20\ncpu_budget = \"90s\"\n", "p").unwrap();
        assert_eq!(p.control.kill_after_violations, Some(20));
        assert_eq!(p.control.cpu_budget, Some(Dur(std::time::Duration::from_secs(90))));
        let err = parse_toml("[control]\nkill_after_violations = 0\n", "p").unwrap_err().to_string();
        assert!(err.contains("control.kill_after_violations") && err.contains("at least 1"), "{err}");
        let err = parse_toml("[control]\ncpu_budget = \"0s\"\n", "p").unwrap_err().to_string();
        assert!(err.contains("control.cpu_budget") && err.contains("more than zero"), "{err}");
        assert!(parse_toml("[control]\n", "p").is_ok());
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse_toml("version = 1\n[limits]\nmemroy = \"1GiB\"\n", "p.toml").unwrap_err().to_string();
        assert!(err.contains("line 3 column 1"), "{err}");
        assert!(err.contains("memroy"), "{err}");
        assert!(err.contains("memory"), "expected a hint listing valid keys: {err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = parse_toml("[limits]\nmemory = \"12 parsecs\"\n", "p.toml").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("unknown size unit"), "{err}");
        let err = parse_toml("[limits]\ncpus = 0\n", "p.toml").unwrap_err().to_string();
        assert!(err.contains("limits.cpus"), "{err}");
        let err =
            parse_toml("[filesystem]\nread_only = [{host = \"rel\", path = \"/x\"}]\n", "p").unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = parse_toml("[filesystem]\nread_only = [{host = \"/a\", path = \"/proc/x\"}]\n", "p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("managed by safehouse"), "{err}");
        for reserved in ["/oldroot", "/oldroot/tmp/x", "/.safehouse-hidden-dir"] {
            assert!(check_target("t", reserved).is_err(), "{reserved}");
        }
        let err = parse_toml("[network]\nallow = [\"https://pypi.org\"]\n", "p").unwrap_err().to_string();
        assert!(err.contains("network.allow[0]") && err.contains("just the host"), "{err}");
        let err = parse_toml("[network]\negress_bytes = \"1GiB\"\n", "p").unwrap_err().to_string();
        assert!(err.contains("nothing to count"), "{err}");
        let err = parse_toml("version = 2\n", "p").unwrap_err().to_string();
        assert!(err.contains("version = 1"), "{err}");
    }

    #[test]
    fn contradictions_are_refused() {
        let err = parse_toml(
            "[filesystem]\nread_only = [{host = \"/a\", path = \"/x\"}]\nread_write = [{host = \"/b\", path = \"/x\"}]\n",
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mounted twice"), "{err}");
    }

    #[test]
    fn json_is_the_same_document() {
        let p = parse_json(r#"{"version":1,"limits":{"memory":"64MiB","pids":10}}"#, "api").unwrap();
        assert_eq!(p.limits.pids, Some(10));
        assert!(parse_json(r#"{"limits":{"bogus":1}}"#, "api").is_err());
    }
}
