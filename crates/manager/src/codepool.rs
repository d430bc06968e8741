//! The code interpreter's warm pool: sandboxes made ahead of time, each with its driver
//! and a Python kernel already up (the slow part: a kernel takes a second or more to
//! start), handed out when a caller creates a sandbox of the same shape.
//!
//! A pool is per tenant and per shape (the create request's policy, preset and
//! environment): a warm sandbox is the tenant's own from the start, made with exactly the
//! policy the caller asks for, so handing it out changes nothing but its deadline and
//! metadata. The first create of a shape is cold and starts filling that shape's pool to
//! `ManagerConfig::code_pool` sandboxes; each one handed out is replaced at once. Warm
//! sandboxes are listed like any other (metadata `safehouse.pool = warm`) and cost what
//! they hold (a kernel with numpy, pandas and matplotlib loaded: ~100-150 MB each);
//! `GET /v1/code/pool` shows them. A warm sandbox lives `WARM_LIFETIME_S`; one that
//! expired unclaimed is skipped (and replaced at the next create).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::{CreateRequest, Manager, ManagerError, SandboxInfo};

/// The metadata key marking a sandbox of the pool: `warm` until handed out.
pub const POOL_KEY: &str = "safehouse.pool";
/// How long a warm sandbox waits to be claimed.
pub const WARM_LIFETIME_S: u64 = 3600;

#[derive(Default)]
pub(crate) struct PoolState {
    pools: Mutex<HashMap<String, Pool>>,
}

struct Pool {
    tenant: String,
    label: String,
    /// What a warm sandbox of this pool is made from (no metadata, no creator).
    req: CreateRequest,
    ready: VecDeque<String>,
    warming: usize,
    hits: u64,
    misses: u64,
    last_error: Option<String>,
}

/// One pool, as `GET /v1/code/pool` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub tenant: String,
    /// What the pool's sandboxes are (the E2B template, or "policy").
    pub label: String,
    pub ready: Vec<String>,
    pub warming: usize,
    pub hits: u64,
    pub misses: u64,
    /// Memory the ready sandboxes hold now (their cgroups), in bytes.
    pub memory_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// Warm sandboxes kept per pool (`safehouse serve --code-pool N`); 0: no pool.
    pub size: usize,
    pub pools: Vec<PoolView>,
}

/// Everything in a request that makes one sandbox differ from another (its metadata and
/// deadline are set on a warm one when it is handed out).
fn shape_key(tenant: &str, req: &CreateRequest) -> String {
    let shape = serde_json::json!([
        tenant,
        req.policy,
        req.preset,
        req.env,
        req.template,
        req.storage,
        req.lifecycle,
        req.snapshot,
        req.volumes
    ]);
    shape.to_string()
}

impl Manager {
    pub fn code_pool_size(&self) -> usize {
        self.inner.cfg.code_pool
    }

    /// A sandbox for running code: a warm one of the same shape if the pool has one (its
    /// deadline and metadata set from `req`), else a new one; the pool of this shape is
    /// refilled either way. Returns whether it came warm.
    pub async fn create_for_code(
        &self,
        tenant: &str,
        req: CreateRequest,
        label: &str,
    ) -> Result<(SandboxInfo, bool), ManagerError> {
        let size = self.inner.cfg.code_pool;
        if size == 0 {
            return Ok((self.create(tenant, req).await?, false));
        }
        let key = shape_key(tenant, &req);
        loop {
            let id = {
                let mut pools = self.inner.codepool.pools.lock().unwrap_or_else(|e| e.into_inner());
                let pool = pools.entry(key.clone()).or_insert_with(|| Pool {
                    tenant: tenant.to_string(),
                    label: label.to_string(),
                    req: CreateRequest { metadata: BTreeMap::new(), created_by: None, ..req.clone() },
                    ready: VecDeque::new(),
                    warming: 0,
                    hits: 0,
                    misses: 0,
                    last_error: None,
                });
                match pool.ready.pop_front() {
                    Some(id) => Some(id),
                    None => {
                        pool.misses += 1;
                        None
                    }
                }
            };
            let Some(id) = id else {
                self.fill_pool(&key);
                return Ok((self.create(tenant, req).await?, false));
            };
            if !self.is_live(&id) {
                continue; // expired or killed while it waited
            }
            let info = self.claim(tenant, &id, &req).await;
            self.fill_pool(&key);
            match info {
                Ok(info) => {
                    if let Some(p) = self.inner.codepool.pools.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&key) {
                        p.hits += 1;
                    }
                    return Ok((info, true));
                }
                Err(_) => continue,
            }
        }
    }

    /// A warm sandbox becomes the caller's: deadline and metadata from `req`.
    async fn claim(&self, tenant: &str, id: &str, req: &CreateRequest) -> Result<SandboxInfo, ManagerError> {
        let timeout = req.timeout_s.unwrap_or(self.inner.cfg.default_timeout_s);
        let store = self.inner.store.clone();
        let (t, i, metadata) = (tenant.to_string(), id.to_string(), req.metadata.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ManagerError> {
            let mut rec = store
                .get_sandbox(&t, &i)
                .map_err(|e| ManagerError::Internal(e.to_string()))?
                .ok_or(ManagerError::NotFound)?;
            rec.metadata = metadata;
            store.update_sandbox(&rec).map_err(|e| ManagerError::Internal(e.to_string()))?;
            Ok(())
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))??;
        let info = self.set_timeout(tenant, id, timeout).await?;
        self.note(id, "code.pool.claimed", serde_json::json!({ "by": req.created_by }));
        Ok(info)
    }

    /// Starts making warm sandboxes until the pool of `key` holds `code_pool`.
    fn fill_pool(&self, key: &str) {
        let size = self.inner.cfg.code_pool;
        let (tenant, req, want) = {
            let mut pools = self.inner.codepool.pools.lock().unwrap_or_else(|e| e.into_inner());
            let Some(p) = pools.get_mut(key) else { return };
            p.ready.retain(|id| self.is_live(id));
            let want = size.saturating_sub(p.ready.len() + p.warming);
            p.warming += want;
            (p.tenant.clone(), p.req.clone(), want)
        };
        for _ in 0..want {
            let (mgr, key, tenant) = (self.clone(), key.to_string(), tenant.clone());
            let mut req = req.clone();
            req.metadata.insert(POOL_KEY.into(), "warm".into());
            req.timeout_s = Some(WARM_LIFETIME_S.min(self.inner.cfg.max_timeout_s));
            tokio::spawn(async move {
                let made = async {
                    let info = mgr.create(&tenant, req).await?;
                    if let Err(e) = mgr.warm_code(&tenant, &info.id, "python").await {
                        let _ = mgr.kill(&tenant, &info.id).await;
                        return Err(e);
                    }
                    Ok::<_, ManagerError>(info.id)
                }
                .await;
                let mut pools = mgr.inner.codepool.pools.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = pools.get_mut(&key) {
                    p.warming = p.warming.saturating_sub(1);
                    match made {
                        Ok(id) => p.ready.push_back(id),
                        Err(e) => p.last_error = Some(e.to_string()),
                    }
                }
            });
        }
    }

    /// The pools: what they hold and what it costs. `tenant`: only that tenant's.
    pub fn code_pool_status(&self, tenant: Option<&str>) -> PoolStatus {
        let views: Vec<(PoolView, Vec<String>)> = {
            let pools = self.inner.codepool.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .values()
                .filter(|p| tenant.is_none_or(|t| t == p.tenant))
                .map(|p| {
                    let ready: Vec<String> = p.ready.iter().filter(|id| self.is_live(id)).cloned().collect();
                    let view = PoolView {
                        tenant: p.tenant.clone(),
                        label: p.label.clone(),
                        ready: ready.clone(),
                        warming: p.warming,
                        hits: p.hits,
                        misses: p.misses,
                        memory_bytes: 0,
                        last_error: p.last_error.clone(),
                    };
                    (view, ready)
                })
                .collect()
        };
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pools = views
            .into_iter()
            .map(|(mut v, ids)| {
                v.memory_bytes = ids
                    .iter()
                    .filter_map(|id| live.get(id))
                    .filter_map(|l| {
                        let cg = l.cgroup.lock().unwrap_or_else(|e| e.into_inner());
                        cg.as_ref().and_then(|c| c.memory_current().ok())
                    })
                    .sum();
                v
            })
            .collect();
        PoolStatus { size: self.inner.cfg.code_pool, pools }
    }
}
