//! The TCP transport: Mooncake's v2 data path, server and client.

mod client;
mod direct;
mod input;
mod server;
mod together;

pub(crate) use client::{TcpClient, TcpClientConfig, WireOp};
pub(crate) use direct::{
    direct_eligible, lanes_preferred, DIRECT_MAX_REQUESTS, DIRECT_ONE_WAY_MAX_BYTES,
};
pub(crate) use server::serve;

use std::io::IoSlice;

use crate::codec::{Header, HEADER_LEN};

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Buffers per vectored write at most (the kernel's `IOV_MAX` is 1024).
pub(crate) const MAX_IOV: usize = 512;

/// Writes every byte of `bufs` with vectored writes (header and payload in one syscall).
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    bufs: &mut [&[u8]],
) -> std::io::Result<()> {
    let mut first = 0;
    while first < bufs.len() {
        if bufs[first].is_empty() {
            first += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = bufs[first..].iter().map(|b| IoSlice::new(b)).collect();
        let n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        first = crate::conn::advance(bufs, first, n);
    }
    w.flush().await
}

/// The wire headers of `ops`, in order.
pub(crate) fn headers(
    ops: &[(WireOp, std::sync::Arc<crate::memory::Region>)],
) -> Vec<[u8; HEADER_LEN]> {
    ops.iter().map(|(op, _)| header(op)).collect()
}

/// The wire header of `op`.
pub(crate) fn header(op: &WireOp) -> [u8; HEADER_LEN] {
    Header {
        size: op.len,
        addr: op.remote_addr,
        opcode: op.opcode,
        version: op.version,
    }
    .encode()
}
