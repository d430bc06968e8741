//! The byte budget (`network.egress_bytes`): every byte the gateway moves to or from the
//! outside is claimed here before it moves, so the cap is exact.
//!
//! Two amounts bound what may move: the policy's limit, and what the budget's owner has
//! granted so far. In one process (`safehouse run`, tests) the whole limit is granted at
//! once. In the gateway process the daemon hands out grants a slice at a time and counts
//! every byte granted as spent: a gateway process that dies (or is made to die) cannot have
//! moved more than it was granted, and a new one starts from what was granted before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;

/// Asks the owner for a larger grant (the gateway process sends a message to the daemon);
/// must not block. The answer comes back through [`Budget::grant`].
pub type GrantHook = Arc<dyn Fn() + Send + Sync>;

/// Why a claim found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent {
    pub limit: u64,
}

pub(crate) struct Budget {
    limit: Option<u64>,
    /// Bytes claimed (moved, or being moved right now).
    used: AtomicU64,
    /// Bytes the owner allows in all, never above `limit`.
    granted: AtomicU64,
    /// True once a claim found the limit reached.
    spent: AtomicBool,
    /// A grant request is outstanding.
    asked: AtomicBool,
    granted_more: Notify,
    ask: Option<GrantHook>,
}

impl Budget {
    /// `limit` None: no budget. `ask` None: everything is granted now. With `ask`, nothing is
    /// granted beyond `used` until [`Budget::grant`] says so.
    pub fn new(limit: Option<u64>, used: u64, ask: Option<GrantHook>) -> Budget {
        let granted = match (&ask, limit) {
            (None, Some(l)) => l,
            (None, None) => u64::MAX,
            (Some(_), _) => used,
        };
        Budget {
            limit,
            used: AtomicU64::new(used),
            granted: AtomicU64::new(granted),
            spent: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            granted_more: Notify::new(),
            ask,
        }
    }

    pub fn is_spent(&self) -> bool {
        self.spent.load(SeqCst)
    }

    /// Bytes claimed so far.
    pub fn used(&self) -> u64 {
        self.used.load(SeqCst)
    }

    /// The owner allows `total` bytes in all (never less than before; capped at the limit).
    pub fn grant(&self, total: u64) {
        let total = self.limit.map_or(total, |l| total.min(l));
        self.granted.fetch_max(total, SeqCst);
        self.asked.store(false, SeqCst);
        self.granted_more.notify_waiters();
    }

    /// Claims up to `want` bytes (at least 1) for a move about to happen; returns how many
    /// may move. Waits for a grant when the granted part is used up but the limit is not.
    /// Err once the limit is reached: the caller stops, and the budget counts as spent.
    /// Give back what did not move with [`Budget::refund`].
    pub async fn claim(&self, want: u64) -> Result<u64, Spent> {
        let Some(limit) = self.limit else { return Ok(want) };
        let want = want.max(1);
        loop {
            // Registered before the check, so a grant between the check and the wait wakes us.
            let notified = self.granted_more.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let used = self.used.load(SeqCst);
            if used >= limit {
                self.spent.store(true, SeqCst);
                return Err(Spent { limit });
            }
            let cap = self.granted.load(SeqCst).min(limit);
            if used < cap {
                let n = want.min(cap - used);
                if self.used.compare_exchange(used, used + n, SeqCst, SeqCst).is_ok() {
                    self.maybe_ask(used + n, cap, limit);
                    return Ok(n);
                }
                continue; // another connection claimed meanwhile
            }
            self.ask_now();
            notified.await;
        }
    }

    /// Returns `n` claimed bytes that did not move.
    pub fn refund(&self, n: u64) {
        if n > 0 && self.limit.is_some() {
            self.used.fetch_sub(n, SeqCst);
        }
    }

    /// Asks ahead when less than a quarter of the last grant is left, so a steady transfer
    /// rarely waits for the daemon.
    fn maybe_ask(&self, used: u64, cap: u64, limit: u64) {
        if cap < limit && cap - used < (cap / 4).max(64 << 10) {
            self.ask_now();
        }
    }

    fn ask_now(&self) {
        if let Some(ask) = &self.ask {
            if !self.asked.swap(true, SeqCst) {
                ask();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn without_an_owner_the_whole_limit_is_there() {
        let b = Budget::new(Some(100), 0, None);
        assert_eq!(b.claim(60).await, Ok(60));
        assert_eq!(b.claim(60).await, Ok(40));
        b.refund(10);
        assert_eq!(b.claim(60).await, Ok(10));
        assert!(!b.is_spent());
        assert_eq!(b.claim(1).await, Err(Spent { limit: 100 }));
        assert!(b.is_spent());
        let none = Budget::new(None, 0, None);
        assert_eq!(none.claim(u64::MAX).await, Ok(u64::MAX));
    }

    #[tokio::test]
    async fn with_an_owner_nothing_moves_beyond_the_grant() {
        let asks = Arc::new(AtomicUsize::new(0));
        let a = asks.clone();
        let b = Arc::new(Budget::new(Some(1 << 20), 1000, Some(Arc::new(move || _ = a.fetch_add(1, SeqCst)))));
        assert_eq!(b.used(), 1000);
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.claim(4096).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "moved bytes nobody granted");
        assert_eq!(asks.load(SeqCst), 1);
        b.grant(1000 + 512);
        assert_eq!(waiting.await.unwrap(), Ok(512));
        // the grant is capped at the limit; then the limit is the end
        b.grant(u64::MAX);
        assert_eq!(b.claim(u64::MAX).await, Ok((1 << 20) - 1512));
        assert_eq!(b.claim(1).await, Err(Spent { limit: 1 << 20 }));
    }
}
