//! The checkpoint signing key: ed25519, `signing.key` (hex seed, 0600) and `signing.pub`
//! (hex public key) in the audit directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::record::{hex, unhex32};
use crate::Error;

pub const KEY_FILE: &str = "signing.key";
pub const PUB_FILE: &str = "signing.pub";

/// Domain separation: a checkpoint signature can never be mistaken for another signature.
const CONTEXT: &[u8] = b"safehouse-audit-checkpoint-v1\0";

pub(crate) struct Signer {
    key: SigningKey,
    pub public_hex: String,
}

impl Signer {
    /// Loads `signing.key`, or creates it (and `signing.pub`) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Signer, Error> {
        let path = dir.join(KEY_FILE);
        let key = match fs::read(&path) {
            Ok(text) => {
                let mode = fs::metadata(&path).map_err(Error::io("stat", &path))?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(Error::KeyPermissions { path, mode });
                }
                let seed = unhex32(text.trim_ascii())
                    .ok_or_else(|| Error::Key { path: path.clone(), reason: "expected 64 hex digits".into() })?;
                SigningKey::from_bytes(&seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::getrandom(&mut seed).map_err(|e| Error::Io {
                    what: "get random bytes for",
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(Error::io("create", &path))?;
                f.write_all(format!("{}\n", hex(&seed)).as_bytes()).map_err(Error::io("write", &path))?;
                f.sync_all().map_err(Error::io("sync", &path))?;
                SigningKey::from_bytes(&seed)
            }
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let public_hex = hex(key.verifying_key().as_bytes());
        // The public key is derived, so it is rewritten whenever it is missing or stale.
        let pub_path = dir.join(PUB_FILE);
        if fs::read_to_string(&pub_path).map(|t| t.trim() != public_hex).unwrap_or(true) {
            fs::write(&pub_path, format!("{public_hex}\n")).map_err(Error::io("write", &pub_path))?;
        }
        Ok(Signer { key, public_hex })
    }

    pub fn sign(&self, seq: u64, chain: &[u8; 32]) -> Signature {
        self.key.sign(&message(seq, chain))
    }
}

/// What a checkpoint signs: its own sequence number and the hash of the record before it.
fn message(seq: u64, chain: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 40);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(chain);
    m
}

/// Reads a hex public key (as in `signing.pub`).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, Error> {
    let text = fs::read(path).map_err(Error::io("read", path))?;
    parse_public_key(text.trim_ascii()).map_err(|reason| Error::Key { path: path.into(), reason })
}

pub(crate) fn parse_public_key(hex: &[u8]) -> Result<VerifyingKey, String> {
    let bytes = unhex32(hex).ok_or("expected 64 hex digits")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

pub(crate) fn verify_checkpoint(key: &VerifyingKey, seq: u64, chain: &[u8; 32], sig: &[u8]) -> bool {
    match Signature::from_slice(sig) {
        Ok(sig) => key.verify(&message(seq, chain), &sig).is_ok(),
        Err(_) => false,
    }
}
