//! The master of Mooncake in Rust (work in progress).
//!
//! It will own object metadata: the sans-io core (mounted segments, put start/end/revoke,
//! read leases, eviction, client liveness) with time passed in, the gRPC service
//! implementing `mooncake_store::MasterApi`, `/metrics`, and the embedded HTTP metadata
//! server from `mooncake_metadata`.
