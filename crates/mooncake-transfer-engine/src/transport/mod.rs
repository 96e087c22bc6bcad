//! The `Transport` seam: how this engine reaches the memory of one peer segment.
//!
//! A transport is picked per peer from the peer's segment descriptor, when the segment is
//! opened and again when it is resolved afresh after a failure (`TransferEngine::connect`
//! in `engine/peer.rs`, the only place that names the implementations). The transfer
//! path only ever talks to [`Transport`] objects:
//!
//! - [`ShmTransport`]: a same-host peer's shared-memory buffers, mapped here and reached
//!   with a `memcpy` (the copy path);
//! - [`TcpTransport`]: Mooncake's v2 TCP data path through the engine's pooled client
//!   (the carrier path).

mod shm;
mod tcp;
pub use tcp::{lent_exchanges_on_lanes, spread_exchanges, two_thread_exchanges};

pub(crate) use shm::ShmTransport;
pub(crate) use tcp::{Route, SpreadPart, TcpTransport};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::memory::Region;
use crate::{TransferError, TransferRequest};

/// One request handed to a transport's carrier path, with the local memory it uses and,
/// once carried, its outcome.
#[derive(Debug)]
pub(crate) struct Job {
    /// What to move; `source` lies inside `local`, `target_offset` is the peer's address.
    pub(crate) request: TransferRequest,
    /// The registered (or lent) local memory holding `request.source`: the transport
    /// keeps a clone while any part of the request is in flight, and none afterwards.
    pub(crate) local: Arc<Region>,
    /// `Ok` until the transport reports a failure of any part of the request (the first
    /// failure is kept).
    pub(crate) outcome: Result<(), TransferError>,
}

impl Job {
    /// A job not yet carried.
    pub(crate) fn new(request: TransferRequest, local: Arc<Region>) -> Self {
        Self {
            request,
            local,
            outcome: Ok(()),
        }
    }
}

/// How bytes reach one peer segment: the seam between the transfer path and the wires.
///
/// A peer holds its transports in two stages, both picked from its descriptor: *copy*
/// transports, asked in order for every request, inline on the caller's thread; then one
/// *carrier*, which takes every request no copy transport reached. A transport offers
/// one or both paths; the defaults decline.
///
/// - **Copy path**, [`Transport::mapped`]: the peer's memory is mapped into this process
///   and the engine copies the bytes itself (same-host shared memory: [`ShmTransport`]).
///   It must be cheap and never block: it runs per request, and a `None` costs the request
///   nothing but the call. It also serves the engine's zero-staging APIs
///   (`write_direct`, `direct_range`), which copy into memory the caller owns.
/// - **Carrier path**, [`Transport::carry`] and [`Transport::carry_lent`]: the transport
///   moves the jobs itself (TCP today: [`TcpTransport`]). The engine hands it all the
///   requests of one call to one peer together, so that it can share connections and
///   batch work; it may slice them as it likes.
///
/// Failures and recovery: a job whose outcome is [`TransferError::Io`] or
/// [`TransferError::Rejected`] is *recoverable*. The engine then calls
/// [`Transport::forget`] on the carrier, resolves the peer's descriptor again and builds
/// fresh transports; each recoverable job is retried once, through the fresh copy
/// transports or, if [`Transport::endpoint`] changed (the peer moved), the fresh carrier.
/// Other errors are final.
///
/// Adding a transport (RDMA, an NVMe-oF/SSD tier) means a new file beside `tcp.rs`
/// implementing this trait, and one arm in `TransferEngine::connect` that builds it from
/// the descriptor (`protocol: "rdma"` and its `devices`, say); no caller changes. An RDMA
/// transport is a carrier: `carry` posts one-sided READ/WRITE work requests for the
/// jobs' slices against the peer's `rkey`s (the local memory registered with the NIC,
/// keyed by the job's region) and completes each job from its completion-queue entries;
/// `carry_lent` may decline (memory lent for one call is not NIC-registered), so those
/// calls fall back to staging in registered memory; `endpoint` is the peer's NIC
/// address, so a restarted peer counts as moved. A storage tier whose files are mapped
/// into this process would instead be a copy transport and implement `mapped` alone.
#[async_trait]
pub(crate) trait Transport: fmt::Debug + Send + Sync {
    /// A short name for logs and errors (`"tcp"`, `"shm"`).
    fn name(&self) -> &'static str;

    /// Copy path: where `[remote, remote + len)` of the peer is mapped in this process
    /// (the region and the local address of `remote`), if this transport reaches all of
    /// it with a plain memory copy; `None` otherwise, and the request goes on to the
    /// next transport. `write` says that the caller will write: a transport must decline
    /// when written bytes could be acknowledged and then lost (the peer died).
    ///
    /// The default declines everything (a carrier-only transport).
    fn mapped(&self, remote: u64, len: u64, write: bool) -> Option<(Arc<Region>, u64)> {
        let _ = (remote, len, write);
        None
    }

    /// Carrier path: moves every job (all to this transport's peer; each `local` is
    /// registered memory, kept by the engine until this returns) and sets the `outcome`
    /// of each that failed, keeping the first failure of a job. Jobs may be split,
    /// reordered and run concurrently; when this returns, every job is finished.
    ///
    /// The default fails every job: a copy-only transport is never the carrier.
    async fn carry(&self, jobs: &mut [Job]) {
        for job in jobs {
            job.outcome = Err(TransferError::InvalidArgument(format!(
                "the {} transport carries no requests over the network",
                self.name()
            )));
        }
    }

    /// Carrier path for memory lent for this call only (ordinary memory, not
    /// registered): moves every job on work this call drives to the end itself, so that
    /// no clone of a job's `local` outlives it. `true` only if every job completed;
    /// `false` says nothing is known (the caller then stages the bytes in registered
    /// memory and uses [`Transport::carry`], which reports errors).
    ///
    /// The default declines.
    async fn carry_lent(&self, jobs: &[Job]) -> bool {
        let _ = jobs;
        false
    }

    /// Where the carrier sends requests, compared before and after a failure to tell
    /// whether the peer moved (restarted elsewhere); `None` for a copy-only transport.
    fn endpoint(&self) -> Option<SocketAddr> {
        None
    }

    /// Drops whatever this transport caches about its peer (pooled connections) after a
    /// recoverable failure, so that the next use starts afresh.
    fn forget(&self) {}

    /// This carrier as a [`TcpTransport`], if it is one: the jobs of one call to several
    /// TCP peers can then leave in one exchange ([`TcpTransport::carry_spread`],
    /// [`TcpTransport::carry_lent_spread`]) instead of one exchange per peer.
    ///
    /// The default: not TCP.
    fn as_tcp(&self) -> Option<&TcpTransport> {
        None
    }
}
