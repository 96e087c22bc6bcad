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
mod explain;
mod ha;
mod master;
pub mod metrics;
mod server;
mod state;
mod status_page;

pub use crate::core::binary;
pub use crate::core::{
    Change, ClientView, DiskStats, DrainJobView, DurableState, EvictionStats, JobStatus, KeyEvent,
    KeyExplanation, KeyState, LoadState, LookupOp, LookupStats, MasterCore, MissCause,
    ObjectRecord, ReplicaRecord, RestoreReport, SegmentRecord, SegmentStatus, SegmentView,
    SpaceUse, TickReport, HISTORY_EVENTS, HISTORY_GONE_KEYS,
};
pub use config::{ConfigError, MasterConfig, StateConfig};
pub use explain::{Explanation, Status};
pub use ha::{HaConfig, Role};
pub use master::Master;
pub use server::{MasterServer, ServerConfig, ServerError};
pub use state::StateError;
