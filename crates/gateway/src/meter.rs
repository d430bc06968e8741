//! Streams that record activity (for idle timeouts) and, on the upstream side, charge every
//! byte against the gateway's budget and counters.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gateway::Gateway;

/// When a connection last moved a byte, either side.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// Completes once nothing has moved for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let now = self.start.elapsed();
            let since = now.saturating_sub(Duration::from_millis(self.last_ms.load(Relaxed)));
            if since >= limit {
                return;
            }
            tokio::time::sleep(limit - since).await;
        }
    }
}

/// A stream that records activity and, when `gateway` is set (the upstream side), charges
/// bytes to the gateway: reads are inbound, writes outbound. Once the budget is spent every
/// read and write fails.
pub(crate) struct Metered<S> {
    inner: S,
    activity: Arc<Activity>,
    gateway: Option<Arc<Gateway>>,
}

impl<S> Metered<S> {
    /// The client side: activity only (the budget counts what crosses to the outside once).
    pub fn client(inner: S, activity: Arc<Activity>) -> Metered<S> {
        Metered { inner, activity, gateway: None }
    }

    pub fn upstream(inner: S, activity: Arc<Activity>, gateway: Arc<Gateway>) -> Metered<S> {
        Metered { inner, activity, gateway: Some(gateway) }
    }
}

fn spent(gw: &Gateway) -> io::Error {
    let limit = gw.config.policy.egress_bytes.unwrap_or(0);
    io::Error::other(format!("egress byte budget of {limit} bytes is spent"))
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(gw) = &this.gateway {
            if gw.budget_spent() {
                return Poll::Ready(Err(spent(gw)));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.touch();
            if let Some(gw) = &this.gateway {
                let fit = gw.charge(n as u64, true) as usize;
                if fit < n {
                    // What did not fit is dropped: the budget is a hard cap, not a hint.
                    buf.set_filled(before + fit);
                    if fit == 0 {
                        return Poll::Ready(Err(spent(gw)));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut len = data.len();
        if let Some(gw) = &this.gateway {
            let room = gw.budget_room();
            if room == 0 && !data.is_empty() {
                gw.charge(1, false); // marks the budget spent
                return Poll::Ready(Err(spent(gw)));
            }
            len = len.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..len]))?;
        if n > 0 {
            this.activity.touch();
            if let Some(gw) = &this.gateway {
                gw.charge(n as u64, false);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let fits = self.gateway.as_ref().is_none_or(|gw| gw.budget_room() >= total as u64);
        if !fits {
            let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]).unwrap_or(&[]);
            return self.poll_write(cx, first);
        }
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.activity.touch();
            if let Some(gw) = &this.gateway {
                gw.charge(n as u64, false);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
