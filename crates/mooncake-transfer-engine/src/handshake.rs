//! Handshake socket ("RPC port") protocol of the transfer engine.
//!
//! Frame: bytes 0-7 = `L` (u64 LE, `1 +` JSON length), byte 8 = [`FrameType`],
//! then `L - 1` bytes of JSON. If byte 8 is greater than 3 the frame is a legacy
//! untyped one: all `L` payload bytes are JSON, treated as a Connection request.
//! Each TCP connection carries exactly one request and one reply.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time;

/// Default maximum frame length `L` accepted by the reader (1 MiB).
pub const DEFAULT_MAX_FRAME: u64 = 1 << 20;
/// Largest configurable maximum frame length (128 MiB).
pub const MAX_FRAME_LIMIT: u64 = 128 << 20;
/// Number of queued notifications kept; older ones are dropped beyond this.
pub const MAX_QUEUED_NOTIFICATIONS: usize = 4096;
/// Length of the fixed frame prefix (length word plus type byte).
pub const PREFIX_LEN: usize = 9;

/// How long the server waits for the client to close after replying.
const LINGER: Duration = Duration::from_secs(5);
/// Pause after a failed `accept()` (e.g. EMFILE) to avoid a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Upper bound of the initial read buffer, so a large `L` alone allocates little.
const INITIAL_READ_CAPACITY: u64 = 64 * 1024;

/// Type byte of a handshake frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Connection (QP exchange) request/reply; also used for legacy frames.
    Connection = 0,
    /// Segment descriptor exchange (P2P metadata mode).
    Metadata = 1,
    /// Notification message.
    Notify = 2,
    /// Liveness probe.
    Probe = 3,
}

impl FrameType {
    /// Maps a type byte to a frame type; `None` for bytes greater than 3.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Connection),
            1 => Some(Self::Metadata),
            2 => Some(Self::Notify),
            3 => Some(Self::Probe),
            _ => None,
        }
    }
}

/// A notification received from a peer, queued until drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Name of the sender.
    pub name: String,
    /// Notification text.
    pub msg: String,
}

/// Errors of the handshake protocol.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// An I/O operation failed (including the peer closing mid-frame).
    #[error("i/o error{}: {source}", peer_suffix(.peer))]
    Io {
        /// Remote address, when known.
        peer: Option<SocketAddr>,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The frame length exceeds the configured maximum.
    #[error("frame length {len} exceeds maximum {max}")]
    FrameTooLarge {
        /// Length word `L` read from the wire.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The frame length word is zero.
    #[error("empty frame (length 0)")]
    EmptyFrame,
    /// An operation did not complete within its deadline.
    #[error("timed out during {what}{}", peer_suffix(.peer))]
    Timeout {
        /// Remote address, when known.
        peer: Option<SocketAddr>,
        /// The operation that timed out.
        what: &'static str,
    },
    /// A payload is not valid JSON or lacks the expected shape.
    #[error("malformed json: {0}")]
    MalformedJson(String),
    /// The reply frame type differs from the request type.
    #[error("unexpected frame type: expected {expected:?}, got {got:?}")]
    UnexpectedType {
        /// Type of the request.
        expected: FrameType,
        /// Type of the reply.
        got: FrameType,
    },
    /// The peer answered but did not report success; holds the reply text.
    #[error("rejected by peer: {0}")]
    Rejected(String),
}

fn peer_suffix(peer: &Option<SocketAddr>) -> String {
    peer.map(|p| format!(" with {p}")).unwrap_or_default()
}

impl HandshakeError {
    /// Fills in the peer address of `Io` and `Timeout` errors lacking one.
    fn with_peer(mut self, addr: SocketAddr) -> Self {
        if let Self::Io { peer, .. } | Self::Timeout { peer, .. } = &mut self {
            peer.get_or_insert(addr);
        }
        self
    }
}

fn io_err(peer: Option<SocketAddr>) -> impl FnOnce(std::io::Error) -> HandshakeError {
    move |source| HandshakeError::Io { peer, source }
}

/// Decoded 9-byte frame prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePrefix {
    /// Frame type ([`FrameType::Connection`] for legacy frames).
    pub ty: FrameType,
    /// Number of bytes still to read after the prefix (`L - 1`).
    pub remaining: u64,
    /// For a legacy untyped frame, byte 8, which is the first JSON byte.
    pub legacy_first_byte: Option<u8>,
}

/// Encodes a typed frame carrying `json`.
pub fn encode_frame(ty: FrameType, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + json.len());
    out.extend_from_slice(&(1 + json.len() as u64).to_le_bytes());
    out.push(ty as u8);
    out.extend_from_slice(json);
    out
}

/// Pure decoder of the 9-byte prefix; rejects `L == 0` and `L > max`.
pub fn decode_prefix(prefix: &[u8; PREFIX_LEN], max: u64) -> Result<FramePrefix, HandshakeError> {
    let mut word = [0u8; 8];
    word.copy_from_slice(&prefix[..8]);
    let len = u64::from_le_bytes(word);
    if len == 0 {
        return Err(HandshakeError::EmptyFrame);
    }
    if len > max {
        return Err(HandshakeError::FrameTooLarge { len, max });
    }
    let (ty, legacy_first_byte) = match FrameType::from_byte(prefix[8]) {
        Some(ty) => (ty, None),
        None => (FrameType::Connection, Some(prefix[8])),
    };
    Ok(FramePrefix {
        ty,
        remaining: len - 1,
        legacy_first_byte,
    })
}

/// Reads one frame, returning its type and JSON bytes. Memory grows with the
/// bytes actually received, not with the announced length.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<(FrameType, Vec<u8>), HandshakeError> {
    let mut prefix = [0u8; PREFIX_LEN];
    r.read_exact(&mut prefix).await.map_err(io_err(None))?;
    let p = decode_prefix(&prefix, max)?;
    let cap = usize::try_from(p.remaining.min(INITIAL_READ_CAPACITY)).unwrap_or(0);
    let mut buf = Vec::with_capacity(cap + 1);
    buf.extend(p.legacy_first_byte);
    let mut rest = (&mut *r).take(p.remaining);
    let got = rest.read_to_end(&mut buf).await.map_err(io_err(None))?;
    if (got as u64) < p.remaining {
        return Err(io_err(None)(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((p.ty, buf))
}

/// Writes one typed frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    ty: FrameType,
    json: &[u8],
) -> Result<(), HandshakeError> {
    let frame = encode_frame(ty, json);
    w.write_all(&frame).await.map_err(io_err(None))?;
    w.flush().await.map_err(io_err(None))
}

/// Shared state of the handshake daemon.
#[derive(Debug, Default)]
pub struct HandshakeState {
    notifications: Mutex<VecDeque<Notification>>,
    descriptor: Mutex<Option<String>>,
}

impl HandshakeState {
    /// Creates an empty state (no descriptor, no notifications).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or clears) the own segment descriptor JSON served in P2P mode.
    pub fn set_descriptor(&self, json: Option<String>) {
        *self.descriptor.lock() = json;
    }

    /// The own segment descriptor JSON served in P2P mode, if set.
    pub fn descriptor(&self) -> Option<String> {
        self.descriptor.lock().clone()
    }

    /// Queues a notification, dropping the oldest beyond the bound.
    pub fn push_notification(&self, n: Notification) {
        let mut q = self.notifications.lock();
        if q.len() >= MAX_QUEUED_NOTIFICATIONS {
            q.pop_front();
        }
        q.push_back(n);
    }

    /// Removes and returns all queued notifications, oldest first.
    pub fn drain_notifications(&self) -> Vec<Notification> {
        self.notifications.lock().drain(..).collect()
    }
}

/// Server tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// Deadline for reading the request (and for writing the reply).
    pub read_timeout: Duration,
    /// Maximum frame length; clamped to `DEFAULT_MAX_FRAME..=MAX_FRAME_LIMIT`.
    pub max_frame: u64,
    /// Maximum number of connections handled concurrently (at least 1).
    pub max_connections: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 64,
        }
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, HandshakeError> {
    serde_json::from_slice(bytes).map_err(|e| HandshakeError::MalformedJson(e.to_string()))
}

/// Builds the reply JSON text (with trailing newline) for one request.
fn build_reply(st: &HandshakeState, ty: FrameType, json: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut text = match ty {
        FrameType::Probe => json!({"status": "success"}).to_string(),
        FrameType::Notify => {
            let v = parse_json(json)?;
            let Some(obj) = v.as_object() else {
                return Err(HandshakeError::MalformedJson(
                    "notify: not an object".into(),
                ));
            };
            let field = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let (name, msg) = (field("name"), field("notify_msg"));
            st.push_notification(Notification { name, msg });
            json!({"name": "", "notify_msg": "success"}).to_string()
        }
        FrameType::Metadata => {
            let desc = st.descriptor.lock().clone();
            desc.as_deref().unwrap_or("null").trim_end().to_owned()
        }
        FrameType::Connection => json!({
            "local_gid": "", "local_lid": 0, "local_nic_path": "", "payload": "",
            "peer_nic_path": "", "qp_num": [], "reply_msg": ""
        })
        .to_string(),
    };
    text.push('\n');
    Ok(text.into_bytes())
}

/// Runs `fut` with a deadline, mapping expiry to [`HandshakeError::Timeout`].
async fn timed<T, F>(
    limit: Duration,
    peer: SocketAddr,
    what: &'static str,
    fut: F,
) -> Result<T, HandshakeError>
where
    F: Future<Output = Result<T, HandshakeError>>,
{
    match time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| e.with_peer(peer)),
        Err(_) => Err(HandshakeError::Timeout {
            peer: Some(peer),
            what,
        }),
    }
}

async fn handle_conn(
    mut s: TcpStream,
    peer: SocketAddr,
    st: &HandshakeState,
    cfg: ServeConfig,
) -> Result<(), HandshakeError> {
    let to = cfg.read_timeout;
    let (ty, json) = timed(to, peer, "request read", read_frame(&mut s, cfg.max_frame)).await?;
    let reply = build_reply(st, ty, &json)?;
    timed(to, peer, "reply write", write_frame(&mut s, ty, &reply)).await?;
    // Half-close, then wait (bounded) for the client to close its side.
    let _ = s.shutdown().await;
    let mut sink = [0u8; 512];
    let drain = async { while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = time::timeout(LINGER, drain).await;
    Ok(())
}

/// Serves handshake requests with [`ServeConfig::default`] until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HandshakeState>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with(listener, state, ServeConfig::default(), shutdown).await
}

/// Serves handshake requests with `config` until `shutdown` completes, then
/// aborts in-flight connections. Per-connection errors are only logged.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<HandshakeState>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let cfg = ServeConfig {
        max_frame: config.max_frame.clamp(DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT),
        max_connections: config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        ..config
    };
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "handshake accept failed");
                    time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tasks.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            if let Err(e) = handle_conn(stream, peer, &state, cfg).await {
                tracing::debug!(%peer, error = %e, "handshake connection failed");
            }
        });
    }
    tasks.shutdown().await;
    Ok(())
}

/// Deadlines of one client exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimeouts {
    /// Time to establish the connection (the C++ client's `MC_HANDSHAKE_CONNECT_TIMEOUT`).
    pub connect: Duration,
    /// Time to write the request, and again to read the reply.
    pub reply: Duration,
}

impl CallTimeouts {
    /// The same deadline for every step.
    pub fn uniform(limit: Duration) -> Self {
        Self {
            connect: limit,
            reply: limit,
        }
    }
}

/// One client exchange: connect, send a frame, read the reply, check its type.
async fn call(
    addr: SocketAddr,
    ty: FrameType,
    body: &[u8],
    to: CallTimeouts,
) -> Result<Vec<u8>, HandshakeError> {
    // Descriptors may be large; other replies are tiny.
    let max = if ty == FrameType::Metadata {
        MAX_FRAME_LIMIT
    } else {
        DEFAULT_MAX_FRAME
    };
    let connect = async { TcpStream::connect(addr).await.map_err(io_err(Some(addr))) };
    let mut s = timed(to.connect, addr, "connect", connect).await?;
    let _ = s.set_nodelay(true);
    timed(
        to.reply,
        addr,
        "request write",
        write_frame(&mut s, ty, body),
    )
    .await?;
    let (got, reply) = timed(to.reply, addr, "reply read", read_frame(&mut s, max)).await?;
    if got != ty {
        return Err(HandshakeError::UnexpectedType { expected: ty, got });
    }
    Ok(reply)
}

/// One client exchange whatever the reply says: sends a `ty` frame carrying `body` to
/// `addr` and returns the reply's parsed JSON. A reply frame of another type is
/// [`HandshakeError::UnexpectedType`]; a reply that is not JSON is
/// [`HandshakeError::MalformedJson`].
pub async fn exchange(
    addr: SocketAddr,
    ty: FrameType,
    body: &[u8],
    timeouts: CallTimeouts,
) -> Result<Value, HandshakeError> {
    parse_json(&call(addr, ty, body, timeouts).await?)
}

fn lossy_trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_owned()
}

/// Checks that string field `key` of a reply equals `"success"`.
fn expect_success(reply: &[u8], key: &str) -> Result<(), HandshakeError> {
    match parse_json(reply)?.get(key).and_then(Value::as_str) {
        Some("success") => Ok(()),
        _ => Err(HandshakeError::Rejected(lossy_trimmed(reply))),
    }
}

/// Probes a peer's handshake port; succeeds on `{"status":"success"}`.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), HandshakeError> {
    let reply = call(
        addr,
        FrameType::Probe,
        b"{}",
        CallTimeouts::uniform(timeout),
    )
    .await?;
    expect_success(&reply, "status")
}

/// Sends notification `msg` from `sender` to the peer at `addr`.
pub async fn notify(
    addr: SocketAddr,
    sender: &str,
    msg: &str,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let body = json!({"name": sender, "notify_msg": msg}).to_string();
    let to = CallTimeouts::uniform(timeout);
    let reply = call(addr, FrameType::Notify, body.as_bytes(), to).await?;
    expect_success(&reply, "notify_msg")
}

/// Sends our descriptor and fetches the peer's segment descriptor JSON;
/// `None` when the peer replies `null` (not in P2P mode).
pub async fn fetch_metadata(
    addr: SocketAddr,
    own_descriptor: &str,
    timeout: Duration,
) -> Result<Option<String>, HandshakeError> {
    let reply = call(
        addr,
        FrameType::Metadata,
        own_descriptor.as_bytes(),
        CallTimeouts::uniform(timeout),
    )
    .await?;
    // parse_json succeeding also guarantees valid UTF-8.
    Ok((!parse_json(&reply)?.is_null()).then(|| lossy_trimmed(&reply)))
}

#[cfg(test)]
mod tests {
    mod decoders {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes from a peer: the prefix decodes or is refused, and a whole frame
            /// reads or fails, never a panic and never more memory than was received.
            #[test]
            fn any_bytes_read_as_a_frame_or_are_refused(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
                max in prop_oneof![Just(0u64), Just(100), Just(1 << 20), Just(u64::MAX)],
            ) {
                if bytes.len() >= PREFIX_LEN {
                    let mut prefix = [0u8; PREFIX_LEN];
                    prefix.copy_from_slice(&bytes[..PREFIX_LEN]);
                    let _ = decode_prefix(&prefix, max);
                }
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let mut r = &bytes[..];
                if let Ok((ty, json)) = rt.block_on(read_frame(&mut r, max)) {
                    prop_assert!(json.len() < bytes.len());
                    if bytes[8] == ty as u8 {
                        prop_assert_eq!(&encode_frame(ty, &json)[..], &bytes[..PREFIX_LEN + json.len()]);
                    }
                }
            }
        }
    }

    use super::*;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const T: Duration = Duration::from_secs(3);

    fn prefix(len: u64, ty: u8) -> [u8; 9] {
        let mut p = [ty; 9];
        p[..8].copy_from_slice(&len.to_le_bytes());
        p
    }

    fn frame(len: u64, ty: u8, rest: &[u8]) -> Vec<u8> {
        [&prefix(len, ty)[..], rest].concat()
    }

    async fn read(bytes: &[u8]) -> Result<(FrameType, Vec<u8>), HandshakeError> {
        read_frame(&mut &bytes[..], 100).await
    }

    type Server = (
        SocketAddr,
        Arc<HandshakeState>,
        oneshot::Sender<()>,
        JoinHandle<std::io::Result<()>>,
    );

    /// Starts a server on 127.0.0.1:0 (via `serve` for the default config).
    async fn start(cfg: ServeConfig) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, st) = (l.local_addr().unwrap(), Arc::new(HandshakeState::new()));
        let (tx, rx) = oneshot::channel::<()>();
        let stop = async move { rx.await.unwrap_or(()) };
        let h = if cfg == ServeConfig::default() {
            tokio::spawn(serve(l, Arc::clone(&st), stop))
        } else {
            tokio::spawn(serve_with(l, Arc::clone(&st), cfg, stop))
        };
        (addr, st, tx, h)
    }

    /// Sends raw bytes, half-closes, and returns everything the server sent.
    async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = time::timeout(T, s.read_to_end(&mut out)).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probe_example_bytes() {
        let req = encode_frame(FrameType::Probe, b"{}");
        assert_eq!(req, [3, 0, 0, 0, 0, 0, 0, 0, 3, 0x7b, 0x7d]);
        let reply = frame(22, 3, b"{\"status\":\"success\"}\n");
        assert_eq!(&reply[..9], [0x16, 0, 0, 0, 0, 0, 0, 0, 3]);
        let (addr, _st, _tx, _h) = start(ServeConfig::default()).await;
        assert_eq!(raw(addr, &req).await, reply);
        probe(addr, T).await.unwrap();
    }

    #[tokio::test]
    async fn decoding_edge_cases() {
        let legacy = FramePrefix {
            ty: FrameType::Connection,
            remaining: 1,
            legacy_first_byte: Some(b'{'),
        };
        assert_eq!(decode_prefix(&prefix(2, b'{'), 100).unwrap(), legacy);
        let want = (FrameType::Connection, b"{}".to_vec());
        assert_eq!(read(&frame(2, b'{', b"}")).await.unwrap(), want);
        let empty = decode_prefix(&prefix(0, 3), 100);
        assert!(matches!(empty, Err(HandshakeError::EmptyFrame)));
        let big = read(&frame(101, 3, b"{}")).await;
        assert!(matches!(
            big,
            Err(HandshakeError::FrameTooLarge { len: 101, max: 100 })
        ));
        assert_eq!(decode_prefix(&prefix(100, 3), 100).unwrap().remaining, 99);
        let truncated = read(&frame(10, 3, b"{}")).await;
        assert!(matches!(truncated, Err(HandshakeError::Io { .. })));
        assert!(read(&[1, 0, 0]).await.is_err());
    }

    #[tokio::test]
    async fn server_requests() {
        let (addr, st, tx, h) = start(ServeConfig::default()).await;
        notify(addr, "node-a", "hello", T).await.unwrap();
        notify(addr, "node-b", "bye", T).await.unwrap();
        let n = |name: &str, msg: &str| Notification {
            name: name.into(),
            msg: msg.into(),
        };
        assert_eq!(
            st.drain_notifications(),
            [n("node-a", "hello"), n("node-b", "bye")]
        );
        assert!(st.drain_notifications().is_empty());

        let md = fetch_metadata(addr, "{\"name\":\"me\"}", T).await.unwrap();
        assert_eq!(md, None);
        let desc = "{\"devices\":[],\"name\":\"srv\"}";
        st.set_descriptor(Some(desc.into()));
        let md = fetch_metadata(addr, "{}", T).await.unwrap();
        assert_eq!(md.as_deref(), Some(desc));

        let want = b"{\"local_gid\":\"\",\"local_lid\":0,\"local_nic_path\":\"\",\"payload\":\"\",\
            \"peer_nic_path\":\"\",\"qp_num\":[],\"reply_msg\":\"\"}\n";
        let req = encode_frame(FrameType::Connection, b"{\"local_nic_path\":\"x\"}");
        let reply = raw(addr, &req).await;
        assert_eq!(reply, encode_frame(FrameType::Connection, want));
        // A legacy untyped request gets the same (typed) Connection reply.
        assert_eq!(raw(addr, &frame(2, b'{', b"}")).await, reply);

        tx.send(()).unwrap();
        h.await.unwrap().unwrap();
        let err = probe(addr, T).await.unwrap_err();
        assert!(
            matches!(err, HandshakeError::Io { peer: Some(p), .. } if p == addr),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_does_not_kill_server() {
        let (addr, st, _tx, _h) = start(ServeConfig::default()).await;
        for junk in [
            &[0xff; 9][..],
            &[0; 9],
            &encode_frame(FrameType::Notify, b"[1]"),
            &frame(5, 2, b"{"),
        ] {
            assert!(raw(addr, junk).await.is_empty());
        }
        probe(addr, T).await.unwrap();
        assert!(st.drain_notifications().is_empty());
    }

    #[tokio::test]
    async fn silent_client_does_not_block() {
        let (addr, _st, _tx, _h) = start(ServeConfig::default()).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        probe(addr, Duration::from_secs(1)).await.unwrap();

        // With a single slot the probe waits until the silent client times out.
        let cfg = ServeConfig {
            read_timeout: Duration::from_millis(200),
            max_connections: 1,
            ..Default::default()
        };
        let (addr, _st, _tx, _h) = start(cfg).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        time::sleep(Duration::from_millis(50)).await;
        probe(addr, T).await.unwrap();
        assert_eq!(silent.read(&mut [0u8; 8]).await.unwrap_or(0), 0);
    }

    #[test]
    fn notification_queue_is_bounded() {
        let st = HandshakeState::new();
        for i in 0..=MAX_QUEUED_NOTIFICATIONS {
            st.push_notification(Notification {
                name: i.to_string(),
                msg: String::new(),
            });
        }
        let all = st.drain_notifications();
        assert_eq!(all.len(), MAX_QUEUED_NOTIFICATIONS);
        assert_eq!(all[0].name, "1");
    }
}
