//! MCP sessions of the streamable HTTP transport: opened by `initialize` (the answer
//! carries `Mcp-Session-Id`), bound to the key that opened them (another key, even of the
//! same tenant, finds no such session), ended by `DELETE /mcp`, after an hour unused, or
//! when that key is revoked. Kept in memory: a restarted daemon answers an old
//! session id with 404 and the client initializes again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use safehouse_manager::auth::Tenant;

/// A session unused this long is forgotten (its sandboxes keep their own timeouts).
pub const IDLE_EXPIRY: Duration = Duration::from_secs(3600);
/// Most open sessions per tenant, and on the daemon.
pub const MAX_PER_TENANT: usize = 64;
pub const MAX_SESSIONS: usize = 4096;
/// Most sandboxes one session remembers to kill at its end.
const MAX_TRACKED: usize = 1024;

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// `mcp_` + 32 hex characters, sent back as `Mcp-Session-Id`.
    pub id: String,
    /// The tenant of the key that opened it; no other tenant can use it.
    pub tenant: String,
    /// The key that opened it (`None`: the bootstrap admin key); no other key can use it.
    pub key_id: Option<String>,
    /// The protocol version agreed at `initialize`.
    pub version: String,
    /// Keep the sandboxes this session created when it ends (`Safehouse-Keep-Sandboxes`).
    pub keep_sandboxes: bool,
    /// Sandboxes created through this session (killed when it ends unless kept).
    created: Mutex<Vec<String>>,
    last_used: Mutex<Instant>,
}

impl Session {
    /// Remembers a sandbox this session created.
    pub fn created(&self, sandbox: &str) {
        let mut c = self.created.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() < MAX_TRACKED {
            c.push(sandbox.to_string());
        }
    }

    /// Forgets a sandbox (it was killed through the session).
    pub fn forget(&self, sandbox: &str) {
        self.created.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| s != sandbox);
    }

    /// The sandboxes to kill at the end of the session.
    pub fn to_kill(&self) -> Vec<String> {
        if self.keep_sandboxes {
            return Vec::new();
        }
        self.created.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Whether `who` is the key that opened this session.
    fn belongs_to(&self, who: &Tenant) -> bool {
        self.tenant == who.name && self.key_id == who.key_id
    }
}

/// Why a session could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The tenant has `MAX_PER_TENANT` open.
    TenantFull,
    /// The daemon has `MAX_SESSIONS` open.
    DaemonFull,
}

/// Every open session.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Opens a session for the key `who` (forgetting idle ones first).
    pub fn open(&self, who: &Tenant, version: &str, keep_sandboxes: bool) -> Result<Arc<Session>, OpenError> {
        let tenant = who.name.as_str();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.idle_for() < IDLE_EXPIRY);
        if map.len() >= MAX_SESSIONS {
            return Err(OpenError::DaemonFull);
        }
        if map.values().filter(|s| s.tenant == tenant).count() >= MAX_PER_TENANT {
            return Err(OpenError::TenantFull);
        }
        let session = Arc::new(Session {
            id: new_session_id(),
            tenant: tenant.to_string(),
            key_id: who.key_id.clone(),
            version: version.to_string(),
            keep_sandboxes,
            created: Mutex::new(Vec::new()),
            last_used: Mutex::new(Instant::now()),
        });
        map.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The key's session `id`; another key's session is unknown, like an expired one.
    pub fn get(&self, who: &Tenant, id: &str) -> Option<Arc<Session>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(id).filter(|s| s.belongs_to(who) && s.idle_for() < IDLE_EXPIRY)?.clone();
        s.touch();
        Some(s)
    }

    /// Ends the key's session `id`, returning it.
    pub fn close(&self, who: &Tenant, id: &str) -> Option<Arc<Session>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(id).is_some_and(|s| s.belongs_to(who)) {
            return map.remove(id);
        }
        None
    }

    /// Ends every session the key `key_id` opened (it was revoked), returning how many.
    /// Their sandboxes are not killed: revoking a key ends its credentials, not the work
    /// (the tenant's other keys and the admin still reach the sandboxes).
    pub fn close_key(&self, key_id: &str) -> usize {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|_, s| s.key_id.as_deref() != Some(key_id));
        before - map.len()
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `mcp_` + 32 hex characters: 128 bits from the OS's CSPRNG (visible ASCII, as the
/// transport requires).
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the kernel's random source is available");
    let mut id = String::from("mcp_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, key: &str) -> Tenant {
        Tenant { name: tenant.into(), key_id: Some(key.into()) }
    }

    #[test]
    fn sessions_belong_to_their_tenant() {
        let s = Sessions::default();
        let (alice, bob) = (key("alice", "key_a"), key("bob", "key_b"));
        let a = s.open(&alice, "2025-06-18", false).unwrap();
        assert!(a.id.starts_with("mcp_") && a.id.len() == 36, "{}", a.id);
        assert!(s.get(&alice, &a.id).is_some());
        assert!(s.get(&bob, &a.id).is_none());
        assert!(s.close(&bob, &a.id).is_none());
        assert!(s.close(&alice, &a.id).is_some());
        assert!(s.get(&alice, &a.id).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_belong_to_their_key() {
        let s = Sessions::default();
        let (first, second) = (key("alice", "key_a"), key("alice", "key_c"));
        let admin = Tenant { name: "admin".into(), key_id: None };
        let a = s.open(&first, "2025-06-18", false).unwrap();
        let c = s.open(&second, "2025-06-18", false).unwrap();
        let root = s.open(&admin, "2025-06-18", false).unwrap();
        // The same tenant's other key does not find it.
        assert!(s.get(&second, &a.id).is_none());
        assert!(s.close(&second, &a.id).is_none());
        // Revoking the first key ends its sessions only.
        assert_eq!(s.close_key("key_a"), 1);
        assert!(s.get(&first, &a.id).is_none());
        assert!(s.get(&second, &c.id).is_some());
        assert!(s.get(&admin, &root.id).is_some());
        assert_eq!(s.close_key("key_a"), 0);
    }

    #[test]
    fn idle_sessions_expire() {
        let s = Sessions::default();
        let t = key("t", "key_t");
        let a = s.open(&t, "v", false).unwrap();
        let Some(long_ago) = Instant::now().checked_sub(IDLE_EXPIRY + Duration::from_secs(1)) else {
            return; // a host up for less than an hour cannot backdate
        };
        *a.last_used.lock().unwrap() = long_ago;
        assert!(s.get(&t, &a.id).is_none());
        s.open(&t, "v", false).unwrap();
        assert_eq!(s.len(), 1, "opening a session forgets the expired ones");
    }

    #[test]
    fn per_tenant_cap() {
        let s = Sessions::default();
        for i in 0..MAX_PER_TENANT {
            // Keys of one tenant share its cap.
            s.open(&key("t", &format!("key_{}", i % 2)), "2025-06-18", false).unwrap();
        }
        assert_eq!(s.open(&key("t", "key_0"), "2025-06-18", false).unwrap_err(), OpenError::TenantFull);
        s.open(&key("other", "key_o"), "2025-06-18", false).unwrap();
    }

    #[test]
    fn sandboxes_to_kill() {
        let s = Sessions::default();
        let t = key("t", "key_t");
        let a = s.open(&t, "v", false).unwrap();
        a.created("sb_1");
        a.created("sb_2");
        a.forget("sb_1");
        assert_eq!(a.to_kill(), vec!["sb_2".to_string()]);
        let kept = s.open(&t, "v", true).unwrap();
        kept.created("sb_3");
        assert!(kept.to_kill().is_empty());
    }
}
