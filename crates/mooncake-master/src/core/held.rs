//! How a [`DurableState`](super::DurableState) holds a complete object: an
//! [`ObjectRecord`] without its key (the map's) and with a single replica inline.
//!
//! A standby holds one of these per object for as long as it follows, so their size is
//! the standby's memory: with the key as a `Box<str>` a map entry is 104 bytes, against
//! 144 for a `String` and a whole [`ObjectRecord`] (whose `u128` ids also pad it to
//! 16-byte alignment), and the usual single replica needs no allocation of its own.

use mooncake_store::{ClientId, Pin, SegmentId};

use super::{ObjectRecord, ReplicaRecord};

/// A `u128` id as two words, so that it does not raise the entry's alignment to 16.
type Id = [u64; 2];

fn split(v: u128) -> Id {
    [v as u64, (v >> 64) as u64]
}

fn join(v: Id) -> u128 {
    u128::from(v[0]) | u128::from(v[1]) << 64
}

/// A complete object as a [`DurableState`](super::DurableState) holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    /// [`ObjectRecord::size`].
    pub(super) size: u64,
    /// [`ObjectRecord::version`].
    pub(super) version: u64,
    /// [`ObjectRecord::soft_pin_ttl_ms`].
    pub(super) soft_pin_ttl_ms: u64,
    owner: Id,
    /// [`ObjectRecord::checksum`].
    pub(super) checksum: Option<u32>,
    /// [`ObjectRecord::pin`].
    pub(super) pin: Pin,
    replicas: Replicas,
}

/// One replica ([`ReplicaRecord`] with its segment id as two words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Replica {
    segment: Id,
    offset: u64,
}

/// An object's replicas: nearly always one, kept inline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Replicas {
    One(Replica),
    Many(Box<[Replica]>),
}

impl From<&ReplicaRecord> for Replica {
    fn from(r: &ReplicaRecord) -> Self {
        Self {
            segment: split(r.segment.0),
            offset: r.offset,
        }
    }
}

impl From<Replica> for ReplicaRecord {
    fn from(r: Replica) -> Self {
        Self {
            segment: SegmentId(join(r.segment)),
            offset: r.offset,
        }
    }
}

impl Replicas {
    fn as_slice(&self) -> &[Replica] {
        match self {
            Self::One(r) => std::slice::from_ref(r),
            Self::Many(rs) => rs,
        }
    }
}

impl Held {
    /// `o` as held, and its key.
    pub(super) fn from_record(o: ObjectRecord) -> (Box<str>, Self) {
        let replicas = match o.replicas.as_slice() {
            [one] => Replicas::One(one.into()),
            many => Replicas::Many(many.iter().map(Replica::from).collect()),
        };
        let held = Self {
            size: o.size,
            version: o.version,
            soft_pin_ttl_ms: o.soft_pin_ttl_ms,
            owner: split(o.owner.0),
            checksum: o.checksum,
            pin: o.pin,
            replicas,
        };
        (o.key.into_boxed_str(), held)
    }

    /// The record of `key`'s object.
    pub(super) fn into_record(self, key: Box<str>) -> ObjectRecord {
        ObjectRecord {
            key: key.into_string(),
            size: self.size,
            version: self.version,
            pin: self.pin,
            soft_pin_ttl_ms: self.soft_pin_ttl_ms,
            owner: self.owner(),
            checksum: self.checksum,
            replicas: self.replicas().collect(),
        }
    }

    /// [`ObjectRecord::owner`].
    pub(super) fn owner(&self) -> ClientId {
        ClientId(join(self.owner))
    }

    /// [`ObjectRecord::replicas`], in order.
    pub(super) fn replicas(&self) -> impl ExactSizeIterator<Item = ReplicaRecord> + '_ {
        self.replicas.as_slice().iter().map(|&r| r.into())
    }

    /// Forgets the replicas on `segment`; whether any replica is left.
    pub(super) fn drop_segment(&mut self, segment: SegmentId) -> bool {
        let segment = split(segment.0);
        let rs = self.replicas.as_slice();
        if rs.iter().any(|r| r.segment == segment) {
            let left: Box<[Replica]> = rs
                .iter()
                .filter(|r| r.segment != segment)
                .copied()
                .collect();
            self.replicas = match *left {
                [one] => Replicas::One(one),
                _ => Replicas::Many(left),
            };
        }
        !self.replicas.as_slice().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(replicas: &[(u128, u64)]) -> ObjectRecord {
        ObjectRecord {
            key: "a key".into(),
            size: 4096,
            version: u64::MAX - 1,
            pin: Pin::Soft,
            soft_pin_ttl_ms: 30_000,
            owner: ClientId(u128::MAX - 7),
            checksum: Some(0xdead_beef),
            replicas: replicas
                .iter()
                .map(|&(s, offset)| ReplicaRecord {
                    segment: SegmentId(s),
                    offset,
                })
                .collect(),
        }
    }

    #[test]
    fn a_record_comes_back_as_it_went_in() {
        for replicas in [
            &[(1u128 << 100 | 5, 4096)][..],
            &[(1, 0), (u128::MAX, u64::MAX), (3 << 64, 8)][..],
        ] {
            let o = record(replicas);
            let (key, held) = Held::from_record(o.clone());
            assert_eq!(held.into_record(key), o);
        }
    }

    #[test]
    fn dropping_a_segment_keeps_the_other_replicas() {
        let (_, mut one) = Held::from_record(record(&[(7, 0)]));
        assert!(one.drop_segment(SegmentId(8)), "another segment");
        assert!(!one.drop_segment(SegmentId(7)), "its only replica");

        let (key, mut three) = Held::from_record(record(&[(1, 0), (2, 10), (3, 20)]));
        assert!(three.drop_segment(SegmentId(2)));
        assert_eq!(
            three.replicas,
            Replicas::Many(
                [(1u128, 0u64), (3, 20)]
                    .map(|(s, offset)| Replica {
                        segment: split(s),
                        offset
                    })
                    .into()
            )
        );
        assert!(three.drop_segment(SegmentId(1)));
        assert!(matches!(three.replicas, Replicas::One(_)));
        assert_eq!(
            three.clone().into_record(key).replicas,
            record(&[(3, 20)]).replicas
        );
        assert!(!three.drop_segment(SegmentId(3)));

        // A record without replicas (only a bad stream sends one) goes at any unmount.
        let (_, mut none) = Held::from_record(record(&[]));
        assert!(!none.drop_segment(SegmentId(9)));
    }

    #[test]
    fn an_entry_is_small() {
        assert_eq!(std::mem::size_of::<(Box<str>, Held)>(), 104);
    }
}
