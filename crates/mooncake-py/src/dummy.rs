//! `setup_dummy` (standalone mode): the store methods of a thin client, forwarding to the
//! node's store service ([`mooncake_store::standalone`]). Same return conventions as the
//! full client; zero-copy buffers must lie in the shared pool (`alloc_from_mem_pool`).

use mooncake_store::standalone::StandaloneClient;
use mooncake_store::{ErrorCode, ReplicateConfig};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::runtime::block;

const INVALID: i64 = ErrorCode::InvalidParams as i64;

/// The single code of a batch call: 0, or the first per-key error.
pub(crate) fn first_error(codes: &[i64]) -> i32 {
    codes.iter().copied().find(|c| *c != 0).unwrap_or(0) as i32
}

/// Puts values given as bytes parts (one object per item) through the staging area.
pub(crate) fn put_values(
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
pub(crate) fn put_one(
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
pub(crate) fn put_from(
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
pub(crate) fn get<'py>(
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
            Ok(Some(crate::store::bytes_filled(py, n as usize, |out| {
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
pub(crate) fn get_into(
    py: Python<'_>,
    d: &StandaloneClient,
    items: Vec<(String, u64, u64)>,
) -> Vec<i64> {
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
pub(crate) fn get_into_parts(
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
