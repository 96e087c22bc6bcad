//! [`TcpTransport`]: a peer reached over Mooncake's v2 TCP data path.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Job, Transport};
use crate::codec::{Opcode, ProtoVersion};
use crate::memory::Region;
use crate::tcp::{
    direct_eligible, lanes_preferred, TcpClient, WireOp, DIRECT_MAX_REQUESTS,
    DIRECT_ONE_WAY_MAX_BYTES,
};
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

    /// Exchanges a large job of WRITEs window by window (as much as two direct exchanges
    /// carry, cut at request boundaries), each window's halves on two threads (a last
    /// small window on this one); whether every request completed. A batch of 32 values
    /// of 16 MiB (512 MiB) took the lanes before.
    async fn exchange_in_windows(&self, ops: &[(WireOp, Arc<Region>)]) -> bool {
        let mut start = 0;
        while start < ops.len() {
            let mut end = start + 1;
            while end < ops.len() && fits_two_exchanges(&ops[start..=end]) {
                end += 1;
            }
            let window = &ops[start..end];
            let done = match split_in_two(window) {
                Some((first, second)) => self.exchange_on_two_threads(first, second),
                None => self
                    .client
                    .exchange_only(window)
                    .await
                    .is_some_and(|r| r.iter().all(Result::is_ok)),
            };
            if !done {
                return false;
            }
            start = end;
        }
        true
    }

    /// Exchanges two halves of a job directly, each on a thread of its own
    /// ([`on_two_threads`]); whether every request of both completed.
    fn exchange_on_two_threads(&self, first: LentOps, second: LentOps) -> bool {
        TWO_THREAD_EXCHANGES.with(|n| n.set(n.get() + 1));
        let all_ok = |done: Option<Vec<Result<(), crate::TransferError>>>| {
            done.is_some_and(|results| results.iter().all(Result::is_ok))
        };
        let client = &self.client;
        let (a, b) = on_two_threads(
            || client.exchange_only(&first),
            || client.exchange_only(&second),
        );
        all_ok(a) && all_ok(b)
    }

    /// Runs a job of lent memory on the lanes ([`lent_reads_for_lanes`]), blocking this
    /// thread in place until every request is answered (`crate::wait::wait_in_place`), so the call cannot be abandoned
    /// while the lanes write into the memory; whether all completed. A lane releases a
    /// job's region clones before it reports (`tcp::client::Job::finish`) and its writer
    /// never holds a READ's region, so none is left when this returns.
    fn lent_on_lanes(&self, ops: LentOps) -> bool {
        LENT_ON_LANES.with(|n| n.set(n.get() + 1));
        let client = &self.client;
        let results = crate::wait::wait_in_place(client.execute_many(ops));
        results.iter().all(Result::is_ok)
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

/// Jobs of WRITEs to a peer on another host above this many bytes are exchanged by two
/// threads (from lent or registered memory): a direct exchange does all of the TCP
/// stack's work on the thread that runs it, and between hosts one thread is the limit.
/// Between network namespaces (best of 3 alternating rounds): 16 MiB `put` (lent) 2.5 ->
/// 4.0 GB/s, `put_from` (registered, the lanes before) 2.8 -> 4.1; 8 MiB 2.7 -> 4.5 and
/// 2.6 -> 4.4; 4 MiB 2.5 -> 3.9 and 2.4 -> 4.6. At 1-2 MiB one thread stayed ahead (1 MiB
/// `put` 5.5 against 2.7 GB/s split), and READs gained nothing (4 MiB `get` lost a
/// quarter): they keep one thread, or the lanes.
const SPLIT_BYTES: u64 = 2 << 20;

/// Whether a job is worth two threads: WRITEs only, to another host, above
/// [`SPLIT_BYTES`], on a multi-threaded runtime (where a thread may block in place).
fn two_threads_worth(ops: &[(WireOp, Arc<Region>)]) -> bool {
    let bytes: u64 = ops.iter().map(|(op, _)| op.len).sum();
    let remote = ops.iter().all(|(op, _)| !op.peer.ip().is_loopback());
    let writes = ops.iter().all(|(op, _)| op.opcode == Opcode::Write);
    bytes > SPLIT_BYTES && remote && writes && may_block_in_place()
}

/// Whether the current runtime is multi-threaded, so that a thread may block in place
/// while the runtime's other workers run the tasks it waits for.
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Whether a job of lent memory goes to the lanes, as registered memory would: READs
/// only, from another host, above the lanes' threshold (`tcp::direct::lanes_preferred`),
/// on a multi-threaded runtime. The lanes' tasks spread the receiving side's TCP work
/// over the workers where a direct exchange does it all on the caller's thread: between
/// network namespaces 16 MiB READs 2.6-2.7 GB/s direct against 3.7-3.8 on the lanes
/// (`transfer_engine_bench`, `docs/bench/tcp.md` section 5), which is the gap Python's
/// `get` into a new `bytes` had to `get_into` of registered memory.
fn lent_reads_for_lanes(ops: &[(WireOp, Arc<Region>)]) -> bool {
    !ops.is_empty()
        && ops.iter().all(|(op, _)| op.opcode == Opcode::Read)
        && lanes_preferred(ops)
        && may_block_in_place()
}

/// Whether two direct exchanges can carry `ops` (`tcp::direct::direct_eligible`).
fn fits_two_exchanges(ops: &[(WireOp, Arc<Region>)]) -> bool {
    let bytes: u64 = ops.iter().map(|(op, _)| op.len).sum();
    bytes <= 2 * DIRECT_ONE_WAY_MAX_BYTES && ops.len() < DIRECT_MAX_REQUESTS
}

/// The two halves (by bytes) of a job worth two threads ([`two_threads_worth`]) that
/// fits two direct exchanges; `None` for every other job.
fn split_in_two(ops: &[(WireOp, Arc<Region>)]) -> Option<(LentOps, LentOps)> {
    if !two_threads_worth(ops) || !fits_two_exchanges(ops) {
        return None;
    }
    let bytes: u64 = ops.iter().map(|(op, _)| op.len).sum();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut room = bytes / 2;
    for (op, local) in ops {
        let head = room.min(op.len);
        room -= head;
        if head > 0 {
            first.push((WireOp { len: head, ..*op }, local.clone()));
        }
        if head < op.len {
            let tail = WireOp {
                local_addr: op.local_addr + head,
                remote_addr: op.remote_addr.wrapping_add(head),
                len: op.len - head,
                ..*op
            };
            second.push((tail, local.clone()));
        }
    }
    Some((first, second))
}

thread_local! {
    static SPREAD_EXCHANGES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static TWO_THREAD_EXCHANGES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static LENT_ON_LANES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many exchanges of lent memory the calling thread has run on the lanes so far
/// (large READs from peers on other hosts, see `docs/ARCHITECTURE.md`), for tests and
/// diagnostics.
pub fn lent_exchanges_on_lanes() -> u64 {
    LENT_ON_LANES.with(std::cell::Cell::get)
}

/// How many jobs spread over several peers the calling thread has carried as one
/// exchange so far (a batch whose values sit on several hosts, see
/// `docs/ARCHITECTURE.md`), for tests and diagnostics.
pub fn spread_exchanges() -> u64 {
    SPREAD_EXCHANGES.with(std::cell::Cell::get)
}

/// How many transfers the calling thread has exchanged on two threads so far (large
/// WRITEs to peers on other hosts, see `docs/ARCHITECTURE.md`), for tests and
/// diagnostics.
pub fn two_thread_exchanges() -> u64 {
    TWO_THREAD_EXCHANGES.with(std::cell::Cell::get)
}

/// Wire requests over lent memory, with the region each belongs to.
type LentOps = Vec<(WireOp, Arc<Region>)>;

/// Runs two futures to completion at once, the second on a scoped thread of its own and
/// the first on the caller's thread, so that nothing they borrow outlives
/// the call. The caller's thread blocks in place (a worker hands its other tasks to
/// another thread first); it drives its half without a nested `block_on` (see
/// `crate::wait`).
fn on_two_threads<A, B, FA, FB>(a: FA, b: FB) -> (A::Output, B::Output)
where
    A: std::future::Future + Send,
    B: std::future::Future + Send,
    A::Output: Send,
    B::Output: Send,
    FA: FnOnce() -> A + Send,
    FB: FnOnce() -> B + Send,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let second = s.spawn(|| handle.block_on(b()));
            let first = crate::wait::drive_here(&handle, a());
            let second = match second.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (first, second)
        })
    })
}

#[async_trait]
impl Transport for TcpTransport {
    fn name(&self) -> &'static str {
        "tcp"
    }

    /// All the jobs' slices go to the client together, so that they share connections,
    /// vectored writes and answer reads instead of each paying its own round of wake-ups.
    /// A large job of WRITEs to another host is exchanged by two threads instead
    /// ([`TcpTransport::exchange_in_windows`]; measured faster than the lanes); what that
    /// leaves undone goes to the lanes (a WRITE may be sent twice: it lands the same
    /// bytes).
    async fn carry(&self, jobs: &mut [Job]) {
        let mut ops = Vec::new();
        let mut owner = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            for op in self.slices(&job.request) {
                ops.push((op, job.local.clone()));
                owner.push(i);
            }
        }
        if two_threads_worth(&ops) && self.exchange_in_windows(&ops).await {
            return;
        }
        for (i, result) in owner.into_iter().zip(self.client.execute_many(ops).await) {
            let job = &mut jobs[i];
            if let (Err(e), true) = (result, job.outcome.is_ok()) {
                job.outcome = Err(e);
            }
        }
    }

    /// On connections of the caller's own (see [`TcpClient::exchange_only`]); declines
    /// peers that speak the old framing. The region clones are gone when it returns.
    /// A large job of WRITEs to another host is cut in two halves exchanged by two threads
    /// at once ([`split_in_two`]).
    async fn carry_lent(&self, jobs: &[Job]) -> bool {
        let mut ops = Vec::new();
        for job in jobs {
            ops.extend(self.slices(&job.request).map(|op| (op, job.local.clone())));
        }
        let all_ok = |done: Option<Vec<Result<(), crate::TransferError>>>| {
            done.is_some_and(|results| results.iter().all(Result::is_ok))
        };
        if lent_reads_for_lanes(&ops) {
            return self.lent_on_lanes(ops);
        }
        let done = match split_in_two(&ops) {
            Some((first, second)) => self.exchange_on_two_threads(first, second),
            None => all_ok(self.client.exchange_only(&ops).await),
        };
        drop(ops);
        done
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        Some(self.route.data)
    }

    fn forget(&self) {
        self.client.forget(self.route.data);
    }

    fn as_tcp(&self) -> Option<&TcpTransport> {
        Some(self)
    }
}

/// One peer's share of a job spread over several TCP peers: its carrier and its jobs.
pub(crate) type SpreadPart<'a, J> = (&'a TcpTransport, J);

impl TcpTransport {
    /// The wire requests of every part's jobs, each with the `(part, job)` it belongs to;
    /// `None` unless each part alone, and all of them together, would be one plain direct
    /// exchange (not the lanes, not two threads): small jobs, where the round trips are
    /// the cost.
    fn spread_ops<J: AsRef<[Job]>>(
        parts: &[SpreadPart<'_, J>],
    ) -> Option<(LentOps, Vec<(usize, usize)>)> {
        let mut ops = Vec::new();
        let mut owner = Vec::new();
        for (p, (carrier, jobs)) in parts.iter().enumerate() {
            let first = ops.len();
            for (j, job) in jobs.as_ref().iter().enumerate() {
                for op in carrier.slices(&job.request) {
                    ops.push((op, job.local.clone()));
                    owner.push((p, j));
                }
            }
            let mine = &ops[first..];
            if mine.is_empty()
                || !direct_eligible(mine)
                || lanes_preferred(mine)
                || two_threads_worth(mine)
            {
                return None;
            }
        }
        let shared = parts
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].0.client, &w[1].0.client));
        // All together still one plain exchange: not more than one thread should carry
        // (a large job to other hosts keeps its lanes or threads per peer).
        let one_exchange =
            direct_eligible(&ops) && !lanes_preferred(&ops) && !two_threads_worth(&ops);
        (shared && parts.len() > 1 && one_exchange).then_some((ops, owner))
    }

    /// Carries the jobs of several TCP peers (registered memory) as one job of the
    /// engine's client: every peer's requests leave before any answer is read, so a batch
    /// whose values sit on several hosts costs one round trip instead of one per host.
    /// Sets each failed job's `outcome` as [`Transport::carry`] does. `false`, with
    /// nothing done, unless each part alone would be one plain direct exchange (small
    /// jobs, where the round trips are the cost; larger ones keep their own exchanges,
    /// lanes or threads per peer).
    pub(crate) async fn carry_spread(parts: &mut [SpreadPart<'_, Vec<Job>>]) -> bool {
        let Some((ops, owner)) = Self::spread_ops(parts) else {
            return false;
        };
        SPREAD_EXCHANGES.with(|n| n.set(n.get() + 1));
        let client = parts[0].0.client.clone();
        for ((p, j), result) in owner.into_iter().zip(client.execute_many(ops).await) {
            let job = &mut parts[p].1[j];
            if let (Err(e), true) = (result, job.outcome.is_ok()) {
                job.outcome = Err(e);
            }
        }
        true
    }

    /// [`Transport::carry_lent`] of several TCP peers' jobs in one exchange on the
    /// caller's own connections (see [`TcpTransport::carry_spread`]): per part, whether
    /// every job completed. `None`, with nothing done, when the job does not suit one
    /// exchange.
    pub(crate) async fn carry_lent_spread(parts: &[SpreadPart<'_, &[Job]>]) -> Option<Vec<bool>> {
        let (ops, owner) = Self::spread_ops(parts)?;
        if lent_reads_for_lanes(&ops) {
            return None;
        }
        SPREAD_EXCHANGES.with(|n| n.set(n.get() + 1));
        let mut done = vec![true; parts.len()];
        match parts[0].0.client.exchange_only(&ops).await {
            Some(results) => {
                for ((p, _), result) in owner.into_iter().zip(results) {
                    done[p] &= result.is_ok();
                }
            }
            None => done.iter_mut().for_each(|d| *d = false),
        }
        drop(ops);
        Some(done)
    }
}
