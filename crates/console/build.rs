//! Embeds the console's built assets (`console/dist`, made by `npm run build` in `console/`,
//! which `scripts/build` runs) as a table in `$OUT_DIR/assets.rs`: path, content type,
//! bytes (`include_bytes!`) and an ETag from their SHA-256.
//!
//! Without `console/dist` the table holds one page that says the console was not built,
//! so `cargo build`/`cargo test` work without Node.js; `SAFEHOUSE_CONSOLE_REQUIRED=1`
//! (set by `scripts/build`) turns that into a build error instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The content type of a built asset, by extension. Anything else is refused at build
/// time, so nothing is ever served with a guessed type.
fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path())
        .collect();
    entries.sort();
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            walk(&path, base, out);
        } else {
            let rel = path.strip_prefix(base).expect("below dist").to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dist = manifest.join("../../console/dist");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=SAFEHOUSE_CONSOLE_REQUIRED");
    println!("cargo:rerun-if-changed={}", dist.display());

    let mut files = Vec::new();
    let built = dist.join("index.html").is_file();
    if built {
        walk(&dist, &dist, &mut files);
    } else if std::env::var_os("SAFEHOUSE_CONSOLE_REQUIRED").is_some_and(|v| v == "1") {
        panic!(
            "console/dist/index.html is missing: build the console first (`cd console && npm ci && npm run build`; \
             scripts/build does it)"
        );
    } else {
        println!("cargo:warning=console/dist is missing: this build serves a placeholder at /ui (run scripts/build)");
        let page = out_dir.join("not-built.html");
        std::fs::write(&page, NOT_BUILT).expect("write the placeholder page");
        files.push(("index.html".to_string(), page));
    }

    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (rel, path) in &files {
        let Some(mime) = content_type(rel) else {
            panic!("console/dist/{rel}: no content type is known for this file; add its extension to build.rs");
        };
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let hash = Sha256::digest(&bytes);
        let etag: String = hash[..12].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let _ = writeln!(
            table,
            "    Asset {{ path: {rel:?}, content_type: {mime:?}, etag: \"\\\"{etag}\\\"\", body: include_bytes!({:?}) }},",
            path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        );
    }
    table.push_str("];\n");
    let _ = writeln!(table, "pub const BUILT: bool = {built};");
    std::fs::write(out_dir.join("assets.rs"), table).expect("write assets.rs");
}

const NOT_BUILT: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>safehouse console</title></head><body><h1>The console was not built into this binary</h1>\
<p>Build safehouse with <code>scripts/build</code>, which builds the console (<code>console/</code>, \
Node.js 20.19 or later) and embeds it.</p></body></html>\n";
