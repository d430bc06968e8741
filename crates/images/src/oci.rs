//! Reading OCI and Docker manifests, indexes and configs (through `oci-spec`'s types),
//! with the checks every source shares: schema, media types, platform choice, diff_ids.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::store::{now_rfc3339, ImageRecord, Kind, LayerRecord, Store};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest type `pull` asks a registry for.
pub const ACCEPTED: &[&str] = &[MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST];

pub enum Parsed {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Tells a manifest from an index by its content (media types are optional in both).
pub fn parse(bytes: &[u8], what: &str) -> Result<Parsed> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, format!("not JSON: {e}")))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Err(ImageError::format(
            what,
            "a Docker schema 1 manifest, which is deprecated and unsupported; push the image again with a current docker, skopeo or buildah",
        ));
    }
    if v.get("manifests").is_some() {
        let idx: ImageIndex =
            serde_json::from_value(v).map_err(|e| ImageError::format(what, format!("not an image index: {e}")))?;
        Ok(Parsed::Index(Box::new(idx)))
    } else {
        let m: ImageManifest =
            serde_json::from_value(v).map_err(|e| ImageError::format(what, format!("not an image manifest: {e}")))?;
        Ok(Parsed::Manifest(Box::new(m)))
    }
}

/// The platform a sandbox on this host can run, in Go's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "arm" => "arm",
            other => other,
        };
        Platform { os: "linux".into(), arch: arch.into(), variant: None }
    }

    /// `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None })
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(ImageError::format(
                format!("platform {text:?}"),
                "write OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64",
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The index entry for `want`, or an error listing what the index offers.
pub fn select(index: &ImageIndex, want: &Platform, what: &str) -> Result<Descriptor> {
    let mut offered = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let os = p.os().to_string();
        let arch = p.architecture().to_string();
        let variant = p.variant().clone();
        offered.push(Platform { os: os.clone(), arch: arch.clone(), variant: variant.clone() }.to_string());
        if os == want.os && arch == want.arch && (want.variant.is_none() || want.variant == variant) {
            return Ok(m.clone());
        }
    }
    Err(ImageError::format(
        what,
        format!(
            "no image for {want} in this index (it has: {}); pass --platform to choose one",
            if offered.is_empty() { "no platforms".to_string() } else { offered.join(", ") }
        ),
    ))
}

/// A layer as the manifest describes it.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub blob: Digest,
    pub size: u64,
    pub media_type: String,
}

pub fn digest_of(d: &Descriptor, what: &str) -> Result<Digest> {
    Digest::parse(d.digest().as_ref()).map_err(|e| ImageError::format(what, e.to_string()))
}

/// The manifest's layers, refusing kinds a Linux sandbox cannot use.
pub fn layers(m: &ImageManifest, what: &str) -> Result<Vec<LayerSpec>> {
    let mut out = Vec::new();
    for l in m.layers() {
        let media = l.media_type().to_string();
        let ok = media.starts_with("application/vnd.oci.image.layer.v1.tar")
            || media == "application/vnd.docker.image.rootfs.diff.tar.gzip"
            || media == "application/vnd.docker.image.rootfs.diff.tar"
            || media == "application/vnd.docker.image.rootfs.diff.tar.zstd";
        if !ok || media.contains("nondistributable") || media.contains("foreign") {
            return Err(ImageError::format(
                what,
                format!(
                    "layer {} has media type {media:?}, which a Linux sandbox cannot use (a Windows or foreign layer?)",
                    l.digest()
                ),
            ));
        }
        if media.ends_with("+encrypted") {
            return Err(ImageError::format(
                what,
                format!("layer {} is encrypted; decrypt the image first", l.digest()),
            ));
        }
        out.push(LayerSpec { blob: digest_of(l, what)?, size: l.size(), media_type: media });
    }
    Ok(out)
}

/// The config's diff_ids (one per layer, bottom first), checked against the manifest.
pub fn diff_ids(config: &ImageConfiguration, layer_count: usize, what: &str) -> Result<Vec<Digest>> {
    if config.os().to_string() != "linux" {
        return Err(ImageError::format(what, format!("the image is for {}, not linux", config.os())));
    }
    let ids: Vec<Digest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| ImageError::format(what, e.to_string())))
        .collect::<Result<_>>()?;
    if ids.len() != layer_count {
        return Err(ImageError::format(
            what,
            format!("the config lists {} layers (rootfs.diff_ids) but the manifest {}", ids.len(), layer_count),
        ));
    }
    Ok(ids)
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, format!("not an image config: {e}")))
}

/// Stores manifest and config blobs and the record naming them.
pub fn commit(
    store: &Store,
    name: &str,
    kind: Kind,
    source: String,
    manifest: &[u8],
    config: &[u8],
    layers: &[(Digest, u64)],
) -> Result<ImageRecord> {
    let digest = store.put_blob(manifest, None, "manifest")?;
    let config = store.put_blob(config, None, "config")?;
    let layers: Vec<LayerRecord> = layers.iter().map(|(d, s)| LayerRecord { diff_id: d.clone(), size: *s }).collect();
    let record = ImageRecord {
        name: name.to_string(),
        kind,
        digest,
        config,
        size: layers.iter().map(|l| l.size).sum(),
        layers,
        created: now_rfc3339(),
        source,
    };
    store.put_record(&record)?;
    Ok(record)
}

/// A manifest for layers this store made itself (imports from a root filesystem or a
/// `docker save` archive, template builds): uncompressed tar layers, digest = diff_id.
pub fn own_manifest(config: &[u8], layers: &[(Digest, u64)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, size)| serde_json::json!({"mediaType": MEDIA_OCI_LAYER, "digest": d.as_str(), "size": size}))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": Digest::of(config).as_str(), "size": config.len()},
        "layers": layers,
    });
    serde_json::to_vec(&m).expect("plain data")
}
