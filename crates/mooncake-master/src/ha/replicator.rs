//! The leader's side of replication: standbys join with a snapshot taken under the core's
//! lock (so no change falls between the snapshot and the stream), then receive every
//! call's changes in the core's order. A call answers once every in-sync standby has
//! acknowledged everything it saw; a standby that does not acknowledge within the
//! replication timeout is dropped from the set (and must join again), so a dead standby
//! stalls writes for at most one timeout.
//!
//! The write path has no task hop: a call's changes are queued under the core's lock, and
//! the call itself writes every queued batch to the standbys' sockets right after it
//! releases the lock (non-blocking writes; whoever writes takes the batches of every call
//! queued meanwhile, a group commit). A call that must wait reads the standbys'
//! acknowledgements itself: it polls their sockets for a short while (waking a sleeping
//! thread costs tens of microseconds on a virtual machine), then sleeps until one is
//! readable. Each standby's task (`link.rs`) only sends the snapshot, writes what a full
//! socket left over, heartbeats, and reads the acknowledgements that no call waits for.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use super::link::{Link, LinkState, Poller};
use super::wire::ToStandby;
use crate::Change;

/// Batches delivered to a same-host standby wait this long for its acknowledgement
/// before the writers read its socket for one (it reads and acknowledges about every
/// millisecond, see `follower.rs`).
const ACK_READ_AFTER: Duration = Duration::from_millis(2);

/// Batches a standby's stream may hold unsent before the standby is dropped (one still
/// taking its snapshot, or one that stopped reading): the leader's memory stays bounded.
pub(super) const MAX_QUEUED: usize = 65_536;

/// The standbys of one leader term.
#[derive(Debug)]
pub(crate) struct Replicator {
    /// Registered standbys and what they acknowledged (the floor's inputs).
    followers: Mutex<Vec<Follower>>,
    /// The standbys' streams; held by the one call writing to them.
    pub(super) links: Mutex<Vec<LinkState>>,
    /// Batches queued under the core's lock (so in its order) and not yet written.
    outbox: Mutex<Vec<(u64, Vec<Change>)>>,
    /// The last batch queued.
    seq: AtomicU64,
    /// The last batch that freed space (or was queued when space was freed).
    last_free: AtomicU64,
    /// Calls wait for the standbys' acknowledgement of their own changes.
    pub(super) sync: bool,
    /// Every in-sync standby holds every batch up to this (`u64::MAX`: none is in sync,
    /// nobody to wait for): acknowledged it, or, on this host, has it in its socket
    /// ([`Follower::holds`]).
    floor: AtomicU64,
    /// Every in-sync standby has applied and acknowledged every batch up to this (the
    /// replication lag).
    applied: AtomicU64,
    /// Woken whenever the floor moves (or the set of standbys changes).
    moved: Notify,
    pub(super) timeout: Duration,
    next_id: AtomicU64,
    /// When batches not yet acknowledged by everyone were queued (the lag in seconds).
    pending: Mutex<VecDeque<(u64, Instant)>>,
    pub(super) closed: AtomicBool,
    /// Calls that had to wait for a standby (its batch was not yet held by every in-sync
    /// standby when the call was ready to answer), and their waits in all (µs).
    waits: AtomicU64,
    waited_us: AtomicU64,
}

#[derive(Debug)]
struct Follower {
    link: Arc<Link>,
    acked: u64,
    /// Joined at this batch; in sync once it acknowledged it.
    joined_at: u64,
    in_sync: bool,
    /// A standby on this host (a Unix socket): every batch up to this was written whole
    /// into its socket, so it sits in the standby's receive queue, which outlives this
    /// process (see [`Follower::holds`]).
    delivered: u64,
    /// Since when batches delivered to it wait for its acknowledgement (progress restarts
    /// the clock).
    waiting_since: Option<Instant>,
}

impl Follower {
    /// The last batch this standby is known to hold: what it acknowledged, or, on this
    /// host, what was delivered into its socket. A batch in a same-host standby's receive
    /// queue survives the leader (killed or not, the kernel keeps the queue; the standby
    /// reads it to the end of the stream before it can campaign) exactly as one it has
    /// applied does, and a standby that dies loses both alike. Delivery stops counting
    /// once batches have waited a whole replication `timeout` for the standby's own
    /// acknowledgement: a standby that stopped reading is then waited for, and dropped,
    /// as before. Standbys on other hosts are always waited for (their kernel's TCP
    /// acknowledgement can be delayed by up to 40 ms).
    fn holds(&self, timeout: Duration) -> u64 {
        let stale = self.waiting_since.is_some_and(|t| t.elapsed() >= timeout);
        if stale {
            self.acked
        } else {
            self.acked.max(self.delivered)
        }
    }
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
            links: Mutex::new(Vec::new()),
            outbox: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            last_free: AtomicU64::new(0),
            sync,
            floor: AtomicU64::new(u64::MAX),
            applied: AtomicU64::new(u64::MAX),
            moved: Notify::new(),
            timeout,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            waits: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    /// Queues one call's changes for every standby: the sequence number the caller must
    /// see acknowledged before it answers (see [`crate::master::must_wait_for`]; its own
    /// batch only with synchronous replication). Called under the core's lock; the caller
    /// then writes the queue out with [`Replicator::flush`] once it released the lock.
    pub(crate) fn record(&self, batch: Vec<Change>, space: crate::SpaceUse) -> Option<u64> {
        let own = (!batch.is_empty()).then(|| {
            let mut outbox = self.outbox.lock();
            let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            outbox.push((seq, batch));
            if self.floor.load(Ordering::Acquire) != u64::MAX {
                self.pending.lock().push_back((seq, Instant::now()));
            }
            seq
        });
        let last = self.seq.load(Ordering::Acquire);
        crate::master::must_wait_for(own, last, space, &self.last_free, self.sync)
    }

    /// Writes every queued batch to the standbys (those queued by other calls meanwhile
    /// too). Every batch is encoded once; each standby gets those after its snapshot.
    pub(crate) fn flush(&self) {
        let mut links = self.links.lock();
        let batches = std::mem::take(&mut *self.outbox.lock());
        if batches.is_empty() || links.is_empty() {
            return;
        }
        // Each encoding a standby reads, once: the frames and where each batch ends.
        let encode = |binary: bool| {
            let mut buf = Vec::with_capacity(512 * batches.len());
            let mut ends = Vec::with_capacity(batches.len());
            for (seq, changes) in &batches {
                if binary {
                    super::wire::put_binary_batch(*seq, changes, &mut buf);
                } else {
                    super::wire::put(&BatchRef::Batch { seq: *seq, changes }, &mut buf);
                }
                ends.push(buf.len());
            }
            (buf, ends)
        };
        let mut encoded: [Option<(Vec<u8>, Vec<usize>)>; 2] = [None, None];
        let mut failed = Vec::new();
        let mut delivered = Vec::new();
        let last = batches.last().map_or(0, |(s, _)| *s);
        for l in links.iter_mut() {
            let first = batches.partition_point(|(s, _)| *s <= l.joined_at);
            if first == batches.len() {
                continue;
            }
            let binary = l.link.binary;
            let (buf, ends) = encoded[usize::from(binary)].get_or_insert_with(|| encode(binary));
            let from = first.checked_sub(1).map_or(0, |i| ends[i]);
            match l.send(&buf[from..], batches.len() - first) {
                Ok(true) if l.link.conn.is_local() => delivered.push(l.link.id),
                Ok(_) => {}
                Err(lagging) => failed.push((l.link.clone(), lagging)),
            }
        }
        // Without synchronous replication nobody waits for the acknowledgements: take in
        // those already there now (they move the lag metrics) rather than have each one
        // wake the standby's task.
        let mut ackers: Vec<Arc<Link>> = if self.sync {
            Vec::new()
        } else {
            links.iter().map(|l| l.link.clone()).collect()
        };
        if failed.is_empty() {
            drop(links);
            if !delivered.is_empty() {
                for link in self.delivered(&delivered, last) {
                    if !ackers.iter().any(|a| a.id == link.id) {
                        ackers.push(link);
                    }
                }
            }
            for link in &ackers {
                self.read_acks(link);
            }
            return;
        }
        links.retain(|l| !failed.iter().any(|(f, _)| f.id == l.link.id));
        drop(links);
        delivered.retain(|id| !failed.iter().any(|(f, _)| f.id == *id));
        if !delivered.is_empty() {
            self.delivered(&delivered, last);
        }
        for (link, lagging) in &failed {
            if *lagging {
                tracing::warn!(standby = %link.name, queued = MAX_QUEUED, "a standby fell too far behind; dropped (it will resync)");
            }
            link.drop_it(*lagging);
        }
        self.forget(|f| failed.iter().any(|(l, _)| l.id == f.link.id));
    }

    /// The last batch queued.
    pub(crate) fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether every in-sync standby has acknowledged `seq`.
    pub(crate) fn is_acked(&self, seq: u64) -> bool {
        self.floor.load(Ordering::Acquire) >= seq
    }

    /// Waits until every in-sync standby has acknowledged `seq`, reading their
    /// acknowledgements itself; standbys that have not within the timeout are dropped from
    /// the set.
    pub(crate) async fn wait_acked(&self, seq: u64) {
        if self.is_acked(seq) {
            return;
        }
        let start = Instant::now();
        self.wait_for_acks(seq).await;
        self.waits.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.waited_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Calls that waited for a standby, and their waits in all (seconds).
    pub(crate) fn waits(&self) -> (u64, f64) {
        let us = self.waited_us.load(Ordering::Relaxed);
        (self.waits.load(Ordering::Relaxed), us as f64 / 1e6)
    }

    async fn wait_for_acks(&self, seq: u64) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut poller = Poller::claim();
        loop {
            let short = self.short_of(seq);
            for link in &short {
                self.read_acks(link);
            }
            if self.is_acked(seq) {
                return;
            }
            if poller.keep_polling() {
                continue;
            }
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let short = self.short_of(seq);
            let Some(link) = short.first() else {
                continue;
            };
            let timed_out = tokio::select! {
                () = &mut moved => false,
                r = link.conn.readable_until(Some(deadline)) => {
                    matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::TimedOut)
                }
            };
            if timed_out || tokio::time::Instant::now() >= deadline {
                self.read_acks(link);
                if !self.is_acked(seq) {
                    self.drop_laggards(seq);
                }
                return;
            }
        }
    }

    /// [`Replicator::wait_acked`] from synchronous code (the core's guard outside an RPC).
    pub(crate) fn wait_acked_blocking(&self, seq: u64) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                // Not a nested `h.block_on`: on a thread inside `Runtime::block_on` it would
                // swallow the outer future's wake-ups (`mooncake_transfer_engine::wait`).
                mooncake_transfer_engine::wait::wait_in_place(self.wait_acked(seq));
            }
            _ => {
                // No reactor to sleep on: poll until acknowledged or the timeout.
                let deadline = Instant::now() + self.timeout;
                while !self.is_acked(seq) {
                    if Instant::now() >= deadline {
                        self.drop_laggards(seq);
                        return;
                    }
                    for link in self.short_of(seq) {
                        self.read_acks(&link);
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }

    /// The in-sync standbys that do not hold `seq` ([`Follower::holds`]).
    fn short_of(&self, seq: u64) -> Vec<Arc<Link>> {
        self.followers
            .lock()
            .iter()
            .filter(|f| f.in_sync && f.holds(self.timeout) < seq)
            .map(|f| f.link.clone())
            .collect()
    }

    /// Takes in the acknowledgements `link` has sent, unless someone else is reading
    /// them; a broken stream drops the standby.
    pub(super) fn read_acks(&self, link: &Link) {
        match link.read_acks() {
            Ok(Some(seq)) => self.ack(link, seq),
            Ok(None) => {}
            Err(e) => {
                tracing::info!(standby = %link.name, error = %e, "replication stream ended");
                self.remove(link.id);
            }
        }
    }

    fn drop_laggards(&self, seq: u64) {
        let late: Vec<Arc<Link>> = self.short_of(seq);
        for link in &late {
            tracing::warn!(standby = %link.name, waited_for = seq, timeout = ?self.timeout,
                "a standby did not acknowledge in time; dropped from the in-sync set (it will resync)");
        }
        self.links
            .lock()
            .retain(|l| !late.iter().any(|f| f.id == l.link.id));
        for link in &late {
            link.drop_it(true);
        }
        self.forget(|f| late.iter().any(|l| l.id == f.link.id));
    }

    /// Batches up to `seq` were written whole into the sockets of the same-host standbys
    /// `ids`: they count for the in-sync ones ([`Follower::holds`]). Returns the links
    /// whose acknowledgements are due to be read (batches waited a millisecond for them),
    /// so that a standby's progress keeps its delivery counting.
    fn delivered(&self, ids: &[u64], seq: u64) -> Vec<Arc<Link>> {
        let mut due = Vec::new();
        let mut followers = self.followers.lock();
        for f in followers
            .iter_mut()
            .filter(|f| f.in_sync && ids.contains(&f.link.id))
        {
            f.delivered = f.delivered.max(seq);
            if f.delivered > f.acked {
                let since = *f.waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ACK_READ_AFTER {
                    due.push(f.link.clone());
                }
            }
        }
        self.refresh(&followers);
        due
    }

    /// Removes the followers `gone` matches and wakes the waiters.
    fn forget(&self, gone: impl Fn(&Follower) -> bool) {
        let mut followers = self.followers.lock();
        followers.retain(|f| !gone(f));
        self.refresh(&followers);
    }

    /// Recomputes the floor from `followers` and wakes the waiters.
    fn refresh(&self, followers: &[Follower]) {
        let in_sync = || followers.iter().filter(|f| f.in_sync);
        let floor = in_sync()
            .map(|f| f.holds(self.timeout))
            .min()
            .unwrap_or(u64::MAX);
        let applied = in_sync().map(|f| f.acked).min().unwrap_or(u64::MAX);
        self.floor.store(floor, Ordering::Release);
        self.applied.store(applied, Ordering::Release);
        {
            let mut pending = self.pending.lock();
            while pending.front().is_some_and(|(s, _)| *s <= applied) {
                pending.pop_front();
            }
        }
        self.moved.notify_waiters();
    }

    fn ack(&self, link: &Link, seq: u64) {
        let mut followers = self.followers.lock();
        let Some(f) = followers.iter_mut().find(|f| f.link.id == link.id) else {
            return;
        };
        if seq > f.acked {
            f.acked = seq;
            // Progress restarts the clock of what it was delivered and has not applied.
            f.waiting_since = (f.delivered > f.acked).then(Instant::now);
        }
        let now_in_sync = !f.in_sync && f.acked >= f.joined_at;
        if now_in_sync {
            f.in_sync = true;
            link.in_sync.store(true, Ordering::Release);
        }
        let acked = f.acked;
        self.refresh(&followers);
        drop(followers);
        if now_in_sync {
            // Told only now: until the leader waits for it, batches it has not applied
            // may have been answered with the other standbys' acknowledgements.
            self.send_to(link.id, &ToStandby::InSync { seq: acked });
            tracing::info!(standby = %link.name, seq, "standby in sync");
        }
    }

    /// Writes a control message into `id`'s stream (after every batch written so far).
    pub(super) fn send_to(&self, id: u64, msg: &ToStandby) {
        let mut buf = Vec::with_capacity(64);
        super::wire::put(msg, &mut buf);
        let mut links = self.links.lock();
        if let Some(l) = links.iter_mut().find(|l| l.link.id == id) {
            if l.send(&buf, 0).is_err() {
                let link = l.link.clone();
                links.retain(|l| l.link.id != id);
                drop(links);
                link.drop_it(false);
                self.remove(id);
            }
        }
    }

    /// Forgets standby `id` (its stream ended).
    pub(super) fn remove(&self, id: u64) {
        self.links.lock().retain(|l| l.link.id != id);
        self.forget(|f| f.link.id == id);
    }

    /// Ends the term: every standby is let go and nobody is waited for any more.
    pub(crate) fn close(&self) {
        let mut links = self.links.lock();
        // Under the links' lock: a join registering now sees it.
        self.closed.store(true, Ordering::Release);
        for l in links.iter() {
            l.link.drop_it(false);
        }
        links.clear();
        drop(links);
        self.forget(|_| true);
    }

    /// Batches and seconds the slowest in-sync standby is behind (zero without one).
    pub(crate) fn lag(&self) -> (u64, f64) {
        let floor = self.applied.load(Ordering::Acquire);
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
                name: f.link.name.clone(),
                acked: f.acked,
                in_sync: f.in_sync,
            })
            .collect()
    }

    /// A fresh standby id.
    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a standby's stream as of batch `seq` (the snapshot's): every later batch
    /// goes to it. Called under the core's lock; `None` once the term ended.
    pub(super) fn register(&self, link: Arc<Link>, seq: u64) -> Option<()> {
        let mut links = self.links.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        links.push(LinkState::joining(link.clone(), seq));
        self.followers.lock().push(Follower {
            link,
            acked: 0,
            joined_at: seq,
            in_sync: false,
            delivered: 0,
            waiting_since: None,
        });
        Some(())
    }

    /// The last batch queued, as the snapshot taken now covers it.
    pub(super) fn snapshot_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }
}

/// The borrowed forms of [`ToStandby`]'s large messages (serialized identically).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BatchRef<'a> {
    Snapshot(&'a [Change]),
    Batch { seq: u64, changes: &'a [Change] },
}
