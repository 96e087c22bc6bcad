//! Reading Python arguments the way the C++ wheel does: addresses as plain integers (or,
//! for convenience, any writable buffer such as `mmap` or `bytearray`), values as `bytes`
//! or anything `bytes()` accepts.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyString};

/// The address an argument stands for: an `int` as given (`tensor.data_ptr()`,
/// `ctypes.addressof(...)`), or the start of a writable buffer.
pub(crate) fn address(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<u64>().map_err(|_| {
            PyTypeError::new_err(format!("address must be a non-negative int, got {obj}"))
        });
    }
    let ctypes = obj.py().import("ctypes")?;
    let view = ctypes
        .getattr("c_char")?
        .call_method1("from_buffer", (obj,))
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "expected an int address or a writable buffer, got {}: {e}",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
    ctypes.call_method1("addressof", (view,))?.extract()
}

/// Addresses of a list argument.
pub(crate) fn addresses(list: &[Bound<'_, PyAny>]) -> PyResult<Vec<u64>> {
    list.iter().map(address).collect()
}

/// The bytes of a value argument: `bytes` without a copy, `bytearray`, `memoryview`,
/// `mmap`, arrays and the like through one copy. `str` is refused, as in the C++ wheel.
pub(crate) fn value<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "value must be bytes-like (bytes, bytearray, memoryview), not str",
        ));
    }
    let bytes = obj
        .py()
        .get_type::<PyBytes>()
        .call1((obj,))
        .map_err(|e| PyTypeError::new_err(format!("value must be bytes-like: {e}")))?;
    Ok(Cow::Owned(bytes.cast::<PyBytes>()?.as_bytes().to_vec()))
}
