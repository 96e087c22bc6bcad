//! The initiator side of the TCP data path: pooled persistent connections per peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::write_all_vectored;
use crate::codec::{Header, Opcode, ProtoVersion, Status, STATUS_LEN};
use crate::memory::Region;
use crate::TransferError;

/// Settings of the TCP initiator.
#[derive(Debug, Clone)]
pub(crate) struct TcpClientConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) max_connections_per_peer: usize,
}

#[derive(Debug)]
struct Peer {
    idle: Mutex<Vec<TcpStream>>,
    permits: Semaphore,
}

/// A pool of persistent connections per peer, bounded by a semaphore.
#[derive(Debug)]
pub(crate) struct TcpClient {
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    config: TcpClientConfig,
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

impl TcpClient {
    pub(crate) fn new(config: TcpClientConfig) -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
            config,
        }
    }

    fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        self.peers
            .lock()
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Peer {
                    idle: Mutex::new(Vec::new()),
                    permits: Semaphore::new(self.config.max_connections_per_peer),
                })
            })
            .clone()
    }

    /// Drops every idle connection to `addr` (after a failure, or when the peer moved).
    pub(crate) fn forget(&self, addr: SocketAddr) {
        if let Some(p) = self.peers.lock().get(&addr) {
            p.idle.lock().clear();
        }
    }

    /// Runs one request; the connection goes back to the pool only after a clean exchange.
    pub(crate) async fn execute(&self, op: WireOp, local: &Region) -> Result<(), TransferError> {
        let peer = self.peer(op.peer);
        let _permit = peer
            .permits
            .acquire()
            .await
            .map_err(|_| TransferError::Shutdown)?;
        let pooled = peer.idle.lock().pop();
        let mut stream = match pooled {
            Some(s) => s,
            None => self.connect(op.peer).await?,
        };
        // Time allowed: the status timeout plus 10 ns per byte (100 MB/s at worst).
        let deadline = self.config.io_timeout + Duration::from_nanos(op.len.saturating_mul(10));
        match tokio::time::timeout(deadline, exchange(&mut stream, op, local)).await {
            Ok(Ok(())) => {
                peer.idle.lock().push(stream);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransferError::Timeout {
                peer: op.peer,
                timeout: deadline,
            }),
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, TransferError> {
        let io = |source| TransferError::Io {
            peer: addr,
            what: "connect",
            source,
        };
        let stream = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| TransferError::Timeout {
                peer: addr,
                timeout: self.config.connect_timeout,
            })?
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(stream)
    }
}

async fn read_status(stream: &mut TcpStream, op: &WireOp) -> Result<(), TransferError> {
    let mut frame = [0u8; STATUS_LEN];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|source| TransferError::Io {
            peer: op.peer,
            what: "read of the status frame",
            source,
        })?;
    match Status::decode(&frame) {
        Some(Status::Ok) => Ok(()),
        Some(Status::Rejected) => Err(TransferError::Rejected {
            peer: op.peer,
            addr: op.remote_addr,
            len: op.len,
        }),
        _ => Err(TransferError::BadStatus {
            peer: op.peer,
            frame,
        }),
    }
}

async fn exchange(stream: &mut TcpStream, op: WireOp, local: &Region) -> Result<(), TransferError> {
    let header = Header {
        size: op.len,
        addr: op.remote_addr,
        opcode: op.opcode,
        version: op.version,
    }
    .encode();
    let len = usize::try_from(op.len)
        .map_err(|_| TransferError::InvalidArgument("length exceeds usize".into()))?;
    let io = |what| {
        move |source| TransferError::Io {
            peer: op.peer,
            what,
            source,
        }
    };
    match op.opcode {
        Opcode::Write => {
            let payload = local.slice(op.local_addr, len);
            if let Err(e) = write_all_vectored(stream, &mut [&header, payload]).await {
                // The server refuses a bad address before reading the payload and closes;
                // report its rejection frame rather than the broken pipe, if it arrived.
                if op.version == ProtoVersion::V2 {
                    if let Ok(Err(rejected @ TransferError::Rejected { .. })) =
                        tokio::time::timeout(Duration::from_millis(100), read_status(stream, &op))
                            .await
                    {
                        return Err(rejected);
                    }
                }
                return Err(io("write of the payload")(e));
            }
            if op.version == ProtoVersion::V2 {
                read_status(stream, &op).await?;
            }
        }
        Opcode::Read => {
            stream
                .write_all(&header)
                .await
                .map_err(io("write of the header"))?;
            if op.version == ProtoVersion::V2 {
                read_status(stream, &op).await?;
            }
            stream
                .read_exact(local.slice_mut(op.local_addr, len))
                .await
                .map_err(io("read of the payload"))?;
        }
    }
    Ok(())
}
