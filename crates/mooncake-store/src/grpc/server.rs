//! [`serve`]: the master's gRPC service, forwarding every RPC to a [`MasterApi`].

use std::future::Future;
use std::io;
use std::sync::Arc;

use std::pin::Pin;
use std::task::Poll;

use mooncake_metadata::AuthToken;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use super::answer::FromClient;
use super::convert::{config_from_pb, join, put_items_from_pb, segment_from_pb};
use super::pb;
use super::pb::master_service_server::{MasterService, MasterServiceServer};
use super::MAX_MESSAGE_SIZE;
use crate::master_api::MasterApi;
use crate::task::TaskId;
use crate::types::SegmentId;
use crate::BatchResult;

/// How [`serve_with`] admits connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// When set, every connection must present this token (the tunnel in its first frame,
    /// HTTP/2 as `authorization: Bearer <token>` metadata); others are answered with
    /// `UNAUTHENTICATED` and never reach the master. Default none.
    pub auth_token: Option<AuthToken>,
    /// Connections served at once over TCP and the local socket together; further peers
    /// wait in the accept backlog. Default 4096.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            auth_token: None,
            max_connections: 4096,
        }
    }
}

/// Serves the master's gRPC service on `listener` until `shutdown` completes, forwarding
/// every RPC to `api`, with the default [`ServeOptions`] (no token).
pub async fn serve(
    listener: TcpListener,
    api: Arc<dyn MasterApi>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), io::Error> {
    serve_with(listener, api, ServeOptions::default(), shutdown).await
}

/// Serves the master's gRPC service on `listener` until `shutdown` completes, forwarding
/// every RPC to `api`.
///
/// Store errors travel in each response's `error_code` (the gRPC status stays OK);
/// a request with an invalid wire value (unknown enum, missing field, mismatched lists)
/// is answered with `InvalidParams` without reaching `api`. Accepted sockets get
/// `TCP_NODELAY`. On shutdown, in-flight RPCs are allowed to finish.
///
/// The same port also speaks the lean tunnel transport (length-prefixed frames) that
/// [`GrpcMasterClient`](super::GrpcMasterClient) prefers: each accepted connection's first
/// bytes are peeked, tunnel connections are answered inline, all others go to HTTP/2.
pub async fn serve_with(
    listener: TcpListener,
    api: Arc<dyn MasterApi>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), io::Error> {
    let service = MasterServiceServer::new(GrpcMaster { api })
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let token = options.auth_token.map(Arc::new);
    let limits = Limits {
        token: token.clone(),
        permits: Arc::new(Semaphore::new(
            options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        )),
    };
    let (http2, incoming) = mpsc::channel::<io::Result<Permitted>>(64);
    let local = listener
        .local_addr()
        .ok()
        .and_then(|a| local_listener(a.port()));
    let local = local.map(|l| tokio::spawn(local_accept_loop(l, service.clone(), limits.clone())));
    let accept = tokio::spawn(accept_loop(listener, service.clone(), http2, limits));
    let checked = InterceptedService::new(service, move |req: Request<()>| {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| AuthToken::from_bearer(v.as_bytes()));
        if AuthToken::admits(token.as_deref(), presented) {
            Ok(req)
        } else {
            tracing::warn!("refused a master rpc over HTTP/2: authentication failed");
            Err(Status::unauthenticated(super::tunnel::AUTH_FAILED))
        }
    });
    let served = Server::builder()
        .add_service(checked)
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await
        .map_err(io::Error::other);
    accept.abort();
    if let Some(l) = local {
        l.abort();
    }
    served
}

/// What every accepted connection is checked against.
#[derive(Clone)]
struct Limits {
    token: Option<Arc<AuthToken>>,
    permits: Arc<Semaphore>,
}

/// A connection handed to the HTTP/2 server, holding its connection permit until closed.
struct Permitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Permitted {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The abstract Unix socket beside the TCP port, for tunnel clients on this host.
fn local_listener(port: u16) -> Option<tokio::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let name = super::tunnel::local_socket_name(port);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    let l = match std::os::unix::net::UnixListener::bind_addr(&addr) {
        Ok(l) => l,
        Err(e) => {
            // Loud: another process holding this name would otherwise receive the master
            // requests of every client on this host that trusts it.
            tracing::warn!(socket = %format!("@{name}"), error = %e, "cannot serve the master's local socket (is another process holding the name?); same-host clients should use TCP");
            return None;
        }
    };
    l.set_nonblocking(true).ok()?;
    tokio::net::UnixListener::from_std(l).ok()
}

/// Serves tunnel connections from this host's clients on the Unix socket.
async fn local_accept_loop<S>(listener: tokio::net::UnixListener, service: S, limits: Limits)
where
    S: super::tunnel::TunnelService,
{
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Acquired after the accept: both listeners share the permits, and a loop that
        // waited for its next peer while holding one would starve the other listener.
        let Ok(permit) = limits.permits.clone().acquire_owned().await else {
            return;
        };
        let Ok(conn) = crate::conn::Conn::unix(stream) else {
            continue;
        };
        let (service, token) = (service.clone(), limits.token.clone());
        conns.spawn(async move {
            super::tunnel::serve_new_connection(conn, service, token).await;
            drop(permit);
        });
    }
}

/// Accepts connections and sorts them: tunnel connections are served here, the rest are
/// passed to the HTTP/2 server. Dropping this future stops every tunnel connection.
async fn accept_loop<S>(
    listener: TcpListener,
    service: S,
    http2: mpsc::Sender<io::Result<Permitted>>,
    limits: Limits,
) where
    S: super::tunnel::TunnelService,
{
    let mut tunnels = JoinSet::new();
    loop {
        while tunnels.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limits.permits.clone().acquire_owned().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (service, http2, token) = (service.clone(), http2.clone(), limits.token.clone());
        tunnels.spawn(async move {
            if is_tunnel(&stream).await {
                if let Ok(conn) = crate::conn::Conn::tcp(stream) {
                    super::tunnel::serve_new_connection(conn, service, token).await;
                }
                drop(permit);
            } else {
                let _ = http2
                    .send(Ok(Permitted {
                        stream,
                        _permit: permit,
                    }))
                    .await;
            }
        });
    }
}

/// Whether a fresh connection starts with the tunnel's magic (peeked, not consumed). A
/// client that sends nothing for 5 s is handed to HTTP/2, which deals with idle peers.
async fn is_tunnel(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4];
    let peek = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(n) if n >= 4 || n == 0 => return n,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                Err(_) => return 0,
            }
        }
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), peek).await,
        Ok(4)
    ) && (buf == super::tunnel::MAGIC || buf == super::tunnel::MAGIC_AUTH)
}

/// The generated service trait implemented over a [`MasterApi`]: each handler reads its
/// arguments and turns the result into its answer (`answer.rs`); a request whose wire
/// values do not convert is answered `InvalidParams` without reaching the master.
struct GrpcMaster {
    api: Arc<dyn MasterApi>,
}

type RpcResult<T> = Result<Response<T>, Status>;

/// The answer to an RPC, from anything that converts into it.
#[allow(clippy::unnecessary_wraps)]
fn ok<T>(answer: impl Into<T>) -> RpcResult<T> {
    Ok(Response::new(answer.into()))
}

#[async_trait::async_trait]
impl MasterService for GrpcMaster {
    async fn connect(&self, req: Request<pb::ConnectRequest>) -> RpcResult<pb::ConnectResponse> {
        ok(self.api.connect(req.into_inner().into()).await)
    }

    async fn mount_segment(
        &self,
        req: Request<pb::MountSegmentRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        let (api, client) = (&self.api, req.client());
        let r = async move {
            api.mount_segment(client, segment_from_pb(req.segment)?)
                .await
        };
        ok(r.await)
    }

    async fn remount_segments(
        &self,
        req: Request<pb::RemountSegmentsRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        let client = req.client();
        let segments = req.segments.into_iter().map(Into::into).collect();
        ok(self.api.remount_segments(client, segments).await)
    }

    async fn unmount_segment(
        &self,
        req: Request<pb::UnmountSegmentRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        let segment = SegmentId(join(req.segment_hi, req.segment_lo));
        ok(self.api.unmount_segment(req.client(), segment).await)
    }

    async fn ping(&self, req: Request<pb::PingRequest>) -> RpcResult<pb::PingResponse> {
        ok(self.api.ping(req.into_inner().client()).await)
    }

    async fn exist_key(&self, req: Request<pb::KeyRequest>) -> RpcResult<pb::ExistKeyResponse> {
        ok(self.api.exist_key(&req.into_inner().key).await)
    }

    async fn batch_exist_key(
        &self,
        req: Request<pb::KeysRequest>,
    ) -> RpcResult<pb::BatchExistKeyResponse> {
        ok(self.api.batch_exist_key(&req.into_inner().keys).await)
    }

    async fn get_replica_list(
        &self,
        req: Request<pb::KeyRequest>,
    ) -> RpcResult<pb::GetReplicaListResponse> {
        ok(self.api.get_replica_list(&req.into_inner().key).await)
    }

    async fn batch_get_replica_list(
        &self,
        req: Request<pb::KeysRequest>,
    ) -> RpcResult<pb::BatchGetReplicaListResponse> {
        ok(self
            .api
            .batch_get_replica_list(&req.into_inner().keys)
            .await)
    }

    async fn batch_get_replica_list_or_load(
        &self,
        req: Request<pb::KeysRequest>,
    ) -> RpcResult<pb::BatchGetReplicaListResponse> {
        ok(self
            .api
            .batch_get_replica_list_or_load(&req.into_inner().keys)
            .await)
    }

    async fn put_start(
        &self,
        req: Request<pb::PutStartRequest>,
    ) -> RpcResult<pb::PutStartResponse> {
        let req = req.into_inner();
        let (api, client) = (&self.api, req.client());
        let r = async move {
            let config = config_from_pb(req.config)?;
            api.put_start(client, &req.key, req.size, &config).await
        };
        ok(r.await)
    }

    async fn batch_put_start(
        &self,
        req: Request<pb::BatchPutStartRequest>,
    ) -> RpcResult<pb::BatchPutStartResponse> {
        let req = req.into_inner();
        let client = req.client();
        let r = async {
            let config = config_from_pb(req.config)?;
            let items = put_items_from_pb(req.keys, req.sizes)?;
            self.api.batch_put_start(client, &items, &config).await
        };
        ok(r.await)
    }

    async fn reserve_slots(
        &self,
        req: Request<pb::ReserveSlotsRequest>,
    ) -> RpcResult<pb::ReserveSlotsResponse> {
        super::slots::serve_reserve(self.api.as_ref(), req).await
    }

    async fn release_slots(
        &self,
        req: Request<pb::ReleaseSlotsRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        super::slots::serve_release(self.api.as_ref(), req).await
    }

    async fn batch_put_reserved(
        &self,
        req: Request<pb::BatchPutReservedRequest>,
    ) -> RpcResult<pb::BatchPutReservedResponse> {
        super::slots::serve_batch_put(self.api.as_ref(), req).await
    }

    async fn put_reserved(
        &self,
        req: Request<pb::PutReservedRequest>,
    ) -> RpcResult<pb::PutReservedResponse> {
        super::slots::serve_put(self.api.as_ref(), req).await
    }

    async fn put_end(&self, req: Request<pb::ClientKeyRequest>) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        ok(self.api.put_end(req.client(), &req.key).await)
    }

    async fn batch_put_end(
        &self,
        req: Request<pb::ClientKeysRequest>,
    ) -> RpcResult<pb::BatchStatusResponse> {
        let req = req.into_inner();
        ok(self.api.batch_put_end(req.client(), &req.keys).await)
    }

    async fn put_revoke(
        &self,
        req: Request<pb::ClientKeyRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        ok(self.api.put_revoke(req.client(), &req.key).await)
    }

    async fn batch_put_revoke(
        &self,
        req: Request<pb::ClientKeysRequest>,
    ) -> RpcResult<pb::BatchStatusResponse> {
        let req = req.into_inner();
        ok(self.api.batch_put_revoke(req.client(), &req.keys).await)
    }

    async fn upsert_start(
        &self,
        req: Request<pb::PutStartRequest>,
    ) -> RpcResult<pb::PutStartResponse> {
        let req = req.into_inner();
        let (api, client) = (&self.api, req.client());
        let r = async move {
            let config = config_from_pb(req.config)?;
            api.upsert_start(client, &req.key, req.size, &config).await
        };
        ok(r.await)
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        ok(self.api.remove(&req.key, req.force).await)
    }

    async fn batch_remove(
        &self,
        req: Request<pb::BatchRemoveRequest>,
    ) -> RpcResult<pb::BatchStatusResponse> {
        let req = req.into_inner();
        ok(self.api.batch_remove(&req.keys, req.force).await)
    }

    async fn remove_all(
        &self,
        req: Request<pb::RemoveAllRequest>,
    ) -> RpcResult<pb::RemoveAllResponse> {
        ok(self.api.remove_all(req.into_inner().force).await)
    }

    async fn drain_segment_start(
        &self,
        req: Request<pb::DrainStartRequest>,
    ) -> RpcResult<pb::DrainStartResponse> {
        let req = req.into_inner();
        let segment = SegmentId(join(req.segment_hi, req.segment_lo));
        ok(self.api.drain_segment_start(req.client(), segment).await)
    }

    async fn drain_segment_end(
        &self,
        req: Request<pb::DrainEndRequest>,
    ) -> RpcResult<pb::BatchStatusResponse> {
        let req = req.into_inner();
        if req.keys.len() != req.copied.len() {
            return ok(BatchResult::<()>::Err(crate::ErrorCode::InvalidParams));
        }
        let client = req.client();
        let results: Vec<(String, bool)> = req.keys.into_iter().zip(req.copied).collect();
        ok(self.api.drain_segment_end(client, &results).await)
    }

    async fn batch_replica_clear(
        &self,
        req: Request<pb::ReplicaClearRequest>,
    ) -> RpcResult<pb::KeysResponse> {
        let req = req.into_inner();
        let api = &self.api;
        ok(api
            .batch_replica_clear(req.client(), &req.keys, &req.segment_name)
            .await)
    }

    async fn remove_by_regex(
        &self,
        req: Request<pb::RemoveByRegexRequest>,
    ) -> RpcResult<pb::RemoveAllResponse> {
        let req = req.into_inner();
        ok(self.api.remove_by_regex(&req.pattern, req.force).await)
    }

    async fn create_copy_task(
        &self,
        req: Request<pb::CopyTaskRequest>,
    ) -> RpcResult<pb::TaskIdResponse> {
        let req = req.into_inner();
        ok(self.api.create_copy_task(&req.key, &req.targets).await)
    }

    async fn create_move_task(
        &self,
        req: Request<pb::MoveTaskRequest>,
    ) -> RpcResult<pb::TaskIdResponse> {
        let req = req.into_inner();
        let api = &self.api;
        ok(api
            .create_move_task(&req.key, &req.source, &req.target)
            .await)
    }

    async fn query_task(
        &self,
        req: Request<pb::TaskIdRequest>,
    ) -> RpcResult<pb::QueryTaskResponse> {
        let req = req.into_inner();
        ok(self
            .api
            .query_task(TaskId::from_halves(req.id_hi, req.id_lo))
            .await)
    }

    async fn fetch_tasks(
        &self,
        req: Request<pb::PingRequest>,
    ) -> RpcResult<pb::FetchTasksResponse> {
        ok(self.api.fetch_tasks(req.into_inner().client()).await)
    }

    async fn finish_task(
        &self,
        req: Request<pb::FinishTaskRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        let req = req.into_inner();
        let id = TaskId::from_halves(req.id_hi, req.id_lo);
        let api = &self.api;
        ok(api
            .finish_task(req.client(), id, req.copied, &req.message)
            .await)
    }

    async fn explain(&self, req: Request<pb::KeyRequest>) -> RpcResult<pb::ExplainResponse> {
        ok(self.api.explain_key(&req.into_inner().key).await)
    }

    async fn mount_disk_tier(
        &self,
        req: Request<pb::MountDiskTierRequest>,
    ) -> RpcResult<pb::MountDiskTierResponse> {
        super::disk::serve_mount(self.api.as_ref(), req).await
    }

    async fn poll_disk_tasks(
        &self,
        req: Request<pb::PollDiskTasksRequest>,
    ) -> RpcResult<pb::PollDiskTasksResponse> {
        super::disk::serve_poll(self.api.as_ref(), req).await
    }

    async fn finish_disk_tasks(
        &self,
        req: Request<pb::FinishDiskTasksRequest>,
    ) -> RpcResult<pb::StatusResponse> {
        super::disk::serve_finish(self.api.as_ref(), req).await
    }
}
