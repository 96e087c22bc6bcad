//! The leader's replication with a real standby over TCP (and over a Unix socket, on the
//! same host): a call answers only once the in-sync standby has the change; a standby that stops acknowledging costs one timeout,
//! then is dropped; the followed state restores into an identical master.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_store::{ClientId, MasterApi, ReplicateConfig, Segment, SegmentId};
use mooncake_transfer_engine::conn::{Conn, Sock};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use super::follower::follow;
use super::wire::{self, ToLeader, ToStandby};
use super::{HaStatus, Replicator};
use crate::{DurableState, Master, MasterConfig};

fn segment() -> Segment {
    Segment {
        id: SegmentId(7),
        name: "127.0.0.1:17000".into(),
        base: 0x1000_0000,
        size: 64 << 20,
        te_endpoint: "127.0.0.1:17000".into(),
        protocol: "tcp".into(),
        host_id: "127.0.0.1".into(),
        durable: false,
    }
}

async fn put(master: &Master, client: ClientId, key: &str) {
    let config = ReplicateConfig::default();
    master.put_start(client, key, 4096, &config).await.unwrap();
    master.put_end(client, key).await.unwrap();
}

async fn leader(timeout: Duration, sync: bool) -> (Arc<Master>, Arc<Replicator>, String) {
    let repl = Arc::new(Replicator::new(timeout, sync));
    let master = Master::promote(
        MasterConfig::default(),
        DurableState::default(),
        Duration::from_secs(60),
        repl.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (m, r) = (master.clone(), repl.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let conn = Conn::tcp(s).unwrap();
            tokio::spawn(
                r.clone()
                    .serve(m.clone(), conn, "test".into(), "leader:1".into()),
            );
        }
    });
    (master, repl, addr)
}

/// A real standby following the leader at `addr` (term 5) in a task, once the leader counts
/// it in sync: its status, and the task, which returns the state it followed when the
/// stream ends.
async fn standby_in_sync(
    addr: String,
    repl: &Replicator,
) -> (Arc<HaStatus>, tokio::task::JoinHandle<DurableState>) {
    let status = Arc::new(HaStatus::default());
    let st = status.clone();
    let standby = tokio::spawn(async move {
        let mut state = DurableState::default();
        let mut position = super::Position::default();
        follow(
            &addr,
            "standby",
            5,
            &mut state,
            &mut position,
            &st,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(position.term, 5);
        state
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while repl.followers().iter().all(|f| !f.in_sync) {
        assert!(Instant::now() < deadline, "the standby never got in sync");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (status, standby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_is_already_at_the_in_sync_standby() {
    let (master, repl, addr) = leader(Duration::from_secs(5), true).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    put(&master, client, "before").await;
    let (status, standby) = standby_in_sync(addr, &repl).await;
    for i in 0..50 {
        put(&master, client, &format!("k{i}")).await;
        // Answered: the standby has applied it.
        assert_eq!(status.standby_objects.load(Ordering::Acquire), i + 2);
    }
    master.remove("k0", false).await.unwrap();
    assert_eq!(status.standby_objects.load(Ordering::Acquire), 50);
    assert_eq!(repl.lag().0, 0);
    // The term ends: the standby's stream closes and it keeps the whole state.
    repl.close();
    let state = standby.await.unwrap();
    assert!(status.synced.load(Ordering::Acquire));
    assert_eq!((state.object_count(), state.segment_count()), (50, 1));
    // Restored as a new leader would restore it: the same objects at the same offsets.
    let next = Master::promote(
        MasterConfig::default(),
        state,
        Duration::from_secs(60),
        Arc::new(Replicator::new(Duration::from_secs(1), true)),
    );
    let mut keys = next.keys();
    keys.sort();
    let mut want = master.keys();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(next.query_key("k7"), master.query_key("k7"));
}

/// A standby that acknowledges the snapshot, then nothing; returns once it is in sync
/// and the reader of its stream.
async fn mute_standby(addr: &str, repl: &Replicator) -> BufReader<tokio::net::tcp::OwnedReadHalf> {
    let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
    join_then_mute(rd, wr, ToLeader::hello("mute"), repl).await
}

/// Says `hello` on `wr`, acknowledges the snapshot read from `rd`, waits until the leader
/// counts this standby in sync, then reads nothing more; returns the reader.
async fn join_then_mute<R, W>(rd: R, mut wr: W, hello: ToLeader, repl: &Replicator) -> BufReader<R>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let ToLeader::Hello { name, .. } = &hello else {
        panic!("not a hello: {hello:?}");
    };
    let name = name.clone();
    let mut rd = BufReader::new(rd);
    wire::send(&mut wr, &hello).await.unwrap();
    loop {
        if let ToStandby::SnapshotEnd { seq } =
            wire::recv::<_, ToStandby>(&mut rd).await.unwrap().unwrap()
        {
            wire::send(&mut wr, &ToLeader::Ack { seq }).await.unwrap();
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !repl.followers().iter().any(|f| f.in_sync && f.name == name) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Keep the write half open: a closed one ends the stream.
    std::mem::forget(wr);
    rd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_stops_acknowledging_costs_one_timeout_then_is_dropped() {
    let timeout = Duration::from_millis(300);
    let (master, repl, addr) = leader(timeout, true).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let mut rd = mute_standby(&addr, &repl).await;
    let t = Instant::now();
    put(&master, client, "a").await;
    let first = t.elapsed();
    assert!(first >= timeout, "{first:?}");
    // Counted for `master_replication_waits_total` and `..._wait_seconds_total`.
    let (waits, waited) = repl.waits();
    assert!(
        waits >= 1 && waited >= timeout.as_secs_f64(),
        "{waits} {waited}"
    );
    assert!(
        repl.followers().is_empty(),
        "the mute standby was not dropped"
    );
    let t = Instant::now();
    put(&master, client, "b").await;
    assert!(t.elapsed() < timeout, "{:?}", t.elapsed());
    // Its connection was closed: it must join again.
    let mut closed = false;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_secs(2), wire::recv::<_, ToStandby>(&mut rd))
            .await
        {
            Ok(Ok(Some(_))) => continue,
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed);
}

/// Asynchronous replication: calls answer without the standby, except an allocation
/// after a free the standby has not acknowledged (it could hand out a range a new leader
/// would still think holds the old object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sync_only_an_allocation_after_an_unacknowledged_free_waits() {
    let timeout = Duration::from_millis(300);
    let (master, repl, addr) = leader(timeout, false).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let _rd = mute_standby(&addr, &repl).await;
    // A new master allocates nothing at first (`master/gate.rs`): not what is timed here.
    tokio::time::sleep(crate::master::gate::ALLOCATION_GATE).await;
    let t = Instant::now();
    for i in 0..20 {
        put(&master, client, &format!("k{i}")).await;
    }
    master.remove("k0", false).await.unwrap();
    assert!(t.elapsed() < timeout, "{:?}", t.elapsed());
    assert_eq!(repl.followers().len(), 1);
    let t = Instant::now();
    put(&master, client, "after-free").await;
    assert!(t.elapsed() >= timeout, "{:?}", t.elapsed());
    assert!(repl.followers().is_empty());
}

/// A standby that stops reading fills its socket: the calls queue what it does not take
/// (asynchronous replication, so nobody waits), its task writes the queue once it reads
/// again, and every batch arrives once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_reads_late_gets_every_batch_in_order() {
    let (master, repl, addr) = leader(Duration::from_secs(5), false).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let mut rd = mute_standby(&addr, &repl).await;
    let config = ReplicateConfig::default();
    let n = 20_000u64;
    for i in 0..n {
        let key = format!("key-{i:06}-{}", "x".repeat(200));
        master.put_start(client, &key, 64, &config).await.unwrap();
        master.put_end(client, &key).await.unwrap();
    }
    assert!(
        repl.links.lock().iter().any(|l| l.is_draining()),
        "the standby's socket never filled"
    );
    let mut next = None;
    let mut batches = 0;
    while batches < n {
        let msg =
            tokio::time::timeout(Duration::from_secs(10), wire::recv::<_, ToStandby>(&mut rd))
                .await
                .expect("the stream stalled")
                .unwrap()
                .expect("the stream ended");
        if let ToStandby::Batch { seq, changes } = msg {
            if let Some(want) = next {
                assert_eq!(seq, want);
            }
            assert_eq!(changes.len(), 1);
            next = Some(seq + 1);
            batches += 1;
        }
    }
    assert_eq!(repl.followers().len(), 1);
}

/// A standby on this host, over a Unix socket pair, that acknowledges its snapshot and
/// then reads nothing: returns the reader of its stream once the leader counts it in sync.
async fn mute_local_standby(
    master: &Arc<Master>,
    repl: &Arc<Replicator>,
) -> BufReader<tokio::net::unix::OwnedReadHalf> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let conn = Conn::from(Sock::unix(theirs).unwrap());
    assert!(conn.is_local());
    tokio::spawn(
        repl.clone()
            .serve(master.clone(), conn, "local".into(), "leader:1".into()),
    );
    ours.set_nonblocking(true).unwrap();
    let (rd, wr) = tokio::net::UnixStream::from_std(ours).unwrap().into_split();
    join_then_mute(rd, wr, ToLeader::hello("mute-local"), repl).await
}

/// Synchronous replication to a standby on this host: a batch written whole into its
/// socket is held (it sits in the standby's receive queue, which outlives the leader), so
/// calls answer without waiting for the standby to run, and every answered change is in
/// the standby's stream, in order, ahead of the end of the term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_host_standby_holds_what_is_in_its_socket() {
    let timeout = Duration::from_secs(5);
    let (master, repl, _) = leader(timeout, true).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let mut rd = mute_local_standby(&master, &repl).await;
    tokio::time::sleep(crate::master::gate::ALLOCATION_GATE).await;
    let t = Instant::now();
    for i in 0..50 {
        put(&master, client, &format!("k{i}")).await;
    }
    // Over TCP the first of these waits the whole timeout, then drops the standby.
    assert!(t.elapsed() < timeout / 5, "{:?}", t.elapsed());
    assert_eq!(repl.waits().0, 0, "a call waited for the same-host standby");
    let followers = repl.followers();
    assert!(followers.len() == 1 && followers[0].in_sync);
    assert!(
        repl.lag().0 > 0,
        "the standby applied nothing: its lag must show"
    );
    repl.close();
    let mut objects = Vec::new();
    loop {
        match wire::recv::<_, ToStandby>(&mut rd).await.unwrap() {
            Some(ToStandby::Batch { changes, .. }) => {
                for c in changes {
                    if let crate::Change::Object(o) = c {
                        objects.push(o.key);
                    }
                }
            }
            Some(ToStandby::Bye { .. }) | None => break,
            Some(_) => {}
        }
    }
    let want: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    assert_eq!(objects, want);
}

/// A same-host standby that stops reading is held to its own acknowledgements once
/// batches waited a whole replication timeout for one: the next write waits that timeout,
/// then drops it, as over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_host_standby_that_stops_reading_is_dropped_after_one_timeout() {
    let timeout = Duration::from_millis(300);
    let (master, repl, _) = leader(timeout, true).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let _rd = mute_local_standby(&master, &repl).await;
    // A new master allocates nothing at first (`master/gate.rs`): not what is timed here.
    tokio::time::sleep(crate::master::gate::ALLOCATION_GATE).await;
    let t = Instant::now();
    put(&master, client, "a").await;
    assert!(t.elapsed() < timeout, "{:?}", t.elapsed());
    tokio::time::sleep(timeout + Duration::from_millis(50)).await;
    let t = Instant::now();
    put(&master, client, "b").await;
    assert!(t.elapsed() >= timeout, "{:?}", t.elapsed());
    assert!(repl.followers().is_empty(), "the silent standby was kept");
}

/// A standby following a leader on this host (over the leader's local socket) reads on a
/// timer rather than for each batch: it applies every answered change within milliseconds
/// and ends the term with the whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_host_standby_catches_up_within_milliseconds() {
    let (master, repl, addr) = leader(Duration::from_secs(5), true).await;
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let local = wire::local_listener(port).expect("a local replication socket");
    let (m, r) = (master.clone(), repl.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = local.accept().await {
            let conn = Conn::unix(s).unwrap();
            tokio::spawn(
                r.clone()
                    .serve(m.clone(), conn, "local".into(), "leader:1".into()),
            );
        }
    });
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let (status, standby) = standby_in_sync(addr, &repl).await;
    for i in 0..50 {
        put(&master, client, &format!("k{i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while status.standby_objects.load(Ordering::Acquire) < 50 {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    repl.close();
    let state = standby.await.unwrap();
    assert_eq!((state.object_count(), state.segment_count()), (50, 1));
}

/// A leader with a standby of the previous release (JSON only) and one of this release:
/// each gets the snapshot and every batch, whole and in order, in the encoding it reads
/// (so either side of a rolling upgrade can be first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_standby_gets_the_encoding_it_reads() {
    let (master, repl, addr) = leader(Duration::from_secs(5), false).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    put(&master, client, "before").await;
    let mut streams = Vec::new();
    for (name, binary) in [("old", 0), ("new", crate::binary::VERSION)] {
        let hello = ToLeader::Hello {
            format_major: crate::state::format::FORMAT_MAJOR,
            format_minor: 0,
            name: name.into(),
            binary,
        };
        let (rd, wr) = TcpStream::connect(&addr).await.unwrap().into_split();
        streams.push((binary, join_then_mute(rd, wr, hello, &repl).await));
    }
    for i in 0..100 {
        put(&master, client, &format!("k{i}")).await;
    }
    repl.close();
    for (binary, mut rd) in streams {
        let (mut keys, mut first_bytes) = (Vec::new(), std::collections::BTreeSet::new());
        while let Some(body) = wire::recv_body(&mut rd).await.unwrap() {
            let msg = <ToStandby as wire::Message>::decode(&body).unwrap();
            if let ToStandby::Batch { changes, .. } = msg {
                first_bytes.insert(body[0]);
                for c in changes {
                    if let crate::Change::Object(o) = c {
                        keys.push(o.key);
                    }
                }
            }
        }
        let want: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        assert_eq!(keys, want, "binary {binary}");
        let json_only = std::collections::BTreeSet::from([b'{']);
        let binary_only = std::collections::BTreeSet::from([crate::binary::MAGIC]);
        assert_eq!(
            first_bytes,
            if binary == 0 { json_only } else { binary_only }
        );
    }
}

/// A call that touches more keys than one frame carries (`wire::BATCH_PART`, 100 in
/// tests): the leader sends its changes in parts and the standby applies them together,
/// in sync, before the call answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_more_changes_than_a_frame_carries_reaches_the_standby_whole() {
    let (master, repl, addr) = leader(Duration::from_secs(5), true).await;
    let client = ClientId(1);
    master.mount_segment(client, segment()).await.unwrap();
    let (status, standby) = standby_in_sync(addr, &repl).await;
    for i in 0..250 {
        put(&master, client, &format!("k{i}")).await;
    }
    assert_eq!(status.standby_objects.load(Ordering::Acquire), 250);
    let applied = status.applied.load(Ordering::Acquire);
    // One call, 250 erases: two parts and the batch that ends them.
    assert_eq!(master.remove_all(true).await.unwrap(), 250);
    assert_eq!(status.standby_objects.load(Ordering::Acquire), 0);
    assert_eq!(status.applied.load(Ordering::Acquire), applied + 1);
    put(&master, client, "after").await;
    repl.close();
    let state = standby.await.unwrap();
    assert_eq!(state.object_count(), 1);
}
