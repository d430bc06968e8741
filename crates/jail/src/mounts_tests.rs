//! The filesystem sequence against a fake (no root): pivot before any bind, every bind
//! locked down, the host root detached and `/` read-only last (an image root: writable,
//! its layers under an overlay), and a failing operation stops the sequence naming it.

use std::collections::BTreeSet;

use safehouse_policy::plan::{self, HostEntry, HostView, RunRequest};

use super::*;

/// Records each operation as one line; paths in `present` exist; the `fail`-th call
/// (counted from 1) fails with `errno`.
#[derive(Default)]
struct FakeFs {
    calls: Vec<String>,
    present: BTreeSet<String>,
    dirs: BTreeSet<String>,
    fail: Option<(usize, i32)>,
}

impl FakeFs {
    fn op(&mut self, line: String) -> io::Result<()> {
        self.calls.push(line);
        match self.fail {
            Some((n, errno)) if n == self.calls.len() => Err(io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }

    fn made(&mut self, path: &str, dir: bool) {
        self.present.insert(path.to_string());
        if dir {
            self.dirs.insert(path.to_string());
        }
    }
}

impl MountOps for FakeFs {
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let kind = match (fstype, flags & MS_BIND != 0) {
            (_, true) => format!("bind {}", source.unwrap_or("-")),
            (Some("overlay"), false) => format!("mount overlay {}", data.unwrap_or("")),
            (Some(t), false) => format!("mount {t}"),
            (None, false) => "mount propagation".to_string(),
        };
        self.op(format!("{kind} -> {target}"))
    }
    fn set_attr(&mut self, path: &str, recursive: bool, attrs: u64) -> io::Result<()> {
        let ro = if attrs & m::MOUNT_ATTR_RDONLY != 0 { " ro" } else { "" };
        let locked = if attrs & LOCKDOWN == LOCKDOWN || attrs & m::MOUNT_ATTR_NOSUID != 0 { " nosuid" } else { "" };
        let r = if recursive { " recursive" } else { "" };
        self.op(format!("setattr {path}{ro}{locked}{r}"))
    }
    fn attach_tree(&mut self, _: &OwnedFd, path: &str) -> io::Result<()> {
        self.op(format!("attach -> {path}"))
    }
    fn pivot_root(&mut self, new_root: &str, put_old: &str) -> io::Result<()> {
        self.op(format!("pivot_root {new_root} {put_old}"))
    }
    fn detach(&mut self, path: &str) -> io::Result<()> {
        self.op(format!("detach {path}"))
    }
    fn chdir(&mut self, path: &str) -> io::Result<()> {
        self.op(format!("chdir {path}"))
    }
    fn mkdir_p(&mut self, path: &str, _: u32) -> io::Result<()> {
        self.made(path, true);
        self.op(format!("mkdir {path}"))
    }
    fn mkdir(&mut self, path: &str, _: u32) -> io::Result<()> {
        self.made(path, true);
        self.op(format!("mkdir {path}"))
    }
    fn touch(&mut self, path: &str, _: u32) -> io::Result<()> {
        self.made(path, false);
        self.op(format!("touch {path}"))
    }
    fn write(&mut self, path: &str, _: &str) -> io::Result<()> {
        self.made(path, false);
        self.op(format!("write {path}"))
    }
    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()> {
        self.made(path, false);
        self.op(format!("symlink {path} -> {target}"))
    }
    fn chmod(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.op(format!("chmod {path} {mode:o}"))
    }
    fn remove_dir(&mut self, path: &str) -> io::Result<()> {
        self.op(format!("rmdir {path}"))
    }
    fn remove_file(&mut self, path: &str) -> io::Result<()> {
        self.op(format!("rm {path}"))
    }
    fn exists(&mut self, path: &str) -> bool {
        self.present.contains(path)
    }
    fn kind(&mut self, path: &str) -> io::Result<Kind> {
        match (self.dirs.contains(path), self.present.contains(path)) {
            (true, _) => Ok(Kind::Dir),
            (false, true) => Ok(Kind::Other),
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
    fn open_dir(&mut self, path: &str) -> io::Result<OwnedFd> {
        self.op(format!("open {path}"))?;
        Ok(std::fs::File::open("/dev/null")?.into())
    }
    fn list_root(&mut self) -> io::Result<Vec<String>> {
        self.op("list /".into())?;
        Ok(self
            .present
            .iter()
            .filter_map(|p| p.strip_prefix('/'))
            .filter(|p| !p.contains('/'))
            .map(String::from)
            .collect())
    }
}

/// The default plan on a host with the usual system directories and /etc files.
fn plan(hidden: &[&str]) -> Plan {
    let mut view = HostView::default();
    for dir in ["/usr", "/etc", "/opt"] {
        view.entries.insert(dir.into(), HostEntry::Dir);
    }
    for (link, target) in [("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/sbin", "usr/sbin")] {
        view.entries.insert(link.into(), HostEntry::Symlink(target.into()));
    }
    for file in ["/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].into_iter().chain([
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ]) {
        view.entries.insert(file.into(), HostEntry::File);
    }
    let mut req = RunRequest::default();
    req.policy.filesystem.hidden = hidden.iter().map(|s| s.to_string()).collect();
    plan::compile(&req, &view).expect("plan")
}

/// A fake where the generated /etc files' targets exist (the /etc bind made them).
fn fake() -> FakeFs {
    let mut f = FakeFs::default();
    for p in ["/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/workspace"] {
        f.made(p, false);
    }
    f.dirs.insert("/workspace".into());
    f
}

fn position(calls: &[String], pred: impl Fn(&str) -> bool) -> usize {
    calls.iter().position(|c| pred(c)).unwrap_or_else(|| panic!("not found in {calls:#?}"))
}

#[test]
fn pivot_first_binds_locked_down_host_root_detached_and_root_read_only_last() {
    let mut f = fake();
    build(&mut f, &plan(&[]), &mut Prepared::new(), &[], None).unwrap();
    let c = &f.calls;
    assert_eq!(c[0], "mount propagation -> /");
    assert_eq!(c[1], "mount tmpfs -> /tmp");
    let pivot = position(c, |l| l.starts_with("pivot_root "));
    assert_eq!(c[pivot], "pivot_root /tmp /tmp/oldroot");
    let detach = position(c, |l| l == "detach /oldroot");
    for (i, l) in c.iter().enumerate() {
        if l.starts_with("bind ") {
            assert!(i > pivot && i < detach, "{l} at {i}: binds come after the pivot, before the detach");
            // Every bind is restricted right after (masks over /proc entries with
            // /dev/null, and /dev's device nodes, are covered by their mount's flags).
            let target = l.rsplit(" -> ").next().unwrap();
            let masked = l.starts_with("bind /oldroot/dev/null") || target.starts_with("/dev/");
            if !masked {
                assert!(c[i + 1].starts_with(&format!("setattr {target}")), "{l} then {}", c[i + 1]);
                assert!(c[i + 1].contains("nosuid"), "{}", c[i + 1]);
            }
        }
    }
    assert_eq!(c.last().map(String::as_str), Some("setattr / ro nosuid"));
    assert!(c[detach + 1..].iter().all(|l| !l.starts_with("bind ") && !l.starts_with("mount ")), "{c:#?}");
    // The host's system dirs are read-only binds from the old root.
    let usr = position(c, |l| l == "bind /oldroot/usr -> /usr");
    assert_eq!(c[usr + 1], "setattr /usr ro nosuid recursive");
    // /proc and its masks, then /dev with its devices only.
    let proc_ = position(c, |l| l == "mount proc -> /proc");
    assert!(c[proc_..].iter().any(|l| l == "bind /oldroot/dev/null -> /proc/kcore"));
    let devs: Vec<&String> =
        c.iter().filter(|l| l.starts_with("bind /oldroot/dev/") && !l.contains("null ->")).collect();
    let want = ["zero", "full", "random", "urandom", "tty"];
    for dev in want {
        assert!(devs.iter().any(|l| **l == format!("bind /oldroot/dev/{dev} -> /dev/{dev}")), "{dev}: {devs:?}");
    }
    assert_eq!(devs.len(), want.len(), "{devs:?}");
    assert!(c.iter().any(|l| l == "setattr /dev ro nosuid"), "{c:#?}");
}

#[test]
fn hidden_paths_get_a_file_or_a_directory_and_missing_ones_nothing() {
    let mut f = fake();
    build(&mut f, &plan(&["/workspace", "/etc/hosts", "/no/such/path"]), &mut Prepared::new(), &[], None).unwrap();
    let c = &f.calls;
    assert!(c.iter().any(|l| l == "bind /.safehouse-hidden-dir -> /workspace"), "{c:#?}");
    assert!(c.iter().any(|l| l == "bind /.safehouse-hidden-file -> /etc/hosts"), "{c:#?}");
    assert!(!c.iter().any(|l| l.contains("/no/such/path")), "{c:#?}");
}

#[test]
fn a_failing_operation_stops_the_sequence_naming_it() {
    let mut ok = fake();
    build(&mut ok, &plan(&[]), &mut Prepared::new(), &[], None).unwrap();
    let pivot = position(&ok.calls, |l| l.starts_with("pivot_root"));
    let seal = position(&ok.calls, |l| l == "setattr / ro nosuid");
    for n in [1, pivot + 1, seal + 1] {
        let mut f = FakeFs { fail: Some((n, libc::EPERM)), ..fake() };
        let err = build(&mut f, &plan(&[]), &mut Prepared::new(), &[], None).unwrap_err();
        assert_eq!(f.calls.len(), n, "stopped at the failing call: {err}");
        assert!(err.ends_with("Operation not permitted (os error 1)"), "{err}");
    }
    let mut f = FakeFs { fail: Some((pivot + 1, libc::EPERM)), ..fake() };
    assert!(build(&mut f, &plan(&[]), &mut Prepared::new(), &[], None).unwrap_err().starts_with("pivot_root: "));
}

#[test]
fn a_proc_entry_this_kernel_lacks_needs_no_mask() {
    let mut ok = fake();
    build(&mut ok, &plan(&[]), &mut Prepared::new(), &[], None).unwrap();
    let mask = position(&ok.calls, |l| l == "bind /oldroot/dev/null -> /proc/kcore");
    let mut f = FakeFs { fail: Some((mask + 1, libc::ENOENT)), ..fake() };
    build(&mut f, &plan(&[]), &mut Prepared::new(), &[], None).unwrap();
    let mut f = FakeFs { fail: Some((mask + 1, libc::EACCES)), ..fake() };
    let err = build(&mut f, &plan(&[]), &mut Prepared::new(), &[], None).unwrap_err();
    assert!(err.starts_with("mask /proc/kcore: "), "{err}");
}

#[test]
fn an_image_root_is_an_overlay_of_its_layers_and_stays_writable() {
    let mut req = RunRequest::default();
    req.policy.filesystem.rootfs = safehouse_policy::Rootfs::Image("bb".into());
    req.image = Some(plan::ImageRoot {
        reference: "bb".into(),
        layers: vec!["/store/bottom".into(), "/store/top".into()],
        home: "/root".into(),
        ..Default::default()
    });
    let plan = plan::compile(&req, &HostView::default()).unwrap();
    // Root mode: the host side's detached layer mounts, attached read-only first.
    let trees: Vec<OwnedFd> = (0..2).map(|_| std::fs::File::open("/dev/null").unwrap().into()).collect();
    let mut f = fake();
    build(&mut f, &plan, &mut Prepared::new(), &trees, None).unwrap();
    let c = &f.calls;
    assert_eq!(c[1], "mount tmpfs -> /tmp", "the sandbox's own, capped upper layer");
    let overlay = position(c, |l| l.starts_with("mount overlay "));
    assert_eq!(
        c[overlay],
        "mount overlay lowerdir=/tmp/lower/1:/tmp/lower/0,upperdir=/tmp/upper,workdir=/tmp/work,userxattr -> /tmp/root",
        "top layer first"
    );
    for i in 0..2 {
        let at = position(c, |l| l == format!("attach -> /tmp/lower/{i}"));
        assert_eq!(c[at + 1], format!("setattr /tmp/lower/{i} ro nosuid"));
        assert!(at < overlay);
    }
    assert_eq!(c[overlay + 2], "pivot_root /tmp/root /tmp/root/oldroot");
    assert_eq!(c[overlay + 4], "detach /oldroot/tmp", "the host's /tmp is visible to binds again");
    assert!(!c.iter().any(|l| l.starts_with("bind /oldroot/usr") || l.contains("/etc/passwd")), "{c:#?}");
    position(c, |l| l == "detach /oldroot");
    assert_eq!(c.last().map(String::as_str), Some("setattr / nosuid"), "writable, still nosuid/nodev");

    // Rootless: the layers' own paths, opened before the staging tmpfs covers /tmp.
    let mut f = fake();
    build(&mut f, &plan, &mut Prepared::new(), &[], None).unwrap();
    assert_eq!(f.calls[1..4], ["open /store/bottom", "open /store/top", "mount tmpfs -> /tmp"]);
    let overlay = position(&f.calls, |l| l.starts_with("mount overlay "));
    assert!(f.calls[overlay].starts_with("mount overlay lowerdir=/proc/self/fd/"), "{:#?}", f.calls);
    // The host side must have opened every layer.
    let mut f = fake();
    let err = build(&mut f, &plan, &mut Prepared::new(), &trees[..1], None).unwrap_err();
    assert_eq!(err, "the host side opened 1 of the 2 layers");
}

#[test]
fn a_layer_on_disk_takes_the_tmpfs_place_and_a_resume_finds_its_links() {
    let layer: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    // A host root: the layer is the root itself.
    let mut f = fake();
    build(&mut f, &plan(&[]), &mut Prepared::new(), &[], Some(&layer)).unwrap();
    let c = &f.calls;
    assert_eq!(c[1..3], ["attach -> /tmp", "setattr /tmp nosuid"], "the layer, locked down, where the tmpfs went");
    assert!(!c.iter().any(|l| l == "mount tmpfs -> /tmp"), "{c:#?}");
    assert_eq!(c.last().map(String::as_str), Some("setattr / ro nosuid"));

    // A resume: the layer already holds the links the first run made; they are made anew.
    // (The links in /dev are made in its own, fresh tmpfs.)
    let links: Vec<String> = c
        .iter()
        .filter_map(|l| l.strip_prefix("symlink "))
        .map(|l| l.split(" -> ").next().unwrap().to_string())
        .filter(|l| !l.starts_with("/dev/"))
        .collect();
    assert!(!links.is_empty(), "{c:#?}");
    let mut again = fake();
    for l in &links {
        again.made(l, false);
    }
    build(&mut again, &plan(&[]), &mut Prepared::new(), &[], Some(&layer)).unwrap();
    for l in &links {
        let rm = position(&again.calls, |c| c == format!("rm {l}"));
        assert!(again.calls[rm + 1].starts_with(&format!("symlink {l} -> ")), "{:#?}", again.calls);
    }

    // An image root: the layer holds the overlay's upper and work dirs.
    let mut req = RunRequest::default();
    req.policy.filesystem.rootfs = safehouse_policy::Rootfs::Image("bb".into());
    req.image = Some(plan::ImageRoot {
        reference: "bb".into(),
        layers: vec!["/store/l".into()],
        home: "/root".into(),
        ..Default::default()
    });
    let image = plan::compile(&req, &HostView::default()).unwrap();
    let trees: Vec<OwnedFd> = vec![std::fs::File::open("/dev/null").unwrap().into()];
    let mut f = fake();
    build(&mut f, &image, &mut Prepared::new(), &trees, Some(&layer)).unwrap();
    assert_eq!(f.calls[1..3], ["attach -> /tmp", "setattr /tmp nosuid"]);
    position(&f.calls, |l| l.starts_with("mount overlay lowerdir=/tmp/lower/0,upperdir=/tmp/upper,workdir=/tmp/work"));
}
