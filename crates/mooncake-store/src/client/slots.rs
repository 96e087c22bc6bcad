//! Puts in one master round trip: ranges the master reserved ahead of this client's next
//! puts of one size (`MasterApi::reserve_slots`). A put of a value that size writes into a
//! slot it holds, then one `put_reserved` makes it the complete object and hands back a
//! fresh slot. Anything unexpected (a master without slots, a restarted master that does
//! not know the slot, a holder that cannot be written, a failed call) leaves the put to
//! the usual `put_start` / `put_end` path, which is always correct: if the one call did
//! commit after all, `put_start` finds the key and the put succeeds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Client;
use crate::types::{ReplicaDescriptor, ReplicateConfig, ReservedSlot};
use crate::ErrorCode;

/// Values up to this size use slots (the master lends no larger ones: above it the
/// transfer, not the round trip, is the cost, and slots held ahead take room).
pub(super) const SLOT_MAX_BYTES: u64 = 64 << 10;
/// Slots asked for at once when the pool of a size is empty.
const RESERVE_AT_ONCE: usize = 4;
/// Slots one reserve call asks for at most (the master's cap).
const MAX_RESERVE: usize = 64;
/// Slots kept per size at most (more come back when several puts of one size overlap).
const KEEP_PER_SIZE: usize = 64;
/// A slot older than this is not used: well within `put_start_discard_timeout` (after
/// which the master frees unused slots; 30 s by default) and within `client_ttl` (10 s by
/// default), so a slot on a holder that died is never written once the master could have
/// dropped its segment and placed puts on a restarted holder's memory.
const SLOT_MAX_AGE: Duration = Duration::from_secs(2);
/// A slot is written into only within this long of the last answer of the master that
/// lent it (a successful reserve or put into a slot): a new master incarnation (restart,
/// failover) knows nothing of its predecessor's slots and may hand their ranges to other
/// puts, but allocates nothing for 600 ms after it starts (`mooncake-master`'s
/// `master/gate.rs`), longer than this. Past it the pool is dropped and slots reserved
/// afresh.
const CONFIRMED_FOR: Duration = Duration::from_millis(300);
/// After a master refused to reserve (an older master), slots are not asked for again
/// for this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// After a master had no room for any slot, none are asked for again for this long.
const RETRY_FULL_AFTER: Duration = Duration::from_secs(1);

/// The slots this client holds, by value size.
#[derive(Debug, Default)]
pub(super) struct SlotPool {
    by_size: parking_lot::Mutex<HashMap<u64, Vec<(ReservedSlot, Instant)>>>,
    /// Until when no slots are asked for (a refusing or full master).
    retry_at: parking_lot::Mutex<Option<Instant>>,
    /// When the master that lent the pooled slots last answered a slot call.
    confirmed: parking_lot::Mutex<Option<Instant>>,
    /// Slots dropped unwritten, to give back to the master (`Client::release_dropped`).
    dropped: parking_lot::Mutex<Vec<u64>>,
}

impl SlotPool {
    fn pop(&self, size: u64, now: Instant) -> Option<ReservedSlot> {
        let fresh = self
            .confirmed
            .lock()
            .is_some_and(|t| now.saturating_duration_since(t) < CONFIRMED_FOR);
        let mut by_size = self.by_size.lock();
        if !fresh {
            // The lender may have been replaced since: none of these may be written.
            let mut dropped = self.dropped.lock();
            for (_, list) in by_size.drain() {
                dropped.extend(list.into_iter().map(|(s, _)| s.id));
            }
            return None;
        }
        let list = by_size.get_mut(&size)?;
        while let Some((slot, at)) = list.pop() {
            if now.saturating_duration_since(at) < SLOT_MAX_AGE {
                return Some(slot);
            }
            self.dropped.lock().push(slot.id);
        }
        None
    }

    fn push(&self, size: u64, slot: ReservedSlot, at: Instant) {
        let mut by_size = self.by_size.lock();
        let list = by_size.entry(size).or_default();
        if list.len() < KEEP_PER_SIZE {
            list.push((slot, at));
        } else {
            self.dropped.lock().push(slot.id);
        }
    }

    fn clear(&self) {
        let mut dropped = self.dropped.lock();
        for (_, list) in self.by_size.lock().drain() {
            dropped.extend(list.into_iter().map(|(s, _)| s.id));
        }
    }

    /// The master that lent the pooled slots just answered a slot call.
    fn confirm(&self) {
        *self.confirmed.lock() = Some(Instant::now());
    }

    /// How many slots are held (for tests).
    fn len(&self) -> usize {
        self.by_size.lock().values().map(Vec::len).sum()
    }
}

/// A slot taken for one put, with when its pool got it.
pub(super) struct Taken {
    slot: ReservedSlot,
    at: Instant,
}

impl Taken {
    /// Where the value goes.
    pub(super) fn replica(&self) -> &ReplicaDescriptor {
        &self.slot.replica
    }

    /// The slot's number.
    pub(super) fn id(&self) -> u64 {
        self.slot.id
    }
}

impl Client {
    /// A slot for a put of `size` bytes with `config`, when such a put may use one (a new
    /// key, one replica placed by the master, at most [`SLOT_MAX_BYTES`]): from the pool,
    /// or reserved now. `None`: put the usual way.
    pub(super) async fn take_slot(
        &self,
        size: u64,
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Option<Taken> {
        if upsert || size == 0 || size > SLOT_MAX_BYTES || !config.fits_reserved_slot() {
            return None;
        }
        let pool = &self.inner.slots;
        let now = Instant::now();
        let popped = pool.pop(size, now);
        self.release_dropped();
        if let Some(slot) = popped {
            return Some(Taken { slot, at: now });
        }
        if pool.retry_at.lock().is_some_and(|t| now < t) {
            return None;
        }
        let reserved = self
            .inner
            .master
            .reserve_slots(self.inner.id, size, RESERVE_AT_ONCE);
        match reserved.await {
            Ok(mut slots) => {
                pool.confirm();
                let Some(first) = slots.pop() else {
                    *pool.retry_at.lock() = Some(now + RETRY_FULL_AFTER);
                    return None;
                };
                for s in slots {
                    pool.push(size, s, now);
                }
                Some(Taken {
                    slot: first,
                    at: now,
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "the master lends no slots; putting in two calls");
                *pool.retry_at.lock() = Some(now + RETRY_AFTER);
                None
            }
        }
    }

    /// Commits a put written (`written`) into its slot with one `put_reserved`;
    /// `None`: not done, put the usual way.
    pub(super) async fn commit_slot(
        &self,
        key: &str,
        taken: Taken,
        size: u64,
        config: &ReplicateConfig,
        written: bool,
    ) -> Option<Result<(), ErrorCode>> {
        if !written {
            // The holder may be gone: the usual path finds another.
            return None;
        }
        let r = self
            .inner
            .master
            .put_reserved(self.inner.id, key, taken.slot.id, size, config)
            .await;
        self.settle_one(key, taken, size, r)
    }

    /// What one `put_reserved` answer means for the put; `None`: put it the usual way.
    fn settle_one(
        &self,
        key: &str,
        taken: Taken,
        size: u64,
        answer: Result<Option<ReservedSlot>, ErrorCode>,
    ) -> Option<Result<(), ErrorCode>> {
        let pool = &self.inner.slots;
        let done = match answer {
            Ok(next) => {
                pool.confirm();
                self.remember(key, std::slice::from_ref(&taken.slot.replica));
                if let Some(next) = next {
                    pool.push(size, next, Instant::now());
                }
                Some(Ok(()))
            }
            // The key exists: it keeps its value and the put succeeds (Mooncake's
            // semantics); the slot is still this client's.
            Err(ErrorCode::ObjectAlreadyExists) => {
                pool.confirm();
                pool.push(size, taken.slot, taken.at);
                Some(Ok(()))
            }
            Err(ErrorCode::InvalidParams) => {
                pool.push(size, taken.slot, taken.at);
                Some(Err(ErrorCode::InvalidParams))
            }
            Err(e) => {
                // A master that does not know the slot (restarted, failed over, or the
                // slot expired) or a failed call: start afresh the usual way.
                tracing::debug!(key, error = %e, "put into a reserved slot not done");
                pool.clear();
                None
            }
        };
        self.release_dropped();
        done
    }

    /// Slots for a batch of puts of `sizes` (all or none: `None` puts the batch the usual
    /// way), from the pool or reserved now, one call per size short of slots.
    pub(super) async fn take_slots(
        &self,
        sizes: &[u64],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Option<Vec<Taken>> {
        let fits = |n: &u64| *n > 0 && *n <= SLOT_MAX_BYTES;
        if upsert || sizes.is_empty() || !config.fits_reserved_slot() || !sizes.iter().all(fits) {
            return None;
        }
        let pool = &self.inner.slots;
        let now = Instant::now();
        let mut out: Vec<Option<Taken>> = sizes
            .iter()
            .map(|n| pool.pop(*n, now).map(|slot| Taken { slot, at: now }))
            .collect();
        self.release_dropped();
        let mut short: HashMap<u64, usize> = HashMap::new();
        for (n, t) in sizes.iter().zip(&out) {
            if t.is_none() {
                *short.entry(*n).or_default() += 1;
            }
        }
        let refused = pool.retry_at.lock().is_some_and(|t| now < t);
        for (size, missing) in short {
            let got = if refused {
                Vec::new()
            } else {
                let want = missing.clamp(RESERVE_AT_ONCE, MAX_RESERVE);
                match self
                    .inner
                    .master
                    .reserve_slots(self.inner.id, size, want)
                    .await
                {
                    Ok(slots) => slots,
                    Err(_) => {
                        *pool.retry_at.lock() = Some(now + RETRY_AFTER);
                        Vec::new()
                    }
                }
            };
            let mut got = got.into_iter();
            for (n, t) in sizes.iter().zip(out.iter_mut()) {
                if *n == size && t.is_none() {
                    *t = got.next().map(|slot| Taken { slot, at: now });
                }
            }
            got.for_each(|slot| pool.push(size, slot, now));
        }
        if out.iter().all(Option::is_some) {
            self.release_dropped();
            return Some(out.into_iter().flatten().collect());
        }
        // Not enough: the batch goes the usual way; the slots wait for the next puts.
        for (n, t) in sizes.iter().zip(out) {
            if let Some(t) = t {
                pool.push(*n, t.slot, t.at);
            }
        }
        self.release_dropped();
        None
    }

    /// What a `batch_put_reserved` answer means for each put of the batch (in the order
    /// of `keys`); `None` for the whole batch, or an item, that must go the usual way.
    pub(super) fn settle_batch(
        &self,
        keys: &[&str],
        taken: Vec<Taken>,
        sizes: &[u64],
        answer: crate::BatchResult<Option<ReservedSlot>>,
    ) -> Option<Vec<Option<Result<(), ErrorCode>>>> {
        let results = match answer {
            Ok(r) if r.len() == keys.len() => r,
            _ => {
                self.inner.slots.clear();
                self.release_dropped();
                return None;
            }
        };
        Some(
            keys.iter()
                .zip(taken)
                .zip(sizes)
                .zip(results)
                .map(|(((k, t), n), r)| self.settle_one(k, t, *n, r))
                .collect(),
        )
    }

    /// Gives the slots dropped unwritten back to the master in the background (a master
    /// that does not know them ignores them: slot ids are never reissued).
    fn release_dropped(&self) {
        let ids = std::mem::take(&mut *self.inner.slots.dropped.lock());
        if ids.is_empty() {
            return;
        }
        let (master, id) = (self.inner.master.clone(), self.inner.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = master.release_slots(id, &ids).await;
            });
        }
    }

    /// Slots this client holds (for tests and diagnostics).
    pub fn reserved_slots_held(&self) -> usize {
        self.inner.slots.len()
    }
}
