//! The HTTP server: hyper's HTTP/1 connection driver with explicit limits, in front of the
//! daemon's router.
//!
//! Limits: request headers ≤ 16 KiB (431 beyond), read within 10 s of the connection
//! going idle (which also closes idle keep-alive connections: slowloris), a response write
//! that makes no progress for 60 s closes the connection (slow readers), at most 4096
//! connections (more are closed at once), and graceful shutdown on SIGTERM/SIGINT.
//!
//! With TLS ([`serve_tls_listener`], docs/tls.md) every connection is a TLS one: the
//! handshake runs in the connection's task within the header timeout, and a client that
//! speaks plain HTTP to the port gets one plain-text 400 naming `https://` and nothing else.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Connection-level limits. `Limits::default()` is what the daemon uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line + headers).
    pub max_header_bytes: usize,
    /// Time to receive a complete request head, counted from when the connection is ready
    /// for one (so it also bounds idle keep-alive time).
    pub header_read_timeout: Duration,
    /// A connection whose response writes make no progress this long is closed.
    pub write_stall_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A slot of the connection cap. Requests carry it as an extension so an upgraded
/// connection (WebSocket) can keep holding it after hyper lets go of the socket.
#[derive(Clone)]
pub struct ConnPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Put in every request's extensions when its connection is TLS (the port proxy's
/// `X-Forwarded-Proto`).
#[derive(Debug, Clone, Copy)]
pub struct Tls;

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to `limits.shutdown_grace`).
pub async fn serve_listener(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve(listener, None, app, limits, shutdown).await
}

/// [`serve_listener`] over TLS: every connection must complete a handshake with `tls`.
pub async fn serve_tls_listener(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve(listener, Some(tokio_rustls::TlsAcceptor::from(tls)), app, limits, shutdown).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(128)
        .max_buf_size(limits.max_header_bytes.max(8192) * 4)
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener lives on.
                    eprintln!("safehouse: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: refuse at once rather than queue
            continue;
        };
        let _ = stream.set_nodelay(true);
        let permit = ConnPermit(Arc::new(permit));
        let (app, http, stop) = (app.clone(), http.clone(), stop_rx.clone());
        match &tls {
            None => {
                let io = TokioIo::new(StallGuard::new(stream, limits.write_stall_timeout));
                tokio::spawn(serve_connection(io, peer, false, app, http, permit, stop));
            }
            Some(acceptor) => {
                let (acceptor, limits) = (acceptor.clone(), limits.clone());
                tokio::spawn(async move {
                    // The permit is held through the handshake: handshakes count against the cap.
                    if let Some(tls) = accept_tls(stream, acceptor, &limits).await {
                        serve_connection(TokioIo::new(tls), peer, true, app, http, permit, stop).await;
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await;
    Ok(())
}

/// The first byte of a TLS handshake record (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// The TLS side of a new connection, or `None` (handshake failed, too slow, or the client
/// spoke plain HTTP: it is told to use https:// and closed). Handshake errors are the
/// client's doing and are not logged.
async fn accept_tls(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: &Limits,
) -> Option<tokio_rustls::server::TlsStream<StallGuard<TcpStream>>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE {
        let _ = tokio::time::timeout(Duration::from_secs(2), refuse_plain(stream)).await;
        return None;
    }
    let guarded = StallGuard::new(stream, limits.write_stall_timeout);
    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(guarded)).await.ok()?.ok()
}

/// The one answer a plain-HTTP client gets from a TLS port: a 400 in the daemon's error
/// shape (its request is read first, so that closing does not reset the answer away).
async fn refuse_plain(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = "{\"error\":{\"code\":\"tls_required\",\"message\":\"this address serves HTTPS only: use https:// in the URL (docs/tls.md)\"}}";
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection<S>(
    io: TokioIo<S>,
    peer: SocketAddr,
    tls: bool,
    app: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    permit: ConnPermit,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(permit.clone());
        if tls {
            req.extensions_mut().insert(Tls);
        }
        // The client's address, for the port proxy's X-Forwarded-For.
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        // Errors here are the client's doing (timeouts, resets, bad requests): not logged,
        // or a client could flood the log.
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Completes once shutdown has been requested (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        let now = *stop.borrow_and_update();
        if now || stop.changed().await.is_err() {
            return;
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("safehouse: cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("safehouse: shutting down");
}

/// A socket whose writes fail with `TimedOut` once they have been stuck for `limit`.
pub struct StallGuard<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, limit: Duration) -> StallGuard<T> {
        StallGuard { inner, limit, stalled: None }
    }

    fn progress<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn stalled_writes_time_out() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(100));
        guarded.write_all(&[1; 64]).await.unwrap();
        let started = std::time::Instant::now();
        let err = guarded.write_all(&[1; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
        let mut buf = [0; 64];
        b.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test]
    async fn writes_that_progress_do_not_time_out() {
        let (a, mut b) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut n = 0;
            let mut buf = [0; 16];
            while n < 1024 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                n += b.read(&mut buf).await.unwrap();
            }
        });
        // Each write waits ~5 ms, the whole transfer far longer than the limit.
        let mut guarded = StallGuard::new(a, Duration::from_millis(50));
        guarded.write_all(&[1; 1024]).await.unwrap();
        reader.await.unwrap();
    }
}
