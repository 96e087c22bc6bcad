//! The transfer engine of Mooncake in Rust (work in progress).
//!
//! It will own memory registration (`register_memory`), segment descriptors published
//! through `mooncake_metadata`, the `Transport` trait with the TCP transport that speaks
//! Mooncake's v2 wire protocol, and the batch transfer API.
