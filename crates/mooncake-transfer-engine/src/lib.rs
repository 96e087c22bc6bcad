//! The transfer engine of Mooncake in Rust: moves bytes between registered memory of
//! different processes, wire-compatible with the C++ engine's TCP transport (protocol v2).
//!
//! - [`TransferEngine`]: one per process; registers memory ([`TransferEngine::allocate_buffer`],
//!   [`TransferEngine::register_memory`]), publishes the segment descriptor under
//!   `mooncake/ram/<segment>` and `mooncake/rpc_meta/<segment>` (and re-publishes it when
//!   the metadata service lost it), opens peer segments ([`SegmentHandle`]) and transfers
//!   ([`TransferEngine::transfer`], or the batch API: [`TransferEngine::allocate_batch`],
//!   [`TransferEngine::submit`], [`TransferEngine::status`], [`TransferEngine::free_batch`]);
//! - the `Transport` seam (crate-private, `transport`): the transfer path reaches each
//!   opened peer through transports picked from its descriptor, a `ShmTransport` (a
//!   same-host peer's shared memory, copied with `memcpy`) tried before its `TcpTransport`;
//! - [`codec`]: the 24-byte request header and the status frame, sans-io;
//! - [`descriptor`]: Mooncake's segment descriptor and `rpc_meta` JSON;
//! - [`handshake`]: the RPC-port protocol (probe, notify, metadata, connection frames);
//!   [`TransferEngine::send_probe`] and [`TransferEngine::send_notify`] call a peer's
//!   RPC port by segment name ([`PeerRpcError`] carries the C++ engine's codes);
//! - [`Topology`]: the local topology matrix (`get_local_topology()` in Python);
//! - [`BufferRegistry`]: registered buffers and Mooncake's address validation.
#![deny(unsafe_code)]

mod batch;
pub mod codec;
mod config;
pub mod conn;
pub mod descriptor;
mod engine;
mod error;
pub mod handshake;
#[allow(unsafe_code)]
mod memory;
mod p2p;
mod peer_rpc;
mod registry;
mod tcp;
mod topology;
mod transport;
pub mod wait;

pub use batch::{BatchId, TaskStatus, TransferStatus};
pub use codec::Opcode;
pub use config::{EngineConfig, Tunables};
pub use engine::{
    DirectRange, Holder, LocalBuffer, SegmentHandle, TransferEngine, TransferRequest,
};
pub use error::TransferError;
pub use memory::{
    effective_uid, free_bytes, keep_freed_heap, peer_uid, try_lock_exclusive, ForeignMemory,
    SharedMemory,
};
pub use peer_rpc::{HandshakeAddr, PeerRpcError, DEFAULT_HANDSHAKE_PORT};
pub use registry::{BufferRegistry, Entry};
pub use topology::{Topology, TopologyEntry};
pub use transport::{lent_exchanges_on_lanes, spread_exchanges, two_thread_exchanges};
