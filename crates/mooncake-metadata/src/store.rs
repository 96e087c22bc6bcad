use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::MetadataError;

/// A key-value store holding Mooncake metadata (segment descriptors, RPC locations).
///
/// Object-safe: engines and masters hold an `Arc<dyn MetadataStore>` built by
/// [`crate::connect`]. Values are opaque bytes (in practice compact JSON); keys are
/// arbitrary non-empty strings and may contain `/`, `:` and characters that need escaping.
#[async_trait]
pub trait MetadataStore: Send + Sync + Debug {
    /// Reads a key; `Ok(None)` when it is absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, MetadataError>;

    /// Creates or replaces a key.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), MetadataError>;

    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, MetadataError>;

    /// A short description for logs and error messages, e.g. the server URL.
    fn describe(&self) -> String;
}
