//! Where this client last saw each key's bytes, so a read can start before the master
//! answers (see `Client::get_staged`).
//!
//! An entry is only a guess: the read it starts is kept only if the master's answer lists
//! the very same replica (address, size, segment and object version). Versions are unique
//! per put, so an equal descriptor means the bytes were not rewritten since the entry was
//! made, and the lease the master grants with its answer keeps them from being freed
//! while the read completes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::types::ReplicaDescriptor;

/// Entries kept before the table is cleared and refilled (a few MiB at most).
const CAPACITY: usize = 1 << 16;
/// Distinct holders remembered before the table is cleared and refilled.
const HOLDERS: usize = 4096;

/// Where a holder's bytes are reached: the strings every replica on it repeats, kept once.
#[derive(Debug)]
struct Holder {
    transport_endpoint: String,
    protocol: String,
    segment_name: String,
}

/// One remembered replica: its range and version, and its holder's shared names.
#[derive(Debug)]
struct Spot {
    buffer_address: u64,
    size: u64,
    version: u64,
    holder: Arc<Holder>,
}

#[derive(Debug, Default)]
struct Table {
    /// By a hash of the key. Two keys of one hash share an entry: the speculative read
    /// of the one then names the other's replica, which the master's answer does not
    /// list, so the read is discarded (an entry is only ever a guess).
    spots: HashMap<u64, Spot>,
    /// By segment name.
    holders: HashMap<String, Arc<Holder>>,
}

impl Table {
    /// The shared names of `r`'s holder; a new holder beyond [`HOLDERS`] first clears
    /// the table.
    fn holder(&mut self, r: &ReplicaDescriptor) -> Arc<Holder> {
        if let Some(h) = self.holders.get(&r.segment_name) {
            if h.transport_endpoint == r.transport_endpoint && h.protocol == r.protocol {
                return h.clone();
            }
        } else if self.holders.len() >= HOLDERS {
            self.clear();
        }
        let h = Arc::new(Holder {
            transport_endpoint: r.transport_endpoint.clone(),
            protocol: r.protocol.clone(),
            segment_name: r.segment_name.clone(),
        });
        self.holders.insert(r.segment_name.clone(), h.clone());
        h
    }

    fn clear(&mut self) {
        self.spots.clear();
        self.holders.clear();
    }
}

/// Key -> the replica to read speculatively. Remembering is on every put's path, so an
/// entry costs no allocation: keys are kept as hashes, holders' names once.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    map: Mutex<Table>,
    hasher: std::collections::hash_map::RandomState,
}

impl Locations {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The cached replica of `key`, if it has a version.
    pub(crate) fn get(&self, key: &str) -> Option<ReplicaDescriptor> {
        let h = self.hash(key);
        self.map.lock().spots.get(&h).map(|s| ReplicaDescriptor {
            buffer_address: s.buffer_address,
            size: s.size,
            version: s.version,
            transport_endpoint: s.holder.transport_endpoint.clone(),
            protocol: s.holder.protocol.clone(),
            segment_name: s.holder.segment_name.clone(),
        })
    }

    /// Remembers `replica` as where `key`'s bytes are (ignored without a version).
    pub(crate) fn insert(&self, key: &str, replica: &ReplicaDescriptor) {
        if replica.version == 0 {
            return;
        }
        let h = self.hash(key);
        let mut t = self.map.lock();
        if t.spots.len() >= CAPACITY && !t.spots.contains_key(&h) {
            t.clear();
        }
        let holder = t.holder(replica);
        t.spots.insert(
            h,
            Spot {
                buffer_address: replica.buffer_address,
                size: replica.size,
                version: replica.version,
                holder,
            },
        );
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &str) {
        let h = self.hash(key);
        self.map.lock().spots.remove(&h);
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
        assert!(l.map.lock().spots.len() <= CAPACITY);
        l.insert("k", &rep(2));
        assert_eq!(l.get("k"), Some(rep(2)));
        l.remove("k");
        assert_eq!(l.get("k"), None);
    }

    #[test]
    fn holders_are_kept_once_and_each_entry_keeps_its_own() {
        let l = Locations::default();
        let mut other = rep(3);
        other.segment_name = "b:2".into();
        other.transport_endpoint = "b:2".into();
        l.insert("x", &rep(1));
        l.insert("y", &rep(2));
        l.insert("z", &other);
        assert_eq!(l.get("x"), Some(rep(1)));
        assert_eq!(l.get("y"), Some(rep(2)));
        assert_eq!(l.get("z"), Some(other));
        assert_eq!(l.map.lock().holders.len(), 2);
        for i in 0..HOLDERS + 5 {
            let mut r = rep(1);
            r.segment_name = format!("s{i}");
            l.insert(&format!("h{i}"), &r);
        }
        assert!(l.map.lock().holders.len() <= HOLDERS);
        assert_eq!(
            l.get(&format!("h{}", HOLDERS + 4)).unwrap().segment_name,
            format!("s{}", HOLDERS + 4)
        );
    }

    #[test]
    fn a_full_holder_list_keeps_serving_the_holders_it_has() {
        let l = Locations::default();
        for i in 0..HOLDERS {
            let mut r = rep(1);
            r.segment_name = format!("s{i}");
            l.insert(&format!("h{i}"), &r);
        }
        let mut known = rep(2);
        known.segment_name = "s0".into();
        l.insert("again", &known);
        assert_eq!(l.get("again"), Some(known));
        assert!(l.get("h7").is_some(), "a known holder clears nothing");
        assert_eq!(l.map.lock().holders.len(), HOLDERS);
    }
}
