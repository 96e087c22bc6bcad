//! What a store call runs on: the full client ([`Client`]) or, after `setup_dummy`, the
//! standalone client of the node's store service ([`StandaloneClient`]). Each Python
//! method is written once (in `mod.rs`) and reaches the half that differs through
//! [`Backend::ops`]; `full.rs` and `standalone.rs` implement [`StoreOps`] for the two.

use std::sync::Arc;

use mooncake_store::standalone::StandaloneClient;
use mooncake_store::{Client, ErrorCode, Fragment, ReplicateConfig, TaskId, TaskInfo};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Each object's `(addr, len)` ranges, in order.
pub(super) type Parts = Vec<Vec<(u64, u64)>>;

/// The client a set-up store forwards to (cheap to clone: both are handles).
#[derive(Clone)]
pub(super) enum Backend {
    /// `setup` / `init_all`: this process is a client of the master and of its peers.
    Full(Client),
    /// `setup_dummy`: every call goes to the node's store service.
    Standalone(Arc<StandaloneClient>),
}

impl Backend {
    /// The operations of this backend.
    pub(super) fn ops(&self) -> &dyn StoreOps {
        match self {
            Backend::Full(c) => c,
            Backend::Standalone(d) => &**d,
        }
    }
}

/// The store operations whose code differs between the two clients. Arguments arrive
/// checked and converted; results are already the wheel's codes (`python-api.md` §1).
/// Every method that waits on the network releases the GIL while it does.
pub(super) trait StoreOps {
    /// `get_hostname`: the `host:port` segment name.
    fn hostname(&self) -> String;
    /// `_local_buffer_size`: the setup-time staging buffer's size.
    fn local_buffer_size(&self) -> u64;
    /// `alloc_from_mem_pool`: an address in the shared pool, or 0.
    fn alloc_from_mem_pool(&self, size: u64) -> u64;
    /// `health_check`: 0 healthy, 2 unreachable.
    fn health(&self, py: Python<'_>) -> i32;

    /// `put`/`upsert`/`put_parts`: one object, the concatenation of `parts`.
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        parts: Vec<&[u8]>,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> i32;
    /// `put_batch`/`upsert_batch`: 0, or the first per-key error.
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: &[String],
        values: Vec<&[u8]>,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> i32;
    /// `put_from` and friends: one object from caller memory; `cfg` is checked here, after
    /// the checks that come first in this mode.
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[(u64, u64)],
        cfg: Result<ReplicateConfig, ErrorCode>,
        upsert: bool,
    ) -> i32;
    /// `batch_put_from` and the multi-buffer form: per key 0 or a code.
    fn put_from_many(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        parts: Parts,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<i32>;

    /// `get`: the value in a new `bytes`, or `None`.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>>;
    /// `get_batch`: one `bytes` per key, `b''` for failures.
    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: &[String],
    ) -> PyResult<Vec<Bound<'py, PyBytes>>>;
    /// `get_into`: the object's size or a code.
    fn get_into(&self, py: Python<'_>, key: &str, addr: u64, size: u64) -> i64;
    /// `batch_get_into`: `(key, addr, capacity)` items; per key the size or a code.
    fn batch_get_into(&self, py: Python<'_>, items: Vec<(String, u64, u64)>) -> Vec<i64>;
    /// `batch_get_into_multi_buffers`: exact-fit scatter reads; per key the size or a code.
    fn batch_get_into_parts(&self, py: Python<'_>, keys: Vec<String>, parts: Parts) -> Vec<i64>;

    /// `register_buffer`: 0 or a code.
    fn register_buffer(&self, py: Python<'_>, addr: u64, size: u64) -> i32;
    /// `unregister_buffer`: 0 or a code.
    fn unregister_buffer(&self, py: Python<'_>, addr: u64) -> i32;

    /// `is_exist`: 1, 0 or a code.
    fn is_exist(&self, py: Python<'_>, key: &str) -> i32;
    /// `batch_is_exist`, for a non-empty `keys`.
    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32>;
    /// `get_size`: the size or a code.
    fn size(&self, py: Python<'_>, key: &str) -> i64;
    /// `remove`: 0 or a code.
    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i32;
    /// `batch_remove`: per key 0 or a code.
    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i32>;
    /// `remove_all`: the count or a code.
    fn remove_all(&self, py: Python<'_>, force: bool) -> i64;
    /// `remove_by_regex`: the count or a code.
    fn remove_by_regex(&self, py: Python<'_>, pattern: &str, force: bool) -> i64;
    /// `batch_replica_clear`: the keys cleared.
    fn replica_clear(&self, py: Python<'_>, keys: &[String], segment_name: &str) -> Vec<String>;

    /// `create_copy_task`.
    fn create_copy_task(
        &self,
        py: Python<'_>,
        key: &str,
        targets: &[String],
    ) -> Result<TaskId, ErrorCode>;
    /// `create_move_task`.
    fn create_move_task(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode>;
    /// `query_task`.
    fn query_task(&self, py: Python<'_>, id: TaskId) -> Result<TaskInfo, ErrorCode>;

    /// `get_into_ranges`: bytes the buffer at `ptr` can take from `ptr` on, `None` when
    /// this backend cannot read into it.
    fn range_capacity(&self, ptr: u64) -> Option<u64>;
    /// `get_into_ranges`: `(key, [(addr, len, object offset)])` reads, per fragment its
    /// length or a code.
    fn read_ranges(&self, py: Python<'_>, items: Vec<(String, Vec<Fragment>)>) -> Vec<Vec<i64>>;

    /// `batch_get_session_start`: per key 0 or a code.
    fn get_session_start(&self, py: Python<'_>, keys: &[String]) -> Vec<i32>;
    /// `batch_get_session_end`: 0 or a code.
    fn get_session_end(&self, keys: &[String]) -> i32;
    /// `batch_put_session_start`: `(key, size)` items, per key 0 or a code.
    fn put_session_start(
        &self,
        py: Python<'_>,
        items: &[(String, u64)],
        cfg: &ReplicateConfig,
    ) -> Vec<i32>;
    /// The ranged reads (`write == false`) and writes through sessions: per item the bytes
    /// moved or a code.
    fn session_ranges(
        &self,
        py: Python<'_>,
        items: &[(String, Vec<Fragment>)],
        write: bool,
    ) -> Vec<i64>;
    /// `batch_put_session_end` (`commit`) and `batch_put_session_revoke`.
    fn put_session_finish(&self, py: Python<'_>, keys: &[String], commit: bool) -> Vec<i32>;
}
