//! The store methods over the full client ([`Client`]: `setup`, `init_all`): this
//! process talks to the master and reads and writes its peers' segments itself.

use std::mem::MaybeUninit;
use std::time::Duration;

use mooncake_store::{to_code, Client, ErrorCode, Fragment, ReplicateConfig, TaskId, TaskInfo};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::backend::{Parts, StoreOps};
use super::codes::{exist_code, size_code, INVALID};
use crate::pybytes::{bytes_filled, bytes_many_filled};
use crate::runtime::block;

impl StoreOps for Client {
    fn hostname(&self) -> String {
        self.engine().segment_name().to_owned()
    }

    fn local_buffer_size(&self) -> u64 {
        self.config().local_buffer_size
    }

    fn alloc_from_mem_pool(&self, _size: u64) -> u64 {
        0
    }

    fn health(&self, py: Python<'_>) -> i32 {
        let probe = block(py, async {
            tokio::time::timeout(
                Duration::from_secs(2),
                self.master().exist_key("__mooncake_health_check__"),
            )
            .await
        });
        match probe {
            Ok(Ok(_)) => 0,
            _ => 2,
        }
    }

    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        parts: Vec<&[u8]>,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> i32 {
        if key.is_empty() {
            return INVALID;
        }
        to_code(&block(py, async {
            match parts.as_slice() {
                [one] if !upsert => Client::put(self, key, one, cfg).await,
                [one] => Client::upsert(self, key, one, cfg).await,
                many => self.put_parts(key, many, cfg, upsert).await,
            }
        }))
    }

    fn put_batch(
        &self,
        py: Python<'_>,
        keys: &[String],
        values: Vec<&[u8]>,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> i32 {
        let items: Vec<(&str, &[u8])> = keys.iter().map(String::as_str).zip(values).collect();
        let out = block(py, async {
            if upsert {
                self.upsert_batch(&items, cfg).await
            } else {
                Client::put_batch(self, &items, cfg).await
            }
        });
        out.iter().map(to_code).find(|c| *c != 0).unwrap_or(0)
    }

    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[(u64, u64)],
        cfg: Result<ReplicateConfig, ErrorCode>,
        upsert: bool,
    ) -> i32 {
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => return e.code(),
        };
        to_code(&block(py, self.put_parts_from(key, parts, &cfg, upsert)))
    }

    fn put_from_many(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        parts: Parts,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<i32> {
        let items: Vec<(&str, Vec<(u64, u64)>)> =
            keys.iter().map(String::as_str).zip(parts).collect();
        let out = block(py, self.batch_put_parts_from(&items, cfg, upsert));
        out.iter().map(to_code).collect()
    }

    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        // A value this client knows to be on another machine is read straight into the
        // new `bytes` (no staging copy); when that does not pan out, the usual path runs.
        if let Some(size) = block(py, self.remembered_network_size(key))
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s > 0)
        {
            let mut got = false;
            let bytes = bytes_filled(py, size, |out| {
                got = block(py, self.get_lent(key, out)) == Ok(true);
                if !got {
                    out.fill(MaybeUninit::new(0));
                }
            })?;
            if got {
                return Ok(Some(bytes));
            }
        }
        match block(py, self.get_value(key)) {
            Ok(v) => Ok(Some(bytes_filled(py, v.len(), |out| {
                v.read_into_uninit(out);
            })?)),
            Err(e) => {
                tracing::debug!(key, code = e.code(), "get failed");
                Ok(None)
            }
        }
    }

    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: &[String],
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Values this client knows to be on other machines are read straight into their
        // new `bytes` (no staging copy), one exchange per holder; the rest, and any that
        // do not pan out, take the staged path.
        let sizes = block(py, self.remembered_network_sizes(&refs));
        let lent: Vec<usize> = (0..refs.len())
            .filter(|&i| sizes[i].is_some_and(|s| s > 0))
            .collect();
        let mut done: Vec<Option<Bound<'py, PyBytes>>> = refs.iter().map(|_| None).collect();
        if !lent.is_empty() {
            let lens: Vec<usize> = lent
                .iter()
                .map(|&i| usize::try_from(sizes[i].unwrap_or(0)).unwrap_or(0))
                .collect();
            let mut served = Vec::new();
            let filled = bytes_many_filled(py, &lens, |outs| {
                let mut items: Vec<(&str, &mut [MaybeUninit<u8>])> = lent
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(&i, out)| (refs[i], &mut **out))
                    .collect();
                served = block(py, self.get_batch_lent(&mut items));
                for ((_, out), ok) in items.iter_mut().zip(&served) {
                    if !ok {
                        out.fill(MaybeUninit::new(0));
                    }
                }
            })?;
            for ((&i, bytes), ok) in lent.iter().zip(filled).zip(served) {
                if ok {
                    done[i] = Some(bytes);
                }
            }
        }
        let rest: Vec<&str> = (0..refs.len())
            .filter(|&i| done[i].is_none())
            .map(|i| refs[i])
            .collect();
        let mut staged = if rest.is_empty() {
            Vec::new()
        } else {
            block(py, self.get_batch_staged(&rest))
        }
        .into_iter();
        done.into_iter()
            .map(|d| match d {
                Some(bytes) => Ok(bytes),
                None => match staged.next() {
                    Some(Ok(v)) => bytes_filled(py, v.len(), |buf| v.read_into_uninit(buf)),
                    _ => Ok(PyBytes::new(py, b"")),
                },
            })
            .collect()
    }

    fn get_into(&self, py: Python<'_>, key: &str, addr: u64, size: u64) -> i64 {
        size_code(block(py, Client::get_into(self, key, addr, size)))
    }

    fn batch_get_into(&self, py: Python<'_>, items: Vec<(String, u64, u64)>) -> Vec<i64> {
        let items: Vec<(&str, u64, u64)> =
            items.iter().map(|(k, a, n)| (k.as_str(), *a, *n)).collect();
        let out = block(py, Client::batch_get_into(self, &items));
        out.into_iter().map(size_code).collect()
    }

    fn batch_get_into_parts(&self, py: Python<'_>, keys: Vec<String>, parts: Parts) -> Vec<i64> {
        let items: Vec<(&str, Vec<(u64, u64)>)> =
            keys.iter().map(String::as_str).zip(parts).collect();
        let out = block(py, Client::batch_get_into_parts(self, &items));
        out.into_iter().map(size_code).collect()
    }

    fn register_buffer(&self, py: Python<'_>, addr: u64, size: u64) -> i32 {
        // SAFETY: as with the C++ wheel, the caller vouches that the range is memory it
        // owns and keeps alive until `unregister_buffer`; peers read and write it then.
        let memory = unsafe { mooncake_transfer_engine::ForeignMemory::new(addr, size) };
        match block(py, self.engine().register_memory(memory, "cpu:0")) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(addr, size, "register_buffer failed: {e}");
                INVALID
            }
        }
    }

    fn unregister_buffer(&self, py: Python<'_>, addr: u64) -> i32 {
        match block(py, self.engine().unregister(addr)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(addr, "unregister_buffer failed: {e}");
                INVALID
            }
        }
    }

    fn is_exist(&self, py: Python<'_>, key: &str) -> i32 {
        exist_code(block(py, Client::is_exist(self, key)))
    }

    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        block(py, Client::batch_is_exist(self, &keys))
            .into_iter()
            .map(exist_code)
            .collect()
    }

    fn size(&self, py: Python<'_>, key: &str) -> i64 {
        size_code(block(py, self.get_size(key)))
    }

    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i32 {
        to_code(&block(py, Client::remove(self, key, force)))
    }

    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i32> {
        block(py, Client::batch_remove(self, &keys, force))
            .iter()
            .map(to_code)
            .collect()
    }

    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        size_code(block(py, Client::remove_all(self, force)))
    }

    fn remove_by_regex(&self, py: Python<'_>, pattern: &str, force: bool) -> i64 {
        size_code(block(py, Client::remove_by_regex(self, pattern, force)))
    }

    fn replica_clear(&self, py: Python<'_>, keys: &[String], segment_name: &str) -> Vec<String> {
        block(py, self.batch_replica_clear(keys, segment_name))
    }

    fn create_copy_task(
        &self,
        py: Python<'_>,
        key: &str,
        targets: &[String],
    ) -> Result<TaskId, ErrorCode> {
        block(py, Client::create_copy_task(self, key, targets))
    }

    fn create_move_task(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        block(py, Client::create_move_task(self, key, source, target))
    }

    fn query_task(&self, py: Python<'_>, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        block(py, Client::query_task(self, id))
    }

    fn range_capacity(&self, ptr: u64) -> Option<u64> {
        self.engine().registered_capacity(ptr)
    }

    fn read_ranges(&self, py: Python<'_>, items: Vec<(String, Vec<Fragment>)>) -> Vec<Vec<i64>> {
        block(py, Client::read_ranges(self, &items))
    }

    fn get_session_start(&self, py: Python<'_>, keys: &[String]) -> Vec<i32> {
        block(py, self.batch_get_session_start(keys))
    }

    fn get_session_end(&self, keys: &[String]) -> i32 {
        self.batch_get_session_end(keys);
        0
    }

    fn put_session_start(
        &self,
        py: Python<'_>,
        items: &[(String, u64)],
        cfg: &ReplicateConfig,
    ) -> Vec<i32> {
        block(py, self.batch_put_session_start(items, cfg))
    }

    fn session_ranges(
        &self,
        py: Python<'_>,
        items: &[(String, Vec<Fragment>)],
        write: bool,
    ) -> Vec<i64> {
        block(py, async {
            if write {
                self.put_session_ranges(items).await
            } else {
                self.get_session_ranges(items).await
            }
        })
    }

    fn put_session_finish(&self, py: Python<'_>, keys: &[String], commit: bool) -> Vec<i32> {
        block(py, self.batch_put_session_finish(keys, commit))
    }
}

/// `_replicas`: per key its replicas as `(buffer_address, size, transport_endpoint,
/// segment_name, replica_type)` (a read lease granted), or `None` when it has none
/// readable. `replica_type` is Mooncake's: 0 memory, 2 local disk (a holder's disk tier:
/// address 0, no endpoint).
pub(super) fn replicas(py: Python<'_>, c: &Client, keys: &[String]) -> Vec<Option<Vec<PyReplica>>> {
    block(py, c.replica_lists(keys))
        .into_iter()
        .map(|r| {
            r.ok().map(|list| {
                let size = list.size();
                let disk = list
                    .disk_segments
                    .into_iter()
                    .map(move |s| (0, size, String::new(), s, LOCAL_DISK));
                list.replicas
                    .into_iter()
                    .map(|d| {
                        (
                            d.buffer_address,
                            d.size,
                            d.transport_endpoint,
                            d.segment_name,
                            MEMORY,
                        )
                    })
                    .chain(disk)
                    .collect()
            })
        })
        .collect()
}

/// A replica as the wheel's `_replicas` gives it.
pub(super) type PyReplica = (u64, u64, String, String, i32);

/// Mooncake's `ReplicaType::MEMORY`.
const MEMORY: i32 = 0;
/// Mooncake's `ReplicaType::LOCAL_DISK`.
const LOCAL_DISK: i32 = 2;
