use std::time::{Duration, Instant};

use mooncake_store::{ClientId, ClientStatus, ErrorCode, Pin, ReplicateConfig, Segment, SegmentId};
use proptest::prelude::*;

use super::MasterCore;
use crate::MasterConfig;

const MIB: u64 = 1 << 20;

fn seg(id: u128, name: &str, size: u64) -> Segment {
    Segment {
        id: SegmentId(id),
        name: name.into(),
        base: 0x1000_0000 * id as u64,
        size,
        te_endpoint: name.into(),
        protocol: "tcp".into(),
        host_id: name.split(':').next().unwrap_or(name).into(),
        durable: false,
    }
}

fn core_with(segments: &[(u128, &str, u64)]) -> (MasterCore, Instant) {
    core_with_config(MasterConfig::default(), segments)
}

fn core_with_config(config: MasterConfig, segments: &[(u128, &str, u64)]) -> (MasterCore, Instant) {
    let mut c = MasterCore::new(config, 1);
    let t0 = Instant::now();
    let segs = segments.iter().map(|(id, n, s)| seg(*id, n, *s)).collect();
    c.remount_segments(ClientId(7), segs, t0).unwrap();
    (c, t0)
}

fn put(c: &mut MasterCore, key: &str, size: u64, now: Instant) -> Result<(), ErrorCode> {
    c.put_start(ClientId(1), key, size, &ReplicateConfig::default(), now)?;
    c.put_end(ClientId(1), key, now)
}

const W: ClientId = ClientId(1);

#[test]
fn duplicate_put_is_refused_and_keeps_the_first_value() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    let first = c
        .put_start(W, "k", 100, &ReplicateConfig::default(), t)
        .unwrap();
    assert!(!c.exist_key("k", t), "a put in progress is invisible");
    assert_eq!(
        c.get_replica_list("k", t),
        Err(ErrorCode::ReplicaIsNotReady)
    );
    assert_eq!(
        c.put_start(W, "k", 200, &ReplicateConfig::default(), t),
        Err(ErrorCode::ObjectAlreadyExists)
    );
    c.put_end(W, "k", t).unwrap();
    assert_eq!(
        c.put_start(W, "k", 200, &ReplicateConfig::default(), t),
        Err(ErrorCode::ObjectAlreadyExists)
    );
    let list = c.get_replica_list("k", t).unwrap();
    assert_eq!(
        (list.size(), list.replicas[0].buffer_address),
        (100, first[0].buffer_address)
    );
    assert_eq!(list.lease_ttl_ms, 10_000);
}

#[test]
fn upsert_replaces_the_value() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    put(&mut c, "k", 100, t).unwrap();
    c.upsert_start(W, "k", 300, &ReplicateConfig::default(), t)
        .unwrap();
    assert!(!c.exist_key("k", t));
    c.put_end(W, "k", t).unwrap();
    assert_eq!(c.get_replica_list("k", t).unwrap().size(), 300);
    c.check_invariants().unwrap();
}

#[test]
fn missing_keys() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    assert_eq!(
        c.get_replica_list("nope", t),
        Err(ErrorCode::ObjectNotFound)
    );
    assert!(!c.exist_key("nope", t));
    assert_eq!(c.remove("nope", false, t), Err(ErrorCode::ObjectNotFound));
    assert_eq!(c.put_end(W, "nope", t), Err(ErrorCode::ObjectNotFound));
    assert_eq!(c.put_revoke(W, "nope"), Err(ErrorCode::ObjectNotFound));
}

#[test]
fn a_lease_blocks_remove_until_it_expires() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    put(&mut c, "fresh", 10, t).unwrap();
    assert_eq!(
        c.remove("fresh", false, t),
        Ok(()),
        "put end grants a zero-length lease"
    );
    put(&mut c, "k", 10, t).unwrap();
    c.get_replica_list("k", t).unwrap();
    assert_eq!(
        c.remove("k", false, t + Duration::from_millis(9_999)),
        Err(ErrorCode::ObjectHasLease)
    );
    assert_eq!(
        c.remove("k", false, t + Duration::from_millis(10_000)),
        Ok(())
    );
    put(&mut c, "e", 10, t).unwrap();
    assert!(c.exist_key("e", t), "exist grants a lease too");
    assert_eq!(
        c.remove("e", false, t + Duration::from_secs(5)),
        Err(ErrorCode::ObjectHasLease)
    );
    assert_eq!(
        c.remove("e", true, t + Duration::from_secs(5)),
        Ok(()),
        "force ignores the lease"
    );
}

#[test]
fn remove_all_skips_leased_objects_unless_forced() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    put(&mut c, "a", 10, t).unwrap();
    put(&mut c, "b", 10, t).unwrap();
    c.exist_key("b", t);
    assert_eq!(c.remove_all(false, t), 1);
    assert_eq!(c.remove_all(true, t), 1);
    assert_eq!(c.key_count(), 0);
    assert_eq!(c.allocated(), 0);
}

#[test]
fn bad_input_gets_invalid_params() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    let cfg = ReplicateConfig::default();
    assert_eq!(
        c.put_start(W, "", 10, &cfg, t),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.put_start(W, &"k".repeat(5000), 10, &cfg, t),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.put_start(W, "k", 0, &cfg, t),
        Err(ErrorCode::InvalidParams)
    );
    let zero = ReplicateConfig {
        replica_num: 0,
        ..cfg.clone()
    };
    assert_eq!(
        c.put_start(W, "k", 10, &zero, t),
        Err(ErrorCode::InvalidParams)
    );
    let same_node = ReplicateConfig {
        prefer_alloc_in_same_node: true,
        ..cfg.clone()
    };
    assert_eq!(
        c.put_start(W, "k", 10, &same_node, t),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.put_start(W, "huge", 128 * MIB, &cfg, t),
        Err(ErrorCode::NoAvailableHandle)
    );
    assert_eq!(
        c.unmount_segment(ClientId(7), SegmentId(99)),
        Ok(()),
        "unknown segment: idempotent"
    );
    assert_eq!(
        c.unmount_segment(ClientId(8), SegmentId(1)),
        Err(ErrorCode::IllegalClient)
    );
    assert_eq!(
        c.mount_segment(ClientId(8), seg(1, "a:1", MIB), t),
        Err(ErrorCode::SegmentAlreadyExists)
    );
    assert_eq!(
        c.mount_segment(ClientId(8), seg(2, "b:1", 0), t),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(c.key_count(), 0);
}

#[test]
fn replicas_go_to_distinct_segments_and_survive_one_unmount() {
    let (mut c, t) = core_with(&[
        (1, "a:1", 64 * MIB),
        (2, "b:1", 64 * MIB),
        (3, "a:1", 64 * MIB),
    ]);
    let two = ReplicateConfig {
        replica_num: 2,
        ..Default::default()
    };
    for i in 0..50 {
        let r = c.put_start(W, &format!("k{i}"), MIB, &two, t).unwrap();
        assert_eq!(r.len(), 2);
        assert_ne!(r[0].segment_name, r[1].segment_name);
        c.put_end(W, &format!("k{i}"), t).unwrap();
    }
    let three = ReplicateConfig {
        replica_num: 3,
        ..Default::default()
    };
    assert_eq!(
        c.put_start(W, "x", MIB, &three, t).unwrap().len(),
        2,
        "only two distinct names exist"
    );
    c.unmount_segment(ClientId(7), SegmentId(2)).unwrap();
    for i in 0..50 {
        let list = c.get_replica_list(&format!("k{i}"), t).unwrap();
        assert_eq!(list.replicas.len(), 1);
        assert_eq!(list.replicas[0].segment_name, "a:1");
    }
    c.check_invariants().unwrap();
}

#[test]
fn preferred_segment_is_honoured_when_it_has_room() {
    let (mut c, t) = core_with(&[
        (1, "a:1", 64 * MIB),
        (2, "b:1", 64 * MIB),
        (3, "c:1", 2 * MIB),
    ]);
    let pref = ReplicateConfig {
        preferred_segments: vec!["b:1".into()],
        ..Default::default()
    };
    for i in 0..10 {
        assert_eq!(
            c.put_start(W, &format!("p{i}"), MIB, &pref, t).unwrap()[0].segment_name,
            "b:1"
        );
    }
    let pref_c = ReplicateConfig {
        preferred_segments: vec!["c:1".into()],
        ..Default::default()
    };
    let names: Vec<String> = (0..4)
        .map(|i| {
            c.put_start(W, &format!("c{i}"), MIB, &pref_c, t).unwrap()[0]
                .segment_name
                .clone()
        })
        .collect();
    assert_eq!(&names[..2], ["c:1", "c:1"]);
    assert!(
        names[2..].iter().all(|n| n != "c:1"),
        "full preferred segment falls back: {names:?}"
    );
}

#[test]
fn silent_clients_expire_and_their_objects_go() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    put(&mut c, "k", MIB, t).unwrap();
    assert_eq!(
        c.ping(ClientId(7), t + Duration::from_secs(5)).status,
        ClientStatus::Ok
    );
    assert!(
        c.tick(t + Duration::from_secs(14))
            .expired_clients
            .is_empty(),
        "the ping extended the deadline"
    );
    let report = c.tick(t + Duration::from_secs(15));
    assert_eq!(report.expired_clients, vec![ClientId(7)]);
    assert!(!c.exist_key("k", t + Duration::from_secs(15)));
    assert_eq!((c.capacity(), c.allocated()), (0, 0));
    assert_eq!(
        put(&mut c, "k2", 10, t + Duration::from_secs(16)),
        Err(ErrorCode::NoAvailableHandle)
    );
    assert_eq!(
        c.ping(ClientId(7), t + Duration::from_secs(16)).status,
        ClientStatus::NeedRemount
    );
    c.remount_segments(
        ClientId(7),
        vec![seg(1, "a:1", 64 * MIB)],
        t + Duration::from_secs(16),
    )
    .unwrap();
    assert_eq!(
        c.ping(ClientId(7), t + Duration::from_secs(17)).status,
        ClientStatus::Ok
    );
    put(&mut c, "k2", 10, t + Duration::from_secs(17)).unwrap();
}

#[test]
fn first_ping_after_mount_asks_for_remount() {
    let mut c = MasterCore::new(MasterConfig::default(), 42);
    let t = Instant::now();
    c.mount_segment(ClientId(3), seg(1, "a:1", MIB), t).unwrap();
    let reply = c.ping(ClientId(3), t);
    assert_eq!(
        (reply.view_version, reply.status),
        (42, ClientStatus::NeedRemount)
    );
}

#[test]
fn abandoned_puts_are_discarded_and_their_space_released_later() {
    let long_lived = MasterConfig {
        client_ttl: Duration::from_secs(3600),
        ..MasterConfig::default()
    };
    let (mut c, t) = core_with_config(long_lived, &[(1, "a:1", 64 * MIB)]);
    c.put_start(W, "stuck", 8 * MIB, &ReplicateConfig::default(), t)
        .unwrap();
    assert_eq!(c.tick(t + Duration::from_secs(29)).discarded_puts, 0);
    assert_eq!(c.tick(t + Duration::from_secs(30)).discarded_puts, 1);
    assert!(!c.contains("stuck"));
    assert_eq!(
        c.allocated(),
        8 * MIB,
        "the old writer may still write: space held"
    );
    c.tick(t + Duration::from_secs(30 + 600));
    assert_eq!(c.allocated(), 0);
    c.put_start(W, "young", 1, &ReplicateConfig::default(), t)
        .unwrap();
    assert_eq!(
        c.put_start(
            ClientId(2),
            "young",
            1,
            &ReplicateConfig::default(),
            t + Duration::from_secs(31)
        )
        .map(|_| ()),
        Ok(()),
        "an old unfinished put is preempted"
    );
    assert_eq!(
        c.put_end(W, "young", t + Duration::from_secs(31)),
        Err(ErrorCode::IllegalClient)
    );
}

#[test]
fn a_full_store_evicts_oldest_first_and_puts_never_fail_while_something_is_evictable() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    for i in 0..192u64 {
        let now = t + Duration::from_millis(i);
        put(&mut c, &format!("k{i}"), MIB, now).unwrap_or_else(|e| panic!("put {i}: {e}"));
        c.tick(now);
    }
    assert!(c.contains("k191"));
    assert!(!c.contains("k0"), "the oldest key is evicted first");
    let kept: Vec<u64> = (0..192).filter(|i| c.contains(&format!("k{i}"))).collect();
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "kept keys are the newest, contiguous: {kept:?}"
    );
    assert!(c.eviction_stats().evicted_keys >= 128);
    c.check_invariants().unwrap();
}

#[test]
fn leased_and_hard_pinned_objects_are_never_evicted() {
    for leased in [true, false] {
        let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
        let cfg = ReplicateConfig {
            pin: if leased { Pin::None } else { Pin::Hard },
            ..Default::default()
        };
        let mut ok = 0;
        for i in 0..100 {
            let key = format!("k{i}");
            let r = c
                .put_start(W, &key, MIB, &cfg, t)
                .and_then(|_| c.put_end(W, &key, t));
            if r.is_ok() {
                ok += 1;
                if leased {
                    c.exist_key(&key, t);
                }
            } else {
                assert_eq!(r, Err(ErrorCode::NoAvailableHandle));
            }
            c.tick(t);
        }
        assert_eq!(ok, 64, "leased={leased}");
        assert!((0..64).all(|i| c.contains(&format!("k{i}"))));
    }
}

#[test]
fn soft_pinned_objects_are_evicted_last() {
    let (mut c, t) = core_with(&[(1, "a:1", 16 * MIB)]);
    let soft = ReplicateConfig {
        pin: Pin::Soft,
        ..Default::default()
    };
    for i in 0..8 {
        let k = format!("soft{i}");
        c.put_start(W, &k, MIB, &soft, t).unwrap();
        c.put_end(W, &k, t).unwrap();
    }
    for i in 0..8 {
        put(
            &mut c,
            &format!("plain{i}"),
            MIB,
            t + Duration::from_millis(10 + i),
        )
        .unwrap();
    }
    put(&mut c, "new", 4 * MIB, t + Duration::from_millis(20)).unwrap();
    assert!(
        (0..8).all(|i| c.contains(&format!("soft{i}"))),
        "plain objects go first"
    );
    assert!(
        !c.contains("plain0"),
        "the least recently used plain object goes first"
    );
    assert!(c.contains("plain7"));
    assert_eq!(c.soft_pin_key_count(), 8);
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u64, usize),
    End(u8),
    Revoke(u8),
    Get(u8),
    Exist(u8),
    Remove(u8, bool),
    Evict(u64),
    Mount(u8),
    Unmount(u8),
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..20, 1u64..4 * MIB, 1usize..3).prop_map(|(k, s, r)| Step::Put(k, s, r)),
        (0u8..20).prop_map(Step::End),
        (0u8..20).prop_map(Step::Revoke),
        (0u8..20).prop_map(Step::Get),
        (0u8..20).prop_map(Step::Exist),
        (0u8..20, any::<bool>()).prop_map(|(k, f)| Step::Remove(k, f)),
        (1u64..16 * MIB).prop_map(Step::Evict),
        (0u8..4).prop_map(Step::Mount),
        (0u8..4).prop_map(Step::Unmount),
        (0u64..40_000).prop_map(Step::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_operations_keep_the_invariants(steps in proptest::collection::vec(step(), 1..120)) {
        let mut c = MasterCore::new(MasterConfig::default(), 1);
        let mut now = Instant::now();
        let owner = ClientId(9);
        for s in steps {
            let before_leased: Vec<(String, Instant)> = (0..20u8)
                .map(|k| format!("k{k}"))
                .filter_map(|k| c.lease_until(&k).filter(|l| *l > now).map(|l| (k, l)))
                .collect();
            let mut forced = None;
            match s {
                Step::Put(k, size, r) => {
                    let cfg = ReplicateConfig { replica_num: r, ..Default::default() };
                    let _ = c.put_start(W, &format!("k{k}"), size, &cfg, now);
                }
                Step::End(k) => { let _ = c.put_end(W, &format!("k{k}"), now); }
                Step::Revoke(k) => { let _ = c.put_revoke(W, &format!("k{k}")); }
                Step::Get(k) => { let _ = c.get_replica_list(&format!("k{k}"), now); }
                Step::Exist(k) => { c.exist_key(&format!("k{k}"), now); }
                Step::Remove(k, force) => {
                    if force { forced = Some(format!("k{k}")); }
                    let _ = c.remove(&format!("k{k}"), force, now);
                }
                Step::Evict(bytes) => { c.evict(bytes, now); }
                Step::Mount(i) => {
                    let _ = c.remount_segments(owner, vec![seg(u128::from(i) + 1, &format!("h{}:1", i % 3), 16 * MIB)], now);
                }
                Step::Unmount(i) => { let _ = c.unmount_segment(owner, SegmentId(u128::from(i) + 1)); }
                Step::Tick(ms) => {
                    c.ping(owner, now);
                    now += Duration::from_millis(ms.min(5_000));
                    c.tick(now);
                }
            }
            prop_assert_eq!(c.check_invariants(), Ok(()));
            // A leased object disappears only by force, unmount or client expiry.
            let unmounts = matches!(s, Step::Unmount(_) | Step::Tick(_) | Step::Mount(_));
            for (k, _) in before_leased {
                if Some(&k) != forced.as_ref() && !unmounts {
                    prop_assert!(c.contains(&k), "leased {} vanished after {:?}", k, s);
                }
            }
        }
    }
}

#[test]
fn every_put_of_a_key_gets_a_new_version_never_reissued_after_a_restart() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    let cfg = ReplicateConfig::default();
    let v1 = c.put_start(W, "k", 100, &cfg, t).unwrap()[0].clone();
    c.put_end(W, "k", t).unwrap();
    let read = c.get_replica_list("k", t).unwrap();
    assert_eq!(read.replicas[0], v1, "reads report the version the put got");
    c.remove("k", true, t).unwrap();
    let v2 = c.put_start(W, "k", 100, &cfg, t).unwrap()[0].clone();
    c.put_end(W, "k", t).unwrap();
    assert_eq!(
        v2.buffer_address, v1.buffer_address,
        "the freed range is reused"
    );
    assert_ne!(v2.version, v1.version, "but the version differs");
    let later = t + Duration::from_secs(20);
    let v3 = c.upsert_start(W, "k", 100, &cfg, later).unwrap()[0].clone();
    assert!(v3.version > v2.version);
    // A later incarnation (larger view version) starts above every earlier version.
    let mut restarted = MasterCore::new(MasterConfig::default(), 2);
    restarted
        .remount_segments(ClientId(7), vec![seg(1, "a:1", 64 * MIB)], t)
        .unwrap();
    let v4 = restarted.put_start(W, "k", 100, &cfg, t).unwrap()[0].clone();
    assert!(v4.version > v3.version);
}

fn on(segment: &str) -> ReplicateConfig {
    ReplicateConfig {
        preferred_segments: vec![segment.into()],
        ..ReplicateConfig::default()
    }
}

fn used(c: &MasterCore, name: &str) -> u64 {
    c.segment_usage()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, used)| used)
        .unwrap_or(0)
}

#[test]
fn draining_moves_sole_replicas_and_keeps_everything_consistent() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    c.remount_segments(ClientId(8), vec![seg(2, "b:1", 64 * MIB)], t)
        .unwrap();
    for i in 0..10 {
        let k = format!("k{i}");
        c.put_start(W, &k, MIB, &on("a:1"), t).unwrap();
        c.put_end(W, &k, t).unwrap();
    }
    let two = ReplicateConfig {
        replica_num: 2,
        ..ReplicateConfig::default()
    };
    c.put_start(W, "both", MIB, &two, t).unwrap();
    c.put_end(W, "both", t).unwrap();
    c.put_start(W, "unfinished", MIB, &on("a:1"), t).unwrap();
    assert_eq!(
        c.drain_start(ClientId(8), SegmentId(1)),
        Err(ErrorCode::IllegalClient)
    );

    let moves = c.drain_start(ClientId(7), SegmentId(1)).unwrap();
    let mut keys: Vec<_> = moves.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    assert_eq!(
        keys.len(),
        10,
        "only complete objects with no other replica: {keys:?}"
    );
    for m in &moves {
        let target = m.target.as_ref().unwrap();
        assert_eq!(
            (m.source.segment_name.as_str(), target.segment_name.as_str()),
            ("a:1", "b:1")
        );
        assert_eq!(
            (target.size, target.version),
            (m.source.size, m.source.version)
        );
    }
    c.check_invariants().unwrap();
    // Nothing new lands on a draining segment, even when asked for.
    let placed = c.put_start(W, "new", MIB, &on("a:1"), t).unwrap();
    assert_eq!(placed[0].segment_name, "b:1");
    c.put_end(W, "new", t).unwrap();

    // One copy failed, one object was removed meanwhile, the rest made it.
    c.remove("k1", true, t).unwrap();
    let results: Vec<(String, bool)> = moves
        .iter()
        .map(|m| (m.key.clone(), m.key != "k0"))
        .collect();
    let ends = c.drain_end(ClientId(7), &results);
    for ((k, _), r) in results.iter().zip(&ends) {
        let expected = match k.as_str() {
            "k0" => Err(ErrorCode::TransferFail),
            "k1" => Err(ErrorCode::ObjectNotFound),
            _ => Ok(()),
        };
        assert_eq!(*r, expected, "{k}");
    }
    assert_eq!(
        c.drain_end(ClientId(7), &results[..1]),
        vec![Err(ErrorCode::ObjectNotFound)],
        "a move ends once"
    );
    c.check_invariants().unwrap();
    c.unmount_segment(ClientId(7), SegmentId(1)).unwrap();
    c.check_invariants().unwrap();
    for i in 2..10 {
        let l = c.get_replica_list(&format!("k{i}"), t).unwrap();
        assert_eq!(l.replicas.len(), 1);
        assert_eq!(l.replicas[0].segment_name, "b:1");
    }
    assert_eq!(c.get_replica_list("k0", t), Err(ErrorCode::ObjectNotFound));
    assert!(c.get_replica_list("both", t).is_ok() && c.get_replica_list("new", t).is_ok());
    // 8 moved objects + "both" + "new" on b:1; the failed copy's range was freed.
    assert_eq!(used(&c, "b:1"), 10 * MIB);
}

#[test]
fn a_drain_with_no_room_or_an_owner_that_dies_frees_every_reserved_range() {
    let (mut c, t) = core_with(&[(1, "a:1", 64 * MIB)]);
    c.remount_segments(ClientId(8), vec![seg(2, "b:1", 3 * MIB)], t)
        .unwrap();
    for i in 0..4 {
        let k = format!("k{i}");
        c.put_start(W, &k, MIB, &on("a:1"), t).unwrap();
        c.put_end(W, &k, t).unwrap();
    }
    let moves = c.drain_start(ClientId(7), SegmentId(1)).unwrap();
    assert_eq!(moves.len(), 4);
    assert_eq!(
        moves.iter().filter(|m| m.target.is_none()).count(),
        1,
        "b:1 has room for three"
    );
    assert_eq!(used(&c, "b:1"), 3 * MIB);
    // The draining client goes silent: its segment expires and the reserved ranges return.
    let later = t + Duration::from_secs(60);
    c.ping(ClientId(8), later);
    let report = c.tick(later);
    assert!(report.expired_clients.contains(&ClientId(7)));
    c.check_invariants().unwrap();
    assert_eq!(used(&c, "b:1"), 0);
    let results: Vec<(String, bool)> = moves.iter().map(|m| (m.key.clone(), true)).collect();
    assert!(c
        .drain_end(ClientId(7), &results)
        .iter()
        .all(|r| *r == Err(ErrorCode::ObjectNotFound)));
}

fn durable(id: u128, name: &str, size: u64) -> Segment {
    Segment {
        durable: true,
        ..seg(id, name, size)
    }
}

#[test]
fn a_durable_segment_waits_for_its_restarted_owner_then_serves_again() {
    let config = MasterConfig {
        client_ttl: Duration::from_secs(2),
        durable_segment_grace: Some(Duration::from_secs(10)),
        ..MasterConfig::default()
    };
    let mut c = MasterCore::new(config, 1);
    let t = Instant::now();
    c.remount_segments(ClientId(7), vec![durable(1, "a:1", 64 * MIB)], t)
        .unwrap();
    c.remount_segments(ClientId(8), vec![seg(2, "b:1", 64 * MIB)], t)
        .unwrap();
    c.put_start(W, "k", MIB, &on("a:1"), t).unwrap();
    c.put_end(W, "k", t).unwrap();
    let before = c.get_replica_list("k", t).unwrap().replicas[0].clone();

    // The owner goes silent: the segment is detached, not dropped.
    let t1 = t + Duration::from_secs(3);
    c.ping(ClientId(8), t1);
    assert_eq!(c.tick(t1).expired_clients, vec![ClientId(7)]);
    c.check_invariants().unwrap();
    assert_eq!(
        c.get_replica_list("k", t1),
        Err(ErrorCode::ReplicaIsNotReady)
    );
    assert!(c.exist_key("k", t1), "the object is kept");
    let placed = c.put_start(W, "new", MIB, &on("a:1"), t1).unwrap();
    assert_eq!(
        placed[0].segment_name, "b:1",
        "nothing new on a detached segment"
    );

    // A plain segment with the same id is refused; the restarted owner remounts it, mapped
    // at another address under another name, and the object is served from there.
    let t2 = t1 + Duration::from_secs(4);
    assert_eq!(
        c.remount_segments(ClientId(9), vec![seg(1, "a:2", 64 * MIB)], t2),
        Err(ErrorCode::InvalidParams)
    );
    let mut moved = durable(1, "a:2", 64 * MIB);
    moved.base = 0x7000_0000;
    c.remount_segments(ClientId(9), vec![moved], t2).unwrap();
    let after = c.get_replica_list("k", t2).unwrap().replicas[0].clone();
    assert_eq!(after.segment_name, "a:2");
    assert_eq!(
        after.buffer_address - 0x7000_0000,
        before.buffer_address - 0x1000_0000,
        "same offset in the segment"
    );
    assert_eq!(after.version, before.version);
    c.check_invariants().unwrap();
    // Only a durable mount of the same size takes over (the store service holding the
    // file's lock), even before the previous owner's liveness expired.
    assert_eq!(
        c.remount_segments(ClientId(10), vec![seg(1, "a:3", 64 * MIB)], t2),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.remount_segments(ClientId(10), vec![durable(1, "a:3", 32 * MIB)], t2),
        Err(ErrorCode::InvalidParams)
    );
    c.remount_segments(ClientId(10), vec![durable(1, "a:2", 64 * MIB)], t2)
        .unwrap();
    assert_eq!(
        c.get_replica_list("k", t2).unwrap().replicas[0].segment_name,
        "a:2"
    );
    c.check_invariants().unwrap();
    c.ping(ClientId(9), t2);

    // Silent again (client 10 never pings), no restart within the grace period: gone.
    let t3 = t2 + Duration::from_secs(3);
    c.ping(ClientId(8), t3);
    c.tick(t3);
    let t4 = t3 + Duration::from_secs(11);
    c.ping(ClientId(8), t4);
    c.tick(t4);
    assert_eq!(c.get_replica_list("k", t4), Err(ErrorCode::ObjectNotFound));
    assert!(!c.segment_usage().iter().any(|(n, _, _)| n == "a:2"));
    c.check_invariants().unwrap();
}
