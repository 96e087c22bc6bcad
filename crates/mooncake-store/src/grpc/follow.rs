//! [`LeaderFollowingClient`]: a [`MasterApi`] for `master_server_addr = "etcd://h1:2379;h2:2379"`,
//! Mooncake's HA form (`store-semantics.md` §5). The leader's RPC address is the value of
//! `mooncake-store/<cluster_id>/master_view`; a call that fails because the master is gone
//! (`RpcFail`, `RpcTimeout`) or is not serving (`UnavailableInCurrentMode`, what a standby
//! answers) looks the leader up again and is retried on it, until
//! [`LeaderFollowingClient::failover_timeout`] has passed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_metadata::{EtcdStore, EtcdStoreConfig};
use parking_lot::RwLock;

use super::{GrpcClientConfig, GrpcMasterClient};
use crate::{ErrorCode, MasterApi};

/// The cluster id when neither `--cluster_id` nor `MC_STORE_CLUSTER_ID` names one.
pub const DEFAULT_CLUSTER_ID: &str = "mooncake_cluster";

/// The etcd key naming the leader of `cluster_id`: `mooncake-store/<cluster_id>/master_view`.
pub fn master_view_key(cluster_id: &str) -> String {
    format!(
        "mooncake-store/{}/master_view",
        cluster_id.trim_end_matches('/')
    )
}

/// Whether `addr` names masters through etcd (`etcd://…`) rather than one `host:port`.
pub fn is_etcd_master_address(addr: &str) -> bool {
    addr.trim_start().starts_with("etcd://")
}

/// A client of whichever master leads the cluster, found in etcd and followed on failover.
#[derive(Debug)]
pub struct LeaderFollowingClient {
    etcd: EtcdStore,
    view_key: String,
    config: GrpcClientConfig,
    current: RwLock<Option<Arc<GrpcMasterClient>>>,
    /// One lookup at a time: callers that fail together reconnect once.
    lookup: tokio::sync::Mutex<()>,
    failover_timeout: Duration,
}

/// Errors after which the leader is looked up again.
fn leader_may_have_moved(e: ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::RpcFail | ErrorCode::RpcTimeout | ErrorCode::UnavailableInCurrentMode
    )
}

/// Calls that may run twice without harm: reads, liveness, mounts, and allocations (a
/// second `put_start` at a new leader, which never saw the first, is a fresh start; at the
/// same leader it is refused with a clear code). A call that failed in transport may have
/// run: only these are retried then. A standby's `UNAVAILABLE_IN_CURRENT_MODE` means the
/// call did not run, so every call is retried after it.
fn safe_to_repeat(op: &str) -> bool {
    matches!(
        op,
        "connect"
            | "ping"
            | "exist_key"
            | "batch_exist_key"
            | "get_replica_list"
            | "batch_get_replica_list"
            | "batch_get_replica_list_or_load"
            | "mount_segment"
            | "remount_segments"
            | "query_task"
            | "mount_disk_tier"
            | "poll_disk_tasks"
            | "explain_key"
            | "put_start"
            | "batch_put_start"
            | "upsert_start"
            | "batch_upsert_start"
    )
}

impl LeaderFollowingClient {
    /// Connects to the leader of `cluster_id` named in the etcd cluster `addr`
    /// (`etcd://h1:2379;h2:2379`), waiting up to `failover_timeout` for one to be elected.
    pub async fn connect(
        addr: &str,
        cluster_id: &str,
        config: GrpcClientConfig,
        failover_timeout: Duration,
    ) -> Result<Self, ErrorCode> {
        let etcd = EtcdStore::new(
            addr,
            EtcdStoreConfig {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(2),
            },
        )
        .map_err(|e| {
            tracing::warn!(addr, error = %e, "invalid etcd master address");
            ErrorCode::InvalidParams
        })?;
        // A leader that went silent (host down) must cost a call seconds, not the default
        // 30 s: then the call looks the leader up again.
        let config = GrpcClientConfig {
            rpc_timeout: config.rpc_timeout.min(Duration::from_secs(5)),
            ..config
        };
        let client = Self {
            etcd,
            view_key: master_view_key(cluster_id),
            config,
            current: RwLock::new(None),
            lookup: tokio::sync::Mutex::new(()),
            failover_timeout,
        };
        client
            .leader(None, Instant::now() + failover_timeout)
            .await?;
        Ok(client)
    }

    /// How long a call keeps looking for a leader after the one it used went away.
    pub fn failover_timeout(&self) -> Duration {
        self.failover_timeout
    }

    /// The address of the leader this client talks to now.
    pub fn leader_addr(&self) -> Option<String> {
        self.current.read().as_ref().map(|c| c.addr().to_owned())
    }

    /// The current leader's client; looked up (again) when there is none or when the one
    /// the caller used (`failed`) is still current.
    async fn leader(
        &self,
        failed: Option<&str>,
        deadline: Instant,
    ) -> Result<Arc<GrpcMasterClient>, ErrorCode> {
        let _one = match tokio::time::timeout_at(deadline.into(), self.lookup.lock()).await {
            Ok(g) => g,
            Err(_) => return Err(ErrorCode::RpcFail),
        };
        if let Some(c) = self.current.read().clone() {
            if failed != Some(c.addr()) {
                return Ok(c);
            }
        }
        let mut last;
        loop {
            match self.etcd.get_versioned(&self.view_key).await {
                Ok(Some(view)) => {
                    let addr = String::from_utf8_lossy(&view.value).trim().to_owned();
                    let config = GrpcClientConfig {
                        connect_timeout: self.config.connect_timeout.min(Duration::from_secs(1)),
                        ..self.config.clone()
                    };
                    match GrpcMasterClient::connect(&addr, config).await {
                        Ok(c) => {
                            tracing::info!(leader = %addr, key = %self.view_key, "following the master leader");
                            let c = Arc::new(c);
                            *self.current.write() = Some(c.clone());
                            return Ok(c);
                        }
                        Err(e) => last = e,
                    }
                }
                Ok(None) => last = ErrorCode::RpcFail,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the master view from etcd");
                    last = ErrorCode::RpcFail;
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(key = %self.view_key, etcd = %self.etcd.endpoints().collect::<Vec<_>>().join(","),
                    "no master leader answered within {:?}", self.failover_timeout);
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `call` on the leader; on an error that means the leader may have moved, looks
    /// it up again and retries, until the failover timeout.
    async fn route<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, ErrorCode>
    where
        T: Send,
        F: Fn(Arc<dyn MasterApi>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, ErrorCode>> + Send,
    {
        let deadline = Instant::now() + self.failover_timeout;
        // The common case takes no lock but the read of the current client.
        let current = self.current.read().clone();
        let mut leader = match current {
            Some(c) => c,
            None => self.leader(None, deadline).await?,
        };
        loop {
            let api: Arc<dyn MasterApi> = leader.clone();
            match call(api).await {
                Err(e) if leader_may_have_moved(e) && Instant::now() < deadline => {
                    tracing::debug!(op, error = %e, leader = %leader.addr(), "master call failed; looking up the leader");
                    let next = self.leader(Some(leader.addr()), deadline).await;
                    let not_run = e == ErrorCode::UnavailableInCurrentMode;
                    match next {
                        Ok(next) if not_run || safe_to_repeat(op) => leader = next,
                        // The call may have run: the caller decides; its next call goes
                        // to the new leader.
                        _ => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }
}

crate::impl_master_api_by_route!(LeaderFollowingClient);
