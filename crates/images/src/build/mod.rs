//! `safehouse template build`: a Dockerfile becomes a template in the store.
//!
//! Each instruction is a step on the state built so far (its layers and config). RUN
//! runs in a safehouse sandbox on that state ([`StepRunner`], the CLI's: the build
//! policy, the gateway to the package registries) with its writable layer in a
//! directory of the store's tmp/ (a capped tmpfs as root); what it changed is captured
//! as a layer ([`layer::capture`]) and unpacked by the same hostile-layer rules as a
//! pulled one. COPY/ADD make a layer of context files directly; ENV, WORKDIR, USER,
//! LABEL, CMD, ENTRYPOINT change the config only.
//!
//! Steps are cached by (parent, instruction, inputs): a key chained from the base
//! image's digest through every step's instruction text, its variables, and for
//! COPY/ADD a digest of the files copied. A hit reuses the layers and config the step
//! produced before, so a rebuild with nothing changed runs no sandbox at all.
//!
//! Logs: every RUN step's output goes to `images/logs/<template>/step-<N>.log` (and to
//! the caller's progress); a failed step's error names its Dockerfile line and log.

pub mod context;
pub mod dockerfile;
pub mod layer;
pub mod registries;

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Seek};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::RunConfig;
use crate::digest::{Digest, Hasher, HashingWriter};
use crate::error::{ImageError, Result};
use crate::oci;
use crate::progress::{Event, Progress};
use crate::root::{self, Layers};
use crate::store::{ImageRecord, Kind, LayerRecord, Store};
use crate::unpack::Limits;
use dockerfile::{Line, Step};
use safehouse_policy::plan::ImageRoot;

/// What a RUN step asks of the runner.
pub struct RunStep<'a> {
    /// The state so far, as the root.
    pub root: &'a ImageRoot,
    /// The step's writable layer: a directory the sandbox mounts in place of its tmpfs
    /// (`RunSpec::disk_layer`); the step's changes are read from its `upper/`.
    pub writable: &'a Path,
    pub argv: &'a [String],
    /// Build arguments (ARG) in effect, on top of the image's environment.
    pub env: &'a [(String, String)],
    /// Where the step's output goes (the runner also shows it to the user).
    pub log: &'a Path,
    /// Dockerfile line, for the runner's messages.
    pub line: usize,
}

/// Runs build steps in sandboxes and fetches base images: the CLI's.
pub trait StepRunner {
    /// Runs one RUN step; its exit status, or why the sandbox could not run.
    fn run(&mut self, step: &RunStep<'_>) -> std::result::Result<i32, String>;
    /// Fetches a base image not in the store yet (a pull from its registry).
    fn pull(&mut self, reference: &str) -> std::result::Result<ImageRecord, String>;
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    pub no_cache: bool,
    /// The cap on a RUN step's writable layer (root mode: a tmpfs of this size).
    pub disk: u64,
    pub limits: Limits,
}

/// What the build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub record: ImageRecord,
    pub steps: usize,
    pub cached: usize,
    /// Whether the writable layers' cap was enforced (root: a capped tmpfs).
    pub disk_capped: bool,
}

/// A step that failed: its line, what failed, and its log (RUN).
fn step_error(line: &Line, index: usize, total: usize, reason: impl Into<String>, log: Option<&Path>) -> ImageError {
    let mut msg =
        format!("step {}/{} (Dockerfile line {}: {}) {}", index + 1, total, line.line, line.text, reason.into());
    if let Some(l) = log {
        msg.push_str(&format!("; its log: {}", l.display()));
    }
    ImageError::Build(msg)
}

/// The build state after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    layers: Vec<LayerRecord>,
    config: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    state: State,
    /// The instruction, for people reading the cache.
    instruction: String,
}

fn empty_config() -> Value {
    let p = crate::oci::Platform::host();
    json!({"architecture": p.arch, "os": p.os, "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
}

fn cfg_mut(state: &mut State) -> &mut serde_json::Map<String, Value> {
    if !state.config.get("config").map(Value::is_object).unwrap_or(false) {
        state.config["config"] = json!({});
    }
    state.config["config"].as_object_mut().expect("an object, set above")
}

fn env_of(state: &State) -> Vec<(String, String)> {
    state.config["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|v| v.as_str()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
        })
        .unwrap_or_default()
}

fn set_env(state: &mut State, k: &str, v: &str) {
    let mut env = env_of(state);
    env.retain(|(n, _)| n != k);
    env.push((k.to_string(), v.to_string()));
    cfg_mut(state).insert("Env".into(), Value::from(env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()));
}

fn history(state: &mut State, created_by: &str, empty: bool) {
    if !state.config["history"].is_array() {
        state.config["history"] = json!([]);
    }
    let mut h = json!({"created_by": created_by, "comment": "safehouse template build"});
    if empty {
        h["empty_layer"] = json!(true);
    }
    state.config["history"].as_array_mut().expect("an array, set above").push(h);
}

fn push_layer(state: &mut State, l: LayerRecord) {
    if !state.config["rootfs"]["diff_ids"].is_array() {
        state.config["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    state.config["rootfs"]["diff_ids"].as_array_mut().expect("an array, set above").push(json!(l.diff_id.as_str()));
    state.layers.push(l);
}

fn chain(parent: &Digest, parts: &[&str]) -> Digest {
    let mut h = Hasher::new();
    h.update(parent.as_str().as_bytes());
    for p in parts {
        h.update(b"\n");
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finish()
}

/// The variables a step sees: the image's environment, then the ARGs in effect.
fn vars_of(state: &State, args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> = args.clone();
    for (k, val) in env_of(state) {
        v.insert(k, val);
    }
    v
}

impl Store {
    fn cache_dir(&self) -> PathBuf {
        self.root().join("build-cache")
    }

    fn cache_get(&self, key: &Digest) -> Option<State> {
        let bytes = std::fs::read(self.cache_dir().join(key.hex())).ok()?;
        let e: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        // A layer garbage-collected since makes the entry stale.
        e.state.layers.iter().all(|l| self.has_layer(&l.diff_id)).then_some(e.state)
    }

    fn cache_put(&self, key: &Digest, state: &State, instruction: &str) -> Result<()> {
        let dir = self.cache_dir();
        std::fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
        let e = CacheEntry { state: state.clone(), instruction: instruction.to_string() };
        self.write_atomic(&dir.join(key.hex()), &serde_json::to_vec(&e).expect("plain data"))
    }

    fn log_dir(&self, name: &str) -> PathBuf {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
            .collect();
        self.root().join("logs").join(safe)
    }
}

/// Builds the Dockerfile of `opts` into the template `opts.name`.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    runner: &mut dyn StepRunner,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    crate::store::refs::check_name(&opts.name)?;
    let text = std::fs::read_to_string(&opts.dockerfile).map_err(|e| ImageError::io("read", &opts.dockerfile, e))?;
    let lines = dockerfile::parse(&text)
        .map_err(|e| ImageError::Build(format!("{} line {}: {}", opts.dockerfile.display(), e.line, e.reason)))?;
    let context =
        std::fs::canonicalize(&opts.context).map_err(|e| ImageError::io("open the build context", &opts.context, e))?;
    if !context.is_dir() {
        return Err(ImageError::Build(format!("the build context {} is not a directory", context.display())));
    }
    let ctx = context::Context::open(&context).map_err(ImageError::Build)?;
    let logs = store.log_dir(&opts.name);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).map_err(|e| ImageError::io("create", &logs, e))?;

    let given: BTreeMap<String, String> = opts.build_args.iter().cloned().collect();
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut state = State { layers: Vec::new(), config: empty_config() };
    let mut key = Digest::of(b"safehouse template build v1");
    let total = lines.len();
    let mut cached = 0;
    let mut disk_capped = true;
    for (i, line) in lines.iter().enumerate() {
        let fail = |reason: String| step_error(line, i, total, reason, None);
        progress.event(Event::Note { text: &format!("step {}/{total}: {}", i + 1, line.text) });
        match &line.step {
            Step::Arg { name, default } => {
                let v = given.get(name).cloned().or_else(|| default.clone()).unwrap_or_default();
                let v = dockerfile::expand(&v, &vars_of(&state, &args)).map_err(fail)?;
                args.insert(name.clone(), v.clone());
                key = chain(&key, &["ARG", name, &v]);
            }
            Step::From { image } => {
                let image = dockerfile::expand(image, &args).map_err(fail)?;
                if image == "scratch" {
                    key = chain(&key, &["FROM", "scratch"]);
                    continue;
                }
                let record = match store.get(&image) {
                    Ok(r) => r,
                    Err(ImageError::NotFound(_)) => {
                        progress.event(Event::Note { text: &format!("pulling {image}") });
                        runner.pull(&image).map_err(|e| fail(format!("cannot pull {image}: {e}")))?
                    }
                    Err(e) => return Err(fail(e.to_string())),
                };
                let config: Value = serde_json::from_slice(&store.read_blob(&record.config)?)
                    .map_err(|e| fail(format!("the config of {image}: {e}")))?;
                state = State { layers: record.layers.clone(), config };
                key = chain(&key, &["FROM", record.digest.as_str()]);
            }
            Step::Env { pairs } => {
                let mut parts = vec!["ENV".to_string()];
                for (k, v) in pairs {
                    let v = dockerfile::expand(v, &vars_of(&state, &args)).map_err(fail)?;
                    set_env(&mut state, k, &v);
                    parts.push(format!("{k}={v}"));
                }
                let p: Vec<&str> = parts.iter().map(String::as_str).collect();
                key = chain(&key, &p);
                history(&mut state, &line.text, true);
            }
            Step::Workdir { path } => {
                let p = dockerfile::expand(path, &vars_of(&state, &args)).map_err(fail)?;
                let cur = state.config["config"]["WorkingDir"].as_str().unwrap_or("/").to_string();
                let p = if p.starts_with('/') { p } else { format!("{}/{p}", cur.trim_end_matches('/')) };
                cfg_mut(&mut state).insert("WorkingDir".into(), json!(p));
                key = chain(&key, &["WORKDIR", &p]);
                history(&mut state, &line.text, true);
            }
            Step::User { user } => {
                let u = dockerfile::expand(user, &vars_of(&state, &args)).map_err(fail)?;
                cfg_mut(&mut state).insert("User".into(), json!(u));
                key = chain(&key, &["USER", &u]);
                history(&mut state, &line.text, true);
            }
            Step::Label { pairs } => {
                let mut parts = vec!["LABEL".to_string()];
                let cfg = cfg_mut(&mut state);
                if !cfg.get("Labels").map(Value::is_object).unwrap_or(false) {
                    cfg.insert("Labels".into(), json!({}));
                }
                for (k, v) in pairs {
                    cfg["Labels"][k] = json!(v);
                    parts.push(format!("{k}={v}"));
                }
                let p: Vec<&str> = parts.iter().map(String::as_str).collect();
                key = chain(&key, &p);
                history(&mut state, &line.text, true);
            }
            Step::Cmd { argv } => {
                cfg_mut(&mut state).insert("Cmd".into(), json!(argv));
                let j = serde_json::to_string(argv).expect("strings");
                key = chain(&key, &["CMD", &j]);
                history(&mut state, &line.text, true);
            }
            Step::Entrypoint { argv } => {
                cfg_mut(&mut state).insert("Entrypoint".into(), json!(argv));
                let j = serde_json::to_string(argv).expect("strings");
                key = chain(&key, &["ENTRYPOINT", &j]);
                history(&mut state, &line.text, true);
            }
            Step::Meta { key: k, value } => {
                if k == "expose" {
                    let cfg = cfg_mut(&mut state);
                    if !cfg.get("ExposedPorts").map(Value::is_object).unwrap_or(false) {
                        cfg.insert("ExposedPorts".into(), json!({}));
                    }
                    for p in value.split_whitespace() {
                        let p = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                        cfg["ExposedPorts"][p] = json!({});
                    }
                } else if k == "stopsignal" {
                    cfg_mut(&mut state).insert("StopSignal".into(), json!(value));
                }
                key = chain(&key, &[k, value]);
                history(&mut state, &line.text, true);
            }
            Step::Copy { sources, dest, chown, add } => {
                let vars = vars_of(&state, &args);
                let mut srcs = Vec::new();
                for s in sources {
                    let s = dockerfile::expand(s, &vars).map_err(fail)?;
                    srcs.extend(ctx.sources(&s).map_err(fail)?);
                }
                if *add {
                    if let Some(a) = srcs.iter().find(|p| is_archive_name(p)) {
                        return Err(fail(format!(
                            "ADD of the archive {}: unpacking archives is not supported; COPY it and unpack it in a RUN step",
                            a.display()
                        )));
                    }
                }
                let dest = dockerfile::expand(dest, &vars).map_err(fail)?;
                let wd = state.config["config"]["WorkingDir"].as_str().unwrap_or("/").to_string();
                let abs =
                    if dest.starts_with('/') { dest.clone() } else { format!("{}/{dest}", wd.trim_end_matches('/')) };
                let dest_is_dir = dest.ends_with('/') || srcs.len() > 1 || srcs.iter().any(|s| s.is_dir());
                let inputs = hash_inputs(&srcs, &ctx).map_err(fail)?;
                let owner_spec = chown.clone().unwrap_or_default();
                key = chain(&key, &["COPY", &abs, &dest_is_dir.to_string(), &owner_spec, inputs.as_str()]);
                if !opts.no_cache {
                    if let Some(s) = store.cache_get(&key) {
                        state = s;
                        cached += 1;
                        progress.event(Event::Note { text: "  cached" });
                        continue;
                    }
                }
                let lease = lease_state(store, &state)?;
                let layers = if lease.layers.is_empty() { None } else { Some(Layers::open(&lease.layers)?) };
                let owner = match chown {
                    None => (0, 0),
                    Some(c) => owner_of(c, layers.as_ref()).map_err(fail)?,
                };
                let tmp = store.tmp_path("copy");
                let f = scratch_file(&tmp)?;
                let made = layer::copy(
                    &srcs,
                    &abs,
                    dest_is_dir,
                    owner,
                    layers.as_ref(),
                    store.id_shift(),
                    &ctx,
                    BufWriter::new(f),
                );
                let result = made.map_err(fail).and_then(|(w, _)| {
                    let mut f = w.into_inner().map_err(|e| ImageError::io("write", &tmp, e.into_error()))?;
                    f.rewind().map_err(|e| ImageError::io("read", &tmp, e))?;
                    store.unpack_layer(std::io::BufReader::new(f), None, None, opts.limits)
                });
                let _ = std::fs::remove_file(&tmp);
                let info = result?;
                push_layer(&mut state, LayerRecord { diff_id: info.diff_id.clone(), size: info.size });
                history(&mut state, &line.text, false);
                store.cache_put(&key, &state, &line.text)?;
            }
            Step::Run { argv } => {
                let env: Vec<(String, String)> = args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let argv_text = serde_json::to_string(argv).expect("strings");
                key = chain(&key, &["RUN", &argv_text, &env_text.join("\n")]);
                if !opts.no_cache {
                    if let Some(s) = store.cache_get(&key) {
                        state = s;
                        cached += 1;
                        progress.event(Event::Note { text: "  cached" });
                        continue;
                    }
                }
                if state.layers.is_empty() {
                    return Err(fail("RUN needs a base image with a shell; FROM scratch has none".into()));
                }
                let log = logs.join(format!("step-{}.log", i + 1));
                let (l, capped) = run_step(store, &state, argv, &env, &log, line.line, opts, runner).map_err(
                    |(reason, with_log)| step_error(line, i, total, reason, with_log.then_some(log.as_path())),
                )?;
                disk_capped &= capped;
                match l {
                    Some(l) => {
                        push_layer(&mut state, l);
                        history(&mut state, &line.text, false);
                    }
                    None => history(&mut state, &line.text, true),
                }
                store.cache_put(&key, &state, &line.text)?;
            }
        }
    }
    if state.layers.is_empty() {
        return Err(ImageError::Build("the template has no layers (FROM scratch and nothing copied)".into()));
    }
    let config = serde_json::to_vec(&state.config).expect("plain data");
    let sized: Vec<(Digest, u64)> = state
        .layers
        .iter()
        .map(|l| (l.diff_id.clone(), store.layer_info(&l.diff_id).map(|i| i.tar_size).unwrap_or(0)))
        .collect();
    let manifest = oci::own_manifest(&config, &sized);
    let stored: Vec<(Digest, u64)> = state.layers.iter().map(|l| (l.diff_id.clone(), l.size)).collect();
    let _w = store.writer_lock()?;
    let record = oci::commit(
        store,
        &opts.name,
        Kind::Template,
        format!("build {}", context.display()),
        &manifest,
        &config,
        &stored,
    )?;
    progress.event(Event::Done { record: &record });
    Ok(BuildReport { record, steps: total, cached, disk_capped })
}

/// A new file in tmp/ to write a layer to and read it back.
fn scratch_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| ImageError::io("create", path, e))
}

fn lease_state(store: &Store, state: &State) -> Result<crate::store::Lease> {
    let rec = ImageRecord {
        name: "(build)".into(),
        kind: Kind::Template,
        digest: Digest::of(b""),
        config: Digest::of(b""),
        layers: state.layers.clone(),
        size: 0,
        created: String::new(),
        source: String::new(),
    };
    store.lease(&rec)
}

fn is_archive_name(p: &Path) -> bool {
    let n = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar.zst"].iter().any(|s| n.ends_with(s)) && p.is_file()
}

/// A digest of what COPY takes: names, modes, symlink targets and contents (what
/// `.dockerignore` leaves out is not taken, so not hashed).
fn hash_inputs(srcs: &[PathBuf], ctx: &context::Context) -> std::result::Result<Digest, String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(h: &mut Hasher, p: &Path, rel: &str, ctx: &context::Context) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        h.update(format!("\n{rel}\0{:o}\0", m.mode()).as_bytes());
        if m.file_type().is_symlink() {
            h.update(std::fs::read_link(p)?.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            let mut f = std::fs::File::open(p)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        } else if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)?.collect::<std::io::Result<Vec<_>>>()?;
            names.sort_by_key(|e| e.file_name());
            for e in names {
                if !ctx.excluded(&e.path()) {
                    walk(h, &e.path(), &format!("{rel}/{}", e.file_name().to_string_lossy()), ctx)?;
                }
            }
        }
        Ok(())
    }
    let mut h = Hasher::new();
    for s in srcs {
        let name = s.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        walk(&mut h, s, &name, ctx).map_err(|e| format!("{}: {e}", s.display()))?;
    }
    Ok(h.finish())
}

/// `--chown=USER[:GROUP]` in the image's own passwd and group.
fn owner_of(spec: &str, layers: Option<&Layers>) -> std::result::Result<(u32, u32), String> {
    let read = |p: &str| {
        layers.and_then(|l| l.read(p, 1 << 20)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    };
    let u = root::resolve_user(Some(spec), &read("etc/passwd"), &read("etc/group"))
        .map_err(|e| format!("--chown={spec}: {e}"))?;
    Ok((u.uid, u.gid))
}

/// Runs one RUN step and captures its changes. Errors: (reason, whether the log has
/// the step's output).
#[allow(clippy::too_many_arguments)]
fn run_step(
    store: &Store,
    state: &State,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
    line: usize,
    opts: &BuildOptions,
    runner: &mut dyn StepRunner,
) -> std::result::Result<(Option<LayerRecord>, bool), (String, bool)> {
    let e = |x: ImageError| (x.to_string(), false);
    let lease = lease_state(store, state).map_err(e)?;
    let config = RunConfig::from_config_bytes(&serde_json::to_vec(&state.config).expect("plain data")).map_err(e)?;
    let rooted = root::root_of("(build)", lease, config).map_err(e)?;
    let work = writable::Dir::make(store, opts.disk).map_err(e)?;
    let root = rooted.root.clone();
    let status = runner.run(&RunStep { root: &root, writable: work.path(), argv, env, log, line });
    drop(rooted);
    match status {
        Err(reason) => return Err((format!("could not run: {reason}"), true)),
        Ok(0) => {}
        Ok(code) => return Err((format!("failed with exit status {code}"), true)),
    }
    // The step's changes, as a layer: the upper directory as a tar in tmp/ (the
    // capture's owners are image ids), unpacked like any layer.
    let caller_as = (root.uid, root.gid);
    let tmp = store.tmp_path("capture");
    let captured = (|| {
        let f = scratch_file(&tmp)?;
        let (w, c) = layer::capture(
            &work.path().join("upper"),
            HashingWriter::new(BufWriter::new(f)),
            store.id_shift(),
            caller_as,
        )
        .map_err(|x| ImageError::io("capture the step's changes from", work.path(), x))?;
        if c.entries == 0 {
            return Ok(None);
        }
        let (buf, _, _) = w.finish();
        let mut f = buf.into_inner().map_err(|x| ImageError::io("write", &tmp, x.into_error()))?;
        f.rewind().map_err(|x| ImageError::io("read", &tmp, x))?;
        let info = store.unpack_layer(std::io::BufReader::new(f), None, None, opts.limits)?;
        Ok(Some(LayerRecord { diff_id: info.diff_id, size: info.size }))
    })();
    let _ = std::fs::remove_file(&tmp);
    let capped = work.capped();
    drop(work);
    captured.map(|l| (l, capped)).map_err(e)
}

pub mod writable;
