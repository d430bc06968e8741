//! `image pull`: any OCI / Docker v2 registry, through `oci-client` (token and basic
//! auth, the distribution API). Manifests, indexes and configs are parsed and checked
//! here; layers download in parallel into resumable `tmp/<hex>.partial` files, are
//! verified, and unpack while others still download.

use std::io::{Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
pub use oci_client::Reference;
use oci_client::{Client, RegistryOperation};

use crate::digest::{Digest, Hasher};
use crate::error::{ImageError, Result};
use crate::oci::{self, LayerSpec, Parsed, Platform};
use crate::progress::{Event, Progress};
use crate::store::{lock, ImageRecord, Kind, Store};
use crate::unpack::Limits;

/// Registry credentials.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A registry token used as is.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub auth: Auth,
    pub platform: Platform,
    pub limits: Limits,
    /// Layers transferred at once.
    pub parallel: usize,
    /// The name to store the image under (default: the reference, fully qualified).
    pub name: Option<String>,
    /// Extra PEM root certificates to trust (a private registry's CA).
    pub ca_certs: Vec<Vec<u8>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            auth: Auth::Anonymous,
            platform: Platform::host(),
            limits: Limits::default(),
            parallel: 4,
            name: None,
            ca_certs: Vec::new(),
        }
    }
}

/// A registry on a loopback address may speak plain HTTP (tests and local mirrors); any
/// other needs TLS.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { registry })
            .unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().map(|a| a.is_loopback()).unwrap_or(false)
}

fn registry_error(registry: &str, e: OciDistributionError) -> ImageError {
    let reason = match &e {
        OciDistributionError::AuthenticationFailure(m) => {
            format!("authentication failed ({m}); check the credentials (--username and --password-stdin)")
        }
        OciDistributionError::ImageManifestNotFoundError(m) => format!("no such image or tag ({m})"),
        OciDistributionError::UnauthorizedError { url } => {
            format!("unauthorized for {url}; this image needs credentials (--username and --password-stdin)")
        }
        OciDistributionError::RequestError(r) => {
            let mut s = r.to_string();
            let mut src = std::error::Error::source(r);
            while let Some(cause) = src {
                s.push_str(&format!(": {cause}"));
                src = cause.source();
            }
            s
        }
        _ => e.to_string(),
    };
    ImageError::Registry { registry: registry.to_string(), reason }
}

fn client(reference: &Reference, opts: &PullOptions) -> Result<Client> {
    let registry = reference.resolve_registry().to_string();
    let protocol = if is_loopback_registry(&registry) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    let mut extra = Vec::new();
    for pem in &opts.ca_certs {
        extra.push(oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: pem.clone(),
        });
    }
    Ok(Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        extra_root_certificates: extra,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: concat!("safehouse/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    }))
}

fn registry_auth(a: &Auth) -> RegistryAuth {
    match a {
        Auth::Anonymous => RegistryAuth::Anonymous,
        Auth::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        Auth::Bearer(t) => RegistryAuth::Bearer(t.clone()),
    }
}

/// Pulls `reference` into `store`; returns the stored record.
pub async fn pull(store: &Store, reference: &str, opts: &PullOptions, progress: &dyn Progress) -> Result<ImageRecord> {
    let r: Reference = reference.parse().map_err(|e: oci_client::ParseError| ImageError::Reference {
        reference: reference.into(),
        reason: e.to_string(),
    })?;
    let name = opts.name.clone().unwrap_or_else(|| r.whole());
    crate::store::refs::check_name(&name)?;
    let registry = r.resolve_registry().to_string();
    let client = client(&r, opts)?;
    let auth = registry_auth(&opts.auth);
    client.auth(&r, &auth, RegistryOperation::Pull).await.map_err(|e| registry_error(&registry, e))?;

    // Manifest (or index, then the platform's manifest), verified against its digest.
    let (bytes, _) =
        client.pull_manifest_raw(&r, &auth, oci::ACCEPTED).await.map_err(|e| registry_error(&registry, e))?;
    if let Some(d) = r.digest() {
        Digest::parse(d)?.verify(format!("manifest of {reference}"), &Digest::of(&bytes))?;
    }
    let (manifest_bytes, manifest) = match oci::parse(&bytes, &format!("manifest of {reference}"))? {
        Parsed::Manifest(m) => (bytes.to_vec(), m),
        Parsed::Index(idx) => {
            let chosen = oci::select(&idx, &opts.platform, &format!("index of {reference}"))?;
            let d = oci::digest_of(&chosen, "index entry")?;
            let r2 = r.clone_with_digest(d.to_string());
            let (b, _) =
                client.pull_manifest_raw(&r2, &auth, oci::ACCEPTED).await.map_err(|e| registry_error(&registry, e))?;
            d.verify(format!("manifest of {reference} for {}", opts.platform), &Digest::of(&b))?;
            match oci::parse(&b, &format!("manifest {d}"))? {
                Parsed::Manifest(m) => (b.to_vec(), m),
                Parsed::Index(_) => {
                    return Err(ImageError::format(
                        format!("manifest {d}"),
                        "an index inside an index is not supported",
                    ))
                }
            }
        }
    };
    let what = format!("image {reference}");
    let layers = oci::layers(&manifest, &what)?;

    // Config: small, read whole, verified.
    let cfg_desc = manifest.config();
    let cfg_digest = oci::digest_of(cfg_desc, "config descriptor")?;
    if cfg_desc.size() > crate::store::MAX_JSON {
        return Err(ImageError::format(
            &what,
            format!("its config is {} bytes (at most {})", cfg_desc.size(), crate::store::MAX_JSON),
        ));
    }
    let mut config_bytes = Vec::new();
    client.pull_blob(&r, cfg_digest.as_str(), &mut config_bytes).await.map_err(|e| registry_error(&registry, e))?;
    cfg_digest.verify(format!("config of {reference}"), &Digest::of(&config_bytes))?;
    let config = oci::parse_config(&config_bytes, &format!("config of {reference}"))?;
    let diff_ids = oci::diff_ids(&config, layers.len(), &what)?;

    // From here the store is written: hold off garbage collection.
    let s2 = store.clone();
    let _writer = tokio::task::spawn_blocking(move || s2.writer_lock()).await.map_err(join_error)??;
    let manifest_digest = Digest::of(&manifest_bytes);
    let present = diff_ids.iter().filter(|d| store.has_layer(d)).count();
    let download: u64 = layers.iter().zip(&diff_ids).filter(|(_, d)| !store.has_layer(d)).map(|(l, _)| l.size).sum();
    progress.event(Event::Resolved { name: &name, digest: &manifest_digest, layers: layers.len(), present, download });

    let client = Arc::new(client);
    let jobs = layers.iter().cloned().zip(diff_ids.iter().cloned()).map(|(spec, diff_id)| {
        let client = client.clone();
        let r = r.clone();
        let registry = registry.clone();
        async move { fetch_layer(store, &client, &r, &registry, spec, diff_id, opts.limits, progress).await }
    });
    let results: Vec<Result<(Digest, u64)>> = stream::iter(jobs).buffered(opts.parallel.max(1)).collect().await;
    let mut stored = Vec::new();
    for r in results {
        stored.push(r?);
    }
    let record =
        oci::commit(store, &name, Kind::Image, format!("pull {reference}"), &manifest_bytes, &config_bytes, &stored)?;
    progress.event(Event::Done { record: &record });
    Ok(record)
}

fn join_error(e: tokio::task::JoinError) -> ImageError {
    ImageError::Unsupported(format!("a worker thread failed: {e}"))
}

/// Downloads (resuming) and unpacks one layer unless the store has it.
#[allow(clippy::too_many_arguments)]
async fn fetch_layer(
    store: &Store,
    client: &Client,
    r: &Reference,
    registry: &str,
    spec: LayerSpec,
    diff_id: Digest,
    limits: Limits,
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    if store.has_layer(&diff_id) {
        let size = store.layer_info(&diff_id)?.size;
        return Ok((diff_id, size));
    }
    // One downloader per blob: a second pull of the same image waits here, then finds
    // the layer unpacked.
    let partial = store.tmp().join(format!("{}.partial", spec.blob.hex()));
    let p2 = partial.clone();
    let (held, file) = tokio::task::spawn_blocking(move || -> Result<_> {
        let held = lock::exclusive(&p2)?;
        let file = held.file().try_clone().map_err(|e| ImageError::io("open", &p2, e))?;
        Ok((held, file))
    })
    .await
    .map_err(join_error)??;
    if store.has_layer(&diff_id) {
        held.remove_if_same(&partial);
        drop(held);
        let size = store.layer_info(&diff_id)?.size;
        return Ok((diff_id, size));
    }
    let file = download(client, r, registry, &spec, file, &partial, progress).await?;
    let s2 = store.clone();
    let blob = spec.blob.clone();
    let d2 = diff_id.clone();
    let info = tokio::task::spawn_blocking(move || {
        let mut file = file;
        file.seek(SeekFrom::Start(0)).map_err(|e| ImageError::io("rewind", &partial, e))?;
        let info = s2.unpack_layer(std::io::BufReader::with_capacity(1 << 20, file), Some(&blob), Some(&d2), limits);
        held.remove_if_same(&partial);
        drop(held);
        info
    })
    .await
    .map_err(join_error)??;
    progress.event(Event::Unpacked { layer: &info.diff_id, report: &info.report });
    Ok((info.diff_id, info.size))
}

/// Fills `file` with the blob, continuing from what an interrupted pull left in it, and
/// verifies size and digest. A corrupt download is deleted so the next try starts over.
async fn download(
    client: &Client,
    r: &Reference,
    registry: &str,
    spec: &LayerSpec,
    mut file: std::fs::File,
    path: &PathBuf,
    progress: &dyn Progress,
) -> Result<std::fs::File> {
    use std::io::Read;
    let io_err = |step: &'static str, e: std::io::Error| ImageError::io(step, path.clone(), e);
    let mut have = file.metadata().map_err(|e| io_err("stat", e))?.len();
    if have > spec.size {
        file.set_len(0).map_err(|e| io_err("truncate", e))?;
        have = 0;
    }
    let mut hasher = Hasher::new();
    if have > 0 {
        // Re-hash what is on disk: it is trusted no more than the network.
        let mut buf = vec![0u8; 1 << 20];
        let mut left = have;
        file.seek(SeekFrom::Start(0)).map_err(|e| io_err("rewind", e))?;
        while left > 0 {
            let n = file.read(&mut buf[..(left.min(1 << 20) as usize)]).map_err(|e| io_err("read", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        progress.event(Event::Resumed { layer: &spec.blob, offset: have });
    }
    file.seek(SeekFrom::Start(have)).map_err(|e| io_err("seek", e))?;
    let mut attempt = 0u32;
    while have < spec.size {
        let result = async {
            let sized = if have == 0 {
                client.pull_blob_stream(r, spec.blob.as_str()).await?
            } else {
                match client.pull_blob_stream_partial(r, spec.blob.as_str(), have, None).await? {
                    oci_client::client::BlobResponse::Partial(s) => s,
                    oci_client::client::BlobResponse::Full(s) => {
                        // The registry ignored the range: start over.
                        file.set_len(0)?;
                        file.seek(SeekFrom::Start(0))?;
                        have = 0;
                        hasher = Hasher::new();
                        s
                    }
                }
            };
            let mut stream = sized.stream;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if have + chunk.len() as u64 > spec.size {
                    return Err(OciDistributionError::SpecViolationError(format!(
                        "the registry sent more than the {} bytes the manifest announces for {}",
                        spec.size, spec.blob
                    )));
                }
                file.write_all(&chunk)?;
                hasher.update(&chunk);
                have += chunk.len() as u64;
                progress.event(Event::Download { layer: &spec.blob, done: have, total: spec.size });
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if have >= spec.size => break,
            Ok(()) => {}
            Err(OciDistributionError::DigestError(_)) => {} // partial data checked below
            Err(e) => {
                let err = registry_error(registry, e);
                attempt += 1;
                if attempt > 4 {
                    return Err(err);
                }
                let reason = err.to_string();
                progress.event(Event::Retrying { layer: &spec.blob, attempt, reason: &reason });
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                continue;
            }
        }
        if have < spec.size {
            attempt += 1;
            if attempt > 4 {
                return Err(ImageError::Registry {
                    registry: registry.to_string(),
                    reason: format!("{} ended after {have} of {} bytes, 5 times", spec.blob, spec.size),
                });
            }
            let reason = format!("the transfer ended after {have} of {} bytes", spec.size);
            progress.event(Event::Retrying { layer: &spec.blob, attempt, reason: &reason });
        }
    }
    file.flush().map_err(|e| io_err("write", e))?;
    let got = hasher.finish();
    if got != spec.blob {
        let _ = std::fs::remove_file(path);
        return Err(ImageError::Digest {
            what: format!("layer blob from {registry}"),
            expected: spec.blob.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback_registry(r), "{r}");
        }
        for r in ["docker.io", "registry.example:5000", "10.0.0.1:5000", "[fe80::1]:5000", "localhost.evil.com"] {
            assert!(!is_loopback_registry(r), "{r}");
        }
    }
}
