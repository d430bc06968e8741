use super::*;
use crate::testutil::TempDir;

#[test]
fn generated_keys_are_well_formed_and_distinct() {
    let a = generate_key().unwrap();
    let b = generate_key().unwrap();
    assert!(is_well_formed(&a), "{a}");
    assert_eq!(a.len(), 35);
    assert_ne!(a, b);
    assert!(!is_well_formed("sh_short"));
    assert!(!is_well_formed(&format!("sk_{}", &a[3..])));
    assert!(!is_well_formed(&format!("{}!", &a[..34])));
}

#[test]
fn ct_eq_compares_whole_hash() {
    let a = hash_key("x");
    let mut b = a;
    assert!(ct_eq(&a, &b));
    b[31] ^= 1;
    assert!(!ct_eq(&a, &b));
}

#[test]
fn tenant_names() {
    for ok in ["acme", "a", "team-1", "a.b_c", "0x"] {
        validate_tenant(ok).unwrap();
    }
    for bad in ["", "Acme", "-x", "a b", "a/b", &"x".repeat(65), "é"] {
        assert!(validate_tenant(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn admin_key_file_is_created_0600_and_reused() {
    let dir = TempDir::new("auth");
    let data = dir.path().join("data");
    let first = bootstrap_admin_key(&data, None).unwrap();
    let path = data.join(ADMIN_KEY_FILE);
    assert_eq!(first.source, AdminKeySource::Generated(path.clone()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(is_well_formed(key.trim()));
    assert_eq!(hash_key(key.trim()), first.hash);

    let second = bootstrap_admin_key(&data, None).unwrap();
    assert_eq!(second.source, AdminKeySource::File(path.clone()));
    assert_eq!(second.hash, first.hash);

    // The environment wins over the file.
    let env = bootstrap_admin_key(&data, Some("an-admin-key-from-env")).unwrap();
    assert_eq!(env.source, AdminKeySource::Env);
    assert_eq!(env.hash, hash_key("an-admin-key-from-env"));
    assert!(bootstrap_admin_key(&data, Some("short")).is_err());
}

#[test]
fn admin_key_file_readable_by_others_is_refused() {
    let dir = TempDir::new("auth");
    bootstrap_admin_key(dir.path(), None).unwrap();
    let path = dir.path().join(ADMIN_KEY_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(bootstrap_admin_key(dir.path(), None), Err(AuthError::InsecureKeyFile { .. })));
}

#[test]
fn admin_key_symlink_is_refused() {
    let dir = TempDir::new("auth");
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "sh_0123456789abcdef0123456789abcdef\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(ADMIN_KEY_FILE)).unwrap();
    assert!(bootstrap_admin_key(dir.path(), None).is_err());
}

#[tokio::test]
async fn authenticate_admin_created_and_revoked_keys() {
    let dir = TempDir::new("auth");
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let admin = bootstrap_admin_key(dir.path(), Some("admin-secret-0123456789")).unwrap();
    let auth = Authenticator::new(store.clone(), &admin);

    let t = auth.authenticate("admin-secret-0123456789").await.unwrap();
    assert!(t.is_admin());

    let (rec, secret) = auth.create_key("acme", Some("ci")).await.unwrap();
    assert!(is_well_formed(&secret));
    assert_eq!(store.get_key(&rec.id).unwrap().unwrap().hash, hash_key(&secret));
    let t = auth.authenticate(&secret).await.unwrap();
    assert_eq!(t, Tenant { name: "acme".into(), key_id: Some(rec.id.clone()) });
    assert!(!t.is_admin());

    // Forged: well-formed but unknown; malformed.
    assert!(matches!(auth.authenticate(&generate_key().unwrap()).await, Err(AuthError::Invalid)));
    assert!(matches!(auth.authenticate("nonsense").await, Err(AuthError::Invalid)));

    store.revoke_key(&rec.id).unwrap();
    assert!(matches!(auth.authenticate(&secret).await, Err(AuthError::Invalid)));

    assert!(matches!(auth.create_key("Bad Tenant", None).await, Err(AuthError::BadTenant)));
    assert!(matches!(auth.create_key("ok", Some("a\nb")).await, Err(AuthError::BadName)));
}

#[tokio::test]
async fn the_e2b_form_is_the_same_key() {
    let dir = TempDir::new("auth-e2b");
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let admin = bootstrap_admin_key(dir.path(), Some("admin-secret-0123456789")).unwrap();
    let auth = Authenticator::new(store.clone(), &admin);
    let (rec, secret) = auth.create_key("acme", None).await.unwrap();
    let e2b = e2b_form(&secret);
    assert!(e2b.starts_with("e2b_") && e2b[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(from_e2b_form(&e2b).as_deref(), Some(secret.as_str()));
    assert_eq!(auth.authenticate(&e2b).await.unwrap().key_id.as_deref(), Some(rec.id.as_str()));
    assert!(auth.authenticate(&e2b_form("admin-secret-0123456789")).await.unwrap().is_admin());
    // Not forms: odd length, upper case, non-hex, control bytes, empty; a forged one is unknown.
    for bad in ["e2b_", "e2b_6", "e2b_6A", "e2b_zz", "e2b_0a0d", "sh_x"] {
        assert_eq!(from_e2b_form(bad), None, "{bad}");
    }
    assert!(matches!(auth.authenticate(&format!("e2b_{}", "0".repeat(40))).await, Err(AuthError::Invalid)));
    store.revoke_key(&rec.id).unwrap();
    assert!(matches!(auth.authenticate(&e2b).await, Err(AuthError::Invalid)));
}
