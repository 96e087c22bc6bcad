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

use super::write_all_vectored;
use crate::codec::{Header, Opcode, ProtoVersion, Status, HEADER_LEN, STATUS_LEN};
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
enum Outcome {
    Done(Result<(), TransferError>),
    /// The lane failed because of an earlier request; try again elsewhere.
    Aborted,
}

struct Job {
    op: WireOp,
    local: Arc<Region>,
    done: oneshot::Sender<Outcome>,
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

/// Pipelined lanes per peer.
#[derive(Debug)]
pub(crate) struct TcpClient {
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    config: TcpClientConfig,
}

impl TcpClient {
    pub(crate) fn new(config: TcpClientConfig) -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
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
    }

    /// Runs one request on the least-loaded lane of its peer.
    pub(crate) async fn execute(
        &self,
        op: WireOp,
        local: &Arc<Region>,
    ) -> Result<(), TransferError> {
        let peer = self.peer(op.peer);
        for _ in 0..ATTEMPTS {
            let lane = peer
                .lanes
                .iter()
                .min_by_key(|l| l.load.load(Ordering::Relaxed))
                .ok_or(TransferError::Shutdown)?;
            lane.load.fetch_add(op.len + 4096, Ordering::Relaxed);
            let outcome = self.submit(lane, op, local).await;
            lane.load.fetch_sub(op.len + 4096, Ordering::Relaxed);
            if let Outcome::Done(result) = outcome {
                return result;
            }
        }
        Err(TransferError::Io {
            peer: op.peer,
            what: "transfer (connection kept failing)",
            source: std::io::ErrorKind::ConnectionAborted.into(),
        })
    }

    async fn submit(&self, lane: &Lane, op: WireOp, local: &Arc<Region>) -> Outcome {
        let (done, answer) = oneshot::channel();
        let mut job = Job {
            op,
            local: local.clone(),
            done,
        };
        let tx = {
            let mut slot = lane.tx.lock();
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
                    tokio::spawn(run_lane(op.peer, rx, self.config.clone()));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        if let Err(mpsc::error::SendError(back)) = tx.send(job).await {
            job = back;
            drop(job);
            return Outcome::Aborted;
        }
        answer.await.unwrap_or(Outcome::Aborted)
    }
}

async fn connect(addr: SocketAddr, config: &TcpClientConfig) -> Result<TcpStream, TransferError> {
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
            // Fail the first waiting request with the real error; the rest retry.
            if let Some(job) = rx.recv().await {
                let _ = job.done.send(Outcome::Done(Err(e)));
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

/// Requests coalesced into one vectored write (headers and payloads of several requests
/// leave in one syscall when they queue up).
const COALESCE_REQUESTS: usize = 16;
/// Payload bytes coalesced into one vectored write.
const COALESCE_BYTES: u64 = 1 << 20;

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
        let mut bytes = jobs[0].op.len;
        while jobs.len() < COALESCE_REQUESTS && bytes < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.op.len;
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<(WireOp, Arc<Region>)> =
            jobs.iter().map(|j| (j.op, j.local.clone())).collect();
        // A v1 WRITE has no answer: it completes once the payload left the socket. Every
        // other request is queued for the reader first, so that if the server rejects and
        // closes while we write, the reader reports the rejection for that very request.
        let mut unanswered = Vec::new();
        for job in jobs {
            if job.op.version == ProtoVersion::V1 && job.op.opcode == Opcode::Write {
                unanswered.push(job);
            } else if inflight.send(job).await.is_err() {
                return;
            }
        }
        let headers: Vec<[u8; HEADER_LEN]> = ops
            .iter()
            .map(|(op, _)| {
                Header {
                    size: op.len,
                    addr: op.remote_addr,
                    opcode: op.opcode,
                    version: op.version,
                }
                .encode()
            })
            .collect();
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(2 * ops.len());
        for ((op, local), header) in ops.iter().zip(&headers) {
            bufs.push(header);
            if op.opcode == Opcode::Write {
                bufs.push(local.slice(op.local_addr, op.len as usize));
            }
        }
        let sent = write_all_vectored(&mut wr, &mut bufs).await;
        let ok = sent.is_ok();
        for job in unanswered {
            let result = match &sent {
                Ok(()) => Ok(()),
                Err(e) => Err(TransferError::Io {
                    peer: job.op.peer,
                    what: "write of the payload",
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }),
            };
            let _ = job.done.send(Outcome::Done(result));
        }
        if !ok {
            return;
        }
    }
}

async fn read_loop(
    rd: OwnedReadHalf,
    mut inflight: mpsc::Receiver<Job>,
    config: &TcpClientConfig,
    failed: Arc<Notify>,
) {
    // Small answers (status frames, small READs) arrive several per syscall.
    let mut rd = BufReader::with_capacity(4 * 1024, rd);
    while let Some(job) = inflight.recv().await {
        let op = job.op;
        // The status timeout plus 10 ns per byte (100 MB/s at worst).
        let deadline = config.io_timeout + Duration::from_nanos(op.len.saturating_mul(10));
        let result = match tokio::time::timeout(deadline, complete(&mut rd, &job)).await {
            Ok(r) => r,
            Err(_) => Err(TransferError::Timeout {
                peer: op.peer,
                timeout: deadline,
            }),
        };
        let ok = result.is_ok();
        // A connection that breaks under a request may have been broken by a neighbour (a
        // server that refuses one request closes the connection, and a reset can destroy
        // answers already sent): retry it on a fresh lane. Rejections and timeouts are the
        // request's own.
        let outcome = match result {
            Err(TransferError::Io { .. }) => Outcome::Aborted,
            other => Outcome::Done(other),
        };
        let _ = job.done.send(outcome);
        if !ok {
            failed.notify_one();
            inflight.close();
            while let Some(rest) = inflight.recv().await {
                let _ = rest.done.send(Outcome::Aborted);
            }
            return;
        }
    }
}

/// Reads what the server answers to one request (status frame, READ payload).
async fn complete(rd: &mut BufReader<OwnedReadHalf>, job: &Job) -> Result<(), TransferError> {
    let op = job.op;
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
        rd.read_exact(job.local.slice_mut(op.local_addr, op.len as usize))
            .await
            .map_err(|source| TransferError::Io {
                peer: op.peer,
                what: "read of the payload",
                source,
            })?;
    }
    Ok(())
}
