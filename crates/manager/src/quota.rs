//! Per-tenant quotas: the one owner of what each tenant holds (running sandboxes, the sum of
//! their memory limits, the sum of their writable-layer caps) and of the tenant's rates
//! (creates, commands, events), so one noisy tenant cannot take the daemon from the others.
//!
//! The operator sets a default for every tenant but `admin` (`safehouse serve --quota`) and
//! per-tenant overrides (`--tenant-quota TENANT:...`, on top of the default; the admin tenant
//! is unlimited unless it has one). Over a quota is [`ManagerError::Quota`] (HTTP 429
//! `tenant_quota`), whose message names the quota, its value and what to do.
//!
//! The ledger is keyed by sandbox id, so each sandbox is charged once and released once:
//!
//! - **Charged** when a create (or fork, or resume) is admitted, before any work
//!   ([`Quotas::charge`]); a create that then fails gives it back (the [`Charge`] guard).
//! - **Paused**: its sandbox slot and memory are given back, its disk stays charged (the
//!   layer stays on disk) until it is killed ([`Quotas::pause`]); a resume charges the slot
//!   and memory again.
//! - **Released** when it is killed, expires or fails ([`Quotas::release`]); a second
//!   release of the same id finds nothing.
//! - **Adopted** after a daemon restart: every sandbox re-attached, and every paused one,
//!   counts again ([`Quotas::adopt`]), whatever the quotas are now.
//!
//! Rates are token buckets per tenant (capacity: the count of one period; refilled evenly
//! over the period), on the manager's monotonic clock (injected in tests).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use safehouse_policy::units::{format_size, parse_size};

use crate::ManagerError;

/// A rate: `count` per `period_s` seconds (1 or 60).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period_s: u64,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.period_s {
            60 => write!(f, "{}/min", self.count),
            _ => write!(f, "{}/s", self.count),
        }
    }
}

impl Rate {
    fn parse(text: &str) -> Result<Rate, String> {
        let (count, per) = text.split_once('/').ok_or_else(|| format!("{text:?}: a rate like 10/s or 600/min"))?;
        let count: u64 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1 && *n <= 1_000_000)
            .ok_or_else(|| format!("{text:?}: the count must be a whole number from 1 to 1000000"))?;
        let period_s = match per.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            _ => return Err(format!("{text:?}: per s or per min (10/s, 600/min)")),
        };
        Ok(Rate { count, period_s })
    }
}

/// What one tenant may hold and do; `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Running (and frozen) sandboxes; paused ones do not count.
    pub sandboxes: Option<u64>,
    /// Bytes: the sum of the running sandboxes' memory limits.
    pub memory: Option<u64>,
    /// Bytes: the sum of the writable-layer caps (`limits.disk`) of the running and paused
    /// sandboxes.
    pub disk: Option<u64>,
    /// Sandboxes created (forks included; resumes not).
    pub creates: Option<Rate>,
    /// Commands started through the API: run-to-completion, background processes, code runs.
    pub execs: Option<Rate>,
    /// Events the tenant's sandboxes cause (their execs, their network requests): streamed
    /// and audited up to this rate, dropped and counted past it.
    pub events: Option<Rate>,
}

/// The names `--quota` takes, in the order they are listed.
pub const QUOTA_NAMES: &str = "sandboxes, memory, disk, creates, execs, events";

impl QuotaLimits {
    /// Applies `NAME=VALUE,...` on top of these limits; `unlimited` lifts one.
    pub fn apply(&mut self, spec: &str) -> Result<(), String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: NAME=VALUE, where NAME is one of {QUOTA_NAMES}"))?;
            let (name, value) = (name.trim(), value.trim());
            let unlimited = value == "unlimited";
            let size = |what: &str| -> Result<Option<u64>, String> {
                if unlimited {
                    return Ok(None);
                }
                parse_size(value).map(Some).map_err(|e| format!("{what}={value}: {e}"))
            };
            let rate = || -> Result<Option<Rate>, String> {
                if unlimited {
                    return Ok(None);
                }
                Rate::parse(value).map(Some).map_err(|e| format!("{name}={e}"))
            };
            match name {
                "sandboxes" => {
                    self.sandboxes = if unlimited {
                        None
                    } else {
                        Some(value.parse().map_err(|_| format!("sandboxes={value}: a whole number of sandboxes"))?)
                    }
                }
                "memory" => self.memory = size("memory")?,
                "disk" => self.disk = size("disk")?,
                "creates" => self.creates = rate()?,
                "execs" => self.execs = rate()?,
                "events" => self.events = rate()?,
                _ => return Err(format!("{name:?} is not a quota; the quotas are {QUOTA_NAMES}")),
            }
        }
        Ok(())
    }

    pub fn is_unlimited(&self) -> bool {
        *self == QuotaLimits::default()
    }
}

/// The operator's quotas: a default for every tenant but `admin`, and per-tenant overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaConfig {
    pub default: QuotaLimits,
    /// Each tenant's limits in full (the default with the override applied).
    pub tenants: BTreeMap<String, QuotaLimits>,
}

impl QuotaConfig {
    /// From `--quota SPEC` (repeatable) and `--tenant-quota TENANT:SPEC` (repeatable; later
    /// ones for the same tenant add to earlier ones).
    pub fn parse(default: &[String], tenants: &[String]) -> Result<QuotaConfig, String> {
        let mut cfg = QuotaConfig::default();
        for spec in default {
            cfg.default.apply(spec).map_err(|e| format!("--quota: {e}"))?;
        }
        for t in tenants {
            let (tenant, spec) = t
                .split_once(':')
                .ok_or_else(|| format!("--tenant-quota {t:?}: TENANT:NAME=VALUE,... (t1:sandboxes=5,memory=4GiB)"))?;
            crate::auth::validate_tenant(tenant).map_err(|e| format!("--tenant-quota {t:?}: {e}"))?;
            let base = if tenant == crate::auth::ADMIN_TENANT { QuotaLimits::default() } else { cfg.default.clone() };
            let limits = cfg.tenants.entry(tenant.to_string()).or_insert(base);
            limits.apply(spec).map_err(|e| format!("--tenant-quota {tenant}: {e}"))?;
        }
        Ok(cfg)
    }

    /// The limits of `tenant`.
    pub fn limits(&self, tenant: &str) -> Option<&QuotaLimits> {
        match self.tenants.get(tenant) {
            Some(l) => Some(l),
            None if tenant == crate::auth::ADMIN_TENANT => None,
            None => Some(&self.default),
        }
    }
}

/// What one sandbox holds against its tenant's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    /// Its memory limit (bytes).
    pub memory: u64,
    /// Its writable layer's cap (bytes).
    pub disk: u64,
}

impl Need {
    /// What a sandbox of `policy` holds (its effective limits, defaults included).
    pub fn of(policy: &safehouse_policy::Policy) -> Need {
        let l = safehouse_policy::plan::resolve_limits(policy);
        Need { memory: l.memory.value, disk: l.disk }
    }
}

/// How a sandbox is being started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A new sandbox (a create or a fork): a create token, a slot, memory and disk.
    New,
    /// A paused sandbox resuming: a slot and memory again (its disk is still charged).
    Resume,
}

/// What a tenant holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub sandboxes: u64,
    pub memory: u64,
    pub disk: u64,
}

struct Entry {
    tenant: String,
    memory: u64,
    disk: u64,
    running: bool,
    /// Which charge made it (a failed start rolls back only its own).
    charge: u64,
}

/// A token bucket, full at first.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

impl Bucket {
    /// Takes one token at `now_ns`; else how long until one is there (ns).
    fn take(slot: &mut Option<Bucket>, rate: Rate, now_ns: u64) -> Result<(), u64> {
        let cap = rate.count as f64;
        let per_ns = rate.period_s as f64 * 1e9;
        let b = slot.get_or_insert(Bucket { tokens: cap, at_ns: now_ns });
        let dt = now_ns.saturating_sub(b.at_ns) as f64;
        b.tokens = (b.tokens + dt * cap / per_ns).min(cap);
        b.at_ns = now_ns;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) * per_ns / cap).ceil() as u64)
        }
    }
}

#[derive(Default)]
struct TenantState {
    usage: Usage,
    creates: Option<Bucket>,
    execs: Option<Bucket>,
    events: Option<Bucket>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    tenants: HashMap<String, TenantState>,
    next_charge: u64,
}

/// A clock in nanoseconds (monotonic).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The daemon's quota ledger and rate buckets.
pub struct Quotas {
    cfg: QuotaConfig,
    clock: Clock,
    state: Mutex<State>,
}

impl Quotas {
    pub fn new(cfg: QuotaConfig) -> Arc<Quotas> {
        Quotas::with_clock(cfg, Arc::new(safehouse_sys::monotonic_ns))
    }

    pub fn with_clock(cfg: QuotaConfig, clock: Clock) -> Arc<Quotas> {
        Arc::new(Quotas { cfg, clock, state: Mutex::default() })
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `tenant` holds now.
    pub fn usage(&self, tenant: &str) -> Usage {
        self.lock().tenants.get(tenant).map(|t| t.usage).unwrap_or_default()
    }

    /// Admits sandbox `id` of `tenant` holding `need`, or refuses with the quota it would
    /// break. The charge is given back when the returned guard is dropped uncommitted.
    pub fn charge(self: &Arc<Self>, tenant: &str, id: &str, need: Need, admit: Admit) -> Result<Charge, ManagerError> {
        let now = (self.clock)();
        let mut st = self.lock();
        let previous = st.entries.get(id).map(|e| (e.running, e.disk));
        if previous.is_some_and(|(running, _)| running) {
            // Already running (a resume that raced another): nothing more to hold.
            return Ok(Charge { quotas: self.clone(), id: id.to_string(), charge: None });
        }
        // A paused sandbox's disk is still charged; anything else charges its disk now.
        let disk = match previous {
            Some((_, disk)) => disk,
            None => need.disk,
        };
        let add_disk = if previous.is_some() { 0 } else { disk };
        if let Some(limits) = self.cfg.limits(tenant) {
            let t = st.tenants.entry(tenant.to_string()).or_default();
            check_holdings(tenant, limits, &t.usage, need.memory, add_disk)?;
            if admit == Admit::New {
                if let Some(rate) = limits.creates {
                    Bucket::take(&mut t.creates, rate, now).map_err(|wait| {
                        ManagerError::Quota(format!(
                            "tenant {tenant} creates sandboxes faster than its quota allows (quota creates={rate}): retry in {}, or {}",
                            wait_text(wait),
                            raise(tenant, &format!("creates={}", per_unit(rate)))
                        ))
                    })?;
                }
            }
        }
        st.next_charge += 1;
        let charge = st.next_charge;
        let t = st.tenants.entry(tenant.to_string()).or_default();
        t.usage.sandboxes += 1;
        t.usage.memory += need.memory;
        t.usage.disk += add_disk;
        st.entries.insert(
            id.to_string(),
            Entry { tenant: tenant.to_string(), memory: need.memory, disk, running: true, charge },
        );
        Ok(Charge { quotas: self.clone(), id: id.to_string(), charge: Some((charge, previous.is_some())) })
    }

    /// Sandbox `id` paused: its slot and memory are given back; its disk stays charged.
    pub fn pause(&self, id: &str) {
        let mut st = self.lock();
        let State { entries, tenants, .. } = &mut *st;
        let Some(e) = entries.get_mut(id).filter(|e| e.running) else { return };
        e.running = false;
        let memory = std::mem::take(&mut e.memory);
        if let Some(t) = tenants.get_mut(&e.tenant) {
            t.usage.sandboxes = t.usage.sandboxes.saturating_sub(1);
            t.usage.memory = t.usage.memory.saturating_sub(memory);
        }
    }

    /// Sandbox `id` ended (killed, expired, failed; or a paused one killed): everything it
    /// held is given back. Once: a second call finds nothing.
    pub fn release(&self, id: &str) {
        let mut st = self.lock();
        let Some(e) = st.entries.remove(id) else { return };
        if let Some(t) = st.tenants.get_mut(&e.tenant) {
            if e.running {
                t.usage.sandboxes = t.usage.sandboxes.saturating_sub(1);
            }
            t.usage.memory = t.usage.memory.saturating_sub(e.memory);
            t.usage.disk = t.usage.disk.saturating_sub(e.disk);
        }
    }

    /// After a daemon restart: sandbox `id` of `tenant` exists (running, or paused with its
    /// layer on disk) and counts, whatever the quotas are now (creates are refused until
    /// the tenant is under them again).
    pub fn adopt(&self, tenant: &str, id: &str, need: Need, running: bool) {
        let mut st = self.lock();
        if st.entries.contains_key(id) {
            return;
        }
        let memory = if running { need.memory } else { 0 };
        let t = st.tenants.entry(tenant.to_string()).or_default();
        t.usage.sandboxes += running as u64;
        t.usage.memory += memory;
        t.usage.disk += need.disk;
        st.entries
            .insert(id.to_string(), Entry { tenant: tenant.to_string(), memory, disk: need.disk, running, charge: 0 });
    }

    /// One command of `tenant` started through the API, or the refusal (quota `execs`).
    pub fn take_exec(&self, tenant: &str) -> Result<(), ManagerError> {
        let Some(rate) = self.cfg.limits(tenant).and_then(|l| l.execs) else { return Ok(()) };
        let now = (self.clock)();
        let mut st = self.lock();
        let t = st.tenants.entry(tenant.to_string()).or_default();
        Bucket::take(&mut t.execs, rate, now).map_err(|wait| {
            ManagerError::Quota(format!(
                "tenant {tenant} starts commands faster than its quota allows (quota execs={rate}): retry in {}, or {}",
                wait_text(wait),
                raise(tenant, &format!("execs={}", per_unit(rate)))
            ))
        })
    }

    /// Whether one more event of `tenant`'s sandboxes gets through (quota `events`).
    pub fn take_event(&self, tenant: &str) -> bool {
        let Some(rate) = self.cfg.limits(tenant).and_then(|l| l.events) else { return true };
        let now = (self.clock)();
        let mut st = self.lock();
        let t = st.tenants.entry(tenant.to_string()).or_default();
        Bucket::take(&mut t.events, rate, now).is_ok()
    }

    /// Gives back a charge whose start failed: a new sandbox's entry goes; a resumed one is
    /// paused again. Only if the entry is still this charge's.
    fn roll_back(&self, id: &str, charge: u64, was_paused: bool) {
        let ours = self.lock().entries.get(id).is_some_and(|e| e.charge == charge);
        if !ours {
            return;
        }
        if was_paused {
            self.pause(id);
        } else {
            self.release(id);
        }
    }
}

/// The memory and disk a tenant would hold with one more sandbox, against its quotas.
fn check_holdings(
    tenant: &str,
    limits: &QuotaLimits,
    usage: &Usage,
    memory: u64,
    disk: u64,
) -> Result<(), ManagerError> {
    if let Some(max) = limits.sandboxes {
        if usage.sandboxes + 1 > max {
            return Err(ManagerError::Quota(format!(
                "tenant {tenant} has {} of its {max} sandboxes running (quota sandboxes={max}): kill or pause some, or {}",
                usage.sandboxes,
                raise(tenant, "sandboxes=N")
            )));
        }
    }
    if let Some(max) = limits.memory {
        if usage.memory.saturating_add(memory) > max {
            return Err(ManagerError::Quota(format!(
                "tenant {tenant}'s running sandboxes hold {} of its {} of memory and this one asks for {} (quota memory={}): ask for less (limits.memory), kill or pause some, or {}",
                format_size(usage.memory),
                format_size(max),
                format_size(memory),
                format_size(max),
                raise(tenant, "memory=SIZE")
            )));
        }
    }
    if let Some(max) = limits.disk {
        if usage.disk.saturating_add(disk) > max {
            return Err(ManagerError::Quota(format!(
                "tenant {tenant}'s sandboxes hold {} of its {} of writable disk and this one asks for {} (quota disk={}): ask for less (limits.disk), kill some (paused ones keep their disk), or {}",
                format_size(usage.disk),
                format_size(max),
                format_size(disk),
                format_size(max),
                raise(tenant, "disk=SIZE")
            )));
        }
    }
    Ok(())
}

fn raise(tenant: &str, what: &str) -> String {
    format!("have the operator raise it (safehouse serve --tenant-quota {tenant}:{what})")
}

fn per_unit(rate: Rate) -> &'static str {
    if rate.period_s == 60 {
        "N/min"
    } else {
        "N/s"
    }
}

fn wait_text(ns: u64) -> String {
    let ms = ns.div_ceil(1_000_000).max(1);
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// A sandbox's quota charge while it starts: given back when dropped, unless committed.
pub struct Charge {
    quotas: Arc<Quotas>,
    id: String,
    /// The charge's number and whether the sandbox was paused before; None: nothing charged.
    charge: Option<(u64, bool)>,
}

impl Charge {
    /// The sandbox started: it holds the charge until it ends.
    pub fn commit(mut self) {
        self.charge = None;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((charge, was_paused)) = self.charge.take() {
            self.quotas.roll_back(&self.id, charge, was_paused);
        }
    }
}

impl crate::Manager {
    /// Admits a sandbox about to start: its `limits.nofile` within what it can set, and its
    /// tenant's quotas charged (a resume: its slot and memory again). Before any work.
    pub(crate) fn admit(
        &self,
        tenant: &str,
        policy: &safehouse_policy::Policy,
        id: &str,
        resume: bool,
    ) -> Result<Charge, ManagerError> {
        crate::limits::check_nofile(policy, self.inner.nofile_max)?;
        let admit = if resume { Admit::Resume } else { Admit::New };
        self.inner.quota.charge(tenant, id, Need::of(policy), admit)
    }

    /// Sandbox `id` stopped running as `state`: a paused one keeps its disk charged; any
    /// other end gives back everything it held.
    pub(crate) fn quota_ended(&self, id: &str, state: crate::SandboxState) {
        if state == crate::SandboxState::Paused {
            self.inner.quota.pause(id);
        } else {
            self.inner.quota.release(id);
        }
    }

    /// One command of `tenant` started through the API (quota `execs`).
    pub(crate) fn take_exec(&self, tenant: &str) -> Result<(), ManagerError> {
        self.inner.quota.take_exec(tenant)
    }

    /// After a restart: a sandbox found running (re-attached) or paused counts again.
    pub(crate) fn quota_adopt(&self, rec: &crate::store::SandboxRecord, running: bool) {
        let policy = rec.policy.clone().and_then(|p| serde_json::from_value::<safehouse_policy::Policy>(p).ok());
        let need = Need::of(&policy.unwrap_or_default());
        self.inner.quota.adopt(&rec.tenant, &rec.id, need, running);
    }

    /// What `tenant` holds now and its limits (None: unlimited).
    pub fn quota_usage(&self, tenant: &str) -> (Usage, Option<QuotaLimits>) {
        (self.inner.quota.usage(tenant), self.inner.quota.config().limits(tenant).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MIB: u64 = 1 << 20;

    fn cfg(default: &str, tenants: &[&str]) -> QuotaConfig {
        let tenants: Vec<String> = tenants.iter().map(|s| s.to_string()).collect();
        QuotaConfig::parse(&[default.to_string()], &tenants).unwrap()
    }

    /// A ledger on a clock the test moves.
    fn ledger(c: QuotaConfig) -> (Arc<Quotas>, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000_000_000));
        let n = now.clone();
        (Quotas::with_clock(c, Arc::new(move || n.load(Ordering::Relaxed))), now)
    }

    fn need(memory_mib: u64, disk_mib: u64) -> Need {
        Need { memory: memory_mib * MIB, disk: disk_mib * MIB }
    }

    fn refusal<T>(r: Result<T, ManagerError>) -> String {
        match r {
            Err(ManagerError::Quota(m)) => m,
            Err(e) => panic!("not a quota refusal: {e}"),
            Ok(_) => panic!("admitted"),
        }
    }

    #[test]
    fn parses_defaults_and_overrides() {
        let c = cfg(
            "sandboxes=10, memory=4GiB,disk=20GiB,creates=5/s,execs=600/min,events=1000/s",
            &["t1:sandboxes=2,execs=unlimited", "admin:sandboxes=100", "t1:memory=1GiB"],
        );
        let d = c.limits("anyone").unwrap();
        assert_eq!(d.sandboxes, Some(10));
        assert_eq!(d.memory, Some(4 << 30));
        assert_eq!(d.disk, Some(20 << 30));
        assert_eq!(d.creates, Some(Rate { count: 5, period_s: 1 }));
        assert_eq!(d.execs, Some(Rate { count: 600, period_s: 60 }));
        assert_eq!(d.events.unwrap().to_string(), "1000/s");
        let t1 = c.limits("t1").unwrap();
        assert_eq!((t1.sandboxes, t1.memory, t1.execs, t1.disk), (Some(2), Some(1 << 30), None, Some(20 << 30)));
        // The admin tenant is unlimited but for its own override.
        let admin = c.limits("admin").unwrap();
        assert_eq!(admin, &QuotaLimits { sandboxes: Some(100), ..Default::default() });
        assert!(QuotaConfig::default().limits("admin").is_none());
        assert!(QuotaConfig::default().limits("t1").unwrap().is_unlimited());
    }

    #[test]
    fn bad_specs_name_what_to_change() {
        let bad = |d: &str, t: &[&str]| {
            let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
            QuotaConfig::parse(&[d.to_string()], &t).unwrap_err()
        };
        assert!(bad("cpus=2", &[]).contains("\"cpus\" is not a quota; the quotas are sandboxes, memory"));
        assert!(bad("sandboxes", &[]).contains("NAME=VALUE"));
        assert!(bad("sandboxes=-1", &[]).contains("sandboxes=-1: a whole number"));
        assert!(bad("memory=lots", &[]).starts_with("--quota: memory=lots: "));
        assert!(bad("execs=5", &[]).contains("a rate like 10/s or 600/min"));
        assert!(bad("execs=5/h", &[]).contains("per s or per min"));
        assert!(bad("execs=0/s", &[]).contains("from 1 to 1000000"));
        assert!(bad("", &["sandboxes=1"]).contains("TENANT:NAME=VALUE"));
        assert!(bad("", &["Bad Tenant:sandboxes=1"]).contains("tenant must be"));
        assert!(bad("", &["t1:foo=1"]).starts_with("--tenant-quota t1: \"foo\" is not a quota"));
    }

    #[test]
    fn charge_release_once() {
        let (q, _) = ledger(cfg("sandboxes=2,memory=1GiB,disk=3GiB", &[]));
        q.charge("t1", "a", need(512, 1024), Admit::New).unwrap().commit();
        q.charge("t1", "b", need(256, 1024), Admit::New).unwrap().commit();
        assert_eq!(q.usage("t1"), Usage { sandboxes: 2, memory: 768 * MIB, disk: 2048 * MIB });
        let m = refusal(q.charge("t1", "c", need(64, 64), Admit::New));
        assert_eq!(
            m,
            "tenant t1 has 2 of its 2 sandboxes running (quota sandboxes=2): kill or pause some, or have the operator raise it (safehouse serve --tenant-quota t1:sandboxes=N)"
        );
        // Another tenant is unaffected.
        q.charge("t2", "x", need(512, 1024), Admit::New).unwrap().commit();
        // Released once: a second release (a kill racing an expiry) gives nothing back twice.
        q.release("a");
        q.release("a");
        assert_eq!(q.usage("t1"), Usage { sandboxes: 1, memory: 256 * MIB, disk: 1024 * MIB });
        q.release("b");
        assert_eq!(q.usage("t1"), Usage::default());
        assert_eq!(q.usage("t2"), Usage { sandboxes: 1, memory: 512 * MIB, disk: 1024 * MIB });
    }

    #[test]
    fn memory_and_disk_name_the_quota() {
        let (q, _) = ledger(cfg("memory=1GiB,disk=2GiB", &[]));
        q.charge("t1", "a", need(768, 1024), Admit::New).unwrap().commit();
        let m = refusal(q.charge("t1", "b", need(512, 64), Admit::New));
        assert!(
            m.starts_with("tenant t1's running sandboxes hold 768MiB of its 1GiB of memory and this one asks for 512MiB (quota memory=1GiB): ask for less (limits.memory)"),
            "{m}"
        );
        assert!(m.ends_with("--tenant-quota t1:memory=SIZE)"), "{m}");
        let m = refusal(q.charge("t1", "b", need(128, 2048), Admit::New));
        assert!(
            m.contains("hold 1GiB of its 2GiB of writable disk and this one asks for 2GiB (quota disk=2GiB)"),
            "{m}"
        );
        // What fits is admitted; the refusals charged nothing.
        q.charge("t1", "b", need(256, 1024), Admit::New).unwrap().commit();
        assert_eq!(q.usage("t1"), Usage { sandboxes: 2, memory: 1024 * MIB, disk: 2048 * MIB });
    }

    #[test]
    fn a_failed_start_gives_its_charge_back() {
        let (q, _) = ledger(cfg("sandboxes=1", &[]));
        {
            let _charge = q.charge("t1", "a", need(64, 64), Admit::New).unwrap();
            assert_eq!(q.usage("t1").sandboxes, 1);
        } // dropped uncommitted: the create failed
        assert_eq!(q.usage("t1"), Usage::default());
        q.charge("t1", "a", need(64, 64), Admit::New).unwrap().commit();
        assert_eq!(q.usage("t1").sandboxes, 1);
    }

    #[test]
    fn pause_keeps_disk_and_resume_charges_again() {
        let (q, _) = ledger(cfg("sandboxes=1,memory=512MiB,disk=2GiB", &[]));
        q.charge("t1", "a", need(512, 1024), Admit::New).unwrap().commit();
        q.pause("a");
        q.pause("a");
        assert_eq!(q.usage("t1"), Usage { sandboxes: 0, memory: 0, disk: 1024 * MIB });
        // The freed slot and memory serve another sandbox; the paused one's disk still counts.
        q.charge("t1", "b", need(512, 1024), Admit::New).unwrap().commit();
        let m = refusal(q.charge("t1", "c", need(1, 1), Admit::New));
        assert!(m.contains("quota sandboxes=1"), "{m}");
        // Resuming needs the slot and memory again, not more disk.
        assert!(refusal(q.charge("t1", "a", need(512, 1024), Admit::Resume)).contains("quota sandboxes=1"));
        q.release("b");
        q.charge("t1", "a", need(512, 1024), Admit::Resume).unwrap().commit();
        assert_eq!(q.usage("t1"), Usage { sandboxes: 1, memory: 512 * MIB, disk: 1024 * MIB });
        // A resume that fails leaves it paused, its disk still charged.
        q.pause("a");
        drop(q.charge("t1", "a", need(512, 1024), Admit::Resume).unwrap());
        assert_eq!(q.usage("t1"), Usage { sandboxes: 0, memory: 0, disk: 1024 * MIB });
        // Killing the paused sandbox gives the disk back.
        q.release("a");
        assert_eq!(q.usage("t1"), Usage::default());
    }

    #[test]
    fn restart_adoption_counts_what_survived() {
        let (q, _) = ledger(cfg("sandboxes=2,memory=1GiB,disk=2GiB", &[]));
        // A restarted daemon finds two running sandboxes and a paused one, over a quota
        // lowered meanwhile: they count, and creates are refused until they end.
        q.adopt("t1", "a", need(512, 512), true);
        q.adopt("t1", "b", need(512, 512), true);
        q.adopt("t1", "p", need(512, 1024), false);
        q.adopt("t1", "a", need(512, 512), true); // adopted once
        assert_eq!(q.usage("t1"), Usage { sandboxes: 2, memory: 1024 * MIB, disk: 2048 * MIB });
        assert!(refusal(q.charge("t1", "c", need(1, 1), Admit::New)).contains("quota sandboxes=2"));
        q.release("a");
        assert!(refusal(q.charge("t1", "c", need(1, 1024), Admit::New)).contains("quota disk=2GiB"));
        q.release("p");
        q.charge("t1", "c", need(256, 256), Admit::New).unwrap().commit();
        assert_eq!(q.usage("t1"), Usage { sandboxes: 2, memory: 768 * MIB, disk: 768 * MIB });
    }

    #[test]
    fn rates_are_token_buckets_on_the_clock() {
        let (q, now) = ledger(cfg("execs=5/s,creates=2/min", &["t2:execs=unlimited"]));
        for _ in 0..5 {
            q.take_exec("t1").unwrap();
        }
        let m = refusal(q.take_exec("t1"));
        assert_eq!(
            m,
            "tenant t1 starts commands faster than its quota allows (quota execs=5/s): retry in 200 ms, or have the operator raise it (safehouse serve --tenant-quota t1:execs=N/s)"
        );
        // Another tenant has its own bucket; an unlimited one none.
        q.take_exec("t3").unwrap();
        for _ in 0..100 {
            q.take_exec("t2").unwrap();
        }
        // A fifth of a second later, one more.
        now.fetch_add(200_000_000, Ordering::Relaxed);
        q.take_exec("t1").unwrap();
        assert!(q.take_exec("t1").is_err());
        // After a full second the bucket is full again, never fuller.
        now.fetch_add(10_000_000_000, Ordering::Relaxed);
        for _ in 0..5 {
            q.take_exec("t1").unwrap();
        }
        assert!(q.take_exec("t1").is_err());

        // Creates: per minute; a refused create (over another quota) takes no token.
        for id in ["a", "b"] {
            q.charge("t1", id, need(1, 1), Admit::New).unwrap().commit();
        }
        let m = refusal(q.charge("t1", "c", need(1, 1), Admit::New));
        assert!(
            m.starts_with(
                "tenant t1 creates sandboxes faster than its quota allows (quota creates=2/min): retry in 30.0 s"
            ),
            "{m}"
        );
        assert!(m.ends_with("t1:creates=N/min)"), "{m}");
        // A resume takes no create token.
        q.pause("a");
        q.charge("t1", "a", need(1, 1), Admit::Resume).unwrap().commit();
        now.fetch_add(30_000_000_000, Ordering::Relaxed);
        q.charge("t1", "c", need(1, 1), Admit::New).unwrap().commit();
    }

    #[test]
    fn events_past_the_rate_are_dropped() {
        let (q, now) = ledger(cfg("events=100/s", &[]));
        let through = (0..150).filter(|_| q.take_event("t1")).count();
        assert_eq!(through, 100);
        assert!(q.take_event("t2"));
        assert!(q.take_event("admin"));
        now.fetch_add(500_000_000, Ordering::Relaxed);
        assert_eq!((0..100).filter(|_| q.take_event("t1")).count(), 50);
    }

    #[test]
    fn the_admin_tenant_is_unlimited_unless_configured() {
        let (q, _) = ledger(cfg("sandboxes=0,execs=1/min", &[]));
        assert!(refusal(q.charge("t1", "a", need(1, 1), Admit::New)).contains("has 0 of its 0 sandboxes"));
        for i in 0..10 {
            q.charge("admin", &format!("s{i}"), need(1024, 1024), Admit::New).unwrap().commit();
            q.take_exec("admin").unwrap();
        }
        assert_eq!(q.usage("admin").sandboxes, 10);
        let (q, _) = ledger(cfg("", &["admin:sandboxes=1"]));
        q.charge("admin", "a", need(1, 1), Admit::New).unwrap().commit();
        assert!(refusal(q.charge("admin", "b", need(1, 1), Admit::New)).contains("--tenant-quota admin:sandboxes=N"));
    }
}
