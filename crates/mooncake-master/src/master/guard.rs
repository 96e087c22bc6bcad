//! The guard of the core's lock: on release it hands the call's durable changes to the
//! state directory and the standbys, and waits until what the call must see durable is.

use parking_lot::MutexGuard;

use super::Master;
use crate::core::MasterCore;

/// The core's lock; when it is released, the call's durable changes are queued for the
/// state directory (still under the lock, so in the core's order) and written before the
/// caller goes on to answer.
pub(super) struct CoreGuard<'a> {
    pub(super) master: &'a Master,
    /// `Some` until dropped.
    pub(super) guard: Option<MutexGuard<'a, MasterCore>>,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = MasterCore;

    fn deref(&self) -> &MasterCore {
        // Invariant: `guard` is `Some` until `drop`.
        self.guard.as_deref().expect("core guard used after drop")
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut MasterCore {
        // Invariant: `guard` is `Some` until `drop`.
        self.guard
            .as_deref_mut()
            .expect("core guard used after drop")
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        let Some(mut core) = self.guard.take() else {
            return;
        };
        let state = self.master.state.as_ref();
        let repl = self.master.repl.as_deref();
        if state.is_none() && repl.is_none() {
            return;
        }
        let batch = core.take_journal();
        let recorded = !batch.is_empty();
        let space = core.take_space();
        // A call's own changes must be on disk (and at the standbys) before it answers;
        // a call that allocated space must also wait for every earlier change that freed
        // space (see `must_wait_for`). Reads wait for nothing: at worst they see a change
        // one write (or round trip) before it is durable.
        let (state_seq, repl_seq) = match (state, repl) {
            (Some(s), None) => (s.record(batch, space), None),
            (None, Some(r)) => (None, r.record(batch, space)),
            (Some(s), Some(r)) => (s.record(batch.clone(), space), r.record(batch, space)),
            (None, None) => (None, None),
        };
        drop(core);
        if let (Some(s), Some(seq)) = (state, state_seq) {
            if !s.is_written(seq) {
                off_the_reactor(|| s.flush(&self.master.core));
            }
        }
        if let Some(r) = repl {
            if recorded {
                // This call's batch (and those queued meanwhile) to the standbys.
                r.flush();
            }
            if let Some(seq) = repl_seq.filter(|s| !r.is_acked(*s)) {
                // An RPC waits once, asynchronously, after its last change (`deferring_waits`).
                if !defer_wait(seq) {
                    r.wait_acked_blocking(seq);
                }
            }
        }
    }
}

tokio::task_local! {
    /// The batch the current RPC must see acknowledged by the standbys before it answers
    /// (0: none), when its waits are deferred.
    static DEFERRED_WAIT: std::cell::Cell<u64>;
}

/// Runs `call` with its replication waits deferred: the core's guard only notes the batch
/// to wait for, and the caller awaits it (`Replicator::wait_acked`) before answering. The
/// call neither blocks a reactor thread nor hands it to another thread while it waits.
/// Returns the call's result and the batch to wait for (0: none).
pub(crate) async fn deferring_waits<F: std::future::Future>(call: F) -> (F::Output, u64) {
    DEFERRED_WAIT
        .scope(std::cell::Cell::new(0), async {
            let r = call.await;
            (r, DEFERRED_WAIT.with(std::cell::Cell::get))
        })
        .await
}

/// Notes `seq` for the enclosing [`deferring_waits`]; false outside one.
fn defer_wait(seq: u64) -> bool {
    DEFERRED_WAIT.try_with(|c| c.set(c.get().max(seq))).is_ok()
}

/// Which sequence number a call must see durable (written, or acknowledged by the
/// standbys) before it answers, given its own batch (`own`, if it recorded one), the last
/// batch queued before it, and what it did with space. A call that freed space marks
/// `last_free`; a call that allocated waits for the last free (the range it hands out may
/// be one an unwritten erase freed: a crash would bring the old object back over the new
/// bytes); its own batch is waited for when `wait_own` (always for the state directory
/// and synchronous replication).
pub(crate) fn must_wait_for(
    own: Option<u64>,
    last_queued: u64,
    space: crate::SpaceUse,
    last_free: &std::sync::atomic::AtomicU64,
    wait_own: bool,
) -> Option<u64> {
    use std::sync::atomic::Ordering;
    if space.freed {
        last_free.fetch_max(own.unwrap_or(last_queued), Ordering::AcqRel);
    }
    let alloc = space
        .allocated
        .then(|| last_free.load(Ordering::Acquire))
        .filter(|s| *s > 0);
    match (own.filter(|_| wait_own), alloc) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Runs blocking file I/O from a request handler without stalling the runtime's other
/// tasks (pings, reads) on this worker: `block_in_place` on a multi-threaded runtime.
pub(super) fn off_the_reactor<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
