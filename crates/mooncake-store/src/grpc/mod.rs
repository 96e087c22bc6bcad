//! The master's gRPC layer: the wire protocol (`proto/master.proto`, generated into `pb`),
//! [`GrpcMasterClient`] (a [`MasterApi`](crate::MasterApi) over the network) and [`serve`]
//! (a master's [`MasterApi`](crate::MasterApi) offered on the network).
//!
//! Store errors travel in each response's `error_code` (Mooncake's negative codes, `0` for
//! success) so that a client sees exactly the [`ErrorCode`](crate::ErrorCode) the master
//! returned; a non-OK gRPC status only ever means the RPC itself failed (`RpcFail`,
//! `RpcTimeout`). 128-bit ids travel as `(hi, lo)` pairs of `fixed64`.

mod answer;
mod client;
mod convert;
mod disk;
mod follow;
mod server;
mod slots;
mod tunnel;

pub use client::{GrpcClientConfig, GrpcMasterClient};
pub use follow::{
    is_etcd_master_address, master_view_key, LeaderFollowingClient, DEFAULT_CLUSTER_ID,
};
pub use server::{serve, serve_with, ServeOptions};

/// Largest message either side encodes or accepts (tonic's default of 4 MiB is too small
/// for large batches of long keys).
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// The messages and the tonic client and server generated from `proto/master.proto`
/// (package `mooncake.master.v1`). Private to the crate: public, they would tie this
/// crate's API to the prost and tonic versions it builds with. The `wire-tests` feature,
/// which only this crate's own tests turn on (they send the master hand-made, hostile
/// messages), makes them public.
#[cfg(feature = "wire-tests")]
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod pb {
    tonic::include_proto!("mooncake.master.v1");
}
#[cfg(not(feature = "wire-tests"))]
#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub(crate) mod pb {
    tonic::include_proto!("mooncake.master.v1");
}
