//! The policy-shaping flags `run` and `sandbox create` share: where the policy comes from
//! (`--policy FILE`, `--preset NAME`) and the limits and network flags that override it.

use anyhow::{Context, Result};
use clap::Args;

use safehouse_policy::model::parse_toml;
use safehouse_policy::units::{parse_size, ByteSize};
use safehouse_policy::{presets, Policy};

#[derive(Args, Default)]
pub struct LimitFlags {
    /// Memory limit, e.g. 512MiB
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Maximum number of processes and threads
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// CPU bandwidth in cores, e.g. 0.5
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Size cap of the writable layer, e.g. 1GiB
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Allow egress to HOST through the gateway (repeatable)
    #[arg(long = "allow-net", value_name = "HOST[:PORT]")]
    pub allow_net: Vec<String>,
}

impl LimitFlags {
    /// Whether any flag was given.
    pub fn any(&self) -> bool {
        self.memory.is_some()
            || self.pids.is_some()
            || self.cpus.is_some()
            || self.disk.is_some()
            || !self.allow_net.is_empty()
    }

    /// Writes the flags over `policy` (validation is the caller's, on the whole policy).
    pub fn apply(&self, policy: &mut Policy) -> Result<()> {
        let l = &mut policy.limits;
        if let Some(m) = &self.memory {
            l.memory = Some(ByteSize(parse_size(m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?));
        }
        if let Some(p) = self.pids {
            l.pids = Some(p);
        }
        if let Some(c) = self.cpus {
            l.cpus = Some(c);
        }
        if let Some(d) = &self.disk {
            l.disk = Some(ByteSize(parse_size(d).map_err(|e| anyhow::anyhow!("--disk: {e}"))?));
        }
        policy.network.allow.extend(self.allow_net.iter().cloned());
        Ok(())
    }
}

/// The TOML text of a policy file, checked: errors name the file and the line and column
/// in it (not positions in what the CLI later sends).
pub fn read_policy_file(file: &str) -> Result<(String, Policy)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read policy {file}"))?;
    let policy = parse_toml(&text, file)?;
    Ok((text, policy))
}

/// The policy of `--policy FILE`, else `--preset NAME`, else the default preset.
pub fn load(file: Option<&str>, preset: Option<&str>) -> Result<Policy> {
    Ok(match (file, preset) {
        (Some(file), _) => read_policy_file(file)?.1,
        (None, Some(name)) => presets::load(name)?,
        (None, None) => presets::load("default")?,
    })
}
