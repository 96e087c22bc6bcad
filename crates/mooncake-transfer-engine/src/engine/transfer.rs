//! The transfer path: requests that are copies run inline (local memory, or a peer's
//! memory a copy transport maps here); the rest go to each peer's carrier, the peers
//! concurrently, with one retry after the peer is resolved again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::peer::PeerSegment;
use super::{DirectRange, SegmentHandle, TransferEngine, TransferRequest};
use crate::codec::Opcode;
use crate::memory::Region;
use crate::transport::{Job, SpreadPart, TcpTransport, Transport};
use crate::TransferError;

impl TransferEngine {
    /// Moves every request; returns the first failure (all requests are attempted).
    pub async fn transfer(&self, requests: &[TransferRequest]) -> Result<(), TransferError> {
        match requests {
            [] => Ok(()),
            [one] => self.transfer_one(*one).await,
            many => self
                .transfer_each(many)
                .await
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(())),
        }
    }

    /// Moves every request and reports each one's outcome, in order. Requests that are
    /// copies (local, or a same-host peer's shared memory) run inline; the others go over
    /// the network, all requests to one peer together (sharing connections and vectored writes) and
    /// the peers concurrently.
    pub async fn transfer_each(
        &self,
        requests: &[TransferRequest],
    ) -> Vec<Result<(), TransferError>> {
        let mut out: Vec<Option<Result<(), TransferError>>> =
            requests.iter().map(|_| None).collect();
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match self.try_inline(*r) {
                Some(done) => out[i] = Some(done),
                None => match groups.iter_mut().find(|g| g.0 == r.target.0) {
                    Some(g) => g.1.push(i),
                    None => groups.push((r.target.0, vec![i])),
                },
            }
        }
        let pick = |idx: &[usize]| idx.iter().map(|&i| requests[i]).collect::<Vec<_>>();
        if let [(_, idx)] = groups.as_slice() {
            // One peer (the common case): no task to spawn.
            for (&i, r) in idx.iter().zip(self.transfer_group(&pick(idx)).await) {
                out[i] = Some(r);
            }
        } else if let Some(done) = self.transfer_spread(requests, &groups).await {
            for (i, r) in done {
                out[i] = Some(r);
            }
        } else {
            let mut set = JoinSet::new();
            for (_, idx) in groups {
                let (engine, reqs) = (self.clone(), pick(&idx));
                set.spawn(async move { (idx, engine.transfer_group(&reqs).await) });
            }
            while let Some(joined) = set.join_next().await {
                if let Ok((idx, results)) = joined {
                    for (i, r) in idx.into_iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Err(TransferError::Shutdown)))
            .collect()
    }

    /// Moves one request, slicing it over several connections when it is large.
    pub(crate) async fn transfer_one(&self, r: TransferRequest) -> Result<(), TransferError> {
        self.transfer_each(&[r])
            .await
            .pop()
            .unwrap_or(Err(TransferError::Shutdown))
    }

    /// Bytes this engine moved by copying through same-host peers' shared memory.
    pub fn shm_bytes(&self) -> u64 {
        self.inner.shm_bytes.load(Ordering::Relaxed)
    }

    /// Copies `data` straight to `[target_offset, +len)` of `target` when this engine
    /// reaches that range without the network (its own registered memory, or a same-host
    /// peer's shared memory); `Ok(false)` when it needs a transfer. Saves staging the bytes
    /// in registered memory first.
    pub fn write_direct(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        data: &[u8],
    ) -> Result<bool, TransferError> {
        if data.is_empty() {
            return Ok(true);
        }
        let Some((region, at)) = self.direct(target, target_offset, data.len() as u64, true)?
        else {
            return Ok(false);
        };
        region.write(at, data);
        Ok(true)
    }

    /// `[target_offset, +len)` of `target`, if this engine reaches it without the network,
    /// to be copied out by the caller ([`DirectRange::read_into_uninit`]), straight into
    /// memory it allocates once it knows the size (a Python `bytes`, say).
    pub fn direct_range(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        len: usize,
    ) -> Result<Option<DirectRange>, TransferError> {
        if len == 0 {
            return Ok(Some(DirectRange {
                region: None,
                addr: 0,
                len: 0,
            }));
        }
        let found = self.direct(target, target_offset, len as u64, false)?;
        Ok(found.map(|(region, addr)| DirectRange {
            region: Some(region),
            addr,
            len,
        }))
    }

    /// The mapped region and local address of `[offset, +len)` of `target`, if this engine
    /// reaches it with a copy: its own registered memory, or a same-host peer's shared
    /// memory (counted in [`TransferEngine::shm_bytes`]).
    fn direct(
        &self,
        target: SegmentHandle,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Result<Option<(Arc<Region>, u64)>, TransferError> {
        if target == SegmentHandle::LOCAL {
            return Ok(Some((self.registered(offset, len)?, offset)));
        }
        let Some(seg) = self.segment(target) else {
            return Ok(None);
        };
        let found = seg.mapped(offset, len, write);
        if found.is_some() {
            self.inner.shm_bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// The opened peer segment behind `handle`.
    pub(super) fn segment(&self, handle: SegmentHandle) -> Option<Arc<PeerSegment>> {
        self.inner.segments.read().get(&handle.0).cloned()
    }

    /// The outcome of `r` if it is a copy that needs no network (`None` otherwise).
    fn try_inline(&self, r: TransferRequest) -> Option<Result<(), TransferError>> {
        if r.length == 0 {
            return Some(Ok(()));
        }
        if *self.inner.shutdown.borrow() {
            return Some(Err(TransferError::Shutdown));
        }
        let local = match self.registered(r.source, r.length) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        if r.target == SegmentHandle::LOCAL {
            return Some(self.local_copy(&local, r));
        }
        let seg = self.segment(r.target)?;
        self.try_copy(&seg, &local, r)
    }

    /// Moves network requests that all target one peer segment: handed to its carrier
    /// together, so that they share connections and batched work. Requests that fail
    /// because the peer broke or refused get one retry after the segment is resolved
    /// again (it may have restarted elsewhere or re-registered).
    async fn transfer_group(&self, requests: &[TransferRequest]) -> Vec<Result<(), TransferError>> {
        let Some(handle) = requests.first().map(|r| r.target) else {
            return Vec::new();
        };
        let Some(seg) = self.segment(handle) else {
            let unknown =
                || TransferError::InvalidArgument(format!("unknown segment handle {}", handle.0));
            return requests.iter().map(|_| Err(unknown())).collect();
        };
        let (mut out, mut jobs) = self.jobs_for(requests);
        let carrier = seg.carrier();
        carrier.carry(&mut jobs).await;
        if jobs.iter().any(|j| recoverable(&j.outcome)) {
            self.recover(&seg, carrier.as_ref(), &mut jobs).await;
        }
        finish(&mut out, jobs);
        out
    }

    /// Jobs for the `requests` whose local memory is registered; the outcomes so far, in
    /// order: `Ok` exactly for the requests that became jobs (see [`finish`]).
    fn jobs_for(&self, requests: &[TransferRequest]) -> (Vec<Result<(), TransferError>>, Vec<Job>) {
        let mut out: Vec<Result<(), TransferError>> = Vec::with_capacity(requests.len());
        let mut jobs = Vec::with_capacity(requests.len());
        for r in requests {
            match self.registered(r.source, r.length) {
                Ok(local) => {
                    jobs.push(Job::new(*r, local));
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        (out, jobs)
    }

    /// Moves the network requests of several peer segments (`groups`: each segment's
    /// handle and the indices of its requests) as one job when every segment is reached
    /// over TCP and each group is small ([`TcpTransport::carry_spread`]): every peer's
    /// requests leave before any answer is read, one round trip for all. Failures get the
    /// retry [`Self::transfer_group`] gives. `None`, with nothing moved, otherwise (the
    /// caller runs the groups concurrently, one exchange each).
    async fn transfer_spread(
        &self,
        requests: &[TransferRequest],
        groups: &[(u64, Vec<usize>)],
    ) -> Option<Vec<(usize, Result<(), TransferError>)>> {
        let mut segs = Vec::with_capacity(groups.len());
        for (handle, _) in groups {
            let seg = self.segment(SegmentHandle(*handle))?;
            let carrier = seg.carrier();
            carrier.as_tcp()?;
            segs.push((seg, carrier));
        }
        let mut outs = Vec::with_capacity(groups.len());
        let mut parts: Vec<SpreadPart<'_, Vec<Job>>> = Vec::with_capacity(groups.len());
        for ((_, idx), (_, carrier)) in groups.iter().zip(&segs) {
            let mine: Vec<TransferRequest> = idx.iter().map(|&i| requests[i]).collect();
            let (out, jobs) = self.jobs_for(&mine);
            outs.push(out);
            parts.push((carrier.as_tcp()?, jobs));
        }
        if !TcpTransport::carry_spread(&mut parts).await {
            return None;
        }
        let mut done = Vec::with_capacity(requests.len());
        for ((((_, idx), (seg, carrier)), mut out), (_, mut jobs)) in
            groups.iter().zip(&segs).zip(outs).zip(parts)
        {
            if jobs.iter().any(|j| recoverable(&j.outcome)) {
                self.recover(seg, carrier.as_ref(), &mut jobs).await;
            }
            finish(&mut out, jobs);
            done.extend(idx.iter().copied().zip(out));
        }
        Some(done)
    }

    /// After recoverable failures of `jobs` on `old`: the peer may have restarted on
    /// another port or re-registered, so its transports are resolved again and each such
    /// job is retried once.
    async fn recover(&self, seg: &PeerSegment, old: &dyn Transport, jobs: &mut [Job]) {
        old.forget();
        let Ok(fresh) = self.connect(&seg.name).await else {
            return;
        };
        seg.set_copiers(fresh.copiers);
        for job in jobs.iter_mut() {
            if !recoverable(&job.outcome) {
                continue;
            }
            let Err(err) = std::mem::replace(&mut job.outcome, Ok(())) else {
                continue;
            };
            job.outcome = self.retry_moved(seg, job, err, old, &fresh.carrier).await;
        }
    }

    /// After a failure, retries once if the peer's endpoint moved (or it rejected the
    /// request and has since moved): through a copy transport if one reaches it now, else
    /// over the new carrier. `job.outcome` is `Ok` on entry.
    async fn retry_moved(
        &self,
        seg: &PeerSegment,
        job: &mut Job,
        err: TransferError,
        old: &dyn Transport,
        carrier: &Arc<dyn Transport>,
    ) -> Result<(), TransferError> {
        let rejected = matches!(err, TransferError::Rejected { .. });
        let same = carrier.endpoint() == old.endpoint();
        if same && !rejected {
            return Err(err);
        }
        seg.set_carrier(carrier.clone());
        if let Some(done) = self.try_copy(seg, &job.local, job.request) {
            return done;
        }
        if same {
            return Err(err);
        }
        tracing::info!(segment = %seg.name, from = ?old.endpoint(), to = ?carrier.endpoint(), "segment moved; retrying");
        seg.carrier().carry(std::slice::from_mut(job)).await;
        std::mem::replace(&mut job.outcome, Ok(()))
    }

    /// Serves `r` by copying through the peer's mapped memory, if a copy transport
    /// reaches the target.
    fn try_copy(
        &self,
        seg: &PeerSegment,
        local: &Region,
        r: TransferRequest,
    ) -> Option<Result<(), TransferError>> {
        let write = r.opcode == Opcode::Write;
        let (region, at) = seg.mapped(r.target_offset, r.length, write)?;
        let Ok(len) = usize::try_from(r.length) else {
            return Some(Err(TransferError::InvalidArgument(
                "length exceeds usize".into(),
            )));
        };
        match r.opcode {
            Opcode::Read => local.copy_from(r.source, &region, at, len),
            Opcode::Write => region.copy_from(at, local, r.source, len),
        }
        self.inner.shm_bytes.fetch_add(r.length, Ordering::Relaxed);
        Some(Ok(()))
    }

    fn local_copy(&self, local: &Region, r: TransferRequest) -> Result<(), TransferError> {
        let remote = self.registered(r.target_offset, r.length)?;
        let len = usize::try_from(r.length)
            .map_err(|_| TransferError::InvalidArgument("length exceeds usize".into()))?;
        match r.opcode {
            Opcode::Read => local.copy_from(r.source, &remote, r.target_offset, len),
            Opcode::Write => remote.copy_from(r.target_offset, local, r.source, len),
        }
        Ok(())
    }
}

/// Whether a failure may be cured by resolving the peer again: it broke or refused.
fn recoverable(r: &Result<(), TransferError>) -> bool {
    matches!(
        r,
        Err(TransferError::Io { .. } | TransferError::Rejected { .. })
    )
}

/// Puts the carried `jobs`' outcomes into `out` (from [`TransferEngine::jobs_for`]), whose
/// `Ok` entries are the requests that became jobs, in order.
fn finish(out: &mut [Result<(), TransferError>], jobs: Vec<Job>) {
    let carried = out.iter_mut().filter(|o| o.is_ok());
    for (slot, job) in carried.zip(jobs) {
        *slot = job.outcome;
    }
}
