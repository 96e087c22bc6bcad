use std::time::{Duration, Instant};

use mooncake_store::allocator::OffsetAllocator;
use mooncake_store::{ClientId, ClientStatus, ErrorCode, Pin, ReplicateConfig, Segment, SegmentId};
use proptest::prelude::*;

use super::{Change, MasterCore};
use crate::MasterConfig;

const MIB: u64 = 1 << 20;
const OWNER: ClientId = ClientId(7);
const W: ClientId = ClientId(1);
const GRACE: Duration = Duration::from_secs(60);

fn seg(id: u128, name: &str, size: u64) -> Segment {
    Segment {
        id: SegmentId(id),
        name: name.into(),
        base: 0x1000_0000 * id as u64,
        size,
        te_endpoint: name.into(),
        protocol: "tcp".into(),
        host_id: name.into(),
        durable: false,
    }
}

fn segs() -> Vec<Segment> {
    vec![seg(1, "a:1", 64 * MIB), seg(2, "b:1", 64 * MIB)]
}

fn journaled(view: i64) -> (MasterCore, Instant) {
    let mut c = MasterCore::new(MasterConfig::default(), view);
    c.enable_journal();
    let t = Instant::now();
    c.remount_segments(OWNER, segs(), t).unwrap();
    (c, t)
}

fn put_with(c: &mut MasterCore, key: &str, size: u64, cfg: &ReplicateConfig, t: Instant) {
    c.put_start(W, key, size, cfg, t).unwrap();
    c.put_end(W, key, t).unwrap();
}

/// The durable state in a canonical order (segments by id, objects by key).
fn canonical(c: &MasterCore) -> Vec<Change> {
    let mut v = c.snapshot();
    v.sort_by_key(|ch| match ch {
        Change::Mount { segment, .. } => (0, format!("{:032x}", segment.id.0)),
        Change::Object(o) => (1, o.key.clone()),
        other => (2, format!("{other:?}")),
    });
    v
}

/// Some objects of every kind: two replicas, pins, a checksum, an upsert, a removal.
fn populate(c: &mut MasterCore, t: Instant) {
    for i in 0..50 {
        let cfg = ReplicateConfig {
            replica_num: 1 + i % 2,
            pin: [Pin::None, Pin::Soft, Pin::Hard][i % 3],
            checksum: (i % 4 == 0).then_some(i as u32),
            ..ReplicateConfig::default()
        };
        put_with(c, &format!("k{i}"), 1000 + i as u64 * 4096, &cfg, t);
    }
    c.upsert_start(W, "k3", 77, &ReplicateConfig::default(), t)
        .unwrap();
    c.put_end(W, "k3", t).unwrap();
    c.remove("k4", true, t).unwrap();
    // An unfinished put is not durable.
    c.put_start(W, "unfinished", 10, &ReplicateConfig::default(), t)
        .unwrap();
}

#[test]
fn a_snapshot_restores_the_same_objects_at_the_same_offsets() {
    let (mut a, t) = journaled(5);
    populate(&mut a, t);
    let before: Vec<_> = (0..50).map(|i| a.peek_replicas(&format!("k{i}"))).collect();

    let mut b = MasterCore::new(MasterConfig::default(), 1);
    let later = t + Duration::from_secs(1);
    let report = b.restore(a.snapshot(), later, GRACE);
    assert_eq!(
        (report.segments, report.objects, report.dropped),
        (2, 49, 0)
    );
    b.check_invariants().unwrap();
    assert_eq!(canonical(&b), canonical(&a));
    assert_eq!(
        b.allocated(),
        complete_bytes(&a),
        "the unfinished put is gone"
    );
    assert!(!b.contains("unfinished"));

    // Not readable, and no new object placed, until the owner remounts.
    assert!(b.exist_key("k0", later), "the object exists");
    assert_eq!(
        b.get_replica_list("k0", later),
        Err(ErrorCode::ReplicaIsNotReady)
    );
    assert_eq!(
        b.put_start(W, "new", 10, &ReplicateConfig::default(), later),
        Err(ErrorCode::NoAvailableHandle)
    );
    assert_eq!(b.ping(OWNER, later).status, ClientStatus::NeedRemount);
    b.remount_segments(OWNER, segs(), later).unwrap();
    assert_eq!(b.ping(OWNER, later).status, ClientStatus::Ok);
    for (i, replicas) in before.iter().enumerate() {
        let key = format!("k{i}");
        match replicas {
            Some(r) => assert_eq!(
                b.get_replica_list(&key, later).unwrap().replicas,
                *r,
                "{key}"
            ),
            None => assert!(!b.contains(&key)),
        }
    }
    // A new put never reuses a restored range or a restored version.
    let max_version = before.iter().flatten().map(|r| r[0].version).max().unwrap();
    let fresh = b
        .put_start(W, "new", 10, &ReplicateConfig::default(), later)
        .unwrap();
    assert!(fresh[0].version > max_version);
    b.put_end(W, "new", later).unwrap();
    b.check_invariants().unwrap();
}

#[test]
fn restored_segments_whose_owner_never_returns_go_after_the_grace() {
    let (mut a, t) = journaled(5);
    populate(&mut a, t);
    let mut b = MasterCore::new(MasterConfig::default(), 6);
    b.restore(a.snapshot(), t, GRACE);
    b.tick(t + GRACE - Duration::from_secs(1));
    assert_eq!(b.key_count(), 49);
    b.tick(t + GRACE);
    assert_eq!((b.key_count(), b.capacity(), b.allocated()), (0, 0, 0));
    b.check_invariants().unwrap();
    // A different client cannot take a restored (non-durable) segment over.
    let mut c = MasterCore::new(MasterConfig::default(), 6);
    c.restore(a.snapshot(), t, GRACE);
    assert_eq!(
        c.mount_segment(ClientId(99), seg(1, "a:1", 64 * MIB), t),
        Err(ErrorCode::SegmentAlreadyExists)
    );
    assert_eq!(
        c.mount_segment(OWNER, seg(1, "a:1", 32 * MIB), t),
        Err(ErrorCode::InvalidParams),
        "same id, another size"
    );
}

#[test]
fn the_journal_records_each_kind_of_change() {
    let (mut a, t) = journaled(5);
    let mounted = a.take_journal();
    assert_eq!(mounted.len(), 2);
    assert!(mounted.iter().all(|c| matches!(c, Change::Mount { .. })));
    put_with(&mut a, "x", 100, &ReplicateConfig::default(), t);
    let put = a.take_journal();
    assert!(matches!(&put[..], [Change::Object(o)] if o.key == "x" && o.size == 100));
    assert!(a.take_journal().is_empty(), "taken once");
    a.get_replica_list("x", t).unwrap();
    a.exist_key("x", t);
    assert!(a.take_journal().is_empty(), "reads are not journaled");
    a.upsert_start(W, "x", 50, &ReplicateConfig::default(), t)
        .unwrap();
    assert_eq!(a.take_journal(), [Change::Erase { key: "x".into() }]);
    a.put_end(W, "x", t).unwrap();
    a.take_journal();
    a.remove("x", true, t).unwrap();
    assert_eq!(a.take_journal(), [Change::Erase { key: "x".into() }]);
    a.unmount_segment(OWNER, SegmentId(2)).unwrap();
    assert_eq!(
        a.take_journal(),
        [Change::Unmount {
            segment: SegmentId(2)
        }]
    );
}

#[test]
fn records_survive_json_and_unknown_fields() {
    let (mut a, t) = journaled(5);
    populate(&mut a, t);
    for ch in a.snapshot() {
        let json = serde_json::to_string(&ch).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), ch);
    }
    let later = r#"{"object":{"key":"k","size":5,"version":9,"owner":"0000000000000000000000000000000a",
        "replicas":[{"segment":"00000000000000000000000000000001","offset":64,"tier":"dram"}],"new_field":[1]}}"#;
    match serde_json::from_str::<Change>(later).unwrap() {
        Change::Object(o) => {
            assert_eq!(
                (o.size, o.version, o.pin, o.owner),
                (5, 9, Pin::None, ClientId(10))
            );
            assert_eq!(o.replicas[0].offset, 64);
        }
        other => panic!("{other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u64, usize, u8),
    End(u8),
    Upsert(u8, u64),
    Remove(u8),
    RemoveAll,
    Clear(u8, bool),
    Evict(u64),
    Mount(u8),
    Unmount(u8),
    Tick(u64),
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..24, 1u64..4 * MIB, 1usize..3, 0u8..3).prop_map(|(k, s, r, p)| Step::Put(k, s, r, p)),
        6 => (0u8..24).prop_map(Step::End),
        2 => (0u8..24, 1u64..2 * MIB).prop_map(|(k, s)| Step::Upsert(k, s)),
        2 => (0u8..24).prop_map(Step::Remove),
        1 => Just(Step::RemoveAll),
        1 => (0u8..24, any::<bool>()).prop_map(|(k, w)| Step::Clear(k, w)),
        1 => (1u64..16 * MIB).prop_map(Step::Evict),
        2 => (0u8..4).prop_map(Step::Mount),
        1 => (0u8..4).prop_map(Step::Unmount),
        2 => (0u64..20_000).prop_map(Step::Tick),
        1 => Just(Step::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random operations with the journal taken after each call (as the shell does):
    /// replaying every record, or the last snapshot plus the records after it, rebuilds
    /// exactly the durable state, with the invariants holding.
    #[test]
    fn replaying_the_journal_rebuilds_the_durable_state(
        steps in proptest::collection::vec(step(), 1..150),
    ) {
        let mut c = MasterCore::new(MasterConfig::default(), 3);
        c.enable_journal();
        let mut now = Instant::now();
        let owner = ClientId(9);
        let mut log: Vec<Change> = Vec::new();
        let mut snap: Vec<Change> = Vec::new();
        let mut since_snap: Vec<Change> = Vec::new();
        for s in steps {
            let key = |k: u8| format!("k{k}");
            match s {
                Step::Put(k, size, r, p) => {
                    let cfg = ReplicateConfig {
                        replica_num: r,
                        pin: [Pin::None, Pin::Soft, Pin::Hard][usize::from(p)],
                        ..Default::default()
                    };
                    let _ = c.put_start(W, &key(k), size, &cfg, now);
                }
                Step::End(k) => { let _ = c.put_end(W, &key(k), now); }
                Step::Upsert(k, size) => {
                    let _ = c.upsert_start(W, &key(k), size, &ReplicateConfig::default(), now);
                }
                Step::Remove(k) => { let _ = c.remove(&key(k), true, now); }
                Step::RemoveAll => { c.remove_all(true, now); }
                Step::Clear(k, whole) => {
                    let segment = if whole { "" } else { "h0:1" };
                    c.batch_replica_clear(W, &[key(k)], segment, now);
                }
                Step::Evict(bytes) => { c.evict(bytes, now); }
                Step::Mount(i) => {
                    let s = seg(u128::from(i) + 1, &format!("h{}:1", i % 3), 16 * MIB);
                    let _ = c.remount_segments(owner, vec![s], now);
                }
                Step::Unmount(i) => { let _ = c.unmount_segment(owner, SegmentId(u128::from(i) + 1)); }
                Step::Tick(ms) => {
                    c.ping(owner, now);
                    now += Duration::from_millis(ms.min(5_000));
                    c.tick(now);
                }
                Step::Snapshot => {
                    snap = c.snapshot();
                    since_snap.clear();
                }
            }
            let batch = c.take_journal();
            log.extend(batch.iter().cloned());
            since_snap.extend(batch);
        }
        let want = canonical(&c);
        let mut from_log = MasterCore::new(MasterConfig::default(), 1);
        from_log.restore(log, now, GRACE);
        prop_assert_eq!(from_log.check_invariants(), Ok(()));
        prop_assert_eq!(canonical(&from_log), want.clone());
        prop_assert_eq!(from_log.allocated(), complete_bytes(&c));
        let mut from_snap = MasterCore::new(MasterConfig::default(), 1);
        from_snap.restore(snap.into_iter().chain(since_snap), now, GRACE);
        prop_assert_eq!(from_snap.check_invariants(), Ok(()));
        prop_assert_eq!(canonical(&from_snap), want);
    }
}

/// Bytes held by complete objects: what a restore brings back (not unfinished puts, delayed
/// frees or reservations).
fn complete_bytes(c: &MasterCore) -> u64 {
    c.objects
        .values()
        .filter(|o| o.state == super::State::Complete)
        .map(|o| o.slots.len() as u64 * OffsetAllocator::size_class_of(o.size))
        .sum()
}
