//! TLS on the daemon's listener (docs/tls.md): the certificate and key from PEM files, or a
//! self-signed pair kept under the data dir, turned into one rustls server configuration
//! (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
//!
//! The self-signed pair is a leaf signed by a one-off CA whose private key is thrown away
//! once the leaf is signed: clients can trust `ca.crt` (every TLS stack accepts it as a
//! trust anchor, unlike a bare self-signed leaf) without that file being able to vouch for
//! anything else, or pin the leaf's SHA-256 fingerprint. Both stay the same across restarts
//! because the files do.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Where the daemon's certificate comes from (`serve --tls-cert/--tls-key` or
/// `--tls-self-signed`).
#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// The pair under `DATA_DIR/tls`, made on first start.
    SelfSigned,
}

/// A loaded certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig {
    pub server: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), `AB:CD:...` as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
    /// For a self-signed pair: the CA certificate clients can trust.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("fingerprint", &self.fingerprint).field("ca_file", &self.ca_file).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("the TLS certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): {detail}", path.display())]
    NoCert { path: PathBuf, detail: String },
    #[error("the TLS key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {detail}", path.display())]
    NoKey { path: PathBuf, detail: String },
    #[error("the TLS key file {} is not a key rustls can use: {source}", path.display())]
    BadKey { path: PathBuf, source: rustls::Error },
    #[error("the TLS key {} does not belong to the certificate {} (their public keys differ): pass the key the certificate was issued for", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the TLS certificate {} cannot be used: {source}", path.display())]
    BadCert { path: PathBuf, source: rustls::Error },
    #[error("cannot generate the self-signed TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// `AB:CD:...`: the SHA-256 of `der`, in the form `openssl x509 -fingerprint -sha256` prints.
pub fn fingerprint(der: &[u8]) -> String {
    let mut out = String::with_capacity(95);
    for (i, b) in Sha256::digest(der).iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// The certificate chain (leaf first) and key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
    let cert_pem =
        fs::read(cert).map_err(|source| TlsError::Read { what: "certificate", path: cert.into(), source })?;
    let key_pem = fs::read(key).map_err(|source| TlsError::Read { what: "key", path: key.into(), source })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsError::NoCert { path: cert.into(), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert { path: cert.into(), detail: "no CERTIFICATE section".into() });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key.into(),
        detail: match e {
            pem::Error::NoItemsFound => "no PRIVATE KEY section".into(),
            e => e.to_string(),
        },
    })?;
    let fp = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadKey { path: key.into(), source })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch { cert: cert.into(), key: key.into() })
        }
        Err(source) => return Err(TlsError::BadCert { path: cert.into(), source }),
    }
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|source| TlsError::BadCert { path: cert.into(), source })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // The server speaks HTTP/1.1 only.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfig { server: Arc::new(server), fingerprint: fp, ca_file: None })
}

/// Where the self-signed pair lives: `DATA_DIR/tls`.
pub fn self_signed_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The self-signed pair under `dir` (`server.crt`, `server.key`, `ca.crt`), made on first
/// use for `names` (DNS names and IP addresses), then loaded as it is.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<TlsConfig, TlsError> {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let ca = dir.join("ca.crt");
    if !(cert.exists() && key.exists() && ca.exists()) {
        generate(dir, names)?;
    }
    let mut config = load(&cert, &key)?;
    config.ca_file = Some(ca);
    Ok(config)
}

fn generate(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(3650);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "safehouse self-signed CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = until;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "safehouse daemon");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::days(1);
    params.not_after = until;
    let key = KeyPair::generate()?;
    let leaf = params.signed_by(&key, &issuer)?;
    // The CA's key goes out of scope here, never written: ca.crt vouches for this leaf only.
    drop(issuer);

    create_private_dir(dir)?;
    write_file(&dir.join("server.key"), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.join("server.crt"), format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes(), 0o644)?;
    write_file(&dir.join("ca.crt"), ca_cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: dir.into(), source };
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Writes `path` whole or not at all (a temporary file renamed over it).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.into(), source };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// The names a self-signed certificate covers: loopback by name and address, the listen
/// address when it is one address, and the extra `Host` names (their port dropped).
pub fn self_signed_names(listen: std::net::SocketAddr, allowed_hosts: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    for h in allowed_hosts {
        let host = match h.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => h.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(h.as_str(), |(n, _)| n),
        };
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("safehouse-tls-test-{}-{}", std::process::id(), rand_suffix()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    #[test]
    fn self_signed_is_stable_and_private() {
        let d = tmp();
        let dir = self_signed_dir(&d);
        let a = self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let b = self_signed(&dir, &["localhost".into()]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 95);
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(""), mode("server.key")), (0o700, 0o600));
        let pem = fs::read_to_string(dir.join("server.crt")).unwrap();
        let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next().unwrap().unwrap();
        assert_eq!(fingerprint(&der), a.fingerprint);
        // No CA key is kept: only the leaf's key is on disk.
        let keys: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let d = tmp();
        let missing = d.join("nope.pem");
        let e = load(&missing, &missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read the TLS certificate {}", missing.display())), "{e}");
        let garbage = d.join("garbage.pem");
        fs::write(&garbage, "hello\n").unwrap();
        let e = load(&garbage, &garbage).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        // Two pairs: the key of one with the certificate of the other.
        let one = self_signed(&d.join("one"), &["localhost".into()]).unwrap();
        let _two = self_signed(&d.join("two"), &["localhost".into()]).unwrap();
        assert!(one.ca_file.is_some());
        let e = load(&d.join("one/server.crt"), &d.join("two/server.key")).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        let e = load(&d.join("one/server.crt"), &d.join("one/server.crt")).unwrap_err().to_string();
        assert!(e.contains("holds no PEM private key"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names() {
        let l: std::net::SocketAddr = "0.0.0.0:8700".parse().unwrap();
        assert_eq!(
            self_signed_names(l, &["box.example:8700".into(), "other".into(), "[::2]:1".into()]),
            ["localhost", "127.0.0.1", "::1", "box.example", "other", "::2"]
        );
        let l: std::net::SocketAddr = "10.1.2.3:8700".parse().unwrap();
        assert_eq!(self_signed_names(l, &[]), ["localhost", "127.0.0.1", "::1", "10.1.2.3"]);
    }
}
