//! The server side of the TCP data path: serves READ and WRITE requests inside the
//! engine's registered buffers, refuses everything else, never panics on bad frames.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::write_all_vectored;
use crate::codec::{Header, Opcode, ProtoVersion, Status, HEADER_LEN};
use crate::engine::SharedRegistry;

/// Accepts data connections until `shutdown` turns true; at most `max_connections` are
/// served at once (further peers wait in the accept backlog).
pub(crate) async fn serve(
    listener: TcpListener,
    registry: SharedRegistry,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let registry = registry.clone();
                conns.spawn(async move {
                    if let Err(e) = serve_connection(stream, &registry).await {
                        tracing::debug!(%peer, error = %e, "data connection closed");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the data listener");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    conns.shutdown().await;
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("truncated header ({0} of 24 bytes)")]
    TruncatedHeader(usize),
    #[error("refused {0:?}: not inside one registered buffer")]
    Refused(Header),
}

/// Bytes read ahead: pipelined headers (and the start of WRITE payloads) arrive in one
/// syscall instead of one per header.
const READ_AHEAD: usize = 4 * 1024;

/// Reads a header; `Ok(None)` on a clean end of stream at a header boundary.
async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Option<Header>, ConnError> {
    let mut buf = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ConnError::TruncatedHeader(got))
            };
        }
        got += n;
    }
    Ok(Some(Header::decode(&buf)))
}

async fn serve_connection(
    mut stream: TcpStream,
    registry: &SharedRegistry,
) -> Result<(), ConnError> {
    let ok = Status::Ok.encode();
    let (rd, mut wr) = stream.split();
    let mut rd = BufReader::with_capacity(READ_AHEAD, rd);
    while let Some(header) = read_header(&mut rd).await? {
        let region = registry
            .read()
            .find(header.addr, header.size)
            .map(|e| e.value.clone());
        let (Some(region), Ok(len)) = (region, usize::try_from(header.size)) else {
            if header.version == ProtoVersion::V2 {
                wr.write_all(&Status::Rejected.encode()).await?;
            }
            return Err(ConnError::Refused(header));
        };
        match header.opcode {
            Opcode::Write => {
                rd.read_exact(region.slice_mut(header.addr, len)).await?;
                if header.version == ProtoVersion::V2 {
                    wr.write_all(&ok).await?;
                }
            }
            Opcode::Read => {
                let data = region.slice(header.addr, len);
                let status: &[u8] = if header.version == ProtoVersion::V2 {
                    &ok
                } else {
                    &[]
                };
                write_all_vectored(&mut wr, &mut [status, data]).await?;
            }
        }
    }
    Ok(())
}
