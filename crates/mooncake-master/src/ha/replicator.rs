//! The leader's side of replication: standbys join with a snapshot taken under the core's
//! lock (so no change falls between the snapshot and the stream), then receive every
//! call's changes in the core's order. A call answers once every in-sync standby has
//! acknowledged everything it saw; a standby that does not acknowledge within the
//! replication timeout is dropped from the set (and must join again), so a dead standby
//! stalls writes for at most one timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use super::wire::{self, ToLeader, ToStandby, HEARTBEAT};
use crate::{Change, Master};

/// Changes per snapshot frame.
const SNAPSHOT_CHUNK: usize = 1024;
/// Batches a standby's stream may hold unsent before the standby is dropped (one still
/// taking its snapshot, or trailing with asynchronous replication): the leader's memory
/// stays bounded.
const MAX_QUEUED: usize = 65_536;

/// What a standby's stream carries after the snapshot.
#[derive(Debug, Clone)]
enum Item {
    /// One call's changes (shared by every standby's stream).
    Batch(Arc<(u64, Vec<Change>)>),
    /// The leader now counts this standby in sync (it waits for its acknowledgements).
    InSync(u64),
}

/// The standbys of one leader term.
#[derive(Debug)]
pub(crate) struct Replicator {
    followers: Mutex<Vec<Follower>>,
    /// The last batch queued (bumped under the core's lock, so in the core's order).
    seq: AtomicU64,
    /// The last batch that freed space (or was queued when space was freed).
    last_free: AtomicU64,
    /// Calls wait for the standbys' acknowledgement of their own changes.
    sync: bool,
    /// Every in-sync standby has acknowledged every batch up to this (`u64::MAX`: none is
    /// in sync, nobody to wait for).
    floor: AtomicU64,
    wake: (Mutex<()>, Condvar),
    timeout: Duration,
    next_id: AtomicU64,
    /// When batches not yet acknowledged by everyone were queued (the lag in seconds).
    pending: Mutex<VecDeque<(u64, Instant)>>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Follower {
    id: u64,
    name: String,
    tx: mpsc::UnboundedSender<Item>,
    acked: u64,
    /// Joined at this batch; in sync once it acknowledged it.
    joined_at: u64,
    in_sync: bool,
    kick: Arc<Notify>,
    /// Set before `kick` when it is dropped for lagging.
    dropped: Arc<AtomicBool>,
    /// Items queued on `tx` and not yet taken by its writer.
    queued: Arc<AtomicUsize>,
}

/// A standby as `/ha_status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FollowerView {
    pub(crate) name: String,
    pub(crate) acked: u64,
    pub(crate) in_sync: bool,
}

impl Replicator {
    /// `sync`: a call answers once the in-sync standbys have its changes (else only
    /// allocations wait, for earlier frees).
    pub(crate) fn new(timeout: Duration, sync: bool) -> Self {
        Self {
            followers: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            last_free: AtomicU64::new(0),
            sync,
            floor: AtomicU64::new(u64::MAX),
            wake: (Mutex::new(()), Condvar::new()),
            timeout,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues one call's changes for every standby: the sequence number the caller must
    /// see acknowledged before it answers (see [`crate::master::must_wait_for`]; its own
    /// batch only with synchronous replication). Called under the core's lock.
    pub(crate) fn record(&self, batch: Vec<Change>, space: crate::SpaceUse) -> Option<u64> {
        let own = (!batch.is_empty()).then(|| self.send(batch));
        let last = self.seq.load(Ordering::Acquire);
        crate::master::must_wait_for(own, last, space, &self.last_free, self.sync)
    }

    fn send(&self, batch: Vec<Change>) -> u64 {
        let followers = self.followers.lock();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        if followers.is_empty() {
            return seq;
        }
        let item = Arc::new((seq, batch));
        let mut overflow = false;
        for f in followers.iter() {
            if f.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
                overflow = true;
            }
            let _ = f.tx.send(Item::Batch(item.clone()));
        }
        let mut followers = followers;
        if overflow {
            followers.retain(|f| {
                let keep = f.queued.load(Ordering::Acquire) < MAX_QUEUED;
                if !keep {
                    f.dropped.store(true, Ordering::Release);
                    f.kick.notify_one();
                    tracing::warn!(standby = %f.name, queued = MAX_QUEUED, "a standby fell too far behind; dropped (it will resync)");
                }
                keep
            });
            self.refresh(&followers);
        }
        if followers.iter().any(|f| f.in_sync) {
            self.pending.lock().push_back((seq, Instant::now()));
        }
        seq
    }

    /// The last batch queued.
    pub(crate) fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether every in-sync standby has acknowledged `seq`.
    pub(crate) fn is_acked(&self, seq: u64) -> bool {
        self.floor.load(Ordering::Acquire) >= seq
    }

    /// Waits until every in-sync standby has acknowledged `seq`; standbys that have not
    /// within the timeout are dropped from the set.
    pub(crate) fn wait_acked(&self, seq: u64) {
        let deadline = Instant::now() + self.timeout;
        let mut g = self.wake.0.lock();
        while !self.is_acked(seq) {
            if self.wake.1.wait_until(&mut g, deadline).timed_out() && !self.is_acked(seq) {
                drop(g);
                self.drop_laggards(seq);
                return;
            }
        }
    }

    fn drop_laggards(&self, seq: u64) {
        let mut followers = self.followers.lock();
        followers.retain(|f| {
            let late = f.in_sync && f.acked < seq;
            if late {
                f.dropped.store(true, Ordering::Release);
                tracing::warn!(standby = %f.name, acked = f.acked, waited_for = seq, timeout = ?self.timeout,
                    "a standby did not acknowledge in time; dropped from the in-sync set (it will resync)");
                f.kick.notify_one();
            }
            !late
        });
        self.refresh(&followers);
    }

    /// Recomputes the floor from `followers` and wakes the waiters.
    fn refresh(&self, followers: &[Follower]) {
        let floor = followers
            .iter()
            .filter(|f| f.in_sync)
            .map(|f| f.acked)
            .min()
            .unwrap_or(u64::MAX);
        self.floor.store(floor, Ordering::Release);
        {
            let mut pending = self.pending.lock();
            while pending.front().is_some_and(|(s, _)| *s <= floor) {
                pending.pop_front();
            }
        }
        let _g = self.wake.0.lock();
        self.wake.1.notify_all();
    }

    fn ack(&self, id: u64, seq: u64) {
        let mut followers = self.followers.lock();
        if let Some(f) = followers.iter_mut().find(|f| f.id == id) {
            f.acked = f.acked.max(seq);
            if !f.in_sync && f.acked >= f.joined_at {
                f.in_sync = true;
                // Told only now: until the leader waits for it, batches it has not applied
                // may have been answered with the other standbys' acknowledgements.
                f.queued.fetch_add(1, Ordering::AcqRel);
                let _ = f.tx.send(Item::InSync(f.acked));
                tracing::info!(standby = %f.name, seq, "standby in sync");
            }
        }
        self.refresh(&followers);
    }

    fn remove(&self, id: u64) {
        let mut followers = self.followers.lock();
        followers.retain(|f| f.id != id);
        self.refresh(&followers);
    }

    /// Ends the term: every standby is let go and nobody is waited for any more.
    pub(crate) fn close(&self) {
        let mut followers = self.followers.lock();
        // Under the followers' lock: a join registering now sees it.
        self.closed.store(true, Ordering::Release);
        for f in followers.iter() {
            f.kick.notify_one();
        }
        followers.clear();
        self.refresh(&followers);
    }

    /// Batches and seconds the slowest in-sync standby is behind (zero without one).
    pub(crate) fn lag(&self) -> (u64, f64) {
        let floor = self.floor.load(Ordering::Acquire);
        if floor == u64::MAX {
            return (0, 0.0);
        }
        let entries = self.seq.load(Ordering::Acquire).saturating_sub(floor);
        let seconds = self
            .pending
            .lock()
            .front()
            .map_or(0.0, |(_, t)| t.elapsed().as_secs_f64());
        (entries, seconds)
    }

    pub(crate) fn followers(&self) -> Vec<FollowerView> {
        self.followers
            .lock()
            .iter()
            .map(|f| FollowerView {
                name: f.name.clone(),
                acked: f.acked,
                in_sync: f.in_sync,
            })
            .collect()
    }

    /// Registers a standby: its snapshot, the batch it covers, its stream and its kick.
    fn join(&self, master: &Master, name: &str) -> Option<Joined> {
        let core = master.raw_core().lock();
        let snapshot = core.snapshot();
        let mut followers = self.followers.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let seq = self.seq.load(Ordering::Acquire);
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        let dropped = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        followers.push(Follower {
            queued: queued.clone(),
            id,
            name: name.to_owned(),
            tx,
            acked: 0,
            joined_at: seq,
            in_sync: false,
            kick: kick.clone(),
            dropped: dropped.clone(),
        });
        drop(followers);
        drop(core);
        Some(Joined {
            id,
            snapshot,
            seq,
            rx,
            kick,
            dropped,
            queued,
        })
    }

    /// Serves one standby's connection until it ends, the standby is dropped or the term
    /// ends.
    pub(crate) async fn serve(
        self: Arc<Self>,
        master: Arc<Master>,
        stream: TcpStream,
        leader: String,
    ) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        if let Err(e) = self.serve_inner(master, stream, &leader, &peer).await {
            tracing::info!(standby = %peer, error = %e, "replication stream ended");
        }
    }

    async fn serve_inner(
        self: &Arc<Self>,
        master: Arc<Master>,
        stream: TcpStream,
        leader: &str,
        peer: &str,
    ) -> std::io::Result<()> {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let hello = tokio::time::timeout(Duration::from_secs(5), wire::recv(&mut rd))
            .await
            .map_err(|_| std::io::Error::other("no hello within 5 s"))??;
        let name = match hello {
            Some(ToLeader::Hello {
                format_major, name, ..
            }) => {
                if format_major < crate::state::format::FORMAT_MAJOR {
                    tracing::warn!(standby = %name, format_major, "a standby of an older state format cannot follow this leader; upgrade it");
                    return Ok(());
                }
                name
            }
            _ => return Err(std::io::Error::other("the standby did not say hello")),
        };
        let mut buf = Vec::new();
        wire::put(&ToStandby::hello(leader), &mut buf);
        wr.write_all(&buf).await?;
        // The snapshot copies the whole state under the core's lock: not on a reactor thread.
        let joined = {
            let (me, name) = (self.clone(), name.clone());
            tokio::task::spawn_blocking(move || me.join(&master, &name))
                .await
                .ok()
                .flatten()
        };
        let Some(joined) = joined else {
            return Ok(());
        };
        tracing::info!(standby = %name, %peer, records = joined.snapshot.len(), seq = joined.seq, "standby joined; sending the snapshot");
        let id = joined.id;
        let result = self.stream(joined, rd, &mut wr).await;
        self.remove(id);
        result
    }

    async fn stream(
        self: &Arc<Self>,
        joined: Joined,
        mut rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let Joined {
            id,
            snapshot,
            seq,
            mut rx,
            kick,
            dropped,
            queued,
        } = joined;
        // A standby that stops reading must not hold this task (and the snapshot) forever.
        let write_timeout = (self.timeout * 5).max(Duration::from_secs(5));
        let mut buf = Vec::new();
        for chunk in snapshot.chunks(SNAPSHOT_CHUNK) {
            wire::put(&SnapshotRef::Snapshot(chunk), &mut buf);
            if buf.len() > 1 << 20 {
                tokio::time::timeout(write_timeout, wr.write_all(&buf))
                    .await
                    .map_err(|_| {
                        std::io::Error::other("the standby stopped reading its snapshot")
                    })??;
                buf.clear();
            }
        }
        drop(snapshot);
        wire::put(&ToStandby::SnapshotEnd { seq }, &mut buf);
        wr.write_all(&buf).await?;
        let me = self.clone();
        let mut acks = tokio::spawn(async move {
            loop {
                match wire::recv::<_, ToLeader>(&mut rd).await {
                    Ok(Some(ToLeader::Ack { seq })) => me.ack(id, seq),
                    Ok(Some(ToLeader::Hello { .. })) => {}
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let result = loop {
            buf.clear();
            tokio::select! {
                biased;
                () = kick.notified() => {
                    buf.clear();
                    wire::put(&ToStandby::Bye { resync: dropped.load(Ordering::Acquire) }, &mut buf);
                    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&buf)).await;
                    break Ok(());
                }
                item = rx.recv() => {
                    let Some(item) = item else { break Ok(()) };
                    let mut n = 1;
                    put_item(&item, &mut buf);
                    while let Ok(item) = rx.try_recv() {
                        put_item(&item, &mut buf);
                        n += 1;
                    }
                    queued.fetch_sub(n, Ordering::AcqRel);
                }
                _ = heartbeat.tick() => {
                    wire::put(&ToStandby::Heartbeat { seq: self.seq.load(Ordering::Acquire) }, &mut buf);
                }
                done = &mut acks => {
                    break match done {
                        Ok(r) => r,
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                }
            }
            match tokio::time::timeout(write_timeout, wr.write_all(&buf)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(_) => {
                    break Err(std::io::Error::other(format!(
                        "the standby read nothing for {write_timeout:?}"
                    )))
                }
            }
        };
        acks.abort();
        result
    }
}

fn put_item(item: &Item, buf: &mut Vec<u8>) {
    match item {
        Item::Batch(b) => wire::put(
            &SnapshotRef::Batch {
                seq: b.0,
                changes: &b.1,
            },
            buf,
        ),
        Item::InSync(seq) => wire::put(&ToStandby::InSync { seq: *seq }, buf),
    }
}

/// A standby just registered: its snapshot, the batch it covers, its stream, and how it
/// is told to stop (and whether for lagging).
struct Joined {
    id: u64,
    snapshot: Vec<Change>,
    seq: u64,
    rx: mpsc::UnboundedReceiver<Item>,
    kick: Arc<Notify>,
    dropped: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
}

/// The borrowed forms of [`ToStandby`]'s large messages (serialized identically).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum SnapshotRef<'a> {
    Snapshot(&'a [Change]),
    Batch { seq: u64, changes: &'a [Change] },
}
