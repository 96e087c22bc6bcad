//! The master of Mooncake in Rust: object metadata only, value bytes never pass through it.
//!
//! - [`MasterCore`]: the sans-io state machine (mounted segments, liveness, objects, leases,
//!   pins, eviction), with time passed in;
//! - [`Master`]: the core behind a lock with the clock, metrics and the periodic tick; it
//!   implements [`mooncake_store::MasterApi`], so clients can link it in-process;
//! - [`MasterConfig`]: Mooncake's defaults, validated;
//! - [`StateConfig`]: restart durability (`--state_dir`): the journal of [`Change`]s the
//!   core records, written to a log and folded into snapshots.
#![forbid(unsafe_code)]

mod admin;
mod config;
mod core;
mod master;
pub mod metrics;
mod server;
mod state;

pub use crate::core::{
    Change, DiskStats, DrainJobView, EvictionStats, JobStatus, LoadState, MasterCore, ObjectRecord,
    ReplicaRecord, RestoreReport, SegmentRecord, SegmentStatus, TickReport,
};
pub use config::{ConfigError, MasterConfig, StateConfig};
pub use master::Master;
pub use server::{MasterServer, ServerConfig, ServerError};
pub use state::StateError;
