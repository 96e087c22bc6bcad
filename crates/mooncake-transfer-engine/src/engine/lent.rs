//! Lent exchanges: transfers from or into ordinary memory the caller lends for one call
//! (not registered), carried on work the call drives itself so that nothing keeps the
//! memory past it ([`Transport::carry_lent`](crate::transport::Transport::carry_lent)).

use std::mem::MaybeUninit;
use std::sync::Arc;

use super::{SegmentHandle, TransferEngine, TransferRequest};
use crate::codec::Opcode;
use crate::memory::LentRegion;
use crate::transport::{Job, SpreadPart, TcpTransport, Transport};

/// One holder's part of a batch spread over several targets
/// ([`TransferEngine::write_lent_spread`], [`TransferEngine::read_lent_spread`]): the
/// target and its `(target_offset, memory)` ranges.
pub type Holder<T> = (SegmentHandle, Vec<(u64, T)>);

impl TransferEngine {
    /// The most bytes one lent exchange carries (a larger one is refused, `false`, before
    /// any byte moves): callers with more take the registered path up front rather than
    /// fill memory for an exchange that will not run.
    pub const LENT_MAX_BYTES: u64 = crate::tcp::DIRECT_ONE_WAY_MAX_BYTES;

    /// The most ranges one lent exchange carries (with [`Self::LENT_MAX_BYTES`] in all,
    /// slicing at the default slice size keeps it within a direct exchange's requests).
    pub const LENT_MAX_RANGES: usize = crate::tcp::DIRECT_MAX_REQUESTS / 2;

    /// Writes each `(target_offset, bytes)` of `items` (ordinary memory) to `target` over a
    /// connection this call drives itself, without staging the bytes in registered memory
    /// first; all or nothing. `false`: not done, nothing to report (the target is
    /// reached with a copy, speaks the old framing, or the exchange failed): write from
    /// registered memory instead, which also reports errors and retries.
    pub async fn write_lent(&self, target: SegmentHandle, items: &[(u64, &[u8])]) -> bool {
        let lent: Vec<LentRegion<'_>> = items.iter().map(|(_, p)| LentRegion::shared(p)).collect();
        let jobs: Vec<Job> = items
            .iter()
            .zip(&lent)
            .map(|((at, p), l)| {
                let request = lent_request(Opcode::Write, target, p.as_ptr() as u64, *at, p.len());
                Job::new(request, l.region().clone())
            })
            .collect();
        self.exchange_lent(target, Opcode::Write, jobs).await
    }

    /// Reads `[target_offset, +out.len())` of `target` into `out` (ordinary memory) over a
    /// connection this call drives itself. `false`: not done (as [`Self::write_lent`]);
    /// `out` may hold part of the bytes.
    pub async fn read_lent(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        out: &mut [u8],
    ) -> bool {
        let out = crate::memory::as_uninit(out);
        self.read_lent_uninit(target, target_offset, out).await
    }

    /// [`Self::read_lent`] into memory not yet initialised (a new Python `bytes`, say):
    /// `true` means all of `out` was written.
    pub async fn read_lent_uninit(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        out: &mut [MaybeUninit<u8>],
    ) -> bool {
        let request = lent_request(
            Opcode::Read,
            target,
            out.as_ptr() as u64,
            target_offset,
            out.len(),
        );
        crate::memory::prefault_fresh([&mut *out]);
        let lent = LentRegion::uninit(out);
        let jobs = vec![Job::new(request, lent.region().clone())];
        self.exchange_lent(target, Opcode::Read, jobs).await
    }

    /// [`Self::read_lent_uninit`] of several ranges of one `target`: each
    /// `(target_offset, out)` of `items`, in as few exchanges as carry them (each at most
    /// [`Self::LENT_MAX_BYTES`] and [`Self::LENT_MAX_RANGES`]; one range must fit one
    /// exchange), one after the other. `true` means every `out` was written in full;
    /// `false`, that nothing is known of any of them.
    pub async fn read_lent_uninit_many(
        &self,
        target: SegmentHandle,
        items: &mut [(u64, &mut [MaybeUninit<u8>])],
    ) -> bool {
        let mut rest = items;
        while !rest.is_empty() {
            let (mut bytes, mut take) = (0u64, 0usize);
            for (_, out) in rest.iter() {
                let len = out.len() as u64;
                if take > 0 && (bytes + len > Self::LENT_MAX_BYTES || take == Self::LENT_MAX_RANGES)
                {
                    break;
                }
                bytes += len;
                take += 1;
            }
            let (group, tail) = rest.split_at_mut(take);
            if !self.read_lent_group(target, group).await {
                return false;
            }
            rest = tail;
        }
        true
    }

    /// One exchange of [`Self::read_lent_uninit_many`].
    async fn read_lent_group(
        &self,
        target: SegmentHandle,
        items: &mut [(u64, &mut [MaybeUninit<u8>])],
    ) -> bool {
        crate::memory::prefault_fresh(items.iter_mut().map(|(_, out)| &mut **out));
        let mut lent = Vec::with_capacity(items.len());
        let mut requests = Vec::with_capacity(items.len());
        for (at, out) in items.iter_mut() {
            requests.push(lent_request(
                Opcode::Read,
                target,
                out.as_ptr() as u64,
                *at,
                out.len(),
            ));
            lent.push(LentRegion::uninit(out));
        }
        let jobs = lent
            .iter()
            .zip(requests)
            .map(|(l, request)| Job::new(request, l.region().clone()))
            .collect();
        self.exchange_lent(target, Opcode::Read, jobs).await
    }

    /// [`Self::write_lent`] to several targets at once (a batch whose values go to several
    /// hosts): `(target, items)` per holder; per holder, whether all of its items were
    /// written. Every holder's requests leave before any answer is read, so the batch
    /// costs one round trip instead of one per holder. `None`, with nothing written,
    /// unless there are several holders, every one a TCP peer (none reached with a copy)
    /// and each holder's part a small exchange of its own: then write per holder.
    pub async fn write_lent_spread(&self, holders: &[Holder<&[u8]>]) -> Option<Vec<bool>> {
        let carriers = self.spread_carriers(holders, |p| p.len(), Opcode::Write)?;
        let mut lent = Vec::with_capacity(holders.len());
        let mut jobs = Vec::with_capacity(holders.len());
        for (target, items) in holders {
            let regions: Vec<LentRegion<'_>> =
                items.iter().map(|(_, p)| LentRegion::shared(p)).collect();
            jobs.push(
                items
                    .iter()
                    .zip(&regions)
                    .map(|((at, p), l)| {
                        let addr = p.as_ptr() as u64;
                        let request = lent_request(Opcode::Write, *target, addr, *at, p.len());
                        Job::new(request, l.region().clone())
                    })
                    .collect::<Vec<Job>>(),
            );
            lent.push(regions);
        }
        spread_lent(&carriers, &jobs).await
    }

    /// [`Self::read_lent_uninit_many`] from several targets at once (a batch whose values
    /// sit on several hosts): `(target, items)` per holder; per holder, whether every
    /// `out` of it was written in full. One round trip for the batch, as
    /// [`Self::write_lent_spread`]; `None`, with nothing read, when that does not apply
    /// (also when all the ranges together exceed [`Self::LENT_MAX_BYTES`] or
    /// [`Self::LENT_MAX_RANGES`]): then read per holder.
    pub async fn read_lent_uninit_spread(
        &self,
        holders: &mut [Holder<&mut [MaybeUninit<u8>]>],
    ) -> Option<Vec<bool>> {
        let bytes: u64 = holders
            .iter()
            .flat_map(|(_, items)| items.iter().map(|(_, out)| out.len() as u64))
            .sum();
        let count: usize = holders.iter().map(|(_, items)| items.len()).sum();
        if bytes > Self::LENT_MAX_BYTES || count > Self::LENT_MAX_RANGES {
            return None;
        }
        let carriers = self.spread_carriers(holders, |out| out.len(), Opcode::Read)?;
        let mut lent = Vec::with_capacity(holders.len());
        let mut jobs = Vec::with_capacity(holders.len());
        for (target, items) in holders.iter_mut() {
            crate::memory::prefault_fresh(items.iter_mut().map(|(_, out)| &mut **out));
            let mut regions = Vec::with_capacity(items.len());
            let mut mine = Vec::with_capacity(items.len());
            for (at, out) in items.iter_mut() {
                let addr = out.as_ptr() as u64;
                let request = lent_request(Opcode::Read, *target, addr, *at, out.len());
                let region = LentRegion::uninit(out);
                mine.push(Job::new(request, region.region().clone()));
                regions.push(region);
            }
            jobs.push(mine);
            lent.push(regions);
        }
        spread_lent(&carriers, &jobs).await
    }

    /// [`Self::read_lent_uninit_spread`] into initialised memory.
    pub async fn read_lent_spread(&self, holders: Vec<Holder<&mut [u8]>>) -> Option<Vec<bool>> {
        let mut holders: Vec<Holder<&mut [MaybeUninit<u8>]>> = holders
            .into_iter()
            .map(|(t, items)| {
                let items = items
                    .into_iter()
                    .map(|(at, out)| (at, crate::memory::as_uninit(out)))
                    .collect();
                (t, items)
            })
            .collect();
        self.read_lent_uninit_spread(&mut holders).await
    }

    /// The carriers of `holders` (each a target and its ranges, `len` bytes each) for one
    /// exchange spread over them: `None` unless there are several, each a network peer
    /// whose carrier is TCP and none of whose ranges this engine reaches with a copy.
    fn spread_carriers<T>(
        &self,
        holders: &[Holder<T>],
        len: impl Fn(&T) -> usize,
        opcode: Opcode,
    ) -> Option<Vec<Arc<dyn Transport>>> {
        let write = opcode == Opcode::Write;
        let mut carriers = Vec::with_capacity(holders.len());
        for (target, items) in holders {
            if *target == SegmentHandle::LOCAL || items.is_empty() {
                return None;
            }
            let seg = self.segment(*target)?;
            if items
                .iter()
                .any(|(at, m)| seg.mapped(*at, len(m) as u64, write).is_some())
            {
                return None;
            }
            let carrier = seg.carrier();
            carrier.as_tcp()?;
            carriers.push(carrier);
        }
        (carriers.len() > 1).then_some(carriers)
    }

    /// Runs `jobs` (over lent regions) to one network peer on the caller's own work,
    /// through the peer's carrier; whether all completed. The region clones are gone when
    /// it returns.
    async fn exchange_lent(&self, target: SegmentHandle, opcode: Opcode, jobs: Vec<Job>) -> bool {
        let empty = jobs.iter().all(|j| j.request.length == 0);
        if empty || target == SegmentHandle::LOCAL {
            return empty;
        }
        let Some(seg) = self.segment(target) else {
            return false;
        };
        let write = opcode == Opcode::Write;
        if jobs.iter().any(|j| {
            seg.mapped(j.request.target_offset, j.request.length, write)
                .is_some()
        }) {
            return false;
        }
        let carrier = seg.carrier();
        let done = carrier.carry_lent(&jobs).await;
        drop(jobs);
        done
    }
}

/// The request of one lent piece: `len` bytes between local `addr` and `at` in `target`.
fn lent_request(
    opcode: Opcode,
    target: SegmentHandle,
    addr: u64,
    at: u64,
    len: usize,
) -> TransferRequest {
    TransferRequest {
        opcode,
        source: addr,
        target,
        target_offset: at,
        length: len as u64,
    }
}

/// Runs the lent `jobs` of each carrier (from [`TransferEngine::spread_carriers`]) as one
/// exchange: per carrier, whether all of its jobs completed; `None` if the job does not
/// suit one exchange. The jobs' region clones are gone when it returns.
async fn spread_lent(carriers: &[Arc<dyn Transport>], jobs: &[Vec<Job>]) -> Option<Vec<bool>> {
    let mut parts: Vec<SpreadPart<'_, &[Job]>> = Vec::with_capacity(carriers.len());
    for (carrier, mine) in carriers.iter().zip(jobs) {
        parts.push((carrier.as_tcp()?, mine.as_slice()));
    }
    TcpTransport::carry_lent_spread(&parts).await
}
