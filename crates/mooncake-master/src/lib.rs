//! The master of Mooncake in Rust: object metadata only, value bytes never pass through it.
//!
//! - [`MasterCore`]: the sans-io state machine (mounted segments, liveness, objects, leases,
//!   pins, eviction), with time passed in;
//! - [`Master`]: the core behind a lock with the clock, metrics and the periodic tick; it
//!   implements [`mooncake_store::MasterApi`], so clients can link it in-process;
//! - [`MasterConfig`]: Mooncake's defaults, validated.
#![forbid(unsafe_code)]

mod admin;
mod config;
mod core;
mod master;
pub mod metrics;
mod server;

pub use crate::core::{
    DrainJobView, EvictionStats, JobStatus, MasterCore, SegmentStatus, TickReport,
};
pub use config::{ConfigError, MasterConfig};
pub use master::Master;
pub use server::{MasterServer, ServerConfig, ServerError};
