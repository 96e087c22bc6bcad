//! The disk tier's index (pure: no I/O): which records exist, their LRU order and the
//! capacity they take.
//!
//! Space is reserved before a record is written (so concurrent demotions never overshoot
//! the capacity) and made by evicting least-recently-used records; a read touches its
//! record. The shell deletes the files of the records this returns as evicted and tells
//! the master.

use std::collections::{BTreeMap, HashMap};

use super::record::footprint;
use super::task::DiskRecord;

/// One record in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The object version.
    pub version: u64,
    /// Value bytes.
    pub size: u64,
    /// CRC-32C of the value.
    pub checksum: u32,
    /// Bytes the record takes on disk.
    pub footprint: u64,
    /// LRU stamp.
    last: u64,
}

/// Room the tier could not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disk tier full: {wanted} bytes wanted, {capacity} bytes of capacity")]
pub struct NoRoom {
    /// Bytes asked for.
    pub wanted: u64,
    /// The tier's capacity.
    pub capacity: u64,
}

/// The records of one tier, by key (one version per key).
#[derive(Debug, Default)]
pub struct DiskIndex {
    capacity: u64,
    used: u64,
    reserved: u64,
    entries: HashMap<String, Entry>,
    lru: BTreeMap<u64, String>,
    clock: u64,
}

impl DiskIndex {
    /// An empty index of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes taken by complete records.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The record of `key`, if its version is `version`.
    pub fn get(&self, key: &str, version: u64) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.version == version)
    }

    /// Every record, for the master (mount).
    pub fn records(&self) -> Vec<DiskRecord> {
        self.entries
            .iter()
            .map(|(k, e)| DiskRecord {
                key: k.clone(),
                version: e.version,
                size: e.size,
                checksum: e.checksum,
            })
            .collect()
    }

    /// Reserves room for a record of `key` with `size` value bytes, evicting LRU records as
    /// needed; returns the reserved bytes (give them back with [`DiskIndex::commit`] or
    /// [`DiskIndex::release`]) and the records evicted.
    pub fn reserve(&mut self, key: &str, size: u64) -> Result<(u64, Vec<DiskRecord>), NoRoom> {
        let need = footprint(key.len(), size);
        if need > self.capacity.saturating_sub(self.reserved) {
            return Err(NoRoom {
                wanted: need,
                capacity: self.capacity,
            });
        }
        let mut evicted = Vec::new();
        while self.used + self.reserved + need > self.capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&victim) {
                self.used -= e.footprint;
                evicted.push(DiskRecord {
                    key: victim,
                    version: e.version,
                    size: e.size,
                    checksum: e.checksum,
                });
            }
        }
        self.reserved += need;
        Ok((need, evicted))
    }

    /// Gives back a reservation whose record was not written.
    pub fn release(&mut self, reserved: u64) {
        self.reserved = self.reserved.saturating_sub(reserved);
    }

    /// Turns a reservation into a record (the most recently used); returns a record it
    /// replaced (another version of the key), whose file the shell deletes.
    pub fn commit(&mut self, reserved: u64, record: DiskRecord) -> Option<DiskRecord> {
        self.release(reserved);
        self.insert(record)
    }

    /// Adds a record found by a scan or written (the most recently used); returns the
    /// record of another version of the key it replaced.
    pub fn insert(&mut self, record: DiskRecord) -> Option<DiskRecord> {
        let replaced = self.entries.get(&record.key).map(|e| e.version);
        let old = replaced.and_then(|v| self.remove(&record.key, v));
        self.clock += 1;
        let fp = footprint(record.key.len(), record.size);
        self.used += fp;
        self.lru.insert(self.clock, record.key.clone());
        self.entries.insert(
            record.key.clone(),
            Entry {
                version: record.version,
                size: record.size,
                checksum: record.checksum,
                footprint: fp,
                last: self.clock,
            },
        );
        old
    }

    /// Marks a record used (a read).
    pub fn touch(&mut self, key: &str) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        self.lru.remove(&e.last);
        self.clock += 1;
        e.last = self.clock;
        self.lru.insert(self.clock, key.to_owned());
    }

    /// Forgets `key`'s record of `version`; returns it if it was there.
    pub fn remove(&mut self, key: &str, version: u64) -> Option<DiskRecord> {
        if self.entries.get(key)?.version != version {
            return None;
        }
        let e = self.entries.remove(key)?;
        self.lru.remove(&e.last);
        self.used -= e.footprint;
        Some(DiskRecord {
            key: key.to_owned(),
            version: e.version,
            size: e.size,
            checksum: e.checksum,
        })
    }

    /// Checks the accounting (tests).
    pub fn check(&self) -> Result<(), String> {
        let sum: u64 = self.entries.values().map(|e| e.footprint).sum();
        if sum != self.used {
            return Err(format!("used {} but records sum to {sum}", self.used));
        }
        if self.lru.len() != self.entries.len() {
            return Err("lru and entries disagree".into());
        }
        if self.used + self.reserved > self.capacity && !self.entries.is_empty() {
            return Err(format!(
                "used {} + reserved {} over capacity {}",
                self.used, self.reserved, self.capacity
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::BLOCK;
    use super::*;
    use proptest::prelude::*;

    fn rec(key: &str, version: u64) -> DiskRecord {
        DiskRecord {
            key: key.into(),
            version,
            size: 3 * BLOCK,
            checksum: 7,
        }
    }

    #[test]
    fn least_recently_used_records_make_room() {
        // Each record takes a header block and three value blocks.
        let mut ix = DiskIndex::new(8 * BLOCK);
        for k in ["a", "b"] {
            let (r, ev) = ix.reserve(k, 3 * BLOCK).unwrap();
            assert!(ev.is_empty());
            assert_eq!(ix.commit(r, rec(k, 1)), None);
        }
        ix.touch("a");
        let (r, ev) = ix.reserve("c", 3 * BLOCK).unwrap();
        assert_eq!(ev, vec![rec("b", 1)], "b was used least recently");
        ix.commit(r, rec("c", 1));
        assert!(ix.get("a", 1).is_some() && ix.get("b", 1).is_none());
        assert_eq!(ix.used(), 8 * BLOCK);
        ix.check().unwrap();
    }

    #[test]
    fn a_record_larger_than_the_tier_is_refused_and_nothing_is_evicted() {
        let mut ix = DiskIndex::new(8 * BLOCK);
        let (r, _) = ix.reserve("a", BLOCK).unwrap();
        ix.commit(r, rec("a", 1));
        assert_eq!(
            ix.reserve("big", 8 * BLOCK),
            Err(NoRoom {
                wanted: 9 * BLOCK,
                capacity: 8 * BLOCK
            })
        );
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn a_new_version_replaces_the_old_and_removal_checks_the_version() {
        let mut ix = DiskIndex::new(100 * BLOCK);
        ix.insert(rec("a", 1));
        assert_eq!(ix.insert(rec("a", 2)), Some(rec("a", 1)));
        assert_eq!(ix.remove("a", 1), None);
        assert_eq!(ix.remove("a", 2), Some(rec("a", 2)));
        assert!(ix.is_empty());
        ix.check().unwrap();
    }

    proptest! {
        #[test]
        fn accounting_holds_under_any_sequence(ops in proptest::collection::vec((0u8..4, 0u8..6, 1u64..5), 1..200)) {
            let mut ix = DiskIndex::new(20 * BLOCK);
            for (op, k, blocks) in ops {
                let key = format!("k{k}");
                match op {
                    0 | 1 => if let Ok((r, _)) = ix.reserve(&key, blocks * BLOCK) {
                        if op == 0 {
                            ix.commit(r, DiskRecord { key, version: blocks, size: blocks * BLOCK, checksum: 0 });
                        } else {
                            ix.release(r);
                        }
                    },
                    2 => ix.touch(&key),
                    _ => { ix.remove(&key, blocks); }
                }
                prop_assert!(ix.check().is_ok(), "{:?}", ix.check());
            }
        }
    }
}
