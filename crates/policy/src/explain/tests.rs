use std::time::Duration;

use pretty_assertions::assert_eq;

use super::*;
use crate::model::{parse_toml, Bind, ToolLimits};
use crate::plan::HostEntry;
use crate::units::{ByteSize, Dur};

fn debian12() -> HostView {
    let mut h = HostView::default();
    for (p, e) in [
        ("/usr", HostEntry::Dir),
        ("/etc", HostEntry::Dir),
        ("/bin", HostEntry::Symlink("usr/bin".into())),
        ("/sbin", HostEntry::Symlink("usr/sbin".into())),
        ("/lib", HostEntry::Symlink("usr/lib".into())),
        ("/lib64", HostEntry::Symlink("usr/lib64".into())),
        ("/etc/shadow", HostEntry::File),
        ("/etc/ssh", HostEntry::Dir),
        ("/dev/null", HostEntry::File),
        ("/dev/urandom", HostEntry::File),
        ("/srv/in", HostEntry::Dir),
        ("/srv/out", HostEntry::Dir),
        ("/srv/home", HostEntry::Dir),
    ] {
        h.entries.insert(p.to_string(), e);
    }
    h
}

fn ask(policy: &Policy, q: Question) -> Answer {
    explain(policy, &debian12(), &q).unwrap()
}

fn read(p: &str) -> Question {
    Question::path(PathKind::Read, p).unwrap()
}
fn write(p: &str) -> Question {
    Question::path(PathKind::Write, p).unwrap()
}
fn exec(p: &str) -> Question {
    Question::path(PathKind::Exec, p).unwrap()
}
fn net(t: &str) -> Question {
    Question::net(t).unwrap()
}

fn policy(toml: &str) -> Policy {
    parse_toml(toml, "test").unwrap()
}

fn data_policy() -> Policy {
    policy(
        r#"
[filesystem]
read_only  = [{ host = "/srv/in", path = "/input" }]
read_write = [{ host = "/srv/out", path = "/output" }]
scratch = ["/cache"]
hidden = ["/input/secret", "/etc/machine-id"]
[network]
allow = ["pypi.org", "*.pythonhosted.org:443", "10.20.0.0/16:5432"]
egress_bytes = "2GiB"
"#,
    )
}

#[test]
fn net_name_allowed_names_the_entry_and_notes_resolution() {
    let a = ask(&data_policy(), net("files.pythonhosted.org:443"));
    assert!(a.allowed);
    assert_eq!(a.question, "net files.pythonhosted.org:443");
    assert_eq!(a.rule, "network.allow[1] = \"*.pythonhosted.org:443\"");
    assert_eq!(a.hint, "to deny it, remove \"*.pythonhosted.org:443\" from network.allow");
    assert!(a.notes[0].contains("resolves to are checked"), "{:?}", a.notes);
    assert!(a.notes[1].contains("2GiB"), "{:?}", a.notes);
}

#[test]
fn net_denials_carry_the_gateway_wording() {
    let p = data_policy();
    let a = ask(&p, net("example.com:443"));
    assert!(!a.allowed);
    assert_eq!(a.rule, "default deny");
    assert_eq!(a.reason, "no network.allow entry matches example.com:443");
    assert_eq!(a.hint, "to allow it, add \"example.com:443\" to network.allow in the sandbox's policy");
    // Allowed on 80 and 443 only.
    let a = ask(&p, net("pypi.org:22"));
    assert_eq!(a.reason, "pypi.org is allowed, but not on port 22");
    // The suffix rule is strictly below.
    assert!(!ask(&p, net("pythonhosted.org:443")).allowed);
    // Every spelling of an address is one address; loopback needs an address rule.
    let a = ask(&p, net("127.1:80"));
    assert_eq!((a.allowed, a.rule.as_str()), (false, "loopback (127.0.0.0/8)"));
    let a = ask(&p, net("[::ffff:10.20.1.2]:5432"));
    assert_eq!((a.allowed, a.rule.as_str()), (true, "network.allow[2] = \"10.20.0.0/16:5432\""));
    assert!(a.notes.iter().all(|n| !n.contains("resolves")), "no resolution note for an address");
    let a = ask(&Policy::default(), net("pypi.org:443"));
    assert_eq!(a.reason, "this sandbox has no network access (network.allow is empty)");
}

#[test]
fn net_questions_are_checked() {
    for bad in ["pypi.org:0", "pypi.org:http", "2001:db8::1:443", "[pypi.org]:443", "[::1]x", "https://x:1", ""] {
        assert!(matches!(Question::net(bad), Err(ExplainError::Question(_))), "{bad}");
    }
    assert_eq!(net("[2001:db8::1]:443").to_string(), "net [2001:db8::1]:443");
    assert_eq!(net("PyPI.org.:443").to_string(), "net pypi.org:443");
    // A host alone asks about port 443.
    assert_eq!(net("pypi.org").to_string(), "net pypi.org:443");
    assert_eq!(net("10.0.0.1").to_string(), "net 10.0.0.1:443");
    assert_eq!(net("[::1]").to_string(), "net [::1]:443");
}

#[test]
fn path_questions_are_checked() {
    assert!(Question::path(PathKind::Read, "etc/passwd").is_err());
    assert!(Question::path(PathKind::Write, "/tmp/../etc").is_err());
    assert_eq!(Question::path(PathKind::Read, "/tmp/").unwrap(), Question::Read("/tmp".into()));
}

#[test]
fn read_answers_name_the_mount() {
    let p = data_policy();
    let cases = [
        ("/usr/bin/python3", true, "filesystem.rootfs = \"host\" (/usr, read-only)"),
        ("/etc/os-release", true, "filesystem.rootfs = \"host\" (/etc, read-only)"),
        ("/etc/passwd", true, "runtime-generated /etc/passwd"),
        ("/etc/shadow", false, "built-in hidden host secret /etc/shadow"),
        ("/etc/ssh/sshd_config", false, "built-in hidden host secret /etc/ssh"),
        ("/etc/machine-id", false, "filesystem.hidden[1] = \"/etc/machine-id\""),
        ("/input/a.csv", true, "filesystem.read_only[0] = { host = \"/srv/in\", path = \"/input\" }"),
        ("/input/secret/key", false, "filesystem.hidden[0] = \"/input/secret\""),
        ("/input/secretive", true, "filesystem.read_only[0] = { host = \"/srv/in\", path = \"/input\" }"),
        ("/home/me/.ssh/id_ed25519", false, "not in the sandbox (nothing is mounted there)"),
        ("/var/log/syslog", false, "not in the sandbox (nothing is mounted there)"),
        ("/proc/kcore", false, "runtime mask /proc/kcore"),
        ("/proc/acpi/wakeup", false, "runtime mask /proc/acpi"),
        ("/proc/sys/kernel/ostype", true, "runtime: /proc/sys is read-only"),
        ("/proc/self/status", true, "runtime: /proc is the sandbox's own procfs"),
        ("/dev/null", true, "runtime device /dev/null"),
        ("/dev/sda", false, "runtime: /dev holds only the listed devices, pts and shm"),
    ];
    for (path, allowed, rule) in cases {
        let a = ask(&p, read(path));
        assert_eq!((path, a.allowed, a.rule.as_str()), (path, allowed, rule), "{a:?}");
    }
    let a = ask(&p, read("/home/me/.ssh/id_ed25519"));
    assert_eq!(
        a.hint,
        "to make a host path visible there, add { host = \"/host/dir\", path = \"/home\" } to filesystem.read_only"
    );
    let a = ask(&p, read("/input/secret/key"));
    assert_eq!(a.hint, "to make it visible, remove \"/input/secret\" from filesystem.hidden");
}

#[test]
fn symlinked_system_dirs_are_followed() {
    let a = ask(&Policy::default(), read("/bin/sh"));
    assert!(a.allowed);
    assert_eq!(a.rule, "filesystem.rootfs = \"host\" (/usr, read-only)");
    assert_eq!(a.notes, vec!["/bin is a symlink to usr/bin: /bin/sh is /usr/bin/sh".to_string()]);
}

#[test]
fn write_answers_name_the_writable_entry() {
    let p = data_policy();
    let cases = [
        ("/workspace/main.py", true, "built-in writable directory /workspace"),
        ("/tmp/x", true, "built-in writable directory /tmp"),
        ("/home/user/.cache/pip", true, "built-in writable directory /home/user"),
        ("/cache/wheels", true, "filesystem.scratch[0] = \"/cache\""),
        ("/output/result.json", true, "filesystem.read_write[0] = { host = \"/srv/out\", path = \"/output\" }"),
        ("/input/a.csv", false, "filesystem.read_only[0] = { host = \"/srv/in\", path = \"/input\" }"),
        ("/usr/local/bin/x", false, "filesystem.rootfs = \"host\" (/usr, read-only)"),
        ("/etc/passwd", false, "runtime-generated /etc/passwd"),
        ("/opt/x", false, "not in the sandbox (nothing is mounted there)"),
        ("/proc/sys/kernel/hostname", false, "runtime: /proc/sys is read-only"),
        ("/dev/shm/x", true, "runtime: /dev/shm (a tmpfs capped by limits.disk)"),
    ];
    for (path, allowed, rule) in cases {
        let a = ask(&p, write(path));
        assert_eq!((path, a.allowed, a.rule.as_str()), (path, allowed, rule), "{a:?}");
    }
    assert_eq!(
        ask(&p, write("/input/a.csv")).hint,
        "to make it writable, move filesystem.read_only[0] to filesystem.read_write"
    );
    assert!(ask(&p, write("/input/a.csv")).reason.contains("EROFS"));
    assert_eq!(ask(&p, write("/cache/x")).hint, "to make it read-only, remove filesystem.scratch[0]");
    assert!(ask(&p, write("/usr/x")).hint.contains("always read-only"));
}

#[test]
fn the_last_mount_above_a_path_decides_not_the_longest_prefix() {
    // The plan makes /home/user a writable dir before the binds; a bind at /home then
    // covers it, so /home/user is whatever /srv/home holds, read-only.
    let p = policy("[filesystem]\nread_only = [{ host = \"/srv/home\", path = \"/home\" }]\n");
    let a = ask(&p, write("/home/user/x"));
    assert!(!a.allowed, "{a:?}");
    assert_eq!(a.rule, "filesystem.read_only[0] = { host = \"/srv/home\", path = \"/home\" }");
    // A bind beneath a writable dir lands on top of it.
    let p = policy("[filesystem]\nread_only = [{ host = \"/srv/in\", path = \"/tmp/in\" }]\n");
    assert!(!ask(&p, write("/tmp/in/x")).allowed);
    assert!(ask(&p, write("/tmp/other")).allowed);
}

#[test]
fn rootfs_dir_is_read_only_and_has_no_host_secret_list() {
    let mut host = debian12();
    host.entries.insert("/srv/rootfs".into(), HostEntry::Dir);
    let p = policy("[filesystem]\nrootfs = \"/srv/rootfs\"\n");
    let a = explain(&p, &host, &read("/etc/shadow")).unwrap();
    assert_eq!((a.allowed, a.rule.as_str()), (true, "filesystem.rootfs = \"/srv/rootfs\""));
    let a = explain(&p, &host, &write("/opt/x")).unwrap();
    assert_eq!((a.allowed, a.rule.as_str()), (false, "filesystem.rootfs = \"/srv/rootfs\""));
}

#[test]
fn exec_without_tools_allow_follows_visibility() {
    let p = data_policy();
    let a = ask(&p, exec("/usr/bin/python3"));
    assert!(a.allowed);
    assert_eq!(a.rule, "filesystem.rootfs = \"host\" (/usr, read-only)");
    assert!(a.reason.starts_with("tools.allow is empty"), "{}", a.reason);
    assert!(a.hint.contains("tools.allow"));
    let a = ask(&p, exec("/workspace/a.out"));
    assert_eq!((a.allowed, a.rule.as_str()), (true, "built-in writable directory /workspace"));
    let a = ask(&p, exec("/home/me/bin/tool"));
    assert_eq!((a.allowed, a.rule.as_str()), (false, "not in the sandbox (nothing is mounted there)"));
    let a = ask(&p, exec("/input/secret/run"));
    assert!(!a.allowed);
    assert!(a.hint.contains("--read /input/secret/run"), "{}", a.hint);
    let a = ask(&p, exec("/proc/self/exe"));
    assert!(!a.allowed);
    assert!(a.reason.contains("noexec"), "{}", a.reason);
}

/// tools.allow is refused by validation on this branch: the policy is built directly.
fn tools_policy() -> Policy {
    let mut p = Policy::default();
    p.tools.allow = vec!["/usr/bin/python3*".into(), "/usr/bin/git".into(), "/bin/s?".into()];
    p.tools.limits.insert(
        "/usr/bin/python3*".into(),
        ToolLimits { timeout: Some(Dur(Duration::from_secs(120))), memory: Some(ByteSize(1 << 30)) },
    );
    p
}

#[test]
fn exec_with_tools_allow_names_the_pattern_and_limits() {
    let p = tools_policy();
    let a = ask(&p, exec("/usr/bin/python3.11"));
    assert!(a.allowed);
    assert_eq!(a.rule, "tools.allow[0] = \"/usr/bin/python3*\"");
    assert_eq!(a.hint, "to deny it, remove \"/usr/bin/python3*\" from tools.allow");
    assert_eq!(a.notes, vec!["tools.limits.\"/usr/bin/python3*\" applies: timeout 120s, memory 1GiB".to_string()]);
    let a = ask(&p, exec("/usr/bin/git"));
    assert_eq!((a.allowed, a.rule.as_str()), (true, "tools.allow[1] = \"/usr/bin/git\""));
    assert!(a.notes.is_empty());
    let a = ask(&p, exec("/bin/sh"));
    assert_eq!((a.allowed, a.rule.as_str()), (true, "tools.allow[2] = \"/bin/s?\""));
    let a = ask(&p, exec("/usr/bin/curl"));
    assert!(!a.allowed);
    assert_eq!(a.rule, "tools.allow (no pattern matches)");
    assert_eq!(a.hint, "to allow it, add \"/usr/bin/curl\" to tools.allow");
    // A pattern never reaches a file the sandbox cannot see.
    let mut hidden = p.clone();
    hidden.tools.allow.push("/etc/ssh/*".into());
    let a = ask(&hidden, exec("/etc/ssh/helper"));
    assert_eq!((a.allowed, a.rule.as_str()), (false, "built-in hidden host secret /etc/ssh"));
}

#[test]
fn glob_matches_the_last_component_only() {
    for (pat, path, want) in [
        ("/usr/bin/python3*", "/usr/bin/python3", true),
        ("/usr/bin/python3*", "/usr/bin/python3.12", true),
        ("/usr/bin/python3*", "/usr/bin/python2", false),
        ("/usr/bin/*", "/usr/bin/sub/x", false),
        ("/usr/*/git", "/usr/bin/git", false),
        ("/usr/bin/g?t", "/usr/bin/git", true),
        ("/usr/bin/g?t", "/usr/bin/gt", false),
        ("/usr/bin/*a*b*", "/usr/bin/xaxxbx", true),
        ("/usr/bin/*a*b", "/usr/bin/ab_a", false),
        ("/usr/bin/*", "/usr/bin/", true),
        ("relative", "relative", false),
    ] {
        assert_eq!(pattern_matches(pat, path), want, "{pat} {path}");
    }
}

#[test]
fn explain_works_on_unvalidated_policies_and_reports_plan_errors() {
    let p = tools_policy();
    assert!(ask(&p, read("/usr/bin/git")).allowed);
    let mut missing = Policy::default();
    missing.filesystem.read_only.push(Bind { host: "/nope".into(), path: "/data".into() });
    let err = explain(&missing, &debian12(), &read("/data/x")).unwrap_err().to_string();
    assert!(err.contains("/nope does not exist"), "{err}");
    // Network questions need no host.
    assert!(explain(&missing, &HostView::default(), &net("pypi.org:443")).is_ok());
}

#[test]
fn answers_serialise_with_the_documented_keys() {
    let a = ask(&data_policy(), net("example.com:443"));
    let v = serde_json::to_value(&a).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["allowed", "hint", "question", "reason", "rule"]);
}

#[test]
fn net_says_when_a_target_is_the_hosts() {
    use crate::network::{HostAddrs, HostBlock};
    let mut host = debian12();
    host.addrs = HostAddrs::new([HostBlock::new("203.0.113.77".parse().unwrap(), 32)]);
    let star: Policy = parse_toml("version = 1\n[network]\nallow = [\"*:*\"]\n", "p.toml").unwrap();
    let a = explain(&star, &host, &net("203.0.113.77:8080")).unwrap();
    assert_eq!((a.allowed, a.rule.as_str()), (false, "this host (203.0.113.77/32)"));
    assert_eq!(
        a.reason,
        "203.0.113.77 is an address of this host; the gateway never opens the host's own services to \"*\" or a CIDR block"
    );
    assert_eq!(
        a.hint,
        "if the sandbox must reach this service of the host, add the exact address \"203.0.113.77:8080\" to network.allow"
    );
    // Without the host's set, the same address is public and "*" allows it.
    assert!(explain(&star, &debian12(), &net("203.0.113.77:8080")).unwrap().allowed);
    let exact: Policy = parse_toml("version = 1\n[network]\nallow = [\"203.0.113.77:8080\"]\n", "p.toml").unwrap();
    let a = explain(&exact, &host, &net("203.0.113.77:8080")).unwrap();
    assert!(a.allowed);
    assert_eq!(
        a.notes,
        ["203.0.113.77 is an address of this host (203.0.113.77/32): only this exact address rule opens it; \
          under `safehouse serve` only the admin tenant's policies may name it"]
    );
}
