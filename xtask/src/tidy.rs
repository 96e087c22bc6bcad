//! Tidy checks, run as tests: the rules of docs/dev/style.md that a machine can check.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every Rust file of the workspace, as (path relative to the root, text). Panics unless
/// the walk saw the files it must see, so no rule can pass by checking nothing.
fn workspace_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in ["crates", "examples", "benches", "xtask"] {
        rust_files(&crate::root().join(dir), &mut files);
    }
    let sources: Vec<(String, String)> = files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(crate::root()).unwrap_or(&p);
            let text = fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (rel.to_string_lossy().into_owned(), text)
        })
        .collect();
    assert_seen(&sources, MUST_SEE);
    sources
}

/// Files every walk of the workspace must find.
const MUST_SEE: &[&str] = &[
    "crates/mooncake-transfer-engine/src/lib.rs",
    "crates/mooncake-transfer-engine/src/config.rs",
    "crates/mooncake-store/src/lib.rs",
    "crates/mooncake-master/src/lib.rs",
    "crates/mooncake-metadata/src/lib.rs",
    "crates/mooncake-py/src/lib.rs",
    "crates/mooncake-cli/src/lib.rs",
    "xtask/src/tidy.rs",
];

fn assert_seen(sources: &[(String, String)], expected: &[&str]) {
    assert!(
        sources.len() >= 100,
        "the walk found only {} Rust files; is the root ({}) right?",
        sources.len(),
        crate::root().display()
    );
    for want in expected {
        assert!(
            sources
                .iter()
                .any(|(rel, text)| rel == want && !text.is_empty()),
            "the walk did not see {want}"
        );
    }
}

/// The one module per library crate that may read the environment; everything else gets
/// its settings through config fields filled at the edge (binaries, the Python package).
const ENV_ALLOWED: &[&str] = &[
    "crates/mooncake-transfer-engine/src/config.rs",
    "crates/mooncake-metadata/src/auth.rs",
    "crates/mooncake-cli/src/env.rs",
];

/// Library code: every crate's `src/`, not tests, benches, the binaries or xtask.
fn is_library(rel: &str) -> bool {
    rel.starts_with("crates/") && rel.split('/').nth(2) == Some("src")
}

/// Files allowed to contain `unsafe` (mmap, memfd and raw-pointer memory access).
/// The Python package's FFI boundary may vouch for caller-owned addresses
/// (`ForeignMemory::new`) and map files for `mount_segment`; `pybytes.rs` is its one
/// caller of CPython's C API (`bytes` filled in place); nothing else.
const UNSAFE_ALLOWED: &[&str] = &[
    "crates/mooncake-transfer-engine/src/memory/",
    "crates/mooncake-py/src/pybytes.rs",
    "crates/mooncake-py/src/store/full.rs",
    "crates/mooncake-py/src/store/segments.rs",
    "crates/mooncake-py/src/engine.rs",
];

#[test]
fn every_crate_is_in_architecture_md() {
    let arch = fs::read_to_string(crate::root().join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md is readable");
    let crates: Vec<String> = fs::read_dir(crate::root().join("crates"))
        .expect("crates/ is readable")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        crates.len() >= 5,
        "crates/ holds only {crates:?}; is the root right?"
    );
    for name in crates {
        assert!(
            arch.contains(&format!("`{name}`")),
            "docs/ARCHITECTURE.md does not describe `{name}`"
        );
    }
}

#[test]
fn unsafe_only_in_allowed_modules() {
    let needle = ["un", "safe "].concat();
    for (rel, text) in workspace_sources() {
        if UNSAFE_ALLOWED.iter().any(|a| rel.starts_with(a)) {
            continue;
        }
        // Outside them, only the documented `unsafe fn Region::slice_mut` may be called (its
        // contract is the caller's to keep, so every call is marked where it happens).
        let hits = text.lines().filter(|l| {
            !l.trim_start().starts_with("//") && l.contains(&needle) && !l.contains(".slice_mut(")
        });
        assert_eq!(
            hits.count(),
            0,
            "{rel} uses {needle}outside the allowed modules"
        );
    }
}

#[test]
fn no_todo_or_dbg() {
    let banned = [
        ["to", "do!("].concat(),
        ["db", "g!("].concat(),
        ["unimpl", "emented!("].concat(),
    ];
    for (rel, text) in workspace_sources() {
        for b in &banned {
            assert!(!text.contains(b.as_str()), "{rel} contains {b}");
        }
    }
}

#[test]
fn environment_read_only_in_one_config_module_per_crate() {
    let needle = ["env", "::var"].concat();
    let mut checked = 0;
    for (rel, text) in workspace_sources() {
        if !is_library(&rel) || ENV_ALLOWED.contains(&rel.as_str()) {
            continue;
        }
        checked += 1;
        let hit = text
            .lines()
            .position(|l| !l.trim_start().starts_with("//") && l.contains(&needle));
        if let Some(line) = hit {
            panic!(
                "{rel}:{} reads the environment; read it in the crate's config module ({}) at the edge and pass a config field",
                line + 1,
                ENV_ALLOWED.join(", ")
            );
        }
    }
    assert!(checked >= 50, "only {checked} library files checked");
}

/// Longest library source file (`shared/style.md`: over 800 lines is a file doing several
/// jobs). Test files (`*tests.rs`, `tests/`) are exempt.
const MAX_LINES: usize = 800;

#[test]
fn no_library_file_over_800_lines() {
    let mut checked = 0;
    for (rel, text) in workspace_sources() {
        if !is_library(&rel) || rel.ends_with("tests.rs") {
            continue;
        }
        checked += 1;
        let lines = text.lines().count();
        assert!(
            lines <= MAX_LINES,
            "{rel} has {lines} lines (at most {MAX_LINES}): cut it along its seams"
        );
    }
    assert!(checked >= 50, "only {checked} library files checked");
}
