//! One standby's connection on the leader: its hello, its snapshot, and the task that
//! owns the connection afterwards (it writes what the calls' non-blocking writes left
//! over, heartbeats when idle, reads the acknowledgements no call is waiting for, and
//! says goodbye when the standby is dropped or the term ends).

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_transfer_engine::conn::{Conn, Spin};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::replicator::{BatchRef, Replicator, MAX_QUEUED};
use super::wire::{self, FrameBuf, ToLeader, ToStandby, HEARTBEAT};
use crate::binary::BatchKind;
use crate::Master;

/// Changes per snapshot frame.
const SNAPSHOT_CHUNK: usize = 1024;

/// A standby's connection, shared by the calls that write to it and read its
/// acknowledgements and by its task.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) name: String,
    /// The standby reads the [`crate::binary`] encoding: its batches and snapshot are
    /// sent in it (JSON otherwise).
    pub(super) binary: bool,
    /// Non-blocking, read and written with direct system calls.
    pub(super) conn: Conn,
    /// Acknowledgement bytes read and not yet taken; whoever holds it reads.
    acks: Mutex<FrameBuf>,
    /// The leader waits for this standby's acknowledgements.
    pub(super) in_sync: AtomicBool,
    /// The leader let this standby go (the task says goodbye and ends) ...
    dropped: AtomicBool,
    /// ... because it lagged (it no longer holds the whole state).
    resync: AtomicBool,
    /// Wakes the task: the standby was dropped, or there is a backlog to write.
    kick: Notify,
}

impl Link {
    /// Lets the standby go: its task says goodbye (`resync` when it lagged) and ends.
    pub(super) fn drop_it(&self, resync: bool) {
        self.resync.fetch_or(resync, Ordering::AcqRel);
        self.dropped.store(true, Ordering::Release);
        self.kick.notify_one();
    }

    /// Reads what the standby sent without waiting: the highest batch it acknowledged,
    /// if any (`None` too when someone else is reading).
    pub(super) fn read_acks(&self) -> io::Result<Option<u64>> {
        let Some(mut rx) = self.acks.try_lock() else {
            return Ok(None);
        };
        let mut top = None;
        loop {
            while let Some(msg) = rx.next::<ToLeader>()? {
                if let ToLeader::Ack { seq } = msg {
                    top = top.max(Some(seq));
                }
            }
            if !rx.try_fill(&self.conn)? {
                return Ok(top);
            }
        }
    }
}

/// What the writers know of a standby's stream (under the replicator's `links` lock).
#[derive(Debug)]
pub(super) struct LinkState {
    pub(super) link: Arc<Link>,
    /// Batches up to this are in the standby's snapshot.
    pub(super) joined_at: u64,
    /// Frames for the task to write, in order.
    backlog: Vec<u8>,
    /// Batches in `backlog`.
    backlog_batches: usize,
    /// The task writes to the socket (the snapshot, then the backlog): new frames go to
    /// the backlog until it is empty again.
    draining: bool,
    last_write: Instant,
}

impl LinkState {
    /// A standby about to receive its snapshot.
    pub(super) fn joining(link: Arc<Link>, seq: u64) -> Self {
        Self {
            link,
            joined_at: seq,
            backlog: Vec::new(),
            backlog_batches: 0,
            draining: true,
            last_write: Instant::now(),
        }
    }

    /// Writes `frames` (`batches` of them batches) now if the task is not writing, else
    /// (and for what a full socket does not take) queues them for the task. `Ok(true)`:
    /// written whole into the socket now; `Ok(false)`: (partly) queued; `Err(true)`: too
    /// much is queued; `Err(false)`: the connection is broken.
    pub(super) fn send(&mut self, frames: &[u8], batches: usize) -> Result<bool, bool> {
        let mut rest = frames;
        if !self.draining {
            while !rest.is_empty() {
                match self.link.conn.try_write_vectored(&[IoSlice::new(rest)]) {
                    Ok(0) => return Err(false),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Err(false),
                }
            }
            self.last_write = Instant::now();
            if rest.is_empty() {
                return Ok(true);
            }
            self.draining = true;
            self.link.kick.notify_one();
        }
        self.backlog.extend_from_slice(rest);
        self.backlog_batches += batches;
        if self.backlog_batches > MAX_QUEUED {
            return Err(true);
        }
        Ok(false)
    }

    /// Whether frames wait for the task (a full socket, or the snapshot going out).
    #[cfg(test)]
    pub(super) fn is_draining(&self) -> bool {
        self.draining
    }

    /// The backlog for the task to write, or `None` (the calls write directly again).
    fn take_backlog(&mut self) -> Option<Vec<u8>> {
        if self.backlog.is_empty() {
            self.draining = false;
            return None;
        }
        self.backlog_batches = 0;
        self.last_write = Instant::now();
        Some(std::mem::take(&mut self.backlog))
    }
}

/// Permission to poll the standbys' sockets for their acknowledgements for up to the
/// transfer engine's spin window (`MC_RPC_SPIN_US`, 150 µs): the engine's [`Spin`] on a
/// flag of its own, so one poller of acknowledgements and one of the RPC path can run at
/// once.
pub(super) struct Poller;

static POLLING: AtomicBool = AtomicBool::new(false);

impl Poller {
    pub(super) fn claim() -> Spin {
        Spin::claim_from(&POLLING)
    }
}

impl Replicator {
    /// Serves one standby's connection until it ends, the standby is dropped or the term
    /// ends.
    pub(crate) async fn serve(
        self: Arc<Self>,
        master: Arc<Master>,
        conn: Conn,
        peer: String,
        leader: String,
    ) {
        if let Err(e) = self.serve_inner(master, conn, &leader, &peer).await {
            tracing::info!(standby = %peer, error = %e, "replication stream ended");
        }
    }

    async fn serve_inner(
        self: &Arc<Self>,
        master: Arc<Master>,
        conn: Conn,
        leader: &str,
        peer: &str,
    ) -> io::Result<()> {
        let mut rx = FrameBuf::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let hello = loop {
            if let Some(m) = rx.next::<ToLeader>()? {
                break m;
            }
            rx.fill(&conn, Some(deadline))
                .await
                .map_err(|e| io::Error::other(format!("no hello within 5 s: {e}")))?;
        };
        let (name, binary) = match hello {
            ToLeader::Hello {
                format_major,
                name,
                binary,
                ..
            } => {
                if format_major < crate::state::format::FORMAT_MAJOR {
                    tracing::warn!(standby = %name, format_major, "a standby of an older state format cannot follow this leader; upgrade it");
                    return Ok(());
                }
                (name, binary >= crate::binary::VERSION)
            }
            ToLeader::Ack { .. } => return Err(io::Error::other("the standby did not say hello")),
        };
        let mut buf = Vec::new();
        wire::put(&ToStandby::hello(leader), &mut buf);
        conn.write_all(&buf).await?;
        let link = Arc::new(Link {
            id: self.next_id(),
            name,
            binary,
            conn,
            acks: Mutex::new(rx),
            in_sync: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            kick: Notify::new(),
        });
        // The snapshot copies the whole state under the core's lock: not on a reactor thread.
        let joined = {
            let (me, link) = (self.clone(), link.clone());
            tokio::task::spawn_blocking(move || {
                let core = master.raw_core().lock();
                let snapshot = core.snapshot();
                let seq = me.snapshot_seq();
                me.register(link, seq)?;
                drop(core);
                Some((snapshot, seq))
            })
            .await
            .ok()
            .flatten()
        };
        let Some((snapshot, seq)) = joined else {
            return Ok(());
        };
        tracing::info!(standby = %link.name, %peer, records = snapshot.len(), seq, "standby joined; sending the snapshot");
        let result = self.stream(&link, snapshot, seq).await;
        self.remove(link.id);
        result
    }

    /// Sends the snapshot, then keeps the stream until the standby goes.
    async fn stream(&self, link: &Link, snapshot: Vec<crate::Change>, seq: u64) -> io::Result<()> {
        // A standby that stops reading must not hold this task (and the snapshot) forever.
        let write_timeout = (self.timeout * 5).max(Duration::from_secs(5));
        let write = |buf: Vec<u8>, what: &'static str| async move {
            let deadline = tokio::time::Instant::now() + write_timeout;
            link.conn
                .write_all_until(&buf, Some(deadline))
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::TimedOut => io::Error::other(format!(
                        "the standby stopped reading {what} for {write_timeout:?}"
                    )),
                    _ => e,
                })
        };
        let mut buf = Vec::new();
        for chunk in snapshot.chunks(SNAPSHOT_CHUNK) {
            if link.binary {
                wire::put_binary(BatchKind::Snapshot, 0, chunk, &mut buf);
            } else {
                wire::put(&BatchRef::Snapshot(chunk), &mut buf);
            }
            if buf.len() > 1 << 20 {
                write(std::mem::take(&mut buf), "its snapshot").await?;
            }
        }
        drop(snapshot);
        wire::put(&ToStandby::SnapshotEnd { seq }, &mut buf);
        write(buf, "its snapshot").await?;
        let mut next_beat = tokio::time::Instant::now() + HEARTBEAT;
        while !link.dropped.load(Ordering::Acquire) {
            // What the calls left for this task, or the socket back to them.
            let backlog = match self.links.lock().iter_mut().find(|l| l.link.id == link.id) {
                Some(l) => l.take_backlog(),
                None => break,
            };
            if let Some(bytes) = backlog {
                write(bytes, "the stream").await?;
                continue;
            }
            // An in-sync standby's acknowledgements are read by the calls waiting for
            // them, or (without synchronous replication) by the next call that writes,
            // and at each heartbeat; watching them here too would wake this task's thread
            // for every one.
            let watch = !link.in_sync.load(Ordering::Acquire);
            tokio::select! {
                () = link.kick.notified() => {}
                _ = link.conn.readable_until(Some(next_beat)), if watch => {}
                () = tokio::time::sleep_until(next_beat), if !watch => {}
            }
            self.read_acks(link);
            if tokio::time::Instant::now() >= next_beat {
                let mut beat = Vec::with_capacity(48);
                wire::put(
                    &ToStandby::Heartbeat {
                        seq: self.last_seq(),
                    },
                    &mut beat,
                );
                self.send_if_idle(link.id, &beat);
                next_beat = tokio::time::Instant::now() + HEARTBEAT;
            }
        }
        if link.dropped.load(Ordering::Acquire) {
            let mut bye = Vec::with_capacity(48);
            wire::put(
                &ToStandby::Bye {
                    resync: link.resync.load(Ordering::Acquire),
                },
                &mut bye,
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            let _ = link.conn.write_all_until(&bye, Some(deadline)).await;
        }
        Ok(())
    }

    /// Writes `frame` to `id`'s stream if nothing was written for a heartbeat period.
    fn send_if_idle(&self, id: u64, frame: &[u8]) {
        let mut links = self.links.lock();
        let Some(l) = links.iter_mut().find(|l| l.link.id == id) else {
            return;
        };
        if l.draining || l.last_write.elapsed() < HEARTBEAT {
            return;
        }
        if l.send(frame, 0).is_err() {
            let link = l.link.clone();
            drop(links);
            link.drop_it(false);
            self.remove(id);
        }
    }
}
