//! Disk tiers: objects evicted from memory move to a holder's disk instead of being
//! dropped, and come back into the holder's memory when read.
//!
//! A holder (the owner of a memory segment) with a disk tier registers it for that
//! segment, with the records it found on disk. From then on:
//! - **demotion**: an eviction that picks an object held in such a segment, with no disk
//!   copy yet, queues a `Demote` task for the holder instead of freeing the range; the
//!   holder copies the range to its disk and reports; only then is the memory freed and
//!   the object's disk copy recorded. A failed demotion (disk full) evicts the object.
//!   An object that already has a disk copy loses only its memory copy on eviction;
//! - **load**: a read of an object with only a disk copy allocates a range in the holder's
//!   segment and queues a `Load` task; when the holder reports the bytes are there, the
//!   range is the object's memory replica again (read as any other);
//! - **delete**: removing or replacing an object with a disk copy queues a `Delete`;
//! - the holder's own LRU evictions, and records that fail their checksum, are reported
//!   and drop the disk copy (the object with it when it was the last copy).
//!
//! Disk copies are not journaled: a restarted master learns them again when holders
//! remount their tiers (as a restarted holder does after a scan).

use std::collections::VecDeque;

use mooncake_store::{DiskOutcome, DiskRecord, DiskTask, DiskTaskKind, DiskTaskResult};

use super::*;

/// How long a disk task may stay unanswered before it counts as failed (its holder is
/// probably gone; liveness will say so too).
const TASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long demotions to a tier stop after it reported being full.
const FULL_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// Disk-tier counters and gauges (the shell's metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    /// Objects demoted to a disk tier.
    pub demotions: u64,
    /// Objects written to a disk tier beside their memory copy (`--disk_write_through`).
    pub write_throughs: u64,
    /// Demotions that failed (the object was evicted instead).
    pub demotion_failures: u64,
    /// Demotions refused because a tier was full.
    pub disk_full: u64,
    /// Objects read back from disk into memory.
    pub disk_hits: u64,
    /// Loads that failed.
    pub load_failures: u64,
    /// Records dropped because they were missing or failed their checksum.
    pub corrupt_records: u64,
    /// Disk copies dropped by a holder's LRU.
    pub disk_evictions: u64,
    /// Disk copies recorded (gauge).
    pub disk_objects: u64,
    /// Bytes of disk copies (gauge).
    pub disk_bytes: u64,
    /// Objects with only a disk copy (gauge).
    pub disk_only_objects: u64,
    /// Capacity of the registered tiers (gauge).
    pub disk_capacity: u64,
}

/// What a read of an object with no memory replica can expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadState {
    /// A memory replica is readable now.
    Ready,
    /// A holder is loading it from disk: ask again when it reports.
    Loading,
    /// Its holder's segment has no room for it now: ask again later.
    NoRoom,
    /// It has no disk copy either (or the key is unknown).
    Unavailable,
}

#[derive(Debug)]
struct Tier {
    client: ClientId,
    capacity: u64,
    queue: VecDeque<DiskTask>,
    full_until: Option<Instant>,
}

#[derive(Debug)]
struct Inflight {
    key: String,
    version: u64,
    size: u64,
    segment: SegmentId,
    started: Instant,
    /// The range being filled by a load; `None` for a demotion.
    load: Option<Slot>,
    /// A write-through copy (`--disk_write_through`): the memory copy stays.
    keep_memory: bool,
}

/// The disk tiers and their tasks in flight.
#[derive(Debug, Default)]
pub(super) struct DiskState {
    tiers: HashMap<SegmentId, Tier>,
    inflight: HashMap<u64, Inflight>,
    next_id: u64,
    /// Bytes of memory whose demotion is in flight (an eviction pass counts them as freed).
    pub(super) demoting_bytes: u64,
    /// Write-through copies in flight (their objects cannot be evicted until they land).
    writing_through: u64,
    /// A task was queued since the shell last looked.
    signal: bool,
    stats: DiskStats,
    /// Records that must never be served again, by key: the highest version whose record
    /// may still lie on some holder's disk although the object was removed or replaced
    /// (a `Delete` not yet confirmed, or lost with a holder that died; a record refused at
    /// a mount). A mount refuses records of unknown keys at or below it, so that a removed
    /// key does not come back when its holder restarts.
    tombstones: HashMap<String, u64>,
    /// `Delete` tasks queued or taken and not yet reported: task id to key and version
    /// (its tombstone goes when the holder reports it done).
    deletes: HashMap<u64, (SegmentId, String, u64)>,
    /// Disk copies whose holder went away (its segment was dropped), by key: the version
    /// its restart may report. Removing or replacing such a key turns it into a
    /// tombstone; a mount that reports it takes it back.
    offline: HashMap<String, u64>,
}

impl MasterCore {
    /// Registers the disk tier of `client`'s `segment` with the records found on it, and
    /// returns the records the holder must delete (another version of the key exists).
    /// Records of unknown keys become disk-only objects again, so a restarted holder (or
    /// master) serves them without a re-put.
    pub fn mount_disk_tier(
        &mut self,
        client: ClientId,
        segment: SegmentId,
        capacity: u64,
        records: Vec<DiskRecord>,
        now: Instant,
    ) -> Result<Vec<DiskRecord>, ErrorCode> {
        let m = self
            .segments
            .get(&segment)
            .ok_or(ErrorCode::SegmentNotFound)?;
        if m.client != client {
            return Err(ErrorCode::IllegalClient);
        }
        // Copies this tier had before (a remount): kept only if still on disk.
        let listed: std::collections::HashSet<(&str, u64)> = records
            .iter()
            .map(|r| (r.key.as_str(), r.version))
            .collect();
        let lost: Vec<String> = self
            .objects
            .iter()
            .filter(|(k, o)| o.disk == Some(segment) && !listed.contains(&(k.as_str(), o.version)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in lost {
            self.drop_disk_copy(&k);
        }
        // Mounting again (the ping's remount and the poll can both do it) keeps the tasks
        // already queued.
        match self.disk.tiers.get_mut(&segment) {
            Some(t) if t.client == client => t.capacity = capacity,
            _ => {
                self.disk.tiers.insert(
                    segment,
                    Tier {
                        client,
                        capacity,
                        queue: VecDeque::new(),
                        full_until: None,
                    },
                );
            }
        }
        let mut stale = Vec::new();
        let ttl = self.config.default_kv_soft_pin_ttl;
        for r in records {
            if self.disk.offline.get(&r.key) == Some(&r.version) {
                self.disk.offline.remove(&r.key);
            }
            match self.objects.get_mut(&r.key) {
                Some(o) if o.version == r.version && o.state == State::Complete => {
                    o.disk = Some(segment);
                }
                Some(_) => {
                    // Another version is current: this record must not come back later
                    // either, should the holder die before it deletes it.
                    self.tombstone(&r.key, r.version);
                    stale.push(r);
                }
                None if self.disk.tombstones.get(&r.key) >= Some(&r.version) => {
                    // Removed or replaced while this record could not be deleted.
                    stale.push(r);
                }
                None => {
                    let Ok(key) = ObjectKey::new(r.key.clone()) else {
                        stale.push(r);
                        continue;
                    };
                    if r.size == 0 {
                        stale.push(r);
                        continue;
                    }
                    self.next_version = self.next_version.max(r.version + 1);
                    self.objects.insert(
                        key.as_str().to_owned(),
                        Object {
                            size: r.size,
                            version: r.version,
                            slots: Vec::new(),
                            state: State::Complete,
                            lease_until: now,
                            pin: Pin::None,
                            soft_pin_ttl: ttl,
                            soft_pin_until: None,
                            owner: client,
                            checksum: Some(r.checksum),
                            disk: Some(segment),
                            disk_busy: false,
                            loaded: false,
                            reads: 0,
                            last_read: None,
                        },
                    );
                }
            }
        }
        Ok(stale)
    }

    /// Whether `segment`'s tier has tasks waiting.
    pub fn has_disk_tasks(&self, segment: SegmentId) -> bool {
        self.disk
            .tiers
            .get(&segment)
            .is_some_and(|t| !t.queue.is_empty())
    }

    /// The tasks waiting for `segment`'s tier (now in flight). `SegmentNotFound` when the
    /// tier is not registered (the holder must mount it again).
    pub fn take_disk_tasks(
        &mut self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<Vec<DiskTask>, ErrorCode> {
        let t = self
            .disk
            .tiers
            .get_mut(&segment)
            .ok_or(ErrorCode::SegmentNotFound)?;
        if t.client != client {
            return Err(ErrorCode::IllegalClient);
        }
        Ok(t.queue.drain(..).collect())
    }

    /// Applies a holder's reports: task outcomes, and records its LRU evicted.
    pub fn finish_disk_tasks(
        &mut self,
        client: ClientId,
        segment: SegmentId,
        results: &[DiskTaskResult],
        evicted: &[DiskRecord],
        now: Instant,
    ) -> Result<(), ErrorCode> {
        match self.disk.tiers.get(&segment) {
            Some(t) if t.client == client => {}
            Some(_) => return Err(ErrorCode::IllegalClient),
            None => return Err(ErrorCode::SegmentNotFound),
        }
        for r in evicted {
            if self
                .objects
                .get(&r.key)
                .is_some_and(|o| o.version == r.version && o.disk == Some(segment))
            {
                self.disk.stats.disk_evictions += 1;
                self.drop_disk_copy(&r.key);
            }
        }
        for r in results {
            if let Some(f) = self.disk.inflight.remove(&r.id) {
                self.finish_one(f, r.outcome, now);
            } else if let Some((_, key, version)) = self.disk.deletes.remove(&r.id) {
                if r.outcome == DiskOutcome::Done
                    && self.disk.tombstones.get(&key) == Some(&version)
                {
                    self.disk.tombstones.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// Notes that `key`'s record at `version` (or older) must not be served again.
    fn tombstone(&mut self, key: &str, version: u64) {
        let v = self.disk.tombstones.entry(key.to_owned()).or_insert(0);
        *v = (*v).max(version);
    }

    /// The user removed or replaced `key` (whether or not the master holds it now): a copy
    /// of it on the disk of a holder that went away must not come back with the holder.
    pub(super) fn supersede_offline(&mut self, key: &str) {
        if let Some(version) = self.disk.offline.remove(key) {
            self.tombstone(key, version);
        }
    }

    /// [`MasterCore::supersede_offline`] for every key `matches` accepts.
    pub(super) fn supersede_offline_matching(&mut self, matches: impl Fn(&str) -> bool) {
        let keys: Vec<String> = self
            .disk
            .offline
            .keys()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for k in keys {
            self.supersede_offline(&k);
        }
    }

    fn finish_one(&mut self, f: Inflight, outcome: DiskOutcome, now: Instant) {
        let same = |o: &Object| o.version == f.version && o.state == State::Complete;
        let Some(slot) = f.load else {
            // A demotion, or a write-through copy.
            if f.keep_memory {
                self.disk.writing_through = self.disk.writing_through.saturating_sub(1);
            } else {
                self.disk.demoting_bytes = self.disk.demoting_bytes.saturating_sub(f.size);
            }
            let Some(o) = self.objects.get_mut(&f.key).filter(|o| same(o)) else {
                // Removed or replaced meanwhile: its record is garbage.
                if outcome == DiskOutcome::Done {
                    self.queue_delete(f.segment, &f.key, f.version);
                }
                return;
            };
            o.disk_busy = false;
            if outcome == DiskOutcome::Done && f.keep_memory {
                o.disk = Some(f.segment);
                self.disk.stats.write_throughs += 1;
                return;
            }
            if outcome == DiskOutcome::Done {
                o.disk = Some(f.segment);
                self.disk.stats.demotions += 1;
                if o.lease_until <= now {
                    let slots = std::mem::take(&mut o.slots);
                    self.free_slots(&slots);
                    self.journal_key(&f.key);
                }
                return;
            }
            self.disk.stats.demotion_failures += 1;
            if outcome == DiskOutcome::Full {
                self.disk.stats.disk_full += 1;
                if let Some(t) = self.disk.tiers.get_mut(&f.segment) {
                    t.full_until = Some(now + FULL_BACKOFF);
                }
            }
            // Evicted cleanly instead (a failed write-through keeps its memory copy),
            // unless someone started reading it meanwhile.
            if !f.keep_memory && o.lease_until <= now && o.pin != Pin::Hard {
                if let Some(o) = self.objects.remove(&f.key) {
                    self.free_slots(&o.slots);
                    self.stats.evicted_keys += 1;
                    self.stats.evicted_bytes += o.size;
                }
                self.journal_key(&f.key);
            }
            return;
        };
        // A load.
        let Some(o) = self.objects.get_mut(&f.key).filter(|o| same(o)) else {
            self.free_slot(slot.segment, slot.handle);
            return;
        };
        o.disk_busy = false;
        if outcome == DiskOutcome::Done {
            o.slots.push(slot);
            o.loaded = true;
            o.lease_until = o.lease_until.max(now + self.config.disk_lease(o.size));
            self.disk.stats.disk_hits += 1;
            self.journal_key(&f.key);
            return;
        }
        self.free_slot(slot.segment, slot.handle);
        self.disk.stats.load_failures += 1;
        if outcome == DiskOutcome::Corrupt {
            self.disk.stats.corrupt_records += 1;
            self.drop_disk_copy(&f.key);
        }
    }

    /// Forgets `key`'s disk copy (the holder no longer has it); the object goes too when
    /// it has no memory replica and no task in flight.
    fn drop_disk_copy(&mut self, key: &str) {
        let Some(o) = self.objects.get_mut(key) else {
            return;
        };
        o.disk = None;
        if o.slots.is_empty() && !o.disk_busy {
            self.objects.remove(key);
            self.journal_key(key);
        }
    }

    /// Queues the deletion of an object's disk copy (it was removed, replaced or evicted).
    pub(super) fn forget_disk_copy(&mut self, key: &str, disk: Option<SegmentId>, version: u64) {
        if let Some(seg) = disk {
            self.queue_delete(seg, key, version);
        }
    }

    fn queue_delete(&mut self, segment: SegmentId, key: &str, version: u64) {
        let id = self.next_disk_task();
        self.tombstone(key, version);
        self.disk
            .deletes
            .insert(id, (segment, key.to_owned(), version));
        if let Some(t) = self.disk.tiers.get_mut(&segment) {
            t.queue.push_back(DiskTask {
                id,
                kind: DiskTaskKind::Delete,
                key: key.to_owned(),
                version,
                size: 0,
                address: 0,
            });
        }
    }

    /// A new task id (every caller queues the task: the shell is told to wake holders).
    fn next_disk_task(&mut self) -> u64 {
        self.disk.signal = true;
        self.disk.next_id += 1;
        self.disk.next_id
    }

    /// Starts demoting `key` from a memory replica whose segment has a disk tier that is
    /// not full; `false` when none can take it (the caller evicts it instead).
    pub(super) fn start_demote(&mut self, key: &str, now: Instant) -> bool {
        self.start_disk_copy(key, now, false)
    }

    /// `--disk_write_through`: starts copying a just-completed object to the disk tier of
    /// its holder (if it has one that is not full), keeping the memory copy. Until the
    /// copy lands the object is not evicted; afterwards an eviction only drops its memory
    /// copy, and a put waiting for room waits for these copies too.
    pub(super) fn start_write_through(&mut self, key: &str, now: Instant) {
        let fresh = self
            .objects
            .get(key)
            .is_some_and(|o| o.disk.is_none() && !o.disk_busy);
        if fresh {
            self.start_disk_copy(key, now, true);
        }
    }

    /// Queues a `Demote` of `key` to a tier of one of its memory segments; `keep_memory`
    /// for a write-through copy (the range is not freed when it lands).
    fn start_disk_copy(&mut self, key: &str, now: Instant, keep_memory: bool) -> bool {
        let Some(o) = self.objects.get(key) else {
            return false;
        };
        // A copy or move task may free or rewrite the range: no demotion beside one.
        let tasked = self.tasks.by_id.values().any(|t| {
            t.key == key
                && matches!(
                    t.info.status,
                    mooncake_store::TaskStatus::Pending | mooncake_store::TaskStatus::Processing
                )
        });
        if tasked {
            return false;
        }
        let (size, version) = (o.size, o.version);
        let found = o.slots.iter().find_map(|s| {
            let t = self.disk.tiers.get(&s.segment)?;
            let m = self.segments.get(&s.segment)?;
            let usable = t.full_until.is_none_or(|u| u <= now)
                && m.detached_until.is_none()
                && size <= t.capacity;
            usable.then_some((s.segment, m.segment.base + s.offset))
        });
        let Some((segment, address)) = found else {
            return false;
        };
        let task = Inflight {
            key: key.to_owned(),
            version,
            size,
            segment,
            started: now,
            load: None,
            keep_memory,
        };
        if !self.queue_disk_task(DiskTaskKind::Demote, address, task) {
            return false;
        }
        if keep_memory {
            self.disk.writing_through += 1;
        } else {
            self.disk.demoting_bytes += size;
        }
        true
    }

    /// Queues a `Demote` or `Load` for `task.segment`'s tier, records it in flight and
    /// marks its object busy; `false` (nothing recorded) when the segment has no tier.
    fn queue_disk_task(&mut self, kind: DiskTaskKind, address: u64, task: Inflight) -> bool {
        if !self.disk.tiers.contains_key(&task.segment) {
            return false;
        }
        let id = self.next_disk_task();
        if let Some(t) = self.disk.tiers.get_mut(&task.segment) {
            t.queue.push_back(DiskTask {
                id,
                kind,
                key: task.key.clone(),
                version: task.version,
                size: task.size,
                address,
            });
        }
        if let Some(o) = self.objects.get_mut(&task.key) {
            o.disk_busy = true;
        }
        self.disk.inflight.insert(id, task);
        true
    }

    /// For a read of `key` that found no memory replica: whether one is coming. Starts a
    /// load from the holder's disk into its segment when there is none in flight
    /// (evicting to make room if needed).
    pub fn request_load(&mut self, key: &str, now: Instant) -> LoadState {
        let Some(o) = self.objects.get(key).filter(|o| o.state == State::Complete) else {
            return LoadState::Unavailable;
        };
        if !o.slots.is_empty() {
            return LoadState::Ready;
        }
        if o.disk_busy {
            return LoadState::Loading;
        }
        let Some(segment) = o.disk else {
            return LoadState::Unavailable;
        };
        let (size, version) = (o.size, o.version);
        let usable = |core: &Self| {
            core.segments
                .get(&segment)
                .is_some_and(|m| m.detached_until.is_none())
                && core.disk.tiers.contains_key(&segment)
        };
        if !usable(self) {
            return LoadState::Unavailable;
        }
        let mut slot = self.allocate_in(segment, size);
        if slot.is_none() {
            self.evict(size, now);
            slot = self.allocate_in(segment, size);
        }
        let Some(slot) = slot else {
            return LoadState::NoRoom;
        };
        let address = self.segments.get(&segment).map_or(0, |m| m.segment.base) + slot.offset;
        let task = Inflight {
            key: key.to_owned(),
            version,
            size,
            segment,
            started: now,
            load: Some(slot),
            keep_memory: false,
        };
        if !self.queue_disk_task(DiskTaskKind::Load, address, task) {
            // Unreachable while `usable` holds (nothing above drops a tier): give the
            // range back rather than leak it.
            self.free_slots(&[slot]);
            return LoadState::Unavailable;
        }
        LoadState::Loading
    }

    fn allocate_in(&mut self, segment: SegmentId, size: u64) -> Option<Slot> {
        let m = self.segments.get_mut(&segment)?;
        let a = m.alloc.allocate(size)?;
        self.allocated += a.size;
        Some(Slot {
            segment,
            handle: a.handle,
            offset: a.offset,
        })
    }

    /// Disk tasks unanswered for too long fail (called from `tick`).
    pub(super) fn expire_disk_tasks(&mut self, now: Instant) {
        let old: Vec<u64> = self
            .disk
            .inflight
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.started) >= TASK_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some(f) = self.disk.inflight.remove(&id) {
                tracing::warn!(key = %f.key, "a disk task timed out");
                self.finish_one(f, DiskOutcome::Failed, now);
            }
        }
    }

    /// Forgets the tier of a segment that is being dropped: its tasks in flight are
    /// abandoned (load ranges go with the segment's allocator) and its disk copies are
    /// gone with it.
    pub(super) fn drop_disk_tier(&mut self, segment: SegmentId) {
        if self.disk.tiers.remove(&segment).is_none() {
            return;
        }
        // Deletes the holder did not report stay tombstones: nobody will report them now.
        self.disk.deletes.retain(|_, (s, _, _)| *s != segment);
        let abandoned: Vec<u64> = self
            .disk
            .inflight
            .iter()
            .filter(|(_, f)| f.segment == segment)
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            if let Some(f) = self.disk.inflight.remove(&id) {
                // A demotion or copy may have completed on disk: a record of an object
                // that is gone (or newer now) must not come back with the holder.
                let current = self
                    .objects
                    .get(&f.key)
                    .is_some_and(|o| o.version == f.version);
                if f.load.is_none() {
                    if current {
                        self.disk.offline.insert(f.key.clone(), f.version);
                    } else {
                        self.tombstone(&f.key, f.version);
                    }
                }
                if f.keep_memory {
                    self.disk.writing_through = self.disk.writing_through.saturating_sub(1);
                } else if f.load.is_none() {
                    self.disk.demoting_bytes = self.disk.demoting_bytes.saturating_sub(f.size);
                }
                if let Some(o) = self.objects.get_mut(&f.key) {
                    o.disk_busy = false;
                }
            }
        }
        for (k, o) in self.objects.iter_mut() {
            if o.disk == Some(segment) {
                o.disk = None;
                self.disk.offline.insert(k.clone(), o.version);
            }
        }
    }

    /// Whether tasks were queued since the last call (the shell then wakes the holders'
    /// polls).
    pub fn take_disk_signal(&mut self) -> bool {
        std::mem::take(&mut self.disk.signal)
    }

    /// Whether demotions or write-through copies are in flight (memory they will free, or
    /// make evictable, may let a put in).
    pub fn demotions_in_flight(&self) -> bool {
        self.disk.demoting_bytes > 0 || self.disk.writing_through > 0
    }

    /// The disk counters and gauges.
    pub fn disk_stats(&self) -> DiskStats {
        let mut s = self.disk.stats;
        s.disk_capacity = self.disk.tiers.values().map(|t| t.capacity).sum();
        for o in self.objects.values().filter(|o| o.disk.is_some()) {
            s.disk_objects += 1;
            s.disk_bytes += o.size;
            s.disk_only_objects += u64::from(o.slots.is_empty());
        }
        s
    }

    /// The size of `key`'s value, if it exists.
    pub fn object_size(&self, key: &str) -> Option<u64> {
        self.objects.get(key).map(|o| o.size)
    }

    /// The segment name of the holder of `key`'s disk copy, if it has one (`/query_key`).
    pub fn disk_holder(&self, key: &str) -> Option<String> {
        let seg = self.objects.get(key)?.disk?;
        self.segments.get(&seg).map(|m| m.segment.name.clone())
    }
}

impl MasterCore {
    /// Frees a removed object's memory and queues the deletion of its disk copy. Memory a
    /// demotion is still copying is freed only after the task's timeout, so the holder
    /// never copies bytes of a newer object into the record.
    pub(super) fn discard(&mut self, key: &str, o: Object, now: Instant) {
        self.forget_disk_copy(key, o.disk, o.version);
        let demoting = o.disk_busy && !o.slots.is_empty();
        if demoting {
            for s in o.slots {
                self.delayed_frees
                    .push((now + TASK_TIMEOUT, s.segment, s.handle));
            }
        } else {
            self.free_slots(&o.slots);
        }
    }
}
