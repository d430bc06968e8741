//! The web console (`console/` at the repository root), built by `npm run build` and
//! embedded in the binary: [`router`] serves it at `/ui/` with the headers that keep it
//! safe to open next to anything else a browser has open.
//!
//! The console is static: a page and its scripts, which call the API like any client,
//! with the key the user typed (in `Authorization`, never a cookie, never a URL). So these
//! routes need no key; the daemon's guard still checks `Host` and `Origin` in front of
//! them (DNS rebinding).
//!
//! Headers on every response from here:
//! - a Content-Security-Policy that lets the page run only its own scripts (no inline
//!   script, no `eval`), talk only to this daemon, and never be framed; Trusted Types
//!   are required, so a string can never become markup through `innerHTML` or the like
//!   even by mistake. Styles may be inline: xterm.js writes its cell styles into `<style>`
//!   elements it creates at run time.
//! - `X-Frame-Options: DENY` (older browsers), `Referrer-Policy: no-referrer`,
//!   `Cross-Origin-Opener-Policy` and `Cross-Origin-Resource-Policy: same-origin`.
//! - Caching: the hashed files under `assets/` are immutable for a year; the page itself
//!   is revalidated every time (`no-cache` with an ETag), so a new binary's console is
//!   picked up at once.

#![forbid(unsafe_code)]

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file of `console/dist`.
#[derive(Debug)]
pub struct Asset {
    /// Relative to `/ui/`, e.g. `index.html`, `assets/index-3f2a1b.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// Quoted, as sent: `"<24 hex digits of the SHA-256>"`.
    pub etag: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Where the console is served.
pub const PREFIX: &str = "/ui/";

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Whether this binary holds the built console (false: a placeholder page, built without
/// `console/dist`).
pub fn is_built() -> bool {
    BUILT
}

/// The asset at `path` (relative to `/ui/`; empty is the page).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// Bytes of all embedded assets together.
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// Whether `path` is one of the console's (public: no key needed).
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with(PREFIX)
}

/// The console's routes as (method, path), for the daemon's route table (documented in
/// docs/openapi.json with the native API's).
pub const ROUTES: &[(&str, &str)] = &[("GET", "/"), ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/{*path}")];

/// `GET /` and `GET /ui` redirect to `/ui/`; `GET /ui/` is the page; `GET /ui/PATH` an asset.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(to_console))
        .route("/ui", get(to_console))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("", &headers) }))
        .route("/ui/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }))
}

async fn to_console() -> Response {
    let mut resp = (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, PREFIX)]).into_response();
    protect(&mut resp, "no-cache");
    resp
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(a) = asset(path) else {
        let mut resp = (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the console; open /ui/\n",
        )
            .into_response();
        protect(&mut resp, "no-cache");
        return resp;
    };
    let cache = if a.path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == a.etag || tag.trim() == "*");
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    resp.headers_mut().insert(header::ETAG, HeaderValue::from_static(a.etag));
    protect(&mut resp, cache);
    resp
}

fn protect(resp: &mut Response, cache: &'static str) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router::<()>().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    fn h<'a>(r: &'a Response, name: &str) -> &'a str {
        r.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    #[tokio::test]
    async fn the_page_is_served_with_its_protections() {
        let r = get("/ui/", &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(h(&r, "content-type"), "text/html; charset=utf-8");
        assert_eq!(h(&r, "cache-control"), "no-cache");
        assert_eq!(h(&r, "x-frame-options"), "DENY");
        let csp = h(&r, "content-security-policy");
        for part in ["script-src 'self';", "frame-ancestors 'none'", "require-trusted-types-for 'script'"] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(
            !csp.contains("unsafe-eval")
                && !csp.split(';').any(|d| d.contains("script") && d.contains("unsafe-inline"))
        );
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"<!doctype html>") || body.starts_with(b"<!DOCTYPE html>"));
        if is_built() {
            // No inline script: every <script> of the page has a src.
            let page = String::from_utf8_lossy(&body);
            for tag in page.split("<script").skip(1) {
                let open = &tag[..tag.find('>').unwrap()];
                assert!(open.contains("src="), "inline script in the page: <script{open}>");
            }
        }
    }

    #[tokio::test]
    async fn redirects_and_unknown_paths() {
        for p in ["/", "/ui"] {
            let r = get(p, &[]).await;
            assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{p}");
            assert_eq!(h(&r, "location"), "/ui/");
        }
        let r = get("/ui/nope.js", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(h(&r, "x-frame-options"), "DENY");
        let r = get("/ui/../Cargo.toml", &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn every_asset_has_its_type_and_caching() {
        for a in ASSETS {
            let r = get(&format!("/ui/{}", a.path), &[]).await;
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            assert_eq!(h(&r, "content-type"), a.content_type);
            assert_eq!(h(&r, "etag"), a.etag);
            let immutable = h(&r, "cache-control").contains("immutable");
            assert_eq!(immutable, a.path.starts_with("assets/"), "{}", a.path);
            let r = get(&format!("/ui/{}", a.path), &[("if-none-match", a.etag)]).await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        }
        assert!(ASSETS.iter().any(|a| a.path == "index.html"));
    }
}
