//! The object model shared by the master, its clients and the wire.

use std::fmt;

/// Largest key accepted, in bytes (the master refuses longer keys with `InvalidParams`).
pub const MAX_KEY_LEN: usize = 4096;

/// Most items in one batch call (keys of `batch_put_start`, `batch_get_replica_list`, …,
/// and of `batch_replica_clear`): the master runs a batch under one lock, so a larger one
/// would stall every other client; it is refused whole with `InvalidParams`. The client
/// splits larger batches itself.
pub const MAX_BATCH_SIZE: usize = 1 << 16;

/// An object key: non-empty UTF-8, at most [`MAX_KEY_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates a key.
    pub fn new(key: impl Into<String>) -> Result<Self, crate::ErrorCode> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(crate::ErrorCode::InvalidParams);
        }
        Ok(Self(key))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's identity (Mooncake uses a UUID: a pair of u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientId(pub u128);

/// A mounted segment's identity (a UUID in Mooncake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u128);

/// A memory segment a client contributes: `[base, base+size)` of its registered memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Identity, stable across remounts.
    pub id: SegmentId,
    /// The owner's name (`ip:port`); replicas of one object never share a name.
    pub name: String,
    /// Start address in the owner process.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// The owner's transfer-engine segment name.
    pub te_endpoint: String,
    /// Transport, e.g. `tcp`.
    pub protocol: String,
    /// Host without port (placement's notion of "local").
    pub host_id: String,
    /// Backed by a named shared-memory file that outlives its owner: when the owner goes
    /// silent the master keeps the segment's objects (unreadable) for a grace period, and
    /// a restarted owner that re-attached the file remounts the same id and serves them
    /// again. Objects are kept as segment-relative offsets, so a new mapping address is fine.
    pub durable: bool,
}

/// Pinning of an object against eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pin {
    /// Evictable.
    #[default]
    None,
    /// Evicted only after every unpinned object, and only if the master allows it.
    Soft,
    /// Never evicted; only `remove` deletes it.
    Hard,
}

/// How a put places its replicas (Mooncake's `ReplicateConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateConfig {
    /// Number of replicas, each on a distinct segment name. Default 1.
    pub replica_num: usize,
    /// Eviction pinning.
    pub pin: Pin,
    /// Segment names to try first, in order.
    pub preferred_segments: Vec<String>,
    /// Mooncake's `prefer_alloc_in_same_node` (refused with `InvalidParams`, as the C++ does).
    pub prefer_alloc_in_same_node: bool,
    /// Segment names never to place a replica on (set by a client that retries a put
    /// whose holder was unreachable).
    pub excluded_segments: Vec<String>,
    /// With [`Pin::Soft`]: the pin's lifetime in ms from commit (`None` = the master's
    /// `default_kv_soft_pin_ttl`, `Some(0)` = no pin; above `max_kv_soft_pin_ttl` the put
    /// is refused with `InvalidParams`).
    pub soft_pin_ttl_ms: Option<u64>,
    /// CRC-32C of the value, set by a writer with checksums on
    /// ([`ClientConfig::verify_checksums`](crate::ClientConfig)); the master stores it with
    /// the object and returns it in [`ReplicaList::checksum`].
    pub checksum: Option<u32>,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        Self {
            replica_num: 1,
            pin: Pin::None,
            preferred_segments: Vec::new(),
            prefer_alloc_in_same_node: false,
            excluded_segments: Vec::new(),
            soft_pin_ttl_ms: None,
            checksum: None,
        }
    }
}

/// Where one replica lives; what a reader needs to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDescriptor {
    /// Absolute address in the owner process.
    pub buffer_address: u64,
    /// Bytes.
    pub size: u64,
    /// The object's version: unique to one put (or upsert) of the key, never reissued by
    /// a restarted master; 0 when unknown. Equal descriptors with equal versions name the
    /// same bytes, which lets a client validate a read it started from a cached location.
    pub version: u64,
    /// Transfer-engine segment name of the owner.
    pub transport_endpoint: String,
    /// Transport.
    pub protocol: String,
    /// The segment's name.
    pub segment_name: String,
}

/// A range the master reserved for one of a client's next puts of exactly `replica.size`
/// bytes (`MasterApi::reserve_slots`): the client writes the value there first, then one
/// `MasterApi::put_reserved` makes it the complete object, one master round trip in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedSlot {
    /// The slot's number, unique for this master incarnation.
    pub id: u64,
    /// Where the value goes, with the version the object will have.
    pub replica: ReplicaDescriptor,
}

impl ReplicateConfig {
    /// Whether a put with this config may use a reserved slot: one replica placed by the
    /// master as it likes (no preferred, excluded or same-node segments).
    pub fn fits_reserved_slot(&self) -> bool {
        self.replica_num == 1
            && self.preferred_segments.is_empty()
            && self.excluded_segments.is_empty()
            && !self.prefer_alloc_in_same_node
    }
}

/// One object on a draining segment: to copy from `source` (on the draining segment) to
/// `target` (a new range elsewhere), then commit with `drain_segment_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainMove {
    /// The object.
    pub key: String,
    /// Its replica on the draining segment.
    pub source: ReplicaDescriptor,
    /// The range to copy it to (same size and version); `None` when no other segment had
    /// room (the object is lost when the segment goes).
    pub target: Option<ReplicaDescriptor>,
}

/// The answer of `get_replica_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaList {
    /// Readable replicas.
    pub replicas: Vec<ReplicaDescriptor>,
    /// The read lease granted, in milliseconds.
    pub lease_ttl_ms: u64,
    /// The writer's CRC-32C of the value, when it computed one: a reader with checksums
    /// on verifies what it read and tries the next replica on a mismatch.
    pub checksum: Option<u32>,
    /// Segment names of the holders that also keep the object on their disk tier
    /// (Mooncake's `LOCAL_DISK` replicas: not read directly; a read of an object held only
    /// there is served from memory its holder loads it into).
    pub disk_segments: Vec<String>,
}

impl ReplicaList {
    /// The object size (every replica has it).
    pub fn size(&self) -> u64 {
        self.replicas.first().map(|r| r.size).unwrap_or(0)
    }
}

/// Liveness state of a client, as `ping` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStatus {
    /// Known and alive.
    Ok,
    /// Unknown to the master (first contact, expiry, master restart): remount your segments.
    NeedRemount,
}

/// The answer of `ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingReply {
    /// Bumped whenever the master (re)starts.
    pub view_version: i64,
    /// The client's status.
    pub status: ClientStatus,
}

/// The master protocol version a client speaks (`major.minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
}

impl ProtocolVersion {
    /// The version this build speaks.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

    /// Whether a master at `self` serves a client at `client`: same major, and the client's
    /// minor equal or one older (rolling upgrades update masters first).
    pub fn accepts(self, client: ProtocolVersion) -> bool {
        client.major == self.major
            && client.minor <= self.minor
            && client.minor.saturating_add(1) >= self.minor
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert_eq!(ObjectKey::new(""), Err(crate::ErrorCode::InvalidParams));
        assert_eq!(
            ObjectKey::new("x".repeat(MAX_KEY_LEN + 1)),
            Err(crate::ErrorCode::InvalidParams)
        );
        assert_eq!(ObjectKey::new("k").unwrap().as_str(), "k");
    }

    #[test]
    fn versions_accept_one_minor_older() {
        let m = ProtocolVersion { major: 1, minor: 3 };
        assert!(m.accepts(ProtocolVersion { major: 1, minor: 3 }));
        assert!(m.accepts(ProtocolVersion { major: 1, minor: 2 }));
        assert!(!m.accepts(ProtocolVersion { major: 1, minor: 1 }));
        assert!(!m.accepts(ProtocolVersion { major: 1, minor: 4 }));
        assert!(!m.accepts(ProtocolVersion { major: 2, minor: 3 }));
        // Found by the `store_pb` fuzz target: no overflow at the top of the range.
        let top = ProtocolVersion {
            major: 1,
            minor: u32::MAX,
        };
        assert!(top.accepts(top));
        assert!(!m.accepts(top));
    }
}
