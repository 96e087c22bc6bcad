//! A standby's side of replication: connect to the leader's replication address, take
//! the snapshot into a fresh state, then apply and acknowledge every batch.
//!
//! Whether the standby is in sync (`synced`, shown on `/ha_status` and `/metrics`) is what
//! the leader says: true once the leader counts it in sync (it then waits for its
//! acknowledgements), false when a new snapshot starts, when the leader drops it for
//! lagging, or when the leader falls silent. Which master takes over is decided by the
//! [`Position`] each announces (the term and last batch its state holds), not by this flag.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mooncake_transfer_engine::conn::Conn;
use tokio::net::TcpStream;

use super::wire::{self, FrameBuf, ToLeader, ToStandby};
use super::{HaStatus, Position};
use crate::DurableState;

/// Why following stopped.
#[derive(Debug)]
pub(crate) enum FollowEnd {
    /// The connection could not be made or ended (the reason).
    Closed(String),
    /// The leader sent nothing for the silence timeout.
    Silent,
}

/// Follows the leader at `addr` until the stream ends, applying it to `state`. The stream
/// is read with direct non-blocking system calls, polled for briefly after each batch
/// (the next call's batch usually follows within the transfer engine's spin window, and
/// waking a sleeping thread costs tens of microseconds on a virtual machine).
pub(crate) async fn follow(
    addr: &str,
    me: &str,
    term: i64,
    state: &mut DurableState,
    position: &mut Position,
    status: &HaStatus,
    silence: Duration,
) -> FollowEnd {
    let conn = match wire::connect_local(addr) {
        Some(c) => c,
        None => match connect_tcp(addr).await {
            Ok(c) => c,
            Err(e) => return FollowEnd::Closed(format!("connect {addr}: {e}")),
        },
    };
    // A leader on this host that counts a batch in this standby's socket as held (see
    // `replicator.rs`, `Follower::holds`; it says so in its hello) waits for nobody's
    // answer, so this standby reads on a timer instead of polling, or being woken for
    // every batch.
    let mut lazy = false;
    // The last read brought a large piece of the stream: read eagerly until one does not.
    let mut large_frames = false;
    let mut rd = FrameBuf::default();
    if let Err(e) = send(&conn, &ToLeader::hello(me)).await {
        return FollowEnd::Closed(e.to_string());
    }
    let mut fresh: Option<DurableState> = None;
    let mut unacked: Option<u64> = None;
    // The leading parts of a call's changes too many for one frame, until its batch ends
    // them (a call's changes are applied together).
    let mut parts: Option<(u64, Vec<crate::Change>)> = None;
    loop {
        let msg = loop {
            match rd.next::<ToStandby>() {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => return FollowEnd::Closed(e.to_string()),
            }
            let deadline = tokio::time::Instant::now() + silence;
            // Lazily only between whole small frames: the rest of a frame already begun,
            // or the next of a stream of large ones (a batch of 1,000 keys is ~250 KB,
            // more than the socket holds, so the leader waits for this standby's
            // acknowledgement), is read at once.
            let before = rd.buffered();
            let filled = if lazy && !rd.has_more() && !large_frames {
                fill_lazily(&mut rd, &conn, deadline).await
            } else {
                rd.fill(&conn, Some(deadline)).await
            };
            large_frames = rd.buffered().saturating_sub(before) >= LARGE_READ;
            match filled {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    status.synced.store(false, Ordering::Release);
                    return FollowEnd::Silent;
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return FollowEnd::Closed("the leader closed the stream".into())
                }
                Err(e) => return FollowEnd::Closed(e.to_string()),
            }
        };
        match msg {
            ToStandby::Hello {
                format_major,
                leader,
                holds_delivered,
                ..
            } => {
                lazy = holds_delivered && conn.is_local();
                if !wire::compatible(format_major) {
                    return FollowEnd::Closed(format!(
                        "the leader {leader} writes state format {format_major}, newer than this master's; upgrade this standby"
                    ));
                }
                status.synced.store(false, Ordering::Release);
                fresh = Some(DurableState::default());
            }
            ToStandby::Snapshot(changes) => {
                let Some(f) = fresh.as_mut() else {
                    return FollowEnd::Closed("a snapshot before hello".into());
                };
                for c in changes {
                    f.apply(c);
                }
            }
            ToStandby::SnapshotEnd { seq } => {
                let Some(f) = fresh.take() else {
                    return FollowEnd::Closed("a snapshot end without a snapshot".into());
                };
                *state = f;
                *position = Position { term, seq };
                status
                    .standby_objects
                    .store(state.object_count() as u64, Ordering::Relaxed);
                tracing::info!(
                    leader = %addr,
                    objects = state.object_count(),
                    segments = state.segment_count(),
                    seq,
                    "in sync with the leader"
                );
                if let Err(e) = send(&conn, &ToLeader::Ack { seq }).await {
                    return FollowEnd::Closed(e.to_string());
                }
            }
            ToStandby::BatchPart { seq, changes } => {
                if fresh.is_some() {
                    return FollowEnd::Closed("a batch inside the snapshot".into());
                }
                match &mut parts {
                    None => parts = Some((seq, changes)),
                    Some((s, held)) if *s == seq => held.extend(changes),
                    Some((s, _)) => {
                        return FollowEnd::Closed(format!(
                            "a part of batch {seq} before batch {s} ended"
                        ))
                    }
                }
            }
            ToStandby::Batch { seq, changes } => {
                if fresh.is_some() {
                    return FollowEnd::Closed("a batch inside the snapshot".into());
                }
                if let Some((s, held)) = parts.take() {
                    if s != seq {
                        return FollowEnd::Closed(format!("batch {seq} before batch {s} ended"));
                    }
                    for c in held {
                        state.apply(c);
                    }
                }
                for c in changes {
                    state.apply(c);
                }
                position.seq = position.seq.max(seq);
                status.applied.fetch_add(1, Ordering::Relaxed);
                status
                    .standby_objects
                    .store(state.object_count() as u64, Ordering::Relaxed);
                // More frames already read: one acknowledgement after the last of them.
                if rd.has_more() {
                    unacked = Some(seq);
                    continue;
                }
                unacked = None;
                if let Err(e) = send(&conn, &ToLeader::Ack { seq }).await {
                    return FollowEnd::Closed(e.to_string());
                }
            }
            ToStandby::Heartbeat { .. } => {}
            ToStandby::InSync { .. } => {
                status.synced.store(true, Ordering::Release);
            }
            ToStandby::Bye { resync } => {
                if resync {
                    status.synced.store(false, Ordering::Release);
                    return FollowEnd::Closed("the leader dropped this standby for lagging".into());
                }
                return FollowEnd::Closed("the leader's term ended".into());
            }
        }
        if let Some(seq) = unacked.take() {
            if let Err(e) = send(&conn, &ToLeader::Ack { seq }).await {
                return FollowEnd::Closed(e.to_string());
            }
        }
    }
}

/// A read of at least this much of the stream means large frames are coming (a socket
/// holds ~200 KB): the next is waited for at once, not on the timer.
const LARGE_READ: usize = 64 << 10;

/// How often a same-host standby looks for more of the stream when it has caught up.
const LAZY_READ: Duration = Duration::from_millis(1);

/// After this many looks in a row found nothing (writes stopped: only the leader's
/// heartbeats come), a same-host standby sleeps until the stream has more instead.
const LAZY_IDLE_LOOKS: u32 = 20;

/// Waits for more of the stream by looking every [`LAZY_READ`] (a timer wakes only this
/// standby's own thread; the leader's writes wake nobody) while writes come; once the
/// stream went quiet, by sleeping until it is readable (an idle standby wakes for the
/// heartbeats, not a thousand times a second). Fails with `TimedOut` at `deadline`.
async fn fill_lazily(
    rd: &mut FrameBuf,
    conn: &Conn,
    deadline: tokio::time::Instant,
) -> std::io::Result<()> {
    for _ in 0..LAZY_IDLE_LOOKS {
        if rd.try_fill(conn)? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        tokio::time::sleep(LAZY_READ).await;
    }
    rd.fill(conn, Some(deadline)).await
}

async fn send(conn: &Conn, msg: &ToLeader) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    wire::put(msg, &mut buf);
    conn.write_all(&buf).await
}

async fn connect_tcp(addr: &str) -> std::io::Result<Conn> {
    let stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    stream.set_nodelay(true)?;
    Conn::tcp(stream)
}
