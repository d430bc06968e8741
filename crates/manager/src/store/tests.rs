use super::*;
use crate::testutil::TempDir;

fn sandbox(id: &str, tenant: &str, meta: &[(&str, &str)]) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        tenant: tenant.into(),
        state: SandboxState::Running,
        created_at: now_rfc3339(),
        expires_at: "2030-01-01T00:00:00Z".into(),
        metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        preset: Some("python".into()),
        policy: Some(serde_json::json!({"version": 1})),
        agent_pid: Some(1234),
        agent_start_time: Some(987654321),
        cgroup: Some("/sys/fs/cgroup/safehouse/x".into()),
        socket_path: None,
        error: None,
        key_id: Some("key_aaaaaaaaaaaaaaaa".into()),
    }
}

#[test]
fn open_creates_schema_and_wal_and_reopens() {
    let dir = TempDir::new("store");
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let mode: String = store.lock().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop(store);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let store = Store::open(&data).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
}

#[test]
fn a_version_1_database_keeps_its_sandboxes() {
    // A database as the release before `key_id` left it: migration 1 and one sandbox.
    let dir = TempDir::new("store");
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL);
             INSERT INTO schema_version VALUES (1, '2026-01-01T00:00:00Z');
             INSERT INTO sandboxes (id, tenant, state, created_at, expires_at, metadata)
             VALUES ('sb_old', 'acme', 'running', '2026-01-01T00:00:00Z', '2030-01-01T00:00:00Z', '{\"a\":\"b\"}');",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let old = store.get_sandbox("acme", "sb_old").unwrap().expect("kept");
    assert_eq!((old.key_id.as_deref(), old.metadata.get("a").map(String::as_str)), (None, Some("b")));
    assert_eq!(old.info().created_by, None);
    // New rows record their key.
    let new = sandbox("sb_new", "acme", &[]);
    store.insert_sandbox(&new).unwrap();
    assert_eq!(store.get_sandbox("acme", "sb_new").unwrap().unwrap().info().created_by, new.key_id);
}

#[test]
fn refuses_newer_schema() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.path()).unwrap();
    store.lock().execute("INSERT INTO schema_version VALUES (999, 'x')", []).unwrap();
    drop(store);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::SchemaTooNew { found: 999, .. })));
}

#[test]
fn keys_roundtrip_and_revoke() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.path()).unwrap();
    let key = KeyRecord {
        id: "key_1".into(),
        tenant: "acme".into(),
        name: Some("ci".into()),
        hash: [7; 32],
        created_at: now_rfc3339(),
        revoked_at: None,
    };
    store.insert_key(&key).unwrap();
    assert!(matches!(store.insert_key(&key), Err(StoreError::Duplicate(_))));
    assert_eq!(store.key_by_hash(&[7; 32]).unwrap(), Some(key.clone()));
    assert_eq!(store.key_by_hash(&[8; 32]).unwrap(), None);
    assert_eq!(store.list_keys().unwrap(), vec![key.clone()]);
    assert!(store.revoke_key("key_1").unwrap());
    let revoked = store.get_key("key_1").unwrap().unwrap();
    let first = revoked.revoked_at.clone().unwrap();
    assert!(store.revoke_key("key_1").unwrap());
    assert_eq!(store.get_key("key_1").unwrap().unwrap().revoked_at, Some(first));
    assert!(!store.revoke_key("nope").unwrap());
}

#[test]
fn sandboxes_are_scoped_to_their_tenant() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.path()).unwrap();
    let a = sandbox("sb_a", "acme", &[("team", "red")]);
    store.insert_sandbox(&a).unwrap();
    assert!(matches!(store.insert_sandbox(&a), Err(StoreError::Duplicate(_))));
    assert_eq!(store.get_sandbox("acme", "sb_a").unwrap(), Some(a.clone()));
    assert_eq!(store.get_sandbox("other", "sb_a").unwrap(), None);
    assert!(store.list_sandboxes("other", &ListFilter::default()).unwrap().is_empty());
    // The admin tenant sees every tenant's.
    store.insert_sandbox(&sandbox("sb_b", "other", &[])).unwrap();
    assert_eq!(store.get_sandbox("admin", "sb_a").unwrap(), Some(a.clone()));
    let all: Vec<String> =
        store.list_sandboxes("admin", &ListFilter::default()).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(all, ["sb_a", "sb_b"]);
    assert_eq!(store.list_sandboxes("acme", &ListFilter::default()).unwrap(), [a]);
}

#[test]
fn list_filters_by_metadata_and_state() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.path()).unwrap();
    store.insert_sandbox(&sandbox("sb_1", "t", &[("team", "red"), ("env", "ci")])).unwrap();
    store.insert_sandbox(&sandbox("sb_2", "t", &[("team", "blue")])).unwrap();
    store.insert_sandbox(&sandbox("sb_3", "u", &[("team", "red")])).unwrap();
    let ids = |f: &ListFilter| store.list_sandboxes("t", f).unwrap().into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(&ListFilter::default()), vec!["sb_1", "sb_2"]);
    let mut f = ListFilter::default();
    f.metadata.insert("team".into(), "red".into());
    assert_eq!(ids(&f), vec!["sb_1"]);
    f.metadata.insert("env".into(), "prod".into());
    assert!(ids(&f).is_empty());

    assert!(store.set_sandbox_state("sb_2", SandboxState::Killed, None).unwrap());
    let running = ListFilter { state: Some(SandboxState::Running), ..Default::default() };
    assert_eq!(ids(&running), vec!["sb_1"]);
    let all_running: Vec<_> = store.list_running().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(all_running, vec!["sb_1", "sb_3"]);
}

#[test]
fn updates_state_expiry_and_whole_record() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.path()).unwrap();
    let mut sb = sandbox("sb_1", "t", &[]);
    store.insert_sandbox(&sb).unwrap();
    assert!(store.set_sandbox_state("sb_1", SandboxState::Failed, Some("agent died")).unwrap());
    assert!(store.set_sandbox_expiry("sb_1", "2031-01-01T00:00:00Z").unwrap());
    let got = store.get_sandbox("t", "sb_1").unwrap().unwrap();
    assert_eq!(got.state, SandboxState::Failed);
    assert_eq!(got.error.as_deref(), Some("agent died"));
    assert_eq!(got.expires_at, "2031-01-01T00:00:00Z");
    assert_eq!(got.info().pid, Some(1234));

    sb.socket_path = Some("/run/x.sock".into());
    sb.agent_start_time = Some(u64::MAX >> 1);
    assert!(store.update_sandbox(&sb).unwrap());
    assert_eq!(store.get_sandbox("t", "sb_1").unwrap(), Some(sb));
    assert!(!store.set_sandbox_state("nope", SandboxState::Killed, None).unwrap());
    assert!(store.delete_sandbox("sb_1").unwrap());
    assert!(!store.delete_sandbox("sb_1").unwrap());
}

#[tokio::test]
async fn blocking_runs_off_the_runtime() {
    let dir = TempDir::new("store");
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let v = store.blocking(|s| s.schema_version()).await.unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
}

#[test]
fn rfc3339_is_utc_seconds() {
    let t = time::macros::datetime!(2026-01-02 03:04:05.678 +02:00);
    assert_eq!(rfc3339(t), "2026-01-02T01:04:05Z");
}
