//! `ReplicateConfig`: the C++ wheel's attribute bag, converted to the store's
//! [`mooncake_store::ReplicateConfig`] at each call.

use mooncake_store::{ErrorCode, Pin, ReplicateConfig};
use pyo3::prelude::*;

/// `SoftPinAction.ENABLE`.
const SOFT_PIN_ENABLE: i64 = 1;

/// How a put places its replicas. Built with no arguments (or keywords), then attributes
/// are set, as with the C++ wheel.
#[pyclass(module = "mooncake.store", name = "ReplicateConfig")]
#[derive(Debug, Clone)]
pub(crate) struct PyReplicateConfig {
    /// Memory replicas, on distinct segments (best effort).
    #[pyo3(get, set)]
    replica_num: usize,
    /// Never evicted.
    #[pyo3(get, set)]
    with_hard_pin: bool,
    /// `SoftPinAction`: PRESERVE=0, ENABLE=1, DISABLE=2.
    #[pyo3(get, set)]
    soft_pin_action: i64,
    /// Only valid with `ENABLE`; `None` is the master's default.
    #[pyo3(get, set)]
    soft_pin_ttl_ms: Option<u64>,
    /// Deprecated single preferred segment; wins over `preferred_segments` when set.
    #[pyo3(get, set)]
    preferred_segment: String,
    /// Segment names (`host:port`) tried first, in order.
    #[pyo3(get, set)]
    preferred_segments: Vec<String>,
    /// Multi-buffer batch puts only; other puts return -600, as in the C++ wheel.
    #[pyo3(get, set)]
    prefer_alloc_in_same_node: bool,
    /// Lifecycle group per key (a tag here).
    #[pyo3(get, set)]
    group_ids: Option<Vec<String>>,
    /// `ObjectDataType` tag.
    #[pyo3(get, set)]
    data_type: i64,
    /// Extension: NoF replicas (accepted, unused).
    #[pyo3(get, set)]
    nof_replica_num: i64,
    /// Extension: DFS replicas (accepted, unused).
    #[pyo3(get, set)]
    dfs_replica_num: i64,
    /// Extension: preferred NoF segments (accepted, unused).
    #[pyo3(get, set)]
    preferred_nof_segments: Vec<String>,
}

impl Default for PyReplicateConfig {
    fn default() -> Self {
        Self {
            replica_num: 1,
            with_hard_pin: false,
            soft_pin_action: 0,
            soft_pin_ttl_ms: None,
            preferred_segment: String::new(),
            preferred_segments: Vec::new(),
            prefer_alloc_in_same_node: false,
            group_ids: None,
            data_type: 0,
            nof_replica_num: 0,
            dfs_replica_num: 0,
            preferred_nof_segments: Vec::new(),
        }
    }
}

#[pymethods]
impl PyReplicateConfig {
    #[new]
    #[pyo3(signature = (replica_num = 1, with_hard_pin = false, preferred_segment = String::new(), preferred_segments = Vec::new()))]
    fn new(
        replica_num: usize,
        with_hard_pin: bool,
        preferred_segment: String,
        preferred_segments: Vec<String>,
    ) -> Self {
        Self {
            replica_num,
            with_hard_pin,
            preferred_segment,
            preferred_segments,
            ..Self::default()
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "ReplicateConfig(replica_num={}, with_hard_pin={}, soft_pin_action={}, preferred_segments={:?})",
            self.replica_num,
            if self.with_hard_pin { "True" } else { "False" },
            self.soft_pin_action,
            self.preferred(),
        )
    }
}

impl PyReplicateConfig {
    fn preferred(&self) -> Vec<String> {
        if self.preferred_segment.is_empty() {
            self.preferred_segments.clone()
        } else {
            vec![self.preferred_segment.clone()]
        }
    }

    /// The store's config; `InvalidParams` for a TTL without `ENABLE` or an unknown action.
    pub(crate) fn to_store(&self) -> Result<ReplicateConfig, ErrorCode> {
        if self.soft_pin_ttl_ms.is_some() && self.soft_pin_action != SOFT_PIN_ENABLE {
            return Err(ErrorCode::InvalidParams);
        }
        if !(0..=2).contains(&self.soft_pin_action) {
            return Err(ErrorCode::InvalidParams);
        }
        let pin = if self.with_hard_pin {
            Pin::Hard
        } else if self.soft_pin_action == SOFT_PIN_ENABLE {
            Pin::Soft
        } else {
            Pin::None
        };
        Ok(ReplicateConfig {
            replica_num: self.replica_num,
            pin,
            preferred_segments: self.preferred(),
            prefer_alloc_in_same_node: self.prefer_alloc_in_same_node,
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
