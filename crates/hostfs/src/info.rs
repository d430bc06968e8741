//! `FileInfo`, the API's description of one directory entry.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use safehouse_sys::files::{self as sys, FileStat};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device.
    Other,
}

impl FileType {
    pub(super) fn of(st: &FileStat) -> FileType {
        match st.file_type() {
            libc::S_IFREG => FileType::File,
            libc::S_IFDIR => FileType::Dir,
            libc::S_IFLNK => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

/// `{path, name, type, size, mode, mtime, symlink_target?}` (docs/api.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Absolute inside the sandbox.
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    pub size: u64,
    /// Permission bits, setuid/setgid/sticky included (`st_mode & 0o7777`).
    pub mode: u32,
    /// RFC 3339, UTC.
    pub mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// Owner and the other two times: not in the native API's shape, for the fronts whose
    /// shapes have them (the E2B front's volume entries).
    #[serde(skip)]
    pub owner: (u32, u32),
    #[serde(skip)]
    pub atime: String,
    #[serde(skip)]
    pub ctime: String,
}

impl FileInfo {
    pub(super) fn new(path: String, st: &FileStat, symlink_target: Option<String>) -> FileInfo {
        let name = match path.rsplit_once('/') {
            Some((_, "")) | None => "/".to_string(),
            Some((_, name)) => name.to_string(),
        };
        FileInfo {
            path,
            name,
            kind: FileType::of(st),
            size: st.size,
            mode: st.mode & 0o7777,
            mtime: rfc3339(st.mtime_sec, st.mtime_nsec),
            symlink_target,
            owner: (st.uid, st.gid),
            atime: rfc3339(st.atime_sec, st.atime_nsec),
            ctime: rfc3339(st.ctime_sec, st.ctime_nsec),
        }
    }

    /// Describes `name` in `dir` without following it; a symlink's target is read with
    /// `readlinkat` on the same directory.
    pub(super) fn at(dir: BorrowedFd<'_>, name: &CStr, path: String) -> std::io::Result<FileInfo> {
        let st = sys::fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)?;
        // On kernel filesystems (the sandbox's /proc above all) links are magic: read from
        // the host side they would name host paths (/proc/1/exe → the daemon's binary).
        let target = if st.file_type() == libc::S_IFLNK && super::resolve::check_data_fs(dir, &path).is_ok() {
            sys::readlinkat(dir, name).ok().map(|t| String::from_utf8_lossy(&t).into_owned())
        } else {
            None
        };
        Ok(FileInfo::new(path, &st, target))
    }
}

fn rfc3339(sec: i64, nsec: i64) -> String {
    let nanos = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_api_says() {
        let st = FileStat {
            dev: 1,
            ino: 2,
            mode: libc::S_IFLNK | 0o777,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 11,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 0,
            atime_sec: 1_700_000_000,
            atime_nsec: 0,
            ctime_sec: 1_700_000_000,
            ctime_nsec: 0,
        };
        let info = FileInfo::new("/workspace/l".into(), &st, Some("/etc/passwd".into()));
        let json = serde_json::to_value(&info).unwrap();
        pretty_assertions::assert_eq!(
            json,
            serde_json::json!({
                "path": "/workspace/l", "name": "l", "type": "symlink", "size": 11, "mode": 0o777,
                "mtime": "2023-11-14T22:13:20Z", "symlink_target": "/etc/passwd"
            })
        );
        let dir = FileInfo::new("/".into(), &FileStat { mode: libc::S_IFDIR | 0o755, ..st }, None);
        let json = serde_json::to_value(&dir).unwrap();
        assert_eq!((json["name"].as_str(), json["type"].as_str()), (Some("/"), Some("dir")));
        assert!(json.get("symlink_target").is_none());
    }
}
