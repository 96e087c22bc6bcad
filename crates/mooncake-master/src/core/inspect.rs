//! The invariant checker the model-based tests and debug assertions use, and read-only
//! queries (no lease granted) for tests and admin.

use super::*;

impl MasterCore {
    /// Checks the core's invariants; used by the model-based tests and debug assertions.
    /// Replicas of one object lie on distinct mounted segment names, every replica's
    /// segment is mounted, and the allocated-bytes accounting matches the allocators.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (key, o) in &self.objects {
            let mut names = Vec::new();
            for s in &o.slots {
                let m = self
                    .segments
                    .get(&s.segment)
                    .ok_or_else(|| format!("{key}: replica on an unmounted segment"))?;
                if names.contains(&&m.segment.name) {
                    return Err(format!("{key}: two replicas on segment {}", m.segment.name));
                }
                names.push(&m.segment.name);
                if s.offset + o.size > m.segment.size {
                    return Err(format!("{key}: replica outside its segment"));
                }
            }
        }
        for (key, o) in &self.objects {
            if matches!(o.state, State::Processing { .. }) != self.pending.contains(key) {
                return Err(format!("{key}: pending index out of date"));
            }
        }
        if self.pending.iter().any(|k| !self.objects.contains_key(k)) {
            return Err("pending index names a missing key".into());
        }
        let sum: u64 = self
            .segments
            .values()
            .map(|m| m.alloc.allocated_bytes())
            .sum();
        if sum != self.allocated {
            return Err(format!(
                "allocated {} but allocators hold {sum}",
                self.allocated
            ));
        }
        let cap: u64 = self.segments.values().map(|m| m.segment.size).sum();
        if cap != self.capacity {
            return Err(format!(
                "capacity {} but segments sum to {cap}",
                self.capacity
            ));
        }
        Ok(())
    }

    /// Whether `key` is held (complete or in progress), for tests and admin queries.
    pub fn contains(&self, key: &str) -> bool {
        self.objects.contains_key(key)
    }

    /// The replicas of a complete object, without granting a lease.
    pub fn peek_replicas(&self, key: &str) -> Option<Vec<ReplicaDescriptor>> {
        let o = self
            .objects
            .get(key)
            .filter(|o| o.state == State::Complete)?;
        Some(
            o.slots
                .iter()
                .filter_map(|s| self.describe(s, o.size, o.version))
                .collect(),
        )
    }

    /// The lease deadline of `key`, if it exists.
    pub fn lease_until(&self, key: &str) -> Option<Instant> {
        self.objects.get(key).map(|o| o.lease_until)
    }
}
