//! The journal of durable changes, the full-state export and the restore.
//!
//! What survives a master restart is the set of mounted segments (with their owners) and
//! the complete objects with their replicas at their exact offsets. Each mutating method
//! of the core notes what it changed (a segment mounted or unmounted, a key whose complete
//! object was created, replaced, changed its replicas or went away); the shell calls
//! [`MasterCore::take_journal`] right after the call, still under the core's lock, and
//! gets one [`Change`] per segment event and per touched key carrying the key's state
//! *after* the call. Every record is absolute (a whole object, or its absence), so replaying
//! a record twice is harmless and the order of keys within one call does not matter.
//!
//! Unfinished puts, read leases, pins' running deadlines, copy/move tasks, drain
//! reservations and drain jobs are not journaled: an unfinished put is lost with the master
//! (its writer's `put_end` fails and it retries), leases restart empty, soft pins restart
//! their TTL at the restore.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mooncake_store::allocator::OffsetAllocator;
use mooncake_store::{ClientId, ObjectKey, Pin, Segment, SegmentId};
use serde::{Deserialize, Serialize};

use super::held::Held;
use super::{MasterCore, Mounted, Object, Slot, State};

/// One durable change of the master's state (a record of the log and of a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A segment was mounted, or a restarted owner took over a durable segment.
    Mount {
        /// The segment as its owner described it.
        segment: SegmentRecord,
        /// The owner (a store service keeps its id for its lifetime).
        #[serde(with = "client_hex")]
        client: ClientId,
    },
    /// A segment was unmounted: its replicas are gone, objects left without one too.
    Unmount {
        /// The segment.
        #[serde(with = "segment_hex")]
        segment: SegmentId,
    },
    /// A complete object as it is now (created, replaced, or its replicas changed).
    Object(ObjectRecord),
    /// A key's complete object is gone (removed, evicted, cleared, replaced by a put in
    /// progress, or its last replica's segment unmounted).
    Erase {
        /// The key.
        key: String,
    },
}

/// A mounted segment ([`Segment`]'s fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Identity, stable across remounts (32 hex digits).
    #[serde(with = "segment_hex")]
    pub id: SegmentId,
    /// The owner's name.
    pub name: String,
    /// Start address in the owner process.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// The owner's transfer-engine segment name.
    pub te_endpoint: String,
    /// Transport.
    pub protocol: String,
    /// Host without port.
    pub host_id: String,
    /// Backed by a file that outlives its owner.
    #[serde(default)]
    pub durable: bool,
}

/// A complete object with everything needed to serve it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// The key.
    pub key: String,
    /// Value bytes.
    pub size: u64,
    /// The object's version (never reissued by a later master).
    pub version: u64,
    /// Eviction pinning: `none`, `soft` or `hard`.
    #[serde(default, with = "pin_name")]
    pub pin: Pin,
    /// How long a soft pin lasts from commit (restarted at a restore), in ms.
    #[serde(default)]
    pub soft_pin_ttl_ms: u64,
    /// The client whose put created this incarnation.
    #[serde(with = "client_hex")]
    pub owner: ClientId,
    /// The writer's CRC-32C of the value, if it gave one.
    #[serde(default)]
    pub checksum: Option<u32>,
    /// Where each replica lives.
    pub replicas: Vec<ReplicaRecord>,
}

/// One replica: a range of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The segment.
    #[serde(with = "segment_hex")]
    pub segment: SegmentId,
    /// Offset from the segment's start.
    pub offset: u64,
}

/// Whether a call allocated or freed segment space (see [`MasterCore::take_space`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpaceUse {
    /// It handed out a range.
    pub allocated: bool,
    /// It made a range (or a whole segment) reusable.
    pub freed: bool,
}

/// What [`MasterCore::restore`] brought back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// Segments restored, waiting for their owners to remount them.
    pub segments: usize,
    /// Complete objects restored.
    pub objects: usize,
    /// Replicas (or whole records) dropped as invalid: a bad segment or key, a range
    /// outside its segment or overlapping another. Zero unless the files were tampered with.
    pub dropped: usize,
}

/// Segment events in call order and the keys touched, materialized by `take_journal`.
#[derive(Debug, Default)]
pub(super) struct Journal {
    segments: Vec<Change>,
    keys: Vec<String>,
    /// The call allocated space (which an earlier, not yet durable, change may have
    /// freed).
    allocated: bool,
    /// The call made space reusable (freed a range or dropped a segment).
    freed: bool,
}

impl Journal {
    pub(super) fn note_allocation(&mut self) {
        self.allocated = true;
    }

    pub(super) fn note_free(&mut self) {
        self.freed = true;
    }
}

impl From<&Segment> for SegmentRecord {
    fn from(s: &Segment) -> Self {
        Self {
            id: s.id,
            name: s.name.clone(),
            base: s.base,
            size: s.size,
            te_endpoint: s.te_endpoint.clone(),
            protocol: s.protocol.clone(),
            host_id: s.host_id.clone(),
            durable: s.durable,
        }
    }
}

impl From<SegmentRecord> for Segment {
    fn from(s: SegmentRecord) -> Self {
        Self {
            id: s.id,
            name: s.name,
            base: s.base,
            size: s.size,
            te_endpoint: s.te_endpoint,
            protocol: s.protocol,
            host_id: s.host_id,
            durable: s.durable,
        }
    }
}

impl MasterCore {
    /// Starts recording durable changes for [`MasterCore::take_journal`]. Off by default:
    /// a master without a state directory pays nothing.
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    /// What the call since the last [`MasterCore::take_journal`] did with space. A call
    /// that allocated must not answer before every earlier change that freed space is
    /// durable (the range it hands out may be one of them); a call that freed space is
    /// such a change.
    pub fn take_space(&mut self) -> SpaceUse {
        match self.journal.as_mut() {
            Some(j) => SpaceUse {
                allocated: std::mem::take(&mut j.allocated),
                freed: std::mem::take(&mut j.freed),
            },
            None => SpaceUse::default(),
        }
    }

    /// Notes a key whose complete object changed (no-op without a journal).
    pub(super) fn journal_key(&mut self, key: &str) {
        if let Some(j) = self.journal.as_mut() {
            j.keys.push(key.to_owned());
        }
    }

    /// Notes a segment mounted or unmounted (no-op without a journal).
    pub(super) fn journal_segment(&mut self, change: Change) {
        if let Some(j) = self.journal.as_mut() {
            j.segments.push(change);
        }
    }

    /// The durable changes since the last call: segment events in order, then one record
    /// per touched key with its state now. Empty (and allocation-free) when nothing changed.
    pub fn take_journal(&mut self) -> Vec<Change> {
        let Some(j) = self.journal.as_mut() else {
            return Vec::new();
        };
        if j.segments.is_empty() && j.keys.is_empty() {
            return Vec::new();
        }
        let mut out = std::mem::take(&mut j.segments);
        let mut keys = std::mem::take(&mut j.keys);
        if keys.len() > 1 {
            keys.sort_unstable();
            keys.dedup();
        }
        out.reserve(keys.len());
        for key in keys {
            match self.objects.get(&key) {
                // An object with only a disk copy is the holder's to report again.
                Some(o) if o.state == State::Complete && !o.slots.is_empty() => {
                    // The journal's own copy of the key becomes the record's.
                    out.push(Change::Object(Self::object_record(key, o)));
                }
                _ => out.push(Change::Erase { key }),
            }
        }
        out
    }

    /// The whole durable state: every mounted segment, then every complete object.
    /// Restoring it on an empty core gives the same segments, objects and offsets.
    pub fn snapshot(&self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.segments.len() + self.objects.len());
        for m in self.segments.values() {
            out.push(Change::Mount {
                segment: SegmentRecord::from(&m.segment),
                client: m.client,
            });
        }
        for (key, o) in &self.objects {
            if o.state == State::Complete && !o.slots.is_empty() {
                out.push(Change::Object(Self::object_record(key.clone(), o)));
            }
        }
        out
    }

    /// `key`'s complete object `o` as a record.
    fn object_record(key: String, o: &Object) -> ObjectRecord {
        ObjectRecord {
            key,
            size: o.size,
            version: o.version,
            pin: o.pin,
            soft_pin_ttl_ms: o.soft_pin_ttl.as_millis() as u64,
            owner: o.owner,
            checksum: o.checksum,
            replicas: o
                .slots
                .iter()
                .map(|s| ReplicaRecord {
                    segment: s.segment,
                    offset: s.offset,
                })
                .collect(),
        }
    }

    /// Replaces the state with the result of `changes` (a snapshot followed by the log).
    ///
    /// Every restored segment waits for its owner: it is unreadable and takes no new
    /// object until the same client remounts it (same id and size), and is dropped with
    /// its objects, as for a dead client, if that has not happened by `now + grace`.
    /// Restored clients must remount (their pings answer `NeedRemount`). Object versions
    /// issued from now on are above every restored one. Builds each segment's allocator
    /// once from its occupied ranges, so the cost is O(n log n) in the objects.
    pub fn restore(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        now: Instant,
        grace: Duration,
    ) -> RestoreReport {
        self.restore_state(changes.into_iter().collect(), now, grace)
    }

    /// [`MasterCore::restore`] of a state already folded (what a standby holds).
    pub fn restore_state(
        &mut self,
        mut state: DurableState,
        now: Instant,
        grace: Duration,
    ) -> RestoreReport {
        let segs = std::mem::take(&mut state.segs);
        // Each object as held (no record built: a restore of a million objects would
        // allocate a replica list for each).
        let mut objs: Vec<(Box<str>, Held)> = state.objs.into_iter().collect();
        self.segments.clear();
        self.clients.clear();
        self.objects.clear();
        self.pending.clear();
        self.delayed_frees.clear();
        self.moves.clear();
        self.capacity = 0;
        self.allocated = 0;
        let mut report = RestoreReport::default();
        let mut owners: Vec<(SegmentId, ClientId, Segment)> = Vec::with_capacity(segs.len());
        for (id, (record, client)) in segs {
            let valid = record.size > 0
                && !record.name.is_empty()
                && record.base.checked_add(record.size).is_some()
                && self.capacity.checked_add(record.size).is_some();
            if !valid {
                report.dropped += 1;
                continue;
            }
            self.capacity += record.size;
            owners.push((id, client, record.into()));
        }
        objs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Per segment: the ranges to rebuild, and which (object, replica) each one is.
        let mut ranges: HashMap<SegmentId, Occupied> = HashMap::new();
        for (i, (_, o)) in objs.iter().enumerate() {
            for (r, rep) in o.replicas().enumerate() {
                let entry = ranges.entry(rep.segment).or_default();
                entry.0.push((rep.offset, o.size));
                entry.1.push((i, r));
            }
        }
        // Replicas keep their order (readers try them in it).
        let mut slots: Vec<Vec<Option<Slot>>> = objs
            .iter()
            .map(|(_, o)| vec![None; o.replicas().len()])
            .collect();
        for (id, client, segment) in owners {
            let (occupied, who) = ranges.remove(&id).unwrap_or_default();
            let (alloc, got) = OffsetAllocator::from_occupied(segment.size, &occupied);
            for (a, (i, r)) in got.into_iter().zip(who) {
                match a {
                    Some(a) => {
                        slots[i][r] = Some(Slot {
                            segment: id,
                            handle: a.handle,
                            offset: a.offset,
                        });
                    }
                    None => report.dropped += 1,
                }
            }
            self.allocated += alloc.allocated_bytes();
            self.name_segment(id, &segment.name);
            self.segments.insert(
                id,
                Mounted {
                    segment,
                    client,
                    alloc,
                    draining: false,
                    drained: false,
                    detached_until: Some(now + grace),
                },
            );
            let state = self.clients.entry(client).or_default();
            state.segments.push(id);
            state.deadline = Some(now + grace);
            report.segments += 1;
        }
        // Replicas on segments that were never mounted.
        report.dropped += ranges.values().map(|(r, _)| r.len()).sum::<usize>();
        for ((key, o), slots) in objs.into_iter().zip(slots) {
            let slots = slots.into_iter().flatten().collect();
            self.insert_restored(key.into_string(), o, slots, now, &mut report);
        }
        report
    }

    fn insert_restored(
        &mut self,
        key: String,
        o: Held,
        slots: Vec<Slot>,
        now: Instant,
        report: &mut RestoreReport,
    ) {
        if ObjectKey::new(key.as_str()).is_err() || o.size == 0 || slots.is_empty() {
            // Its ranges (if any) go back to the allocators.
            self.free_slots(&slots);
            report.dropped += 1;
            return;
        }
        self.next_version = self.next_version.max(o.version.saturating_add(1));
        let soft_pin_ttl = Duration::from_millis(o.soft_pin_ttl_ms);
        self.objects.insert(
            key,
            Object {
                size: o.size,
                version: o.version,
                slots,
                state: State::Complete,
                // Readers of the previous master may hold leases: keep the object from
                // eviction and removal for one lease period, as if just read.
                lease_until: now + self.config.default_kv_lease_ttl,
                pin: o.pin,
                soft_pin_ttl,
                soft_pin_until: (o.pin == Pin::Soft).then(|| now + soft_pin_ttl),
                owner: o.owner(),
                checksum: o.checksum,
                reads: 0,
                last_read: None,
                disk: None,
                disk_busy: false,
                loaded: false,
            },
        );
        report.objects += 1;
    }
}

/// One segment's replicas to rebuild: `(offset, size)` ranges, and which `(object,
/// replica)` each one is.
type Occupied = (Vec<(u64, u64)>, Vec<(usize, usize)>);

/// The durable state as plain maps: what a standby master keeps while it follows the
/// leader's changes, and what a restore folds its input into.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DurableState {
    /// Mounted segments with their owners.
    segs: BTreeMap<SegmentId, (SegmentRecord, ClientId)>,
    /// Complete objects (compactly: a standby holds one per object).
    objs: HashMap<Box<str>, Held, super::KeyHasher>,
}

impl FromIterator<Change> for DurableState {
    fn from_iter<I: IntoIterator<Item = Change>>(changes: I) -> Self {
        let mut state = Self::default();
        for c in changes {
            state.apply(c);
        }
        state
    }
}

impl DurableState {
    /// Applies one change (absolute, so applying it twice is harmless).
    pub fn apply(&mut self, c: Change) {
        match c {
            Change::Mount { segment, client } => {
                self.segs.insert(segment.id, (segment, client));
            }
            Change::Unmount { segment } => {
                self.segs.remove(&segment);
                self.objs.retain(|_, o| o.drop_segment(segment));
            }
            Change::Object(o) => {
                let (key, held) = Held::from_record(o);
                self.objs.insert(key, held);
            }
            Change::Erase { key } => {
                self.objs.remove(key.as_str());
            }
        }
    }

    /// The complete objects, each with its key.
    fn into_objects(self) -> impl Iterator<Item = ObjectRecord> {
        self.objs.into_iter().map(|(key, o)| o.into_record(key))
    }

    /// Complete objects held.
    pub fn object_count(&self) -> usize {
        self.objs.len()
    }

    /// Segments held.
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// The state as changes that rebuild it (segments first).
    pub fn into_changes(mut self) -> impl Iterator<Item = Change> {
        let segs = std::mem::take(&mut self.segs)
            .into_values()
            .map(|(segment, client)| Change::Mount { segment, client });
        segs.chain(self.into_objects().map(Change::Object))
    }
}

/// A `u128` id as 32 hex digits (JSON numbers above 2^53 do not survive every reader).
/// Parsed from the string in place, with no allocation (two per object record made a
/// standby's decoding of a batch measurably slower).
fn hex_to_u128<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    struct Hex;
    impl serde::de::Visitor<'_> for Hex {
        type Value = u128;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an id as hex digits")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u128, E> {
            u128::from_str_radix(s, 16).map_err(E::custom)
        }
    }
    d.deserialize_str(Hex)
}

/// A `u128` id as the 32 hex digits [`hex_to_u128`] reads, written without allocating.
fn u128_to_hex<S: serde::Serializer>(v: u128, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:032x}"))
}

mod client_hex {
    use mooncake_store::ClientId;

    pub(super) fn serialize<S: serde::Serializer>(v: &ClientId, s: S) -> Result<S::Ok, S::Error> {
        super::u128_to_hex(v.0, s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<ClientId, D::Error> {
        super::hex_to_u128(d).map(ClientId)
    }
}

mod segment_hex {
    use mooncake_store::SegmentId;

    pub(super) fn serialize<S: serde::Serializer>(v: &SegmentId, s: S) -> Result<S::Ok, S::Error> {
        super::u128_to_hex(v.0, s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<SegmentId, D::Error> {
        super::hex_to_u128(d).map(SegmentId)
    }
}

mod pin_name {
    use mooncake_store::Pin;
    use serde::Deserialize;

    pub(super) fn serialize<S: serde::Serializer>(v: &Pin, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match v {
            Pin::None => "none",
            Pin::Soft => "soft",
            Pin::Hard => "hard",
        })
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Pin, D::Error> {
        match String::deserialize(d)?.as_str() {
            "none" => Ok(Pin::None),
            "soft" => Ok(Pin::Soft),
            "hard" => Ok(Pin::Hard),
            other => Err(serde::de::Error::custom(format!("unknown pin {other:?}"))),
        }
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
