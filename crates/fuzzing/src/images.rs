//! The image builder's and the store's parsers: Dockerfiles, and layer archives (tar) as the
//! unpacker writes them to disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safehouse_images::build::dockerfile::{self, Step};
use safehouse_images::unpack::{self, components, IdShift, Limits, MAX_NAME, MAX_PATH};

/// `images_dockerfile`: a Dockerfile as `template build` reads it. An accepted one has one
/// `FROM`, before it only `ARG`s, and its steps' lines in order within the text; variable
/// expansion and `K=V` splitting of any text never fail by panicking.
pub fn dockerfile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vars: BTreeMap<String, String> = [("A".to_string(), "x y".to_string()), ("B".into(), String::new())].into();
    let _ = dockerfile::expand(text, &vars);
    let _ = dockerfile::pairs(text, false);
    let _ = dockerfile::pairs(text, true);
    let Ok(lines) = dockerfile::parse(text) else { return };
    let last_line = text.bytes().filter(|b| *b == b'\n').count() + 1;
    let froms: Vec<_> = lines.iter().filter(|l| matches!(l.step, Step::From { .. })).collect();
    assert_eq!(froms.len(), 1, "{lines:?}");
    let first = lines.iter().position(|l| !matches!(l.step, Step::Arg { .. })).expect("a FROM");
    assert!(matches!(lines[first].step, Step::From { .. }), "{lines:?}");
    for w in lines.windows(2) {
        assert!(w[0].line <= w[1].line, "{lines:?}");
    }
    for l in &lines {
        assert!((1..=last_line).contains(&l.line), "line {} of {last_line}", l.line);
    }
}

/// `images_layer`: a layer archive. Entry names reduce to components that stay inside the
/// layer; the unpacker, writing into an empty directory, creates nothing outside it, leaves
/// no setuid or setgid file and no device but whiteouts (0/0; FIFOs are kept), and stops at
/// its caps.
pub fn layer(data: &[u8]) {
    if let Ok(comps) = components(data) {
        assert!(data.len() <= MAX_PATH);
        for c in &comps {
            assert!(!c.is_empty() && *c != b"." && *c != b".." && c.len() <= MAX_NAME && !c.contains(&0));
        }
    }
    let scratch = Scratch::new();
    let dest = scratch.0.join("layer");
    let outside = scratch.0.join("outside");
    fs::create_dir(&dest).expect("the layer directory");
    fs::create_dir(&outside).expect("the outside directory");
    let dir = fs::File::open(&dest).expect("open the layer directory");
    let limits = Limits { max_bytes: 1 << 20, max_entries: 256, max_metadata: 64 << 10 };
    let result = unpack::unpack(data, dir.as_fd(), IdShift::Caller, limits);
    if let Ok(report) = &result {
        assert!(report.entries <= limits.max_entries && report.bytes <= limits.max_bytes, "{report:?}");
    }
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0, "the layer wrote outside its directory");
    let mut names: Vec<_> = fs::read_dir(&scratch.0).expect("scratch").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    assert_eq!(names, ["layer", "outside"], "the layer wrote next to its directory");
    walk(&dest);
}

/// Checks every file under `dir`, following no symlink.
fn walk(dir: &Path) {
    for e in fs::read_dir(dir).expect("read a layer directory") {
        let e = e.expect("entry");
        let md = fs::symlink_metadata(e.path()).expect("stat an unpacked file");
        let t = md.file_type();
        if t.is_file() {
            assert_eq!(md.mode() & 0o6000, 0, "{:?} kept a setuid/setgid bit", e.path());
        } else if t.is_char_device() {
            assert_eq!(md.rdev(), 0, "{:?} is a device, not a whiteout", e.path());
        } else if t.is_block_device() || t.is_socket() {
            panic!("{:?}: a {t:?} was created", e.path());
        } else if t.is_dir() {
            walk(&e.path());
        }
    }
}

/// A fresh directory, removed when dropped (on tmpfs when there is one).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let p = base.join(format!("safehouse-fuzz-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir(&p).expect("a scratch directory");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = unpack::remove_tree(&self.0);
    }
}
