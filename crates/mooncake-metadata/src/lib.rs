//! The metadata service of Mooncake in Rust.
//!
//! Every transfer engine publishes its segment descriptor (where its registered buffers
//! live and how to reach it) in a small key-value service; peers read it to open the
//! segment. This crate owns that service:
//!
//! - [`MetadataStore`]: the object-safe async trait every backend implements;
//! - [`MemoryStore`]: the in-process reference backend;
//! - [`HttpStore`]: a client of Mooncake's HTTP metadata protocol
//!   (`GET/PUT/DELETE <base>?key=<escaped key>`), compatible with the C++ master's
//!   embedded server and `mooncake_http_metadata_server`;
//! - [`HttpMetadataServer`]: a server of the same protocol;
//! - [`EtcdStore`] and [`RedisStore`]: clients of etcd (v3 gRPC) and Redis that store
//!   keys and values exactly as the C++ engine does, so both can share one server;
//! - [`MetadataUri`] and [`connect`]: the one parser of metadata connection strings
//!   (`http://h:p/metadata`, `etcd://…`, `redis://…`, `P2PHANDSHAKE`);
//! - [`keys`]: Mooncake's key layout (`mooncake/ram/<segment>`, `mooncake/rpc_meta/<segment>`).
//!
//! - [`AuthToken`]: the optional shared secret of a cluster; [`RedisCredentials`]: the
//!   Redis login (`MC_REDIS_*`).
//!
//! With the `testing` feature, `testing::Suite` is the conformance suite every backend runs.
#![forbid(unsafe_code)]

mod auth;
mod error;
mod etcd_lease;
mod etcd_pb;
mod etcd_store;
mod http_client;
mod http_server;
mod http_table;
pub mod keys;
mod memory;
mod redis_store;
mod store;
mod uri;

#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{
    AuthToken, RedisCredentials, AUTH_TOKEN_ENV, MAX_TOKEN_LEN, REDIS_DB_INDEX_ENV,
    REDIS_PASSWORD_ENV, REDIS_USERNAME_ENV,
};
pub use error::MetadataError;
pub use etcd_lease::{LeaseId, Versioned};
pub use etcd_store::{EtcdStore, EtcdStoreConfig};
pub use http_client::{HttpStore, HttpStoreConfig};
pub use http_server::{HttpMetadataServer, HttpMetadataServerConfig};
pub use http_table::{MetadataTable, TableReply, TableRequest};
pub use memory::MemoryStore;
pub use redis_store::{RedisStore, RedisStoreConfig, DEFAULT_REDIS_PORT};
pub use store::MetadataStore;
pub use uri::{connect, connect_with, redact, MetadataUri};
