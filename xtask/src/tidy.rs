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

fn workspace_sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for dir in ["crates", "examples", "benches", "xtask"] {
        rust_files(&crate::root().join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|p| (p.clone(), fs::read_to_string(&p).unwrap_or_default()))
        .collect()
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
    let arch = fs::read_to_string(crate::root().join("docs/ARCHITECTURE.md")).unwrap_or_default();
    for entry in fs::read_dir(crate::root().join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            arch.contains(&format!("`{name}`")),
            "docs/ARCHITECTURE.md does not describe `{name}`"
        );
    }
}

#[test]
fn unsafe_only_in_allowed_modules() {
    let needle = ["un", "safe "].concat();
    for (path, text) in workspace_sources() {
        let rel = path
            .strip_prefix(crate::root())
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if UNSAFE_ALLOWED.iter().any(|a| rel.starts_with(a)) {
            continue;
        }
        let hits = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//") && l.contains(&needle));
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
    for (path, text) in workspace_sources() {
        for b in &banned {
            assert!(
                !text.contains(b.as_str()),
                "{} contains {b}",
                path.display()
            );
        }
    }
}
