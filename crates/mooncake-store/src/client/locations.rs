//! Where this client last saw each key's bytes, so a read can start before the master
//! answers (see `Client::get_staged`).
//!
//! An entry is only a guess: the read it starts is kept only if the master's answer lists
//! the very same replica (address, size, segment and object version). Versions are unique
//! per put, so an equal descriptor means the bytes were not rewritten since the entry was
//! made, and the lease the master grants with its answer keeps them from being freed
//! while the read completes.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::types::ReplicaDescriptor;

/// Entries kept before the table is cleared and refilled (about 10 MiB of keys at most).
const CAPACITY: usize = 1 << 16;

/// Key -> the replica to read speculatively.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    map: Mutex<HashMap<String, ReplicaDescriptor>>,
}

impl Locations {
    /// The cached replica of `key`, if it has a version.
    pub(crate) fn get(&self, key: &str) -> Option<ReplicaDescriptor> {
        self.map.lock().get(key).cloned()
    }

    /// Remembers `replica` as where `key`'s bytes are (ignored without a version).
    pub(crate) fn insert(&self, key: &str, replica: &ReplicaDescriptor) {
        if replica.version == 0 {
            return;
        }
        let mut map = self.map.lock();
        if map.len() >= CAPACITY && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_owned(), replica.clone());
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &str) {
        self.map.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(version: u64) -> ReplicaDescriptor {
        ReplicaDescriptor {
            buffer_address: 0x1000,
            size: 10,
            version,
            transport_endpoint: "a:1".into(),
            protocol: "tcp".into(),
            segment_name: "a:1".into(),
        }
    }

    #[test]
    fn unversioned_replicas_are_not_cached_and_the_table_stays_bounded() {
        let l = Locations::default();
        l.insert("old-master", &rep(0));
        assert_eq!(l.get("old-master"), None);
        for i in 0..CAPACITY + 10 {
            l.insert(&format!("k{i}"), &rep(1));
        }
        assert!(l.map.lock().len() <= CAPACITY);
        l.insert("k", &rep(2));
        assert_eq!(l.get("k"), Some(rep(2)));
        l.remove("k");
        assert_eq!(l.get("k"), None);
    }
}
