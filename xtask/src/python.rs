//! The Python package (`crates/mooncake-py`): a venv with maturin and pytest under
//! `target/py-venv`, a wheel built by maturin, installed with pip, and the pytest suite.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{root, run};

/// Tools the Python tests need, pinned to major versions known to work.
const TOOLS: &[&str] = &["maturin>=1.5,<2", "pytest>=7,<10"];

/// The venv's interpreter, creating the venv (and installing [`TOOLS`]) on first use.
pub(crate) fn venv() -> Result<PathBuf> {
    let dir = root().join("target/py-venv");
    let python = dir.join("bin/python");
    if !python.exists() {
        let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(&base);
        cmd.args(["-m", "venv"]).arg(&dir);
        run(cmd).with_context(|| format!("creating a venv with {base} (set PYTHON=...)"))?;
    }
    let have = Command::new(&python)
        .args(["-c", "import maturin, pytest"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have {
        run(pip_install(&python, TOOLS))?;
    }
    Ok(python)
}

/// Builds the wheel (`release` for measurements, the dev profile for tests) and installs
/// it into the venv; returns the venv's interpreter.
pub(crate) fn install_wheel(release: bool) -> Result<PathBuf> {
    let python = venv()?;
    let out = root().join("target/wheels");
    let _ = std::fs::remove_dir_all(&out);
    let mut build = Command::new(&python);
    build
        .args(["-m", "maturin", "build", "--locked", "--out"])
        .arg(&out)
        .current_dir(root().join("crates/mooncake-py"));
    if release {
        build.arg("--release");
    }
    run(build)?;
    let wheel = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    let Some(wheel) = wheel else {
        bail!("maturin wrote no wheel into {}", out.display())
    };
    let mut pip = pip_install(&python, &["--force-reinstall", "--no-deps"]);
    pip.arg(&wheel);
    run(pip)?;
    Ok(python)
}

/// Builds and installs the wheel, then runs the pytest suite.
pub(crate) fn test() -> Result<()> {
    let python = install_wheel(false)?;
    let mut pytest = Command::new(python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root().join("crates/mooncake-py/tests"));
    run(pytest)
}

/// `python -m pip install --quiet --disable-pip-version-check <args>`.
fn pip_install(python: &std::path::Path, args: &[&str]) -> Command {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(args);
    pip
}

/// Installs PyPI `packages` into the venv at `venv` unless they import already.
pub(crate) fn pip_install_into(venv: &std::path::Path, packages: &[&str]) -> Result<()> {
    let python = venv.join("bin/python");
    let imports = packages.join(",");
    let present = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        run(pip_install(&python, packages))?;
    }
    Ok(())
}
