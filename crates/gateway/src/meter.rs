//! When a connection last moved a byte, for idle timeouts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// When a connection last moved a byte, either side.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub fn touch(&self) {
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
