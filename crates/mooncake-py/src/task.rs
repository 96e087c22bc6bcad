//! `QueryTaskResponse` and task ids (`python-api-2.md` §3.3).

use mooncake_store::{TaskId, TaskInfo};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// A task's state as `query_task` returns it; every attribute is read-only.
#[pyclass(module = "mooncake.store", name = "QueryTaskResponse", frozen)]
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryTaskResponse {
    info: TaskInfo,
}

impl From<TaskInfo> for QueryTaskResponse {
    fn from(info: TaskInfo) -> Self {
        Self { info }
    }
}

/// `(hi, lo)` from any 2-element sequence of ints in `[0, 2**64)`; else `TypeError`.
pub(crate) fn task_id_arg(v: &Bound<'_, PyAny>) -> PyResult<TaskId> {
    let bad = || PyTypeError::new_err("task_id must be a (hi, lo) pair of unsigned 64-bit ints");
    if v.is_none() || v.is_instance_of::<PyString>() {
        return Err(bad());
    }
    let parts: Vec<u64> = v.extract().map_err(|_| bad())?;
    match parts.as_slice() {
        [hi, lo] => Ok(TaskId::from_halves(*hi, *lo)),
        _ => Err(bad()),
    }
}

#[pymethods]
impl QueryTaskResponse {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// The task's id, `(hi, lo)`.
    #[getter]
    fn id(&self) -> (u64, u64) {
        self.info.id.halves()
    }

    /// A `TaskType` member.
    #[getter]
    fn r#type<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("mooncake.store")?
            .getattr("TaskType")?
            .call1((self.info.kind as u8,))
    }

    /// A `TaskStatus` member.
    #[getter]
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("mooncake.store")?
            .getattr("TaskStatus")?
            .call1((self.info.status as u8,))
    }

    /// Creation, Unix time in ms.
    #[getter]
    fn created_at_ms_epoch(&self) -> u64 {
        self.info.created_at_ms
    }

    /// Last status change, Unix time in ms.
    #[getter]
    fn last_updated_at_ms_epoch(&self) -> u64 {
        self.info.updated_at_ms
    }

    /// The executing client's id, `(hi, lo)`.
    #[getter]
    fn assigned_client(&self) -> (u64, u64) {
        let c = self.info.assigned_client.0;
        ((c >> 64) as u64, c as u64)
    }

    /// Empty until the task has finished.
    #[getter]
    fn message(&self) -> String {
        self.info.message.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "QueryTaskResponse(id={}, type={}, status={}, created_at={}, last_updated_at={}, assigned_client={}, message=\"{}\")",
            mooncake_store::uuid_string(self.info.id.0),
            self.info.kind as u8,
            self.info.status as u8,
            self.info.created_at_ms,
            self.info.updated_at_ms,
            mooncake_store::uuid_string(self.info.assigned_client.0),
            self.info.message,
        )
    }
}
