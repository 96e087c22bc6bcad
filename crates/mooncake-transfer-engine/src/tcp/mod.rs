//! The TCP transport: Mooncake's v2 data path, server and client.

mod client;
mod direct;
mod server;

pub(crate) use client::{TcpClient, TcpClientConfig, WireOp};
pub(crate) use server::serve;

use std::io::IoSlice;

use tokio::io::{AsyncWrite, AsyncWriteExt};

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
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < bufs.len() {
            let take = n.min(bufs[first].len());
            bufs[first] = &bufs[first][take..];
            n -= take;
            if bufs[first].is_empty() {
                first += 1;
            }
        }
    }
    w.flush().await
}
