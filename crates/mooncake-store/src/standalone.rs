//! Standalone mode (Mooncake's `setup_dummy`): a thin client inside each inference rank
//! forwards every store call to the node's store service, over a local Unix socket, and
//! shares a memory pool with it, so eight tensor-parallel ranks share one memory holder and
//! one set of connections.
//!
//! - The thin client ([`StandaloneClient`]) creates its pool as a `/dev/shm` file (mode
//!   0600: only this user's processes may map it) laid out as `[staging | pool]`: staging
//!   carries the bytes of `put`/`get`, the pool holds the caller's zero-copy buffers
//!   (`alloc_from_mem_pool`). It connects to the abstract socket
//!   `@mooncake_client_<port>.sock` (the C++ naming; `<port>` is the store service's
//!   `--port`) and says hello with the file's path.
//! - The store service ([`serve_standalone`]) maps the file, registers it with its engine
//!   and serves requests with its own [`Client`], moving value bytes straight between the
//!   pool and the segments. Offsets travel, never addresses.
//!
//! Frames are a little-endian `u32` length and a JSON body; one request at a time per
//! connection. The protocol is ours (the C++ one is not specified).

use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;

use std::sync::Arc;

use mooncake_metadata::AuthToken;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::conn::{Conn, Sock};

use crate::allocator::{AllocHandle, OffsetAllocator};
use crate::task::{TaskId, TaskInfo, TaskKind, TaskStatus};
use crate::types::{Pin, ReplicateConfig};
use crate::{Client, ErrorCode};

/// The abstract socket name of the store service whose `--port` is `port`.
pub fn socket_name(port: u16) -> String {
    format!("mooncake_client_{port}.sock")
}

const MAX_FRAME: usize = 64 << 20;

/// `ReplicateConfig` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireConfig {
    replica_num: usize,
    /// 0 none, 1 soft, 2 hard.
    pin: u8,
    preferred: Vec<String>,
    same_node: bool,
    #[serde(default)]
    soft_pin_ttl_ms: Option<u64>,
}

impl From<&ReplicateConfig> for WireConfig {
    fn from(c: &ReplicateConfig) -> Self {
        Self {
            replica_num: c.replica_num,
            pin: match c.pin {
                Pin::None => 0,
                Pin::Soft => 1,
                Pin::Hard => 2,
            },
            preferred: c.preferred_segments.clone(),
            same_node: c.prefer_alloc_in_same_node,
            soft_pin_ttl_ms: c.soft_pin_ttl_ms,
        }
    }
}

impl From<WireConfig> for ReplicateConfig {
    fn from(w: WireConfig) -> Self {
        Self {
            replica_num: w.replica_num,
            pin: match w.pin {
                1 => Pin::Soft,
                2 => Pin::Hard,
                _ => Pin::None,
            },
            preferred_segments: w.preferred,
            prefer_alloc_in_same_node: w.same_node,
            excluded_segments: Vec::new(),
            soft_pin_ttl_ms: w.soft_pin_ttl_ms,
            // The store service's own client computes it when it has checksums on.
            checksum: None,
        }
    }
}

/// `(offset, len)` ranges of the pool.
type Ranges = Vec<(u64, u64)>;

/// One request of a thin client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Hello {
        pool: PathBuf,
        size: u64,
        /// The cluster's token, when the client has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Put {
        items: Vec<(String, Ranges)>,
        upsert: bool,
        config: WireConfig,
    },
    GetInto {
        items: Vec<(String, u64, u64)>,
    },
    GetIntoParts {
        items: Vec<(String, Ranges)>,
    },
    IsExist {
        keys: Vec<String>,
    },
    GetSize {
        key: String,
    },
    Remove {
        keys: Vec<String>,
        force: bool,
    },
    RemoveAll {
        force: bool,
    },
    RemoveByRegex {
        pattern: String,
        force: bool,
    },
    /// `get_into_ranges`: per key, `(pool offset, len, object offset)` fragments.
    ReadRanges {
        items: Vec<(String, Vec<crate::Fragment>)>,
    },
    CreateCopyTask {
        key: String,
        targets: Vec<String>,
    },
    CreateMoveTask {
        key: String,
        source: String,
        target: String,
    },
    QueryTask {
        id_hi: u64,
        id_lo: u64,
    },
    Hostname,
}

/// One answer: a code (or count, or size) per item; `text` for `Hostname`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Reply {
    codes: Vec<i64>,
    text: String,
}

async fn read_frame(s: &Conn) -> std::io::Result<bytes::Bytes> {
    s.read_frame(MAX_FRAME).await
}

async fn write_frame(s: &Conn, body: &[u8]) -> std::io::Result<()> {
    s.write_frame(body).await
}

/// A task id answer: `[0, hi, lo]` (u64 halves carried bit for bit) or `[code]`.
fn task_reply(r: Result<TaskId, ErrorCode>) -> Reply {
    let codes = match r {
        Ok(id) => {
            let (hi, lo) = id.halves();
            vec![0, hi as i64, lo as i64]
        }
        Err(e) => vec![e.code().into()],
    };
    Reply {
        codes,
        text: String::new(),
    }
}

fn task_id_of(r: Reply) -> Result<TaskId, ErrorCode> {
    match r.codes.as_slice() {
        [0, hi, lo] => Ok(TaskId::from_halves(*hi as u64, *lo as u64)),
        [c, ..] if *c != 0 => Err(ErrorCode::from_code(*c as i32)),
        _ => Err(ErrorCode::RpcFail),
    }
}

/// A task's numbers, each u64 carried bit for bit in an i64.
fn encode_task(t: &TaskInfo) -> Vec<i64> {
    let (hi, lo) = t.id.halves();
    let c = t.assigned_client.0;
    [
        0,
        hi,
        lo,
        t.kind as u64,
        t.status as u64,
        t.created_at_ms,
        t.updated_at_ms,
        (c >> 64) as u64,
        c as u64,
    ]
    .iter()
    .map(|v| *v as i64)
    .collect()
}

fn decode_task(codes: &[i64], message: String) -> Result<TaskInfo, ErrorCode> {
    let v: Vec<u64> = codes.iter().map(|c| *c as u64).collect();
    match v.as_slice() {
        [0, hi, lo, kind, status, created, updated, c_hi, c_lo] => Ok(TaskInfo {
            id: TaskId::from_halves(*hi, *lo),
            kind: if *kind == 1 {
                TaskKind::Move
            } else {
                TaskKind::Copy
            },
            status: TaskStatus::from_code(*status as i32),
            created_at_ms: *created,
            updated_at_ms: *updated,
            assigned_client: crate::ClientId((u128::from(*c_hi) << 64) | u128::from(*c_lo)),
            message,
        }),
        _ => Err(codes
            .first()
            .filter(|c| **c != 0)
            .map_or(ErrorCode::RpcFail, |c| ErrorCode::from_code(*c as i32))),
    }
}

fn code<T>(r: &Result<T, ErrorCode>, ok: impl Fn(&T) -> i64) -> i64 {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.code().into(),
    }
}

// ---- store service side ----

/// Serves thin clients on the abstract Unix socket `name` with `client` until the task is
/// dropped. Each connection maps its client's pool, registers it, and unregisters it when
/// the client goes.
pub async fn serve_standalone(name: String, client: Client) -> std::io::Result<()> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    tracing::info!(socket = %format!("@{name}"), "serving standalone (setup_dummy) clients");
    // Connections are owned here: dropping this future stops every one of them.
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_STANDALONE_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (stream, _) = listener.accept().await?;
        let client = client.clone();
        let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
        conns.spawn(async move {
            let served = match Conn::unix(stream) {
                Ok(conn) => serve_connection(conn, client, peer_uid).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "standalone client connection ended");
            }
            drop(permit);
        });
    }
}

/// Thin clients served at once by one store service (further ones wait in the backlog).
const MAX_STANDALONE_CONNECTIONS: usize = 1024;

/// Sends a refusal as the answer to a hello.
async fn refuse(s: &Conn, code: ErrorCode, text: String) -> std::io::Result<()> {
    let reply = Reply {
        codes: vec![code.code().into()],
        text,
    };
    write_frame(s, &serde_json::to_vec(&reply)?).await
}

async fn serve_connection(s: Conn, client: Client, peer_uid: Option<u32>) -> std::io::Result<()> {
    let hello: Request =
        serde_json::from_slice(&read_frame(&s).await?).map_err(std::io::Error::other)?;
    let Request::Hello { pool, size, token } = hello else {
        return Err(std::io::Error::other("the first request must be hello"));
    };
    // Only processes of this service's user may use it (and share memory with it).
    let me = mooncake_transfer_engine::effective_uid();
    if peer_uid != Some(me) {
        tracing::warn!(peer_uid, "refused a standalone client of another user");
        let text = format!(
            "the store service runs as uid {me}; a client of uid {} may not use it",
            peer_uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
        );
        return refuse(&s, ErrorCode::InvalidParams, text).await;
    }
    let required = client.config().auth_token.as_ref();
    if !AuthToken::admits(required, token.as_deref().map(str::as_bytes)) {
        tracing::warn!("refused a standalone client: authentication failed");
        let text = "authentication failed: the store service needs the cluster's token (MOONCAKE_AUTH_TOKEN)".to_owned();
        return refuse(&s, ErrorCode::RpcFail, text).await;
    }
    let engine = client.engine().clone();
    let buffer = match engine.register_shared_file(&pool, size, "cpu:0").await {
        Ok(b) => b,
        Err(e) => {
            let text = format!("cannot map {}: {e}", pool.display());
            return refuse(&s, ErrorCode::InvalidParams, text).await;
        }
    };
    write_frame(&s, &serde_json::to_vec(&Reply::default())?).await?;
    let base = buffer.addr();
    let result = async {
        loop {
            let frame = match read_frame(&s).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let req: Request = serde_json::from_slice(&frame).map_err(std::io::Error::other)?;
            let reply = handle(&client, base, size, req).await;
            write_frame(&s, &serde_json::to_vec(&reply)?).await?;
        }
    }
    .await;
    let _ = engine.unregister(base).await;
    drop(buffer);
    result
}

/// Pool ranges to addresses in this process; `None` if any range leaves the pool.
fn addresses(base: u64, size: u64, ranges: &[(u64, u64)]) -> Option<Vec<(u64, u64)>> {
    ranges
        .iter()
        .map(|&(off, len)| (off.checked_add(len)? <= size).then_some((base + off, len)))
        .collect()
}

async fn handle(client: &Client, base: u64, size: u64, req: Request) -> Reply {
    let invalid = i64::from(ErrorCode::InvalidParams.code());
    let codes = match req {
        Request::Hello { .. } => vec![invalid],
        Request::Put {
            items,
            upsert,
            config,
        } => {
            let config = ReplicateConfig::from(config);
            let mut mapped = Vec::with_capacity(items.len());
            let mut bad = Vec::new();
            for (i, (k, r)) in items.iter().enumerate() {
                match addresses(base, size, r) {
                    Some(a) => mapped.push((k.as_str(), a)),
                    None => bad.push(i),
                }
            }
            if !bad.is_empty() {
                vec![invalid; items.len()]
            } else if mapped.len() == 1 {
                let (k, a) = &mapped[0];
                vec![code(
                    &client.put_parts_from(k, a, &config, upsert).await,
                    |_| 0,
                )]
            } else {
                client
                    .batch_put_parts_from(&mapped, &config, upsert)
                    .await
                    .iter()
                    .map(|r| code(r, |_| 0))
                    .collect()
            }
        }
        Request::GetInto { items } => {
            let mut out = vec![invalid; items.len()];
            let mut ok = Vec::new();
            let mut idx = Vec::new();
            for (i, (k, off, cap)) in items.iter().enumerate() {
                if let Some(a) = addresses(base, size, &[(*off, *cap)]) {
                    ok.push((k.as_str(), a[0].0, *cap));
                    idx.push(i);
                }
            }
            let got = if ok.len() == 1 {
                vec![client.get_into(ok[0].0, ok[0].1, ok[0].2).await]
            } else {
                client.batch_get_into(&ok).await
            };
            for (i, r) in idx.into_iter().zip(got) {
                out[i] = code(&r, |n| *n as i64);
            }
            out
        }
        Request::GetIntoParts { items } => {
            let mut out = vec![invalid; items.len()];
            let mut ok = Vec::new();
            let mut idx = Vec::new();
            for (i, (k, r)) in items.iter().enumerate() {
                if let Some(a) = addresses(base, size, r) {
                    ok.push((k.as_str(), a));
                    idx.push(i);
                }
            }
            for (i, r) in idx.into_iter().zip(client.batch_get_into_parts(&ok).await) {
                out[i] = code(&r, |n| *n as i64);
            }
            out
        }
        Request::IsExist { keys } => client
            .batch_is_exist(&keys)
            .await
            .iter()
            .map(|r| code(r, |b| i64::from(*b)))
            .collect(),
        Request::GetSize { key } => vec![code(&client.get_size(&key).await, |n| *n as i64)],
        Request::Remove { keys, force } => client
            .batch_remove(&keys, force)
            .await
            .iter()
            .map(|r| code(r, |_| 0))
            .collect(),
        Request::RemoveAll { force } => {
            vec![code(&client.remove_all(force).await, |n| *n as i64)]
        }
        Request::ReadRanges { items } => {
            // Fragments outside the pool are refused here; the rest are read into the
            // pool's mapping in this process. One code per fragment, flattened.
            let mut valid = Vec::with_capacity(items.len());
            let mut spots = Vec::new();
            let mut out = Vec::new();
            for (k, frags) in items {
                let mut ok = Vec::with_capacity(frags.len());
                for (off, len, src) in frags {
                    if let Some(a) = addresses(base, size, &[(off, len)]) {
                        ok.push((a[0].0, len, src));
                        spots.push(out.len());
                    }
                    out.push(invalid);
                }
                valid.push((k, ok));
            }
            let read = client.read_ranges(&valid).await;
            for (spot, r) in spots.into_iter().zip(read.into_iter().flatten()) {
                out[spot] = r;
            }
            out
        }
        Request::RemoveByRegex { pattern, force } => {
            vec![code(&client.remove_by_regex(&pattern, force).await, |n| {
                *n as i64
            })]
        }
        Request::CreateCopyTask { key, targets } => {
            return task_reply(client.create_copy_task(&key, &targets).await)
        }
        Request::CreateMoveTask {
            key,
            source,
            target,
        } => return task_reply(client.create_move_task(&key, &source, &target).await),
        Request::QueryTask { id_hi, id_lo } => {
            return match client.query_task(TaskId::from_halves(id_hi, id_lo)).await {
                Ok(t) => Reply {
                    codes: encode_task(&t),
                    text: t.message,
                },
                Err(e) => Reply {
                    codes: vec![e.code().into()],
                    text: String::new(),
                },
            }
        }
        Request::Hostname => {
            return Reply {
                codes: vec![0],
                text: client.engine().segment_name().to_owned(),
            }
        }
    };
    Reply {
        codes,
        text: String::new(),
    }
}

// ---- thin client side ----

/// Why a thin client could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// `server_address` has no usable port.
    #[error("server_address {0:?} must be host:port (the store service's --port)")]
    Address(String),
    /// The pool could not be created.
    #[error("cannot create the memory pool {path}: {source}")]
    Pool {
        /// Its file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store service could not be reached.
    #[error("cannot reach the store service at @{socket} (is mooncake_store_service --port={port} running on this host?): {source}")]
    Connect {
        /// The socket name.
        socket: String,
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store service refused the pool.
    #[error("the store service refused the memory pool: {0}")]
    Refused(String),
}

/// The thin client of a `setup_dummy` rank.
#[derive(Debug)]
pub struct StandaloneClient {
    port: u16,
    pool: mooncake_transfer_engine::SharedMemory,
    staging_len: u64,
    conn: tokio::sync::Mutex<Option<Conn>>,
    staging: Mutex<OffsetAllocator>,
    user: Mutex<OffsetAllocator>,
    hostname: String,
    /// Presented in the hello, for a store service that has a token.
    auth_token: Option<AuthToken>,
}

/// A range of the staging area, returned on drop.
#[derive(Debug)]
pub struct StagedRange<'a> {
    client: &'a StandaloneClient,
    handle: AllocHandle,
    /// Offset in the pool.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

impl Drop for StagedRange<'_> {
    fn drop(&mut self) {
        let _ = self.client.staging.lock().free(self.handle);
    }
}

impl StagedRange<'_> {
    /// Copies the first `out.len()` bytes of the range out.
    pub fn read_into(&self, out: &mut [u8]) {
        self.client.pool.read_at(self.offset, out);
    }

    /// Like [`StagedRange::read_into`], into memory that may be uninitialised (a fresh
    /// Python `bytes`).
    pub fn read_into_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        self.client.pool.read_at_uninit(self.offset, out);
    }
}

impl StandaloneClient {
    /// Creates the pool (`local_buffer_size` of staging, then `mem_pool_size` for
    /// [`StandaloneClient::alloc_from_mem_pool`]) and connects to the store service whose
    /// `--port` is the port of `server_address`.
    pub async fn connect(
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
        auth_token: Option<AuthToken>,
    ) -> Result<Self, StandaloneError> {
        let port = server_address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .or_else(|| server_address.parse().ok())
            .ok_or_else(|| StandaloneError::Address(server_address.to_owned()))?;
        let path = PathBuf::from(format!(
            "/dev/shm/mooncake-{}-dummy-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        ));
        let total = (local_buffer_size + mem_pool_size).max(4096);
        let pool =
            mooncake_transfer_engine::SharedMemory::create(&path, total).map_err(|source| {
                StandaloneError::Pool {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        let mut client = Self {
            port,
            staging_len: local_buffer_size,
            staging: Mutex::new(OffsetAllocator::new(local_buffer_size.max(1))),
            user: Mutex::new(OffsetAllocator::new(mem_pool_size.max(1))),
            pool,
            conn: tokio::sync::Mutex::new(None),
            hostname: String::new(),
            auth_token,
        };
        let conn = client.open().await?;
        *client.conn.get_mut() = Some(conn);
        let reply = client.call(&Request::Hostname).await;
        client.hostname = reply.text;
        Ok(client)
    }

    async fn open(&self) -> Result<Conn, StandaloneError> {
        let socket = socket_name(self.port);
        let err = |source| StandaloneError::Connect {
            socket: socket.clone(),
            port: self.port,
            source,
        };
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(socket.as_bytes()).map_err(err)?;
        let std_stream = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(err)?;
        // Anyone can bind an abstract name: our pool (and requests) go only to a store
        // service of our own user.
        let me = mooncake_transfer_engine::effective_uid();
        let holder = mooncake_transfer_engine::peer_uid(std::os::fd::AsFd::as_fd(&std_stream));
        if holder != Some(me) {
            return Err(StandaloneError::Refused(format!(
                "@{socket} is held by uid {}, not by this user (uid {me}); not using it",
                holder.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
            )));
        }
        let s = Conn::from(Sock::unix(std_stream).map_err(err)?);
        let hello = Request::Hello {
            pool: self.pool.path().to_path_buf(),
            size: self.pool.len(),
            token: self.auth_token.as_ref().map(|t| t.as_str().to_owned()),
        };
        let body = serde_json::to_vec(&hello).map_err(|e| err(std::io::Error::other(e)))?;
        write_frame(&s, &body).await.map_err(err)?;
        let reply: Reply = serde_json::from_slice(&read_frame(&s).await.map_err(err)?)
            .map_err(|e| err(std::io::Error::other(e)))?;
        if reply.codes.first().is_some_and(|c| *c != 0) {
            return Err(StandaloneError::Refused(reply.text));
        }
        Ok(s)
    }

    /// Sends one request. A connection the store service closed (it restarted) is reopened
    /// before sending; a failure after sending is reported, never retried, so no request
    /// runs twice. Failures come back as `RpcFail` codes.
    async fn call(&self, req: &Request) -> Reply {
        let failed = Reply {
            codes: vec![ErrorCode::RpcFail.code().into()],
            text: String::new(),
        };
        let Ok(body) = serde_json::to_vec(req) else {
            return failed;
        };
        let mut conn = self.conn.lock().await;
        let alive = conn.as_ref().is_some_and(Conn::is_alive);
        if !alive {
            *conn = None;
            match self.open().await {
                Ok(s) => *conn = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "standalone store service unreachable");
                    return failed;
                }
            }
        }
        let Some(s) = conn.as_ref() else {
            return failed;
        };
        let answer = async {
            write_frame(s, &body).await?;
            read_frame(s).await
        }
        .await;
        match answer.map(|f| serde_json::from_slice::<Reply>(&f)) {
            Ok(Ok(r)) => r,
            other => {
                tracing::warn!(?other, "standalone store service connection failed");
                *conn = None;
                failed
            }
        }
    }

    fn codes(&self, r: Reply, n: usize) -> Vec<i64> {
        if r.codes.len() == n {
            r.codes
        } else {
            vec![
                r.codes
                    .first()
                    .copied()
                    .unwrap_or(ErrorCode::RpcFail.code().into());
                n
            ]
        }
    }

    /// Bytes of the pool reserved for staging (the `local_buffer_size` of `setup_dummy`).
    pub fn local_buffer_size(&self) -> u64 {
        self.staging_len
    }

    /// The store service's segment name (what `get_hostname` returns).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// `[addr, addr+len)` as a pool offset, if it lies in the pool.
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<u64> {
        let base = self.pool.addr();
        (addr >= base && addr.checked_add(len)? <= base + self.pool.len()).then(|| addr - base)
    }

    /// A buffer of `size` bytes in the shared pool for zero-copy calls (address), or `None`.
    pub fn alloc_from_mem_pool(&self, size: u64) -> Option<u64> {
        let a = self.user.lock().allocate(size)?;
        Some(self.pool.addr() + self.staging_len + a.offset)
    }

    /// Room in the staging area.
    pub fn stage(&self, len: u64) -> Option<StagedRange<'_>> {
        let a = self.staging.lock().allocate(len)?;
        Some(StagedRange {
            client: self,
            handle: a.handle,
            offset: a.offset,
            len,
        })
    }

    /// Copies `data` into a staged range at `at` bytes into it.
    pub fn fill(&self, range: &StagedRange<'_>, at: u64, data: &[u8]) {
        self.pool.write_at(range.offset + at, data);
    }

    /// Puts (or upserts) objects made of pool ranges; per-key code.
    pub async fn put(
        &self,
        items: Vec<(String, Ranges)>,
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<i64> {
        let n = items.len();
        let r = self
            .call(&Request::Put {
                items,
                upsert,
                config: config.into(),
            })
            .await;
        self.codes(r, n)
    }

    /// `(key, pool offset, capacity)` reads; per-key size or code.
    pub async fn get_into(&self, items: Vec<(String, u64, u64)>) -> Vec<i64> {
        let n = items.len();
        let r = self.call(&Request::GetInto { items }).await;
        self.codes(r, n)
    }

    /// Exact-fit scattered reads; per-key size or code.
    pub async fn get_into_parts(&self, items: Vec<(String, Ranges)>) -> Vec<i64> {
        let n = items.len();
        let r = self.call(&Request::GetIntoParts { items }).await;
        self.codes(r, n)
    }

    /// Per-key 1, 0 or a code.
    pub async fn is_exist(&self, keys: Vec<String>) -> Vec<i64> {
        let n = keys.len();
        let r = self.call(&Request::IsExist { keys }).await;
        self.codes(r, n)
    }

    /// Size or code.
    pub async fn get_size(&self, key: String) -> i64 {
        let r = self.call(&Request::GetSize { key }).await;
        self.codes(r, 1)[0]
    }

    /// Per-key code.
    pub async fn remove(&self, keys: Vec<String>, force: bool) -> Vec<i64> {
        let n = keys.len();
        let r = self.call(&Request::Remove { keys, force }).await;
        self.codes(r, n)
    }

    /// Count or code.
    pub async fn remove_all(&self, force: bool) -> i64 {
        let r = self.call(&Request::RemoveAll { force }).await;
        self.codes(r, 1)[0]
    }

    /// Bytes of the shared pool (staging excluded).
    pub fn pool_len(&self) -> u64 {
        self.pool.len()
    }

    /// `get_into_ranges` through the store service: fragments are `(pool offset, len,
    /// object offset)`; per key, per fragment, the length read or a code.
    pub async fn read_ranges(&self, items: Vec<(String, Vec<crate::Fragment>)>) -> Vec<Vec<i64>> {
        let shape: Vec<usize> = items.iter().map(|(_, f)| f.len()).collect();
        let total: usize = shape.iter().sum();
        let r = self.call(&Request::ReadRanges { items }).await;
        let flat = self.codes(r, total);
        let mut it = flat.into_iter();
        shape
            .into_iter()
            .map(|n| it.by_ref().take(n).collect())
            .collect()
    }

    /// Count or code.
    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> i64 {
        let pattern = pattern.to_owned();
        let r = self.call(&Request::RemoveByRegex { pattern, force }).await;
        self.codes(r, 1)[0]
    }

    /// The store service's client queues a copy task.
    pub async fn create_copy_task(
        &self,
        key: &str,
        targets: &[String],
    ) -> Result<TaskId, ErrorCode> {
        let (key, targets) = (key.to_owned(), targets.to_vec());
        task_id_of(self.call(&Request::CreateCopyTask { key, targets }).await)
    }

    /// The store service's client queues a move task.
    pub async fn create_move_task(
        &self,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        let req = Request::CreateMoveTask {
            key: key.to_owned(),
            source: source.to_owned(),
            target: target.to_owned(),
        };
        task_id_of(self.call(&req).await)
    }

    /// A task's state, through the store service.
    pub async fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        let (id_hi, id_lo) = id.halves();
        let r = self.call(&Request::QueryTask { id_hi, id_lo }).await;
        decode_task(&r.codes, r.text)
    }

    /// Whether the store service answers.
    pub async fn healthy(&self) -> bool {
        !self.call(&Request::Hostname).await.text.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ranges_never_leave_the_pool() {
        assert_eq!(
            addresses(0x1000, 100, &[(0, 10), (90, 10)]),
            Some(vec![(0x1000, 10), (0x1000 + 90, 10)])
        );
        assert_eq!(addresses(0x1000, 100, &[(95, 10)]), None);
        assert_eq!(addresses(0x1000, 100, &[(u64::MAX, 2)]), None);
    }

    proptest::proptest! {
        /// A standalone frame from another process: any bytes parse to a request or an
        /// error, never a panic; a lying peer's reply shapes never panic the client side.
        #[test]
        fn any_frame_parses_or_is_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Request>(&bytes);
            let _ = serde_json::from_slice::<Reply>(&bytes);
        }

        #[test]
        fn any_task_reply_decodes_or_is_refused(codes in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..12)) {
            let _ = decode_task(&codes, String::new());
            let _ = task_id_of(Reply { codes, text: String::new() });
        }
    }

    #[test]
    fn tasks_survive_the_wire_bit_for_bit() {
        let t = TaskInfo {
            id: TaskId::from_halves(u64::MAX, 7),
            kind: TaskKind::Move,
            status: TaskStatus::Success,
            created_at_ms: 1,
            updated_at_ms: 2,
            assigned_client: crate::ClientId(u128::MAX - 5),
            message: "done".into(),
        };
        assert_eq!(decode_task(&encode_task(&t), "done".into()), Ok(t));
        assert_eq!(
            decode_task(&[-1400], String::new()),
            Err(ErrorCode::TaskNotFound)
        );
        let r = task_reply(Ok(TaskId::from_halves(u64::MAX, 1)));
        assert_eq!(task_id_of(r), Ok(TaskId::from_halves(u64::MAX, 1)));
        assert_eq!(
            task_id_of(task_reply(Err(ErrorCode::ObjectNotFound))),
            Err(ErrorCode::ObjectNotFound)
        );
    }

    #[test]
    fn configs_and_requests_survive_the_wire() {
        let c = ReplicateConfig {
            replica_num: 2,
            pin: Pin::Hard,
            preferred_segments: vec!["a:1".into()],
            prefer_alloc_in_same_node: false,
            soft_pin_ttl_ms: Some(5),
            ..ReplicateConfig::default()
        };
        let back = ReplicateConfig::from(WireConfig::from(&c));
        assert_eq!(back, c);
        let req = Request::GetInto {
            items: vec![("k".into(), 4096, 10)],
        };
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"op\":\"get_into\""), "{json}");
        assert!(matches!(
            serde_json::from_str::<Request>(&json).unwrap(),
            Request::GetInto { .. }
        ));
        assert!(serde_json::from_str::<Request>("{\"op\":\"format_disk\"}").is_err());
    }
}
