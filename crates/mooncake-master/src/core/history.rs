//! Why a lookup missed, and what the master remembers of a key: lookup counters by cause,
//! a bounded ring of per-key events and a bounded map of how each vanished key went.
//!
//! Sans-io like the rest of the core: events carry the `now` the caller passed (or, for
//! the few calls that take none, the latest instant any call passed). The shell turns
//! the ages into wall-clock times and serves them (`/explain`, the status page).
//!
//! Cheap on the hot path: nothing here allocates per call. Keys are remembered by a 64-bit
//! hash (events are matched to a key by it, and vanished keys live in a direct-mapped
//! table indexed by it), so a put, a remove or a miss costs a hash and two array writes.
//! The memory is lossy by design: a vanished key can be overwritten by a later one that
//! maps to the same slot, and then reads as never written.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mooncake_store::SegmentId;
use serde::Serialize;

use super::{MasterCore, State};

/// Events kept in the ring, for every key together (the oldest go first).
pub const HISTORY_EVENTS: usize = 65_536;
/// Slots of the table of vanished keys (a later key mapping to the same slot replaces
/// the earlier one).
pub const HISTORY_GONE_KEYS: usize = 262_144;

/// Replicas named per placement event (more are counted, not named): two keep an event
/// small, and most objects have one or two replicas.
const NAMED_REPLICAS: usize = 2;

/// Why a lookup (`get_replica_list`, `exist_key`) found nothing readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissCause {
    /// No put of the key is remembered (never written, or its cause fell out of the
    /// bounded memory of vanished keys).
    NeverWritten,
    /// A put started and has not ended yet (or an upsert is replacing the value).
    PutInProgress,
    /// The last put was revoked by its writer or discarded after the discard timeout.
    PutAbandoned,
    /// Evicted under memory pressure.
    Evicted,
    /// Removed (`remove`, `remove_all`, `remove_by_regex`, `batch_replica_clear`).
    Removed,
    /// Every replica's holder is gone: its segment was unmounted, its client expired, or
    /// a durable segment waits detached for its owner's restart.
    HolderLost,
}

impl MissCause {
    /// Every cause, in declaration order (the order of the counters).
    pub const ALL: [MissCause; 6] = [
        MissCause::NeverWritten,
        MissCause::PutInProgress,
        MissCause::PutAbandoned,
        MissCause::Evicted,
        MissCause::Removed,
        MissCause::HolderLost,
    ];

    /// The Prometheus label value (`cause="evicted"`).
    pub fn as_str(self) -> &'static str {
        match self {
            MissCause::NeverWritten => "never_written",
            MissCause::PutInProgress => "put_in_progress",
            MissCause::PutAbandoned => "put_abandoned",
            MissCause::Evicted => "evicted",
            MissCause::Removed => "removed",
            MissCause::HolderLost => "holder_lost",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The lookup operations counted by [`LookupStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOp {
    /// `exist_key` (and its batch form).
    Exist,
    /// `get_replica_list` (and its batch form).
    GetReplicaList,
}

impl LookupOp {
    /// Both operations, in index order.
    pub const ALL: [LookupOp; 2] = [LookupOp::Exist, LookupOp::GetReplicaList];

    /// The Prometheus label value (`op="get_replica_list"`).
    pub fn as_str(self) -> &'static str {
        match self {
            LookupOp::Exist => "exist_key",
            LookupOp::GetReplicaList => "get_replica_list",
        }
    }
}

/// Lookup hits and misses by cause, per operation, since the master started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LookupStats {
    hits: [u64; 2],
    misses: [[u64; 6]; 2],
    lease_conflicts: u64,
}

impl LookupStats {
    /// Lookups of `op` that found a readable object.
    pub fn hits(&self, op: LookupOp) -> u64 {
        self.hits[op as usize]
    }

    /// Lookups of `op` that missed for `cause`.
    pub fn misses(&self, op: LookupOp, cause: MissCause) -> u64 {
        self.misses[op as usize][cause.index()]
    }

    /// Removes and clears refused because a reader still held a lease on the object.
    pub fn lease_conflicts(&self) -> u64 {
        self.lease_conflicts
    }
}

/// One thing that happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// `put_start` (or `upsert_start` when `upsert`) placed replicas on these segments.
    Placed {
        size: u64,
        segments: Replicas,
        upsert: bool,
    },
    /// `put_end`: readable from now on.
    Committed,
    /// `put_revoke` by the writer.
    Revoked,
    /// An unfinished put dropped after the discard timeout.
    Discarded,
    /// Evicted; it had been read `reads` times.
    Evicted { reads: u64 },
    /// Removed by `how`; it had been read `reads` times.
    Removed { how: &'static str, reads: u64 },
    /// A replica's segment went away; `last` when it was the object's last replica.
    HolderLost { segment: SegmentId, last: bool },
    /// A remove or clear refused: a reader held a lease for `left` more.
    LeaseConflict { how: &'static str, left: Duration },
}

/// The segments of a placement, without allocating: the first [`NAMED_REPLICAS`] ids and
/// the total count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replicas {
    ids: [SegmentId; NAMED_REPLICAS],
    len: usize,
}

impl Replicas {
    pub(super) fn new(segments: impl Iterator<Item = SegmentId>) -> Self {
        let mut r = Replicas {
            ids: [SegmentId(0); NAMED_REPLICAS],
            len: 0,
        };
        for s in segments {
            if r.len < NAMED_REPLICAS {
                r.ids[r.len] = s;
            }
            r.len += 1;
        }
        r
    }

    fn named(&self) -> &[SegmentId] {
        &self.ids[..self.len.min(NAMED_REPLICAS)]
    }
}

/// A vanished key's slot, 16 bytes so the table (4 MiB) stays mostly in cache: its hash
/// (0: empty), when it went (ms after [`History::base`], saturating), lookups that
/// missed it since (saturating) and the cause's index in [`MissCause::ALL`].
#[derive(Debug, Clone, Copy, Default)]
struct Gone {
    hash: u64,
    at_ms: u32,
    misses: u16,
    cause: u8,
}

impl Gone {
    fn cause(&self) -> MissCause {
        MissCause::ALL[usize::from(self.cause) % MissCause::ALL.len()]
    }
}

/// A key's 64-bit hash: eight bytes at a time, multiply-rotate, then a full avalanche
/// (MurmurHash3's finalizer). Not keyed: a crafted collision can only make one key's
/// history show another's, never touch the objects themselves.
fn key_hash(key: &str) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = key.as_bytes();
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    // 0 marks an empty slot of the table of vanished keys.
    (h ^ (h >> 33)).max(1)
}

/// The core's memory of keys: the event ring, vanished keys, segment names, counters.
#[derive(Debug, Default)]
pub(super) struct History {
    /// `(when, key hash, what)`, oldest first.
    events: VecDeque<(Instant, u64, Event)>,
    /// Vanished keys, direct-mapped by hash (allocated when the first key vanishes).
    gone: Vec<Gone>,
    /// The origin of [`Gone::at_ms`]: the instant the first key vanished.
    base: Option<Instant>,
    /// Names of every segment ever mounted, to name the holders of past events.
    names: HashMap<SegmentId, String>,
    stats: LookupStats,
    /// The latest instant a caller passed in (for calls that take none).
    pub(super) latest: Option<Instant>,
}

impl History {
    fn push(&mut self, at: Instant, hash: u64, event: Event) {
        if self.events.len() == HISTORY_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((at, hash, event));
    }

    fn slot(hash: u64) -> usize {
        (hash % HISTORY_GONE_KEYS as u64) as usize
    }

    fn gone(&mut self, hash: u64, cause: MissCause, at: Instant) {
        if self.gone.is_empty() {
            self.gone = vec![Gone::default(); HISTORY_GONE_KEYS];
        }
        let base = *self.base.get_or_insert(at);
        let at_ms = at.saturating_duration_since(base).as_millis();
        let slot = &mut self.gone[Self::slot(hash)];
        let misses = if slot.hash == hash { slot.misses } else { 0 };
        *slot = Gone {
            hash,
            at_ms: u32::try_from(at_ms).unwrap_or(u32::MAX),
            misses,
            cause: cause.index() as u8,
        };
    }

    /// The cause, the instant and the misses of a vanished key.
    fn gone_of(&self, hash: u64) -> Option<(MissCause, Instant, u64)> {
        let g = self.gone.get(Self::slot(hash)).filter(|g| g.hash == hash)?;
        let at = self.base? + Duration::from_millis(u64::from(g.at_ms));
        Some((g.cause(), at, u64::from(g.misses)))
    }

    pub(super) fn name_segment(&mut self, id: SegmentId, name: &str) {
        if self.names.get(&id).map(String::as_str) != Some(name) {
            self.names.insert(id, name.to_owned());
        }
    }

    fn segment_name(&self, id: SegmentId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{:x}", id.0))
    }

    fn hit(&mut self, op: LookupOp) {
        self.stats.hits[op as usize] += 1;
    }

    /// Counts a miss of an absent key and returns its cause.
    fn miss_absent(&mut self, op: LookupOp, key: &str) -> MissCause {
        let hash = key_hash(key);
        let found = self
            .gone
            .get_mut(Self::slot(hash))
            .filter(|g| g.hash == hash);
        let cause = match found {
            Some(g) => {
                g.misses = g.misses.saturating_add(1);
                g.cause()
            }
            None => MissCause::NeverWritten,
        };
        self.stats.misses[op as usize][cause.index()] += 1;
        cause
    }

    fn miss(&mut self, op: LookupOp, cause: MissCause) {
        self.stats.misses[op as usize][cause.index()] += 1;
    }
}

/// What the master knows of a key now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    /// Readable.
    Readable {
        /// Value size in bytes.
        size: u64,
        /// The segments holding a readable replica.
        replicas: Vec<String>,
        /// Lookups that found it since it was written.
        reads: u64,
        /// Milliseconds since the last such lookup (`None`: never read).
        last_read_ago_ms: Option<u64>,
        /// Milliseconds left on the read lease (0: none).
        lease_left_ms: u64,
        /// `none`, `soft` or `hard`.
        pin: &'static str,
    },
    /// Present but not readable: a lookup misses with `cause`.
    Unreadable {
        /// [`MissCause::PutInProgress`] or [`MissCause::HolderLost`].
        cause: MissCause,
        /// Value size in bytes.
        size: u64,
    },
    /// Absent: a lookup misses with `cause`.
    Missing {
        /// Why, as far as the master remembers.
        cause: MissCause,
        /// Milliseconds since it vanished (`None`: never written as far as remembered).
        since_ms: Option<u64>,
        /// Lookups that missed it since it vanished (saturates at 65,535).
        misses: u64,
    },
}

/// One remembered event of a key, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyEvent {
    /// Milliseconds before the explanation was asked for.
    pub ago_ms: u64,
    /// `placed`, `upsert_placed`, `committed`, `revoked`, `discarded`, `evicted`,
    /// `removed`, `holder_lost`, `replica_lost` or `lease_conflict`.
    pub kind: &'static str,
    /// Segments involved (where the replicas were placed, whose holder went away).
    pub segments: Vec<String>,
    /// A sentence for people.
    pub detail: String,
}

/// The master's explanation of a key: its state now and its remembered events, oldest
/// first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyExplanation {
    /// The key.
    pub key: String,
    /// Its state now.
    pub now: KeyState,
    /// What happened to it, oldest first (bounded: see [`HISTORY_EVENTS`]).
    pub events: Vec<KeyEvent>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl MasterCore {
    /// Lookup hits and misses by cause so far.
    pub fn lookup_stats(&self) -> LookupStats {
        self.history.stats
    }

    /// Counts a lookup of `key` that found it readable.
    pub(super) fn lookup_hit(&mut self, op: LookupOp) {
        self.history.hit(op);
    }

    /// Counts a lookup of `key` that missed and returns why.
    pub(super) fn lookup_miss(&mut self, op: LookupOp, key: &str) -> MissCause {
        match self.objects.get(key) {
            None => self.history.miss_absent(op, key),
            Some(o) => {
                let cause = if matches!(o.state, State::Processing { .. }) {
                    MissCause::PutInProgress
                } else {
                    MissCause::HolderLost
                };
                self.history.miss(op, cause);
                cause
            }
        }
    }

    /// Notes an instant a caller passed (the core's notion of the present).
    pub(super) fn saw(&mut self, now: Instant) {
        self.history.latest = Some(now);
    }

    /// Records an event of `key` at `at` (or the latest known instant).
    pub(super) fn record(&mut self, key: &str, at: Option<Instant>, event: Event) {
        let Some(at) = at.or(self.history.latest) else {
            return;
        };
        if self.history.latest.is_none_or(|l| l < at) {
            self.history.latest = Some(at);
        }
        let cause = match &event {
            Event::Revoked | Event::Discarded => Some(MissCause::PutAbandoned),
            Event::Evicted { .. } => Some(MissCause::Evicted),
            Event::Removed { .. } => Some(MissCause::Removed),
            Event::HolderLost { last: true, .. } => Some(MissCause::HolderLost),
            _ => None,
        };
        if let Event::LeaseConflict { .. } = event {
            self.history.stats.lease_conflicts += 1;
        }
        let hash = key_hash(key);
        if let Some(cause) = cause {
            self.history.gone(hash, cause, at);
        }
        self.history.push(at, hash, event);
    }

    /// Remembers a mounted segment's name for the events that name it later.
    pub(super) fn name_segment(&mut self, id: SegmentId, name: &str) {
        self.history.name_segment(id, name);
    }

    /// What the master knows of `key` at `now`: its state and its remembered events.
    /// Grants no lease and counts no lookup.
    pub fn explain(&self, key: &str, now: Instant) -> KeyExplanation {
        let ago = |t: Instant| ms(now.saturating_duration_since(t));
        let state = match self.objects.get(key) {
            Some(o) => {
                let replicas: Vec<String> = o
                    .slots
                    .iter()
                    .filter_map(|s| self.segments.get(&s.segment))
                    .filter(|m| m.detached_until.is_none())
                    .map(|m| m.segment.name.clone())
                    .collect();
                match o.state {
                    State::Processing { .. } => KeyState::Unreadable {
                        cause: MissCause::PutInProgress,
                        size: o.size,
                    },
                    State::Complete if replicas.is_empty() => KeyState::Unreadable {
                        cause: MissCause::HolderLost,
                        size: o.size,
                    },
                    State::Complete => KeyState::Readable {
                        size: o.size,
                        replicas,
                        reads: o.reads,
                        last_read_ago_ms: o.last_read.map(ago),
                        lease_left_ms: ms(o.lease_until.saturating_duration_since(now)),
                        pin: match o.pin {
                            mooncake_store::Pin::None => "none",
                            mooncake_store::Pin::Soft => "soft",
                            mooncake_store::Pin::Hard => "hard",
                        },
                    },
                }
            }
            None => match self.history.gone_of(key_hash(key)) {
                Some((cause, at, misses)) => KeyState::Missing {
                    cause,
                    since_ms: Some(ago(at)),
                    misses,
                },
                None => KeyState::Missing {
                    cause: MissCause::NeverWritten,
                    since_ms: None,
                    misses: 0,
                },
            },
        };
        let hash = key_hash(key);
        let events = self
            .history
            .events
            .iter()
            .filter(|(_, k, _)| *k == hash)
            .map(|(at, _, e)| self.describe_event(ago(*at), e))
            .collect();
        KeyExplanation {
            key: key.to_owned(),
            now: state,
            events,
        }
    }

    fn describe_event(&self, ago_ms: u64, e: &Event) -> KeyEvent {
        let h = &self.history;
        let (kind, segments, detail) = match e {
            Event::Placed {
                size,
                segments,
                upsert,
            } => {
                let names: Vec<String> = segments
                    .named()
                    .iter()
                    .map(|s| h.segment_name(*s))
                    .collect();
                let more = match segments.len.saturating_sub(NAMED_REPLICAS) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                let detail = format!(
                    "{} of {size} bytes started, replicas on {}{more}",
                    if *upsert { "upsert" } else { "put" },
                    names.join(", ")
                );
                let kind = if *upsert { "upsert_placed" } else { "placed" };
                (kind, names, detail)
            }
            Event::Committed => ("committed", vec![], "put ended: readable".to_owned()),
            Event::Revoked => (
                "revoked",
                vec![],
                "put revoked by its writer (a replica write failed)".to_owned(),
            ),
            Event::Discarded => (
                "discarded",
                vec![],
                "unfinished put discarded after the discard timeout".to_owned(),
            ),
            Event::Evicted { reads } => (
                "evicted",
                vec![],
                format!("evicted under memory pressure after {reads} reads"),
            ),
            Event::Removed { how, reads } => (
                "removed",
                vec![],
                format!("removed by {how} after {reads} reads"),
            ),
            Event::HolderLost { segment, last } => {
                let name = h.segment_name(*segment);
                let detail = if *last {
                    format!("its last replica's segment {name} was unmounted or its holder expired")
                } else {
                    format!("lost its replica on segment {name} (unmounted or holder expired)")
                };
                let kind = if *last { "holder_lost" } else { "replica_lost" };
                (kind, vec![name], detail)
            }
            Event::LeaseConflict { how, left } => (
                "lease_conflict",
                vec![],
                format!(
                    "{how} refused: a reader holds a lease for {} ms more",
                    ms(*left)
                ),
            ),
        };
        KeyEvent {
            ago_ms,
            kind,
            segments,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use mooncake_store::{ClientId, ReplicateConfig, Segment};

    use super::*;
    use crate::MasterConfig;

    #[test]
    fn key_hashes_differ_for_near_keys() {
        let mut keys: Vec<String> = (0..10_000).map(|i| format!("model/layer/{i:08}")).collect();
        keys.extend(
            ["", "a", "a\0", "\0a", "ab", "ba", "abcdefgh", "abcdefgh\0"].map(String::from),
        );
        let hashes: HashSet<u64> = keys.iter().map(|k| key_hash(k)).collect();
        assert_eq!(hashes.len(), keys.len());
    }

    #[test]
    fn a_placement_on_more_segments_than_named_says_how_many_more() {
        let mut c = MasterCore::new(MasterConfig::default(), 1);
        let t = Instant::now();
        let segs = (1..=3u128)
            .map(|i| Segment {
                id: SegmentId(i),
                name: format!("h:{i}"),
                base: 1 << 32,
                size: 1 << 20,
                te_endpoint: format!("h:{i}"),
                protocol: "tcp".into(),
                host_id: format!("h{i}"),
                durable: false,
            })
            .collect();
        c.remount_segments(ClientId(9), segs, t).unwrap();
        let three = ReplicateConfig {
            replica_num: 3,
            ..ReplicateConfig::default()
        };
        c.put_start(ClientId(9), "k", 100, &three, t).unwrap();
        let e = c.explain("k", t);
        assert_eq!(e.events[0].segments.len(), NAMED_REPLICAS);
        assert!(
            e.events[0].detail.ends_with(" and 1 more"),
            "{}",
            e.events[0].detail
        );
        assert_eq!(
            e.now,
            KeyState::Unreadable {
                cause: MissCause::PutInProgress,
                size: 100
            }
        );
    }
}
