//! The etcd v3 gRPC client stubs (`KV`, `Lease`, `Watch`) that `build.rs` generates from
//! the vendored protos in `proto/etcd/` (etcd v3.4.23). Private to the crate, so that
//! its API does not tie users to the prost and tonic versions it is built with. `KV` and
//! `Lease` serve the metadata store and master election (`etcd_lease.rs`); `Watch` is
//! not used.
#![allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]

pub(crate) mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub(crate) mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
