//! Signed file URLs: what `Sandbox.download_url` / `upload_url` return, usable without
//! headers (a browser, `curl`). The SDK signs `path:operation:user:envdAccessToken[:expiry]`
//! with SHA-256 (`v1_` + unpadded base64) and puts the signature (and the expiry, Unix
//! seconds) in the query of `E2B_SANDBOX_URL/files`.
//!
//! Such a URL names no sandbox (the SDK sends `E2b-Sandbox-Id` as a header, which a plain
//! URL cannot carry), so the daemon finds the sandbox whose token made the signature: for
//! each live sandbox, the token of each active key of its tenant (and of the bootstrap admin
//! key), compared in constant time. Only tokens the daemon would issue now are tried, so a
//! URL dies with its key, its sandbox or its expiry. The search is bounded by
//! [`MAX_CANDIDATES`]; past it the URL is refused with the reason.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use safehouse_http::params::parse_query;
use safehouse_manager::auth::{Tenant, ADMIN_TENANT};
use safehouse_manager::ListFilter;

use crate::{e2b_error, files, E2b, SANDBOX_HEADER};

/// Most (sandbox, key) pairs one signed URL is checked against.
const MAX_CANDIDATES: usize = 20_000;

/// A request for `/files` without `E2b-Sandbox-Id`: a signed file URL (or a mistake).
pub fn is_file_url(req: &Request) -> bool {
    req.uri().path() == "/files" && !req.headers().contains_key(SANDBOX_HEADER)
}

/// What a signed URL's query says.
#[derive(Debug, PartialEq)]
struct Signed {
    path: String,
    user: String,
    signature: String,
    expiry: Option<i64>,
}

fn parse(query: &str) -> Result<Signed, String> {
    let (mut path, mut user, mut signature, mut expiry) = (None, String::new(), None, None);
    for (k, v) in parse_query(query).map_err(|e| e.message)? {
        match k.as_str() {
            "path" => path = Some(v),
            "username" => user = v,
            "signature" => signature = Some(v),
            "signature_expiration" => {
                expiry = Some(v.parse::<i64>().map_err(|_| "signature_expiration must be Unix seconds".to_string())?)
            }
            other => return Err(format!("unknown parameter {other:?} in a signed file URL")),
        }
    }
    let signature = signature.ok_or(
        "a file URL needs a signature (Sandbox.download_url / upload_url), or the E2b-Sandbox-Id and \
         X-Access-Token headers",
    )?;
    Ok(Signed { path: path.ok_or("path is required")?, user, signature, expiry })
}

/// The SDK's signature of `raw` (`v1_` + unpadded standard base64 of SHA-256).
fn signature(path: &str, operation: &str, user: &str, token: &str, expiry: Option<i64>) -> String {
    let raw = match expiry {
        Some(e) => format!("{path}:{operation}:{user}:{token}:{e}"),
        None => format!("{path}:{operation}:{user}:{token}"),
    };
    format!("v1_{}", B64.encode(Sha256::digest(raw.as_bytes())))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    e2b_error(status, message)
}

/// Serves a signed download (`GET`) or upload (`POST`) as the key the signing token was
/// issued to.
pub async fn serve(st: E2b, mut req: Request) -> Response {
    if let Err(e) = st.hosts.check_host(req.headers(), req.uri()).and_then(|_| st.hosts.check_origin(req.headers())) {
        return refuse(e.status, e.message);
    }
    let operation = match *req.method() {
        Method::GET => "read",
        Method::POST => "write",
        _ => return refuse(StatusCode::METHOD_NOT_ALLOWED, "a signed file URL takes GET (download) or POST (upload)"),
    };
    let signed = match parse(req.uri().query().unwrap_or("")) {
        Ok(s) => s,
        Err(m) => return refuse(StatusCode::UNAUTHORIZED, m),
    };
    if signed.expiry.is_some_and(|e| e < time::OffsetDateTime::now_utc().unix_timestamp()) {
        return refuse(StatusCode::UNAUTHORIZED, "this signed file URL has expired; ask for a new one");
    }
    let (id, tenant) = match find_signer(&st, &signed, operation).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    // Served like the header-authenticated call, as the signing token's key.
    let query = format!(
        "path={}{}",
        urlencode(&signed.path),
        if signed.user.is_empty() { String::new() } else { format!("&username={}", urlencode(&signed.user)) }
    );
    match format!("/files?{query}").parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "the path cannot be put in a URL"),
    }
    let lease = st.auth.lease(&tenant);
    req.extensions_mut().insert(lease.clone());
    let refused = || refuse(StatusCode::UNAUTHORIZED, safehouse_manager::auth::revocation::REVOKED_MESSAGE);
    let serve = async {
        if operation == "read" {
            files::download(&st, &tenant, &id, req).await
        } else {
            files::upload(&st, &tenant, &id, req).await
        }
    };
    let mut resp = safehouse_http::revoked::run_with(lease, serve, refused, None).await;
    resp.extensions_mut().insert(tenant);
    resp.extensions_mut()
        .insert(safehouse_http::audit::AuditAs { path: "e2b:/files (signed)".into(), sandbox: Some(id) });
    resp
}

/// The sandbox and key whose token made the signature.
async fn find_signer(st: &E2b, signed: &Signed, operation: &str) -> Result<(String, Tenant), Response> {
    let forged = || {
        refuse(
            StatusCode::UNAUTHORIZED,
            "the signature does not match this path and operation, or its key, token or sandbox is gone",
        )
    };
    let given = signed.signature.as_bytes();
    let live = st
        .manager
        .list(ADMIN_TENANT, &ListFilter::default())
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let keys = st
        .auth
        .store()
        .blocking(|s| s.list_keys())
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let admin = Tenant { name: ADMIN_TENANT.into(), key_id: None };
    let mut tried = 0usize;
    for sb in live.iter().filter(|s| st.manager.is_live(&s.id)) {
        let Some(owner) = st.manager.tenant_of(&sb.id) else { continue };
        let holders = keys
            .iter()
            .filter(|k| k.revoked_at.is_none() && k.tenant == owner)
            .map(|k| Tenant { name: k.tenant.clone(), key_id: Some(k.id.clone()) })
            .chain((owner == ADMIN_TENANT).then(|| admin.clone()));
        for who in holders {
            tried += 1;
            if tried > MAX_CANDIDATES {
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "too many sandboxes and keys to check a signed URL against (more than {MAX_CANDIDATES}); \
                             use the E2b-Sandbox-Id and X-Access-Token headers"
                    ),
                ));
            }
            let token = st.e2b.access_token(&sb.id, &who, st.auth.admin_hash());
            let want = signature(&signed.path, operation, &signed.user, &token, signed.expiry);
            if bool::from(want.as_bytes().ct_eq(given)) {
                return Ok((sb.id.clone(), who));
            }
        }
    }
    Err(forged())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_the_sdks() {
        // e2b.sandbox.signature.get_signature("/tmp/a.txt", "read", None, "tok", None)
        let raw = "/tmp/a.txt:read::tok";
        let want = format!("v1_{}", B64.encode(Sha256::digest(raw.as_bytes())));
        assert_eq!(signature("/tmp/a.txt", "read", "", "tok", None), want);
        assert_ne!(signature("/tmp/a.txt", "write", "", "tok", None), want);
        assert!(signature("/tmp/a.txt", "read", "", "tok", Some(5)).starts_with("v1_"));
    }

    #[test]
    fn queries_parse_and_refuse_by_name() {
        let s = parse("path=%2Ftmp%2Fa&signature=v1_x&signature_expiration=17").unwrap();
        assert_eq!(
            s,
            Signed { path: "/tmp/a".into(), user: String::new(), signature: "v1_x".into(), expiry: Some(17) }
        );
        assert!(parse("path=/a").unwrap_err().contains("signature"));
        assert!(parse("signature=v1_x").unwrap_err().contains("path"));
        assert!(parse("path=/a&signature=v1_x&signature_expiration=soon").unwrap_err().contains("Unix"));
        assert!(parse("path=/a&signature=v1_x&x=1").unwrap_err().contains("\"x\""));
        assert_eq!(urlencode("/a b/ü"), "/a%20b/%C3%BC");
    }
}
