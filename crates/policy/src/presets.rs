//! Built-in policies, usable by name from `run --preset`, the API and the CLI.
//! Each is an ordinary policy document (`safehouse policy show NAME` prints it), documented
//! in docs/POLICY.md.

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
    (
        "workspace",
        "a coding session: writable /workspace and /tmp, no network, 2GiB memory, 1024 tasks, 30 minutes",
        WORKSPACE,
    ),
    ("pypi", "like default, plus HTTPS to the Python Package Index (pip install), 2GiB of egress", PYPI),
    (
        "github",
        "like default, plus HTTPS to GitHub (git clone, API, archives, release downloads), 2GiB of egress",
        GITHUB,
    ),
    (
        "web-research",
        "like default, plus HTTP and HTTPS to any public host (never private addresses), 1GiB of egress",
        WEB_RESEARCH,
    ),
];

const WORKSPACE: &str = r#"# A coding agent's session: build, test and edit in /workspace, no network.
# Written-out limits are required: where cgroups cannot be made, run refuses (exit 125).
version = 1

[limits]
memory = "2GiB"     # compilers and test runners; includes the RAM-backed writable layer
pids = 1024         # parallel builds
disk = "2GiB"       # writable layer: /workspace, /tmp, /home/user (and /dev/shm)
nofile = 4096       # language servers and bundlers open many files
timeout = "30m"     # the whole session

[filesystem]
rootfs = "host"     # /workspace, /tmp, /var/tmp and /home/user are always writable

[network]
allow = []          # loopback only
"#;

const PYPI: &str = r#"# pip install from the Python Package Index, nothing else.
version = 1

[network]
allow = [
    "pypi.org:443",               # the index (simple API, JSON API)
    "files.pythonhosted.org:443", # the package files
]
egress_bytes = "2GiB"
"#;

const GITHUB: &str = r#"# git clone/fetch over HTTPS, the REST API, archives, raw files and release downloads.
version = 1

[network]
allow = [
    "github.com:443",                            # git over HTTPS, web, release redirects
    "api.github.com:443",                        # REST and GraphQL API
    "codeload.github.com:443",                   # /archive/ tarballs and zips
    "raw.githubusercontent.com:443",             # raw files
    "release-assets.githubusercontent.com:443",  # release downloads (since 2025)
    "objects.githubusercontent.com:443",         # release downloads (older redirects)
]
egress_bytes = "2GiB"
"#;

const WEB_RESEARCH: &str = r#"# Browse the public web: any name, ports 80 and 443. Names never reach private,
# loopback, link-local or metadata addresses (the gateway checks every resolved address).
version = 1

[network]
allow = ["*"]
egress_bytes = "1GiB"
"#;

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
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::units::{ByteSize, Dur};

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, about, _) in PRESETS {
            let p = load(name).unwrap();
            p.validate().unwrap();
            assert!(!about.is_empty() && !about.contains('\n'), "{name}");
        }
        assert_eq!(
            load("nope").unwrap_err().to_string(),
            "unknown preset \"nope\"; available presets: default, offline, workspace, pypi, github, web-research"
        );
    }

    /// Golden: what each preset lets out.
    #[test]
    fn network_allow_lists() {
        let allow = |name| {
            let p = load(name).unwrap();
            (p.network.allow, p.network.egress_bytes.map(|b| b.0))
        };
        let none: Vec<String> = vec![];
        assert_eq!(allow("default"), (none.clone(), None));
        assert_eq!(allow("offline"), (none.clone(), None));
        assert_eq!(allow("workspace"), (none, None));
        assert_eq!(allow("pypi"), (vec!["pypi.org:443".into(), "files.pythonhosted.org:443".into()], Some(2 << 30)));
        assert_eq!(
            allow("github"),
            (
                vec![
                    "github.com:443".to_string(),
                    "api.github.com:443".into(),
                    "codeload.github.com:443".into(),
                    "raw.githubusercontent.com:443".into(),
                    "release-assets.githubusercontent.com:443".into(),
                    "objects.githubusercontent.com:443".into(),
                ],
                Some(2 << 30)
            )
        );
        assert_eq!(allow("web-research"), (vec!["*".to_string()], Some(1 << 30)));
    }

    #[test]
    fn workspace_limits() {
        let l = load("workspace").unwrap().limits;
        assert_eq!(l.memory, Some(ByteSize(2 << 30)));
        assert_eq!(l.pids, Some(1024));
        assert_eq!(l.disk, Some(ByteSize(2 << 30)));
        assert_eq!(l.nofile, Some(4096));
        assert_eq!(l.timeout, Some(Dur(std::time::Duration::from_secs(1800))));
    }

    #[test]
    fn presets_answer_as_documented() {
        use crate::explain::{explain, Question};
        use crate::plan::HostView;
        let ask = |preset: &str, target: &str| {
            explain(&load(preset).unwrap(), &HostView::default(), &Question::net(target).unwrap()).unwrap().allowed
        };
        assert!(ask("pypi", "files.pythonhosted.org:443"));
        assert!(!ask("pypi", "pypi.org:80"));
        assert!(!ask("pypi", "github.com:443"));
        assert!(ask("github", "codeload.github.com:443"));
        assert!(!ask("github", "gist.github.com:443"));
        assert!(ask("web-research", "example.com:80"));
        assert!(!ask("web-research", "example.com:22"));
        assert!(!ask("web-research", "10.0.0.1:443"));
        assert!(!ask("web-research", "169.254.169.254:80"));
        assert!(!ask("workspace", "pypi.org:443"));
    }
}
