//! What the fronts' file routes share: the HTTP answer for a file error, the blocking-pool
//! runner, the early path check, the streamed download body and the daemon-wide budget of
//! open file watches.

use axum::body::Body;
use axum::http::StatusCode;
use safehouse_hostfs::{self as files, FileError, MAX_PATH_BYTES};
use tokio::io::AsyncReadExt;

use crate::errors::ApiError;

/// Download chunk size.
const CHUNK: usize = 64 * 1024;
/// Most file watches open at once, daemon-wide (every front's together).
pub const MAX_WATCHES: usize = 64;

impl From<FileError> for ApiError {
    fn from(e: FileError) -> ApiError {
        match e.status() {
            500 => ApiError::internal(e),
            s => ApiError::new(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST), e.code(), e.to_string()),
        }
    }
}

/// Runs a file operation on the blocking pool.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> files::Result<T> + Send + 'static) -> Result<T, ApiError> {
    blocking_as(f).await
}

/// [`blocking`], with the file error in a front's own shape.
pub async fn blocking_as<T, E>(f: impl FnOnce() -> files::Result<T> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<FileError> + From<ApiError>,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(E::from),
        Err(e) => Err(ApiError::internal(e).into()),
    }
}

/// Cheap early refusal of a request path; `safehouse_hostfs` parses it for real.
pub fn check_path(p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.contains('\0') || p.len() > MAX_PATH_BYTES {
        return Err(ApiError::invalid(format!("path must be non-empty, at most {MAX_PATH_BYTES} bytes, without NUL")));
    }
    Ok(())
}

/// A response body streaming `file` from its current offset in 64 KiB chunks (the native
/// and the E2B downloads).
pub fn file_body(file: std::fs::File) -> Body {
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Body::from_stream(stream)
}

/// Open file watches, daemon-wide.
static WATCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the daemon-wide file watch slots. Every watch holds one of root's inotify
/// instances (a host-wide budget) and keeps the sandbox's filesystem referenced: a fixed
/// number at a time.
pub struct WatchSlot;

impl WatchSlot {
    pub fn take() -> Option<WatchSlot> {
        use std::sync::atomic::Ordering;
        if WATCHES.fetch_add(1, Ordering::Relaxed) >= MAX_WATCHES {
            WATCHES.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(WatchSlot)
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        WATCHES.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
