//! What a request does when its API key is revoked while it runs: the handler is dropped
//! (as if the client had gone away) and answered with a 401, and a response that is still
//! streaming ends at its next chunk: an event stream with a last `event: revoked`, a
//! front's own kind of stream with the front's last word ([`StreamEnd`]: an E2B Connect
//! stream's `unauthenticated` end envelope), anything else (a download, a proxied body)
//! cut off, so the client sees it incomplete rather than finished.
//!
//! The guard runs every authenticated request through [`run`], the E2B data plane through
//! [`run_with`]; handlers whose work outlives the response (WebSockets, the port proxy's
//! spliced connections) select on the [`Lease`] themselves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::header;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};

use safehouse_manager::auth::revocation::REVOKED_MESSAGE;
use safehouse_manager::auth::Lease;

/// How a front's own kind of stream ends when its key is revoked: responses of
/// `content_type` get `frame()` as their last chunk.
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd {
    pub content_type: &'static str,
    pub frame: fn() -> Bytes,
}

/// Runs `handler` until it answers or the lease's key is revoked (then `refused` answers),
/// and makes the answer's body end when the key is revoked.
pub async fn run(
    lease: Lease,
    handler: impl Future<Output = Response>,
    refused: impl FnOnce() -> Response,
) -> Response {
    run_with(lease, handler, refused, None).await
}

/// [`run`], for a front whose responses may be streams of its own kind (`own`).
pub async fn run_with(
    lease: Lease,
    handler: impl Future<Output = Response>,
    refused: impl FnOnce() -> Response,
    own: Option<StreamEnd>,
) -> Response {
    if lease.key_id().is_none() {
        // The bootstrap admin key cannot be revoked: nothing to watch.
        return handler.await;
    }
    let resp = tokio::select! {
        resp = handler => resp,
        () = lease.revoked() => return refused(),
    };
    let ending = Ending::of(&resp, own);
    resp.map(|body| Body::new(UntilRevoked::new(body, lease, ending)))
}

/// How a body ends when its key is revoked.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Server-Sent Events: a last `event: revoked`, then a clean end.
    EventStream,
    /// A front's own kind of stream (E2B Connect): the front's last frame.
    Own(fn() -> Bytes),
    /// Anything else: an error, which makes hyper abort the response.
    Abort,
}

impl Ending {
    fn of(resp: &Response, own: Option<StreamEnd>) -> Ending {
        let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match (ct.as_str(), own) {
            ("text/event-stream", _) => Ending::EventStream,
            (ct, Some(own)) if ct == own.content_type => Ending::Own(own.frame),
            _ => Ending::Abort,
        }
    }

    /// The last frame, or `None` to abort.
    fn last_frame(self) -> Option<Bytes> {
        match self {
            Ending::EventStream => {
                let data = serde_json::json!({"code": "unauthorized", "message": REVOKED_MESSAGE});
                Some(Bytes::from(format!("event: revoked\ndata: {data}\n\n")))
            }
            Ending::Own(frame) => Some(frame()),
            Ending::Abort => None,
        }
    }
}

/// A response body that ends when its key is revoked.
struct UntilRevoked {
    inner: Body,
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
    ending: Ending,
    done: bool,
}

impl UntilRevoked {
    fn new(inner: Body, lease: Lease, ending: Ending) -> UntilRevoked {
        UntilRevoked { inner, revoked: Box::pin(async move { lease.revoked().await }), ending, done: false }
    }
}

impl HttpBody for UntilRevoked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.revoked.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(match this.ending.last_frame() {
                Some(last) => Ok(Frame::data(last)),
                None => Err(axum::Error::new(REVOKED_MESSAGE)),
            }));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::response::IntoResponse;
    use futures_util::StreamExt;

    use super::*;
    use safehouse_manager::auth::{Revocations, Tenant};

    fn lease(hub: &Arc<Revocations>, key: &str) -> Lease {
        hub.lease(&Tenant { name: "t".into(), key_id: Some(key.into()) })
    }

    /// A response whose body sends `first` and then nothing, forever.
    fn endless(content_type: &'static str) -> Response {
        let body = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"first\n")) })
            .chain(futures_util::stream::pending());
        ([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response()
    }

    async fn collect(resp: Response) -> (Vec<Bytes>, Option<String>) {
        let mut stream = resp.into_body().into_data_stream();
        let mut chunks = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the body ended") {
                Some(Ok(b)) => chunks.push(b),
                Some(Err(e)) => return (chunks, Some(e.to_string())),
                None => return (chunks, None),
            }
        }
    }

    #[tokio::test]
    async fn streams_end_with_their_own_last_word() {
        for (ct, want_last, want_err) in [
            ("text/event-stream", Some("event: revoked\ndata: "), None),
            ("application/connect+json", Some("\u{2}"), None),
            ("application/octet-stream", None, Some(REVOKED_MESSAGE)),
        ] {
            let hub = Arc::new(Revocations::default());
            // A front's own stream, as the E2B data plane declares its Connect streams.
            let own =
                StreamEnd { content_type: "application/connect+json", frame: || Bytes::from_static(b"\x02 revoked") };
            let resp = run_with(lease(&hub, "key_a"), async { endless(ct) }, || unreachable!(), Some(own)).await;
            let revoker = {
                let hub = hub.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    hub.revoke("key_a");
                })
            };
            let (chunks, err) = collect(resp).await;
            revoker.await.unwrap();
            assert_eq!(&chunks[0][..], b"first\n", "{ct}");
            match want_last {
                Some(prefix) => {
                    assert_eq!(chunks.len(), 2, "{ct}: {chunks:?}");
                    assert!(String::from_utf8_lossy(&chunks[1]).starts_with(prefix), "{ct}: {:?}", chunks[1]);
                    assert!(String::from_utf8_lossy(&chunks[1]).contains("revoked"), "{ct}");
                }
                None => assert_eq!(chunks.len(), 1, "{ct}"),
            }
            assert_eq!(err.as_deref(), want_err, "{ct}");
        }
    }

    #[tokio::test]
    async fn a_handler_still_running_is_dropped_and_refused() {
        let hub = Arc::new(Revocations::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handler = async move {
            let _dropped_with_me = tx;
            std::future::pending::<Response>().await
        };
        let hub2 = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            hub2.revoke("key_a");
        });
        let resp = run(lease(&hub, "key_a"), handler, || axum::http::StatusCode::UNAUTHORIZED.into_response()).await;
        assert_eq!(resp.status(), 401);
        assert!(rx.await.is_err(), "the handler was dropped");
    }

    #[tokio::test]
    async fn other_keys_bodies_run_to_their_end() {
        let hub = Arc::new(Revocations::default());
        let resp = run(lease(&hub, "key_b"), async { "whole".into_response() }, || unreachable!()).await;
        hub.revoke("key_a");
        let (chunks, err) = collect(resp).await;
        assert_eq!((chunks.concat(), err), (b"whole".to_vec(), None));
    }
}
