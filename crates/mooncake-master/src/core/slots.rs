//! Reserved slots: ranges lent to a client ahead of its next puts of one size, so that a
//! put costs one master round trip (`put_reserved`) instead of two (`put_start`,
//! `put_end`). A slot is placed as a put's replica would be (one replica, the master's
//! choice of segment), carries the version its object will have (also its id), and is not
//! journaled: like an unfinished put it is gone after a restart or failover, and its
//! client then takes the two-call path. Clients release the slots they drop unwritten; a
//! slot unused for 5 s is taken back, its range reused 65 s after the grant.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mooncake_store::{ClientId, ErrorCode, ReplicateConfig, ReservedSlot, SegmentId};

use super::{MasterCore, Slot};

/// Slots a client may hold per call of `reserve_slots`.
pub(crate) const MAX_SLOTS_PER_CALL: usize = 64;
/// The largest value a slot is lent for: above it the transfer, not the round trip, is
/// the cost, and slots held ahead would take real room from the cache.
pub(crate) const MAX_SLOT_BYTES: u64 = 64 << 10;

/// One reserved range.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reserved {
    owner: ClientId,
    slot: Slot,
    size: u64,
    version: u64,
    granted: Instant,
}

/// The reserved slots by id (a slot's id is its object's version, which no master
/// incarnation reissues: an id from a predecessor never names one of this master's).
#[derive(Debug, Default)]
pub(super) struct Slots {
    by_id: HashMap<u64, Reserved>,
}

/// A slot unused this long is taken back (clients stop using one after 2 s).
const SLOT_EXPIRY: Duration = Duration::from_secs(5);
/// A taken-back slot's range is reused only this long after its grant: a write a client
/// started into it (at most 2 s after the grant) has ended by then, as every transfer
/// ends within twice the engine's I/O timeout (60 s by default).
const SLOT_RELEASE: Duration = Duration::from_secs(65);

impl MasterCore {
    /// Reserves up to `count` ranges of `size` bytes for `client`'s next puts of that
    /// size (fewer, or none, when space is short: this never evicts).
    pub fn reserve_slots(
        &mut self,
        client: ClientId,
        size: u64,
        count: usize,
        now: Instant,
    ) -> Result<Vec<ReservedSlot>, ErrorCode> {
        if size == 0 || size > MAX_SLOT_BYTES || count == 0 || count > MAX_SLOTS_PER_CALL {
            return Err(ErrorCode::InvalidParams);
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            match self.place_slot(client, size, now) {
                Some(slot) => out.push(self.lend(client, slot, size, now)),
                None => break,
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// A range for a slot, evicting as a put would when the store is full; `None` when
    /// nothing is evictable.
    fn place_slot(&mut self, client: ClientId, size: u64, now: Instant) -> Option<Slot> {
        let config = ReplicateConfig::default();
        loop {
            if let Some(&slot) = self.place(client, size, &config).first() {
                return Some(slot);
            }
            if !self.placeable(size, &config) || self.evict(size, now) == 0 {
                return None;
            }
        }
    }

    /// Files `slot` as reserved for `client`; its descriptor.
    fn lend(
        &mut self,
        client: ClientId,
        slot: Slot,
        size: u64,
        now: Instant,
    ) -> Option<ReservedSlot> {
        let version = self.next_version;
        self.next_version += 1;
        let replica = self.describe(&slot, size, version)?;
        let id = version;
        self.slots.by_id.insert(
            id,
            Reserved {
                owner: client,
                slot,
                size,
                version,
                granted: now,
            },
        );
        Some(ReservedSlot { id, replica })
    }

    /// Makes `key` a complete object on `client`'s reserved slot `slot` (the value is
    /// already written there), as `put_start` and `put_end` would; answers with a new slot
    /// of the same size for the client's next put when one could be reserved.
    ///
    /// `UnavailableInCurrentStatus`: the slot is unknown (this master never lent it, or it
    /// expired), not the caller's, of another size, or on a segment that no longer takes
    /// puts; the caller puts the usual way. `ObjectAlreadyExists`: the key exists and the
    /// slot stays the caller's.
    pub fn put_reserved(
        &mut self,
        client: ClientId,
        key: &str,
        slot: u64,
        size: u64,
        config: &ReplicateConfig,
        now: Instant,
    ) -> Result<Option<ReservedSlot>, ErrorCode> {
        let key = super::validate_put(key, size, config, self.config.max_kv_soft_pin_ttl)?;
        if !config.fits_reserved_slot() {
            return Err(ErrorCode::InvalidParams);
        }
        let r = match self.slots.by_id.get(&slot) {
            Some(r) if r.owner == client && r.size == size => *r,
            _ => return Err(ErrorCode::UnavailableInCurrentStatus),
        };
        let usable = self
            .segments
            .get(&r.slot.segment)
            .is_some_and(|m| !m.draining && !m.drained && m.detached_until.is_none());
        if !usable {
            self.slots.by_id.remove(&slot);
            self.release_later(r.slot, now);
            return Err(ErrorCode::UnavailableInCurrentStatus);
        }
        self.admit_new(key.as_str(), now)?;
        self.slots.by_id.remove(&slot);
        self.supersede_offline(key.as_str());
        self.insert_processing(
            client,
            key.clone(),
            size,
            vec![r.slot],
            r.version,
            config,
            now,
        );
        self.put_end(client, key.as_str(), now)?;
        let next = self.place(client, size, &ReplicateConfig::default());
        Ok(next.first().and_then(|&s| self.lend(client, s, size, now)))
    }

    /// Frees `slot` after the release timeout (a writer may still be writing into it).
    fn release_later(&mut self, slot: Slot, now: Instant) {
        let at = now + self.config.put_start_release_timeout;
        self.delayed_frees.push((at, slot.segment, slot.handle));
    }

    /// Takes back the slots unused for [`SLOT_EXPIRY`] (their ranges free
    /// [`SLOT_RELEASE`] after the grant) and forgets those of segments that are gone.
    pub(super) fn expire_slots(&mut self, now: Instant) {
        let stale: Vec<u64> = self
            .slots
            .by_id
            .iter()
            .filter(|(_, r)| {
                now.saturating_duration_since(r.granted) >= SLOT_EXPIRY
                    || !self.segments.contains_key(&r.slot.segment)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(r) = self.slots.by_id.remove(&id) {
                let at = (r.granted + SLOT_RELEASE).max(now);
                self.delayed_frees.push((at, r.slot.segment, r.slot.handle));
            }
        }
    }

    /// Frees at once `client`'s slots among `ids` (slots it dropped unwritten: too old to
    /// use, or more than it keeps); ids it does not hold are ignored. How many it freed.
    pub fn release_slots(&mut self, client: ClientId, ids: &[u64]) -> usize {
        let mut freed = 0;
        for id in ids {
            if self.slots.by_id.get(id).is_some_and(|r| r.owner == client) {
                if let Some(r) = self.slots.by_id.remove(id) {
                    self.free_slot(r.slot.segment, r.slot.handle);
                    freed += 1;
                }
            }
        }
        freed
    }

    /// Forgets the slots on segment `id` (its ranges went with it).
    pub(super) fn forget_slots_on(&mut self, id: SegmentId) {
        self.slots.by_id.retain(|_, r| r.slot.segment != id);
    }

    /// How many slots are reserved (for status and tests).
    pub fn reserved_slots(&self) -> usize {
        self.slots.by_id.len()
    }
}
