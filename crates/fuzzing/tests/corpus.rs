//! Every file of every fuzz corpus (`fuzz/corpus/<target>/`), through its target's body:
//! the corpora, and the inputs of past crashes kept in them, are regression tests that run
//! in a plain `cargo test`, without libFuzzer. Also checks that the table of targets, the
//! corpora and libFuzzer's wrappers (`fuzz/fuzz_targets/`) name the same targets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safehouse_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn names(dir: &Path, suffix: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(suffix).map(str::to_string))
        .collect()
}

#[test]
fn every_target_has_a_corpus_and_a_wrapper() {
    let table: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names(&fuzz_dir().join("corpus"), ""), table, "fuzz/corpus/ vs safehouse_fuzzing::TARGETS");
    assert_eq!(names(&fuzz_dir().join("fuzz_targets"), ".rs"), table, "fuzz/fuzz_targets/ vs TARGETS");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for t in &table {
        assert!(manifest.contains(&format!("name = \"{t}\"")), "fuzz/Cargo.toml has no [[bin]] {t}");
        let wrapper = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{t}.rs"))).unwrap();
        assert!(wrapper.contains("safehouse_fuzzing::"), "fuzz_targets/{t}.rs does not call safehouse_fuzzing");
    }
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut total = 0;
    for (name, body) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty(), "fuzz/corpus/{name}/ is empty");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let run = std::panic::catch_unwind(|| body(&data));
            assert!(run.is_ok(), "{name}: {} fails its target", f.display());
            total += 1;
        }
    }
    eprintln!("{total} corpus inputs replayed");
}
