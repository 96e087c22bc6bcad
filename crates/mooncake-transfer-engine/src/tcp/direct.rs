//! Exchanges done by the caller itself: no lane tasks, no channels.
//!
//! A job of a few small requests (a 4 KiB get, a batch of 32 small values) is dominated by
//! wake-ups, not bytes: handing it to a lane's writer task, which wakes the peer, whose
//! answer wakes the lane's reader task, which wakes the caller, costs several thread
//! wake-ups of tens of microseconds each on a virtual machine whose idle cores halt. Here
//! the caller takes an idle connection of its own from a small pool, writes every header
//! (and WRITE payload) with vectored writes and reads the answers itself, polling for them
//! briefly before sleeping ([`crate::conn`], the same technique as the store's master
//! tunnel). The wire is the same v2 framing the lanes speak. Large one-way jobs gain too:
//! the caller reads (or writes) the bytes as they come instead of sleeping between socket
//! buffers' worth.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::client::{again, connect, TcpClientConfig, WireOp};
use super::together::{read_together, send_together, StripeAnswers, StripeView};
use crate::codec::{Opcode, ProtoVersion, Status, STATUS_LEN};
use crate::conn::Conn;
use crate::memory::Region;
use crate::TransferError;

/// Jobs that mix READs and WRITEs are exchanged directly up to this many bytes: every
/// request is written before any answer is read, and a large WRITE written while READ
/// answers pile up unread could fill both directions' socket buffers. Jobs of one kind
/// have no such limit (the answers of WRITEs are 8-byte status frames; READ requests are
/// 24-byte headers), and measured faster directly than on the lanes at every size here
/// (1-16 MiB single transfers and batches: the caller polls instead of waking tasks).
pub(crate) const DIRECT_MAX_BYTES: u64 = 256 << 10;
/// Jobs of one kind are exchanged directly up to this many bytes. Larger ones (a batch of
/// 32 values of 16 MiB is 512 MiB) go to the lanes, whose writer and reader tasks keep
/// every connection busy at once; a direct exchange sends its stripes one after the other
/// and reads them one after the other, which between hosts (network namespaces) measured
/// up to a quarter slower for such batches.
pub(crate) const DIRECT_ONE_WAY_MAX_BYTES: u64 = 32 << 20;
/// Jobs of one kind to a peer on another host (not a loopback address) go to the lanes
/// above this many bytes when their memory is registered (lent memory is only ever carried
/// directly). The lanes' writer and reader tasks spread the TCP stack's work over every
/// worker thread, where a direct exchange does all of it on the caller's one thread:
/// between network namespaces (veth) a 16 MiB transfer measured 3.5-3.8 GB/s on the lanes
/// against 2.5-2.7 directly, 8 MiB 3.2-3.5 against 2.7-3.1, while at 4 MiB the direct
/// exchange still won (2.8-3.5 against 2.6-3.1). Over loopback the direct exchange stays
/// ahead at every size (16 MiB 7.3 against 6.8 GB/s), so loopback peers keep it.
pub(crate) const REMOTE_DIRECT_MAX_BYTES: u64 = 4 << 20;
/// Requests of one direct exchange at most (all their headers leave before any answer
/// is read: 256 READ headers are 6 KiB, within any socket buffer); larger jobs use the
/// lanes.
pub(crate) const DIRECT_MAX_REQUESTS: usize = 256;
/// Idle connections kept per peer and [`Direction`].
const IDLE_PER_PEER: usize = 8;
/// A job of one kind is cut into a stripe per this many bytes (at most [`MAX_STRIPES`]),
/// each on a connection of its own; READs from another host per
/// [`REMOTE_READ_STRIPE_BYTES`]. Measured against 256 KiB (Rust `store_bench`, three or
/// four rounds alternating): over loopback 1 MiB `put` 1.20-1.32x, `put_from`
/// 1.27-1.29x, `get` 1.14-1.19x, `get_into` 1.06-1.24x, 512 KiB 1.08-1.17x; to another
/// host (network namespaces) 1 MiB `put` 1.17-1.22x, 2 MiB 1.05-1.21x; larger jobs and
/// batches 0.95-1.09x.
const STRIPE_BYTES: u64 = 512 << 10;
/// Stripe size of READs from a peer on another host: there 1 MiB `get` measured
/// 0.80-0.90x with 512 KiB stripes, so they keep four of 256 KiB (the peer's writes of
/// the stripes, and the receiving side's TCP work, spread over more connections).
const REMOTE_READ_STRIPE_BYTES: u64 = 256 << 10;
/// Connections one exchange uses at most.
const MAX_STRIPES: usize = 4;
/// Answers read ahead per system call.
const READ_AHEAD: usize = 64 * 1024;

/// Whether every request of a job is of the first one's kind.
fn one_kind(ops: &[(WireOp, Arc<Region>)]) -> bool {
    ops.first()
        .is_some_and(|(first, _)| ops.iter().all(|(op, _)| op.opcode == first.opcode))
}

/// Whether a job goes to a peer on another host (not a loopback address).
fn to_another_host(ops: &[(WireOp, Arc<Region>)]) -> bool {
    ops.iter().any(|(op, _)| !op.peer.ip().is_loopback())
}

/// Whether a job is of READs only.
fn reads(ops: &[(WireOp, Arc<Region>)]) -> bool {
    ops.iter().all(|(op, _)| op.opcode == Opcode::Read)
}

/// Whether a job (one peer or several) may run as a direct exchange: v2 framing, at most
/// [`DIRECT_MAX_REQUESTS`] requests, and one kind up to [`DIRECT_ONE_WAY_MAX_BYTES`] or
/// any mix up to [`DIRECT_MAX_BYTES`].
pub(crate) fn direct_eligible(ops: &[(WireOp, Arc<Region>)]) -> bool {
    if ops.is_empty() {
        return false;
    }
    let bytes: u64 = ops.iter().map(|(op, _)| op.len).sum();
    let one_way = one_kind(ops);
    ops.iter().all(|(op, _)| op.version == ProtoVersion::V2)
        && ops.len() <= DIRECT_MAX_REQUESTS
        && ((one_way && bytes <= DIRECT_ONE_WAY_MAX_BYTES) || bytes <= DIRECT_MAX_BYTES)
}

/// Whether the lanes should carry a job of registered memory that
/// [`direct_eligible`] would run directly: a large job to another host
/// ([`REMOTE_DIRECT_MAX_BYTES`]).
pub(crate) fn lanes_preferred(ops: &[(WireOp, Arc<Region>)]) -> bool {
    let bytes: u64 = ops.iter().map(|(op, _)| op.len).sum();
    bytes > REMOTE_DIRECT_MAX_BYTES && to_another_host(ops)
}

/// Which way a connection's bulk bytes go: the pool keeps READ connections (payloads
/// from the peer) apart from the others (payloads to it).
///
/// A connection that carried WRITEs has sent megabytes and received only status frames;
/// the peer's sending side of it has been idle, and a READ job on it starts slowly (the
/// peer's congestion state for that direction has to grow again). Between namespace
/// hosts, 64 KiB `get_batch[32]` right after `put_batch[32]` calls measured 2.0-2.8 GB/s
/// (median) on shared connections against 3.7-4.1 on connections kept for READs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// Jobs of READs only.
    Reads,
    /// Jobs with WRITEs.
    Writes,
}

impl Direction {
    fn of(ops: &[(WireOp, Arc<Region>)]) -> Self {
        if reads(ops) {
            Direction::Reads
        } else {
            Direction::Writes
        }
    }
}

/// Idle direct connections per peer and direction.
#[derive(Debug, Default)]
pub(crate) struct DirectPool {
    idle: Mutex<HashMap<(SocketAddr, Direction), Vec<Conn>>>,
}

impl DirectPool {
    /// Drops the idle connections to `addr`.
    pub(crate) fn forget(&self, addr: SocketAddr) {
        let mut idle = self.idle.lock();
        idle.remove(&(addr, Direction::Reads));
        idle.remove(&(addr, Direction::Writes));
    }

    fn take(&self, addr: (SocketAddr, Direction)) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            // Nothing may be pending on an idle connection: input means the peer closed it.
            if conn.is_alive() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, addr: (SocketAddr, Direction), conn: Conn) {
        let mut idle = self.idle.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < IDLE_PER_PEER {
            list.push(conn);
        }
    }

    /// Runs `ops` (v2 framing; one peer or several) on connections of the caller's own.
    /// Each entry of the answer is `Some` with the request's outcome, or `None` when the
    /// request was not completed because a connection failed (or a neighbour was
    /// refused, which closes it): those are for the lanes to retry.
    ///
    /// A large job of one kind is cut into stripes on up to [`MAX_STRIPES`] connections
    /// per peer, all sent together before any answer is read, so the peers serve them in
    /// parallel; the answers of READ jobs (one stripe or several) are read together too,
    /// straight into their destinations ([`super::together`]); those of WRITE and mixed
    /// jobs one stripe after the other, through a read-ahead buffer. A job spread over
    /// several peers (a batch whose values sit on several hosts) is one exchange the same
    /// way: every peer's requests leave before any answer is read, so it costs one round
    /// trip, not one per peer.
    pub(crate) async fn exchange(
        &self,
        ops: &[(WireOp, Arc<Region>)],
        config: &TcpClientConfig,
    ) -> Vec<Option<Result<(), TransferError>>> {
        let mut out: Vec<Option<Result<(), TransferError>>> = ops.iter().map(|_| None).collect();
        debug_assert!(ops.iter().all(|(op, _)| op.version == ProtoVersion::V2));
        let direction = Direction::of(ops);
        // Per request: pieces still owed (a stripe that never starts leaves its pieces
        // owed, and their requests to the lanes).
        let mut owed: Vec<usize> = vec![0; ops.len()];
        let mut started: Vec<Started> = Vec::new();
        for (peer, stripes) in stripes_per_peer(ops) {
            for (_, owners) in &stripes {
                owners.iter().for_each(|&o| owed[o] += 1);
            }
            let mut first = true;
            for (stripe_ops, owners) in stripes {
                let conn = match self.take((peer, direction)) {
                    Some(conn) => conn,
                    None => match connect(peer, config).await.map(Conn::tcp) {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(_)) => break,
                        Err(e) if first => {
                            // The peer cannot be reached at all: that is the outcome of
                            // every request to it.
                            for (slot, (op, _)) in out.iter_mut().zip(ops) {
                                if op.peer == peer {
                                    *slot = Some(Err(again(&e)));
                                }
                            }
                            break;
                        }
                        Err(_) => break,
                    },
                };
                first = false;
                let bytes: u64 = stripe_ops.iter().map(|(op, _)| op.len).sum();
                let deadline = tokio::time::Instant::now()
                    + config.io_timeout
                    + Duration::from_nanos(bytes.saturating_mul(10));
                started.push((peer, conn, stripe_ops, owners, deadline));
            }
        }
        if started.is_empty() {
            // No connection: every peer unreachable (their requests' outcome), or left to
            // the lanes.
            return out;
        }
        // Every stripe leaves before any answer is read, so that the peers serve them in
        // parallel; a stripe that could not be sent leaves its pieces owed.
        let sent = if let [(_, conn, stripe_ops, _, deadline)] = started.as_slice() {
            vec![send(conn, stripe_ops, *deadline).await.is_ok()]
        } else {
            send_together(&views(&started)).await
        };
        let mut sent = sent.into_iter();
        started.retain(|_| sent.next() == Some(true));
        // Per request: whether a piece failed without an outcome.
        let mut unknown = vec![false; ops.len()];
        // READ answers go straight into their destinations, a whole run of answers per
        // system call ([`super::together`]), on one stripe as on several.
        let answers: Vec<StripeAnswers> = if reads(ops) {
            read_together(&views(&started), config).await
        } else {
            let mut answers = Vec::with_capacity(started.len());
            for (_, conn, stripe_ops, _, deadline) in &started {
                answers.push(answer_all(conn, stripe_ops, *deadline, config).await);
            }
            answers
        };
        for ((peer, conn, _, owners, _), (results, healthy)) in started.into_iter().zip(answers) {
            for (result, o) in results.into_iter().zip(owners) {
                match result {
                    Some(Ok(())) => owed[o] -= 1,
                    Some(Err(e)) => out[o] = Some(Err(e)),
                    None => unknown[o] = true,
                }
            }
            if healthy {
                self.put_back((peer, direction), conn);
            }
        }
        for (o, slot) in out.iter_mut().enumerate() {
            // Done when every piece completed; a piece whose fate is unknown sends the
            // whole request to the lanes.
            if slot.is_none() && owed[o] == 0 && !unknown[o] {
                *slot = Some(Ok(()));
            }
        }
        out
    }
}

/// The stripes of a job per peer, in the order each peer first appears; each piece names
/// the index in `ops` of the request it belongs to. A job to one peer (the common case)
/// is striped as it is; one spread over several is striped peer by peer.
fn stripes_per_peer(ops: &[(WireOp, Arc<Region>)]) -> Vec<(SocketAddr, Vec<Stripe>)> {
    let Some(first) = ops.first().map(|(op, _)| op.peer) else {
        return Vec::new();
    };
    if ops.iter().all(|(op, _)| op.peer == first) {
        return vec![(first, stripe(ops))];
    }
    let mut peers: Vec<(SocketAddr, Vec<usize>)> = Vec::new();
    for (i, (op, _)) in ops.iter().enumerate() {
        match peers.iter_mut().find(|(p, _)| *p == op.peer) {
            Some((_, idx)) => idx.push(i),
            None => peers.push((op.peer, vec![i])),
        }
    }
    peers
        .into_iter()
        .map(|(peer, idx)| {
            let mine: Vec<(WireOp, Arc<Region>)> = idx.iter().map(|&i| ops[i].clone()).collect();
            let stripes = stripe(&mine)
                .into_iter()
                .map(|(pieces, owners)| (pieces, owners.into_iter().map(|o| idx[o]).collect()))
                .collect();
            (peer, stripes)
        })
        .collect()
}

/// A stripe on its connection: the peer, the connection, the stripe's pieces, the index
/// of the request each piece belongs to, and the stripe's deadline.
type Started = (
    SocketAddr,
    Conn,
    Vec<(WireOp, Arc<Region>)>,
    Vec<usize>,
    tokio::time::Instant,
);

/// What [`send_together`] and [`read_together`] take of started stripes.
fn views(started: &[Started]) -> Vec<StripeView<'_>> {
    started
        .iter()
        .map(|(_, conn, ops, _, deadline)| (conn, ops.as_slice(), *deadline))
        .collect()
}

/// One stripe of a job: its pieces, and for each the index of the request it belongs to.
type Stripe = (Vec<(WireOp, Arc<Region>)>, Vec<usize>);

/// Stripes of a job: at most [`MAX_STRIPES`], at least [`STRIPE_BYTES`] each
/// ([`REMOTE_READ_STRIPE_BYTES`] for READs from another host), only for jobs of one
/// kind; each with the indices in `ops` its pieces belong to.
///
/// Jobs of one kind only: the peer receives (or sends) the stripes in parallel. READs from
/// loopback peers stripe too: since the server writes READ answers with polling
/// non-blocking writes (`server::write_payload`), one machine's stripes measured faster
/// than one connection (1 MiB get_into 1.4x, 16 MiB batch_get_into 1.1-1.4x).
fn stripe(ops: &[(WireOp, Arc<Region>)]) -> Vec<Stripe> {
    let bytes: u64 = ops.iter().map(|(op, _)| op.len).sum();
    let per_stripe = if to_another_host(ops) && reads(ops) {
        REMOTE_READ_STRIPE_BYTES
    } else {
        STRIPE_BYTES
    };
    let count = if one_kind(ops) {
        (bytes / per_stripe).clamp(1, MAX_STRIPES as u64)
    } else {
        1
    };
    if count == 1 {
        return vec![(ops.to_vec(), (0..ops.len()).collect())];
    }
    let quota = bytes.div_ceil(count);
    let mut stripes: Vec<Stripe> = Vec::new();
    let mut room = 0u64;
    for (i, (op, local)) in ops.iter().enumerate() {
        let mut done = 0u64;
        while done < op.len {
            if room == 0 {
                stripes.push((Vec::new(), Vec::new()));
                room = quota;
            }
            let len = room.min(op.len - done);
            let piece = WireOp {
                local_addr: op.local_addr + done,
                remote_addr: op.remote_addr.wrapping_add(done),
                len,
                ..*op
            };
            let last = stripes.last_mut().expect("a stripe was pushed");
            last.0.push((piece, local.clone()));
            last.1.push(i);
            done += len;
            room -= len;
        }
    }
    stripes
}

/// Reads the answers of every request sent on `conn`: each one's outcome (`None`: not
/// known, the connection failed first) and whether the connection may be reused.
async fn answer_all(
    conn: &Conn,
    ops: &[(WireOp, Arc<Region>)],
    deadline: tokio::time::Instant,
    config: &TcpClientConfig,
) -> (Vec<Option<Result<(), TransferError>>>, bool) {
    let mut out: Vec<Option<Result<(), TransferError>>> = ops.iter().map(|_| None).collect();
    let mut answers = Answers {
        conn,
        buf: vec![0; READ_AHEAD],
        start: 0,
        end: 0,
        deadline,
    };
    for ((op, local), slot) in ops.iter().zip(out.iter_mut()) {
        match answers.next(op, local).await {
            Ok(()) => *slot = Some(Ok(())),
            Err(Failure::Own(e)) => {
                // A refused request closes the connection after its answer.
                *slot = Some(Err(e));
                return (out, false);
            }
            Err(Failure::TimedOut) => {
                *slot = Some(Err(TransferError::Timeout {
                    peer: op.peer,
                    timeout: config.io_timeout,
                }));
                return (out, false);
            }
            Err(Failure::Connection) => return (out, false),
        }
    }
    let clean = answers.start == answers.end;
    (out, clean)
}

/// Writes the headers (and WRITE payloads) of `ops`.
async fn send(
    conn: &Conn,
    ops: &[(WireOp, Arc<Region>)],
    deadline: tokio::time::Instant,
) -> std::io::Result<()> {
    let headers = super::headers(ops);
    let mut bufs: Vec<&[u8]> = Vec::with_capacity(2 * ops.len());
    for ((op, local), header) in ops.iter().zip(&headers) {
        bufs.push(header);
        if op.opcode == Opcode::Write {
            bufs.push(local.slice(op.local_addr, op.len as usize));
        }
    }
    conn.write_all_vectored_until(&mut bufs, Some(deadline))
        .await
}

/// Why an answer could not be read.
enum Failure {
    /// The request's own outcome (refused, bad status).
    Own(TransferError),
    /// No answer before the deadline.
    TimedOut,
    /// The connection broke: the request's fate is unknown.
    Connection,
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Failure::TimedOut
        } else {
            Failure::Connection
        }
    }
}

/// The answers of one exchange, read ahead into a buffer.
struct Answers<'a> {
    conn: &'a Conn,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    deadline: tokio::time::Instant,
}

impl Answers<'_> {
    /// Fills `dst` from the read-ahead buffer, then from the socket.
    async fn fill(&mut self, dst: &mut [u8]) -> Result<(), Failure> {
        let mut got = 0;
        while got < dst.len() {
            if self.start == self.end {
                let want = dst.len() - got;
                if want >= self.buf.len() {
                    // Large payloads go straight to their destination.
                    self.conn
                        .read_exact_until(&mut dst[got..], Some(self.deadline))
                        .await?;
                    return Ok(());
                }
                let n = self
                    .conn
                    .read_some_until(&mut self.buf, Some(self.deadline))
                    .await?;
                (self.start, self.end) = (0, n);
            }
            let n = (self.end - self.start).min(dst.len() - got);
            dst[got..got + n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            got += n;
        }
        Ok(())
    }

    /// Reads the answer to `op`: its status frame, then a READ's payload into `local`.
    async fn next(&mut self, op: &WireOp, local: &Region) -> Result<(), Failure> {
        let mut frame = [0u8; STATUS_LEN];
        self.fill(&mut frame).await?;
        status_outcome(&frame, op).map_err(Failure::Own)?;
        if op.opcode == Opcode::Read {
            #[allow(unsafe_code)]
            // SAFETY: one writer per range (the store protocol), and the slice lives for this read.
            let dst = unsafe { local.slice_mut(op.local_addr, op.len as usize) };
            self.fill(dst).await?;
        }
        Ok(())
    }
}

/// What a request's status frame says of it.
pub(super) fn status_outcome(frame: &[u8; STATUS_LEN], op: &WireOp) -> Result<(), TransferError> {
    match Status::decode(frame) {
        Some(Status::Ok) => Ok(()),
        Some(Status::Rejected) => Err(TransferError::Rejected {
            peer: op.peer,
            addr: op.remote_addr,
            len: op.len,
        }),
        Some(Status::Unauthenticated) => Err(TransferError::Unauthenticated {
            peer: op.peer,
            reason: "it needs the cluster's token and this engine has none (MOONCAKE_AUTH_TOKEN)",
        }),
        _ => Err(TransferError::BadStatus {
            peer: op.peer,
            frame: *frame,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(peer: &str, opcode: Opcode, len: u64) -> Vec<(WireOp, Arc<Region>)> {
        let region = Arc::new(Region::anonymous(len).unwrap());
        let op = WireOp {
            peer: peer.parse().unwrap(),
            version: ProtoVersion::V2,
            opcode,
            local_addr: region.addr(),
            remote_addr: 1 << 40,
            len,
        };
        vec![(op, region)]
    }

    fn pieces(stripes: &[Stripe]) -> Vec<u64> {
        stripes
            .iter()
            .map(|(ops, _)| ops.iter().map(|(op, _)| op.len).sum())
            .collect()
    }

    /// A connected pair: our `Conn` and the peer's end (kept open).
    fn conn() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (Conn::from(crate::conn::Sock::tcp(ours).unwrap()), theirs)
    }

    #[test]
    fn reads_never_reuse_a_connection_that_carried_writes() {
        let pool = DirectPool::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (write_conn, _w) = conn();
        pool.put_back(
            (
                peer,
                Direction::of(&job("127.0.0.1:5000", Opcode::Write, 8)),
            ),
            write_conn,
        );
        assert!(pool
            .take((peer, Direction::of(&job("127.0.0.1:5000", Opcode::Read, 8))))
            .is_none());
        let (read_conn, _r) = conn();
        pool.put_back((peer, Direction::Reads), read_conn);
        assert!(pool.take((peer, Direction::Reads)).is_some());
        assert!(pool.take((peer, Direction::Writes)).is_some());
        let mut mixed = job("127.0.0.1:5000", Opcode::Read, 8);
        mixed.extend(job("127.0.0.1:5000", Opcode::Write, 8));
        assert_eq!(Direction::of(&mixed), Direction::Writes);
        let (c, _c) = conn();
        pool.put_back((peer, Direction::Reads), c);
        pool.forget(peer);
        assert!(pool.take((peer, Direction::Reads)).is_none());
    }

    #[test]
    fn large_jobs_of_one_kind_stripe() {
        let mib = 1 << 20;
        let remote_read = job("10.0.0.2:5000", Opcode::Read, mib + 3);
        assert_eq!(pieces(&stripe(&remote_read)).len(), 4);
        assert_eq!(pieces(&stripe(&remote_read)).iter().sum::<u64>(), mib + 3);
        let local_read = job("127.0.0.1:5000", Opcode::Read, mib);
        assert_eq!(pieces(&stripe(&local_read)).len(), 2);
        let local_write = job("127.0.0.1:5000", Opcode::Write, mib);
        assert_eq!(pieces(&stripe(&local_write)).len(), 2);
        let remote_write = job("10.0.0.2:5000", Opcode::Write, mib);
        assert_eq!(pieces(&stripe(&remote_write)), vec![mib / 2; 2]);
        let local_large = job("127.0.0.1:5000", Opcode::Read, 16 * mib);
        assert_eq!(pieces(&stripe(&local_large)), vec![4 * mib; 4]);
        let (remote, local) = ("10.0.0.2:5000", "127.0.0.1:5000");
        assert!(lanes_preferred(&job(remote, Opcode::Write, 16 * mib)));
        assert!(!lanes_preferred(&job(remote, Opcode::Read, 4 * mib)));
        assert!(!lanes_preferred(&job(local, Opcode::Read, 16 * mib)));
        let small = job("10.0.0.2:5000", Opcode::Read, 300 << 10);
        assert_eq!(pieces(&stripe(&small)), vec![300 << 10]);
        let mut mixed = job("10.0.0.2:5000", Opcode::Read, mib);
        mixed.extend(job("10.0.0.2:5000", Opcode::Write, mib));
        assert_eq!(pieces(&stripe(&mixed)), vec![2 * mib]);
    }
}
