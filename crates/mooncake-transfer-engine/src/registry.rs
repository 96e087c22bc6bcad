//! The table of registered buffers: overlap checks and range lookups, sans-io.

use std::collections::BTreeMap;

use crate::TransferError;

/// One registered buffer.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    /// Start address.
    pub addr: u64,
    /// Length in bytes (never 0).
    pub len: u64,
    /// Location tag (`"cpu:0"`, `"*"`), published for RDMA peers.
    pub location: String,
    /// The payload (the memory region in the engine).
    pub value: T,
    /// Registration sequence number: the C++ engine publishes buffers in this order.
    seq: u64,
}

/// Registered buffers keyed by start address. Buffers never overlap; adjacent ones may.
#[derive(Debug, Clone)]
pub struct BufferRegistry<T> {
    map: BTreeMap<u64, Entry<T>>,
    next_seq: u64,
}

impl<T> Default for BufferRegistry<T> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T> BufferRegistry<T> {
    /// Adds a buffer; refuses zero length, address overflow and overlap.
    pub fn insert(
        &mut self,
        addr: u64,
        len: u64,
        location: &str,
        value: T,
    ) -> Result<(), TransferError> {
        if len == 0 {
            return Err(TransferError::InvalidArgument(
                "cannot register a zero-length buffer".into(),
            ));
        }
        let Some(end) = addr.checked_add(len) else {
            return Err(TransferError::InvalidArgument(format!(
                "buffer {addr:#x}+{len} wraps around"
            )));
        };
        let before = self.map.range(..end).next_back();
        if before.is_some_and(|(_, e)| e.addr + e.len > addr) {
            return Err(TransferError::AddressOverlapped { addr, len });
        }
        self.map.insert(
            addr,
            Entry {
                addr,
                len,
                location: location.to_owned(),
                value,
                seq: self.next_seq,
            },
        );
        self.next_seq += 1;
        Ok(())
    }

    /// Removes the buffer starting at `addr`.
    pub fn remove(&mut self, addr: u64) -> Option<Entry<T>> {
        self.map.remove(&addr)
    }

    /// The buffer that wholly contains `[addr, addr+len)`, if any; `len == 0`, overflow
    /// and ranges spanning two buffers find nothing (Mooncake's `validateTcpAddress`).
    pub fn find(&self, addr: u64, len: u64) -> Option<&Entry<T>> {
        if len == 0 {
            return None;
        }
        let end = addr.checked_add(len)?;
        let (_, e) = self.map.range(..=addr).next_back()?;
        (end <= e.addr + e.len).then_some(e)
    }

    /// All buffers in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.map.values()
    }

    /// All buffers in the order they were registered, as the C++ engine lists them in
    /// its descriptor (so its first buffer is the first one registered).
    pub fn iter_in_registration_order(&self) -> impl Iterator<Item = &Entry<T>> {
        let mut entries: Vec<&Entry<T>> = self.map.values().collect();
        entries.sort_unstable_by_key(|e| e.seq);
        entries.into_iter()
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no buffer is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn registration_order_is_kept() {
        let mut r = BufferRegistry::default();
        for addr in [3000, 1000, 2000] {
            r.insert(addr, 10, "*", ()).unwrap();
        }
        r.remove(1000);
        r.insert(1000, 10, "*", ()).unwrap();
        let order: Vec<u64> = r.iter_in_registration_order().map(|e| e.addr).collect();
        assert_eq!(order, [3000, 2000, 1000]);
        let by_addr: Vec<u64> = r.iter().map(|e| e.addr).collect();
        assert_eq!(by_addr, [1000, 2000, 3000]);
    }

    #[test]
    fn overlap_rules_match_mooncake() {
        let mut r = BufferRegistry::default();
        r.insert(1000, 100, "*", ()).unwrap();
        assert!(matches!(
            r.insert(1000, 1, "*", ()),
            Err(TransferError::AddressOverlapped { .. })
        ));
        assert!(matches!(
            r.insert(950, 51, "*", ()),
            Err(TransferError::AddressOverlapped { .. })
        ));
        assert!(matches!(
            r.insert(1099, 10, "*", ()),
            Err(TransferError::AddressOverlapped { .. })
        ));
        assert!(matches!(
            r.insert(900, 300, "*", ()),
            Err(TransferError::AddressOverlapped { .. })
        ));
        r.insert(1100, 50, "*", ()).unwrap();
        r.insert(950, 50, "*", ()).unwrap();
        assert!(matches!(
            r.insert(5, 0, "*", ()),
            Err(TransferError::InvalidArgument(_))
        ));
        assert!(matches!(
            r.insert(u64::MAX, 2, "*", ()),
            Err(TransferError::InvalidArgument(_))
        ));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn find_requires_one_buffer() {
        let mut r = BufferRegistry::default();
        r.insert(1000, 100, "*", 'a').unwrap();
        r.insert(1100, 100, "*", 'b').unwrap();
        assert_eq!(r.find(1000, 100).map(|e| e.value), Some('a'));
        assert_eq!(r.find(1150, 50).map(|e| e.value), Some('b'));
        assert!(r.find(1050, 100).is_none(), "spans two adjacent buffers");
        assert!(r.find(1000, 0).is_none(), "zero length");
        assert!(r.find(999, 2).is_none());
        assert!(r.find(1199, 2).is_none());
        assert!(r.find(u64::MAX - 1, 10).is_none(), "overflow");
        assert!(r.find(1 << 63, 1 << 63).is_none());
        assert_eq!(r.remove(1000).map(|e| e.value), Some('a'));
        assert!(r.find(1000, 1).is_none());
    }

    proptest! {
        #[test]
        fn found_ranges_lie_inside_one_buffer(
            bufs in proptest::collection::vec((0u64..10_000, 1u64..500), 0..20),
            probes in proptest::collection::vec((0u64..11_000, 0u64..600), 0..50),
        ) {
            let mut r = BufferRegistry::default();
            for (a, l) in bufs {
                let _ = r.insert(a, l, "*", ());
            }
            let all: Vec<(u64, u64)> = r.iter().map(|e| (e.addr, e.len)).collect();
            for w in all.windows(2) {
                prop_assert!(w[0].0 + w[0].1 <= w[1].0, "overlap {:?}", w);
            }
            for (a, l) in probes {
                let inside = all.iter().any(|(s, n)| l > 0 && a >= *s && a + l <= s + n);
                prop_assert_eq!(r.find(a, l).is_some(), inside);
            }
        }
    }
}
