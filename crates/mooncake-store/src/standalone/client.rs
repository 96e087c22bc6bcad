//! The thin client inside an inference rank: its `/dev/shm` pool (staging and zero-copy
//! buffers) and the calls it forwards to the store service.

#[allow(clippy::wildcard_imports)]
use super::*;

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
