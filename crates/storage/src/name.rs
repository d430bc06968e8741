use crate::StorageError;

/// Checks a layer, snapshot or volume name: it becomes one path component in the pool.
pub fn check_name(what: &'static str, name: &str) -> Result<(), StorageError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::BadName { what, name: name.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        for good in ["sb-0123", "a", "v.1_x", &"x".repeat(64)] {
            check_name("layer", good).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "-rf", "a/b", "a b", "é", &"x".repeat(65), "a\0"] {
            let err = check_name("volume", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid volume name"), "{bad:?}: {err}");
        }
    }
}
