//! Key revocation as it happens: every credential derived from an API key (a long-lived
//! stream, an MCP session, an E2B access token in use) holds a [`Lease`] on that key, and
//! [`Revocations::revoke`] ends them all at once.
//!
//! A key is checked against the store when a request arrives; what the request then opens
//! can outlive that check by hours (an event stream, a WebSocket, a proxied connection).
//! The lease is how such a handler learns that its key is gone: it selects on
//! [`Lease::revoked`] next to its own work and closes with a reason when that resolves.
//!
//! Only keys in the database can be revoked (through `DELETE /v1/keys/{id}`, in this
//! process); the bootstrap admin key has no id and its leases never end. Keys revoked
//! before the daemon started fail at authentication, so no lease is ever taken on them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::Tenant;

/// What a front runs when a key is revoked, with the key's id (MCP ends its sessions).
pub type Observer = Arc<dyn Fn(&str) + Send + Sync>;

/// The keys revoked since the daemon started, a generation that moves on each revocation
/// so waiting leases wake up and look, and the fronts' observers.
pub struct Revocations {
    revoked: Mutex<HashSet<String>>,
    generation: watch::Sender<u64>,
    observers: Mutex<Vec<Observer>>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations { revoked: Mutex::default(), generation: watch::channel(0).0, observers: Mutex::default() }
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("revoked", &self.revoked).finish_non_exhaustive()
    }
}

impl Revocations {
    /// Ends every lease on `key_id`, now and for any lease taken later, and tells the
    /// observers before returning.
    pub fn revoke(&self, key_id: &str) {
        // The set first, then the wake-up: a lease that wakes always finds the key in it.
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).insert(key_id.to_string());
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        let observers = self.observers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for observe in observers {
            observe(key_id);
        }
    }

    /// Runs `observer` on every later revocation (a front ending what it keeps per key).
    pub fn observe(&self, observer: Observer) {
        self.observers.lock().unwrap_or_else(|e| e.into_inner()).push(observer);
    }

    /// Whether `key_id` was revoked while this daemon ran.
    pub fn is_revoked(&self, key_id: &str) -> bool {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).contains(key_id)
    }

    /// A lease on the key `tenant` authenticated with.
    pub fn lease(self: &Arc<Self>, tenant: &Tenant) -> Lease {
        Lease { key_id: tenant.key_id.clone(), hub: Arc::clone(self), rx: self.generation.subscribe() }
    }
}

/// A handle on the key a request authenticated with: cheap to clone, carried in the
/// request's extensions by the guard (and the E2B data plane) for handlers that outlive
/// the request.
#[derive(Debug, Clone)]
pub struct Lease {
    key_id: Option<String>,
    hub: Arc<Revocations>,
    rx: watch::Receiver<u64>,
}

impl Lease {
    /// The key's id; `None` for the bootstrap admin key.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Whether the key has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.key_id.as_deref().is_some_and(|k| self.hub.is_revoked(k))
    }

    /// Resolves once the key is revoked (at once if it already is); never for the admin key.
    /// Cancel-safe: select on it as often as needed.
    pub async fn revoked(&self) {
        let Some(key) = self.key_id.as_deref() else { return std::future::pending().await };
        let mut rx = self.rx.clone();
        loop {
            // Mark the generation seen before looking, so a revocation between the look
            // and the wait still wakes the wait.
            rx.borrow_and_update();
            if self.hub.is_revoked(key) {
                return;
            }
            if rx.changed().await.is_err() {
                // The hub is gone with the daemon: nothing will be revoked any more.
                return std::future::pending().await;
            }
        }
    }
}

/// The message every revoked credential ends with.
pub const REVOKED_MESSAGE: &str = "the API key this was opened with has been revoked";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tenant(key: Option<&str>) -> Tenant {
        Tenant { name: "t".into(), key_id: key.map(str::to_string) }
    }

    #[tokio::test]
    async fn a_lease_ends_with_its_key_only() {
        let hub = Arc::new(Revocations::default());
        let a = hub.lease(&tenant(Some("key_a")));
        let b = hub.lease(&tenant(Some("key_b")));
        let admin = hub.lease(&tenant(None));
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.revoked().await }
        });
        tokio::task::yield_now().await;
        hub.revoke("key_a");
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the lease ended").unwrap();
        assert!(a.is_revoked());
        assert!(!b.is_revoked() && !admin.is_revoked());
        // The other key's lease and the admin's stay open.
        for lease in [&b, &admin] {
            assert!(tokio::time::timeout(Duration::from_millis(50), lease.revoked()).await.is_err());
        }
    }

    #[tokio::test]
    async fn a_lease_taken_after_the_revocation_is_already_over() {
        let hub = Arc::new(Revocations::default());
        hub.revoke("key_a");
        let late = hub.lease(&tenant(Some("key_a")));
        assert!(late.is_revoked());
        tokio::time::timeout(Duration::from_secs(1), late.revoked()).await.expect("ends at once");
    }

    #[tokio::test]
    async fn many_revocations_wake_every_waiter() {
        let hub = Arc::new(Revocations::default());
        let leases: Vec<Lease> = (0..50).map(|i| hub.lease(&tenant(Some(&format!("key_{i}"))))).collect();
        let waiters: Vec<_> = leases.iter().cloned().map(|l| tokio::spawn(async move { l.revoked().await })).collect();
        for i in 0..50 {
            hub.revoke(&format!("key_{i}"));
        }
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w).await.expect("every lease ended").unwrap();
        }
    }
}
