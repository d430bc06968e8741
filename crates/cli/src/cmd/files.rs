//! `safehouse files put|get|ls|rm`: move files in and out of a live sandbox. Transfers are
//! streamed both ways (no whole file in memory), so multi-gigabyte files work.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;

use super::client::{field, finish, print_json, print_table, sandbox_path, Client};

#[derive(Subcommand)]
pub enum FilesCommand {
    /// Upload LOCAL (a file, or - for stdin) to REMOTE; parents are created. A REMOTE
    /// ending in / gets LOCAL's file name
    Put {
        /// The sandbox
        id: String,
        local: String,
        remote: String,
        /// Print the new file's info as JSON
        #[arg(long)]
        json: bool,
    },
    /// Download REMOTE to LOCAL (a file or directory, or - for stdout)
    Get {
        /// The sandbox
        id: String,
        remote: String,
        local: String,
    },
    /// List a directory in the sandbox
    Ls {
        /// The sandbox
        id: String,
        remote: String,
        /// Levels to descend (1 = the directory's own entries; the daemon allows up to 16)
        #[arg(long, value_name = "N")]
        depth: Option<u32>,
        /// Print `{"entries": [...]}` as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a file (or, with -r, a directory tree) in the sandbox
    Rm {
        /// The sandbox
        id: String,
        remote: String,
        /// Remove directories and their contents
        #[arg(short = 'r', long)]
        recursive: bool,
    },
}

pub fn main(c: FilesCommand) -> i32 {
    finish(Client::from_env().and_then(|client| match c {
        FilesCommand::Put { id, local, remote, json } => put(&client, &id, &local, &remote, json),
        FilesCommand::Get { id, remote, local } => get(&client, &id, &remote, &local),
        FilesCommand::Ls { id, remote, depth, json } => ls(&client, &id, &remote, depth, json),
        FilesCommand::Rm { id, remote, recursive } => {
            let mut query = vec![("path", remote.as_str())];
            if recursive {
                query.push(("recursive", "1"));
            }
            client.delete(&sandbox_path(&id, "/fs"), &query)
        }
    }))
}

fn put(client: &Client, id: &str, local: &str, remote: &str, json: bool) -> Result<()> {
    let remote = if remote.ends_with('/') && local != "-" {
        let name = Path::new(local).file_name().and_then(|n| n.to_str()).context("LOCAL has no file name")?;
        format!("{remote}{name}")
    } else {
        remote.to_string()
    };
    let req = client
        .request("PUT", &sandbox_path(id, "/files"))
        .query("path", &remote)
        .set("Content-Type", "application/octet-stream");
    let resp = if local == "-" {
        // Unknown length: chunked transfer encoding.
        client.check(req.send(std::io::stdin().lock()))?
    } else {
        let file = File::open(local).with_context(|| format!("cannot open {local}"))?;
        let meta = file.metadata().with_context(|| format!("cannot stat {local}"))?;
        if meta.is_dir() {
            bail!("{local} is a directory; upload files one at a time (or a tar archive)");
        }
        // A regular file's length is known: send it, so the daemon can refuse an
        // over-quota upload before reading it.
        let req = if meta.is_file() { req.set("Content-Length", &meta.len().to_string()) } else { req };
        client.check(req.send(file))?
    };
    let info: Value = resp.into_json().unwrap_or(Value::Null);
    if json {
        print_json(&info);
    } else {
        let path = info.get("path").and_then(Value::as_str).unwrap_or(&remote);
        println!("{path} ({} bytes)", field(&info, "size"));
    }
    Ok(())
}

fn get(client: &Client, id: &str, remote: &str, local: &str) -> Result<()> {
    let resp = client.check(client.request("GET", &sandbox_path(id, "/files")).query("path", remote).call())?;
    let mut body = resp.into_reader();
    if local == "-" {
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut body, &mut out).context("download interrupted")?;
        out.flush()?;
        return Ok(());
    }
    let dest = destination(local, remote)?;
    // Written next to the destination and renamed at the end: an interrupted download never
    // leaves a truncated file under the real name.
    let partial = partial_name(&dest);
    let result = (|| -> Result<()> {
        let mut f = File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        copy(&mut body, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&partial, &dest).with_context(|| format!("cannot write {}", dest.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn copy(from: &mut dyn Read, to: &mut File) -> Result<u64> {
    std::io::copy(from, to).context("download interrupted")
}

/// LOCAL, or LOCAL/<remote file name> when LOCAL is a directory.
fn destination(local: &str, remote: &str) -> Result<PathBuf> {
    let local = PathBuf::from(local);
    if local.is_dir() {
        let name = Path::new(remote.trim_end_matches('/')).file_name().context("REMOTE has no file name")?;
        return Ok(local.join(name));
    }
    Ok(local)
}

fn partial_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.safehouse-partial"))
}

fn ls(client: &Client, id: &str, remote: &str, depth: Option<u32>, json: bool) -> Result<()> {
    let depth = depth.map(|d| d.to_string());
    let mut query = vec![("path", remote)];
    if let Some(d) = &depth {
        query.push(("depth", d.as_str()));
    }
    let list = client.get_json(&sandbox_path(id, "/fs/list"), &query)?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let empty = Vec::new();
    let entries = list.get("entries").and_then(Value::as_array).unwrap_or(&empty);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mode = e.get("mode").and_then(Value::as_u64).map_or("-".into(), |m| format!("{:04o}", m & 0o7777));
            // Names come from the sandbox: escape control characters so they cannot drive
            // the operator's terminal (AG-04).
            let mut path = printable(&field(e, "path"));
            if let Some(target) = e.get("symlink_target").and_then(Value::as_str) {
                path = format!("{path} -> {}", printable(target));
            }
            vec![field(e, "type"), mode, field(e, "size"), field(e, "mtime"), path]
        })
        .collect();
    print_table(&["TYPE", "MODE", "SIZE", "MTIME", "PATH"], &rows);
    Ok(())
}

/// `s` with control characters written as escapes (`\n`, `\u{1b}`).
fn printable(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
    }

    use super::*;

    #[test]
    fn partial_names() {
        assert_eq!(partial_name(Path::new("/tmp/out.bin")), PathBuf::from("/tmp/.out.bin.safehouse-partial"));
    }

    #[test]
    fn destinations() {
        let tmp = std::env::temp_dir();
        assert_eq!(destination(tmp.to_str().unwrap(), "/workspace/a.txt").unwrap(), tmp.join("a.txt"));
        assert_eq!(destination("/nonexistent/b", "/x/a").unwrap(), PathBuf::from("/nonexistent/b"));
    }
}
