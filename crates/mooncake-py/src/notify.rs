//! `mooncake.engine.TransferNotify`: a notification sent with a transfer
//! (`transfer_sync(..., notify=...)`) or received by `get_notifies()`.

use mooncake_transfer_engine::handshake::Notification;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `TransferNotify(name, msg)` or `TransferNotify()`: two read-write strings.
#[pyclass(module = "mooncake.engine", name = "TransferNotify", get_all, set_all)]
#[derive(Debug, Clone, Default)]
pub(crate) struct TransferNotify {
    name: String,
    msg: String,
}

impl From<Notification> for TransferNotify {
    fn from(n: Notification) -> Self {
        Self {
            name: n.name,
            msg: n.msg,
        }
    }
}

impl From<&TransferNotify> for Notification {
    fn from(n: &TransferNotify) -> Self {
        Self {
            name: n.name.clone(),
            msg: n.msg.clone(),
        }
    }
}

#[pymethods]
impl TransferNotify {
    #[new]
    #[pyo3(signature = (name=String::new(), msg=String::new()))]
    fn new(name: String, msg: String) -> Self {
        Self { name, msg }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = PyString::new(py, &self.name).repr()?;
        let msg = PyString::new(py, &self.msg).repr()?;
        Ok(format!("TransferNotify(name={name}, msg={msg})"))
    }
}
