//! Argument shapes of the store methods beyond single values (`crate::addr`): lists of
//! buffers, keys as `str` or `bytes`, nested lists of unsigned ints.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::backend::Parts;
use crate::addr::addresses;

/// `(ptrs, sizes)` list-of-lists into parts; `None` when the shapes differ.
pub(super) fn multi_parts(
    all_ptrs: &[Vec<Bound<'_, PyAny>>],
    all_sizes: &[Vec<u64>],
) -> PyResult<Option<Parts>> {
    if all_ptrs.len() != all_sizes.len() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(all_ptrs.len());
    for (p, s) in all_ptrs.iter().zip(all_sizes) {
        if p.len() != s.len() {
            return Ok(None);
        }
        out.push(addresses(p)?.into_iter().zip(s.iter().copied()).collect());
    }
    Ok(Some(out))
}

/// Keys given as `str` or `bytes` (UTF-8) in any non-`str` sequence.
pub(super) fn keys_arg(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let bad = || PyTypeError::new_err("keys must be a list of str or bytes");
    if v.is_instance_of::<PyString>() {
        return Err(bad());
    }
    let mut out = Vec::new();
    for item in v.try_iter().map_err(|_| bad())? {
        let item = item?;
        out.push(match item.extract::<String>() {
            Ok(s) => s,
            Err(_) => {
                let b: Vec<u8> = item
                    .cast::<PyBytes>()
                    .map_err(|_| bad())?
                    .as_bytes()
                    .to_vec();
                String::from_utf8(b).map_err(|_| bad())?
            }
        });
    }
    Ok(out)
}

/// Unsigned 64-bit ints (nested in lists); a negative, a float or `None` is `TypeError`.
pub(super) fn u64s<'py, T: for<'a> FromPyObject<'a, 'py>>(v: &Bound<'py, PyAny>) -> PyResult<T> {
    v.extract::<T>().map_err(|_| {
        PyTypeError::new_err("incompatible function arguments: expected unsigned 64-bit ints")
    })
}
