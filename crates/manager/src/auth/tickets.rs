//! One-time tickets for WebSocket routes. A browser cannot put `Authorization` on a
//! WebSocket handshake, and a key in a URL would end up in history, logs and proxies. So a
//! page asks for a ticket with its key (`POST /v1/tickets`) and puts the ticket in the
//! WebSocket URL instead: it names one path, is good for [`TTL`], works once, and never
//! leaves the daemon's memory (only its hash is kept). The audit log records paths without
//! their query, so a ticket is not written there either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{hash_key, random_string, AuthError, Tenant, BASE62};

/// How long a ticket is good for.
pub const TTL: Duration = Duration::from_secs(30);
/// Unused tickets one tenant may hold at once.
const PER_TENANT: usize = 64;
/// Unused tickets held at once, all tenants together.
const TOTAL: usize = 4096;
const PREFIX: &str = "shw_";

struct Ticket {
    tenant: Tenant,
    path: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Tickets {
    open: Mutex<HashMap<[u8; 32], Ticket>>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.open.lock().map_or(0, |o| o.len());
        f.debug_struct("Tickets").field("open", &n).finish()
    }
}

/// The paths a ticket can be issued for: the attach WebSocket of a process.
pub fn ticket_path_ok(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/sandboxes/") else { return false };
    let mut parts = rest.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(id), Some("processes"), Some(pid), Some("attach"), None)
            if crate::ids::is_sandbox_id(id) && crate::ids::parse_pid(pid).is_some()
    )
}

impl Tickets {
    /// A new ticket for `tenant` to open `path` once, within [`TTL`].
    pub fn issue(&self, tenant: &Tenant, path: &str) -> Result<String, AuthError> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, t| t.expires > now);
        if open.len() >= TOTAL || open.values().filter(|t| t.tenant.name == tenant.name).count() >= PER_TENANT {
            return Err(AuthError::TooManyTickets);
        }
        let ticket = format!("{PREFIX}{}", random_string(BASE62, 32)?);
        open.insert(hash_key(&ticket), Ticket { tenant: tenant.clone(), path: path.to_string(), expires: now + TTL });
        Ok(ticket)
    }

    /// The tenant of `ticket` if it was issued for `path` and has not expired; the ticket
    /// is used up either way.
    pub fn redeem(&self, ticket: &str, path: &str) -> Result<Tenant, AuthError> {
        if !ticket.starts_with(PREFIX) || ticket.len() > 64 {
            return Err(AuthError::Invalid);
        }
        let t = self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash_key(ticket));
        match t {
            Some(t) if t.expires > Instant::now() && t.path == path => Ok(t.tenant),
            _ => Err(AuthError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Tenant {
        Tenant { name: name.into(), key_id: Some("key_x".into()) }
    }

    const PATH: &str = "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/processes/7/attach";

    #[test]
    fn a_ticket_opens_its_path_once() {
        let t = Tickets::default();
        let ticket = t.issue(&tenant("acme"), PATH).unwrap();
        assert!(ticket.starts_with("shw_") && ticket.len() == 36);
        assert_eq!(t.redeem(&ticket, PATH).unwrap(), tenant("acme"));
        assert!(matches!(t.redeem(&ticket, PATH), Err(AuthError::Invalid)), "used once");
    }

    #[test]
    fn another_path_or_a_forged_ticket_is_refused_and_burns_it() {
        let t = Tickets::default();
        let ticket = t.issue(&tenant("acme"), PATH).unwrap();
        let other = PATH.replace("/7/", "/8/");
        assert!(t.redeem(&ticket, &other).is_err());
        assert!(t.redeem(&ticket, PATH).is_err(), "a wrong try uses it up");
        assert!(t.redeem("shw_forged", PATH).is_err());
        assert!(t.redeem("sh_notaticketatall", PATH).is_err());
    }

    #[test]
    fn expired_tickets_are_refused() {
        let t = Tickets::default();
        let ticket = t.issue(&tenant("acme"), PATH).unwrap();
        t.open.lock().unwrap().values_mut().for_each(|x| x.expires = Instant::now() - Duration::from_millis(1));
        assert!(t.redeem(&ticket, PATH).is_err());
    }

    #[test]
    fn a_tenant_cannot_hoard_tickets() {
        let t = Tickets::default();
        for _ in 0..PER_TENANT {
            t.issue(&tenant("acme"), PATH).unwrap();
        }
        assert!(matches!(t.issue(&tenant("acme"), PATH), Err(AuthError::TooManyTickets)));
        t.issue(&tenant("other"), PATH).expect("another tenant is not affected");
    }

    #[test]
    fn only_attach_paths_take_tickets() {
        assert!(ticket_path_ok(PATH));
        for bad in [
            "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/processes/7/attach/",
            "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/processes/07/attach",
            "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/events",
            "/v1/sandboxes/nope/processes/7/attach",
            "/v1/kill-all",
            "/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaaaaaaaa/processes/7/attach?x=1",
        ] {
            assert!(!ticket_path_ok(bad), "{bad}");
        }
    }
}
