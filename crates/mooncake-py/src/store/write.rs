//! The write paths' shared steps: values and buffers checked and converted, the
//! `ReplicateConfig` resolved, then one call into the backend.

use pyo3::prelude::*;

use super::backend::Parts;
use super::codes::INVALID;
use super::Store;
use crate::addr::{addresses, value};
use crate::config::{store_config_for, PyReplicateConfig};

impl Store {
    /// Puts (or upserts) one value given as bytes parts.
    pub(super) fn write_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[Bound<'_, PyAny>],
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i32> {
        let values = parts.iter().map(value).collect::<PyResult<Vec<_>>>()?;
        let slices: Vec<&[u8]> = values.iter().map(AsRef::as_ref).collect();
        let (b, cfg) = match (self.backend(), store_config_for(config, 1)) {
            (Ok(b), Ok(cfg)) => (b, cfg),
            (Err(e), _) | (_, Err(e)) => return Ok(e.code()),
        };
        Ok(b.ops().put(py, key, slices, &cfg, upsert))
    }

    /// `put_parts` / `upsert_parts`: no bytes at all store nothing and succeed, as in
    /// the wheel.
    pub(super) fn write_tuple(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[Bound<'_, PyAny>],
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i32> {
        if parts_empty(parts)? && self.is_set_up() {
            return Ok(0);
        }
        self.write_parts(py, key, parts, config, upsert)
    }

    /// `put_batch` / `upsert_batch`: 0, or the first per-key error.
    pub(super) fn write_batch(
        &self,
        py: Python<'_>,
        keys: &[String],
        values: &[Bound<'_, PyAny>],
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i32> {
        let vals = values.iter().map(value).collect::<PyResult<Vec<_>>>()?;
        if keys.len() != vals.len() || keys.iter().any(String::is_empty) {
            return Ok(INVALID);
        }
        let (b, cfg) = match (self.backend(), store_config_for(config, keys.len())) {
            (Ok(b), Ok(cfg)) => (b, cfg),
            (Err(e), _) | (_, Err(e)) => return Ok(e.code()),
        };
        let slices = vals.iter().map(AsRef::as_ref).collect();
        Ok(b.ops().put_batch(py, keys, slices, &cfg, upsert))
    }

    /// One object from caller memory.
    pub(super) fn one_from(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[(u64, u64)],
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> i32 {
        let cfg = store_config_for(config, 1);
        self.with(|e| e.code(), |s| s.put_from(py, key, parts, cfg, upsert))
    }

    /// `batch_put_from` / `batch_upsert_from`: one buffer per object.
    pub(super) fn batch_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        ptrs: &[Bound<'_, PyAny>],
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<Vec<i32>> {
        if keys.len() != ptrs.len() || keys.len() != sizes.len() {
            return Ok(vec![INVALID; keys.len()]);
        }
        let parts = addresses(ptrs)?
            .into_iter()
            .zip(sizes)
            .map(|p| vec![p])
            .collect();
        Ok(self.batch_parts_from(py, keys, parts, config, upsert, false))
    }

    /// Many objects from caller memory; `co_locate_allowed` accepts (and drops) a
    /// same-node placement hint, which is refused otherwise.
    pub(super) fn batch_parts_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        parts: Parts,
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
        co_locate_allowed: bool,
    ) -> Vec<i32> {
        let n = keys.len();
        if n != parts.len() {
            return vec![INVALID; n];
        }
        let (b, mut cfg) = match (self.backend(), store_config_for(config, n)) {
            (Ok(b), Ok(cfg)) => (b, cfg),
            (Err(e), _) | (_, Err(e)) => return vec![e.code(); n],
        };
        if co_locate_allowed {
            // A placement hint for the multi-buffer batch: accepted, not needed.
            cfg.prefer_alloc_in_same_node = false;
        }
        if cfg.prefer_alloc_in_same_node {
            return vec![INVALID; n];
        }
        b.ops().put_from_many(py, keys, parts, &cfg, upsert)
    }
}

/// Whether every part is empty (also true for no parts).
fn parts_empty(parts: &[Bound<'_, PyAny>]) -> PyResult<bool> {
    for p in parts {
        // `len()` of bytes-like objects, without copying them; anything else is converted.
        let empty = match p.len() {
            Ok(n) => n == 0,
            Err(_) => value(p)?.as_ref().is_empty(),
        };
        if !empty {
            return Ok(false);
        }
    }
    Ok(true)
}
