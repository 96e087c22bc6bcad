//! The store of Mooncake in Rust: the object model, Mooncake's error codes, segment
//! allocation and replica placement, and the `MasterApi` seam.
//!
//! - [`ErrorCode`]: Mooncake's numeric store errors, the one mapping every error goes through;
//! - [`types`]: [`ObjectKey`], [`Segment`], [`ReplicateConfig`], [`ReplicaDescriptor`], …;
//! - [`allocator::OffsetAllocator`]: the bin-based O(1) offset allocator over one segment;
//! - [`placement::PlacementStrategy`]: random, free-ratio-first and local-first placement;
//! - [`MasterApi`]: every master RPC the client needs, implemented by the in-process master
//!   (`mooncake-master`) and by the gRPC client;
//! - [`disk::DiskTier`]: a holder's disk tier (records, LRU index, direct I/O);
//! - [`Client`]: put/get/remove/exist and their batch and zero-copy forms, over the master
//!   and the transfer engine.
#![forbid(unsafe_code)]

pub mod allocator;
mod client;
pub mod disk;
use mooncake_transfer_engine::conn;
mod error;
pub mod grpc;
mod master_api;
pub mod placement;
#[doc(hidden)]
pub mod route;
mod service;
mod size;
pub mod standalone;
mod task;
pub mod types;

pub use client::{Client, ClientConfig, DrainReport, Fragment, SetupError, StagedValue, Value};
pub use disk::{
    DiskConfig, DiskError, DiskOutcome, DiskRecord, DiskTask, DiskTaskKind, DiskTaskResult,
    DiskTier,
};
pub use error::{to_code, ErrorCode};
pub use master_api::{BatchResult, MasterApi};
pub use service::{StoreService, StoreServiceConfig};
pub use size::{parse_size, ParseSizeError};
pub use task::{uuid_string, TaskAssignment, TaskId, TaskInfo, TaskKind, TaskStatus};
pub use types::{
    ClientId, ClientStatus, DrainMove, ObjectKey, Pin, PingReply, ProtocolVersion,
    ReplicaDescriptor, ReplicaList, ReplicateConfig, ReservedSlot, Segment, SegmentId,
    MAX_BATCH_SIZE, MAX_KEY_LEN,
};
