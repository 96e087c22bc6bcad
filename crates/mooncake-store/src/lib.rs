//! The store of Mooncake in Rust (work in progress).
//!
//! It will own the object model (`ObjectKey`, `Replica`, `ReplicateConfig`), Mooncake's
//! numeric `ErrorCode`, the offset allocator over mounted segments, replica placement,
//! the `MasterApi` trait with its gRPC client, the store `Client` and `StoreService`.
