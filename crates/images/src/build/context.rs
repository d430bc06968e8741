//! The build context: what COPY and ADD may take. Sources stay inside it (no `..`, symlinks
//! resolved inside), wildcards (`*`, `?`, `[...]`, `**`) expand against it as Docker
//! expands them, and `.dockerignore` at its top leaves files out of every COPY, expanded or
//! walked, and out of the cache key.
//!
//! Patterns are matched by the `glob` crate, one path component at a time for sources and
//! on the whole context-relative path for `.dockerignore`.

use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

/// Largest `.dockerignore` read.
const MAX_IGNORE_FILE: u64 = 1 << 20;

const OPTIONS: MatchOptions =
    MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// A build context directory (canonical) and its `.dockerignore` rules.
pub struct Context {
    root: PathBuf,
    /// In file order; the last rule that matches a path (or one of its parents) decides:
    /// excluded, unless the rule is an exception (`!pattern`).
    rules: Vec<(Pattern, bool)>,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Context {
    /// `root` must be canonical. Reads `root/.dockerignore` if there is one.
    pub fn open(root: &Path) -> Result<Context, String> {
        let file = root.join(".dockerignore");
        let text = match std::fs::metadata(&file) {
            Ok(m) if m.len() > MAX_IGNORE_FILE => {
                return Err(format!(".dockerignore is {} bytes; keep it under 1 MiB", m.len()))
            }
            Ok(_) => std::fs::read_to_string(&file).map_err(|e| format!(".dockerignore: {e}"))?,
            Err(_) => String::new(),
        };
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pat);
            if cleaned.is_empty() {
                continue;
            }
            let p = Pattern::new(&cleaned).map_err(|e| format!(".dockerignore line {}: {pat:?}: {e}", i + 1))?;
            rules.push((p, exception));
        }
        Ok(Context { root: root.to_path_buf(), rules })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `path` (inside the context) is left out by `.dockerignore`: the last rule
    /// matching it or one of its parent directories decides.
    pub fn excluded(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else { return false };
        let rel = rel.to_string_lossy();
        if rel.is_empty() || self.rules.is_empty() {
            return false;
        }
        let comps: Vec<&str> = rel.split('/').collect();
        let mut out = false;
        for (pattern, exception) in &self.rules {
            let hit = (1..=comps.len()).any(|n| pattern.matches_with(&comps[..n].join("/"), OPTIONS));
            if hit {
                out = !exception;
            }
        }
        out
    }

    /// The files and directories a COPY source names: the path itself, or what its
    /// wildcards match (sorted), without what `.dockerignore` leaves out. Refused when it
    /// leaves the context or matches nothing.
    pub fn sources(&self, src: &str) -> Result<Vec<PathBuf>, String> {
        if src.split('/').any(|c| c == "..") {
            return Err(format!("{src} is outside the build context {}; name a file in it", self.root.display()));
        }
        let rel = src.trim_start_matches('/');
        let found = if has_wildcard(rel) { self.expand(rel)? } else { vec![self.resolve(src, rel)?] };
        let kept: Vec<PathBuf> = found.into_iter().filter(|p| !self.excluded(p)).collect();
        if kept.is_empty() {
            return Err(format!(
                "{src}: no file in the build context {} matches (.dockerignore may leave it out)",
                self.root.display()
            ));
        }
        Ok(kept)
    }

    /// `rel` inside the context, symlinks resolved (and required to stay inside).
    fn resolve(&self, src: &str, rel: &str) -> Result<PathBuf, String> {
        let real = std::fs::canonicalize(self.root.join(rel))
            .map_err(|e| format!("{src}: not in the build context {} ({e})", self.root.display()))?;
        if !real.starts_with(&self.root) {
            return Err(format!("{src} is outside the build context {}", self.root.display()));
        }
        Ok(real)
    }

    /// Walks `rel`'s components: literal ones are joined, wildcard ones matched against
    /// the names in each directory reached (`**` any depth, itself included).
    fn expand(&self, rel: &str) -> Result<Vec<PathBuf>, String> {
        let mut current = vec![self.root.clone()];
        for comp in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let mut next = Vec::new();
            if comp == "**" {
                for dir in &current {
                    walk_dirs(dir, &mut next);
                }
            } else if has_wildcard(comp) {
                let p = Pattern::new(comp).map_err(|e| format!("{rel}: {comp:?}: {e}"))?;
                for dir in &current {
                    let Ok(entries) = std::fs::read_dir(dir) else { continue };
                    for e in entries.flatten() {
                        if p.matches_with(&e.file_name().to_string_lossy(), OPTIONS) {
                            next.push(e.path());
                        }
                    }
                }
            } else {
                next.extend(current.iter().map(|d| d.join(comp)).filter(|p| p.symlink_metadata().is_ok()));
            }
            next.sort();
            next.dedup();
            current = next;
        }
        // Each match resolved inside the context, like a literal source.
        current
            .iter()
            .map(|p| {
                let shown = p.strip_prefix(&self.root).unwrap_or(p).to_string_lossy().into_owned();
                self.resolve(&shown, &shown)
            })
            .collect()
    }
}

/// `dir` and every directory below it (not following symlinks).
fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_dirs(&e.path(), out);
        }
    }
}

/// A `.dockerignore` pattern as Docker cleans it: no leading `/` or `./`, no trailing `/`.
fn clean(p: &str) -> String {
    let mut s = p.trim_start_matches('/');
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    s.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str], ignore: &str) -> (PathBuf, Context) {
        let dir = std::env::temp_dir().join(format!("safehouse-ctx-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".dockerignore"), ignore).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let ctx = Context::open(&dir).unwrap();
        (dir, ctx)
    }

    fn names(dir: &Path, v: Vec<PathBuf>) -> Vec<String> {
        v.iter().map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn wildcards_expand_like_docker_and_dockerignore_leaves_files_out() {
        let (dir, ctx) = tree(
            &["a.py", "b.py", "c.txt", "src/x.py", "src/deep/y.py", "secret.key", "build/out.py", "build/keep.py"],
            "# comment\n*.key\n/build/\n!build/keep.py\n",
        );
        assert_eq!(names(&dir, ctx.sources("*.py").unwrap()), ["a.py", "b.py"]);
        assert_eq!(names(&dir, ctx.sources("src/*.py").unwrap()), ["src/x.py"]);
        assert_eq!(
            names(&dir, ctx.sources("**/*.py").unwrap()),
            ["a.py", "b.py", "build/keep.py", "src/deep/y.py", "src/x.py"]
        );
        assert_eq!(names(&dir, ctx.sources("?.txt").unwrap()), ["c.txt"]);
        assert!(ctx.sources("*.key").unwrap_err().contains("no file"));
        assert!(ctx.sources("secret.key").unwrap_err().contains(".dockerignore"));
        assert!(ctx.sources("*.none").unwrap_err().contains("no file"));
        assert!(ctx.sources("../x").unwrap_err().contains("outside"));
        assert!(ctx.excluded(&dir.join("build/out.py")));
        assert!(!ctx.excluded(&dir.join("build/keep.py")), "an exception after the rule wins");
        assert!(!ctx.excluded(&dir.join("a.py")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_out_of_the_context_is_refused_when_a_wildcard_reaches_it() {
        let (dir, ctx) = tree(&["ok.conf"], "");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("evil.conf")).unwrap();
        assert!(ctx.sources("*.conf").unwrap_err().contains("outside"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
