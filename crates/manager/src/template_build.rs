//! Template builds through the API (`POST /v1/templates`): a build context (a tar, as
//! `docker build` sends one) unpacked by the image store's hostile-archive unpacker, then
//! `safehouse template build` of this same binary run on it, its output as events
//! (`template.build.*` under the build's id, `tb_...`) on the admin's event stream.
//!
//! The build is the CLI's, not a second implementation: every RUN step in a sandbox under
//! the build policy, steps cached, the same store (this daemon's data dir).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::images::TemplateInfo;
use crate::types::ManagerError;
use crate::Manager;

/// Builds running at once (each RUN step is a sandbox; the machine's cores are the limit).
pub const MAX_BUILDS: usize = 2;
/// The largest build context accepted (the tar as sent, and unpacked).
pub const MAX_CONTEXT_BYTES: u64 = 1 << 30;
/// Lines of a failed build's output kept for its error.
const TAIL_LINES: usize = 20;

/// What `POST /v1/templates` asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The template's name.
    pub tag: String,
    /// The Dockerfile's path inside the context (default `Dockerfile`).
    pub dockerfile: String,
    pub no_cache: bool,
    pub build_args: Vec<(String, String)>,
}

/// A build that was started: its id names its events.
#[derive(Debug, Clone, Serialize)]
pub struct BuildStarted {
    pub build_id: String,
    pub tag: String,
}

#[derive(Default)]
pub(crate) struct Builds {
    running: AtomicUsize,
}

/// One running build's slot, given back when the build ends however it ends.
struct Slot(Arc<crate::Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.builds.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BuildRequest {
    /// Checks the names before anything is written.
    pub fn check(&self) -> Result<(), ManagerError> {
        safehouse_images::store::check_name(&self.tag).map_err(|e| ManagerError::Invalid(format!("tag: {e}")))?;
        let d = &self.dockerfile;
        if d.is_empty() || d.starts_with('/') || d.split('/').any(|c| c == "..") || d.contains('\0') {
            return Err(ManagerError::Invalid(format!(
                "dockerfile {d:?}: give a relative path inside the build context, e.g. Dockerfile"
            )));
        }
        for (k, _) in &self.build_args {
            if k.is_empty() || k.contains('=') {
                return Err(ManagerError::Invalid(format!("build_arg {k:?}: write KEY=VALUE")));
            }
        }
        Ok(())
    }
}

impl Manager {
    /// Takes a build slot and names the build: its id and where its context tar goes
    /// (under the image store's tmp/, removed when the build ends).
    pub fn reserve_build(&self) -> Result<(String, PathBuf), ManagerError> {
        let running = self.inner.builds.running.fetch_add(1, Ordering::Relaxed);
        if running >= MAX_BUILDS {
            self.inner.builds.running.fetch_sub(1, Ordering::Relaxed);
            return Err(ManagerError::Capacity(format!(
                "{running} template builds are running (at most {MAX_BUILDS}); try again when one ends"
            )));
        }
        let id = crate::ids::build_id();
        let dir = self.inner.cfg.data_dir.join("images").join("tmp");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.inner.builds.running.fetch_sub(1, Ordering::Relaxed);
            return Err(ManagerError::Internal(format!("create {}: {e}", dir.display())));
        }
        Ok((id.clone(), dir.join(format!("{id}.tar"))))
    }

    /// Gives back a slot `reserve_build` took when the build never started.
    pub fn release_build(&self, tar: &Path) {
        let _ = std::fs::remove_file(tar);
        self.inner.builds.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Unpacks the context in `tar` and runs the build (a slot taken by `reserve_build`).
    /// The returned task ends with the template, or with the error naming the failed step
    /// and the last lines of its output; the events say the same as it goes.
    pub async fn build_template(
        &self,
        id: String,
        tar: PathBuf,
        req: BuildRequest,
    ) -> tokio::task::JoinHandle<Result<TemplateInfo, ManagerError>> {
        let slot = Slot(self.inner.clone());
        let mgr = self.clone();
        self.inner.events.register(&id, crate::auth::ADMIN_TENANT);
        self.note(&id, "template.build.started", json!({ "tag": req.tag, "dockerfile": req.dockerfile }));
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = mgr.run_build(&id, &tar, &req).await;
            match &result {
                Ok(t) => mgr.note(
                    &id,
                    "template.build.finished",
                    json!({ "tag": t.name, "digest": t.digest, "seconds": started.elapsed().as_secs_f64() }),
                ),
                Err(e) => mgr.note(&id, "template.build.failed", json!({ "tag": req.tag, "error": e.to_string() })),
            }
            mgr.inner.events.retire(&id);
            drop(slot);
            result
        })
    }

    async fn run_build(&self, id: &str, tar: &Path, req: &BuildRequest) -> Result<TemplateInfo, ManagerError> {
        let ctx = tar.with_extension("ctx");
        let (t, c) = (tar.to_path_buf(), ctx.clone());
        let unpacked = tokio::task::spawn_blocking(move || unpack_context(&t, &c))
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let _ = std::fs::remove_file(tar);
        let result = match unpacked {
            Ok(()) => self.run_cli_build(id, &ctx, req).await,
            Err(e) => Err(e),
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&ctx)).await;
        result
    }

    async fn run_cli_build(&self, id: &str, ctx: &Path, req: &BuildRequest) -> Result<TemplateInfo, ManagerError> {
        let dockerfile = ctx.join(&req.dockerfile);
        if !dockerfile.is_file() {
            return Err(ManagerError::Invalid(format!(
                "the build context has no file {:?}; put the Dockerfile in the tar or name it with dockerfile=",
                req.dockerfile
            )));
        }
        let exe = std::env::current_exe().map_err(|e| ManagerError::Internal(format!("find this binary: {e}")))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["template", "build", "--quiet", "--tag", &req.tag, "-f"])
            .arg(&dockerfile)
            .arg("--data-dir")
            .arg(&self.inner.cfg.data_dir)
            .arg(ctx);
        if req.no_cache {
            cmd.arg("--no-cache");
        }
        for (k, v) in &req.build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| ManagerError::Internal(format!("start the build: {e}")))?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let mut tail: std::collections::VecDeque<String> = Default::default();
        let mut lines_out = out.map(|o| BufReader::new(o).lines());
        let mut lines_err = err.map(|e| BufReader::new(e).lines());
        loop {
            let line = tokio::select! {
                l = async { lines_err.as_mut().unwrap().next_line().await }, if lines_err.is_some() => match l {
                    Ok(Some(l)) => l,
                    _ => { lines_err = None; continue }
                },
                l = async { lines_out.as_mut().unwrap().next_line().await }, if lines_out.is_some() => match l {
                    Ok(Some(l)) => l,
                    _ => { lines_out = None; continue }
                },
                else => break,
            };
            // Step lines ("Step 2/5 : RUN ...") and notes; rate-limited like every event.
            self.inner.events.emit(id, "template.build.log", json!({ "line": line }));
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        let status = child.wait().await.map_err(|e| ManagerError::Internal(format!("wait for the build: {e}")))?;
        if !status.success() {
            let text: Vec<String> = tail.into_iter().collect();
            return Err(ManagerError::Invalid(format!(
                "the build of {} failed (exit status {}): {}",
                req.tag,
                status.code().map_or("killed".to_string(), |c| c.to_string()),
                text.join("\n")
            )));
        }
        self.template(&req.tag).await
    }
}

/// The context tar (plain, gzip or zstd) into `dest`, by the store's unpacker: no path
/// leaves `dest`, no device node or setuid bit survives, sizes and entries capped.
fn unpack_context(tar: &Path, dest: &Path) -> Result<(), ManagerError> {
    use std::os::unix::fs::DirBuilderExt;
    let bad = |what: String| ManagerError::Invalid(format!("the build context: {what}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|e| ManagerError::Internal(format!("create {}: {e}", dest.display())))?;
    let file = std::fs::File::open(tar).map_err(|e| ManagerError::Internal(format!("open the context: {e}")))?;
    let input = safehouse_images::compress::decompress(file).map_err(|e| bad(e.to_string()))?;
    let dir = std::fs::File::open(dest).map_err(|e| ManagerError::Internal(format!("open {}: {e}", dest.display())))?;
    let limits = safehouse_images::unpack::Limits { max_bytes: MAX_CONTEXT_BYTES, ..Default::default() };
    use std::os::fd::AsFd;
    safehouse_images::unpack::unpack(input, dir.as_fd(), safehouse_images::unpack::IdShift::Caller, limits)
        .map(|_| ())
        .map_err(|reason| bad(format!("{reason}; send a tar (optionally gzip or zstd) of the directory")))
}
