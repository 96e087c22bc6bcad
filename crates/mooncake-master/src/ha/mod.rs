//! Master high availability (`--enable_ha`): leader election on an etcd lease, and a
//! leader that streams every durable change to its standbys so a new leader starts warm.
//!
//! - `lease.rs`: when a leader must stop serving (pure);
//! - `wire.rs`: the replication stream's messages and framing;
//! - `replicator.rs`: the leader's side (standbys join with a snapshot, then get every
//!   call's changes, written by the call itself; a call answers once every in-sync
//!   standby has acknowledged them);
//! - `link.rs`: one standby's connection on the leader (its snapshot, and the task that
//!   writes what the calls could not, heartbeats and says goodbye);
//! - `follower.rs`: a standby's side (applies the stream to a
//!   [`DurableState`](crate::DurableState));
//! - `switch.rs`: the RPC face: the current term's master, or "not serving";
//! - `node.rs`: the election loop and the life of a term.
//!
//! The guarantee and its cost are in `docs/durability.md`.

mod follower;
mod lease;
mod link;
mod node;
mod replicator;
mod switch;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

pub(crate) use self::node::HaNode;
pub(crate) use self::replicator::Replicator;
pub(crate) use self::switch::SwitchApi;

/// How a master takes part in an HA group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// The etcd cluster (`--ha_backend_connstring` or `--etcd_endpoints`):
    /// `etcd://h1:2379;h2:2379` or a bare `h1:2379;h2:2379` list.
    pub etcd: String,
    /// The group (`--cluster_id`, `MC_STORE_CLUSTER_ID`, default `mooncake_cluster`): the
    /// leader is named under `mooncake-store/<cluster_id>/master_view`.
    pub cluster_id: String,
    /// The leader's etcd lease (`--ha_lease_ttl_sec`, 3 s): a leader killed outright is
    /// replaced about this long after its last renewal.
    pub lease_ttl: Duration,
    /// The RPC address clients reach this master at, published while it leads (the bound
    /// `--rpc_address:--rpc_port` unless `--ha_advertise_address` says otherwise; never a
    /// wildcard address).
    pub advertise_rpc: String,
    /// Where this master serves the replication stream while it leads
    /// (`--ha_replication_address`; port 0 picks one).
    pub replication_addr: String,
    /// How long a call waits for a standby's acknowledgement before the standby is
    /// dropped from the in-sync set (`--ha_replication_timeout_ms`, 1000 ms).
    pub replication_timeout: Duration,
    /// Whether a call answers only once the in-sync standbys have its changes
    /// (`--ha_sync_replication`, true): then no acknowledged change is lost on failover.
    /// False: the standbys trail by the replication lag (about one round trip), and a
    /// failover may lose the changes of that window; only a call that reuses freed space
    /// waits.
    pub sync_replication: bool,
    /// How long restored segments wait for their owners to remount them after a failover
    /// (`--state_restore_grace_sec`, 60 s).
    pub restore_grace: Duration,
}

impl HaConfig {
    /// Defaults for a master reachable at `advertise_rpc`, electing through `etcd`.
    pub fn new(etcd: impl Into<String>, advertise_rpc: impl Into<String>) -> Self {
        Self {
            etcd: etcd.into(),
            cluster_id: mooncake_store::grpc::DEFAULT_CLUSTER_ID.to_owned(),
            lease_ttl: Duration::from_secs(3),
            advertise_rpc: advertise_rpc.into(),
            replication_addr: "127.0.0.1:0".to_owned(),
            replication_timeout: Duration::from_millis(1000),
            sync_replication: true,
            restore_grace: Duration::from_secs(60),
        }
    }

    /// The etcd key naming the leader's RPC address (Mooncake's).
    pub fn view_key(&self) -> String {
        mooncake_store::grpc::master_view_key(&self.cluster_id)
    }

    /// The prefix under which masters announce their state when the leader is gone
    /// (ours; each on its own lease): the one holding the newest state campaigns first.
    pub fn candidates_prefix(&self) -> String {
        format!(
            "mooncake-store/{}/master_candidates/",
            self.cluster_id.trim_end_matches('/')
        )
    }

    /// The etcd key naming the leader's replication address (ours; on the same lease).
    pub fn replication_key(&self) -> String {
        format!(
            "mooncake-store/{}/master_replication",
            self.cluster_id.trim_end_matches('/')
        )
    }
}

/// A master's role in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows the leader; answers no RPC.
    Standby,
    /// Serves the cluster.
    Leader,
}

impl Role {
    /// `leader` or `standby`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// How new a master's state is: the term it comes from (the etcd creation revision of
/// that leader's view key) and the last batch of that term it holds. A higher position
/// holds everything a lower one does (a standby joins a term with its leader's snapshot).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) term: i64,
    pub(crate) seq: u64,
}

impl Position {
    pub(crate) fn encode(self) -> String {
        format!("{} {}", self.term, self.seq)
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let (term, seq) = text.trim().split_once(' ')?;
        Some(Self {
            term: term.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Among announced candidates `(name, position)`, the one that should lead: the newest
/// state, ties to the smallest name.
pub(crate) fn best_candidate(candidates: &[(String, Position)]) -> Option<&str> {
    candidates
        .iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(n, _)| n.as_str())
}

/// What the node shows on `/role`, `/ha_status` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct HaStatus {
    /// The leader's RPC address as last seen.
    leader: Mutex<String>,
    /// A standby holding the whole state of the leader it follows.
    pub(crate) synced: AtomicBool,
    /// Times the leader this node saw changed (its own terms included).
    pub(crate) leader_changes: AtomicU64,
    /// Terms this node led.
    pub(crate) terms: AtomicU64,
    /// Batches a standby applied.
    pub(crate) applied: AtomicU64,
    /// Objects a standby holds.
    pub(crate) standby_objects: AtomicU64,
    /// From seeing no leader to serving, of this node's last takeover, in ms.
    pub(crate) takeover_ms: AtomicU64,
}

impl HaStatus {
    pub(crate) fn leader(&self) -> String {
        self.leader.lock().clone()
    }

    /// Notes the leader seen now; counts a change.
    pub(crate) fn see_leader(&self, addr: &str) {
        let mut l = self.leader.lock();
        if *l != addr {
            if !addr.is_empty() {
                self.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            addr.clone_into(&mut l);
        }
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

    fn p(term: i64, seq: u64) -> Position {
        Position { term, seq }
    }

    #[test]
    fn the_newest_state_leads_and_ties_go_to_the_smallest_name() {
        assert_eq!(Position::decode(&p(42, 7).encode()), Some(p(42, 7)));
        assert_eq!(Position::decode("x 1"), None);
        let c = |v: &[(&str, Position)]| -> Vec<(String, Position)> {
            v.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()
        };
        // A later term beats any batch of an earlier one.
        assert_eq!(
            best_candidate(&c(&[("a", p(5, 900)), ("b", p(9, 1))])),
            Some("b")
        );
        // Within a term, the standby that applied more.
        assert_eq!(
            best_candidate(&c(&[("a", p(9, 3)), ("b", p(9, 4))])),
            Some("b")
        );
        // An empty (new) node never beats one with state; a new group picks by name.
        assert_eq!(
            best_candidate(&c(&[("a", p(0, 0)), ("z", p(1, 0))])),
            Some("z")
        );
        assert_eq!(
            best_candidate(&c(&[("b", p(0, 0)), ("a", p(0, 0))])),
            Some("a")
        );
        assert_eq!(best_candidate(&[]), None);
    }
}
