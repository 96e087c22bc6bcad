//! Reserved slots: one-call puts, refusals, expiry, unmount and the journal.

use std::time::{Duration, Instant};

use mooncake_store::{ClientId, ErrorCode, ReplicateConfig, Segment, SegmentId};

use super::journal::Change;
use super::MasterCore;
use crate::MasterConfig;

const MIB: u64 = 1 << 20;
const W: ClientId = ClientId(1);
const OWNER: ClientId = ClientId(7);

fn core() -> (MasterCore, Instant) {
    let config = MasterConfig {
        client_ttl: Duration::from_secs(3600),
        ..MasterConfig::default()
    };
    let mut c = MasterCore::new(config, 1);
    let t = Instant::now();
    let seg = Segment {
        id: SegmentId(1),
        name: "a:1".into(),
        base: 0x1000_0000,
        size: 64 * MIB,
        te_endpoint: "a:1".into(),
        protocol: "tcp".into(),
        host_id: "a".into(),
        durable: false,
    };
    c.remount_segments(OWNER, vec![seg], t).unwrap();
    (c, t)
}

#[test]
fn a_put_into_a_reserved_slot_is_one_call_and_refills_the_slot() {
    let (mut c, t) = core();
    let cfg = ReplicateConfig::default();
    let slots = c.reserve_slots(W, 4096, 2, t).unwrap();
    assert_eq!(slots.len(), 2);
    assert_eq!(c.allocated(), 2 * 4096, "reserved ranges are allocated");
    let next = c
        .put_reserved(W, "k", slots[0].id, 4096, &cfg, t)
        .unwrap()
        .expect("a fresh slot of the same size");
    assert_eq!(next.replica.size, 4096);
    let list = c.get_replica_list("k", t).unwrap();
    assert_eq!(
        list.replicas,
        vec![slots[0].replica.clone()],
        "served from the slot"
    );
    // The key exists: refused, and the second slot is still the writer's.
    assert_eq!(
        c.put_reserved(W, "k", slots[1].id, 4096, &cfg, t),
        Err(ErrorCode::ObjectAlreadyExists)
    );
    assert!(c.put_reserved(W, "k2", slots[1].id, 4096, &cfg, t).is_ok());
    // A used slot is gone.
    assert_eq!(
        c.put_reserved(W, "k3", slots[0].id, 4096, &cfg, t),
        Err(ErrorCode::UnavailableInCurrentStatus)
    );
    // Versions are never reissued: each slot's object is its own incarnation.
    let v2 = c.get_replica_list("k2", t).unwrap().replicas[0].version;
    assert_ne!(v2, slots[0].replica.version);
}

#[test]
fn slots_of_others_of_another_size_or_unknown_are_refused() {
    let (mut c, t) = core();
    let cfg = ReplicateConfig::default();
    let slot = c.reserve_slots(W, 4096, 1, t).unwrap().remove(0);
    let unavailable = Err(ErrorCode::UnavailableInCurrentStatus);
    assert_eq!(
        c.put_reserved(ClientId(2), "k", slot.id, 4096, &cfg, t),
        unavailable
    );
    assert_eq!(c.put_reserved(W, "k", slot.id, 4095, &cfg, t), unavailable);
    assert_eq!(c.put_reserved(W, "k", 999, 4096, &cfg, t), unavailable);
    let two = ReplicateConfig {
        replica_num: 2,
        ..ReplicateConfig::default()
    };
    assert_eq!(
        c.put_reserved(W, "k", slot.id, 4096, &two, t),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(c.reserve_slots(W, 0, 1, t), Err(ErrorCode::InvalidParams));
    assert_eq!(c.reserve_slots(W, 1, 0, t), Err(ErrorCode::InvalidParams));
    assert!(!c.contains("k"), "nothing was created");
    // Only small values get slots.
    assert_eq!(c.reserve_slots(W, MIB, 1, t), Err(ErrorCode::InvalidParams));
}

#[test]
fn a_full_store_evicts_for_slots_as_for_puts() {
    let (mut c, t) = core();
    c.put_start(W, "big", 63 * MIB, &ReplicateConfig::default(), t)
        .unwrap();
    c.put_end(W, "big", t).unwrap();
    let later = t + Duration::from_secs(10);
    assert_eq!(c.reserve_slots(W, 64 << 10, 32, later).unwrap().len(), 32);
    assert!(!c.contains("big"), "evicted to make room");
}

#[test]
fn unused_slots_are_taken_back_and_their_space_reused_after_any_write_could_land() {
    let (mut c, t) = core();
    let slot = c.reserve_slots(W, 64 << 10, 1, t).unwrap().remove(0);
    c.tick(t + Duration::from_secs(4));
    assert_eq!(c.reserved_slots(), 1);
    c.tick(t + Duration::from_secs(5));
    assert_eq!(c.reserved_slots(), 0);
    assert_eq!(
        c.allocated(),
        64 << 10,
        "a write started into it may still land: space held"
    );
    c.tick(t + Duration::from_secs(65));
    assert_eq!(c.allocated(), 0);
    let cfg = ReplicateConfig::default();
    assert_eq!(
        c.put_reserved(W, "k", slot.id, 64 << 10, &cfg, t + Duration::from_secs(66)),
        Err(ErrorCode::UnavailableInCurrentStatus)
    );
}

#[test]
fn released_slots_are_freed_at_once_and_only_their_owners_can_release_them() {
    let (mut c, t) = core();
    let slots = c.reserve_slots(W, 4096, 3, t).unwrap();
    let ids: Vec<u64> = slots.iter().map(|s| s.id).collect();
    assert_eq!(c.release_slots(ClientId(2), &ids), 0, "not its slots");
    assert_eq!(c.release_slots(W, &[ids[0], ids[1], 12345]), 2);
    assert_eq!(c.reserved_slots(), 1);
    assert_eq!(c.allocated(), 4096);
    assert!(c
        .put_reserved(W, "k", ids[2], 4096, &ReplicateConfig::default(), t)
        .is_ok());
}

#[test]
fn unmounting_forgets_the_segments_slots() {
    let (mut c, t) = core();
    let slot = c.reserve_slots(W, 4096, 1, t).unwrap().remove(0);
    c.unmount_segment(OWNER, SegmentId(1)).unwrap();
    assert_eq!(c.reserved_slots(), 0);
    let cfg = ReplicateConfig::default();
    assert_eq!(
        c.put_reserved(W, "k", slot.id, 4096, &cfg, t),
        Err(ErrorCode::UnavailableInCurrentStatus)
    );
}

#[test]
fn a_put_into_a_slot_is_journaled_as_a_complete_object_and_the_slot_is_not() {
    let (mut c, t) = core();
    c.enable_journal();
    let _ = c.take_journal();
    let slot = c.reserve_slots(W, 4096, 1, t).unwrap().remove(0);
    assert!(c.take_journal().is_empty(), "slots are not journaled");
    c.put_reserved(W, "k", slot.id, 4096, &ReplicateConfig::default(), t)
        .unwrap();
    let changes = c.take_journal();
    let object = changes.iter().find_map(|ch| match ch {
        Change::Object(o) if o.key == "k" => Some(o),
        _ => None,
    });
    let o = object.expect("the object is journaled");
    assert_eq!(
        o.replicas[0].offset,
        slot.replica.buffer_address - 0x1000_0000
    );
    assert_eq!(o.version, slot.replica.version);
}
