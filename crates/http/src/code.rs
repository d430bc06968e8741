//! A code-interpreter run as a streamed response, shared by the native API and the E2B
//! front: one JSON object per line, in the shape the `e2b-code-interpreter` SDK reads.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use safehouse_manager::interp::CodeRun;

/// The media type of the result stream.
pub const NDJSON: &str = "application/x-ndjson";

/// The run's events as NDJSON lines. The run is dropped when the client goes away, which
/// interrupts its code (the context keeps its state).
pub fn ndjson(run: CodeRun) -> Response {
    let stream = futures_util::stream::unfold(run, |mut run| async move {
        let o = run.next().await?;
        let mut line = serde_json::to_vec(&o).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), run))
    });
    ([(header::CONTENT_TYPE, NDJSON), (header::CACHE_CONTROL, "no-store")], Body::from_stream(stream)).into_response()
}
