//! Scenario tests of replica clearing, copy/move tasks, drain jobs, soft-pin TTLs and
//! excluded segments, on the sans-io core with manual instants.

use std::time::{Duration, Instant};

use mooncake_store::{
    ClientId, ErrorCode, Pin, ReplicateConfig, Segment, SegmentId, TaskKind, TaskStatus,
};

use super::{JobStatus, MasterCore, SegmentStatus};
use crate::MasterConfig;

const MIB: u64 = 1 << 20;
const OWNER_A: ClientId = ClientId(10);
const OWNER_B: ClientId = ClientId(20);
const WRITER: ClientId = ClientId(1);

fn seg(id: u128, name: &str) -> Segment {
    Segment {
        id: SegmentId(id),
        name: name.into(),
        base: 0x1000_0000 * id as u64,
        size: 64 * MIB,
        te_endpoint: name.into(),
        protocol: "tcp".into(),
        host_id: "h".into(),
        durable: false,
    }
}

/// Segments `a:1` (owned by A) and `b:2` (owned by B).
fn two_owners() -> (MasterCore, Instant) {
    let mut c = MasterCore::new(MasterConfig::default(), 1);
    let t = Instant::now();
    c.remount_segments(OWNER_A, vec![seg(1, "a:1")], t).unwrap();
    c.remount_segments(OWNER_B, vec![seg(2, "b:2")], t).unwrap();
    (c, t)
}

fn on(segment: &str) -> ReplicateConfig {
    ReplicateConfig {
        preferred_segments: vec![segment.into()],
        ..ReplicateConfig::default()
    }
}

fn put_on(c: &mut MasterCore, key: &str, segment: &str, t: Instant) {
    c.put_start(WRITER, key, 4096, &on(segment), t).unwrap();
    c.put_end(WRITER, key, t).unwrap();
}

fn holders(c: &MasterCore, key: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .peek_replicas(key)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.segment_name)
        .collect();
    v.sort();
    v
}

#[test]
fn replica_clear_is_for_the_owner_of_unleased_complete_objects() {
    let (mut c, t) = two_owners();
    put_on(&mut c, "k1", "a:1", t);
    put_on(&mut c, "k2", "a:1", t);
    let keys = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(c
        .batch_replica_clear(ClientId(99), &keys(&["k1"]), "", t)
        .is_empty());
    assert!(c.exist_key("k1", t), "a read grants a lease");
    assert!(c
        .batch_replica_clear(WRITER, &keys(&["k1"]), "", t)
        .is_empty());
    let later = t + Duration::from_secs(11);
    assert!(c
        .batch_replica_clear(WRITER, &keys(&["k1"]), "b:2", later)
        .is_empty());
    assert_eq!(
        c.batch_replica_clear(WRITER, &keys(&["k1", "k1", "", "nope", "k2"]), "a:1", later),
        keys(&["k1", "k2"])
    );
    assert!(!c.contains("k1") && !c.contains("k2"));
    c.put_start(WRITER, "open", 10, &ReplicateConfig::default(), t)
        .unwrap();
    assert!(c
        .batch_replica_clear(WRITER, &keys(&["open"]), "", later)
        .is_empty());
    c.check_invariants().unwrap();
}

#[test]
fn copy_and_move_tasks_reserve_at_fetch_and_commit_at_finish() {
    let (mut c, t) = two_owners();
    put_on(&mut c, "k", "a:1", t);
    let targets = vec!["b:2".to_owned()];
    assert_eq!(
        c.create_copy_task("k", &[], t, 1),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.create_copy_task("none", &targets, t, 1),
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(
        c.create_copy_task("k", &["x:9".to_owned()], t, 1),
        Err(ErrorCode::InvalidParams)
    );
    let id = c.create_copy_task("k", &targets, t, 1000).unwrap();
    let info = c.query_task(id).unwrap();
    assert_eq!(
        (info.kind, info.status, info.assigned_client),
        (TaskKind::Copy, TaskStatus::Pending, OWNER_A)
    );
    assert!(
        c.fetch_tasks(OWNER_B, t, 1001).is_empty(),
        "only the source's owner executes"
    );
    let fetched = c.fetch_tasks(OWNER_A, t, 1001);
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].targets[0].segment_name, "b:2");
    assert_eq!(c.query_task(id).unwrap().status, TaskStatus::Processing);
    c.check_invariants().unwrap();
    assert_eq!(
        c.finish_task(OWNER_B, id, true, "", t, 1002),
        Err(ErrorCode::IllegalClient)
    );
    c.finish_task(OWNER_A, id, true, "", t, 1002).unwrap();
    let done = c.query_task(id).unwrap();
    assert_eq!(
        (done.status, done.message.as_str()),
        (TaskStatus::Success, "Task completed successfully")
    );
    assert_eq!((done.created_at_ms, done.updated_at_ms), (1000, 1002));
    assert_eq!(holders(&c, "k"), ["a:1", "b:2"]);

    put_on(&mut c, "m", "a:1", t);
    assert_eq!(
        c.create_move_task("m", "a:1", "a:1", t, 1),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.create_move_task("m", "b:2", "a:1", t, 1),
        Err(ErrorCode::InvalidParams)
    );
    let mv = c.create_move_task("m", "a:1", "b:2", t, 1).unwrap();
    c.fetch_tasks(OWNER_A, t, 2);
    c.finish_task(OWNER_A, mv, true, "", t, 3).unwrap();
    assert_eq!(holders(&c, "m"), ["b:2"]);
    c.tick(t + Duration::from_secs(1));
    c.check_invariants().unwrap();

    // A failed copy frees its reservation; a copy of a removed object fails.
    let f = c.create_copy_task("m", &["a:1".to_owned()], t, 1).unwrap();
    assert_eq!(c.fetch_tasks(OWNER_B, t, 2).len(), 1);
    c.finish_task(OWNER_B, f, false, "TRANSFER_FAIL", t, 3)
        .unwrap();
    assert_eq!(c.query_task(f).unwrap().status, TaskStatus::Failed);
    let g = c.create_copy_task("m", &["a:1".to_owned()], t, 1).unwrap();
    c.fetch_tasks(OWNER_B, t, 2);
    c.remove("m", true, t).unwrap();
    c.finish_task(OWNER_B, g, true, "", t, 3).unwrap();
    assert_eq!(c.query_task(g).unwrap().status, TaskStatus::Failed);
    assert_eq!(
        c.query_task(mooncake_store::TaskId(12345)),
        Err(ErrorCode::TaskNotFound)
    );
    c.check_invariants().unwrap();
}

#[test]
fn tasks_that_nobody_executes_time_out() {
    let (mut c, t) = two_owners();
    put_on(&mut c, "k", "a:1", t);
    let id = c.create_copy_task("k", &["b:2".to_owned()], t, 1).unwrap();
    c.tick(t + Duration::from_secs(301));
    let info = c.query_task(id).unwrap();
    assert_eq!(
        (info.status, info.message.as_str()),
        (TaskStatus::Failed, "pending timeout")
    );
}

#[test]
fn a_drain_job_moves_everything_then_marks_its_segment_drained() {
    let (mut c, t) = two_owners();
    for i in 0..5 {
        put_on(&mut c, &format!("k{i}"), "a:1", t);
    }
    let a = vec!["a:1".to_owned()];
    assert_eq!(
        c.create_drain_job(&[], &[], 4, 1),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.create_drain_job(&a, &a, 4, 1),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.create_drain_job(&a, &[], 0, 1),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.create_drain_job(&["x:9".to_owned()], &[], 4, 1),
        Err(ErrorCode::SegmentNotFound)
    );
    let job = c.create_drain_job(&a, &[], 2, 1).unwrap();
    assert_eq!(c.segment_status("a:1"), Ok(SegmentStatus::Draining));
    assert_eq!(
        c.create_drain_job(&a, &[], 2, 1),
        Err(ErrorCode::UnavailableInCurrentStatus)
    );
    // Rounds of: the master plans up to two moves, the owner executes them.
    for round in 0..10 {
        c.process_drain_jobs(t, 10 + round);
        let tasks = c.fetch_tasks(OWNER_A, t, 10 + round);
        assert!(tasks.len() <= 2);
        for task in tasks {
            c.finish_task(OWNER_A, task.id, true, "", t, 10 + round)
                .unwrap();
        }
        c.check_invariants().unwrap();
    }
    let v = c.query_drain_job(job).unwrap();
    assert_eq!(v.status, JobStatus::Succeeded, "{v:?}");
    assert_eq!((v.succeeded_units, v.migrated_bytes), (5, 5 * 4096));
    assert_eq!(c.segment_status("a:1"), Ok(SegmentStatus::Drained));
    for i in 0..5 {
        assert_eq!(holders(&c, &format!("k{i}")), ["b:2"]);
    }
    // Nothing new lands on a drained segment.
    put_on(&mut c, "after", "a:1", t);
    assert_eq!(holders(&c, "after"), ["b:2"]);
    assert_eq!(
        c.cancel_drain_job(job, 99),
        Err(ErrorCode::UnavailableInCurrentStatus)
    );
}

#[test]
fn a_hard_pinned_object_blocks_a_drain_job_which_can_be_cancelled() {
    let (mut c, t) = two_owners();
    let pinned = ReplicateConfig {
        pin: Pin::Hard,
        ..on("a:1")
    };
    c.put_start(WRITER, "p", 4096, &pinned, t).unwrap();
    c.put_end(WRITER, "p", t).unwrap();
    let job = c.create_drain_job(&["a:1".to_owned()], &[], 4, 1).unwrap();
    c.process_drain_jobs(t, 2);
    let v = c.query_drain_job(job).unwrap();
    assert_eq!(
        (v.status, v.blocked_units, v.active_units),
        (JobStatus::Running, 1, 0)
    );
    c.cancel_drain_job(job, 3).unwrap();
    assert_eq!(
        c.query_drain_job(job).unwrap().message,
        "Drain job canceled"
    );
    assert_eq!(c.segment_status("a:1"), Ok(SegmentStatus::Ok));
}

#[test]
fn soft_pin_ttls_and_excluded_segments() {
    let (mut c, t) = two_owners();
    let soft = |ms| ReplicateConfig {
        pin: Pin::Soft,
        soft_pin_ttl_ms: Some(ms),
        ..ReplicateConfig::default()
    };
    assert_eq!(
        c.put_start(WRITER, "x", 10, &soft(86_400_001), t),
        Err(ErrorCode::InvalidParams)
    );
    let ttl_without_pin = ReplicateConfig {
        soft_pin_ttl_ms: Some(5),
        ..ReplicateConfig::default()
    };
    assert_eq!(
        c.put_start(WRITER, "x", 10, &ttl_without_pin, t),
        Err(ErrorCode::InvalidParams)
    );
    for (key, ms) in [("zero", 0), ("short", 5_000), ("max", 86_400_000)] {
        c.put_start(WRITER, key, 10, &soft(ms), t).unwrap();
        c.put_end(WRITER, key, t).unwrap();
    }
    assert_eq!(c.soft_pin_key_count(), 2, "a TTL of 0 is no pin");
    // Excluded segments are never chosen, even when preferred.
    for i in 0..10 {
        let cfg = ReplicateConfig {
            excluded_segments: vec!["a:1".into()],
            ..on("a:1")
        };
        let key = format!("ex{i}");
        c.put_start(WRITER, &key, 10, &cfg, t).unwrap();
        c.put_end(WRITER, &key, t).unwrap();
        assert_eq!(holders(&c, &key), ["b:2"]);
    }
    let nowhere = ReplicateConfig {
        excluded_segments: vec!["a:1".into(), "b:2".into()],
        ..ReplicateConfig::default()
    };
    assert_eq!(
        c.put_start(WRITER, "none", 10, &nowhere, t),
        Err(ErrorCode::NoAvailableHandle)
    );
    // A replica count far beyond the segments is best effort, not an abort.
    let huge = ReplicateConfig {
        replica_num: 1 << 40,
        ..ReplicateConfig::default()
    };
    assert_eq!(c.put_start(WRITER, "huge", 10, &huge, t).unwrap().len(), 2);
}

#[test]
fn a_target_unmounted_mid_task_loses_its_reservation_and_nothing_else() {
    let (mut c, t) = two_owners();
    put_on(&mut c, "k", "a:1", t);
    let id = c.create_move_task("k", "a:1", "b:2", t, 1).unwrap();
    assert_eq!(c.fetch_tasks(OWNER_A, t, 2)[0].targets.len(), 1);
    c.unmount_segment(OWNER_B, SegmentId(2)).unwrap();
    // The owner comes back with the same segment id: the old handles must stay unused.
    c.remount_segments(OWNER_B, vec![seg(2, "b:2")], t).unwrap();
    c.finish_task(OWNER_A, id, true, "", t, 3).unwrap();
    assert_eq!(
        holders(&c, "k"),
        ["a:1"],
        "a move never drops the only replica"
    );
    c.check_invariants().unwrap();
}

#[test]
fn duplicate_targets_and_concurrent_copies_keep_replica_names_distinct() {
    let (mut c, t) = two_owners();
    put_on(&mut c, "k", "a:1", t);
    let b = "b:2".to_owned();
    let one = c
        .create_copy_task("k", &[b.clone(), b.clone()], t, 1)
        .unwrap();
    let two = c.create_copy_task("k", &[b], t, 1).unwrap();
    let fetched = c.fetch_tasks(OWNER_A, t, 2);
    assert_eq!(
        fetched.iter().map(|f| f.targets.len()).collect::<Vec<_>>(),
        [1, 1]
    );
    c.finish_task(OWNER_A, one, true, "", t, 3).unwrap();
    c.finish_task(OWNER_A, two, true, "", t, 3).unwrap();
    assert_eq!(holders(&c, "k"), ["a:1", "b:2"]);
    c.check_invariants().unwrap();
}

#[test]
fn an_impossible_placement_evicts_nothing() {
    let (mut c, t) = two_owners();
    for i in 0..20 {
        put_on(&mut c, &format!("e{i}"), "b:2", t);
    }
    let later = t + Duration::from_secs(60);
    let nowhere = ReplicateConfig {
        excluded_segments: vec!["a:1".into(), "b:2".into()],
        ..ReplicateConfig::default()
    };
    assert_eq!(
        c.put_start(WRITER, "x", 10, &nowhere, later),
        Err(ErrorCode::NoAvailableHandle)
    );
    assert_eq!(
        c.put_start(WRITER, "y", 65 * MIB, &ReplicateConfig::default(), later),
        Err(ErrorCode::NoAvailableHandle)
    );
    assert!(
        (0..20).all(|i| c.contains(&format!("e{i}"))),
        "nothing was evicted"
    );
}

#[test]
fn a_processing_task_that_times_out_frees_its_ranges_only_after_the_release_timeout() {
    let (mut c, t) = two_owners();
    put_on(&mut c, "k", "a:1", t);
    let id = c.create_copy_task("k", &["b:2".to_owned()], t, 1).unwrap();
    c.fetch_tasks(OWNER_A, t, 2);
    let used = c.allocated();
    let at = |s| t + Duration::from_secs(s);
    let alive = |c: &mut MasterCore, when| {
        c.ping(OWNER_A, when);
        c.ping(OWNER_B, when);
    };
    alive(&mut c, at(300));
    c.tick(at(301));
    assert_eq!(c.query_task(id).unwrap().message, "processing timeout");
    assert_eq!(
        c.allocated(),
        used,
        "the late executor may still write there"
    );
    alive(&mut c, at(901));
    c.tick(at(902));
    assert!(c.allocated() < used);
    c.check_invariants().unwrap();
}

#[test]
fn crafted_segment_sizes_are_refused_not_overflowed() {
    let (mut c, t) = two_owners();
    let huge = |id, name: &str| Segment {
        base: 0,
        size: u64::MAX / 2,
        ..seg(id, name)
    };
    assert_eq!(c.mount_segment(ClientId(30), huge(3, "c:3"), t), Ok(()));
    assert_eq!(
        c.mount_segment(ClientId(31), huge(4, "d:4"), t),
        Err(ErrorCode::InvalidParams),
        "the pool's capacity would overflow"
    );
    let wraps = Segment {
        base: u64::MAX - 10,
        size: 100,
        ..seg(5, "e:5")
    };
    assert_eq!(
        c.mount_segment(ClientId(32), wraps, t),
        Err(ErrorCode::InvalidParams)
    );
    c.check_invariants().unwrap();
}

/// Anything a client can put in a request, unbounded.
#[derive(Debug, Clone)]
enum Hostile {
    Put(String, u64, ReplicateConfig, bool),
    Clear(Vec<String>, String),
    Copy(String, Vec<String>),
    Move(String, String, String),
    Fetch(u128),
    Finish(u128, u128, bool),
    Drain(Vec<String>, Vec<String>, u64),
    Mount(u128, u64, u64),
    Regex(String),
    Tick(u64),
}

fn name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("a:1".to_owned()),
        Just("b:2".to_owned()),
        Just(String::new()),
        "[a-z:0-9]{0,8}",
        ".{0,64}",
    ]
}

fn hostile() -> impl proptest::strategy::Strategy<Value = Hostile> {
    use proptest::prelude::*;
    let config = (
        any::<usize>(),
        0u8..3,
        proptest::collection::vec(name(), 0..4),
        proptest::collection::vec(name(), 0..3),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(
            |(replica_num, pin, preferred_segments, excluded_segments, ttl, same)| {
                ReplicateConfig {
                    replica_num,
                    pin: [Pin::None, Pin::Soft, Pin::Hard][pin as usize],
                    preferred_segments,
                    prefer_alloc_in_same_node: same,
                    excluded_segments,
                    soft_pin_ttl_ms: ttl,
                    checksum: None,
                }
            },
        );
    let size = prop_oneof![any::<u64>(), 0u64..(1 << 20), Just(u64::MAX)];
    prop_oneof![
        (".{0,5000}", size.clone(), config, any::<bool>())
            .prop_map(|(k, n, c, up)| Hostile::Put(k, n, c, up)),
        (proptest::collection::vec(name(), 0..6), name()).prop_map(|(k, s)| Hostile::Clear(k, s)),
        (name(), proptest::collection::vec(name(), 0..4)).prop_map(|(k, t)| Hostile::Copy(k, t)),
        (name(), name(), name()).prop_map(|(k, s, t)| Hostile::Move(k, s, t)),
        any::<u128>().prop_map(Hostile::Fetch),
        (any::<u128>(), any::<u128>(), any::<bool>())
            .prop_map(|(c, t, ok)| Hostile::Finish(c, t, ok)),
        (
            proptest::collection::vec(name(), 0..4),
            proptest::collection::vec(name(), 0..3),
            any::<u64>()
        )
            .prop_map(|(s, t, n)| Hostile::Drain(s, t, n)),
        (any::<u128>(), any::<u64>(), size).prop_map(|(id, base, n)| Hostile::Mount(id, base, n)),
        ".{0,40}".prop_map(Hostile::Regex),
        (0u64..700).prop_map(Hostile::Tick),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// A crafted request gets an error, never a panic, and the master stays consistent.
    #[test]
    fn hostile_requests_never_panic_the_core(
        steps in proptest::collection::vec(hostile(), 1..40)
    ) {
        let (mut c, mut now) = two_owners();
        let keys: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
        for k in &keys {
            put_on(&mut c, k, "a:1", now);
        }
        let mut wall = 1_000;
        for s in steps {
            wall += 1;
            match s {
                Hostile::Put(k, n, cfg, up) => {
                    let k = if k.len() % 3 == 0 { keys[k.len() % 4].clone() } else { k };
                    let r = if up {
                        c.upsert_start(WRITER, &k, n % (8 * MIB + 1), &cfg, now)
                    } else {
                        c.put_start(WRITER, &k, n, &cfg, now)
                    };
                    if r.is_ok() {
                        let _ = c.put_end(WRITER, &k, now);
                    }
                }
                Hostile::Clear(k, s) => {
                    let _ = c.batch_replica_clear(WRITER, &k, &s, now);
                }
                Hostile::Copy(k, t) => {
                    let _ = c.create_copy_task(&k, &t, now, wall);
                    let _ = c.create_copy_task(&keys[wall as usize % 4], &t, now, wall);
                }
                Hostile::Move(k, s, t) => {
                    let _ = c.create_move_task(&k, &s, &t, now, wall);
                    let _ = c.create_move_task(&keys[wall as usize % 4], "a:1", &t, now, wall);
                }
                Hostile::Fetch(client) => {
                    let _ = c.fetch_tasks(ClientId(client), now, wall);
                    let _ = c.fetch_tasks(OWNER_A, now, wall);
                }
                Hostile::Finish(client, task, ok) => {
                    let _ = c.finish_task(ClientId(client), mooncake_store::TaskId(task), ok, "x", now, wall);
                    for t in c.fetch_tasks(OWNER_A, now, wall) {
                        let _ = c.finish_task(OWNER_A, t.id, ok, "", now, wall);
                    }
                }
                Hostile::Drain(s, t, n) => {
                    let _ = c.create_drain_job(&s, &t, n, wall);
                    c.process_drain_jobs(now, wall);
                }
                Hostile::Mount(id, base, n) => {
                    let seg = Segment { base, size: n, ..seg((id % 8) + 3, "m:3") };
                    let _ = c.mount_segment(ClientId(id), seg, now);
                }
                Hostile::Regex(p) => {
                    let _ = c.remove_by_regex(&p, false, now);
                }
                Hostile::Tick(s) => {
                    now += Duration::from_secs(s);
                    c.ping(OWNER_A, now);
                    c.ping(OWNER_B, now);
                    c.tick(now);
                }
            }
            proptest::prop_assert!(c.check_invariants().is_ok(), "{:?}", c.check_invariants());
        }
    }
}
