//! The store's two client slots and their life cycle: which [`Backend`] a call goes to,
//! setting up (again), connecting the standalone client, closing and dropping.

use std::sync::Arc;

use mooncake_store::standalone::StandaloneClient;
use mooncake_store::{to_code, Client, ClientConfig, ErrorCode};
use pyo3::prelude::*;

use super::backend::{Backend, StoreOps};
use super::{setup, Store};
use crate::runtime::block;

/// Dropping the last reference (`del store`, garbage collection, interpreter exit) tears
/// the client down as `close()` does: its segment is drained and unmounted at once, so no
/// other client's put is placed on memory that is about to disappear (`python-api-2.md`
/// §12). Other Python threads keep running meanwhile (the GIL is released for the drain),
/// except while the interpreter shuts down, when the GIL stays held.
impl Drop for Store {
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        let closed = Python::try_attach(|py| block(py, client.close()))
            .unwrap_or_else(|| crate::runtime::runtime().block_on(client.close()));
        if let Err(e) = closed {
            tracing::warn!("closing a dropped store failed: {e}");
        }
        self.mapped.get_mut().clear();
    }
}

impl Store {
    /// The backend calls go to: the standalone client when there is one, else the full
    /// one. Each lock is released before the call runs: calls release the GIL, and another
    /// thread could then wait on the lock while holding it.
    pub(super) fn active(&self) -> Option<Backend> {
        let standalone = self.standalone.lock().clone();
        standalone
            .map(Backend::Standalone)
            .or_else(|| self.client.lock().clone().map(Backend::Full))
    }

    /// [`Store::active`], or -600 (logged) when the store is not set up.
    pub(super) fn backend(&self) -> Result<Backend, ErrorCode> {
        self.active().ok_or_else(not_set_up)
    }

    /// `f` on the active backend, or `fail` of the -600 of a store that is not set up.
    pub(super) fn with<R>(
        &self,
        fail: impl FnOnce(ErrorCode) -> R,
        f: impl FnOnce(&dyn StoreOps) -> R,
    ) -> R {
        match self.backend() {
            Ok(b) => f(b.ops()),
            Err(e) => fail(e),
        }
    }

    /// The full client, or -600 (logged) without one.
    pub(super) fn client(&self) -> Result<Client, ErrorCode> {
        self.client.lock().clone().ok_or_else(not_set_up)
    }

    /// Whether either client is set up.
    pub(super) fn is_set_up(&self) -> bool {
        self.client.lock().is_some() || self.standalone.lock().is_some()
    }

    /// `setup` / `init_all` with a parsed config: 0 or the code of the failure.
    pub(super) fn do_setup(&self, py: Python<'_>, config: ClientConfig) -> i32 {
        // As with the C++ wheel, setting up again replaces the client: the old one is torn
        // down first (its segment unmounted), so nothing it mounted is left behind.
        let old = self.client.lock().take();
        if let Some(old) = old {
            tracing::info!("setup() called again; closing the previous client first");
            let _ = block(py, old.close());
            self.mapped.lock().clear();
        }
        let explicit = config.local_hostname.contains(':');
        // Every `get` returns new `bytes`: keep the memory large values free for the next.
        mooncake_cli::retain_freed_memory();
        match block(py, Client::setup(config)) {
            Ok(c) => {
                // Another thread's setup may have finished meanwhile: the last one wins
                // and the one it replaces is closed, never leaked.
                let replaced = self.client.lock().replace(c);
                if let Some(replaced) = replaced {
                    let _ = block(py, replaced.close());
                }
                0
            }
            Err(e) => {
                tracing::error!("setup failed: {e}");
                setup::setup_code(&e, explicit)
            }
        }
    }

    /// `setup_dummy`: 0 (also when already set up: the first setup stays in effect) or the
    /// code of the failure.
    pub(super) fn connect_standalone(
        &self,
        py: Python<'_>,
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
    ) -> i32 {
        if self.is_set_up() {
            tracing::warn!("setup called twice; the first setup stays in effect");
            return 0;
        }
        crate::runtime::runtime();
        // Every `get` returns new `bytes`: keep the memory large values free for the next.
        mooncake_cli::retain_freed_memory();
        let token = mooncake_metadata::AuthToken::from_env();
        let connect =
            StandaloneClient::connect(mem_pool_size, local_buffer_size, server_address, token);
        match block(py, connect) {
            Ok(d) => {
                *self.standalone.lock() = Some(Arc::new(d));
                0
            }
            Err(e) => {
                tracing::error!("setup_dummy failed: {e}");
                setup::setup_dummy_code(&e)
            }
        }
    }

    /// `close`: forgets the standalone client, or closes the full one (its segment
    /// unmounted); 0 or the code of the close.
    pub(super) fn close_client(&self, py: Python<'_>) -> i32 {
        if self.standalone.lock().take().is_some() {
            return 0;
        }
        let Some(client) = self.client.lock().take() else {
            return 0;
        };
        let closed = to_code(&block(py, client.close()));
        self.mapped.lock().clear();
        closed
    }
}

fn not_set_up() -> ErrorCode {
    tracing::warn!("the store is not set up (call setup() first)");
    ErrorCode::InvalidParams
}
