use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;

use crate::{MetadataError, MetadataStore};

/// The in-process reference backend: a map under a lock.
///
/// Used by tests, by single-process deployments and as the storage of
/// [`crate::HttpMetadataServer`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<HashMap<String, Bytes>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Removes every key.
    pub fn clear(&self) {
        self.map.write().clear();
    }

    /// The value of `key`, if held (no key check: callers have one).
    pub(crate) fn value(&self, key: &str) -> Option<Bytes> {
        self.map.read().get(key).cloned()
    }

    /// Runs `f` on the map under the write lock: one atomic read-modify-write.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut HashMap<String, Bytes>) -> R) -> R {
        f(&mut self.map.write())
    }
}

fn check_key(key: &str) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey);
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, MetadataError> {
        check_key(key)?;
        Ok(self.value(key))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), MetadataError> {
        check_key(key)?;
        self.update(|m| m.insert(key.to_owned(), value));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, MetadataError> {
        check_key(key)?;
        Ok(self.update(|m| m.remove(key)).is_some())
    }

    fn describe(&self) -> String {
        "in-memory metadata store".to_owned()
    }
}
