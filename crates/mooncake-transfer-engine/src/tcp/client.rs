//! The initiator side of the TCP data path: pipelined lanes per peer.
//!
//! Each peer gets up to `lanes_per_peer` persistent connections ("lanes"). A lane is a
//! pair of tasks: the writer sends header (and payload) of each request as soon as it is
//! queued, without waiting for the previous answer; the reader consumes status frames (and
//! READ payloads) in the same order. The server sees an ordinary sequence of requests on a
//! persistent connection, exactly what the C++ client sends, only without gaps.
//!
//! When a request fails (rejection, broken connection, timeout) the lane closes; the
//! requests queued behind it on that lane are retried on a fresh lane, so one bad request
//! never fails its neighbours. READ and WRITE are idempotent, which makes the retry safe.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mooncake_metadata::AuthToken;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use super::direct::{direct_eligible, lanes_preferred, DirectPool};
use super::write_all_vectored;
use crate::codec::{Opcode, ProtoVersion, Status, STATUS_LEN};
use crate::memory::Region;
use crate::TransferError;

/// Requests sent ahead of their answers on one lane.
const PIPELINE_DEPTH: usize = 32;
/// Attempts of a request whose lane failed because of another request.
const ATTEMPTS: usize = 3;

/// Settings of the TCP initiator.
#[derive(Debug, Clone)]
pub(crate) struct TcpClientConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) lanes_per_peer: usize,
    /// Presented on every new lane before any request.
    pub(crate) auth_token: Option<AuthToken>,
}

/// One request on the wire: local range, remote range, direction, framing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireOp {
    pub(crate) peer: SocketAddr,
    pub(crate) version: ProtoVersion,
    pub(crate) opcode: Opcode,
    pub(crate) local_addr: u64,
    pub(crate) remote_addr: u64,
    pub(crate) len: u64,
}

/// How a queued request ended.
#[derive(Debug)]
enum Outcome {
    Done(Result<(), TransferError>),
    /// The lane failed because of an earlier request; try again elsewhere.
    Aborted,
}

/// Requests queued together on one lane: written back to back, answered in order,
/// reported together.
struct Job {
    ops: Vec<(WireOp, Arc<Region>)>,
    done: oneshot::Sender<Vec<Outcome>>,
}

impl Job {
    fn bytes(&self) -> u64 {
        self.ops.iter().map(|(op, _)| op.len).sum()
    }

    fn abort(self) {
        let n = self.ops.len();
        self.finish((0..n).map(|_| Outcome::Aborted).collect());
    }

    /// Reports `outcomes`, dropping the job's region clones first: once the caller hears
    /// back, no clone of memory it lent for the call is left in a lane.
    fn finish(self, outcomes: Vec<Outcome>) {
        let Job { ops, done } = self;
        drop(ops);
        let _ = done.send(outcomes);
    }
}

#[derive(Debug, Default)]
struct Lane {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    load: AtomicU64,
}

#[derive(Debug)]
struct Peer {
    lanes: Vec<Lane>,
}

/// Bytes a batch must carry per lane before it is spread over another lane: small
/// batches stay on one connection (fewest syscalls and wake-ups), large ones use them all.
const SPREAD_BYTES: u64 = 256 << 10;
/// Charged per request on top of its bytes when balancing lanes.
const REQUEST_WEIGHT: u64 = 4096;

/// Pipelined lanes per peer.
#[derive(Debug)]
pub(crate) struct TcpClient {
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    /// Connections for the jobs the caller runs itself (see `direct_eligible`).
    direct: DirectPool,
    config: TcpClientConfig,
}

impl TcpClient {
    pub(crate) fn new(config: TcpClientConfig) -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
            direct: DirectPool::default(),
            config,
        }
    }

    fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        let lanes = self.config.lanes_per_peer.max(1);
        self.peers
            .lock()
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Peer {
                    lanes: (0..lanes).map(|_| Lane::default()).collect(),
                })
            })
            .clone()
    }

    /// Closes every lane to `addr` (after a failure, or when the peer moved).
    pub(crate) fn forget(&self, addr: SocketAddr) {
        self.peers.lock().remove(&addr);
        self.direct.forget(addr);
    }

    /// Runs requests (to one peer or several; each peer's requests in one framing) and
    /// reports each one's outcome, in order. A job the caller can exchange itself is
    /// exchanged directly, every peer's part at once ([`DirectPool::exchange`]). The rest
    /// is spread over as many of each peer's lanes as its bytes warrant ([`SPREAD_BYTES`]
    /// per lane), and each lane gets its share as one job: headers and payloads leave in
    /// few vectored writes and the answers are read in one pass. Requests aborted by a
    /// neighbour's failure are retried on fresh lanes.
    pub(crate) async fn execute_many(
        &self,
        ops: Vec<(WireOp, Arc<Region>)>,
    ) -> Vec<Result<(), TransferError>> {
        let mut results: Vec<Option<Result<(), TransferError>>> =
            ops.iter().map(|_| None).collect();
        if direct_eligible(&ops) && !lanes_preferred(&ops) {
            // The caller exchanges the job itself; what that left undone (a broken
            // connection) goes to the lanes below.
            results = self.direct.exchange(&ops, &self.config).await;
        }
        let mut pending: Vec<usize> = (0..ops.len()).filter(|&i| results[i].is_none()).collect();
        while let Some(&first) = pending.first() {
            let addr = ops[first].0.peer;
            let (mine, rest) = pending.into_iter().partition(|&i| ops[i].0.peer == addr);
            self.on_lanes(addr, &ops, mine, &mut results).await;
            pending = rest;
        }
        results
            .into_iter()
            .zip(&ops)
            .map(|(r, (op, _))| {
                r.unwrap_or_else(|| {
                    Err(TransferError::Io {
                        peer: op.peer,
                        what: "transfer (connection kept failing)",
                        source: std::io::ErrorKind::ConnectionAborted.into(),
                    })
                })
            })
            .collect()
    }

    /// Runs the `pending` requests of `ops` (all to `addr`) on that peer's lanes, with
    /// [`ATTEMPTS`] tries for those a neighbour's failure aborted; fills their `results`.
    async fn on_lanes(
        &self,
        addr: SocketAddr,
        ops: &[(WireOp, Arc<Region>)],
        mut pending: Vec<usize>,
        results: &mut [Option<Result<(), TransferError>>],
    ) {
        let peer = self.peer(addr);
        for _ in 0..ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let shares = self.assign(&peer, ops, &pending);
            let mut waits = Vec::with_capacity(shares.len());
            for (lane, idx) in shares {
                let job_ops: Vec<_> = idx.iter().map(|&i| ops[i].clone()).collect();
                let weight = weight(&job_ops);
                lane.load.fetch_add(weight, Ordering::Relaxed);
                let answer = self.submit(lane, job_ops).await;
                waits.push((lane, weight, idx, answer));
            }
            let mut again = Vec::new();
            for (lane, weight, idx, answer) in waits {
                let outcomes = match answer {
                    Some(rx) => rx.await.unwrap_or_default(),
                    None => Vec::new(),
                };
                lane.load.fetch_sub(weight, Ordering::Relaxed);
                let mut outcomes = outcomes.into_iter();
                for i in idx {
                    match outcomes.next() {
                        Some(Outcome::Done(r)) => results[i] = Some(r),
                        Some(Outcome::Aborted) | None => again.push(i),
                    }
                }
            }
            pending = again;
        }
    }

    /// Runs `ops` on a connection of the caller's own only (for memory lent for the call;
    /// only large lent READs reach the lanes, see `transport/tcp.rs`). `None` unless
    /// every request completed
    /// there, or was refused on its own.
    pub(crate) async fn exchange_only(
        &self,
        ops: &[(WireOp, Arc<Region>)],
    ) -> Option<Vec<Result<(), TransferError>>> {
        if !direct_eligible(ops) {
            return None;
        }
        self.direct
            .exchange(ops, &self.config)
            .await
            .into_iter()
            .collect()
    }

    /// Splits `pending` requests between the least-loaded lanes of `peer`: one lane per
    /// [`SPREAD_BYTES`], each request to the lane with the least bytes so far.
    fn assign<'p>(
        &self,
        peer: &'p Peer,
        ops: &[(WireOp, Arc<Region>)],
        pending: &[usize],
    ) -> Vec<(&'p Lane, Vec<usize>)> {
        if pending
            .first()
            .is_some_and(|&i| ops[i].0.version == ProtoVersion::V1)
        {
            // v1 WRITEs have no answer and complete as they leave: one job each.
            let mut lanes: Vec<&Lane> = peer.lanes.iter().collect();
            lanes.sort_by_key(|l| l.load.load(Ordering::Relaxed));
            return pending
                .iter()
                .zip(lanes.iter().cycle())
                .map(|(&i, lane)| (*lane, vec![i]))
                .collect();
        }
        let total: u64 = pending.iter().map(|&i| ops[i].0.len + REQUEST_WEIGHT).sum();
        let wanted = usize::try_from(total.div_ceil(SPREAD_BYTES))
            .unwrap_or(usize::MAX)
            .clamp(1, peer.lanes.len().max(1));
        let mut lanes: Vec<&Lane> = peer.lanes.iter().collect();
        lanes.sort_by_key(|l| l.load.load(Ordering::Relaxed));
        lanes.truncate(wanted);
        let mut shares: Vec<(&Lane, Vec<usize>, u64)> =
            lanes.into_iter().map(|l| (l, Vec::new(), 0)).collect();
        for &i in pending {
            let Some(share) = shares.iter_mut().min_by_key(|s| s.2) else {
                break;
            };
            share.1.push(i);
            share.2 += ops[i].0.len + REQUEST_WEIGHT;
        }
        shares
            .into_iter()
            .filter(|s| !s.1.is_empty())
            .map(|(l, idx, _)| (l, idx))
            .collect()
    }

    /// Queues `ops` on `lane` (starting its connection if needed); `None` if the lane
    /// closed before taking them.
    async fn submit(
        &self,
        lane: &Lane,
        ops: Vec<(WireOp, Arc<Region>)>,
    ) -> Option<oneshot::Receiver<Vec<Outcome>>> {
        let peer = ops.first()?.0.peer;
        let (done, answer) = oneshot::channel();
        let job = Job { ops, done };
        let tx = {
            let mut slot = lane.tx.lock();
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
                    tokio::spawn(run_lane(peer, rx, self.config.clone()));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        match tx.send(job).await {
            Ok(()) => Some(answer),
            Err(mpsc::error::SendError(job)) => {
                job.abort();
                Some(answer)
            }
        }
    }
}

/// The same connection failure, reported to each request it failed.
pub(super) fn again(e: &TransferError) -> TransferError {
    match e {
        TransferError::Io { peer, what, source } => TransferError::Io {
            peer: *peer,
            what,
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        TransferError::Timeout { peer, timeout } => TransferError::Timeout {
            peer: *peer,
            timeout: *timeout,
        },
        TransferError::Unauthenticated { peer, reason } => TransferError::Unauthenticated {
            peer: *peer,
            reason,
        },
        TransferError::BadStatus { peer, frame } => TransferError::BadStatus {
            peer: *peer,
            frame: *frame,
        },
        other => TransferError::InvalidArgument(other.to_string()),
    }
}

fn weight(ops: &[(WireOp, Arc<Region>)]) -> u64 {
    ops.iter().map(|(op, _)| op.len + REQUEST_WEIGHT).sum()
}

pub(super) async fn connect(
    addr: SocketAddr,
    config: &TcpClientConfig,
) -> Result<TcpStream, TransferError> {
    let io = |source| TransferError::Io {
        peer: addr,
        what: "connect",
        source,
    };
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| TransferError::Timeout {
            peer: addr,
            timeout: config.connect_timeout,
        })?
        .map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    if let Some(token) = &config.auth_token {
        let mut stream = stream;
        authenticate(&mut stream, addr, token, config.io_timeout).await?;
        return Ok(stream);
    }
    Ok(stream)
}

/// Presents `token` on a fresh connection and waits for the server's verdict.
async fn authenticate(
    stream: &mut TcpStream,
    addr: SocketAddr,
    token: &AuthToken,
    timeout: Duration,
) -> Result<(), TransferError> {
    let exchange = async {
        let mut frame = crate::codec::auth_header(token.as_bytes().len()).to_vec();
        frame.extend_from_slice(token.as_bytes());
        stream.write_all(&frame).await?;
        let mut status = [0u8; STATUS_LEN];
        stream.read_exact(&mut status).await?;
        Ok::<_, std::io::Error>(status)
    };
    let status = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| TransferError::Timeout {
            peer: addr,
            timeout,
        })?
        .map_err(|source| TransferError::Io {
            peer: addr,
            what: "authentication",
            source,
        })?;
    match Status::decode(&status) {
        Some(Status::Ok) => Ok(()),
        Some(Status::Unauthenticated) => Err(TransferError::Unauthenticated {
            peer: addr,
            reason: "it refused this engine's token (is MOONCAKE_AUTH_TOKEN the same on both?)",
        }),
        Some(Status::Rejected) => Err(TransferError::Unauthenticated {
            peer: addr,
            reason: "it does not take tokens (a C++ engine?); unset the token to talk to it",
        }),
        _ => Err(TransferError::BadStatus {
            peer: addr,
            frame: status,
        }),
    }
}

/// One lane: connects, then pipes requests through writer and reader until an error or
/// until every sender is gone.
async fn run_lane(addr: SocketAddr, mut rx: mpsc::Receiver<Job>, config: TcpClientConfig) {
    let stream = match connect(addr, &config).await {
        Ok(s) => s,
        Err(e) => {
            // Fail the first waiting job with the real error; the rest retry.
            if let Some(job) = rx.recv().await {
                let outcomes = job
                    .ops
                    .iter()
                    .map(|_| Outcome::Done(Err(again(&e))))
                    .collect();
                job.finish(outcomes);
            }
            return;
        }
    };
    let (rd, wr) = stream.into_split();
    let (inflight_tx, inflight_rx) = mpsc::channel::<Job>(PIPELINE_DEPTH);
    let failed = Arc::new(Notify::new());
    let writer = write_loop(wr, &mut rx, inflight_tx, failed.clone());
    let reader = read_loop(rd, inflight_rx, &config, failed);
    tokio::join!(writer, reader);
}

/// Requests per vectored write (headers and payloads of several requests leave in one
/// syscall).
const COALESCE_REQUESTS: usize = 64;
/// Payload bytes per vectored write.
const COALESCE_BYTES: u64 = 1 << 20;
/// Bytes read ahead by the answer reader: status frames and small READ payloads of
/// pipelined requests arrive several per syscall.
const READ_AHEAD: usize = 32 * 1024;

/// Whether a job is a v1 WRITE, which has no answer: it completes once its payload left
/// the socket. `execute_many` gives each one a job of its own.
fn unanswered(job: &Job) -> bool {
    matches!(job.ops.as_slice(), [(op, _)] if op.version == ProtoVersion::V1 && op.opcode == Opcode::Write)
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Job>,
    inflight: mpsc::Sender<Job>,
    failed: Arc<Notify>,
) {
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job { Some(j) => j, None => return },
            _ = failed.notified() => return,
        };
        let mut jobs = vec![first];
        let (mut count, mut bytes) = (jobs[0].ops.len(), jobs[0].bytes());
        while count < COALESCE_REQUESTS && bytes < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    count += j.ops.len();
                    bytes += j.bytes();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // READs need no memory here: only WRITE payloads keep their region (a READ's may
        // be memory lent for one call, which must be released with its answer).
        let ops: Vec<(WireOp, Option<Arc<Region>>)> = jobs
            .iter()
            .flat_map(|j| j.ops.iter())
            .map(|(op, local)| (*op, (op.opcode == Opcode::Write).then(|| local.clone())))
            .collect();
        // Every answered job is queued for the reader first, so that if the server
        // rejects and closes while we write, the reader reports the rejection for that
        // very request.
        let mut silent = Vec::new();
        for job in jobs {
            if unanswered(&job) {
                silent.push(job);
            } else if let Err(mpsc::error::SendError(job)) = inflight.send(job).await {
                job.abort();
                silent.into_iter().for_each(Job::abort);
                return;
            }
        }
        let sent = write_ops(&mut wr, &ops).await;
        let ok = sent.is_ok();
        for job in silent {
            let result = match &sent {
                Ok(()) => Ok(()),
                Err(e) => Err(TransferError::Io {
                    peer: job.ops[0].0.peer,
                    what: "write of the payload",
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }),
            };
            job.finish(vec![Outcome::Done(result)]);
        }
        if !ok {
            return;
        }
    }
}

/// Writes the headers (and WRITE payloads) of `ops`, at most [`COALESCE_REQUESTS`]
/// requests or about [`COALESCE_BYTES`] per vectored write.
async fn write_ops(
    wr: &mut OwnedWriteHalf,
    ops: &[(WireOp, Option<Arc<Region>>)],
) -> std::io::Result<()> {
    let headers: Vec<_> = ops.iter().map(|(op, _)| super::header(op)).collect();
    let mut at = 0;
    while at < ops.len() {
        let mut bufs: Vec<&[u8]> = Vec::new();
        let mut bytes = 0u64;
        while at < ops.len() && bufs.len() < 2 * COALESCE_REQUESTS && bytes < COALESCE_BYTES {
            let (op, local) = &ops[at];
            bufs.push(&headers[at]);
            if let Some(local) = local.as_ref().filter(|_| op.opcode == Opcode::Write) {
                bufs.push(local.slice(op.local_addr, op.len as usize));
                bytes += op.len;
            }
            at += 1;
        }
        write_all_vectored(wr, &mut bufs).await?;
    }
    Ok(())
}

async fn read_loop(
    rd: OwnedReadHalf,
    mut inflight: mpsc::Receiver<Job>,
    config: &TcpClientConfig,
    failed: Arc<Notify>,
) {
    let mut rd = BufReader::with_capacity(READ_AHEAD, rd);
    while let Some(job) = inflight.recv().await {
        let mut outcomes = Vec::with_capacity(job.ops.len());
        let mut ok = true;
        for (op, local) in &job.ops {
            if !ok {
                outcomes.push(Outcome::Aborted);
                continue;
            }
            // The status timeout plus 10 ns per byte (100 MB/s at worst).
            let deadline = config.io_timeout + Duration::from_nanos(op.len.saturating_mul(10));
            let result = match tokio::time::timeout(deadline, complete(&mut rd, op, local)).await {
                Ok(r) => r,
                Err(_) => Err(TransferError::Timeout {
                    peer: op.peer,
                    timeout: deadline,
                }),
            };
            ok = result.is_ok();
            // A connection that breaks under a request may have been broken by a
            // neighbour (a server that refuses one request closes the connection, and a
            // reset can destroy answers already sent): retry it on a fresh lane.
            // Rejections and timeouts are the request's own.
            outcomes.push(match result {
                Err(TransferError::Io { .. }) => Outcome::Aborted,
                other => Outcome::Done(other),
            });
        }
        job.finish(outcomes);
        if !ok {
            failed.notify_one();
            inflight.close();
            while let Some(rest) = inflight.recv().await {
                rest.abort();
            }
            return;
        }
    }
}

/// Reads what the server answers to one request (status frame, READ payload).
async fn complete(
    rd: &mut BufReader<OwnedReadHalf>,
    op: &WireOp,
    local: &Region,
) -> Result<(), TransferError> {
    if op.version == ProtoVersion::V2 {
        let mut frame = [0u8; STATUS_LEN];
        rd.read_exact(&mut frame)
            .await
            .map_err(|source| TransferError::Io {
                peer: op.peer,
                what: "read of the status frame",
                source,
            })?;
        match Status::decode(&frame) {
            Some(Status::Ok) => {}
            Some(Status::Rejected) => {
                return Err(TransferError::Rejected {
                    peer: op.peer,
                    addr: op.remote_addr,
                    len: op.len,
                })
            }
            Some(Status::Unauthenticated) => return Err(TransferError::Unauthenticated {
                peer: op.peer,
                reason:
                    "it needs the cluster's token and this engine has none (MOONCAKE_AUTH_TOKEN)",
            }),
            _ => {
                return Err(TransferError::BadStatus {
                    peer: op.peer,
                    frame,
                })
            }
        }
    }
    if op.opcode == Opcode::Read {
        #[allow(unsafe_code)]
        // SAFETY: one writer per range (the store protocol), and the slice lives for this read.
        let dst = unsafe { local.slice_mut(op.local_addr, op.len as usize) };
        rd.read_exact(dst)
            .await
            .map_err(|source| TransferError::Io {
                peer: op.peer,
                what: "read of the payload",
                source,
            })?;
    }
    Ok(())
}
