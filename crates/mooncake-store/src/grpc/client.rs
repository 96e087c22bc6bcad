//! [`GrpcMasterClient`]: [`MasterApi`] over a tonic channel to a remote master.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use super::convert::{
    self, assignment_from_pb, batch_from_pb, check, client_to_pb, key_request, keys_request,
    put_start_request, split, status_batch,
};
use super::pb;
use super::pb::master_service_client::MasterServiceClient;
use super::tunnel::Tunnel;
use super::MAX_MESSAGE_SIZE;
use crate::disk::{DiskRecord, DiskTask, DiskTaskResult};
use crate::master_api::{chunked, BatchResult, MasterApi};
use crate::task::{TaskAssignment, TaskId, TaskInfo};
use crate::types::MAX_BATCH_SIZE;
use crate::types::{
    ClientId, DrainMove, PingReply, ProtocolVersion, ReplicaDescriptor, ReplicaList,
    ReplicateConfig, Segment, SegmentId,
};
use crate::ErrorCode;
use mooncake_metadata::AuthToken;

/// HTTP/2 keep-alive ping interval: a master that vanished without closing the connection
/// (host down, network cut) is noticed within interval + timeout instead of the kernel's
/// TCP retransmission timeout, and the next RPC reconnects.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeouts and credentials of a [`GrpcMasterClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcClientConfig {
    /// Bound on establishing the connection (TCP and HTTP/2 handshake). Default 5 s.
    pub connect_timeout: Duration,
    /// Bound on each RPC, reconnection included; exceeding it is `RpcTimeout`. Default 30 s.
    pub rpc_timeout: Duration,
    /// Carry the messages over the lean [tunnel](super) transport (pooled plain TCP
    /// connections, answered inline) instead of HTTP/2; falls back to HTTP/2 if the master
    /// does not speak it. Default true.
    pub tunnel: bool,
    /// With the tunnel, reach a master on this host (a loopback address) through its
    /// abstract Unix socket instead of TCP; falls back to TCP if it has none. Default true.
    pub local_socket: bool,
    /// Token presented to a master that requires one (see
    /// [`ServeOptions::auth_token`](super::ServeOptions)). Default none (binaries and the
    /// Python package fill it from `--auth_token` / `MOONCAKE_AUTH_TOKEN`).
    pub auth_token: Option<AuthToken>,
}

impl Default for GrpcClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(30),
            tunnel: true,
            local_socket: true,
            auth_token: None,
        }
    }
}

/// A [`MasterApi`] that forwards every call to a remote master over gRPC.
///
/// One HTTP/2 connection carries every call (concurrent calls are multiplexed as streams);
/// clones share it. If the connection breaks, the next call reconnects.
///
/// Transport failures are `RpcFail`, an exceeded [`GrpcClientConfig::rpc_timeout`] (or a
/// deadline the server reports) is `RpcTimeout`; the master's own errors come back as they are.
#[derive(Debug, Clone)]
pub struct GrpcMasterClient {
    addr: String,
    rpc: MasterServiceClient<Transport>,
    rpc_timeout: Duration,
    /// The transport enforces `rpc_timeout` itself (the tunnel), arming a timer only when
    /// it has to sleep; otherwise every call runs under a tokio timeout.
    timed_by_transport: bool,
    master_version: ProtocolVersion,
}

impl GrpcMasterClient {
    /// Connects to the master at `addr` (`host:port`, Mooncake's `master_server_addr`; an
    /// `http://host:port` URI is accepted too) and exchanges protocol versions.
    ///
    /// Fails with `RpcFail` if the master cannot be reached within
    /// [`GrpcClientConfig::connect_timeout`], and with `InvalidVersion` if it refuses
    /// [`ProtocolVersion::CURRENT`].
    pub async fn connect(addr: &str, config: GrpcClientConfig) -> Result<Self, ErrorCode> {
        if config.tunnel {
            let host_port = addr.split_once("://").map_or(addr, |(_, rest)| rest);
            let host_port = host_port.trim_end_matches('/');
            let connecting = Tunnel::connect(
                host_port,
                config.connect_timeout,
                config.rpc_timeout,
                config.local_socket,
                config.auth_token.as_ref(),
            );
            let tunnel = match connecting.await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(addr, error = %e, "cannot connect to the master");
                    return Err(ErrorCode::RpcFail);
                }
            };
            match Self::handshake(addr, Transport::Tunnel(tunnel), config.clone()).await {
                Err(ErrorCode::RpcFail) => {
                    tracing::info!(
                        addr,
                        "the master does not speak the tunnel transport; using HTTP/2"
                    );
                }
                other => return other,
            }
        }
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| {
                tracing::warn!(addr, error = %e, "invalid master address");
                ErrorCode::RpcFail
            })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = match tokio::time::timeout(config.connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                tracing::warn!(addr, error = %error_chain(&e), "cannot connect to the master");
                return Err(ErrorCode::RpcFail);
            }
            Err(_) => {
                tracing::warn!(
                    addr,
                    timeout = ?config.connect_timeout,
                    "cannot connect to the master: timed out"
                );
                return Err(ErrorCode::RpcFail);
            }
        };
        let bearer = match &config.auth_token {
            Some(t) => Some(
                http::HeaderValue::from_str(&t.bearer()).map_err(|_| ErrorCode::InvalidParams)?,
            ),
            None => None,
        };
        Self::handshake(addr, Transport::Http2(channel, bearer), config).await
    }

    /// Exchanges protocol versions over `transport`.
    async fn handshake(
        addr: &str,
        transport: Transport,
        config: GrpcClientConfig,
    ) -> Result<Self, ErrorCode> {
        let timed_by_transport = matches!(transport, Transport::Tunnel(_));
        let rpc = MasterServiceClient::new(transport)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let mut client = Self {
            addr: addr.to_owned(),
            rpc,
            rpc_timeout: config.rpc_timeout,
            timed_by_transport,
            master_version: ProtocolVersion::CURRENT,
        };
        match MasterApi::connect(&client, ProtocolVersion::CURRENT).await {
            Ok(v) => client.master_version = v,
            Err(ErrorCode::InvalidVersion) => {
                tracing::warn!(
                    addr,
                    client_version = %ProtocolVersion::CURRENT,
                    "the master refused this client's protocol version"
                );
                return Err(ErrorCode::InvalidVersion);
            }
            Err(e) => {
                tracing::warn!(addr, error = %e, "protocol version exchange with the master failed");
                return Err(e);
            }
        }
        Ok(client)
    }

    /// The address this client was connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The master's protocol version, as it answered in [`GrpcMasterClient::connect`].
    pub fn master_version(&self) -> ProtocolVersion {
        self.master_version
    }

    /// Runs one RPC with the client's deadline and maps transport failures to error codes.
    pub(super) async fn call<T, F, Fut>(&self, method: &'static str, f: F) -> Result<T, ErrorCode>
    where
        F: FnOnce(MasterServiceClient<Transport>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        // A timer armed here, from a thread that is not the runtime's driver, wakes the
        // driver on every call; the tunnel bounds its own waits instead.
        let answer = if self.timed_by_transport {
            Ok(f(self.rpc.clone()).await)
        } else {
            tokio::time::timeout(self.rpc_timeout, f(self.rpc.clone())).await
        };
        match answer {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => {
                let code = status_to_error(&status);
                if status.code() == Code::Unauthenticated {
                    tracing::warn!(addr = %self.addr, method, "{}", status.message());
                }
                tracing::debug!(
                    addr = %self.addr, method, code = ?status.code(),
                    message = status.message(), "master rpc failed"
                );
                Err(code)
            }
            Err(_) => {
                tracing::debug!(addr = %self.addr, method, timeout = ?self.rpc_timeout,
                    "master rpc timed out");
                Err(ErrorCode::RpcTimeout)
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the messages travel: HTTP/2 (tonic's channel) or the lean tunnel.
#[derive(Debug, Clone)]
pub(super) enum Transport {
    /// With the `authorization` value sent on every request, when there is a token.
    Http2(Channel, Option<http::HeaderValue>),
    Tunnel(Tunnel),
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Http2(c, _) => c.poll_ready(cx).map_err(Into::into),
            Transport::Tunnel(t) => t.poll_ready(cx),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Http2(c, bearer) => {
                let mut req = req;
                if let Some(b) = bearer {
                    req.headers_mut()
                        .insert(http::header::AUTHORIZATION, b.clone());
                }
                let f = c.call(req);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Transport::Tunnel(t) => t.call(req),
        }
    }
}

/// The error code of a failed RPC.
fn status_to_error(status: &Status) -> ErrorCode {
    match status.code() {
        Code::DeadlineExceeded => ErrorCode::RpcTimeout,
        _ => ErrorCode::RpcFail,
    }
}

/// An error and its sources, `: `-separated (tonic's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

type SlotsResult = Result<Vec<crate::ReservedSlot>, ErrorCode>;

#[async_trait]
impl MasterApi for GrpcMasterClient {
    async fn connect(&self, client: ProtocolVersion) -> Result<ProtocolVersion, ErrorCode> {
        let req = pb::ConnectRequest::from(client);
        self.call("Connect", |mut c| async move { c.connect(req).await })
            .await?
            .try_into()
    }

    async fn mount_segment(&self, client: ClientId, segment: Segment) -> Result<(), ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let req = pb::MountSegmentRequest {
            client_hi,
            client_lo,
            segment: Some(segment.into()),
        };
        let r = self.call(
            "MountSegment",
            |mut c| async move { c.mount_segment(req).await },
        );
        check(r.await?.error_code)
    }

    async fn remount_segments(
        &self,
        client: ClientId,
        segments: Vec<Segment>,
    ) -> Result<(), ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let segments = segments.into_iter().map(pb::Segment::from).collect();
        let req = pb::RemountSegmentsRequest {
            client_hi,
            client_lo,
            segments,
        };
        let r = self.call("RemountSegments", |mut c| async move {
            c.remount_segments(req).await
        });
        check(r.await?.error_code)
    }

    async fn unmount_segment(&self, client: ClientId, segment: SegmentId) -> Result<(), ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let (segment_hi, segment_lo) = split(segment.0);
        let req = pb::UnmountSegmentRequest {
            client_hi,
            client_lo,
            segment_hi,
            segment_lo,
        };
        let r = self.call("UnmountSegment", |mut c| async move {
            c.unmount_segment(req).await
        });
        check(r.await?.error_code)
    }

    async fn ping(&self, client: ClientId) -> Result<PingReply, ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let req = pb::PingRequest {
            client_hi,
            client_lo,
        };
        self.call("Ping", |mut c| async move { c.ping(req).await })
            .await?
            .try_into()
    }

    async fn exist_key(&self, key: &str) -> Result<bool, ErrorCode> {
        let req = pb::KeyRequest {
            key: key.to_owned(),
        };
        let r = self.call("ExistKey", |mut c| async move { c.exist_key(req).await });
        convert::exist_from_pb(r.await?)
    }

    async fn batch_exist_key(&self, keys: &[String]) -> BatchResult<bool> {
        if keys.len() > MAX_BATCH_SIZE {
            return chunked(keys, |c| self.batch_exist_key(c)).await;
        }
        let req = pb::KeysRequest {
            keys: keys.to_vec(),
        };
        let r = self.call("BatchExistKey", |mut c| async move {
            c.batch_exist_key(req).await
        });
        let r = r.await?;
        batch_from_pb(r.error_code, r.results, keys.len(), convert::exist_from_pb)
    }

    async fn get_replica_list(&self, key: &str) -> Result<ReplicaList, ErrorCode> {
        let req = pb::KeyRequest {
            key: key.to_owned(),
        };
        let r = self.call("GetReplicaList", |mut c| async move {
            c.get_replica_list(req).await
        });
        r.await?.try_into()
    }

    async fn batch_get_replica_list(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        if keys.len() > MAX_BATCH_SIZE {
            return chunked(keys, |c| self.batch_get_replica_list(c)).await;
        }
        let req = pb::KeysRequest {
            keys: keys.to_vec(),
        };
        let r = self.call("BatchGetReplicaList", |mut c| async move {
            c.batch_get_replica_list(req).await
        });
        let r = r.await?;
        batch_from_pb(r.error_code, r.results, keys.len(), ReplicaList::try_from)
    }

    async fn batch_get_replica_list_or_load(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        super::disk::lookup_or_load(self, keys).await
    }

    async fn put_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let req = put_start_request(client, key, size, config);
        let r = self.call("PutStart", |mut c| async move { c.put_start(req).await });
        convert::put_start_from_pb(r.await?)
    }

    async fn batch_put_start(
        &self,
        client: ClientId,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>> {
        if items.len() > MAX_BATCH_SIZE {
            return chunked(items, |c| self.batch_put_start(client, c, config)).await;
        }
        let (client_hi, client_lo) = client_to_pb(client);
        let (keys, sizes) = items.iter().cloned().unzip();
        let req = pb::BatchPutStartRequest {
            client_hi,
            client_lo,
            keys,
            sizes,
            config: Some(config.into()),
        };
        let r = self.call("BatchPutStart", |mut c| async move {
            c.batch_put_start(req).await
        });
        let r = r.await?;
        batch_from_pb(
            r.error_code,
            r.results,
            items.len(),
            convert::put_start_from_pb,
        )
    }

    async fn reserve_slots(&self, c: ClientId, size: u64, n: usize) -> SlotsResult {
        super::slots::reserve(self, c, size, n).await
    }

    async fn release_slots(&self, c: ClientId, ids: &[u64]) -> Result<(), ErrorCode> {
        super::slots::release(self, c, ids).await
    }

    async fn batch_put_reserved(
        &self,
        c: ClientId,
        items: &[(String, u64, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Option<crate::ReservedSlot>> {
        super::slots::batch_put(self, c, items, config).await
    }

    async fn put_reserved(
        &self,
        c: ClientId,
        key: &str,
        slot: u64,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Option<crate::ReservedSlot>, ErrorCode> {
        super::slots::put(self, c, key, slot, size, config).await
    }

    async fn put_end(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let req = key_request(client, key);
        let r = self.call("PutEnd", |mut c| async move { c.put_end(req).await });
        check(r.await?.error_code)
    }

    async fn batch_put_end(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        if keys.len() > MAX_BATCH_SIZE {
            return chunked(keys, |c| self.batch_put_end(client, c)).await;
        }
        let req = keys_request(client, keys);
        let r = self.call(
            "BatchPutEnd",
            |mut c| async move { c.batch_put_end(req).await },
        );
        status_batch(r.await?, keys.len())
    }

    async fn put_revoke(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let req = key_request(client, key);
        let r = self.call("PutRevoke", |mut c| async move { c.put_revoke(req).await });
        check(r.await?.error_code)
    }

    async fn batch_put_revoke(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        if keys.len() > MAX_BATCH_SIZE {
            return chunked(keys, |c| self.batch_put_revoke(client, c)).await;
        }
        let req = keys_request(client, keys);
        let r = self.call("BatchPutRevoke", |mut c| async move {
            c.batch_put_revoke(req).await
        });
        status_batch(r.await?, keys.len())
    }

    async fn upsert_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let req = put_start_request(client, key, size, config);
        let r = self.call(
            "UpsertStart",
            |mut c| async move { c.upsert_start(req).await },
        );
        convert::put_start_from_pb(r.await?)
    }

    async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode> {
        let req = pb::RemoveRequest {
            key: key.to_owned(),
            force,
        };
        let r = self.call("Remove", |mut c| async move { c.remove(req).await });
        check(r.await?.error_code)
    }

    async fn batch_remove(&self, keys: &[String], force: bool) -> BatchResult<()> {
        if keys.len() > MAX_BATCH_SIZE {
            return chunked(keys, |c| self.batch_remove(c, force)).await;
        }
        let req = pb::BatchRemoveRequest {
            keys: keys.to_vec(),
            force,
        };
        let r = self.call(
            "BatchRemove",
            |mut c| async move { c.batch_remove(req).await },
        );
        status_batch(r.await?, keys.len())
    }

    async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        let req = pb::RemoveAllRequest { force };
        let r = self
            .call("RemoveAll", |mut c| async move { c.remove_all(req).await })
            .await?;
        check(r.error_code)?;
        Ok(r.removed)
    }

    async fn drain_segment_start(
        &self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<Vec<DrainMove>, ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let (segment_hi, segment_lo) = split(segment.0);
        let req = pb::DrainStartRequest {
            client_hi,
            client_lo,
            segment_hi,
            segment_lo,
        };
        let r = self
            .call("DrainSegmentStart", |mut c| async move {
                c.drain_segment_start(req).await
            })
            .await?;
        check(r.error_code)?;
        r.moves
            .into_iter()
            .map(|m| {
                Ok(DrainMove {
                    key: m.key,
                    source: m.source.ok_or(ErrorCode::InvalidParams)?.into(),
                    target: m.target.map(Into::into),
                })
            })
            .collect()
    }

    async fn drain_segment_end(
        &self,
        client: ClientId,
        results: &[(String, bool)],
    ) -> BatchResult<()> {
        let (client_hi, client_lo) = client_to_pb(client);
        let req = pb::DrainEndRequest {
            client_hi,
            client_lo,
            keys: results.iter().map(|r| r.0.clone()).collect(),
            copied: results.iter().map(|r| r.1).collect(),
        };
        let r = self.call("DrainSegmentEnd", |mut c| async move {
            c.drain_segment_end(req).await
        });
        status_batch(r.await?, results.len())
    }

    async fn batch_replica_clear(
        &self,
        client: ClientId,
        keys: &[String],
        segment: &str,
    ) -> Result<Vec<String>, ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let req = pb::ReplicaClearRequest {
            client_hi,
            client_lo,
            keys: keys.to_vec(),
            segment_name: segment.to_owned(),
        };
        let r = self
            .call("BatchReplicaClear", |mut c| async move {
                c.batch_replica_clear(req).await
            })
            .await?;
        check(r.error_code)?;
        Ok(r.keys)
    }

    async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        let req = pb::RemoveByRegexRequest {
            pattern: pattern.to_owned(),
            force,
        };
        let r = self
            .call("RemoveByRegex", |mut c| async move {
                c.remove_by_regex(req).await
            })
            .await?;
        check(r.error_code)?;
        Ok(r.removed)
    }

    async fn create_copy_task(&self, key: &str, targets: &[String]) -> Result<TaskId, ErrorCode> {
        let req = pb::CopyTaskRequest {
            key: key.to_owned(),
            targets: targets.to_vec(),
        };
        let r = self
            .call("CreateCopyTask", |mut c| async move {
                c.create_copy_task(req).await
            })
            .await?;
        check(r.error_code)?;
        Ok(TaskId::from_halves(r.id_hi, r.id_lo))
    }

    async fn create_move_task(
        &self,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        let req = pb::MoveTaskRequest {
            key: key.to_owned(),
            source: source.to_owned(),
            target: target.to_owned(),
        };
        let r = self
            .call("CreateMoveTask", |mut c| async move {
                c.create_move_task(req).await
            })
            .await?;
        check(r.error_code)?;
        Ok(TaskId::from_halves(r.id_hi, r.id_lo))
    }

    async fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        let (id_hi, id_lo) = id.halves();
        let req = pb::TaskIdRequest { id_hi, id_lo };
        let r = self
            .call("QueryTask", |mut c| async move { c.query_task(req).await })
            .await?;
        check(r.error_code)?;
        Ok(r.task.ok_or(ErrorCode::InvalidParams)?.into())
    }

    async fn fetch_tasks(&self, client: ClientId) -> Result<Vec<TaskAssignment>, ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let req = pb::PingRequest {
            client_hi,
            client_lo,
        };
        let r = self
            .call(
                "FetchTasks",
                |mut c| async move { c.fetch_tasks(req).await },
            )
            .await?;
        check(r.error_code)?;
        r.tasks.into_iter().map(assignment_from_pb).collect()
    }

    async fn finish_task(
        &self,
        client: ClientId,
        id: TaskId,
        copied: bool,
        message: &str,
    ) -> Result<(), ErrorCode> {
        let (client_hi, client_lo) = client_to_pb(client);
        let (id_hi, id_lo) = id.halves();
        let req = pb::FinishTaskRequest {
            client_hi,
            client_lo,
            id_hi,
            id_lo,
            copied,
            message: message.to_owned(),
        };
        let r = self
            .call(
                "FinishTask",
                |mut c| async move { c.finish_task(req).await },
            )
            .await?;
        check(r.error_code)
    }

    async fn explain_key(&self, key: &str) -> Result<String, ErrorCode> {
        let req = pb::KeyRequest {
            key: key.to_owned(),
        };
        let r = self
            .call("Explain", |mut c| async move { c.explain(req).await })
            .await?;
        check(r.error_code)?;
        Ok(r.json)
    }

    async fn mount_disk_tier(
        &self,
        client: ClientId,
        segment: SegmentId,
        capacity: u64,
        records: Vec<DiskRecord>,
    ) -> Result<Vec<DiskRecord>, ErrorCode> {
        let req = super::disk::mount_request(client, segment, capacity, &records);
        let call = |mut c: Rpc| async move { c.mount_disk_tier(req).await };
        super::disk::mount_answer(self.call("MountDiskTier", call).await?)
    }

    async fn poll_disk_tasks(
        &self,
        client: ClientId,
        segment: SegmentId,
        wait: Duration,
    ) -> Result<Vec<DiskTask>, ErrorCode> {
        let req = super::disk::poll_request(client, segment, wait);
        let call = |mut c: Rpc| async move { c.poll_disk_tasks(req).await };
        super::disk::poll_answer(self.call("PollDiskTasks", call).await?)
    }

    async fn finish_disk_tasks(
        &self,
        client: ClientId,
        segment: SegmentId,
        results: &[DiskTaskResult],
        evicted: &[DiskRecord],
    ) -> Result<(), ErrorCode> {
        let req = super::disk::finish_request(client, segment, results, evicted);
        let call = |mut c: Rpc| async move { c.finish_disk_tasks(req).await };
        check(self.call("FinishDiskTasks", call).await?.error_code)
    }
}

/// The generated client over this crate's transport (the disk-tier calls name it).
pub(super) type Rpc = MasterServiceClient<Transport>;
