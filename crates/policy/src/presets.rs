//! Built-in policies, usable by name from `run --preset`, the API and the CLI.

use crate::error::PolicyError;
use crate::model::{parse_toml, Policy};

/// (name, one-line description, TOML document)
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "default",
        "host system directories read-only, writable /workspace and /tmp, loopback-only network",
        "version = 1\n",
    ),
    (
        "offline",
        "like default, stated explicitly: no network at all but the sandbox's own loopback",
        "version = 1\n[network]\nallow = []\n",
    ),
];

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).collect()
}

pub fn source(name: &str) -> Result<&'static str, PolicyError> {
    PRESETS
        .iter()
        .find(|p| p.0 == name)
        .map(|p| p.2)
        .ok_or_else(|| PolicyError::UnknownPreset { name: name.to_string(), available: names().join(", ") })
}

pub fn load(name: &str) -> Result<Policy, PolicyError> {
    parse_toml(source(name)?, &format!("preset {name}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_preset_parses() {
        for (name, _, _) in super::PRESETS {
            super::load(name).unwrap();
        }
        assert!(super::load("nope").unwrap_err().to_string().contains("default, offline"));
    }
}
