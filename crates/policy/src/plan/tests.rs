use super::*;
use crate::model::{parse_toml, Bind};
use pretty_assertions::assert_eq;

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
        ("/dev/zero", HostEntry::File),
        ("/dev/urandom", HostEntry::File),
        ("/srv/in", HostEntry::Dir),
        ("/srv/link", HostEntry::Symlink("/etc".into())),
        ("/home/me/proj", HostEntry::Dir),
    ] {
        h.entries.insert(p.to_string(), e);
    }
    h
}

fn bind(host: &str, path: &str, writable: bool) -> MountOp {
    MountOp::Bind { host: host.into(), path: path.into(), writable, dir: true }
}

#[test]
fn default_policy_mount_plan() {
    let req = RunRequest::default();
    let plan = compile(&req, &debian12()).unwrap();
    assert_eq!(plan.root, RootSpec::Tmpfs { size: 1 << 30, inodes: 262_144 });
    let summary: Vec<String> = plan
        .ops
        .iter()
        .map(|op| match op {
            MountOp::Bind { host, path, writable, .. } => {
                format!("bind {host} {path} {}", if *writable { "rw" } else { "ro" })
            }
            MountOp::Symlink { target, path } => format!("symlink {path} -> {target}"),
            MountOp::WritableDir { path } => format!("writable {path}"),
            MountOp::Proc { path } => format!("proc {path}"),
            MountOp::Sysfs { path } => format!("sysfs {path}"),
            MountOp::Dev { path, devices, .. } => format!("dev {path} {}", devices.join(",")),
            MountOp::Generated { path, .. } => format!("generated {path}"),
            MountOp::HideFile { path } => format!("hide-file {path}"),
            MountOp::HideDir { path } => format!("hide-dir {path}"),
            MountOp::Hide { path } => format!("hide {path}"),
            MountOp::MaskWithNull { path } => format!("null {path}"),
            MountOp::MaskDir { path } => format!("mask-dir {path}"),
            MountOp::ReadOnlyDir { path } => format!("ro {path}"),
            MountOp::RootReadOnly => "root-ro".into(),
            MountOp::RootWritable => "root-rw".into(),
        })
        .collect();
    let expected = [
        "bind /usr /usr ro",
        "symlink /bin -> usr/bin",
        "symlink /sbin -> usr/sbin",
        "symlink /lib -> usr/lib",
        "symlink /lib64 -> usr/lib64",
        "bind /etc /etc ro",
        "generated /etc/passwd",
        "generated /etc/group",
        "generated /etc/hostname",
        "generated /etc/hosts",
        "generated /etc/resolv.conf",
        "hide-file /etc/shadow",
        "hide-dir /etc/ssh",
        "proc /proc",
        "null /proc/kcore",
        "null /proc/keys",
        "null /proc/timer_list",
        "null /proc/sysrq-trigger",
        "null /proc/kallsyms",
        "null /proc/modules",
        "null /proc/sched_debug",
        "null /proc/latency_stats",
        "null /proc/kpageflags",
        "null /proc/kpagecount",
        "null /proc/kpagecgroup",
        "null /proc/config.gz",
        "ro /proc/sys",
        "ro /proc/irq",
        "ro /proc/bus",
        "ro /proc/fs",
        "mask-dir /proc/acpi",
        "mask-dir /proc/scsi",
        "mask-dir /proc/driver",
        "sysfs /sys",
        "dev /dev null,zero,urandom",
        "writable /tmp",
        "writable /var/tmp",
        "writable /home/user",
        "writable /workspace",
        "root-ro",
    ];
    assert_eq!(summary, expected);
    assert_eq!(plan.cwd, "/workspace");
    assert_eq!((plan.uid, plan.gid), (1000, 1000));
    let env: Vec<&str> = plan.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(env, ["PATH", "HOME", "TERM", "LANG"]);
    assert!(!plan.limits.memory.required && !plan.limits.pids.required);
}

#[test]
fn workdir_and_binds() {
    let mut req = RunRequest { workdir: Some("/home/me/proj".into()), ..Default::default() };
    req.policy.filesystem.read_only.push(Bind { host: "/srv/in".into(), path: "/input".into() });
    req.mounts.push(MountSpec::parse_flag("/srv/in:/workspace/in").unwrap());
    let plan = compile(&req, &debian12()).unwrap();
    let binds: Vec<&MountOp> = plan
        .ops
        .iter()
        .filter(|o| matches!(o, MountOp::Bind { host, .. } if host.starts_with("/srv") || host.starts_with("/home")))
        .collect();
    assert_eq!(
        binds,
        [
            &bind("/srv/in", "/input", false),
            &bind("/home/me/proj", "/workspace", true),
            &bind("/srv/in", "/workspace/in", false)
        ]
    );
    assert!(!plan.ops.contains(&MountOp::WritableDir { path: "/workspace".into() }));
    assert!(plan.landlock.rules.iter().any(|r| r.path == "/workspace" && r.access == crate::landlock::READ_WRITE));
}

#[test]
fn refusals() {
    let mut req = RunRequest::default();
    req.mounts.push(MountSpec::parse_flag("/srv/link:/x").unwrap());
    assert!(compile(&req, &debian12()).unwrap_err().to_string().contains("symlink"));
    let mut req = RunRequest::default();
    req.mounts.push(MountSpec::parse_flag("/nope:/x").unwrap());
    assert!(compile(&req, &debian12()).unwrap_err().to_string().contains("does not exist"));
    assert!(MountSpec::parse_flag("/a:/b:rx").is_err());
    assert!(MountSpec::parse_flag("/a").is_err());
    assert!(MountSpec::parse_flag("/a:/proc").is_err());
    assert_eq!(MountSpec::parse_flag("/a:/b:rw").unwrap().writable, true);
    let req = RunRequest { env: vec![("A=B".into(), "x".into())], ..Default::default() };
    assert!(compile(&req, &debian12()).is_err());
}

#[test]
fn explicit_limits_are_required() {
    let policy = parse_toml("[limits]\nmemory = \"64MiB\"\ncpus = 0.5\n", "t").unwrap();
    let l = resolve_limits(&policy);
    assert_eq!(l.memory, Limit { value: 64 << 20, required: true });
    assert_eq!(l.cpus, Some(Limit { value: 0.5, required: true }));
    assert_eq!(l.pids, Limit { value: 512, required: false });
}

#[test]
fn rootfs_dir_uses_overlay_and_keeps_hidden() {
    let policy = parse_toml("[filesystem]\nrootfs = \"/srv/in\"\nhidden = [\"/etc/secret\"]\n", "t").unwrap();
    let plan = compile(&RunRequest { policy, ..Default::default() }, &debian12()).unwrap();
    assert_eq!(plan.root, RootSpec::Overlay { lower: "/srv/in".into(), size: 1 << 30, inodes: 262_144 });
    assert!(!plan.ops.iter().any(|o| matches!(o, MountOp::Bind { path, .. } if path == "/usr")));
    assert!(plan.ops.contains(&MountOp::Hide { path: "/etc/secret".into() }));
}

fn busybox(uid: u32) -> ImageRoot {
    ImageRoot {
        reference: "busybox".into(),
        layers: vec!["/store/l1/root".into(), "/store/l2/root".into()],
        env: vec![("PATH".into(), "/bin".into()), ("TERM".into(), "dumb".into())],
        working_dir: Some("/app".into()),
        uid,
        gid: uid,
        home: "/root".into(),
        top_dirs: vec!["/bin".into(), "/etc".into(), "/proc".into(), "/tmp".into(), "/app".into()],
    }
}

#[test]
fn image_root_keeps_the_images_files_users_and_defaults() {
    let policy = parse_toml("[filesystem]\nrootfs = \"image:busybox\"\nhidden = [\"/etc/secret\"]\n", "t").unwrap();
    assert_eq!(policy.filesystem.rootfs, crate::model::Rootfs::Image("busybox".into()));
    let req = RunRequest { policy, image: Some(busybox(0)), term: Some("xterm-256color".into()), ..Default::default() };
    let plan = compile(&req, &debian12()).unwrap();
    assert_eq!(
        plan.root,
        RootSpec::Image {
            layers: vec!["/store/l1/root".into(), "/store/l2/root".into()],
            size: 1 << 30,
            inodes: 262_144
        }
    );
    // No host system directory, no host secret masks, the image's own passwd and group.
    assert!(!plan
        .ops
        .iter()
        .any(|o| matches!(o, MountOp::Bind { .. } | MountOp::Symlink { .. } | MountOp::HideFile { .. })));
    let generated: Vec<&str> = plan
        .ops
        .iter()
        .filter_map(|o| if let MountOp::Generated { path, .. } = o { Some(path.as_str()) } else { None })
        .collect();
    assert_eq!(generated, ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]);
    assert!(plan.ops.contains(&MountOp::Hide { path: "/etc/secret".into() }));
    assert!(!plan.ops.contains(&MountOp::WritableDir { path: HOME.into() }));
    assert_eq!(plan.ops.last(), Some(&MountOp::RootWritable));
    assert_eq!((plan.uid, plan.gid, plan.ids), (0, 0, IdMapping::ImageRange));
    assert_eq!(plan.cwd, "/app");
    assert_eq!(
        plan.env,
        vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("TERM".into(), "dumb".into()),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ]
    );
    // Writable: the built-in dirs and the image's top directories, never /proc.
    let writable: Vec<&str> = plan
        .landlock
        .rules
        .iter()
        .filter(|r| r.access & crate::landlock::WRITE_FILE != 0 && !r.path.starts_with("/dev"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(writable, ["/tmp", "/var/tmp", "/workspace", "/bin", "/etc", "/app"]);
}

#[test]
fn image_root_refusals_and_workdir() {
    let policy = parse_toml("[filesystem]\nrootfs = \"image:busybox\"\n", "t").unwrap();
    let e = compile(&RunRequest { policy: policy.clone(), ..Default::default() }, &debian12()).unwrap_err();
    assert!(e.to_string().contains("must be resolved in the image store"), "{e}");
    let e = compile(
        &RunRequest { policy: policy.clone(), image: Some(busybox(70_000)), ..Default::default() },
        &debian12(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("a sandbox maps ids 0 to 65535"), "{e}");
    let mut img = busybox(1000);
    img.layers.clear();
    let e = compile(&RunRequest { policy: policy.clone(), image: Some(img), ..Default::default() }, &debian12())
        .unwrap_err();
    assert!(e.to_string().contains("has 0 layers"), "{e}");
    let req =
        RunRequest { policy, image: Some(busybox(1000)), workdir: Some("/home/me/proj".into()), ..Default::default() };
    let plan = compile(&req, &debian12()).unwrap();
    assert_eq!((plan.cwd.as_str(), plan.uid), ("/workspace", 1000), "--workdir wins over the image's WorkingDir");
    for bad in ["image:", "image:a b"] {
        let text = format!("[filesystem]\nrootfs = \"{bad}\"\n");
        assert!(parse_toml(&text, "t").is_err(), "{bad}");
    }
}
