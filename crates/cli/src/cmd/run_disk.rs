//! `safehouse run --storage disk`: a throwaway writable layer in the storage pool of the
//! data dir, capped at the policy's `disk`, removed after the run.

use std::path::Path;

use anyhow::{Context, Result};
use safehouse_storage::{Kind, Pool, PoolOptions};

const PREFIX: &str = "run-";

/// A layer for one run; deleted when dropped.
pub struct RunLayer {
    pool: Pool,
    name: String,
    pub dir: String,
}

impl RunLayer {
    pub fn create(data_dir: &Path, cap: u64) -> Result<RunLayer> {
        let pool = Pool::open(data_dir, &PoolOptions::default_for(data_dir)).context("--storage disk")?;
        sweep(&pool);
        let name = format!("{PREFIX}{}-{:x}", safehouse_sys::getpid(), safehouse_sys::monotonic_ns());
        let dir = pool.create(Kind::Layer, &name, cap).context("--storage disk: create the run's layer")?;
        Ok(RunLayer { pool, name, dir: dir.to_string_lossy().into_owned() })
    }
}

impl Drop for RunLayer {
    fn drop(&mut self) {
        if let Err(e) = self.pool.remove(Kind::Layer, &self.name) {
            eprintln!("safehouse: {e}");
        }
    }
}

/// Removes the layers of runs that died without removing theirs (SIGKILL): `run-PID-*`
/// whose PID is gone. Best effort.
fn sweep(pool: &Pool) {
    for name in pool.list(Kind::Layer).unwrap_or_default() {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = pool.remove(Kind::Layer, &name);
        }
    }
}
