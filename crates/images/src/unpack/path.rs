//! Entry names of a layer archive, reduced to components that stay inside the layer.
//!
//! A leading `/` is dropped (the entry is taken relative to the layer's root, as Docker
//! and umoci do); `.` and empty components vanish; a `..` component refuses the whole
//! layer, since no well-formed image has one and it is the classic way out.

/// Longest path and component the unpacker accepts (Linux's own limits).
pub const MAX_PATH: usize = 4096;
pub const MAX_NAME: usize = 255;

/// The components of `raw`, or why the entry is refused.
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.len() > MAX_PATH {
        return Err(format!("an entry name is {} bytes long (at most {MAX_PATH})", raw.len()));
    }
    let mut out = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(format!("entry {} climbs out of the layer with '..'", show(raw))),
            c if c.len() > MAX_NAME => {
                return Err(format!("entry {} has a component longer than {MAX_NAME} bytes", show(raw)))
            }
            c if c.contains(&0) => return Err(format!("entry {} contains a NUL byte", show(raw))),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A printable, bounded rendering of an entry name for messages.
pub fn show(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(200)]);
    let mut s = format!("{:?}", text);
    if raw.len() > 200 {
        s.push('…');
    }
    s
}

/// `a/b/c` from components (for openat2, which takes a path).
pub fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    if v.is_empty() {
        v.push(b'.');
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Result<Vec<String>, String> {
        components(s.as_bytes()).map(|v| v.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect())
    }

    #[test]
    fn normal_and_absolute_paths_stay_inside() {
        assert_eq!(comps("usr/bin/sh").unwrap(), ["usr", "bin", "sh"]);
        assert_eq!(comps("./usr//bin/./sh/").unwrap(), ["usr", "bin", "sh"]);
        assert_eq!(comps("/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(comps("///").unwrap(), Vec::<String>::new());
        assert_eq!(comps("./").unwrap(), Vec::<String>::new());
        assert_eq!(comps("a/..b/c..").unwrap(), ["a", "..b", "c.."]);
    }

    #[test]
    fn dotdot_anywhere_is_refused() {
        for p in ["../x", "a/../../x", "a/..", "/..", "./../etc/passwd"] {
            let e = comps(p).unwrap_err();
            assert!(e.contains("climbs out of the layer"), "{p}: {e}");
        }
    }

    #[test]
    fn limits() {
        assert!(comps(&"a".repeat(256)).unwrap_err().contains("longer than 255"));
        assert!(comps(&"a/".repeat(2049)).unwrap_err().contains("at most 4096"));
        assert!(components(b"a\0b").unwrap_err().contains("NUL"));
    }

    #[test]
    fn join_paths() {
        assert_eq!(join(&[b"a", b"b"]), b"a/b");
        assert_eq!(join(&[]), b".");
    }
}
