//! New `bytes` objects filled in place, through CPython's C API: the one module of this
//! crate that calls `pyo3::ffi`. A `get` reads a value straight into the `bytes` it returns,
//! so the data is copied once (by the engine) and never zeroed first.

use std::mem::MaybeUninit;

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A new `bytes` of `len` bytes written by `fill`, without zeroing it first as
/// `PyBytes::new_with` does: zeroing a fresh megabyte costs as much as copying into it, on
/// one thread, while the engine's bulk copy splits the copy and its page faults.
pub(crate) fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<u8>]),
) -> PyResult<Bound<'py, PyBytes>> {
    let n = ssize(len)?;
    // SAFETY: a NULL source asks CPython for a new, uninitialised `bytes` of `n` bytes (a
    // new reference, or NULL with an exception set, which `from_owned_ptr_or_err` turns
    // into an error). Nobody else sees the object until we return it, so its buffer is
    // ours to fill; `fill` only writes it (through `MaybeUninit`), all `len` bytes.
    unsafe {
        let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n);
        let obj = Bound::from_owned_ptr_or_err(py, obj)?;
        let buf = pyo3::ffi::PyBytes_AsString(obj.as_ptr()).cast::<MaybeUninit<u8>>();
        fill(std::slice::from_raw_parts_mut(buf, len));
        Ok(obj.cast_into_unchecked())
    }
}

/// New `bytes` objects, one per entry of `lens`, all written by one call of `fill` (as
/// [`bytes_filled`]: `fill` must write every byte of every buffer).
pub(crate) fn bytes_many_filled<'py>(
    py: Python<'py>,
    lens: &[usize],
    fill: impl FnOnce(&mut [&mut [MaybeUninit<u8>]]),
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let mut objs = Vec::with_capacity(lens.len());
    let mut bufs = Vec::with_capacity(lens.len());
    for &len in lens {
        let n = ssize(len)?;
        // SAFETY: as in `bytes_filled`: a new, uninitialised `bytes` that nobody else
        // sees until we return it; its buffer lives as long as the object, which `objs`
        // holds until after `fill` returns.
        unsafe {
            let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n);
            let obj = Bound::from_owned_ptr_or_err(py, obj)?;
            let buf = pyo3::ffi::PyBytes_AsString(obj.as_ptr()).cast::<MaybeUninit<u8>>();
            bufs.push(std::slice::from_raw_parts_mut(buf, len));
            objs.push(obj.cast_into_unchecked::<PyBytes>());
        }
    }
    fill(&mut bufs);
    Ok(objs)
}

/// `len` as CPython's size type.
fn ssize(len: usize) -> PyResult<pyo3::ffi::Py_ssize_t> {
    pyo3::ffi::Py_ssize_t::try_from(len).map_err(|_| PyOverflowError::new_err("value too large"))
}
