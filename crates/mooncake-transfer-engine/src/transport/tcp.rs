//! [`TcpTransport`]: a peer reached over Mooncake's v2 TCP data path.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Job, Transport};
use crate::codec::ProtoVersion;
use crate::tcp::{TcpClient, WireOp};
use crate::TransferRequest;

/// Where a peer's TCP data listener is and which framing it speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// The peer's data address.
    pub(crate) data: SocketAddr,
    /// The framing both sides speak.
    pub(crate) version: ProtoVersion,
}

/// The carrier to a peer over TCP: requests are sliced and handed to the engine's
/// [`TcpClient`] (shared by every peer), which pools and pipelines the connections.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    client: Arc<TcpClient>,
    route: Route,
    /// At most this many bytes per wire request (at least 1).
    slice_size: u64,
}

impl TcpTransport {
    /// A carrier to `route` through `client`, slicing requests at `slice_size` bytes.
    pub(crate) fn new(client: Arc<TcpClient>, route: Route, slice_size: u64) -> Self {
        Self {
            client,
            route,
            slice_size: slice_size.max(1),
        }
    }

    /// The wire requests of `r`: slices of at most `slice_size` bytes, so that a large
    /// request spreads over several connections.
    fn slices(&self, r: &TransferRequest) -> impl Iterator<Item = WireOp> {
        let (slice, route, r) = (self.slice_size, self.route, *r);
        (0..r.length.div_ceil(slice)).map(move |k| {
            let offset = k * slice;
            WireOp {
                peer: route.data,
                version: route.version,
                opcode: r.opcode,
                local_addr: r.source + offset,
                remote_addr: r.target_offset.wrapping_add(offset),
                len: slice.min(r.length - offset),
            }
        })
    }
}

#[async_trait]
impl Transport for TcpTransport {
    fn name(&self) -> &'static str {
        "tcp"
    }

    /// All the jobs' slices go to the client together, so that they share connections,
    /// vectored writes and answer reads instead of each paying its own round of wake-ups.
    async fn carry(&self, jobs: &mut [Job]) {
        let mut ops = Vec::new();
        let mut owner = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            for op in self.slices(&job.request) {
                ops.push((op, job.local.clone()));
                owner.push(i);
            }
        }
        for (i, result) in owner.into_iter().zip(self.client.execute_many(ops).await) {
            let job = &mut jobs[i];
            if let (Err(e), true) = (result, job.outcome.is_ok()) {
                job.outcome = Err(e);
            }
        }
    }

    /// On a connection of the caller's own (see [`TcpClient::exchange_only`]); declines
    /// peers that speak the old framing. The region clones are gone when it returns.
    async fn carry_lent(&self, jobs: &[Job]) -> bool {
        let mut ops = Vec::new();
        for job in jobs {
            ops.extend(self.slices(&job.request).map(|op| (op, job.local.clone())));
        }
        let done = self.client.exchange_only(&ops).await;
        drop(ops);
        done.is_some_and(|results| results.iter().all(Result::is_ok))
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        Some(self.route.data)
    }

    fn forget(&self) {
        self.client.forget(self.route.data);
    }
}
