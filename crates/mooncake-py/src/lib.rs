//! The native half of the `mooncake` Python package (built by maturin as
//! `mooncake._mooncake`): `MooncakeDistributedStore`, `ReplicateConfig` and
//! `TransferEngine` over the Rust crates, plus the console scripts' entry points.
//!
//! Conventions are the C++ wheel's (`python-api.md`): methods return Mooncake's integer
//! codes and `b''` rather than raising; exceptions are for argument type errors only. Every
//! network call runs on one shared tokio runtime with the GIL released.

mod addr;
mod config;
mod engine;
mod jobs;
mod notify;
mod pybytes;
mod runtime;
mod store;
mod task;

use pyo3::prelude::*;

/// Runs `mooncake_master` with `argv` (program name first); returns the exit status.
#[pyfunction]
fn run_master(py: Python<'_>, argv: Vec<String>) -> i32 {
    exit_status(py.detach(|| mooncake_cli::master::run(argv)))
}

/// Runs `mooncake_store_service` with `argv` (program name first); returns the exit status.
#[pyfunction]
fn run_store_service(py: Python<'_>, argv: Vec<String>) -> i32 {
    exit_status(py.detach(|| mooncake_cli::store_service::run(argv)))
}

fn exit_status(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("Error: {e:?}");
            1
        }
    }
}

#[pymodule]
fn _mooncake(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<store::Store>()?;
    m.add_class::<config::PyReplicateConfig>()?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::InnerEngine>()?;
    m.add_class::<notify::TransferNotify>()?;
    m.add_class::<task::QueryTaskResponse>()?;
    m.add_function(wrap_pyfunction!(run_master, m)?)?;
    m.add_function(wrap_pyfunction!(run_store_service, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
