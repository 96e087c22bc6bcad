//! The RPC face of an HA master: every call goes to the current term's [`Master`] while
//! this node leads, and is answered `UNAVAILABLE_IN_CURRENT_MODE` (-1011) while it stands
//! by, so a client that reached a standby looks the leader up again.
//!
//! The switch also carries the moment the lease may no longer be alive (minus the
//! margin): a call is refused after it even if the election loop has not run yet (a
//! paused or starved process), answered `UNAVAILABLE_IN_CURRENT_MODE` (not run: safe to
//! retry elsewhere); a call that finishes after it, or under another term, is answered
//! `RPC_TIMEOUT` (run, outcome unknown), since a new leader may serve without what it did.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use mooncake_store::{ErrorCode, MasterApi};
use parking_lot::RwLock;

use crate::Master;

/// The master RPCs are answered by, if this node leads, and until when.
#[derive(Debug, Default)]
pub(crate) struct SwitchApi {
    current: RwLock<Option<(Arc<Master>, Instant)>>,
}

impl SwitchApi {
    /// Starts (`Some`) serving until `until`, or ends (`None`) serving.
    pub(crate) fn set(&self, master: Option<Arc<Master>>, until: Instant) {
        *self.current.write() = master.map(|m| (m, until));
    }

    /// Serve until `until` (a renewed lease).
    pub(crate) fn extend(&self, until: Instant) {
        if let Some((_, u)) = self.current.write().as_mut() {
            *u = (*u).max(until);
        }
    }

    /// The serving master, if the lease is still provably alive.
    pub(crate) fn current(&self) -> Option<Arc<Master>> {
        match &*self.current.read() {
            Some((m, until)) if Instant::now() < *until => Some(m.clone()),
            _ => None,
        }
    }

    /// Whether RPCs are served now.
    pub(crate) fn serving(&self) -> bool {
        self.current().is_some()
    }

    /// Whether `master` still serves (the same term, its lease still provably alive).
    fn still_serving(&self, master: &Arc<Master>) -> bool {
        match &*self.current.read() {
            Some((m, until)) => Arc::ptr_eq(m, master) && Instant::now() < *until,
            None => false,
        }
    }

    async fn route<T, F, Fut>(&self, _op: &'static str, call: F) -> Result<T, ErrorCode>
    where
        T: Send,
        F: Fn(Arc<dyn MasterApi>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, ErrorCode>> + Send,
    {
        let Some(m) = self.current() else {
            // Not run: the client may retry on the leader.
            return Err(ErrorCode::UnavailableInCurrentMode);
        };
        let (r, wait) = crate::master::deferring_waits(call(m.clone())).await;
        if let Some(repl) = m.repl.as_deref().filter(|_| wait > 0) {
            repl.wait_acked(wait).await;
        }
        if self.still_serving(&m) {
            r
        } else {
            // Run, but the term may have ended meanwhile (a new leader may serve without
            // what it did): the outcome is unknown, as after a timeout.
            Err(ErrorCode::RpcTimeout)
        }
    }
}

mooncake_store::impl_master_api_by_route!(SwitchApi);
