//! Lent exchanges: transfers from or into ordinary memory the caller lends for one call
//! (not registered), carried on work the call drives itself so that nothing keeps the
//! memory past it ([`Transport::carry_lent`](crate::transport::Transport::carry_lent)).

use std::mem::MaybeUninit;

use super::{SegmentHandle, TransferEngine, TransferRequest};
use crate::codec::Opcode;
use crate::memory::LentRegion;
use crate::transport::Job;

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
