//! When a leader must stop serving: the pure rule that keeps two masters from ever
//! accepting writes at once.
//!
//! etcd expires a lease `ttl` after it *received* the last renewal, and the renewal was
//! sent before it was received, so `sent + ttl` is a lower bound on the expiry that needs
//! no clock agreement between hosts (only similar clock rates). The leader stops serving
//! `margin` before that bound; a standby can only win after the expiry. A renewal that
//! fails, or answers that the lease is gone, never extends the bound.

use std::time::{Duration, Instant};

/// The leader's view of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseClock {
    /// The lease lives at least until then; `None` once it is known to be gone.
    valid_until: Option<Instant>,
    /// Stop serving this long before `valid_until`.
    margin: Duration,
}

impl LeaseClock {
    /// A lease granted by a request sent at `sent` for `ttl`.
    pub(crate) fn granted(sent: Instant, ttl: Duration, margin: Duration) -> Self {
        Self {
            valid_until: Some(sent + ttl),
            margin,
        }
    }

    /// A renewal sent at `sent` answered with `ttl` (`None`: the lease is gone).
    pub(crate) fn renewed(&mut self, sent: Instant, ttl: Option<Duration>) {
        match (ttl, self.valid_until) {
            (Some(ttl), Some(v)) => self.valid_until = Some(v.max(sent + ttl)),
            _ => self.valid_until = None,
        }
    }

    /// The lease is known to be gone (revoked, or the key names another master).
    pub(crate) fn lost(&mut self) {
        self.valid_until = None;
    }

    /// When the leader must have stopped serving (now, if the lease is gone).
    pub(crate) fn step_down_at(&self, now: Instant) -> Instant {
        match self.valid_until {
            Some(v) => v.checked_sub(self.margin).unwrap_or(now).min(v),
            None => now,
        }
    }

    /// Whether the leader must stop serving at `now`.
    #[cfg(test)]
    pub(crate) fn must_step_down(&self, now: Instant) -> bool {
        now >= self.step_down_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_leader_stops_serving_a_margin_before_the_earliest_expiry() {
        let t0 = Instant::now();
        let clock = LeaseClock::granted(t0, 3 * S, S);
        assert!(!clock.must_step_down(t0));
        assert!(!clock.must_step_down(t0 + S + S / 2));
        assert!(clock.must_step_down(t0 + 2 * S));
        assert_eq!(clock.step_down_at(t0), t0 + 2 * S);
    }

    #[test]
    fn renewals_extend_from_when_they_were_sent_and_never_shorten() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::granted(t0, 3 * S, S);
        // Sent at 1 s, answered late: the bound counts from the send.
        clock.renewed(t0 + S, Some(3 * S));
        assert_eq!(clock.step_down_at(t0), t0 + 3 * S);
        // An answer with a shorter TTL for an older request does not move it back.
        clock.renewed(t0, Some(S));
        assert_eq!(clock.step_down_at(t0), t0 + 3 * S);
    }

    #[test]
    fn a_lease_etcd_says_is_gone_or_that_was_lost_means_stepping_down_now() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::granted(t0, 3 * S, S);
        clock.renewed(t0 + S, None);
        assert!(clock.must_step_down(t0 + S));
        // Once gone, a later answer cannot bring it back.
        clock.renewed(t0 + S, Some(3 * S));
        assert!(clock.must_step_down(t0 + S));
        let mut clock = LeaseClock::granted(t0, 3 * S, S);
        clock.lost();
        assert!(clock.must_step_down(t0));
    }
}
