//! Log lines a sandbox can cause, rate-limited per call site: a flood from inside a sandbox
//! (a connection storm, a stream of bad requests) must not become a flood in the host's
//! logs. Each site allows a few lines per window; the first line after a window in which
//! lines were dropped says how many.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// One call site's budget: `per_window` lines every `window_ms`.
pub struct LogLimit {
    per_window: u32,
    window_ms: u64,
    window: AtomicU64,
    count: AtomicU32,
    dropped: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogLimit {
    pub const fn new(per_window: u32, window_ms: u64) -> LogLimit {
        LogLimit {
            per_window,
            window_ms,
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Some(lines dropped before this one) when this line may be written, None when not.
    pub fn allow(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64 / self.window_ms.max(1) + 1;
        if self.window.swap(now, Relaxed) != now {
            self.count.store(0, Relaxed);
        }
        if self.count.fetch_add(1, Relaxed) < self.per_window {
            Some(self.dropped.swap(0, Relaxed))
        } else {
            self.dropped.fetch_add(1, Relaxed);
            None
        }
    }
}

/// `warn_limited!("message {}", x)`: a `tracing::warn!` at most 5 times per 10 s from this
/// call site, with `dropped` counting the lines held back before it.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::loglimit::LogLimit = $crate::loglimit::LogLimit::new(5, 10_000);
        if let Some(dropped) = LIMIT.allow() {
            ::tracing::warn!(dropped, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_writes_a_few_lines_per_window_and_counts_the_rest() {
        let l = LogLimit::new(3, 60_000);
        assert_eq!((0..10).filter_map(|_| l.allow()).collect::<Vec<_>>(), vec![0, 0, 0]);
        assert_eq!(l.dropped.load(Relaxed), 7);
        // a new window: the first line carries the count
        l.window.store(0, Relaxed);
        assert_eq!(l.allow(), Some(7));
    }
}
