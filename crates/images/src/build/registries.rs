//! The package registries a build's RUN steps may reach, taken from the host's own apt
//! and pip configuration (never a list written into safehouse): apt's source URIs, pip's
//! index-url and extra-index-url (else pip's defaults, pypi.org and
//! files.pythonhosted.org), and the CA bundle pip is told to trust.

use std::path::{Path, PathBuf};

/// What the host's configuration names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registries {
    /// `host` or `host:port` rules for `network.allow`, in order, without duplicates.
    pub hosts: Vec<String>,
    /// pip's `cert` (or PIP_CERT): a CA bundle to trust for the index.
    pub pip_cert: Option<PathBuf>,
}

/// `host[:port]` of an http(s) URL, None for anything else.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let hostport = rest.split(['/', '?', '#']).next()?;
    let hostport = hostport.rsplit_once('@').map(|(_, h)| h).unwrap_or(hostport);
    (!hostport.is_empty()).then(|| hostport.to_ascii_lowercase())
}

/// URIs of apt source files: one-line (`deb [opts] URI suite ...`) and deb822 (`URIs:`).
pub fn apt_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        if let Some(v) = l.strip_prefix("URIs:") {
            out.extend(v.split_whitespace().map(String::from));
        } else if l.starts_with("deb ") || l.starts_with("deb-src ") {
            let mut words = l.split_whitespace().skip(1).peekable();
            if words.peek().map(|w| w.starts_with('[')).unwrap_or(false) {
                for w in words.by_ref() {
                    if w.ends_with(']') {
                        break;
                    }
                }
            }
            if let Some(u) = words.next() {
                out.push(u.to_string());
            }
        }
    }
    out
}

/// `key = value` of pip's ini files (any section), later files winning.
fn pip_values(text: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() != key {
            continue;
        }
        out.extend(v.split_whitespace().map(String::from));
        // Continuation lines (indented) belong to the same value.
        while let Some(next) = lines.peek() {
            if next.starts_with(' ') || next.starts_with('\t') {
                out.extend(next.split_whitespace().map(String::from));
                lines.next();
            } else {
                break;
            }
        }
    }
    out
}

fn push(hosts: &mut Vec<String>, h: String) {
    if !hosts.contains(&h) {
        hosts.push(h);
    }
}

/// Reads the host's apt and pip configuration (`root` is `/` but in tests).
pub fn from_host(root: &Path, env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Registries {
    let mut r = Registries::default();
    let mut apt_files = vec![root.join("etc/apt/sources.list")];
    if let Ok(d) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        let mut v: Vec<PathBuf> = d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().map(|x| x == "list" || x == "sources").unwrap_or(false))
            .collect();
        v.sort();
        apt_files.extend(v);
    }
    for f in apt_files {
        if let Ok(t) = std::fs::read_to_string(&f) {
            for u in apt_uris(&t) {
                if let Some(h) = url_host(&u) {
                    push(&mut r.hosts, h);
                }
            }
        }
    }
    let mut pip_files = vec![root.join("etc/pip.conf"), root.join("etc/xdg/pip/pip.conf")];
    if let Some(h) = home {
        pip_files.push(h.join(".pip/pip.conf"));
        pip_files.push(h.join(".config/pip/pip.conf"));
    }
    let mut index = Vec::new();
    let mut extra = Vec::new();
    let mut cert = None;
    for f in pip_files {
        if let Ok(t) = std::fs::read_to_string(&f) {
            let i = pip_values(&t, "index-url");
            if !i.is_empty() {
                index = i;
            }
            extra.extend(pip_values(&t, "extra-index-url"));
            if let Some(c) = pip_values(&t, "cert").pop() {
                cert = Some(c);
            }
        }
    }
    if let Some(i) = env("PIP_INDEX_URL") {
        index = vec![i];
    }
    if let Some(e) = env("PIP_EXTRA_INDEX_URL") {
        extra.extend(e.split_whitespace().map(String::from));
    }
    if let Some(c) = env("PIP_CERT") {
        cert = Some(c);
    }
    if index.is_empty() {
        // pip's own defaults: the index and the host its files come from.
        push(&mut r.hosts, "pypi.org".into());
        push(&mut r.hosts, "files.pythonhosted.org".into());
    }
    for u in index.iter().chain(extra.iter()) {
        if let Some(h) = url_host(u) {
            push(&mut r.hosts, h);
        }
    }
    r.pip_cert = cert.map(PathBuf::from).filter(|p| p.is_absolute() && p.is_file());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_and_pip() {
        let dir = std::env::temp_dir().join(format!("shb-reg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            dir.join("etc/apt/sources.list"),
            "# x\ndeb [arch=amd64 signed-by=/k] http://mirror.example:8080/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/apt/sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/pip.conf"), "[global]\nindex-url = https://user:pw@pypi.corp.example/simple\nextra-index-url =\n  https://extra.example/simple\ncert = /etc/hostname\n").unwrap();
        let none = |_: &str| None;
        let r = from_host(&dir, &none, None);
        assert_eq!(r.hosts, ["mirror.example:8080", "deb.debian.org", "pypi.corp.example", "extra.example"]);
        assert_eq!(r.pip_cert.as_deref(), Some(Path::new("/etc/hostname")));
        std::fs::remove_file(dir.join("etc/pip.conf")).unwrap();
        let r = from_host(&dir, &none, None);
        assert_eq!(r.hosts[2..], ["pypi.org", "files.pythonhosted.org"]);
        let env = |k: &str| (k == "PIP_INDEX_URL").then(|| "http://127.0.0.1:9/simple".to_string());
        assert_eq!(from_host(&dir, &env, None).hosts[2..], ["127.0.0.1:9"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
