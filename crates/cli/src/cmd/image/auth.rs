//! Registry credentials for `image pull`: --username with --password-stdin (or
//! SAFEHOUSE_REGISTRY_PASSWORD), else an entry for the registry in Docker's config
//! (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`), else anonymous.

use std::io::Read;

use anyhow::{bail, Context, Result};
use base64::Engine;

use safehouse_images::pull::Auth;

pub fn resolve(registry: &str, username: Option<&str>, password_stdin: bool) -> Result<Auth> {
    match (username, password_stdin) {
        (Some(user), true) => {
            let mut pw = String::new();
            std::io::stdin().read_to_string(&mut pw).context("read the password from stdin")?;
            let pw = pw.trim_end_matches(['\n', '\r']).to_string();
            if pw.is_empty() {
                bail!("--password-stdin: stdin was empty");
            }
            Ok(Auth::Basic { username: user.to_string(), password: pw })
        }
        (Some(user), false) => match std::env::var("SAFEHOUSE_REGISTRY_PASSWORD") {
            Ok(pw) if !pw.is_empty() => Ok(Auth::Basic { username: user.to_string(), password: pw }),
            _ => bail!("--username needs a password: pass --password-stdin or set SAFEHOUSE_REGISTRY_PASSWORD"),
        },
        (None, true) => bail!("--password-stdin needs --username"),
        (None, false) => Ok(docker_config(registry).unwrap_or_default()),
    }
}

/// Credentials from Docker's config file, if it has some for `registry`.
fn docker_config(registry: &str) -> Option<Auth> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")))?;
    let text = std::fs::read(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let keys = if registry == "docker.io" || registry == "index.docker.io" {
        vec!["https://index.docker.io/v1/".to_string(), "docker.io".into(), "index.docker.io".into()]
    } else {
        vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")]
    };
    let entry = keys.iter().find_map(|k| auths.get(k.as_str()))?;
    if let Some(enc) = entry.get("auth").and_then(|a| a.as_str()) {
        let raw = base64::engine::general_purpose::STANDARD.decode(enc).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(Auth::Basic { username: u.to_string(), password: p.to_string() });
    }
    let u = entry.get("username")?.as_str()?;
    let p = entry.get("password")?.as_str()?;
    Some(Auth::Basic { username: u.to_string(), password: p.to_string() })
}
