//! `image import SRC --tag NAME`: an OCI image layout (directory or archive), a `docker
//! save` archive (or its extracted directory), or a root filesystem (directory or tar,
//! plain, gzip or zstd) becomes an image in the store.
//!
//! Files of a layout or archive are opened beneath the source directory without
//! following symlinks, and every blob is verified against its digest; archives are
//! first unpacked (by the same hostile-layer rules) into the store's tmp/.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::oci::{self, Parsed, Platform};
use crate::progress::{Event, Progress};
use crate::store::{ImageRecord, Kind, Store, MAX_JSON};
use crate::unpack::{self, tree, IdShift, Limits};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The name to store the image under.
    pub name: String,
    /// Which image of a layout or archive holding several: a ref name
    /// (`org.opencontainers.image.ref.name`) or a `docker save` repo tag.
    pub select: Option<String>,
    pub platform: Platform,
    pub limits: Limits,
}

impl ImportOptions {
    pub fn new(name: impl Into<String>) -> ImportOptions {
        ImportOptions { name: name.into(), select: None, platform: Platform::host(), limits: Limits::default() }
    }
}

/// What SRC turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    OciLayout,
    DockerSave,
    RootfsDir,
    RootfsTar,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::OciLayout => "an OCI layout",
            Source::DockerSave => "a docker save image",
            Source::RootfsDir => "a root filesystem directory",
            Source::RootfsTar => "a root filesystem archive",
        }
    }
}

pub fn import(store: &Store, src: &Path, opts: &ImportOptions, progress: &dyn Progress) -> Result<ImageRecord> {
    crate::store::refs::check_name(&opts.name)?;
    let meta = std::fs::metadata(src).map_err(|e| ImageError::io("read", src, e))?;
    let _writer = store.writer_lock()?;
    let source = format!("import {}", src.display());
    if meta.is_dir() {
        let dir = open_dir(src)?;
        let kind = classify_dir(&dir);
        progress.event(Event::Note { text: &format!("importing {} as {}", src.display(), kind.label()) });
        return match kind {
            Source::OciLayout => from_layout(store, &dir, opts, source, progress),
            Source::DockerSave => from_docker_save(store, &dir, opts, source, progress),
            _ => from_rootfs_dir(store, src, opts, source, progress),
        };
    }
    if !meta.is_file() {
        return Err(ImageError::format(src.display().to_string(), "neither a directory nor a regular file"));
    }
    if is_image_archive(src)? {
        // Unpack the archive's files into tmp/, then read it as a directory.
        let work = store.tmp_path("import");
        std::fs::create_dir_all(&work).map_err(|e| ImageError::io("create", &work, e))?;
        let result = (|| {
            let f = std::fs::File::open(src).map_err(|e| ImageError::io("open", src, e))?;
            let input = crate::compress::decompress(f).map_err(|e| ImageError::io("read", src, e))?;
            let dir = std::fs::File::open(&work).map_err(|e| ImageError::io("open", &work, e))?;
            unpack::unpack(input, dir.as_fd(), IdShift::Caller, opts.limits)
                .map_err(|reason| ImageError::format(src.display().to_string(), reason))?;
            let dir = open_dir(&work)?;
            let kind = classify_dir(&dir);
            progress.event(Event::Note { text: &format!("importing {} as {} archive", src.display(), kind.label()) });
            match kind {
                Source::OciLayout => from_layout(store, &dir, opts, source, progress),
                Source::DockerSave => from_docker_save(store, &dir, opts, source, progress),
                _ => Err(ImageError::format(src.display().to_string(), "not an OCI layout or docker save archive")),
            }
        })();
        let _ = tree::remove_tree(&work);
        return result;
    }
    progress.event(Event::Note { text: &format!("importing {} as {}", src.display(), Source::RootfsTar.label()) });
    let f = std::fs::File::open(src).map_err(|e| ImageError::io("open", src, e))?;
    let info = store.unpack_layer(std::io::BufReader::with_capacity(1 << 20, f), None, None, opts.limits)?;
    progress.event(Event::Unpacked { layer: &info.diff_id, report: &info.report });
    finish_rootfs(store, opts, source, info.diff_id, info.size, info.tar_size, progress)
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    rfs::open(p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ImageError::io("open", p, e.into()))
}

/// Opens `rel` beneath `dir` without following any symlink.
fn open_beneath(dir: &OwnedFd, rel: &str) -> Result<std::fs::File> {
    rfs::openat2(
        dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map(std::fs::File::from)
    .map_err(|e| ImageError::io("open", PathBuf::from(rel), std::io::Error::from(e)))
}

fn read_small(dir: &OwnedFd, rel: &str) -> Result<Vec<u8>> {
    let f = open_beneath(dir, rel)?;
    let mut v = Vec::new();
    f.take(MAX_JSON + 1).read_to_end(&mut v).map_err(|e| ImageError::io("read", PathBuf::from(rel), e))?;
    if v.len() as u64 > MAX_JSON {
        return Err(ImageError::format(rel, format!("larger than {MAX_JSON} bytes")));
    }
    Ok(v)
}

fn exists(dir: &OwnedFd, rel: &str) -> bool {
    open_beneath(dir, rel).is_ok()
}

fn classify_dir(dir: &OwnedFd) -> Source {
    if exists(dir, "oci-layout") && exists(dir, "index.json") {
        Source::OciLayout
    } else if exists(dir, "manifest.json") && !exists(dir, "usr") && !exists(dir, "bin") {
        Source::DockerSave
    } else {
        Source::RootfsDir
    }
}

/// An archive of an image (rather than of a root filesystem): its first entries all sit
/// at names such archives use.
fn is_image_archive(src: &Path) -> Result<bool> {
    let f = std::fs::File::open(src).map_err(|e| ImageError::io("open", src, e))?;
    let input = crate::compress::decompress(f).map_err(|e| ImageError::io("read", src, e))?;
    let mut a = tar::Archive::new(input);
    let entries =
        a.entries().map_err(|e| ImageError::format(src.display().to_string(), format!("not a tar archive: {e}")))?;
    let mut seen = 0;
    for e in entries.take(8) {
        let e = e.map_err(|e| ImageError::format(src.display().to_string(), format!("not a tar archive: {e}")))?;
        let path = e.path_bytes().into_owned();
        let comps = unpack::components(&path).unwrap_or_default();
        let Some(top) = comps.first() else { continue };
        let top = String::from_utf8_lossy(top);
        let hexish = top.trim_end_matches(".json").len() == 64
            && top.trim_end_matches(".json").bytes().all(|b| b.is_ascii_hexdigit());
        if !(matches!(&*top, "blobs" | "oci-layout" | "index.json" | "manifest.json" | "repositories") || hexish) {
            return Ok(false);
        }
        seen += 1;
    }
    Ok(seen > 0)
}

fn blob_rel(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn from_layout(
    store: &Store,
    dir: &OwnedFd,
    opts: &ImportOptions,
    source: String,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let index_bytes = read_small(dir, "index.json")?;
    let Parsed::Index(index) = oci::parse(&index_bytes, "index.json")? else {
        return Err(ImageError::format("index.json", "is a manifest, not an index"));
    };
    // The manifest: by ref name if asked, else the only one, else by platform.
    let mut candidates: Vec<oci_spec::image::Descriptor> = index.manifests().clone();
    if let Some(want) = &opts.select {
        candidates.retain(|m| {
            m.annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .map(|n| n == want || n.ends_with(&format!(":{want}")))
                .unwrap_or(false)
        });
        if candidates.is_empty() {
            let names: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|m| m.annotations().as_ref()?.get("org.opencontainers.image.ref.name").cloned())
                .collect();
            return Err(ImageError::format(
                "index.json",
                format!("no image named {want:?} (it has: {})", names.join(", ")),
            ));
        }
    }
    let desc = if candidates.len() == 1 {
        candidates.remove(0)
    } else {
        let idx = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(candidates)
            .build()
            .map_err(|e| ImageError::format("index.json", e.to_string()))?;
        oci::select(&idx, &opts.platform, "index.json")?
    };
    let mut d = oci::digest_of(&desc, "index.json")?;
    let mut manifest_bytes = read_small(dir, &blob_rel(&d))?;
    d.verify(format!("manifest {d}"), &Digest::of(&manifest_bytes))?;
    let manifest = loop {
        match oci::parse(&manifest_bytes, &format!("manifest {d}"))? {
            Parsed::Manifest(m) => break m,
            Parsed::Index(nested) => {
                let chosen = oci::select(&nested, &opts.platform, &format!("index {d}"))?;
                d = oci::digest_of(&chosen, "nested index")?;
                manifest_bytes = read_small(dir, &blob_rel(&d))?;
                d.verify(format!("manifest {d}"), &Digest::of(&manifest_bytes))?;
            }
        }
    };
    let what = format!("image {d}");
    let layers = oci::layers(&manifest, &what)?;
    let cfg = oci::digest_of(manifest.config(), "config descriptor")?;
    let config_bytes = read_small(dir, &blob_rel(&cfg))?;
    cfg.verify(format!("config {cfg}"), &Digest::of(&config_bytes))?;
    let config = oci::parse_config(&config_bytes, &format!("config {cfg}"))?;
    let diff_ids = oci::diff_ids(&config, layers.len(), &what)?;
    let mut stored = Vec::new();
    for (spec, diff_id) in layers.iter().zip(&diff_ids) {
        let info = if store.has_layer(diff_id) {
            store.layer_info(diff_id)?
        } else {
            let f = open_beneath(dir, &blob_rel(&spec.blob))?;
            let info = store.unpack_layer(
                std::io::BufReader::with_capacity(1 << 20, f),
                Some(&spec.blob),
                Some(diff_id),
                opts.limits,
            )?;
            progress.event(Event::Unpacked { layer: &info.diff_id, report: &info.report });
            info
        };
        stored.push((info.diff_id, info.size));
    }
    let record = oci::commit(store, &opts.name, Kind::Image, source, &manifest_bytes, &config_bytes, &stored)?;
    progress.event(Event::Done { record: &record });
    Ok(record)
}

#[derive(serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn from_docker_save(
    store: &Store,
    dir: &OwnedFd,
    opts: &ImportOptions,
    source: String,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let bytes = read_small(dir, "manifest.json")?;
    let mut entries: Vec<DockerSaveEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::format("manifest.json", format!("not a docker save manifest: {e}")))?;
    if let Some(want) = &opts.select {
        let full = crate::store::refs::with_default_tag(want);
        entries.retain(|e| e.repo_tags.iter().flatten().any(|t| *t == *want || *t == full));
    }
    let entry = match entries.len() {
        1 => entries.remove(0),
        0 => return Err(ImageError::format("manifest.json", "no matching image in the archive")),
        _ => {
            let tags: Vec<String> = entries.iter().flat_map(|e| e.repo_tags.clone().unwrap_or_default()).collect();
            return Err(ImageError::format(
                "manifest.json",
                format!(
                    "the archive holds {} images ({}); choose one with --select TAG",
                    entries.len(),
                    tags.join(", ")
                ),
            ));
        }
    };
    let config_bytes = read_small(dir, &entry.config)?;
    // The config's file name is its digest in both formats; check it when it says so.
    let cfg_digest = Digest::of(&config_bytes);
    let named = entry.config.trim_end_matches(".json").rsplit('/').next().unwrap_or("").to_string();
    if named.len() == 64 && named != cfg_digest.hex() {
        return Err(ImageError::Digest {
            what: format!("config {}", entry.config),
            expected: format!("sha256:{named}"),
            actual: cfg_digest.to_string(),
        });
    }
    let config = oci::parse_config(&config_bytes, &entry.config)?;
    let what = format!("image {}", entry.config);
    let diff_ids = oci::diff_ids(&config, entry.layers.len(), &what)?;
    let mut stored = Vec::new();
    let mut sizes = Vec::new();
    for (rel, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let info = if store.has_layer(diff_id) {
            store.layer_info(diff_id)?
        } else {
            let f = open_beneath(dir, rel)?;
            let info =
                store.unpack_layer(std::io::BufReader::with_capacity(1 << 20, f), None, Some(diff_id), opts.limits)?;
            progress.event(Event::Unpacked { layer: &info.diff_id, report: &info.report });
            info
        };
        sizes.push((info.diff_id.clone(), info.tar_size));
        stored.push((info.diff_id, info.size));
    }
    let manifest = oci::own_manifest(&config_bytes, &sizes);
    let record = oci::commit(store, &opts.name, Kind::Image, source, &manifest, &config_bytes, &stored)?;
    progress.event(Event::Done { record: &record });
    Ok(record)
}

/// Streams a tar of `src` (symlinks kept as symlinks) to the unpacker through a channel:
/// no copy of the tree on disk.
fn from_rootfs_dir(
    store: &Store,
    src: &Path,
    opts: &ImportOptions,
    source: String,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let (tx, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(16);
    let root = src.to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut b = tar::Builder::new(ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(1 << 20) });
        b.follow_symlinks(false);
        let r = b.append_dir_all(".", &root).and_then(|()| b.into_inner()).and_then(|mut w| w.flush_out());
        if let Err(e) = r {
            let _ = tx.send(Err(e));
        }
    });
    let reader = ChannelReader { rx, cur: Vec::new(), pos: 0 };
    let result = store.unpack_layer(reader, None, None, opts.limits);
    let _ = writer.join();
    let info = result?;
    progress.event(Event::Unpacked { layer: &info.diff_id, report: &info.report });
    finish_rootfs(store, opts, source, info.diff_id, info.size, info.tar_size, progress)
}

fn finish_rootfs(
    store: &Store,
    opts: &ImportOptions,
    source: String,
    diff_id: Digest,
    size: u64,
    tar_size: u64,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let config = default_config(&diff_id);
    let manifest = oci::own_manifest(&config, &[(diff_id.clone(), tar_size)]);
    let record = oci::commit(store, &opts.name, Kind::Image, source, &manifest, &config, &[(diff_id, size)])?;
    progress.event(Event::Done { record: &record });
    Ok(record)
}

/// The config of an image made from a bare root filesystem: a shell as the command.
pub fn default_config(diff_id: &Digest) -> Vec<u8> {
    let host = Platform::host();
    let c = serde_json::json!({
        "created": crate::store::now_rfc3339(),
        "architecture": host.arch,
        "os": "linux",
        "config": {"Env": [format!("PATH={}", crate::config::DEFAULT_PATH)], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
        "history": [{"created": crate::store::now_rfc3339(), "created_by": "safehouse image import"}],
    });
    serde_json::to_vec(&c).expect("plain data")
}

struct ChannelWriter {
    tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn flush_out(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 20));
            self.tx.send(Ok(chunk)).map_err(|_| std::io::Error::other("the unpacker stopped"))?;
        }
        Ok(())
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush_out()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
