//! Persistence records: what a paused sandbox needs to come back, snapshots and volumes.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};
use crate::types::{Lifecycle, Storage};

/// What a resume needs besides the sandbox's own row.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistRecord {
    pub id: String,
    pub env: BTreeMap<String, String>,
    pub storage: Storage,
    pub lifecycle: Lifecycle,
    /// The lifetime it was created with: a resume starts it afresh.
    pub timeout_s: u64,
    /// The volumes it mounts (a resume mounts them again).
    pub volumes: Vec<crate::types::VolumeMount>,
}

/// A snapshot of a sandbox's filesystem (its files are the pool's `snapshots/ID`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SnapshotRecord {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub sandbox_id: String,
    pub created_at: String,
    /// The policy and environment of the sandbox it came from: a sandbox made from the
    /// snapshot gets them unless its create request says otherwise.
    #[serde(skip)]
    pub policy: Option<serde_json::Value>,
    #[serde(skip)]
    pub env: BTreeMap<String, String>,
    #[serde(skip)]
    pub timeout_s: u64,
}

/// A named volume of a tenant (its files are the pool's `volumes/KEY`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VolumeRecord {
    #[serde(skip)]
    pub tenant: String,
    pub name: String,
    /// The pool's name for it: names are per tenant, keys are unique.
    #[serde(skip)]
    pub key: String,
    pub size: u64,
    pub created_at: String,
}

fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, reason: e.to_string() }
}

fn json<T: serde::Serialize>(table: &'static str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt(table, e))
}

fn persist_from_row(r: &Row<'_>) -> rusqlite::Result<Result<PersistRecord, StoreError>> {
    let (id, env, storage, lifecycle, timeout_s, volumes): (String, String, String, String, i64, String) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
    let parsed = (|| {
        Ok(PersistRecord {
            env: serde_json::from_str(&env).map_err(|e| corrupt("sandbox_persistence", e))?,
            storage: serde_json::from_value(serde_json::Value::String(storage))
                .map_err(|e| corrupt("sandbox_persistence", e))?,
            lifecycle: serde_json::from_str(&lifecycle).map_err(|e| corrupt("sandbox_persistence", e))?,
            timeout_s: timeout_s.max(1) as u64,
            volumes: serde_json::from_str(&volumes).map_err(|e| corrupt("sandbox_persistence", e))?,
            id,
        })
    })();
    Ok(parsed)
}

fn snapshot_from_row(r: &Row<'_>) -> rusqlite::Result<Result<SnapshotRecord, StoreError>> {
    let policy: Option<String> = r.get(4)?;
    let env: String = r.get(5)?;
    let timeout_s: i64 = r.get(6)?;
    let (id, tenant, sandbox_id, created_at) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    Ok((|| {
        Ok(SnapshotRecord {
            id,
            tenant,
            sandbox_id,
            created_at,
            policy: policy.map(|p| serde_json::from_str(&p)).transpose().map_err(|e| corrupt("snapshots", e))?,
            env: serde_json::from_str(&env).map_err(|e| corrupt("snapshots", e))?,
            timeout_s: timeout_s.max(1) as u64,
        })
    })())
}

fn volume_from_row(r: &Row<'_>) -> rusqlite::Result<VolumeRecord> {
    let size: i64 = r.get(3)?;
    Ok(VolumeRecord { tenant: r.get(0)?, name: r.get(1)?, key: r.get(2)?, size: size as u64, created_at: r.get(4)? })
}

const SNAPSHOT_COLUMNS: &str = "id, tenant, sandbox_id, created_at, policy, env, timeout_s";
const VOLUME_COLUMNS: &str = "tenant, name, key, size, created_at";

impl Store {
    pub fn put_persistence(&self, p: &PersistRecord) -> Result<(), StoreError> {
        let storage = match p.storage {
            Storage::Memory => "memory",
            Storage::Disk => "disk",
        };
        self.lock().execute(
            "INSERT OR REPLACE INTO sandbox_persistence (id, env, storage, lifecycle, timeout_s, volumes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                p.id,
                json("sandbox_persistence", &p.env)?,
                storage,
                json("sandbox_persistence", &p.lifecycle)?,
                p.timeout_s as i64,
                json("sandbox_persistence", &p.volumes)?
            ],
        )?;
        Ok(())
    }

    pub fn get_persistence(&self, id: &str) -> Result<Option<PersistRecord>, StoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT id, env, storage, lifecycle, timeout_s, volumes FROM sandbox_persistence WHERE id = ?1",
            params![id],
            persist_from_row,
        )
        .optional()?
        .transpose()
    }

    /// Every sandbox whose writable layer is on disk, with its state (the pool's layers
    /// that should exist).
    pub fn list_paused(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id FROM sandboxes WHERE state = 'paused' ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every paused sandbox as (id, tenant): the metrics' disk series.
    pub fn paused_with_tenants(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, tenant FROM sandboxes WHERE state = 'paused' ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every tenant's volumes (the metrics' disk series).
    pub fn all_volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {VOLUME_COLUMNS} FROM volumes ORDER BY tenant, name"))?;
        let rows = stmt.query_map([], volume_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The paused sandboxes of `tenant` that mount its volume `name` (a resume mounts it
    /// again, so it may not go away meanwhile).
    pub fn paused_volume_users(&self, tenant: &str, name: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT s.id, p.volumes FROM sandboxes s JOIN sandbox_persistence p ON p.id = s.id \
             WHERE s.tenant = ?1 AND s.state = 'paused' ORDER BY s.id",
        )?;
        let rows = stmt.query_map(params![tenant], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut users = Vec::new();
        for row in rows {
            let (id, volumes) = row?;
            let volumes: Vec<crate::types::VolumeMount> =
                serde_json::from_str(&volumes).map_err(|e| corrupt("sandbox_persistence", e))?;
            if volumes.iter().any(|v| v.name == name) {
                users.push(id);
            }
        }
        Ok(users)
    }

    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        self.lock().execute(
            &format!("INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                s.id,
                s.tenant,
                s.sandbox_id,
                s.created_at,
                s.policy.as_ref().map(|p| p.to_string()),
                json("snapshots", &s.env)?,
                s.timeout_s as i64
            ],
        )?;
        Ok(())
    }

    /// A snapshot of `tenant` (the admin tenant: any).
    pub fn get_snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let conn = self.lock();
        conn.query_row(
            &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?1 AND (tenant = ?2 OR ?3)"),
            params![id, tenant, tenant == crate::auth::ADMIN_TENANT],
            snapshot_from_row,
        )
        .optional()?
        .transpose()
    }

    pub fn list_snapshots(&self, tenant: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE tenant = ?1 OR ?2 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map(params![tenant, tenant == crate::auth::ADMIN_TENANT], snapshot_from_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM snapshots WHERE id = ?1", params![id])? > 0)
    }

    pub fn insert_volume(&self, v: &VolumeRecord) -> Result<(), StoreError> {
        let res = self.lock().execute(
            &format!("INSERT INTO volumes ({VOLUME_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![v.tenant, v.name, v.key, v.size as i64, v.created_at],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(StoreError::Duplicate(v.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A volume of `tenant`, by name (tenants never see each other's volumes).
    pub fn get_volume(&self, tenant: &str, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE tenant = ?1 AND name = ?2"),
                params![tenant, name],
                volume_from_row,
            )
            .optional()?)
    }

    pub fn list_volumes(&self, tenant: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare(&format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE tenant = ?1 ORDER BY name"))?;
        let rows = stmt.query_map(params![tenant], volume_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_volume(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM volumes WHERE tenant = ?1 AND name = ?2", params![tenant, name])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SandboxState;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "safehouse-persist-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn persistence_snapshots_and_volumes_round_trip() {
        let (s, dir) = store();
        let p = PersistRecord {
            id: "sb_1".into(),
            env: [("A".to_string(), "b".to_string())].into(),
            storage: Storage::Disk,
            lifecycle: Lifecycle {
                on_timeout: crate::types::OnTimeout::Pause,
                auto_resume: true,
                idle_timeout_s: Some(60),
            },
            timeout_s: 300,
            volumes: vec![crate::types::VolumeMount { name: "data".into(), path: "/data".into(), read_only: true }],
        };
        s.put_persistence(&p).unwrap();
        assert_eq!(s.get_persistence("sb_1").unwrap(), Some(p));
        assert_eq!(s.get_persistence("sb_2").unwrap(), None);

        let snap = SnapshotRecord {
            id: "snap_1".into(),
            tenant: "t1".into(),
            sandbox_id: "sb_1".into(),
            created_at: "2026-12-07T10:00:00Z".into(),
            policy: Some(serde_json::json!({"version": 1})),
            env: BTreeMap::new(),
            timeout_s: 300,
        };
        s.insert_snapshot(&snap).unwrap();
        assert_eq!(s.get_snapshot("t1", "snap_1").unwrap(), Some(snap.clone()));
        assert_eq!(s.get_snapshot("t2", "snap_1").unwrap(), None, "another tenant's snapshot is not found");
        assert_eq!(s.list_snapshots("t2").unwrap(), vec![]);
        assert!(s.delete_snapshot("snap_1").unwrap());

        let v = VolumeRecord {
            tenant: "t1".into(),
            name: "data".into(),
            key: "k1".into(),
            size: 1 << 20,
            created_at: "x".into(),
        };
        s.insert_volume(&v).unwrap();
        assert!(matches!(s.insert_volume(&v), Err(StoreError::Duplicate(_))));
        let other = VolumeRecord { tenant: "t2".into(), key: "k2".into(), ..v.clone() };
        s.insert_volume(&other).unwrap();
        assert_eq!(s.get_volume("t1", "data").unwrap(), Some(v));
        assert_eq!(s.list_volumes("t2").unwrap(), vec![other]);
        assert!(s.delete_volume("t1", "data").unwrap());
        assert_eq!(s.get_volume("t1", "data").unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn paused_sandboxes_hold_their_volumes() {
        let (s, dir) = store();
        let mount =
            |name: &str| crate::types::VolumeMount { name: name.into(), path: "/data".into(), read_only: false };
        for (id, tenant, state, vols) in [
            ("sb_p1", "t1", SandboxState::Paused, vec![mount("data"), mount("other")]),
            ("sb_p2", "t1", SandboxState::Paused, vec![mount("other")]),
            ("sb_k1", "t1", SandboxState::Killed, vec![mount("data")]),
            ("sb_p3", "t2", SandboxState::Paused, vec![mount("data")]),
        ] {
            s.insert_sandbox(&crate::store::SandboxRecord {
                id: id.into(),
                tenant: tenant.into(),
                state,
                created_at: "2026-12-07T10:00:00Z".into(),
                expires_at: "2026-12-07T11:00:00Z".into(),
                metadata: BTreeMap::new(),
                preset: None,
                policy: None,
                agent_pid: None,
                agent_start_time: None,
                cgroup: None,
                socket_path: None,
                error: None,
                key_id: None,
            })
            .unwrap();
            s.put_persistence(&PersistRecord {
                id: id.into(),
                env: BTreeMap::new(),
                storage: Storage::Disk,
                lifecycle: Lifecycle::default(),
                timeout_s: 60,
                volumes: vols,
            })
            .unwrap();
        }
        assert_eq!(s.paused_volume_users("t1", "data").unwrap(), vec!["sb_p1".to_string()]);
        assert_eq!(s.paused_volume_users("t1", "other").unwrap(), vec!["sb_p1".to_string(), "sb_p2".to_string()]);
        assert_eq!(s.paused_volume_users("t2", "other").unwrap(), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(dir);
    }
}
