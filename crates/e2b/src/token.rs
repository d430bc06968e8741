//! The sandbox access token (`envdAccessToken`) of the E2B front: what the SDK sends in
//! `X-Access-Token` on every data-plane call.
//!
//! A token is issued to the API key that asked for it (create, connect, get) and names it:
//! `sht_<holder>.<mac>`, where `holder` is the key's id (or `admin` for the bootstrap admin
//! key) and `mac` is HMAC-SHA256 (RustCrypto `hmac`) under the daemon's secret over the
//! sandbox id, the holder and, for the admin key, the admin key's hash. Checking a token
//! recomputes the MAC (compared in constant time by `hmac`'s `verify_slice`, which uses
//! `subtle`); the data plane then checks on every call that the holder is still an active
//! key of the sandbox's tenant. So a token works for one sandbox, only while the key it was
//! issued to lives, and a new admin key ends the old admin key's tokens.
//!
//! Tokens of earlier releases (`sha_...`, an HMAC of the sandbox id alone, tied to no key)
//! are refused with a message saying how to get a new one (`Sandbox.connect`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use safehouse_manager::auth::Tenant;

type HmacSha256 = Hmac<Sha256>;

/// Every token starts so.
const PREFIX: &str = "sht_";
/// Tokens of earlier releases started so.
const LEGACY_PREFIX: &str = "sha_";
/// The holder named by tokens of the bootstrap admin key (which has no id).
const ADMIN_HOLDER: &str = "admin";
/// Domain separation: this MAC is for nothing else.
const CONTEXT: &[u8] = b"safehouse e2b envd access token v2";
/// Longest token considered (a key id and a base64 MAC fit in well under this).
const MAX_TOKEN: usize = 128;

/// Whom a valid token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// An API key in the database, by id: still to be checked as active.
    Key(String),
    /// The bootstrap admin key (the one whose hash the token was bound to).
    Admin,
}

/// Why a token is refused; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("send the sandbox's envdAccessToken in X-Access-Token")]
    Missing,
    #[error(
        "this envdAccessToken was issued by an earlier safehouse and is tied to no API key, so it is no longer \
         accepted; get a new one with Sandbox.connect(sandbox_id) (POST /v2/sandboxes/{{id}}/connect)"
    )]
    Legacy,
    #[error("the X-Access-Token is not this sandbox's envdAccessToken")]
    Mismatch,
}

/// The MAC of (sandbox, holder, binding) under `secret`.
fn mac(secret: &[u8; 32], sandbox: &str, holder: &str, binding: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    // NUL never occurs in sandbox ids or key ids (both are checked shapes), so the parts
    // cannot run into each other.
    for part in [CONTEXT, sandbox.as_bytes(), holder.as_bytes(), binding] {
        m.update(part);
        m.update(b"\0");
    }
    m
}

/// The holder's name and what else binds the MAC: the admin key's hash for the admin key.
fn holder_of<'a>(who: &'a Tenant, admin_hash: &'a [u8; 32]) -> (&'a str, &'a [u8]) {
    match &who.key_id {
        Some(id) => (id, b""),
        None => (ADMIN_HOLDER, admin_hash),
    }
}

/// The access token of `sandbox` for the key `who` authenticated with.
pub fn issue(secret: &[u8; 32], sandbox: &str, who: &Tenant, admin_hash: &[u8; 32]) -> String {
    let (holder, binding) = holder_of(who, admin_hash);
    let tag = mac(secret, sandbox, holder, binding).finalize().into_bytes();
    format!("{PREFIX}{holder}.{}", B64URL.encode(tag))
}

/// Whom `token` was issued to, if it is a token of `sandbox` under `secret`.
pub fn verify(
    secret: &[u8; 32],
    sandbox: &str,
    token: Option<&str>,
    admin_hash: &[u8; 32],
) -> Result<Holder, TokenError> {
    let token = token.ok_or(TokenError::Missing)?.trim();
    if token.starts_with(LEGACY_PREFIX) {
        return Err(TokenError::Legacy);
    }
    if token.len() > MAX_TOKEN {
        return Err(TokenError::Mismatch);
    }
    let (holder, tag) = token.strip_prefix(PREFIX).and_then(|t| t.split_once('.')).ok_or(TokenError::Mismatch)?;
    let tag = B64URL.decode(tag).map_err(|_| TokenError::Mismatch)?;
    let (found, binding): (Holder, &[u8]) = if holder == ADMIN_HOLDER {
        (Holder::Admin, admin_hash)
    } else if safehouse_http::params::is_key_id(holder) {
        (Holder::Key(holder.to_string()), b"")
    } else {
        return Err(TokenError::Mismatch);
    };
    mac(secret, sandbox, holder, binding).verify_slice(&tag).map_err(|_| TokenError::Mismatch)?;
    Ok(found)
}

/// The holder a well-formed token names (`sht_<holder>.<mac>`), before any MAC check: what
/// a search for the token's sandbox starts from.
pub fn named_holder(token: &str) -> Option<Holder> {
    let (holder, _) = token.trim().strip_prefix(PREFIX)?.split_once('.')?;
    if token.len() > MAX_TOKEN {
        None
    } else if holder == ADMIN_HOLDER {
        Some(Holder::Admin)
    } else {
        safehouse_http::params::is_key_id(holder).then(|| Holder::Key(holder.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SB: &str = "sb_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "sb_bbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn key(id: &str) -> Tenant {
        Tenant { name: "t".into(), key_id: Some(id.into()) }
    }

    #[test]
    fn hmac_is_rfc_4231() {
        // RFC 4231 test case 2: the library, not a hand-written construction.
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let hex: String = m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_token_names_its_key_and_binds_sandbox_key_and_secret() {
        let admin = [7u8; 32];
        let t = issue(&[1; 32], SB, &key("key_aaaaaaaaaaaaaaaa"), &admin);
        assert!(t.starts_with("sht_key_aaaaaaaaaaaaaaaa."), "{t}");
        assert_eq!(verify(&[1; 32], SB, Some(&t), &admin), Ok(Holder::Key("key_aaaaaaaaaaaaaaaa".into())));
        // Another sandbox, another secret, a shortened MAC: refused.
        assert_eq!(verify(&[1; 32], OTHER, Some(&t), &admin), Err(TokenError::Mismatch));
        assert_eq!(verify(&[2; 32], SB, Some(&t), &admin), Err(TokenError::Mismatch));
        assert_eq!(verify(&[1; 32], SB, Some(&t[..t.len() - 1]), &admin), Err(TokenError::Mismatch));
        // Naming another key with this MAC does not move the token to that key.
        let moved = t.replace("key_aaaaaaaaaaaaaaaa", "key_bbbbbbbbbbbbbbbb");
        assert_eq!(verify(&[1; 32], SB, Some(&moved), &admin), Err(TokenError::Mismatch));
        let as_admin = t.replace("key_aaaaaaaaaaaaaaaa", "admin");
        assert_eq!(verify(&[1; 32], SB, Some(&as_admin), &admin), Err(TokenError::Mismatch));
    }

    #[test]
    fn admin_tokens_end_with_the_admin_key() {
        let admin = Tenant { name: "admin".into(), key_id: None };
        let t = issue(&[1; 32], SB, &admin, &[7; 32]);
        assert!(t.starts_with("sht_admin."), "{t}");
        assert_eq!(verify(&[1; 32], SB, Some(&t), &[7; 32]), Ok(Holder::Admin));
        // The daemon restarted with a new admin key.
        assert_eq!(verify(&[1; 32], SB, Some(&t), &[8; 32]), Err(TokenError::Mismatch));
    }

    #[test]
    fn a_token_names_its_holder() {
        let t = issue(&[1; 32], SB, &key("key_aaaaaaaaaaaaaaaa"), &[7; 32]);
        assert_eq!(named_holder(&t), Some(Holder::Key("key_aaaaaaaaaaaaaaaa".into())));
        let admin = Tenant { name: "admin".into(), key_id: None };
        assert_eq!(named_holder(&issue(&[1; 32], SB, &admin, &[7; 32])), Some(Holder::Admin));
        for junk in ["", "sht_", "sht_x.y", "sha_abc", "sht_key_a"] {
            assert_eq!(named_holder(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn legacy_missing_and_junk_tokens() {
        let admin = [7u8; 32];
        let legacy = format!("sha_{}", "A".repeat(43));
        assert_eq!(verify(&[1; 32], SB, Some(&legacy), &admin), Err(TokenError::Legacy));
        assert!(TokenError::Legacy.to_string().contains("Sandbox.connect"));
        assert_eq!(verify(&[1; 32], SB, None, &admin), Err(TokenError::Missing));
        for junk in ["", "sht_", "sht_.", "sht_key_x.AAAA", "sht_admin.", "sht_admin.!!", &"sht_".repeat(100)] {
            assert_eq!(verify(&[1; 32], SB, Some(junk), &admin), Err(TokenError::Mismatch), "{junk:?}");
        }
    }
}
