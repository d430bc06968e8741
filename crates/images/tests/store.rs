//! The store end to end without a network: imports of every source kind (built here),
//! digest checks, layer sharing, leases against garbage collection, concurrent writers.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safehouse_images::digest::Digest;
use safehouse_images::import::{import, ImportOptions};
use safehouse_images::progress::Silent;
use safehouse_images::{ImageError, Store};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("safehouse-images-it-{name}-{}", std::process::id()));
        let _ = std::process::Command::new("rm").arg("-rf").arg(&p).status();
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod").arg("-R").arg("u+rwx").arg(&self.0).status();
        let _ = std::process::Command::new("rm").arg("-rf").arg(&self.0).status();
    }
}

/// A tar of (name, content) files.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI layout with one image of `layers` (each gzip-compressed) at `dir`.
fn oci_layout(dir: &Path, layers: &[Vec<u8>], cmd: &[&str]) -> Digest {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(Digest::of(l).to_string());
        let gz = gzip(l);
        let d = put(&gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.as_str(), "size": gz.len()}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "GREETING=hi"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let c = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.as_str(), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let m = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m.as_str(), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
        .unwrap(),
    )
    .unwrap();
    m
}

fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn oci_layout_import_keeps_the_digest_and_shares_layers() {
    let d = Dir::new("layout");
    let store = Store::open(&d.0.join("data")).unwrap();
    let base = layer_tar(&[("etc/os-release", b"ID=test\n"), ("bin/hello", b"hi")]);
    let top = layer_tar(&[("app/main.py", b"print(1)\n")]);
    let m = oci_layout(&d.0.join("l1"), &[base.clone(), top], &["/bin/sh"]);
    let r = import(&store, &d.0.join("l1"), &ImportOptions::new("one"), &Silent).unwrap();
    assert_eq!(r.digest, m, "the manifest digest is the layout's");
    assert_eq!(r.layers.len(), 2);
    assert_eq!(std::fs::read(store.layer_root(&r.layers[1].diff_id).join("app/main.py")).unwrap(), b"print(1)\n");
    let rc = store.run_config(&r).unwrap();
    assert_eq!(rc.argv(&[]), ["/bin/sh"]);

    // A second image on the same base: its base layer is the same directory, unpacked once.
    oci_layout(&d.0.join("l2"), &[base, layer_tar(&[("other", b"x")])], &[]);
    let before = std::fs::metadata(store.layer_dir(&r.layers[0].diff_id).join("layer.json")).unwrap().ino();
    let r2 = import(&store, &d.0.join("l2"), &ImportOptions::new("two"), &Silent).unwrap();
    assert_eq!(r2.layers[0].diff_id, r.layers[0].diff_id);
    assert_eq!(std::fs::metadata(store.layer_dir(&r.layers[0].diff_id).join("layer.json")).unwrap().ino(), before);

    let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(store.get("one:latest").unwrap_err().to_string(), ImageError::NotFound("one:latest".into()).to_string());
    assert_eq!(store.get(&r.digest.as_str()[..19]).unwrap().name, "one");
}

#[test]
fn corrupt_blobs_fail_their_digest_and_leave_nothing() {
    let d = Dir::new("corrupt");
    let store = Store::open(&d.0.join("data")).unwrap();
    let layer = layer_tar(&[("f", b"content")]);
    oci_layout(&d.0.join("l"), std::slice::from_ref(&layer), &[]);
    // Flip a byte of the compressed layer.
    let gz = gzip(&layer);
    let p = d.0.join("l/blobs/sha256").join(Digest::of(&gz).hex());
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 0xff; // inside the gzip trailer's CRC: decompression may not notice
    std::fs::write(&p, &bytes).unwrap();
    let e = import(&store, &d.0.join("l"), &ImportOptions::new("bad"), &Silent).unwrap_err();
    assert!(matches!(e, ImageError::Digest { .. }), "{e}");
    assert!(e.to_string().contains("digest mismatch for layer blob"), "{e}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(store.root().join("layers")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);

    // A manifest whose bytes do not match the index's digest.
    let d2 = Dir::new("corrupt-manifest");
    let m = oci_layout(&d2.0.join("l"), &[layer], &[]);
    let p = d2.0.join("l/blobs/sha256").join(m.hex());
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.push(b' ');
    std::fs::write(&p, &bytes).unwrap();
    let e = import(&store, &d2.0.join("l"), &ImportOptions::new("bad"), &Silent).unwrap_err();
    assert!(matches!(e, ImageError::Digest { .. }), "{e}");
}

#[test]
fn rootfs_directory_and_tar_imports() {
    let d = Dir::new("rootfs");
    let store = Store::open(&d.0.join("data")).unwrap();
    let root = d.0.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", root.join("bin/evil")).unwrap();
    let r = import(&store, &root, &ImportOptions::new("dir"), &Silent).unwrap();
    let layer = store.layer_root(&r.layers[0].diff_id);
    assert_eq!(std::fs::read(layer.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(std::fs::read_link(layer.join("bin/evil")).unwrap(), Path::new("/etc/shadow"));
    assert_eq!(store.run_config(&r).unwrap().argv(&[]), ["/bin/sh"]);

    let tarball = d.0.join("root.tar.gz");
    std::fs::write(&tarball, gzip(&tar_dir(&root))).unwrap();
    let r2 = import(&store, &tarball, &ImportOptions::new("tar"), &Silent).unwrap();
    assert_eq!(std::fs::read(store.layer_root(&r2.layers[0].diff_id).join("bin/tool")).unwrap(), b"#!/bin/sh\n");
}

#[test]
fn docker_save_archive_import() {
    let d = Dir::new("docker-save");
    let store = Store::open(&d.0.join("data")).unwrap();
    let l1 = layer_tar(&[("etc/hostname", b"x\n")]);
    let l2 = layer_tar(&[("usr/bin/app", b"app")]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["app"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&l1).as_str(), Digest::of(&l2).as_str()]},
    }))
    .unwrap();
    let cfg_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_name, "RepoTags": ["app:1"], "Layers": [format!("{}/layer.tar", "a".repeat(64)), format!("{}/layer.tar", "b".repeat(64))]}]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(&format!("{}/layer.tar", "a".repeat(64)), &l1);
    add(&format!("{}/layer.tar", "b".repeat(64)), &l2);
    add(&cfg_name, &config);
    add("manifest.json", &manifest);
    let archive = d.0.join("save.tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
    // (told from a root filesystem archive by its entry names, not its file name)
    let e = import(&store, &archive, &ImportOptions::new("app"), &Silent);
    let r = match e {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.layers.len(), 2);
    assert_eq!(std::fs::read(store.layer_root(&r.layers[1].diff_id).join("usr/bin/app")).unwrap(), b"app");
    assert_eq!(store.run_config(&r).unwrap().argv(&[]), ["app"]);
}

#[test]
fn leases_hold_layers_against_gc() {
    let d = Dir::new("gc");
    let store = Store::open(&d.0.join("data")).unwrap();
    oci_layout(&d.0.join("l"), &[layer_tar(&[("a", b"1")]), layer_tar(&[("b", b"2")])], &[]);
    let r = import(&store, &d.0.join("l"), &ImportOptions::new("img"), &Silent).unwrap();
    let lease = store.lease(&r).unwrap();
    assert_eq!(lease.layers.len(), 2);
    store.remove_record("img").unwrap();
    let g = store.gc().unwrap();
    assert_eq!((g.layers_removed, g.layers_in_use, g.blobs_removed), (0, 2, 2), "{g:?}");
    assert!(store.has_layer(&r.layers[0].diff_id));
    drop(lease);
    let g = store.gc().unwrap();
    assert_eq!((g.layers_removed, g.layers_in_use, g.blobs_removed), (2, 0, 0), "{g:?}");
    assert!(!store.has_layer(&r.layers[0].diff_id));
    assert_eq!(std::fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn concurrent_unpacks_of_one_layer_both_succeed() {
    let d = Dir::new("concurrent");
    let store = Arc::new(Store::open(&d.0.join("data")).unwrap());
    let files: Vec<(String, Vec<u8>)> = (0..2000).map(|i| (format!("d{}/f{i}", i % 20), vec![b'x'; 100])).collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    let tar = Arc::new(layer_tar(&refs));
    let diff = Digest::of(&tar);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, tar, diff) = (store.clone(), tar.clone(), diff.clone());
            std::thread::spawn(move || {
                // Each writer unpacks on its own (has_layer may race): exactly one rename wins.
                store.unpack_layer(&tar[..], None, None, Default::default()).map(|i| i.diff_id == diff)
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().unwrap());
    }
    assert_eq!(std::fs::read_dir(store.root().join("layers")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(store.layer_root(&diff).join("d7")).unwrap().count(), 100);
}

#[test]
fn a_store_of_root_is_refused_to_others_and_back() {
    let d = Dir::new("owner");
    let data = d.0.join("data");
    Store::open(&data).unwrap();
    let meta = std::fs::read_to_string(data.join("images/store.json")).unwrap();
    let flipped = if meta.contains("Caller") {
        meta.replace("\"Caller\"", "{\"Base\": 999999000}")
    } else {
        meta.replace("{\n    \"Base\": 999999000\n  }", "\"Caller\"")
    };
    assert_ne!(meta, flipped, "{meta}");
    std::fs::write(data.join("images/store.json"), flipped).unwrap();
    let e = Store::open(&data).unwrap_err().to_string();
    assert!(e.contains("give this process its own --data-dir"), "{e}");
}
