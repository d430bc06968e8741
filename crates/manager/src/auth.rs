//! API keys: generation, hashing, the admin key bootstrap, and turning a bearer token into
//! a tenant.
//!
//! Keys are `sh_` + 32 base62 characters (~190 bits from the OS RNG). Only their SHA-256
//! is stored; a presented key is hashed and the hashes compared in constant time. The admin
//! key lives outside the database (`DATA_DIR/admin.key` or `SAFEHOUSE_ADMIN_KEY`) so it
//! cannot be revoked through the API, and so a lost database does not lock the operator out.
//!
//! Every key also has an E2B form, `e2b_` + the key's bytes in lowercase hex ([`e2b_form`]):
//! the same secret spelled the way E2B SDKs 2.25-2.45 insist on client-side. It is accepted
//! wherever the key is, and revoking the key ends both spellings.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{KeyRecord, Store, StoreError};

pub mod revocation;
pub use revocation::{Lease, Revocations};

/// The admin key's file inside the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// The environment variable that, when set, is the admin key.
pub const ADMIN_KEY_ENV: &str = "SAFEHOUSE_ADMIN_KEY";
/// The tenant of the admin key (and of any key created for tenant `admin`).
pub const ADMIN_TENANT: &str = "admin";

const KEY_PREFIX: &str = "sh_";
const KEY_CHARS: usize = 32;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Shortest accepted `SAFEHOUSE_ADMIN_KEY`.
const MIN_ENV_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer KEY`")]
    Missing,
    #[error("invalid or revoked API key")]
    Invalid,
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    #[error("{0}")]
    BadAdminKey(String),
    #[error("tenant must be 1-64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit")]
    BadTenant,
    #[error("key name must be at most 128 characters without control characters")]
    BadName,
    #[error("too many unused WebSocket tickets; use the ones you have (they last 30 s) before asking for more")]
    TooManyTickets,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who is calling: handed to every authenticated handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// The key's id in the database; `None` for the bootstrap admin key.
    pub key_id: Option<String>,
}

impl Tenant {
    /// Admin keys may manage keys.
    pub fn is_admin(&self) -> bool {
        self.name == ADMIN_TENANT
    }
}

fn random_bytes(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::getrandom(buf).map_err(|e| AuthError::Random(e.to_string()))
}

/// `n` characters drawn uniformly from `alphabet` (rejection sampling, no modulo bias).
fn random_string(alphabet: &[u8], n: usize) -> Result<String, AuthError> {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        random_bytes(&mut buf)?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// The prefix of a key's E2B form.
pub const E2B_KEY_PREFIX: &str = "e2b_";

/// A key's E2B form: `e2b_` + its bytes in lowercase hex (E2B SDKs check `e2b_[0-9a-f]+`).
pub fn e2b_form(key: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(E2B_KEY_PREFIX.len() + 2 * key.len());
    out.push_str(E2B_KEY_PREFIX);
    for b in key.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The key an E2B form spells, if `s` is one (`e2b_` + an even number of lowercase hex
/// digits that decode to printable ASCII).
pub fn from_e2b_form(s: &str) -> Option<String> {
    let hex = s.strip_prefix(E2B_KEY_PREFIX)?;
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
    let key = String::from_utf8(bytes).ok()?;
    key.bytes().all(|b| b.is_ascii_graphic()).then_some(key)
}

/// A new secret API key: `sh_` + 32 base62 characters.
pub fn generate_key() -> Result<String, AuthError> {
    Ok(format!("{KEY_PREFIX}{}", random_string(BASE62, KEY_CHARS)?))
}

/// A new key id (not secret): `key_` + 16 base32 characters.
pub fn generate_key_id() -> Result<String, AuthError> {
    Ok(format!("key_{}", random_string(BASE32, 16)?))
}

/// Whether `key` has the shape of a generated key.
pub fn is_well_formed(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.len() == KEY_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares two hashes in constant time (`subtle`), so timing does not tell how much matched.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

pub fn validate_tenant(t: &str) -> Result<(), AuthError> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.as_bytes()[0].is_ascii_alphanumeric()
        && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadTenant)
    }
}

/// Where the admin key came from at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKeySource {
    Env,
    /// Read from an existing `admin.key`.
    File(PathBuf),
    /// Generated now and written to this file.
    Generated(PathBuf),
}

/// The admin key's hash and where it came from. The secret itself is not kept.
#[derive(Debug, Clone)]
pub struct AdminKey {
    pub hash: [u8; 32],
    pub source: AdminKeySource,
}

/// Finds or creates the admin key: `SAFEHOUSE_ADMIN_KEY` (passed in as `env`) wins;
/// otherwise `DATA_DIR/admin.key` is read, or created with a new key (mode 0600 from the
/// first byte: `O_CREAT|O_EXCL` with the mode, so it is never readable by others).
pub fn bootstrap_admin_key(data_dir: &Path, env: Option<&str>) -> Result<AdminKey, AuthError> {
    if let Some(key) = env {
        let key = key.trim();
        if key.len() < MIN_ENV_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::BadAdminKey(format!(
                "{ADMIN_KEY_ENV} must be at least {MIN_ENV_KEY_LEN} printable ASCII characters without spaces"
            )));
        }
        return Ok(AdminKey { hash: hash_key(key), source: AdminKeySource::Env });
    }
    crate::store::create_private_dir(data_dir)?;
    let path = data_dir.join(ADMIN_KEY_FILE);
    let io = |source| AuthError::Io { path: path.clone(), source };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(mut f) => {
            let key = generate_key()?;
            f.write_all(format!("{key}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(AdminKey { hash: hash_key(&key), source: AdminKeySource::Generated(path) })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = read_admin_key_file(&path)?;
            Ok(AdminKey { hash: hash_key(&key), source: AdminKeySource::File(path) })
        }
        Err(e) => Err(io(e)),
    }
}

/// The daemon's startup step: the admin key from `SAFEHOUSE_ADMIN_KEY` or
/// `DATA_DIR/admin.key` (created if missing, and said so on stderr; the key itself is never
/// printed). Idempotent: the daemon's `serve` calls it too. The store is not consulted:
/// the admin key lives outside the database on purpose.
pub fn bootstrap_admin(_store: &Store, data_dir: &Path) -> Result<AdminKey, AuthError> {
    let env = std::env::var(ADMIN_KEY_ENV).ok();
    let admin = bootstrap_admin_key(data_dir, env.as_deref())?;
    if let AdminKeySource::Generated(path) = &admin.source {
        eprintln!("safehouse: created the admin key in {}", path.display());
    }
    Ok(admin)
}

/// Reads an existing admin key file, refusing symlinks and files others can read.
pub fn read_admin_key_file(path: &Path) -> Result<String, AuthError> {
    let io = |source| AuthError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(AuthError::BadAdminKey(format!("{} is not a regular file", path.display())));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::InsecureKeyFile { path: path.to_path_buf(), mode });
    }
    let mut s = String::new();
    Read::take(&mut f, 4096).read_to_string(&mut s).map_err(io)?;
    let key = s.trim();
    if key.len() < MIN_ENV_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::BadAdminKey(format!(
            "{} does not hold a key; delete it to have a new one generated",
            path.display()
        )));
    }
    Ok(key.to_string())
}

/// Turns bearer tokens into tenants, and revokes keys (ending what they opened).
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Arc<Store>,
    admin_hash: [u8; 32],
    revocations: Arc<Revocations>,
    /// One-time tickets for WebSocket handshakes (tickets.rs).
    tickets: Arc<tickets::Tickets>,
}

impl Authenticator {
    pub fn new(store: Arc<Store>, admin: &AdminKey) -> Authenticator {
        Authenticator { store, admin_hash: admin.hash, revocations: Arc::default(), tickets: Arc::default() }
    }

    /// The WebSocket tickets of this daemon.
    pub fn tickets(&self) -> &tickets::Tickets {
        &self.tickets
    }

    /// Runs `observer` with the id of every key revoked from now on, before the revocation
    /// returns (how a front ends what it keeps per key, without the API knowing the front).
    pub fn on_revoke(&self, observer: revocation::Observer) {
        self.revocations.observe(observer);
    }

    /// A lease on the key `tenant` authenticated with (see [`revocation`]).
    pub fn lease(&self, tenant: &Tenant) -> Lease {
        self.revocations.lease(tenant)
    }

    /// Revokes key `id` in the store and ends every lease on it. Returns false if no such
    /// key exists.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, AuthError> {
        let key = id.to_string();
        let found = self.store.blocking(move |s| s.revoke_key(&key)).await?;
        if found {
            self.revocations.revoke(id);
        }
        Ok(found)
    }

    /// The tenant of key `id` if the key exists and is not revoked: how a credential that
    /// names its key (an E2B access token) is checked on each use.
    pub async fn active_key(&self, id: &str) -> Result<Tenant, AuthError> {
        if self.revocations.is_revoked(id) {
            return Err(AuthError::Invalid);
        }
        let key = id.to_string();
        match self.store.blocking(move |s| s.get_key(&key)).await? {
            Some(rec) if rec.revoked_at.is_none() => Ok(Tenant { name: rec.tenant, key_id: Some(rec.id) }),
            _ => Err(AuthError::Invalid),
        }
    }

    /// The SHA-256 of the admin key: what binds credentials derived from the admin key to
    /// that key (a new admin key ends them).
    pub fn admin_hash(&self) -> &[u8; 32] {
        &self.admin_hash
    }

    /// The tenant of `key`, or `Invalid` for unknown, malformed and revoked keys alike.
    pub async fn authenticate(&self, key: &str) -> Result<Tenant, AuthError> {
        let decoded = from_e2b_form(key);
        let key = decoded.as_deref().unwrap_or(key);
        let hash = hash_key(key);
        if ct_eq(&hash, &self.admin_hash) {
            return Ok(Tenant { name: ADMIN_TENANT.into(), key_id: None });
        }
        // Only generated keys live in the database: skip the lookup for anything else.
        if !is_well_formed(key) {
            return Err(AuthError::Invalid);
        }
        let found = self.store.blocking(move |s| s.key_by_hash(&hash)).await?;
        match found {
            Some(rec) if rec.revoked_at.is_none() && ct_eq(&rec.hash, &hash) => {
                Ok(Tenant { name: rec.tenant, key_id: Some(rec.id) })
            }
            _ => Err(AuthError::Invalid),
        }
    }

    /// Creates a key for `tenant`; returns the record and the secret (shown once).
    pub async fn create_key(&self, tenant: &str, name: Option<&str>) -> Result<(KeyRecord, String), AuthError> {
        validate_tenant(tenant)?;
        if let Some(n) = name {
            if n.chars().count() > 128 || n.chars().any(char::is_control) {
                return Err(AuthError::BadName);
            }
        }
        let secret = generate_key()?;
        let rec = KeyRecord {
            id: generate_key_id()?,
            tenant: tenant.to_string(),
            name: name.map(str::to_string),
            hash: hash_key(&secret),
            created_at: crate::store::now_rfc3339(),
            revoked_at: None,
        };
        let r = rec.clone();
        self.store.blocking(move |s| s.insert_key(&r)).await?;
        Ok((rec, secret))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

pub mod tickets;

#[cfg(test)]
mod tests;
