//! The allocation gate of a new master incarnation.
//!
//! Clients hold ranges reserved ahead of their puts (`core/slots.rs`) and write into one
//! before the one call that commits it. A new incarnation (a restart, or a standby taking
//! over) knows nothing of the slots its predecessor lent, and could hand one of those
//! ranges to another put while a client still writes into it. Clients write into a slot
//! only within 300 ms of the lending master's last answer to them (`mooncake_store`'s
//! `client/slots.rs`), and a new incarnation allocates nothing until [`ALLOCATION_GATE`]
//! after it starts (every allocating call waits out the rest), which also runs after its
//! predecessor's last answer: a restart takes longer than nothing, and a takeover waits
//! out the old leader's lease first.

use std::time::{Duration, Instant};

/// How long a new master incarnation allocates nothing.
pub(crate) const ALLOCATION_GATE: Duration = Duration::from_millis(600);

/// When a new incarnation's allocations may start.
pub(crate) fn opens_at() -> Instant {
    Instant::now() + ALLOCATION_GATE
}

/// Waits until `open` (an allocating call of a new incarnation).
pub(crate) async fn wait_until(open: Instant) {
    let now = Instant::now();
    if open > now {
        tokio::time::sleep(open - now).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use mooncake_store::{ClientId, MasterApi, ReplicateConfig};

    use crate::{Master, MasterConfig};

    /// A new incarnation allocates nothing for the gate's length; reads do not wait.
    #[tokio::test]
    async fn a_new_master_allocates_only_after_the_gate() {
        let started = Instant::now();
        let m = Master::new(MasterConfig::default());
        assert!(!m.exist_key("k").await.unwrap());
        assert!(started.elapsed() < super::ALLOCATION_GATE, "a read waited");
        let r = m
            .put_start(ClientId(1), "k", 10, &ReplicateConfig::default())
            .await;
        assert!(
            r.is_err(),
            "no segment: the put fails, but only after the gate"
        );
        assert!(started.elapsed() >= super::ALLOCATION_GATE);
    }
}
