//! `ReplicateConfig`: the C++ wheel's attribute bag (`python-api-2.md` §5), converted to the
//! store's [`mooncake_store::ReplicateConfig`] at each call.
//!
//! As with the wheel: the constructor takes no arguments, every attribute is type-checked
//! on assignment and a wrong type or range raises `TypeError` (never `OverflowError`), the
//! enum-typed attributes take only their enum's members, and list attributes hand out
//! copies.

use mooncake_store::{ErrorCode, Pin, ReplicateConfig};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};

/// `SoftPinAction` members, by value.
const SOFT_PIN_ACTIONS: [&str; 3] = ["PRESERVE", "ENABLE", "DISABLE"];
/// `SoftPinAction.ENABLE`.
const SOFT_PIN_ENABLE: u8 = 1;
/// `ObjectDataType` members, by value.
const DATA_TYPES: [&str; 10] = [
    "UNKNOWN",
    "KVCACHE",
    "TENSOR",
    "WEIGHT",
    "SAMPLE",
    "ACTIVATION",
    "GRADIENT",
    "OPTIMIZER_STATE",
    "METADATA",
    "GENERAL",
];

/// How a put places its replicas. Built with no arguments, then attributes are set.
#[pyclass(module = "mooncake.store", name = "ReplicateConfig")]
#[derive(Debug, Clone, Default)]
pub(crate) struct PyReplicateConfig {
    replica_num: u64,
    nof_replica_num: u64,
    dfs_replica_num: u64,
    soft_pin_action: u8,
    soft_pin_ttl_ms: Option<u64>,
    with_hard_pin: bool,
    preferred_segment: String,
    preferred_segments: Vec<String>,
    preferred_nof_segments: Vec<String>,
    prefer_alloc_in_same_node: bool,
    data_type: u8,
    group_ids: Option<Vec<String>>,
}

/// The wheel's error for any assignment of the wrong type or range.
fn incompatible() -> PyErr {
    PyTypeError::new_err("(): incompatible function arguments")
}

/// An int in `0 ..= 2**64-1` (`True` is 1); anything else is `TypeError`.
fn u64_arg(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if !v.is_instance_of::<PyInt>() {
        return Err(incompatible());
    }
    v.extract::<u64>().map_err(|_| incompatible())
}

/// A bool, an int (non-zero is true) or `None` (false).
fn bool_arg(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    if v.is_none() {
        return Ok(false);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(b.is_true());
    }
    // Any int converts, as pybind's bool caster does (`with_hard_pin = 2` is true).
    if v.is_instance_of::<PyInt>() {
        return v.is_truthy();
    }
    Err(incompatible())
}

/// A non-`str` sequence of `str`.
fn strings_arg(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if v.is_none() || v.is_instance_of::<PyString>() {
        return Err(incompatible());
    }
    v.extract::<Vec<String>>().map_err(|_| incompatible())
}

/// A member of the `mooncake.store` enum `name`: its value.
fn member_arg(v: &Bound<'_, PyAny>, name: &str) -> PyResult<u8> {
    let ty = v.get_type();
    if ty.name()?.extract::<String>()? != name
        || ty.module()?.extract::<String>()? != "mooncake.store"
    {
        return Err(incompatible());
    }
    v.getattr("value")?
        .extract::<u8>()
        .map_err(|_| incompatible())
}

/// The member of the `mooncake.store` enum `name` with `value`.
fn member<'py>(py: Python<'py>, name: &str, value: u8) -> PyResult<Bound<'py, PyAny>> {
    py.import("mooncake.store")?.getattr(name)?.call1((value,))
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

#[pymethods]
impl PyReplicateConfig {
    #[new]
    fn new() -> Self {
        Self {
            replica_num: 1,
            ..Self::default()
        }
    }

    /// Memory replicas, on distinct segments (best effort).
    #[getter]
    fn replica_num(&self) -> u64 {
        self.replica_num
    }
    #[setter]
    fn set_replica_num(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.replica_num = u64_arg(&v)?;
        Ok(())
    }

    /// NoF replicas; more than 0 makes a put fail with -600 in this build.
    #[getter]
    fn nof_replica_num(&self) -> u64 {
        self.nof_replica_num
    }
    #[setter]
    fn set_nof_replica_num(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.nof_replica_num = u64_arg(&v)?;
        Ok(())
    }

    /// DFS replicas; the master has no DFS tier (-1601), more than 1 is -600.
    #[getter]
    fn dfs_replica_num(&self) -> u64 {
        self.dfs_replica_num
    }
    #[setter]
    fn set_dfs_replica_num(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.dfs_replica_num = u64_arg(&v)?;
        Ok(())
    }

    /// A `SoftPinAction` member.
    #[getter]
    fn soft_pin_action<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        member(py, "SoftPinAction", self.soft_pin_action)
    }
    #[setter]
    fn set_soft_pin_action(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.soft_pin_action = member_arg(&v, "SoftPinAction")?;
        Ok(())
    }

    /// Soft-pin lifetime in ms (only with `ENABLE`); `None` is the master's default.
    #[getter]
    fn soft_pin_ttl_ms(&self) -> Option<u64> {
        self.soft_pin_ttl_ms
    }
    #[setter]
    fn set_soft_pin_ttl_ms(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.soft_pin_ttl_ms = if v.is_none() {
            None
        } else {
            Some(u64_arg(&v)?)
        };
        Ok(())
    }

    /// Never evicted.
    #[getter]
    fn with_hard_pin(&self) -> bool {
        self.with_hard_pin
    }
    #[setter]
    fn set_with_hard_pin(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.with_hard_pin = bool_arg(&v)?;
        Ok(())
    }

    /// Deprecated single preferred segment; wins over `preferred_segments` when set.
    #[getter]
    fn preferred_segment(&self) -> String {
        self.preferred_segment.clone()
    }
    #[setter]
    fn set_preferred_segment(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.preferred_segment = v.extract::<String>().map_err(|_| incompatible())?;
        Ok(())
    }

    /// Segment names (`host:port`) tried first, in order (a copy).
    #[getter]
    fn preferred_segments(&self) -> Vec<String> {
        self.preferred_segments.clone()
    }
    #[setter]
    fn set_preferred_segments(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.preferred_segments = strings_arg(&v)?;
        Ok(())
    }

    /// NoF placement preference (a copy; unused without NoF).
    #[getter]
    fn preferred_nof_segments(&self) -> Vec<String> {
        self.preferred_nof_segments.clone()
    }
    #[setter]
    fn set_preferred_nof_segments(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.preferred_nof_segments = strings_arg(&v)?;
        Ok(())
    }

    /// Multi-buffer batch puts only; other puts return -600, as in the C++ wheel.
    #[getter]
    fn prefer_alloc_in_same_node(&self) -> bool {
        self.prefer_alloc_in_same_node
    }
    #[setter]
    fn set_prefer_alloc_in_same_node(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.prefer_alloc_in_same_node = bool_arg(&v)?;
        Ok(())
    }

    /// An `ObjectDataType` member (a tag).
    #[getter]
    fn data_type<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        member(py, "ObjectDataType", self.data_type)
    }
    #[setter]
    fn set_data_type(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.data_type = member_arg(&v, "ObjectDataType")?;
        Ok(())
    }

    /// Per-key routing group (a copy); its length must match a batch's key count.
    #[getter]
    fn group_ids(&self) -> Option<Vec<String>> {
        self.group_ids.clone()
    }
    #[setter]
    fn set_group_ids(&mut self, v: Bound<'_, PyAny>) -> PyResult<()> {
        self.group_ids = if v.is_none() {
            None
        } else {
            Some(strings_arg(&v)?)
        };
        Ok(())
    }

    fn __str__(&self) -> String {
        let mut s = format!(
            "ReplicateConfig: {{ replica_num: {}, nof_replica_num: {}, dfs_replica_num: {}, \
             soft_pin_action: {}, soft_pin_ttl_ms: {}, with_hard_pin: {}, preferred_segments: {}",
            self.replica_num,
            self.nof_replica_num,
            self.dfs_replica_num,
            SOFT_PIN_ACTIONS
                .get(usize::from(self.soft_pin_action))
                .unwrap_or(&"UNKNOWN"),
            self.soft_pin_ttl_ms
                .map_or_else(|| "default".to_owned(), |t| t.to_string()),
            u8::from(self.with_hard_pin),
            list(&self.preferred_segments),
        );
        if !self.preferred_segment.is_empty() {
            s += &format!(
                ", preferred_segment (deprecated): {}",
                self.preferred_segment
            );
        }
        s += &format!(
            ", preferred_nof_segments: {}, prefer_alloc_in_same_node: {}, data_type: {}",
            list(&self.preferred_nof_segments),
            u8::from(self.prefer_alloc_in_same_node),
            DATA_TYPES
                .get(usize::from(self.data_type))
                .unwrap_or(&"UNKNOWN"),
        );
        if let Some(g) = &self.group_ids {
            s += &format!(", group_ids: {}", list(g));
        }
        s + " }"
    }
}

impl PyReplicateConfig {
    /// `prefer_alloc_in_same_node`.
    pub(crate) fn same_node(&self) -> bool {
        self.prefer_alloc_in_same_node
    }

    /// The number of `group_ids`, when set.
    pub(crate) fn group_count(&self) -> Option<usize> {
        self.group_ids.as_ref().map(Vec::len)
    }

    fn preferred(&self) -> Vec<String> {
        if self.preferred_segment.is_empty() {
            let mut out: Vec<String> = Vec::with_capacity(self.preferred_segments.len());
            for s in &self.preferred_segments {
                if !s.is_empty() && !out.contains(s) {
                    out.push(s.clone());
                }
            }
            out
        } else {
            vec![self.preferred_segment.clone()]
        }
    }

    /// The store's config, or the code a put with this config returns (`python-api-2.md`
    /// §5): -600 for no replica at all, NoF replicas, more than one DFS replica or a DFS
    /// replica without a memory one, or a soft-pin TTL without `ENABLE`; -1601 for a DFS
    /// replica (the master has no DFS tier).
    pub(crate) fn to_store(&self) -> Result<ReplicateConfig, ErrorCode> {
        let dfs = self.dfs_replica_num;
        if (self.replica_num == 0 && self.nof_replica_num == 0 && dfs == 0)
            || self.nof_replica_num > 0
            || dfs > 1
            || (dfs > 0 && self.replica_num == 0)
            || (self.soft_pin_ttl_ms.is_some() && self.soft_pin_action != SOFT_PIN_ENABLE)
        {
            return Err(ErrorCode::InvalidParams);
        }
        if dfs > 0 {
            return Err(ErrorCode::DfsServiceUnavailable);
        }
        let pin = if self.with_hard_pin {
            Pin::Hard
        } else if self.soft_pin_action == SOFT_PIN_ENABLE {
            Pin::Soft
        } else {
            Pin::None
        };
        Ok(ReplicateConfig {
            replica_num: usize::try_from(self.replica_num).unwrap_or(usize::MAX),
            pin,
            preferred_segments: self.preferred(),
            prefer_alloc_in_same_node: self.prefer_alloc_in_same_node,
            excluded_segments: Vec::new(),
            soft_pin_ttl_ms: self.soft_pin_ttl_ms,
            // Set by the client when it has checksums on.
            checksum: None,
        })
    }
}

/// The config of an optional `config=` argument (default when absent).
pub(crate) fn store_config(
    config: Option<PyRef<'_, PyReplicateConfig>>,
) -> Result<ReplicateConfig, ErrorCode> {
    match config {
        Some(c) => c.to_store(),
        None => Ok(ReplicateConfig::default()),
    }
}

/// [`store_config`] for a call writing `keys` objects: `group_ids`, when set, must name
/// one group per key (`InvalidParams` otherwise).
pub(crate) fn store_config_for(
    config: Option<PyRef<'_, PyReplicateConfig>>,
    keys: usize,
) -> Result<ReplicateConfig, ErrorCode> {
    if config
        .as_ref()
        .and_then(|c| c.group_count())
        .is_some_and(|n| n != keys)
    {
        return Err(ErrorCode::InvalidParams);
    }
    store_config(config)
}
