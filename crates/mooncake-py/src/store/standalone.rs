//! `setup_dummy` (standalone mode): the store methods of a thin client, forwarding to the
//! node's store service ([`mooncake_store::standalone`]). Same return conventions as the
//! full client; zero-copy buffers must lie in the shared pool (`alloc_from_mem_pool`).
//! The store service keeps no sessions and no replica lists for us: those calls give -600.

use mooncake_store::standalone::StandaloneClient;
use mooncake_store::{ErrorCode, Fragment, ReplicateConfig, TaskId, TaskInfo};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::backend::{Parts, StoreOps};
use crate::runtime::block;

const INVALID: i64 = ErrorCode::InvalidParams as i64;

/// Codes from the store service, as the wheel's `int`s.
fn codes(v: Vec<i64>) -> Vec<i32> {
    v.into_iter().map(|c| c as i32).collect()
}

impl StoreOps for StandaloneClient {
    fn hostname(&self) -> String {
        StandaloneClient::hostname(self).to_owned()
    }

    fn local_buffer_size(&self) -> u64 {
        StandaloneClient::local_buffer_size(self)
    }

    fn alloc_from_mem_pool(&self, size: u64) -> u64 {
        StandaloneClient::alloc_from_mem_pool(self, size).unwrap_or(0)
    }

    fn health(&self, py: Python<'_>) -> i32 {
        if block(py, self.healthy()) {
            0
        } else {
            2
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
        put_one(py, self, key, parts, cfg, upsert)
    }

    fn put_batch(
        &self,
        py: Python<'_>,
        keys: &[String],
        values: Vec<&[u8]>,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> i32 {
        let items: Vec<(String, Vec<&[u8]>)> = keys
            .iter()
            .cloned()
            .zip(values.into_iter().map(|v| vec![v]))
            .collect();
        first_error(&put_values(py, self, &items, cfg, upsert))
    }

    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[(u64, u64)],
        cfg: Result<ReplicateConfig, ErrorCode>,
        upsert: bool,
    ) -> i32 {
        if parts.iter().map(|p| p.1).sum::<u64>() == 0 {
            return if key.is_empty() {
                super::codes::INVALID
            } else {
                0
            };
        }
        match cfg {
            Ok(cfg) => {
                let items = vec![(key.to_owned(), parts.to_vec())];
                put_from(py, self, items, &cfg, upsert)[0] as i32
            }
            Err(e) => e.code(),
        }
    }

    fn put_from_many(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        parts: Parts,
        cfg: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<i32> {
        let items = keys.into_iter().zip(parts).collect();
        codes(put_from(py, self, items, cfg, upsert))
    }

    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        get(py, self, key)
    }

    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: &[String],
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        keys.iter()
            .map(|k| Ok(get(py, self, k)?.unwrap_or_else(|| PyBytes::new(py, b""))))
            .collect()
    }

    fn get_into(&self, py: Python<'_>, key: &str, addr: u64, size: u64) -> i64 {
        get_into(py, self, vec![(key.to_owned(), addr, size)])[0]
    }

    fn batch_get_into(&self, py: Python<'_>, items: Vec<(String, u64, u64)>) -> Vec<i64> {
        get_into(py, self, items)
    }

    fn batch_get_into_parts(&self, py: Python<'_>, keys: Vec<String>, parts: Parts) -> Vec<i64> {
        get_into_parts(py, self, keys.into_iter().zip(parts).collect())
    }

    fn register_buffer(&self, _py: Python<'_>, addr: u64, size: u64) -> i32 {
        if self.offset_of(addr, size).is_some() {
            return 0;
        }
        tracing::warn!(
            addr,
            size,
            "in standalone mode buffers must come from alloc_from_mem_pool"
        );
        super::codes::INVALID
    }

    fn unregister_buffer(&self, _py: Python<'_>, addr: u64) -> i32 {
        if self.offset_of(addr, 1).is_some() {
            0
        } else {
            super::codes::INVALID
        }
    }

    fn is_exist(&self, py: Python<'_>, key: &str) -> i32 {
        block(py, StandaloneClient::is_exist(self, vec![key.to_owned()]))[0] as i32
    }

    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        codes(block(py, StandaloneClient::is_exist(self, keys)))
    }

    fn size(&self, py: Python<'_>, key: &str) -> i64 {
        block(py, self.get_size(key.to_owned()))
    }

    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i32 {
        block(
            py,
            StandaloneClient::remove(self, vec![key.to_owned()], force),
        )[0] as i32
    }

    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i32> {
        codes(block(py, StandaloneClient::remove(self, keys, force)))
    }

    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        block(py, StandaloneClient::remove_all(self, force))
    }

    fn remove_by_regex(&self, py: Python<'_>, pattern: &str, force: bool) -> i64 {
        block(py, StandaloneClient::remove_by_regex(self, pattern, force))
    }

    fn replica_clear(&self, _py: Python<'_>, _keys: &[String], _segment: &str) -> Vec<String> {
        Vec::new()
    }

    fn create_copy_task(
        &self,
        py: Python<'_>,
        key: &str,
        targets: &[String],
    ) -> Result<TaskId, ErrorCode> {
        block(py, StandaloneClient::create_copy_task(self, key, targets))
    }

    fn create_move_task(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        block(
            py,
            StandaloneClient::create_move_task(self, key, source, target),
        )
    }

    fn query_task(&self, py: Python<'_>, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        block(py, StandaloneClient::query_task(self, id))
    }

    /// The buffers are in the shared pool and the store service reads into it.
    fn range_capacity(&self, ptr: u64) -> Option<u64> {
        self.offset_of(ptr, 1).map(|off| self.pool_len() - off)
    }

    fn read_ranges(&self, py: Python<'_>, items: Vec<(String, Vec<Fragment>)>) -> Vec<Vec<i64>> {
        let in_pool = items
            .into_iter()
            .map(|(k, frags)| {
                let frags = frags
                    .into_iter()
                    .map(|(a, len, src)| (self.offset_of(a, 0).unwrap_or(u64::MAX), len, src))
                    .collect();
                (k, frags)
            })
            .collect();
        block(py, StandaloneClient::read_ranges(self, in_pool))
    }

    fn get_session_start(&self, _py: Python<'_>, keys: &[String]) -> Vec<i32> {
        vec![super::codes::INVALID; keys.len()]
    }

    fn get_session_end(&self, _keys: &[String]) -> i32 {
        super::codes::INVALID
    }

    fn put_session_start(
        &self,
        _py: Python<'_>,
        items: &[(String, u64)],
        _cfg: &ReplicateConfig,
    ) -> Vec<i32> {
        vec![super::codes::INVALID; items.len()]
    }

    fn session_ranges(
        &self,
        _py: Python<'_>,
        items: &[(String, Vec<Fragment>)],
        _write: bool,
    ) -> Vec<i64> {
        vec![INVALID; items.len()]
    }

    fn put_session_finish(&self, _py: Python<'_>, keys: &[String], _commit: bool) -> Vec<i32> {
        vec![super::codes::INVALID; keys.len()]
    }
}

/// The single code of a batch call: 0, or the first per-key error.
fn first_error(codes: &[i64]) -> i32 {
    codes.iter().copied().find(|c| *c != 0).unwrap_or(0) as i32
}

/// Puts values given as bytes parts (one object per item) through the staging area.
fn put_values(
    py: Python<'_>,
    d: &StandaloneClient,
    items: &[(String, Vec<&[u8]>)],
    config: &ReplicateConfig,
    upsert: bool,
) -> Vec<i64> {
    let mut staged = Vec::with_capacity(items.len());
    let mut wire = Vec::with_capacity(items.len());
    for (key, parts) in items {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 || key.is_empty() {
            return vec![INVALID; items.len()];
        }
        let Some(range) = d.stage(len) else {
            tracing::warn!(len, "Failed to allocate buffer for put operation: value larger than the free local buffer");
            return vec![INVALID; items.len()];
        };
        let mut at = 0;
        for p in parts {
            d.fill(&range, at, p);
            at += p.len() as u64;
        }
        wire.push((key.clone(), vec![(range.offset, len)]));
        staged.push(range);
    }
    let codes = block(py, d.put(wire, config, upsert));
    drop(staged);
    codes
}

/// `put`/`upsert`/`put_parts`: one int.
fn put_one(
    py: Python<'_>,
    d: &StandaloneClient,
    key: &str,
    parts: Vec<&[u8]>,
    config: &ReplicateConfig,
    upsert: bool,
) -> i32 {
    first_error(&put_values(
        py,
        d,
        &[(key.to_owned(), parts)],
        config,
        upsert,
    ))
}

/// Zero-copy puts of `(key, [(addr, len)])` items whose buffers lie in the pool.
fn put_from(
    py: Python<'_>,
    d: &StandaloneClient,
    items: Vec<(String, Vec<(u64, u64)>)>,
    config: &ReplicateConfig,
    upsert: bool,
) -> Vec<i64> {
    let mut wire = Vec::with_capacity(items.len());
    for (key, parts) in &items {
        let mut ranges = Vec::with_capacity(parts.len());
        for &(addr, len) in parts {
            match d.offset_of(addr, len) {
                Some(off) => ranges.push((off, len)),
                None => {
                    tracing::warn!(
                        addr,
                        len,
                        "in standalone mode zero-copy buffers must come from alloc_from_mem_pool"
                    );
                    return vec![INVALID; items.len()];
                }
            }
        }
        wire.push((key.clone(), ranges));
    }
    block(py, d.put(wire, config, upsert))
}

/// The value of `key` through the staging area, or `None`.
fn get<'py>(
    py: Python<'py>,
    d: &StandaloneClient,
    key: &str,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let size = block(py, d.get_size(key.to_owned()));
    if size <= 0 {
        return Ok(None);
    }
    let Some(range) = d.stage(size as u64) else {
        return Ok(None);
    };
    let got = block(
        py,
        d.get_into(vec![(key.to_owned(), range.offset, range.len)]),
    );
    match got.first() {
        // The size comes from the store service: never read past the range it was given.
        Some(&n) if n > 0 && n as u64 <= range.len => {
            Ok(Some(crate::pybytes::bytes_filled(py, n as usize, |out| {
                range.read_into_uninit(out)
            })?))
        }
        Some(&n) if n > 0 => {
            tracing::warn!(
                key,
                size = n,
                room = range.len,
                "the store service answered a size larger than the buffer it was given"
            );
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// `get_into` / `batch_get_into`: `(key, addr, capacity)` items in the pool.
fn get_into(py: Python<'_>, d: &StandaloneClient, items: Vec<(String, u64, u64)>) -> Vec<i64> {
    let mut out = vec![INVALID; items.len()];
    let mut wire = Vec::new();
    let mut idx = Vec::new();
    for (i, (key, addr, cap)) in items.into_iter().enumerate() {
        if let Some(off) = d.offset_of(addr, cap) {
            wire.push((key, off, cap));
            idx.push(i);
        }
    }
    if !wire.is_empty() {
        for (i, r) in idx.into_iter().zip(block(py, d.get_into(wire))) {
            out[i] = r;
        }
    }
    out
}

/// `batch_get_into_multi_buffers`: exact-fit reads into pool ranges.
fn get_into_parts(
    py: Python<'_>,
    d: &StandaloneClient,
    items: Vec<(String, Vec<(u64, u64)>)>,
) -> Vec<i64> {
    let mut out = vec![INVALID; items.len()];
    let mut wire = Vec::new();
    let mut idx = Vec::new();
    'items: for (i, (key, parts)) in items.into_iter().enumerate() {
        let mut ranges = Vec::with_capacity(parts.len());
        for (addr, len) in parts {
            let Some(off) = d.offset_of(addr, len) else {
                continue 'items;
            };
            ranges.push((off, len));
        }
        wire.push((key, ranges));
        idx.push(i);
    }
    if !wire.is_empty() {
        for (i, r) in idx.into_iter().zip(block(py, d.get_into_parts(wire))) {
            out[i] = r;
        }
    }
    out
}
