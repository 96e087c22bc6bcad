//! `MooncakeDistributedStore`: the C++ wheel's store class over [`mooncake_store::Client`]
//! or, after `setup_dummy`, the node's store service. Each Python method is written once
//! here: it checks and converts its arguments, then hands the part that differs between
//! the two clients to the [`Backend`] (`backend.rs`, `full.rs`, `standalone.rs`).
//!
//! Return conventions (`python-api.md` §1): `0` or a negative Mooncake code for status,
//! sizes or a negative code for reads, `b''` for a failed `get`, per-key lists in input
//! order for batches.

mod args;
mod backend;
mod codes;
mod full;
mod ranges;
mod segments;
mod setup;
mod standalone;
mod state;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use mooncake_store::standalone::StandaloneClient;
use mooncake_store::{Client, ErrorCode};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::addr::{address, addresses};
use crate::config::{store_config_for, PyReplicateConfig};
use args::{keys_arg, multi_parts, u64s};
use codes::{task_id_result, PyTaskId, INVALID};
use full::PyReplica;

/// A store client: `setup(...)`, then put/get by key. Safe to share between threads.
#[pyclass(module = "mooncake.store", name = "MooncakeDistributedStore", subclass)]
#[derive(Default)]
pub(crate) struct Store {
    /// Set by `setup` / `init_all`.
    client: Mutex<Option<Client>>,
    /// Set by `setup_dummy`: every call goes to the node's store service instead.
    standalone: Mutex<Option<Arc<StandaloneClient>>>,
    /// The file mappings behind `mount_segment`, by segment id.
    mapped: Mutex<HashMap<u128, memmap2::MmapMut>>,
}

#[pymethods]
impl Store {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// `setup(local_hostname, metadata_server, global_segment_size, local_buffer_size,
    /// protocol, rdma_devices, master_server_addr, ...)` or `setup(config: dict)`.
    #[pyo3(signature = (local_hostname, metadata_server=None, global_segment_size=None,
        local_buffer_size=None, protocol=None, rdma_devices=None, master_server_addr=None,
        engine=None, enable_ssd_offload=false, ssd_offload_path=String::new(),
        tenant_id=String::from("default"), enable_client_http_server=false,
        client_http_port=9300))]
    #[allow(clippy::too_many_arguments, unused_variables)]
    fn setup(
        &self,
        py: Python<'_>,
        local_hostname: Bound<'_, PyAny>,
        metadata_server: Option<Bound<'_, PyAny>>,
        global_segment_size: Option<Bound<'_, PyAny>>,
        local_buffer_size: Option<Bound<'_, PyAny>>,
        protocol: Option<Bound<'_, PyAny>>,
        rdma_devices: Option<Bound<'_, PyAny>>,
        master_server_addr: Option<Bound<'_, PyAny>>,
        engine: Option<Bound<'_, PyAny>>,
        enable_ssd_offload: bool,
        ssd_offload_path: String,
        tenant_id: String,
        enable_client_http_server: bool,
        client_http_port: u16,
    ) -> PyResult<i32> {
        if let Ok(d) = local_hostname.cast::<PyDict>() {
            return Ok(match setup::config_from_dict(d)? {
                Ok(c) => self.do_setup(py, c),
                Err(code) => code,
            });
        }
        let disk = match setup::ssd_offload(enable_ssd_offload, &ssd_offload_path) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("setup(): {e}");
                return Ok(codes::INVALID);
            }
        };
        let mut config = setup::Positional {
            metadata_server,
            global_segment_size,
            local_buffer_size,
            protocol,
            rdma_devices,
            master_server_addr,
        }
        .config(&local_hostname)?;
        config.disk = disk;
        Ok(self.do_setup(py, config))
    }

    /// Mooncake's older entry point: `setup("localhost:12345", "127.0.0.1:2379",
    /// mount_segment_size, 1 GiB, protocol, device_name, "127.0.0.1:50051")`, i.e. etcd
    /// metadata on this host (refused with a clear error by a build without etcd). -600 if
    /// the store is already set up.
    #[pyo3(signature = (protocol, device_name, mount_segment_size=16 << 20))]
    fn init_all(
        &self,
        py: Python<'_>,
        protocol: String,
        device_name: String,
        mount_segment_size: u64,
    ) -> i32 {
        if self.is_set_up() {
            tracing::error!("Client is already initialized");
            return INVALID;
        }
        let config = setup::init_all_config(protocol, device_name, mount_segment_size);
        self.do_setup(py, config)
    }

    /// Standalone mode: a thin client forwarding every call to the store service on this
    /// host whose `--port` is the port of `server_address`, sharing a memory pool of
    /// `mem_pool_size` bytes with it (plus `local_buffer_size` of staging). 0, or a negative
    /// code with the reason in the log (e.g. -900 when the store service is unreachable).
    fn setup_dummy(
        &self,
        py: Python<'_>,
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
    ) -> i32 {
        self.connect_standalone(py, mem_pool_size, local_buffer_size, server_address)
    }

    /// Whether `setup`/`setup_dummy` succeeded and `close` has not been called since.
    fn _is_set_up(&self) -> bool {
        self.is_set_up()
    }

    /// The setup-time local (staging) buffer's size; 0 when not set up or set up without one.
    fn _local_buffer_size(&self) -> u64 {
        self.active().map_or(0, |b| b.ops().local_buffer_size())
    }

    /// In standalone mode, `size` bytes of the shared pool for zero-copy calls (an address);
    /// 0 when the pool is full or not in standalone mode.
    fn alloc_from_mem_pool(&self, size: u64) -> u64 {
        self.active()
            .map_or(0, |b| b.ops().alloc_from_mem_pool(size))
    }

    /// Unmounts the contributed segment and stops the engine; 0, also when called twice.
    fn close(&self, py: Python<'_>) -> i32 {
        self.close_client(py)
    }

    /// 0 healthy, 1 not set up or closed, 2 master unreachable.
    fn health_check(&self, py: Python<'_>) -> i32 {
        self.active().map_or(1, |b| b.ops().health(py))
    }

    /// The `host:port` segment name of this client.
    fn get_hostname(&self) -> String {
        self.active()
            .map(|b| b.ops().hostname())
            .unwrap_or_default()
    }

    // ---- bytes API ----

    /// Stores `value`; an existing key keeps its value and 0 is returned.
    #[pyo3(signature = (key, value, config=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_parts(py, key, &[value], config, false)
    }

    /// Stores `value`, replacing an existing one.
    #[pyo3(signature = (key, value, config=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        key: &str,
        value: Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_parts(py, key, &[value], config, true)
    }

    /// Stores the concatenation of `parts` as one object.
    #[pyo3(signature = (key, *parts, config=None))]
    fn put_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: Bound<'_, PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts: Vec<_> = parts.iter().collect();
        self.write_tuple(py, key, &parts, config, false)
    }

    /// `put_parts`, replacing an existing value.
    #[pyo3(signature = (key, *parts, config=None))]
    fn upsert_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: Bound<'_, PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts: Vec<_> = parts.iter().collect();
        self.write_tuple(py, key, &parts, config, true)
    }

    /// Stores many values; one int: 0, or the first per-key error.
    #[pyo3(signature = (keys, values, config=None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_batch(py, &keys, &values, config, false)
    }

    /// `put_batch`, replacing existing values.
    #[pyo3(signature = (keys, values, config=None))]
    fn upsert_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_batch(py, &keys, &values, config, true)
    }

    /// The value, or `b''` on any failure.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyBytes>> {
        Ok(self
            .get_or_none(py, key)?
            .unwrap_or_else(|| PyBytes::new(py, b"")))
    }

    /// The value, or `None` on any failure (backs `get_buffer`).
    fn get_or_none<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.with(|_| Ok(None), |s| s.get(py, key))
    }

    /// One `bytes` per key (`b''` for failures); `[b'']` when the whole call fails.
    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        self.with(
            |_| Ok(vec![PyBytes::new(py, b"")]),
            |s| s.get_batch(py, &keys),
        )
    }

    // ---- zero-copy API ----

    /// Registers `[buffer_ptr, buffer_ptr+size)` for zero-copy calls; 0 or negative.
    fn register_buffer(
        &self,
        py: Python<'_>,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
    ) -> PyResult<i32> {
        let addr = address(&buffer_ptr)?;
        Ok(self.with(|e| e.code(), |s| s.register_buffer(py, addr, size)))
    }

    /// Unregisters a buffer (waits for transfers using it); -600 for an unknown pointer.
    fn unregister_buffer(&self, py: Python<'_>, buffer_ptr: Bound<'_, PyAny>) -> PyResult<i32> {
        let addr = address(&buffer_ptr)?;
        Ok(self.with(|e| e.code(), |s| s.unregister_buffer(py, addr)))
    }

    /// Stores `size` bytes at `buffer_ptr` without copying; existing keys return 0.
    #[pyo3(signature = (key, buffer_ptr, size, config=None))]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts = [(address(&buffer_ptr)?, size)];
        Ok(self.one_from(py, key, &parts, config, false))
    }

    /// `put_from`, replacing an existing value (which may change size).
    #[pyo3(signature = (key, buffer_ptr, size, config=None))]
    fn upsert_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts = [(address(&buffer_ptr)?, size)];
        Ok(self.one_from(py, key, &parts, config, true))
    }

    /// Stores metadata followed by data as one object.
    #[pyo3(signature = (key, buffer_ptr, metadata_buffer_ptr, size, metadata_size, config=None))]
    #[allow(clippy::too_many_arguments)]
    fn put_from_with_metadata(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        metadata_buffer_ptr: Bound<'_, PyAny>,
        size: u64,
        metadata_size: u64,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts = [
            (address(&metadata_buffer_ptr)?, metadata_size),
            (address(&buffer_ptr)?, size),
        ];
        if !self.is_set_up() {
            return Ok(INVALID);
        }
        // The wheel stores nothing for an empty value, whatever the metadata, and refuses
        // a same-node placement with -1 here.
        if size == 0 {
            return Ok(0);
        }
        if config.as_ref().is_some_and(|c| c.same_node()) {
            return Ok(ErrorCode::InternalError.code());
        }
        Ok(self.one_from(py, key, &parts, config, false))
    }

    /// Reads `key` into `[buffer_ptr, buffer_ptr+size)`; the object's size, or -704
    /// missing, -600 buffer too small (untouched), -800 transfer failure.
    fn get_into(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
    ) -> PyResult<i64> {
        let addr = address(&buffer_ptr)?;
        Ok(self.with(|e| e.code().into(), |s| s.get_into(py, key, addr, size)))
    }

    /// Zero-copy batch put; per-key 0 or negative code.
    #[pyo3(signature = (keys, buffer_ptrs, sizes, config=None))]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<Vec<i32>> {
        self.batch_from(py, keys, &buffer_ptrs, sizes, config, false)
    }

    /// `batch_put_from`, replacing existing values.
    #[pyo3(signature = (keys, buffer_ptrs, sizes, config=None))]
    fn batch_upsert_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<Vec<i32>> {
        self.batch_from(py, keys, &buffer_ptrs, sizes, config, true)
    }

    /// Zero-copy batch get; per-key size or negative code.
    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
    ) -> PyResult<Vec<i64>> {
        if keys.len() != buffer_ptrs.len() || keys.len() != sizes.len() {
            return Ok(vec![INVALID.into(); keys.len()]);
        }
        let ptrs = addresses(&buffer_ptrs)?;
        let b = match self.backend() {
            Ok(b) => b,
            Err(e) => return Ok(vec![e.code().into(); keys.len()]),
        };
        let items = keys
            .into_iter()
            .zip(ptrs.into_iter().zip(sizes))
            .map(|(k, (a, n))| (k, a, n))
            .collect();
        Ok(b.ops().batch_get_into(py, items))
    }

    /// Each object is the concatenation of its buffers, in order; per-key 0 or negative.
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, config=None))]
    fn batch_put_from_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<Bound<'_, PyAny>>>,
        all_sizes: Vec<Vec<u64>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<Vec<i32>> {
        if !self.is_set_up() {
            return Ok(Vec::new());
        }
        let Some(parts) = multi_parts(&all_buffer_ptrs, &all_sizes)? else {
            return Ok(vec![INVALID; keys.len()]);
        };
        Ok(self.batch_parts_from(py, keys, parts, config, false, true))
    }

    /// Scatters each object over its buffers; per-key total bytes, -704 missing, -600 if
    /// the buffers are too small, -800 if they exceed the object (exact fit).
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, prefer_alloc_in_same_node=false))]
    #[allow(unused_variables)]
    fn batch_get_into_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<Bound<'_, PyAny>>>,
        all_sizes: Vec<Vec<u64>>,
        prefer_alloc_in_same_node: bool,
    ) -> PyResult<Vec<i64>> {
        let parts = match multi_parts(&all_buffer_ptrs, &all_sizes)? {
            Some(p) if p.len() == keys.len() => p,
            _ => return Ok(vec![INVALID.into(); keys.len()]),
        };
        let n = keys.len();
        Ok(self.with(
            |e| vec![e.code().into(); n],
            |s| s.batch_get_into_parts(py, keys, parts),
        ))
    }

    // ---- existence, size, removal ----

    /// 1 exists, 0 does not, negative on error; grants a read lease when 1.
    fn is_exist(&self, py: Python<'_>, key: &str) -> i32 {
        self.with(|e| e.code(), |s| s.is_exist(py, key))
    }

    /// Per-key 1, 0 or negative; `[]` for `[]`.
    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        if keys.is_empty() {
            return Vec::new();
        }
        let n = keys.len();
        self.with(|e| vec![e.code(); n], |s| s.batch_is_exist(py, keys))
    }

    /// The object's size, or a negative code (-704 missing).
    fn get_size(&self, py: Python<'_>, key: &str) -> i64 {
        self.with(|e| e.code().into(), |s| s.size(py, key))
    }

    /// 0; -704 missing; -706 while leased unless `force`.
    #[pyo3(signature = (key, force=false))]
    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i32 {
        self.with(|e| e.code(), |s| s.remove(py, key, force))
    }

    /// Per-key results of `remove`.
    #[pyo3(signature = (keys, force=false))]
    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i32> {
        let n = keys.len();
        self.with(|e| vec![e.code(); n], |s| s.batch_remove(py, keys, force))
    }

    /// Removes every object (leased ones only with `force`); the count, or negative.
    #[pyo3(signature = (force=false))]
    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        self.with(|e| e.code().into(), |s| s.remove_all(py, force))
    }

    // ---- sessions and ranged reads/writes (python-api-2.md §2, §4) ----

    /// Opens a get session per key: 0 or the master's code; `[]` when not set up.
    fn batch_get_session_start(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        match self.active() {
            Some(b) => b.ops().get_session_start(py, &keys),
            None => Vec::new(),
        }
    }

    /// Drops get sessions: 0 (-1 when not set up).
    fn batch_get_session_end(&self, keys: Vec<String>) -> i32 {
        match self.active() {
            Some(b) => b.ops().get_session_end(&keys),
            None => -1,
        }
    }

    /// Reads fragments through get sessions: per key the bytes read, or a negative code.
    fn batch_get_into_multi_buffer_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Bound<'_, PyAny>,
        all_sizes: Bound<'_, PyAny>,
        all_src_offsets: Bound<'_, PyAny>,
    ) -> PyResult<Vec<i64>> {
        let request = [
            u64s(&all_buffer_ptrs)?,
            u64s(&all_sizes)?,
            u64s(&all_src_offsets)?,
        ];
        let b = self.active();
        Ok(ranges::session_ranges(py, b.as_ref(), keys, request, false))
    }

    /// Reserves puts without writing them: 0 or the master's code (-705 when the object
    /// exists); `[]` when not set up.
    #[pyo3(signature = (keys, sizes, config=None))]
    fn batch_put_session_start(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i32> {
        let Some(b) = self.active() else {
            return Vec::new();
        };
        let cfg = match store_config_for(config, keys.len()) {
            Ok(cfg) if keys.len() == sizes.len() => cfg,
            _ => return vec![INVALID; keys.len()],
        };
        let items: Vec<(String, u64)> = keys.into_iter().zip(sizes).collect();
        b.ops().put_session_start(py, &items, &cfg)
    }

    /// Writes fragments into put sessions: per key the bytes written, or a negative code.
    fn batch_put_from_multi_buffer_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Bound<'_, PyAny>,
        all_sizes: Bound<'_, PyAny>,
        all_dst_offsets: Bound<'_, PyAny>,
    ) -> PyResult<Vec<i64>> {
        let request = [
            u64s(&all_buffer_ptrs)?,
            u64s(&all_sizes)?,
            u64s(&all_dst_offsets)?,
        ];
        let b = self.active();
        Ok(ranges::session_ranges(py, b.as_ref(), keys, request, true))
    }

    /// Commits put sessions: per key 0, -600 without a session, or the master's code.
    fn batch_put_session_end(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        match self.active() {
            Some(b) => b.ops().put_session_finish(py, &keys, true),
            None => Vec::new(),
        }
    }

    /// Abandons put sessions: per key 0, -600 without a session, or the master's code.
    fn batch_put_session_revoke(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        match self.active() {
            Some(b) => b.ops().put_session_finish(py, &keys, false),
            None => Vec::new(),
        }
    }

    /// Reads `all_sizes[i][j][k]` bytes of `all_keys[i][j]` at object offset
    /// `all_src_offsets[i][j][k]` into `buffer_ptrs[i] + all_dst_offsets[i][j][k]`: per
    /// fragment its length or a negative code, shaped like the request (-600 throughout for
    /// a malformed request or a buffer that is not registered).
    fn get_into_ranges(
        &self,
        py: Python<'_>,
        buffer_ptrs: Bound<'_, PyAny>,
        all_keys: Vec<Vec<String>>,
        all_dst_offsets: Bound<'_, PyAny>,
        all_src_offsets: Bound<'_, PyAny>,
        all_sizes: Bound<'_, PyAny>,
    ) -> PyResult<Vec<Vec<Vec<i64>>>> {
        let reads = ranges::RangeReads {
            ptrs: u64s(&buffer_ptrs)?,
            keys: all_keys,
            dst: u64s(&all_dst_offsets)?,
            src: u64s(&all_src_offsets)?,
            sizes: u64s(&all_sizes)?,
        };
        Ok(reads.run(py, self.active().as_ref()))
    }

    // ---- extra segments (python-api-2.md §11) ----

    /// Maps `[offset, offset+size)` of the file at `path` (offset page-aligned, the range
    /// inside the file) and mounts it as a segment of this client:
    /// `{'ret': 0, 'segment_ids': ['<hi>-<lo>']}`, or `ret` -1 with nothing mounted.
    #[pyo3(signature = (path, size, offset=0, protocol=String::from("tcp"), location=String::new()))]
    #[allow(unused_variables)]
    fn mount_segment<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        size: u64,
        offset: u64,
        protocol: String,
        location: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.mount_file(py, path, size, offset)
    }

    /// Allocates `size` bytes (rounded up to 16 MiB) and mounts them as a segment of this
    /// client: `{'ret': 0, 'segment_ids': [...], 'allocated_size': n}`, or `ret` -1.
    #[pyo3(signature = (size, protocol=String::from("tcp"), location=String::new()))]
    #[allow(unused_variables)]
    fn allocate_and_mount_segment<'py>(
        &self,
        py: Python<'py>,
        size: u64,
        protocol: String,
        location: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.mount_allocated(py, size)
    }

    /// Unmounts segments from `mount_segment`: 0, or the first error (-1 for an id that
    /// does not parse or that this client did not mount).
    #[pyo3(signature = (segment_ids, grace_period_seconds=0))]
    #[allow(unused_variables)]
    fn unmount_segment(
        &self,
        py: Python<'_>,
        segment_ids: Vec<String>,
        grace_period_seconds: u64,
    ) -> i32 {
        self.unmount_extras(py, &segment_ids)
    }

    /// Unmounts segments from `allocate_and_mount_segment` and frees their memory.
    #[pyo3(signature = (segment_ids, grace_period_seconds=0))]
    #[allow(unused_variables)]
    fn unmount_and_free_segment(
        &self,
        py: Python<'_>,
        segment_ids: Vec<String>,
        grace_period_seconds: u64,
    ) -> i32 {
        self.unmount_extras(py, &segment_ids)
    }

    /// Accepted for compatibility: a disk tier (`enable_ssd_offload`) stays with the client
    /// until `close` (its records stay on disk for the next setup). 0 when set up, -1
    /// otherwise.
    #[pyo3(signature = (grace_period_seconds=0))]
    #[allow(unused_variables)]
    fn unmount_local_disk_segment(&self, grace_period_seconds: u64) -> i32 {
        if self.client.lock().is_some() {
            0
        } else {
            -1
        }
    }

    // ---- replica clear, regex removal, replica descriptors, copy and move tasks ----

    /// The keys (of `keys`) this client created that nobody holds a lease on, cleared: the
    /// whole object, or only its replicas on `segment_name` when given. Never an error
    /// code: skipped keys (and every key, when the call fails) are simply left out.
    #[pyo3(signature = (keys, segment_name=String::new()))]
    fn batch_replica_clear(
        &self,
        py: Python<'_>,
        keys: Bound<'_, PyAny>,
        segment_name: String,
    ) -> PyResult<Vec<String>> {
        let keys = keys_arg(&keys)?;
        Ok(self.with(
            |_| Vec::new(),
            |s| s.replica_clear(py, &keys, &segment_name),
        ))
    }

    /// Removes every object whose key matches the (ECMAScript-like) regular expression;
    /// the count, or a negative code (-600 for a pattern that does not compile).
    #[pyo3(signature = (regex_pattern, force=false))]
    fn remove_by_regex(&self, py: Python<'_>, regex_pattern: &str, force: bool) -> i64 {
        self.with(
            |e| e.code().into(),
            |s| s.remove_by_regex(py, regex_pattern, force),
        )
    }

    /// Queues a copy of `key` to the `targets` segments: `((hi, lo), 0)` or `((0, 0), code)`.
    fn create_copy_task(&self, py: Python<'_>, key: &str, targets: Vec<String>) -> (PyTaskId, i32) {
        task_id_result(
            self.backend()
                .and_then(|b| b.ops().create_copy_task(py, key, &targets)),
        )
    }

    /// Queues a move of `key`'s replica on `source` to `target`.
    fn create_move_task(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
        target: &str,
    ) -> (PyTaskId, i32) {
        task_id_result(
            self.backend()
                .and_then(|b| b.ops().create_move_task(py, key, source, target)),
        )
    }

    /// `(QueryTaskResponse, 0)`, or `(None, code)` (-1400 for an unknown id).
    fn query_task(
        &self,
        py: Python<'_>,
        task_id: Bound<'_, PyAny>,
    ) -> PyResult<(Option<crate::task::QueryTaskResponse>, i32)> {
        let id = crate::task::task_id_arg(&task_id)?;
        Ok(
            match self.backend().and_then(|b| b.ops().query_task(py, id)) {
                Ok(info) => (Some(info.into()), 0),
                Err(e) => (None, e.code()),
            },
        )
    }

    /// Per key, its replicas (grants a read lease), or `None` when it has none readable.
    fn _replicas(&self, py: Python<'_>, keys: Vec<String>) -> Vec<Option<Vec<PyReplica>>> {
        match self.client() {
            Ok(c) => full::replicas(py, &c, &keys),
            Err(_) => vec![None; keys.len()],
        }
    }

    /// Reads served from this client's disk tier (`enable_ssd_offload`): records it loaded
    /// back into its memory for a reader. 0 without a tier or before `setup`.
    fn get_offload_rpc_read_count(&self) -> u64 {
        self.client()
            .ok()
            .and_then(|c| c.disk_tier().cloned())
            .map_or(0, |t| {
                t.stats()
                    .disk_hits
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
    }
}
