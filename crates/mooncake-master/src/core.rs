//! The master's object-metadata core: sans-io, time passed in.
//!
//! Owns mounted segments (each with an [`OffsetAllocator`]), client liveness, objects and
//! their replicas, read leases, pins and eviction. Every method takes `now`; nothing here
//! reads a clock, spawns a task or touches a socket. The runtime shell (`Master`) wraps it
//! in a lock and calls [`MasterCore::tick`] periodically.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use mooncake_store::allocator::{AllocHandle, OffsetAllocator};
use mooncake_store::placement::{Candidate, PlacementRequest, Rng};
use mooncake_store::{
    ClientId, ClientStatus, DrainMove, ErrorCode, ObjectKey, Pin, PingReply, ReplicaDescriptor,
    ReplicaList, ReplicateConfig, Segment, SegmentId,
};

use crate::MasterConfig;

pub mod binary;
mod clear;
mod disk;
mod drain;
mod evict;
mod held;
mod history;
mod inspect;
mod jobs;
mod journal;
mod segments;
mod slots;
pub(crate) use self::slots::MAX_SLOTS_PER_CALL;
mod status;
mod tasks;

pub use self::disk::{DiskStats, LoadState};
use self::history::Event;
pub use self::history::{
    KeyEvent, KeyExplanation, KeyState, LookupOp, LookupStats, MissCause, HISTORY_EVENTS,
    HISTORY_GONE_KEYS,
};
pub use self::jobs::{DrainJobView, JobStatus, SegmentStatus};
pub use self::journal::{
    Change, DurableState, ObjectRecord, ReplicaRecord, RestoreReport, SegmentRecord, SpaceUse,
};
pub use self::status::{ClientView, SegmentView};

#[derive(Debug)]
struct Mounted {
    segment: Segment,
    client: ClientId,
    alloc: OffsetAllocator,
    /// Being drained: no new object is placed here.
    draining: bool,
    /// Drained by a drain job: empty, and no new object is placed here.
    drained: bool,
    /// A durable segment whose owner went silent: its objects are kept, unreadable, until
    /// this instant, waiting for a restarted owner to remount it.
    detached_until: Option<Instant>,
}

/// A copy in progress off a draining segment: the new range, not yet a replica.
#[derive(Debug, Clone, Copy)]
struct PendingMove {
    from: SegmentId,
    version: u64,
    slot: Slot,
}

#[derive(Debug, Default)]
struct ClientState {
    alive: bool,
    deadline: Option<Instant>,
    segments: Vec<SegmentId>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    segment: SegmentId,
    handle: AllocHandle,
    offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Processing { client: ClientId, started: Instant },
    Complete,
}

#[derive(Debug)]
struct Object {
    size: u64,
    /// Unique to this incarnation of the key (see [`ReplicaDescriptor::version`]).
    version: u64,
    slots: Vec<Slot>,
    state: State,
    lease_until: Instant,
    pin: Pin,
    /// How long the soft pin lasts from commit ([`Pin::Soft`] only).
    soft_pin_ttl: std::time::Duration,
    soft_pin_until: Option<Instant>,
    /// The client whose put or upsert created this incarnation (`batch_replica_clear`
    /// lets only it clear the object).
    owner: ClientId,
    /// The writer's CRC-32C of the value, if it gave one.
    checksum: Option<u32>,
    /// Lookups that found this incarnation readable (for `explain`).
    reads: u64,
    /// When the last of them happened.
    last_read: Option<Instant>,
    /// The memory segment whose holder's disk tier has a complete record of this version.
    disk: Option<SegmentId>,
    /// A disk task (demotion or load) is in flight for it.
    disk_busy: bool,
    /// Its memory replica was loaded from disk: described with version 0, so no client
    /// validates a read it started from a cached location against it (the range may have
    /// held other bytes until the load, at the same address and object version).
    loaded: bool,
}

/// Mooncake's put/upsert argument checks: a valid key, a non-zero size, at least one
/// replica, and no `prefer_alloc_in_same_node` (refused as the C++ release does).
fn validate_put(
    key: &str,
    size: u64,
    config: &ReplicateConfig,
    max_soft_pin: std::time::Duration,
) -> Result<ObjectKey, ErrorCode> {
    let key = ObjectKey::new(key)?;
    if size == 0 || config.replica_num == 0 || config.prefer_alloc_in_same_node {
        return Err(ErrorCode::InvalidParams);
    }
    // Mooncake's `ResolveSoftPinRequest`: a TTL only with a soft pin, and at most the max.
    match config.soft_pin_ttl_ms {
        Some(_) if config.pin != Pin::Soft => return Err(ErrorCode::InvalidParams),
        Some(ms) if u128::from(ms) > max_soft_pin.as_millis() => {
            return Err(ErrorCode::InvalidParams)
        }
        _ => {}
    }
    Ok(key)
}

/// The pin an object gets and its soft-pin lifetime: a soft pin of 0 ms is no pin.
fn resolve_pin(
    config: &ReplicateConfig,
    default: std::time::Duration,
) -> (Pin, std::time::Duration) {
    match (config.pin, config.soft_pin_ttl_ms) {
        (Pin::Soft, Some(0)) => (Pin::None, default),
        (Pin::Soft, Some(ms)) => (Pin::Soft, std::time::Duration::from_millis(ms)),
        (pin, _) => (pin, default),
    }
}

/// What one [`MasterCore::tick`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Clients expired for silence (their segments were unmounted).
    pub expired_clients: Vec<ClientId>,
    /// Unfinished puts discarded after the discard timeout.
    pub discarded_puts: usize,
    /// Objects evicted.
    pub evicted: usize,
}

/// Eviction counters (Mooncake's metric names in the shell).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvictionStats {
    /// Objects evicted so far.
    pub evicted_keys: u64,
    /// Bytes freed by eviction.
    pub evicted_bytes: u64,
    /// Eviction passes that freed something.
    pub successful_passes: u64,
    /// Eviction passes attempted.
    pub attempted_passes: u64,
}

/// The hasher of the maps keyed by object key: foldhash, seeded at random per map and per
/// process (so a client cannot pick keys that collide). The standard SipHash was a fifth
/// of a standby's CPU; with foldhash a standby applies a batch of 32 records to a state
/// of 100,000 objects in 9.0 µs instead of 13.2 (`benches/master.rs`).
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// The master's state machine.
#[derive(Debug)]
pub struct MasterCore {
    config: MasterConfig,
    view_version: i64,
    segments: BTreeMap<SegmentId, Mounted>,
    clients: HashMap<ClientId, ClientState>,
    objects: HashMap<String, Object, KeyHasher>,
    delayed_frees: Vec<(Instant, SegmentId, AllocHandle)>,
    /// Keys of unfinished puts, so the discard scan does not walk every object.
    pending: std::collections::HashSet<String>,
    rng: Rng,
    capacity: u64,
    allocated: u64,
    stats: EvictionStats,
    /// The next object version; starts at `view_version << 20`, so a restarted master never
    /// reissues a version of its previous incarnation.
    next_version: u64,
    /// Copies off draining segments, by key.
    moves: HashMap<String, PendingMove>,
    /// Copy and move tasks.
    tasks: tasks::Tasks,
    /// Drain jobs.
    jobs: jobs::Jobs,
    /// Durable changes not yet taken by the shell (`None`: not recorded).
    journal: Option<journal::Journal>,
    /// Lookup counters by miss cause and the bounded per-key history (`explain`).
    history: history::History,
    /// Holders' disk tiers and their tasks.
    disk: disk::DiskState,
    /// Ranges reserved for clients' next puts.
    slots: slots::Slots,
}

impl MasterCore {
    /// An empty master. `view_version` distinguishes master incarnations.
    pub fn new(config: MasterConfig, view_version: i64) -> Self {
        let rng = Rng::new(config.seed);
        Self {
            config,
            view_version,
            segments: BTreeMap::new(),
            clients: HashMap::new(),
            objects: HashMap::default(),
            delayed_frees: Vec::new(),
            pending: std::collections::HashSet::new(),
            rng,
            capacity: 0,
            allocated: 0,
            stats: EvictionStats::default(),
            next_version: (view_version.max(1) as u64) << 20,
            moves: HashMap::new(),
            tasks: tasks::Tasks::default(),
            jobs: jobs::Jobs::default(),
            journal: None,
            history: history::History::default(),
            disk: disk::DiskState::default(),
            slots: slots::Slots::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// Total bytes of mounted segments.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved by replicas (and by preempted puts awaiting release).
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Number of objects (including puts in progress).
    pub fn key_count(&self) -> usize {
        self.objects.len()
    }

    /// Number of soft-pinned objects.
    pub fn soft_pin_key_count(&self) -> usize {
        self.objects.values().filter(|o| o.pin == Pin::Soft).count()
    }

    /// Clients currently alive.
    pub fn active_clients(&self) -> usize {
        self.clients.values().filter(|c| c.alive).count()
    }

    /// Eviction counters.
    pub fn eviction_stats(&self) -> EvictionStats {
        self.stats
    }

    /// Mounted segments with their capacity and allocated bytes.
    pub fn segment_usage(&self) -> Vec<(String, u64, u64)> {
        self.segments
            .values()
            .map(|m| {
                (
                    m.segment.name.clone(),
                    m.segment.size,
                    m.alloc.allocated_bytes(),
                )
            })
            .collect()
    }

    /// Keys of every complete object (for `/get_all_keys`).
    pub fn keys(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|(_, o)| o.state == State::Complete)
            .map(|(k, _)| k.clone())
            .collect()
    }

    // ---- objects ----

    /// Whether a readable replica exists; `true` grants a read lease.
    pub fn exist_key(&mut self, key: &str, now: Instant) -> bool {
        let ttl = self.config.default_kv_lease_ttl;
        match self.objects.get_mut(key) {
            Some(o) if o.state == State::Complete => {
                o.lease_until = o.lease_until.max(now + ttl);
                o.reads += 1;
                o.last_read = Some(now);
                self.lookup_hit(LookupOp::Exist);
                true
            }
            _ => {
                self.lookup_miss(LookupOp::Exist, key);
                false
            }
        }
    }

    /// The readable replicas of a key; grants or extends the read lease.
    pub fn get_replica_list(&mut self, key: &str, now: Instant) -> Result<ReplicaList, ErrorCode> {
        let Some(o) = self.objects.get_mut(key) else {
            self.lookup_miss(LookupOp::GetReplicaList, key);
            return Err(ErrorCode::ObjectNotFound);
        };
        if o.state != State::Complete {
            self.lookup_miss(LookupOp::GetReplicaList, key);
            return Err(ErrorCode::ReplicaIsNotReady);
        }
        // A memory copy of an object that also lives on disk is cheap to drop and load
        // again: its readers get a shorter lease, so reading through a disk tier larger
        // than memory is not stalled by leases.
        let ttl = match o.disk {
            Some(_) => self.config.disk_lease(o.size),
            None => self.config.default_kv_lease_ttl,
        };
        o.lease_until = o.lease_until.max(now + ttl);
        o.reads += 1;
        o.last_read = Some(now);
        let (size, version, slots, checksum) = (o.size, o.version, o.slots.clone(), o.checksum);
        let loaded = o.loaded;
        let disk_segments = o
            .disk
            .and_then(|d| self.segments.get(&d))
            .map(|m| vec![m.segment.name.clone()])
            .unwrap_or_default();
        // Replicas on a detached durable segment wait for its owner's restart.
        let replicas: Vec<ReplicaDescriptor> = slots
            .iter()
            .filter(|s| {
                self.segments
                    .get(&s.segment)
                    .is_some_and(|m| m.detached_until.is_none())
            })
            .filter_map(|s| self.describe(s, size, if loaded { 0 } else { version }))
            .collect();
        if replicas.is_empty() {
            self.lookup_miss(LookupOp::GetReplicaList, key);
            return Err(ErrorCode::ReplicaIsNotReady);
        }
        self.lookup_hit(LookupOp::GetReplicaList);
        Ok(ReplicaList {
            replicas,
            lease_ttl_ms: ttl.as_millis() as u64,
            checksum,
            disk_segments,
        })
    }

    fn describe(&self, slot: &Slot, size: u64, version: u64) -> Option<ReplicaDescriptor> {
        let m = self.segments.get(&slot.segment)?;
        Some(ReplicaDescriptor {
            buffer_address: m.segment.base + slot.offset,
            size,
            version,
            transport_endpoint: m.segment.te_endpoint.clone(),
            protocol: m.segment.protocol.clone(),
            segment_name: m.segment.name.clone(),
        })
    }

    /// Allocates the replicas of a new object, in the PROCESSING state.
    pub fn put_start(
        &mut self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
        now: Instant,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let key = validate_put(key, size, config, self.config.max_kv_soft_pin_ttl)?;
        self.admit_new(key.as_str(), now)?;
        self.allocate_object(client, key, size, config, now)
    }

    /// A put's rule for its key: `ObjectAlreadyExists` if it is complete or a put of it is
    /// under way; a put abandoned for `put_start_discard_timeout` is discarded.
    fn admit_new(&mut self, key: &str, now: Instant) -> Result<(), ErrorCode> {
        if let Some(o) = self.objects.get(key) {
            match o.state {
                State::Complete => return Err(ErrorCode::ObjectAlreadyExists),
                State::Processing { started, .. }
                    if now.saturating_duration_since(started)
                        < self.config.put_start_discard_timeout =>
                {
                    return Err(ErrorCode::ObjectAlreadyExists)
                }
                State::Processing { .. } => {
                    self.preempt(key, now);
                    self.record(key, Some(now), Event::Discarded);
                }
            }
        }
        Ok(())
    }

    /// Like `put_start`, replacing an existing complete object.
    pub fn upsert_start(
        &mut self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
        now: Instant,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let key = validate_put(key, size, config, self.config.max_kv_soft_pin_ttl)?;
        if let Some(o) = self.objects.get(key.as_str()) {
            match o.state {
                State::Processing { started, .. }
                    if now.saturating_duration_since(started)
                        < self.config.put_start_discard_timeout =>
                {
                    return Err(ErrorCode::ObjectReplicaBusy)
                }
                // Readers may still hold a lease on the old replicas: free them when it ends.
                _ => self.preempt_until(key.as_str(), o.lease_until.max(now)),
            }
        }
        self.allocate_object(client, key, size, config, now)
    }

    fn allocate_object(
        &mut self,
        client: ClientId,
        key: ObjectKey,
        size: u64,
        config: &ReplicateConfig,
        now: Instant,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        self.supersede_offline(key.as_str());
        let mut slots = self.place(client, size, config);
        while slots.is_empty() {
            // Evict synchronously before failing: a put fails only when nothing is evictable.
            // Only when some segment the put may use could hold it at all: evicting cannot
            // help a put that every usable segment is too small for (or that has none).
            if !self.placeable(size, config) || self.evict(size, now) == 0 {
                return Err(ErrorCode::NoAvailableHandle);
            }
            slots = self.place(client, size, config);
        }
        let version = self.next_version;
        self.next_version += 1;
        let descriptors = slots
            .iter()
            .filter_map(|s| self.describe(s, size, version))
            .collect();
        self.insert_processing(client, key, size, slots, version, config, now);
        Ok(descriptors)
    }

    /// Files a new object in the PROCESSING state on `slots` (its ranges, already
    /// allocated) with `version`.
    #[allow(clippy::too_many_arguments)]
    fn insert_processing(
        &mut self,
        client: ClientId,
        key: ObjectKey,
        size: u64,
        slots: Vec<Slot>,
        version: u64,
        config: &ReplicateConfig,
        now: Instant,
    ) {
        let (pin, soft_pin_ttl) = resolve_pin(config, self.config.default_kv_soft_pin_ttl);
        let placed = Event::Placed {
            size,
            segments: history::Replicas::new(slots.iter().map(|s| s.segment)),
            upsert: self.objects.contains_key(key.as_str()),
        };
        self.record(key.as_str(), Some(now), placed);
        self.pending.insert(key.as_str().to_owned());
        self.objects.insert(
            key.as_str().to_owned(),
            Object {
                size,
                version,
                slots,
                state: State::Processing {
                    client,
                    started: now,
                },
                lease_until: now,
                pin,
                soft_pin_ttl,
                soft_pin_until: None,
                owner: client,
                checksum: config.checksum,
                reads: 0,
                last_read: None,
                disk: None,
                disk_busy: false,
                loaded: false,
            },
        );
    }

    /// Whether a segment the put may use is large enough for `size` (free or not).
    fn placeable(&self, size: u64, config: &ReplicateConfig) -> bool {
        self.segments.values().any(|m| {
            !m.draining
                && !m.drained
                && m.detached_until.is_none()
                && !config.excluded_segments.contains(&m.segment.name)
                && m.segment.size >= size
        })
    }

    /// Picks segments and allocates one range on each distinct segment name.
    fn place(&mut self, client: ClientId, size: u64, config: &ReplicateConfig) -> Vec<Slot> {
        let ids: Vec<SegmentId> = self.segments.keys().copied().collect();
        let writer_host = self
            .clients
            .get(&client)
            .and_then(|c| c.segments.first())
            .and_then(|s| self.segments.get(s))
            .map(|m| m.segment.host_id.clone());
        let order = {
            let candidates: Vec<Candidate<'_>> = ids
                .iter()
                .filter_map(|id| self.segments.get(id))
                .map(|m| Candidate {
                    name: &m.segment.name,
                    host_id: &m.segment.host_id,
                    capacity: m.segment.size,
                    free: m.alloc.free_bytes(),
                })
                .collect();
            let req = PlacementRequest {
                replicas: config.replica_num,
                preferred: &config.preferred_segments,
                writer_host: writer_host.as_deref(),
            };
            self.config
                .allocation_strategy
                .order(&candidates, &req, &mut self.rng)
        };
        let mut slots: Vec<Slot> = Vec::with_capacity(config.replica_num.min(self.segments.len()));
        let mut names: Vec<String> =
            Vec::with_capacity(config.replica_num.min(self.segments.len()));
        for i in order {
            if slots.len() == config.replica_num {
                break;
            }
            let id = ids[i];
            let Some(m) = self.segments.get_mut(&id) else {
                continue;
            };
            if m.draining
                || m.drained
                || m.detached_until.is_some()
                || names.contains(&m.segment.name)
                || config.excluded_segments.contains(&m.segment.name)
            {
                continue;
            }
            if let Some(a) = m.alloc.allocate(size) {
                self.allocated += a.size;
                if let Some(j) = self.journal.as_mut() {
                    j.note_allocation();
                }
                names.push(m.segment.name.clone());
                slots.push(Slot {
                    segment: id,
                    handle: a.handle,
                    offset: a.offset,
                });
            }
        }
        slots
    }

    /// Makes an object readable.
    pub fn put_end(&mut self, client: ClientId, key: &str, now: Instant) -> Result<(), ErrorCode> {
        let o = self.objects.get_mut(key).ok_or(ErrorCode::ObjectNotFound)?;
        match o.state {
            State::Processing { client: owner, .. } if owner == client => {
                self.pending.remove(key);
                o.state = State::Complete;
                o.lease_until = now;
                if o.pin == Pin::Soft {
                    o.soft_pin_until = Some(now + o.soft_pin_ttl);
                }
                self.journal_key(key);
                self.record(key, Some(now), Event::Committed);
                if self.config.disk_write_through {
                    self.start_write_through(key, now);
                }
                Ok(())
            }
            State::Processing { .. } => Err(ErrorCode::IllegalClient),
            State::Complete => Err(ErrorCode::InvalidWrite),
        }
    }

    /// Abandons a put: frees its ranges now (the revoking writer has stopped writing).
    pub fn put_revoke(&mut self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let o = self.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        match o.state {
            State::Processing { client: owner, .. } if owner == client => {
                self.pending.remove(key);
                if let Some(o) = self.objects.remove(key) {
                    self.free_slots(&o.slots);
                }
                self.record(key, None, Event::Revoked);
                Ok(())
            }
            State::Processing { .. } => Err(ErrorCode::IllegalClient),
            State::Complete => Err(ErrorCode::InvalidWrite),
        }
    }

    /// Removes an object.
    pub fn remove(&mut self, key: &str, force: bool, now: Instant) -> Result<(), ErrorCode> {
        let Some(o) = self.objects.get(key) else {
            // Not here, but perhaps on the disk of a holder that went away: not to return.
            self.supersede_offline(key);
            return Err(ErrorCode::ObjectNotFound);
        };
        if o.lease_until > now && !force {
            let left = o.lease_until - now;
            let how = "remove";
            self.record(key, Some(now), Event::LeaseConflict { how, left });
            return Err(ErrorCode::ObjectHasLease);
        }
        if o.state != State::Complete {
            return Err(ErrorCode::ReplicaIsNotReady);
        }
        self.supersede_offline(key);
        if let Some(o) = self.objects.remove(key) {
            let reads = o.reads;
            self.discard(key, o, now);
            self.record(
                key,
                Some(now),
                Event::Removed {
                    how: "remove",
                    reads,
                },
            );
        }
        self.journal_key(key);
        Ok(())
    }

    /// Removes every complete object (leased ones only with `force`); returns the count.
    pub fn remove_all(&mut self, force: bool, now: Instant) -> u64 {
        let keys: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, o)| o.state == State::Complete && (force || o.lease_until <= now))
            .map(|(k, _)| k.clone())
            .collect();
        self.supersede_offline_matching(|_| true);
        for k in &keys {
            if let Some(o) = self.objects.remove(k) {
                let (how, reads) = ("remove_all", o.reads);
                self.discard(k, o, now);
                self.record(k, Some(now), Event::Removed { how, reads });
            }
            self.journal_key(k);
        }
        keys.len() as u64
    }

    // ---- space ----

    fn free_slots(&mut self, slots: &[Slot]) {
        for s in slots {
            self.free_slot(s.segment, s.handle);
        }
    }

    fn free_slot(&mut self, segment: SegmentId, handle: AllocHandle) {
        if let Some(m) = self.segments.get_mut(&segment) {
            let before = m.alloc.allocated_bytes();
            if m.alloc.free(handle).is_ok() {
                self.allocated -= before - m.alloc.allocated_bytes();
                if let Some(j) = self.journal.as_mut() {
                    j.note_free();
                }
            }
        }
    }

    /// Drops an unfinished or replaced object whose writer may still be writing: its ranges
    /// are reused only after the release timeout.
    fn preempt(&mut self, key: &str, now: Instant) {
        self.preempt_until(key, now + self.config.put_start_release_timeout);
    }

    fn preempt_until(&mut self, key: &str, release_at: Instant) {
        self.pending.remove(key);
        if let Some(o) = self.objects.remove(key) {
            // Replacing a complete object (upsert) erases it durably at once: its ranges
            // may be reused after the readers' leases, before the new value is committed.
            if o.state == State::Complete {
                self.journal_key(key);
            }
            self.forget_disk_copy(key, o.disk, o.version);
            for s in o.slots {
                self.delayed_frees.push((release_at, s.segment, s.handle));
            }
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

#[cfg(test)]
mod features_tests;

#[cfg(test)]
#[path = "core/slots_tests.rs"]
mod slots_tests;

#[cfg(test)]
#[path = "core/disk_tests.rs"]
mod disk_tests;
