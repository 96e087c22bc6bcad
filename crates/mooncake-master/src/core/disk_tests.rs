//! Scenarios of the disk tier in the core: demotion instead of eviction, loads on read,
//! failures, holder evictions and remounts.

use std::time::{Duration, Instant};

use mooncake_store::{
    ClientId, DiskOutcome, DiskRecord, DiskTask, DiskTaskKind, DiskTaskResult, ErrorCode,
    ReplicateConfig, Segment, SegmentId,
};

use super::{LoadState, MasterCore};
use crate::MasterConfig;

const MIB: u64 = 1 << 20;
const HOLDER: ClientId = ClientId(7);
const SEG: SegmentId = SegmentId(1);
const W: ClientId = ClientId(1);

fn holder_with_tier(mem: u64) -> (MasterCore, Instant) {
    let mut c = MasterCore::new(MasterConfig::default(), 1);
    let t = Instant::now();
    let seg = Segment {
        id: SEG,
        name: "h:1".into(),
        base: 0x1000_0000,
        size: mem,
        te_endpoint: "h:1".into(),
        protocol: "tcp".into(),
        host_id: "h".into(),
        durable: false,
    };
    c.remount_segments(HOLDER, vec![seg], t).unwrap();
    assert_eq!(
        c.mount_disk_tier(HOLDER, SEG, 1 << 30, vec![], t),
        Ok(vec![])
    );
    (c, t)
}

fn put(c: &mut MasterCore, key: &str, size: u64, now: Instant) -> Result<(), ErrorCode> {
    c.put_start(W, key, size, &ReplicateConfig::default(), now)?;
    c.put_end(W, key, now)
}

fn answer(c: &mut MasterCore, tasks: &[DiskTask], outcome: DiskOutcome, now: Instant) {
    let results: Vec<DiskTaskResult> = tasks
        .iter()
        .map(|t| DiskTaskResult { id: t.id, outcome })
        .collect();
    c.finish_disk_tasks(HOLDER, SEG, &results, &[], now)
        .unwrap();
}

#[test]
fn eviction_demotes_and_a_read_loads_the_object_back() {
    let (mut c, t) = holder_with_tier(4 * MIB);
    for k in ["a", "b", "c", "d"] {
        put(&mut c, k, MIB, t).unwrap();
    }
    // Memory full: the put cannot be placed until a demotion completes.
    assert_eq!(put(&mut c, "e", MIB, t), Err(ErrorCode::NoAvailableHandle));
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, DiskTaskKind::Demote);
    assert_eq!((tasks[0].size, tasks[0].address % MIB), (MIB, 0));
    assert!(c.contains(&tasks[0].key), "kept while it is copied");
    let demoted = tasks[0].key.clone();
    answer(&mut c, &tasks, DiskOutcome::Done, t);
    put(&mut c, "e", MIB, t).unwrap();
    assert_eq!(c.disk_stats().demotions, 1);
    assert_eq!(c.disk_stats().disk_only_objects, 1);
    assert_eq!(c.disk_holder(&demoted).as_deref(), Some("h:1"));
    // Reading it: not in memory, so a load is queued (evicting to make room).
    let t2 = t + Duration::from_secs(11);
    assert_eq!(
        c.get_replica_list(&demoted, t2),
        Err(ErrorCode::ReplicaIsNotReady)
    );
    // Memory is full: making room demotes another object first.
    assert_eq!(c.request_load(&demoted, t2), LoadState::NoRoom);
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(tasks[0].kind, DiskTaskKind::Demote);
    answer(&mut c, &tasks, DiskOutcome::Done, t2);
    assert_eq!(c.request_load(&demoted, t2), LoadState::Loading);
    assert_eq!(
        c.request_load(&demoted, t2),
        LoadState::Loading,
        "one load at a time"
    );
    let load = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(load.len(), 1);
    assert_eq!(load[0].kind, DiskTaskKind::Load);
    answer(&mut c, &load, DiskOutcome::Done, t2);
    let list = c.get_replica_list(&demoted, t2).unwrap();
    assert_eq!(list.replicas[0].buffer_address, load[0].address);
    assert_eq!(
        list.lease_ttl_ms, 110,
        "objects with a disk copy get the short lease"
    );
    assert_eq!(
        list.replicas[0].version, 0,
        "a loaded copy is never a cached location"
    );
    assert_eq!(list.disk_segments, vec!["h:1".to_string()]);
    assert_eq!(c.disk_stats().disk_hits, 1);
    c.check_invariants().unwrap();
}

#[test]
fn a_failed_demotion_evicts_and_a_corrupt_record_is_dropped() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    put(&mut c, "a", MIB, t).unwrap();
    put(&mut c, "b", MIB, t).unwrap();
    assert_eq!(put(&mut c, "c", MIB, t), Err(ErrorCode::NoAvailableHandle));
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    let victim = tasks[0].key.clone();
    answer(&mut c, &tasks, DiskOutcome::Full, t);
    assert!(!c.exist_key(&victim, t), "evicted cleanly");
    assert_eq!(c.disk_stats().disk_full, 1);
    // While the tier is full, eviction drops instead of demoting.
    put(&mut c, "c", MIB, t).unwrap();
    assert_eq!(put(&mut c, "d", MIB, t), Ok(()));
    assert!(c.take_disk_tasks(HOLDER, SEG).unwrap().is_empty());
    // After the back-off, demotion resumes; a record failing its checksum on load is
    // dropped with the object (its only copy).
    let t2 = t + Duration::from_secs(20);
    assert_eq!(put(&mut c, "e", MIB, t2), Err(ErrorCode::NoAvailableHandle));
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    let k = tasks[0].key.clone();
    answer(&mut c, &tasks, DiskOutcome::Done, t2);
    put(&mut c, "e", MIB, t2).unwrap();
    assert_eq!(c.request_load(&k, t2), LoadState::NoRoom);
    let demote = c.take_disk_tasks(HOLDER, SEG).unwrap();
    answer(&mut c, &demote, DiskOutcome::Done, t2);
    assert_eq!(c.request_load(&k, t2), LoadState::Loading);
    let load = c.take_disk_tasks(HOLDER, SEG).unwrap();
    answer(&mut c, &load, DiskOutcome::Corrupt, t2);
    assert!(!c.exist_key(&k, t2));
    assert_eq!(c.disk_stats().corrupt_records, 1);
    c.check_invariants().unwrap();
}

#[test]
fn holder_evictions_removals_and_a_restarted_holder() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    put(&mut c, "a", MIB, t).unwrap();
    put(&mut c, "b", MIB, t).unwrap();
    let _ = put(&mut c, "c", MIB, t);
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    let k = tasks[0].key.clone();
    let v = tasks[0].version;
    answer(&mut c, &tasks, DiskOutcome::Done, t);
    // Removing a disk-only object queues the deletion of its record.
    c.remove(&k, false, t).unwrap();
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(
        (tasks[0].kind, tasks[0].key.as_str(), tasks[0].version),
        (DiskTaskKind::Delete, k.as_str(), v)
    );
    // A holder's LRU eviction drops the disk copy (and a disk-only object with it).
    let rec = |key: &str, version| DiskRecord {
        key: key.into(),
        version,
        size: MIB,
        checksum: 9,
    };
    let _ = c
        .mount_disk_tier(HOLDER, SEG, 1 << 30, vec![rec("x", 5)], t)
        .unwrap();
    assert!(
        c.exist_key("x", t),
        "a record of an unknown key is served again"
    );
    c.finish_disk_tasks(HOLDER, SEG, &[], &[rec("x", 5)], t)
        .unwrap();
    assert!(!c.exist_key("x", t));
    assert_eq!(c.disk_stats().disk_evictions, 1);
    // A restarted holder (new client, new segment) remounts its tier: known versions are
    // attached, other versions of existing keys are refused (the holder deletes them).
    let seg2 = Segment {
        id: SegmentId(2),
        name: "h:2".into(),
        base: 0x2000_0000,
        size: 2 * MIB,
        te_endpoint: "h:2".into(),
        protocol: "tcp".into(),
        host_id: "h".into(),
        durable: false,
    };
    let h2 = ClientId(8);
    c.remount_segments(h2, vec![seg2], t).unwrap();
    let existing: Vec<String> = ["a", "b", "c"]
        .into_iter()
        .filter(|k| c.exist_key(k, t))
        .map(String::from)
        .collect();
    let stale = c
        .mount_disk_tier(
            h2,
            SegmentId(2),
            1 << 30,
            vec![rec(&existing[0], 1), rec("y", 3)],
            t,
        )
        .unwrap();
    assert_eq!(stale, vec![rec(&existing[0], 1)]);
    assert!(c.exist_key("y", t));
    assert_eq!(c.request_load("y", t), LoadState::Loading);
    // The holder's segment goes: its disk copies go with it.
    c.unmount_segment(h2, SegmentId(2)).unwrap();
    assert!(!c.exist_key("y", t));
    assert_eq!(c.request_load("y", t), LoadState::Unavailable);
    assert_eq!(
        c.take_disk_tasks(h2, SegmentId(2)),
        Err(ErrorCode::SegmentNotFound)
    );
    c.check_invariants().unwrap();
}

#[test]
fn an_object_removed_during_its_demotion_keeps_its_memory_until_the_task_times_out() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    put(&mut c, "a", MIB, t).unwrap();
    put(&mut c, "b", MIB, t).unwrap();
    let _ = put(&mut c, "c", MIB, t);
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    let k = tasks[0].key.clone();
    c.remove(&k, false, t).unwrap();
    assert_eq!(c.allocated(), 2 * MIB, "the holder may still be copying it");
    answer(&mut c, &tasks, DiskOutcome::Done, t);
    let deletes = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert!(deletes
        .iter()
        .any(|d| d.kind == DiskTaskKind::Delete && d.key == k));
    c.tick(t + Duration::from_secs(61));
    assert!(c.allocated() <= MIB);
    c.check_invariants().unwrap();
}

#[test]
fn clearing_the_memory_replica_keeps_the_disk_copy() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    put(&mut c, "a", MIB, t).unwrap();
    put(&mut c, "b", MIB, t).unwrap();
    let _ = put(&mut c, "c", MIB, t);
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    let k = tasks[0].key.clone();
    let k = k.as_str();
    // While its demotion runs, clearing skips the object.
    assert!(c
        .batch_replica_clear(W, &[k.to_string()], "h:1", t)
        .is_empty());
    answer(&mut c, &tasks, DiskOutcome::Done, t);
    // A memory-and-disk object cleared on its memory segment lives on, from disk.
    assert_eq!(c.request_load(k, t), LoadState::Loading);
    let load = c.take_disk_tasks(HOLDER, SEG).unwrap();
    answer(&mut c, &load, DiskOutcome::Done, t);
    // Once the load's short lease is over.
    let later = t + Duration::from_secs(1);
    assert_eq!(
        c.batch_replica_clear(W, &[k.to_string()], "h:1", later),
        vec![k.to_string()]
    );
    assert!(c.contains(k));
    assert_eq!(c.disk_holder(k).as_deref(), Some("h:1"));
    c.check_invariants().unwrap();
}

#[test]
fn copy_and_move_tasks_wait_for_a_demotion() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    put(&mut c, "a", MIB, t).unwrap();
    put(&mut c, "b", MIB, t).unwrap();
    let _ = put(&mut c, "c", MIB, t);
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    let k = tasks[0].key.clone();
    assert_eq!(
        c.create_copy_task(&k, &["h:2".to_string()], t, 0),
        Err(ErrorCode::ObjectReplicaBusy)
    );
    assert_eq!(
        c.create_move_task(&k, "h:1", "h:2", t, 0),
        Err(ErrorCode::ObjectReplicaBusy)
    );
    answer(&mut c, &tasks, DiskOutcome::Done, t);
    assert_ne!(
        c.create_copy_task(&k, &["h:2".to_string()], t, 0),
        Err(ErrorCode::ObjectReplicaBusy)
    );
}

#[test]
fn write_through_copies_every_put_and_keeps_memory_so_eviction_needs_no_demotion() {
    let config = MasterConfig {
        disk_write_through: true,
        ..MasterConfig::default()
    };
    let mut c = MasterCore::new(config, 1);
    let t = Instant::now();
    let seg = Segment {
        id: SEG,
        name: "h:1".into(),
        base: 0x1000_0000,
        size: 4 * MIB,
        te_endpoint: "h:1".into(),
        protocol: "tcp".into(),
        host_id: "h".into(),
        durable: false,
    };
    c.remount_segments(HOLDER, vec![seg], t).unwrap();
    c.mount_disk_tier(HOLDER, SEG, 1 << 30, vec![], t).unwrap();
    for k in ["a", "b", "c", "d"] {
        put(&mut c, k, MIB, t).unwrap();
    }
    // Every completed put is copied to disk at once, its memory copy kept.
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(tasks.len(), 4);
    assert!(tasks.iter().all(|t| t.kind == DiskTaskKind::Demote));
    // Memory is full and the copies are in flight: a put has to wait for them.
    assert_eq!(put(&mut c, "e", MIB, t), Err(ErrorCode::NoAvailableHandle));
    assert!(c.demotions_in_flight());
    answer(&mut c, &tasks, DiskOutcome::Done, t);
    assert!(!c.demotions_in_flight());
    let s = c.disk_stats();
    assert_eq!((s.write_throughs, s.demotions, s.disk_objects), (4, 0, 4));
    assert_eq!(s.disk_only_objects, 0, "memory copies stay");
    // Room is made by dropping a memory copy that is already on disk: no demotion.
    let t2 = t + Duration::from_secs(11);
    put(&mut c, "e", MIB, t2).unwrap();
    let s = c.disk_stats();
    assert_eq!((s.demotions, s.disk_only_objects), (0, 1));
    // "e" is copied too; a failed copy keeps the object, in memory only.
    let more = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].key, "e");
    answer(&mut c, &more, DiskOutcome::Failed, t2);
    assert!(c.contains("e"), "a failed write-through evicts nothing");
    assert_eq!(c.disk_stats().write_throughs, 4);
    assert!(c.disk_holder("e").is_none());
}

fn record(key: &str, version: u64) -> DiskRecord {
    DiskRecord {
        key: key.into(),
        version,
        size: MIB,
        checksum: 9,
    }
}

/// A holder restarted as a new client with a new segment, mounting its tier with `records`;
/// returns the records the master refused.
fn restarted_holder(
    c: &mut MasterCore,
    id: u128,
    records: Vec<DiskRecord>,
    t: Instant,
) -> Vec<DiskRecord> {
    let seg = Segment {
        id: SegmentId(id),
        name: format!("h:{id}"),
        base: 0x1000_0000 * id as u64,
        size: 2 * MIB,
        te_endpoint: format!("h:{id}"),
        protocol: "tcp".into(),
        host_id: "h".into(),
        durable: false,
    };
    let client = ClientId(100 + id);
    c.remount_segments(client, vec![seg], t).unwrap();
    c.mount_disk_tier(client, SegmentId(id), 1 << 30, records, t)
        .unwrap()
}

#[test]
fn keys_removed_while_their_holder_was_away_do_not_come_back_with_it() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    let on_disk = vec![record("x", 5), record("y", 6), record("z", 7)];
    c.mount_disk_tier(HOLDER, SEG, 1 << 30, on_disk.clone(), t)
        .unwrap();
    assert!(c.exist_key("x", t) && c.exist_key("y", t) && c.exist_key("z", t));
    // The holder dies: its disk-only objects go with its segment.
    c.unmount_segment(HOLDER, SEG).unwrap();
    assert!(!c.exist_key("x", t));
    // Meanwhile the user removes two of them (the master no longer lists them).
    assert_eq!(c.remove("x", false, t), Err(ErrorCode::ObjectNotFound));
    assert_eq!(c.remove_by_regex("^z$", false, t), Ok(0));
    // The restarted holder reports all three: only the one nobody removed is served.
    let refused = restarted_holder(&mut c, 2, on_disk, t);
    assert_eq!(refused, vec![record("x", 5), record("z", 7)]);
    assert!(!c.exist_key("x", t) && c.exist_key("y", t) && !c.exist_key("z", t));
    // A second mount of the same tier (before the holder deleted them) refuses them again.
    let again = c
        .mount_disk_tier(
            ClientId(102),
            SegmentId(2),
            1 << 30,
            vec![record("x", 5)],
            t,
        )
        .unwrap();
    assert_eq!(again, vec![record("x", 5)]);
    assert!(!c.exist_key("x", t));
    c.check_invariants().unwrap();
}

#[test]
fn a_delete_lost_with_its_holder_is_not_undone_by_the_holders_restart() {
    let (mut c, t) = holder_with_tier(2 * MIB);
    c.mount_disk_tier(
        HOLDER,
        SEG,
        1 << 30,
        vec![record("x", 5), record("w", 8)],
        t,
    )
    .unwrap();
    // Removing a disk-only object queues the deletion of its record ...
    c.remove("x", false, t).unwrap();
    c.remove("w", false, t).unwrap();
    let tasks = c.take_disk_tasks(HOLDER, SEG).unwrap();
    assert_eq!(tasks.len(), 2);
    // ... the holder deletes w and reports it, then dies before deleting x.
    let w = tasks.iter().find(|t| t.key == "w").unwrap();
    answer(&mut c, std::slice::from_ref(w), DiskOutcome::Done, t);
    c.unmount_segment(HOLDER, SEG).unwrap();
    let refused = restarted_holder(&mut c, 3, vec![record("x", 5)], t);
    assert_eq!(refused, vec![record("x", 5)]);
    assert!(!c.exist_key("x", t));
    // A newer version of a removed key is served (the tombstone covers older ones only).
    let refused = c
        .mount_disk_tier(
            ClientId(103),
            SegmentId(3),
            1 << 30,
            vec![record("x", 9)],
            t,
        )
        .unwrap();
    assert!(refused.is_empty());
    assert!(c.exist_key("x", t));
    c.check_invariants().unwrap();
}
