//! What a sandbox takes from an image's config: environment, working directory, user,
//! entrypoint and command (Docker's rules for combining them).

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::store::{ImageRecord, Store};

/// PATH when an image's config sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `KEY=VALUE` pairs, in the config's order.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved against the image's
    /// /etc/passwd and /etc/group when the sandbox starts.
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl RunConfig {
    pub fn from_config_bytes(bytes: &[u8]) -> Result<RunConfig> {
        let c = crate::oci::parse_config(bytes, "image config")?;
        let mut rc = RunConfig::default();
        if let Some(cfg) = c.config() {
            for kv in cfg.env().iter().flatten() {
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                        rc.env.retain(|(name, _)| name != k);
                        rc.env.push((k.to_string(), v.to_string()));
                    }
                    _ => return Err(ImageError::format("image config", format!("Env entry {kv:?} is not KEY=VALUE"))),
                }
            }
            rc.working_dir = cfg.working_dir().clone().filter(|w| !w.is_empty());
            rc.user = cfg.user().clone().filter(|u| !u.is_empty());
            rc.entrypoint = cfg.entrypoint().clone().unwrap_or_default();
            rc.cmd = cfg.cmd().clone().unwrap_or_default();
        }
        if !rc.env.iter().any(|(k, _)| k == "PATH") {
            rc.env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
        Ok(rc)
    }

    /// The argv to run: the entrypoint followed by `args` (or, without args, by the
    /// image's command), as `docker run IMAGE [ARGS]` does.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        let mut v = self.entrypoint.clone();
        if args.is_empty() {
            v.extend(self.cmd.iter().cloned());
        } else {
            v.extend(args.iter().cloned());
        }
        v
    }
}

impl Store {
    /// The run config of a stored image.
    pub fn run_config(&self, image: &ImageRecord) -> Result<RunConfig> {
        RunConfig::from_config_bytes(&self.read_blob(&image.config)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Env":["A=1","PATH=/x","A=2"],"WorkingDir":"/app","User":"1000:1000",
            "Entrypoint":["/bin/tini","--"],"Cmd":["python3"]}}"#;
        let rc = RunConfig::from_config_bytes(cfg).unwrap();
        assert_eq!(rc.env, vec![("PATH".to_string(), "/x".to_string()), ("A".into(), "2".into())]);
        assert_eq!(rc.working_dir.as_deref(), Some("/app"));
        assert_eq!(rc.user.as_deref(), Some("1000:1000"));
        assert_eq!(rc.argv(&[]), ["/bin/tini", "--", "python3"]);
        assert_eq!(rc.argv(&["sh".into()]), ["/bin/tini", "--", "sh"]);
        let bare = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let rc = RunConfig::from_config_bytes(bare).unwrap();
        assert_eq!(rc.env, vec![("PATH".to_string(), DEFAULT_PATH.to_string())]);
        assert!(rc.argv(&[]).is_empty());
        let bad = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":["NOEQUALS"]}}"#;
        assert!(RunConfig::from_config_bytes(bad).is_err());
    }
}
