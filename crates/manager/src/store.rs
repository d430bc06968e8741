//! The daemon's state: an embedded SQLite database under `--data-dir`.
//!
//! One connection behind a mutex; every call is a short statement or two. Async callers
//! should run calls through [`Store::blocking`] (which uses `spawn_blocking`) or keep them
//! off hot paths. Schema changes are append-only migrations recorded in `schema_version`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::types::{ListFilter, SandboxInfo, SandboxState};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "safehouse.db";

/// Migrations, applied in order; index + 1 is the schema version they bring the database to.
/// Never edit a shipped entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: keys and sandboxes.
    "CREATE TABLE keys (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        name        TEXT,
        hash        BLOB NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
     );
     CREATE TABLE sandboxes (
        id                TEXT PRIMARY KEY,
        tenant            TEXT NOT NULL,
        state             TEXT NOT NULL,
        created_at        TEXT NOT NULL,
        expires_at        TEXT NOT NULL,
        metadata          TEXT NOT NULL DEFAULT '{}',
        preset            TEXT,
        policy            TEXT,
        agent_pid         INTEGER,
        agent_start_time  INTEGER,
        cgroup            TEXT,
        socket_path       TEXT,
        error             TEXT
     );
     CREATE INDEX sandboxes_tenant ON sandboxes(tenant, created_at);
     CREATE INDEX sandboxes_state ON sandboxes(state);",
    // 2: the key that created each sandbox (NULL: the bootstrap admin key, or a sandbox
    // created before this migration).
    "ALTER TABLE sandboxes ADD COLUMN key_id TEXT;",
    // 3: persistence (docs/persistence.md): what a resume needs besides the sandbox's row
    // (its environment, storage, lifecycle, lifetime), snapshots and volumes.
    "CREATE TABLE sandbox_persistence (
        id          TEXT PRIMARY KEY,
        env         TEXT NOT NULL DEFAULT '{}',
        storage     TEXT NOT NULL,
        lifecycle   TEXT NOT NULL DEFAULT '{}',
        timeout_s   INTEGER NOT NULL,
        volumes     TEXT NOT NULL DEFAULT '[]'
     );
     CREATE TABLE snapshots (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        sandbox_id  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        policy      TEXT,
        env         TEXT NOT NULL DEFAULT '{}',
        timeout_s   INTEGER NOT NULL
     );
     CREATE INDEX snapshots_tenant ON snapshots(tenant, created_at);
     CREATE TABLE volumes (
        tenant      TEXT NOT NULL,
        name        TEXT NOT NULL,
        key         TEXT NOT NULL UNIQUE,
        size        INTEGER NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (tenant, name)
     );",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this build knows ({known}); upgrade safehouse")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("a record with id {0} already exists")]
    Duplicate(String),
    #[error("store task failed: {0}")]
    Join(String),
}

/// An API key as stored: the secret itself is never kept, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub hash: [u8; 32],
    /// RFC 3339, UTC.
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Everything the daemon remembers about a sandbox, including what it needs to find the
/// sandbox's processes again after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub tenant: String,
    pub state: SandboxState,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: String,
    pub metadata: BTreeMap<String, String>,
    pub preset: Option<String>,
    /// The effective policy as JSON.
    pub policy: Option<serde_json::Value>,
    /// Host pid of the sandbox's agent.
    pub agent_pid: Option<i32>,
    /// The agent's start time (`/proc/PID/stat` field 22), so a recycled pid is not mistaken
    /// for the agent after a restart.
    pub agent_start_time: Option<u64>,
    pub cgroup: Option<String>,
    pub socket_path: Option<String>,
    pub error: Option<String>,
    /// The id of the API key that created it; `None` for the bootstrap admin key (and for
    /// sandboxes created before the store recorded it).
    pub key_id: Option<String>,
}

impl SandboxRecord {
    /// The public view of this record.
    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            state: self.state,
            created_at: self.created_at.clone(),
            expires_at: self.expires_at.clone(),
            metadata: self.metadata.clone(),
            preset: self.preset.clone(),
            pid: self.agent_pid,
            error: self.error.clone(),
            created_by: self.key_id.clone(),
            network: None,
            storage: None,
            lifecycle: None,
        }
    }
}

pub fn state_str(state: SandboxState) -> &'static str {
    match state {
        SandboxState::Running => "running",
        SandboxState::Frozen => "frozen",
        SandboxState::Killed => "killed",
        SandboxState::Expired => "expired",
        SandboxState::Failed => "failed",
        SandboxState::Paused => "paused",
    }
}

pub fn parse_state(s: &str) -> Option<SandboxState> {
    Some(match s {
        "running" => SandboxState::Running,
        "frozen" => SandboxState::Frozen,
        "killed" => SandboxState::Killed,
        "expired" => SandboxState::Expired,
        "failed" => SandboxState::Failed,
        "paused" => SandboxState::Paused,
        _ => return None,
    })
}

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const SANDBOX_COLUMNS: &str = "id, tenant, state, created_at, expires_at, metadata, preset, policy, \
     agent_pid, agent_start_time, cgroup, socket_path, error, key_id";

impl Store {
    /// Opens (creating if needed) `DATA_DIR/safehouse.db` and brings its schema up to date.
    /// The data directory is created with mode 0700.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // journal_mode returns a row, so it cannot go through execute_batch.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt { table: "pragma", reason: format!("journal_mode is {mode}, not wal") });
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")?;
        let store = Store { conn: Mutex::new(conn), path };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?)
    }

    /// Runs `f` on the blocking thread pool: the way async code should call the store.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StoreError::Join(e.to_string()))?
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (statements are
        // atomic), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)",
        )?;
        let current: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::SchemaTooNew { found: current, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![i as i64 + 1, now_rfc3339()],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    // ---- keys ----

    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        let res = conn.execute(
            "INSERT INTO keys (id, tenant, name, hash, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key.id, key.tenant, key.name, &key.hash[..], key.created_at, key.revoked_at],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(StoreError::Duplicate(key.id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The key whose SHA-256 is `hash`, revoked or not.
    pub fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT id, tenant, name, hash, created_at, revoked_at FROM keys WHERE hash = ?1",
                params![&hash[..]],
                key_from_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT id, tenant, name, hash, created_at, revoked_at FROM keys WHERE id = ?1",
                params![id],
                key_from_row,
            )
            .optional()?;
        row.transpose()
    }

    /// All keys, oldest first.
    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT id, tenant, name, hash, created_at, revoked_at FROM keys ORDER BY created_at, id")?;
        let rows = stmt.query_map([], key_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    /// Marks a key revoked. Returns false if no such key exists; revoking twice keeps the
    /// first revocation time and returns true.
    pub fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, now_rfc3339()],
        )?;
        Ok(n > 0)
    }

    // ---- sandboxes ----

    pub fn insert_sandbox(&self, sb: &SandboxRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        let res = conn.execute(
            &format!(
                "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            rusqlite::params_from_iter(sandbox_params(sb)?),
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(StoreError::Duplicate(sb.id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces every column of an existing sandbox (matched by id). Returns false if none.
    pub fn update_sandbox(&self, sb: &SandboxRecord) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE sandboxes SET tenant = ?2, state = ?3, created_at = ?4, expires_at = ?5, metadata = ?6, \
             preset = ?7, policy = ?8, agent_pid = ?9, agent_start_time = ?10, cgroup = ?11, socket_path = ?12, \
             error = ?13, key_id = ?14 WHERE id = ?1",
            rusqlite::params_from_iter(sandbox_params(sb)?),
        )?;
        Ok(n > 0)
    }

    /// Sets a sandbox's state (and its error, when given). Returns false if no such sandbox.
    pub fn set_sandbox_state(&self, id: &str, state: SandboxState, error: Option<&str>) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE sandboxes SET state = ?2, error = COALESCE(?3, error) WHERE id = ?1",
            params![id, state_str(state), error],
        )?;
        Ok(n > 0)
    }

    /// Sets many sandboxes' state (and error, when given) in one transaction (kill-all).
    /// Returns how many rows changed.
    pub fn set_sandboxes_state(
        &self,
        ids: &[&str],
        state: SandboxState,
        error: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare("UPDATE sandboxes SET state = ?2, error = COALESCE(?3, error) WHERE id = ?1")?;
            for id in ids {
                n += stmt.execute(params![id, state_str(state), error])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Sets a sandbox's deadline. Returns false if no such sandbox.
    pub fn set_sandbox_expiry(&self, id: &str, expires_at: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = conn.execute("UPDATE sandboxes SET expires_at = ?2 WHERE id = ?1", params![id, expires_at])?;
        Ok(n > 0)
    }

    /// The tenant's sandbox `id`; another tenant's sandbox is `None`, like a missing one.
    pub fn get_sandbox(&self, tenant: &str, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?1 AND (tenant = ?2 OR ?3)"),
                params![id, tenant, tenant == crate::auth::ADMIN_TENANT],
                sandbox_from_row,
            )
            .optional()?;
        row.transpose()
    }

    /// The tenant's sandboxes (the admin tenant: every tenant's) matching every metadata pair
    /// and the state (if given), oldest first.
    pub fn list_sandboxes(&self, tenant: &str, filter: &ListFilter) -> Result<Vec<SandboxRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE tenant = ?1 OR ?2 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map(params![tenant, tenant == crate::auth::ADMIN_TENANT], sandbox_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let sb = row??;
            if filter.state.is_some_and(|s| s != sb.state) {
                continue;
            }
            if filter.metadata.iter().all(|(k, v)| sb.metadata.get(k) == Some(v)) {
                out.push(sb);
            }
        }
        Ok(out)
    }

    /// Every tenant's running (and frozen) sandboxes: what a restarted daemon must re-adopt
    /// or clean up.
    pub fn list_running(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE state IN ('running', 'frozen') ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], sandbox_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    /// Forgets a sandbox. Returns false if it did not exist.
    pub fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        Ok(conn.execute("DELETE FROM sandboxes WHERE id = ?1", params![id])? > 0)
    }
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<Result<KeyRecord, StoreError>> {
    let hash: Vec<u8> = r.get(3)?;
    let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
        return Ok(Err(StoreError::Corrupt { table: "keys", reason: format!("hash of {} bytes", hash.len()) }));
    };
    Ok(Ok(KeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        hash,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    }))
}

fn sandbox_params(sb: &SandboxRecord) -> Result<Vec<Box<dyn rusqlite::ToSql>>, StoreError> {
    let metadata = serde_json::to_string(&sb.metadata)
        .map_err(|e| StoreError::Corrupt { table: "sandboxes", reason: e.to_string() })?;
    let policy = sb.policy.as_ref().map(|p| p.to_string());
    let start_time = sb.agent_start_time.map(|t| t as i64);
    Ok(vec![
        Box::new(sb.id.clone()),
        Box::new(sb.tenant.clone()),
        Box::new(state_str(sb.state)),
        Box::new(sb.created_at.clone()),
        Box::new(sb.expires_at.clone()),
        Box::new(metadata),
        Box::new(sb.preset.clone()),
        Box::new(policy),
        Box::new(sb.agent_pid),
        Box::new(start_time),
        Box::new(sb.cgroup.clone()),
        Box::new(sb.socket_path.clone()),
        Box::new(sb.error.clone()),
        Box::new(sb.key_id.clone()),
    ])
}

fn sandbox_from_row(r: &Row<'_>) -> rusqlite::Result<Result<SandboxRecord, StoreError>> {
    let corrupt = |reason: String| Ok(Err(StoreError::Corrupt { table: "sandboxes", reason }));
    let id: String = r.get(0)?;
    let state: String = r.get(2)?;
    let Some(state) = parse_state(&state) else {
        return corrupt(format!("{id}: unknown state {state:?}"));
    };
    let metadata: String = r.get(5)?;
    let metadata = match serde_json::from_str(&metadata) {
        Ok(m) => m,
        Err(e) => return corrupt(format!("{id}: metadata: {e}")),
    };
    let policy: Option<String> = r.get(7)?;
    let policy = match policy.map(|p| serde_json::from_str(&p)).transpose() {
        Ok(p) => p,
        Err(e) => return corrupt(format!("{id}: policy: {e}")),
    };
    let start_time: Option<i64> = r.get(9)?;
    Ok(Ok(SandboxRecord {
        id,
        tenant: r.get(1)?,
        state,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        metadata,
        preset: r.get(6)?,
        policy,
        agent_pid: r.get(8)?,
        agent_start_time: start_time.map(|t| t as u64),
        cgroup: r.get(10)?,
        socket_path: r.get(11)?,
        error: r.get(12)?,
        key_id: r.get(13)?,
    }))
}

/// Creates `dir` (and parents) if missing; a directory this creates gets mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::DataDir { path: dir.to_path_buf(), source })
}

/// Now, as RFC 3339 UTC with second precision (`2026-01-02T03:04:05Z`).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

mod persist;
pub use persist::{PersistRecord, SnapshotRecord, VolumeRecord};

#[cfg(test)]
mod tests;
