//! The one tokio runtime behind every Python object, and the GIL-free bridge to it.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::Python;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, started on first use (also installs logging at `warn`, which
/// `RUST_LOG` overrides).
pub(crate) fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        mooncake_cli::init_tracing_at("warn");
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("mooncake")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the mooncake runtime: {e}"))
    })
}

/// Runs `fut` to completion with the GIL released, so other Python threads keep going
/// while this one waits on the network.
pub(crate) fn block<F>(py: Python<'_>, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| runtime().block_on(fut))
}
