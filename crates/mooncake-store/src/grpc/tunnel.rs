//! A lean transport for the master's gRPC messages: the same generated client and server,
//! the same protobuf messages, carried as length-prefixed frames on plain TCP connections
//! instead of HTTP/2 streams.
//!
//! Why: a unary call over HTTP/2 crosses several tasks on each side (connection task,
//! stream task, buffer worker); on 2 cores each hop is a thread wake-up, and a small
//! `get` spent most of its time there. Here the caller's own future writes the request and
//! reads (polls for) the answer on a pooled [`Conn`], and the master answers inline in the
//! connection's task.
//!
//! A connection starts with [`MAGIC`]; the master's listener peeks at it and hands every
//! other connection to the HTTP/2 server, so one port serves both. Frames (little endian):
//! - request: `u32 len | u16 path_len | path | grpc body`;
//! - response: `u32 len | headers | trailers | grpc body`, where each header block is
//!   `u16 count` then `(u16 name_len, name, u16 value_len, value)` per entry.
//!
//! A client with a token starts with [`MAGIC_AUTH`] and `u16 len | token` instead; a
//! master that has a token and gets none, or another one, answers the first request with
//! `UNAUTHENTICATED` and closes the connection without calling the service.
//!
//! The grpc body is tonic's own (5-byte message prefix included), so codecs, size limits
//! and status handling are unchanged.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::Service;

use mooncake_metadata::AuthToken;

use super::MAX_MESSAGE_SIZE;
use crate::conn::{Conn, Sock};

/// First bytes a tunnel client sends on a new connection.
pub(crate) const MAGIC: [u8; 4] = *b"MCT1";

/// First bytes of a tunnel client that presents a token: then `u16 len | token`.
pub(crate) const MAGIC_AUTH: [u8; 4] = *b"MCT2";

/// The message of every refusal for a missing or wrong token.
pub(crate) const AUTH_FAILED: &str =
    "authentication failed: the master needs the cluster's token (--auth_token / MOONCAKE_AUTH_TOKEN)";

/// Largest frame accepted (a message plus its path or headers).
const MAX_FRAME: usize = MAX_MESSAGE_SIZE + (64 << 10);

/// Idle connections kept per client.
const MAX_IDLE: usize = 16;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tunnel frame: {what}"))
}

// ---- frame codec (no I/O) ----

/// A request frame, length prefix included.
pub(crate) fn encode_request(path: &str, body: &[u8]) -> Vec<u8> {
    let len = 2 + path.len() + body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.put_u32_le(len as u32);
    out.put_u16_le(path.len() as u16);
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(body);
    out
}

/// `(path, body)` of a request frame (without its length prefix).
pub(crate) fn decode_request(mut frame: Bytes) -> io::Result<(String, Bytes)> {
    if frame.len() < 2 {
        return Err(invalid("request shorter than its header"));
    }
    let n = frame.get_u16_le() as usize;
    if frame.len() < n {
        return Err(invalid("path longer than the frame"));
    }
    let path =
        String::from_utf8(frame.split_to(n).to_vec()).map_err(|_| invalid("path is not UTF-8"))?;
    Ok((path, frame))
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    out.put_u16_le(headers.len() as u16);
    for (name, value) in headers {
        out.put_u16_le(name.as_str().len() as u16);
        out.extend_from_slice(name.as_str().as_bytes());
        out.put_u16_le(value.len() as u16);
        out.extend_from_slice(value.as_bytes());
    }
}

fn get_headers(frame: &mut Bytes) -> io::Result<HeaderMap> {
    let mut take = |n: usize| -> io::Result<Bytes> {
        if frame.len() < n {
            return Err(invalid("header block longer than the frame"));
        }
        Ok(frame.split_to(n))
    };
    let count = take(2)?.get_u16_le();
    let mut map = HeaderMap::new();
    for _ in 0..count {
        let n = take(2)?.get_u16_le() as usize;
        let name = HeaderName::from_bytes(&take(n)?).map_err(|_| invalid("bad header name"))?;
        let n = take(2)?.get_u16_le() as usize;
        let value =
            HeaderValue::from_maybe_shared(take(n)?).map_err(|_| invalid("bad header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A response frame, length prefix included.
pub(crate) fn encode_response(headers: &HeaderMap, trailers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(4 + 64 + body.len());
    out.put_u32_le(0);
    put_headers(&mut out, headers);
    put_headers(&mut out, trailers);
    out.extend_from_slice(body);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out.to_vec()
}

/// `(headers, trailers, body)` of a response frame (without its length prefix).
pub(crate) fn decode_response(mut frame: Bytes) -> io::Result<(HeaderMap, HeaderMap, Bytes)> {
    let headers = get_headers(&mut frame)?;
    let trailers = get_headers(&mut frame)?;
    Ok((headers, trailers, frame))
}

/// The abstract Unix socket a master whose RPC port is `port` also listens on: clients on
/// the same host reach it without the TCP stack.
pub(crate) fn local_socket_name(port: u16) -> String {
    format!("mooncake_master_{port}.sock")
}

/// Whether `host` names this machine (then the master's Unix socket is tried first).
fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

// ---- client ----

/// The client side: a pool of tunnel connections to one master (TCP, or the master's
/// abstract Unix socket when it runs on this host), usable as the transport of the
/// generated gRPC client.
#[derive(Debug, Clone)]
pub(crate) struct Tunnel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    connect_timeout: Duration,
    /// Bound on one round trip's waits (the caller's `rpc_timeout`).
    rpc_timeout: Duration,
    local_socket: bool,
    /// The preamble of every new connection: [`MAGIC`], or [`MAGIC_AUTH`] and the token.
    preamble: Vec<u8>,
    idle: Mutex<Vec<Conn>>,
}

impl Tunnel {
    /// Opens a first connection to `addr` (`host:port`). A round trip that has to wait
    /// past `rpc_timeout` fails with gRPC's `DEADLINE_EXCEEDED`, so callers need no timer
    /// of their own (see [`Conn::read_frame_until`]).
    pub(crate) async fn connect(
        addr: &str,
        connect_timeout: Duration,
        rpc_timeout: Duration,
        local_socket: bool,
        token: Option<&AuthToken>,
    ) -> io::Result<Self> {
        let preamble = match token {
            None => MAGIC.to_vec(),
            Some(t) => {
                let mut p = MAGIC_AUTH.to_vec();
                p.put_u16_le(t.as_bytes().len() as u16);
                p.extend_from_slice(t.as_bytes());
                p
            }
        };
        let tunnel = Self {
            inner: Arc::new(Inner {
                addr: addr.to_owned(),
                connect_timeout,
                rpc_timeout,
                local_socket,
                preamble,
                idle: Mutex::new(Vec::new()),
            }),
        };
        let first = tunnel.open().await?;
        tunnel.inner.idle.lock().push(first);
        Ok(tunnel)
    }

    async fn open(&self) -> io::Result<Conn> {
        if self.inner.local_socket {
            if let Some(s) = self.open_local() {
                return Ok(s);
            }
        }
        let connect = TcpStream::connect(&self.inner.addr);
        let mut stream = tokio::time::timeout(self.inner.connect_timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        stream.write_all(&self.inner.preamble).await?;
        Conn::tcp(stream)
    }

    /// The master's abstract Unix socket, when the master is on this host and has one,
    /// and is held by a process of this user (anyone can bind an abstract name: a socket
    /// held by another user is not trusted with our requests; TCP is used instead).
    fn open_local(&self) -> Option<Conn> {
        use std::io::Write;
        use std::os::linux::net::SocketAddrExt;
        let (host, port) = self.inner.addr.rsplit_once(':')?;
        if !is_loopback(host) {
            return None;
        }
        let name = local_socket_name(port.parse().ok()?);
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
        let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).ok()?;
        let holder = mooncake_transfer_engine::peer_uid(std::os::fd::AsFd::as_fd(&s));
        let me = mooncake_transfer_engine::effective_uid();
        if holder != Some(me) {
            tracing::warn!(
                socket = %format!("@{name}"),
                holder_uid = ?holder,
                uid = me,
                "the master's local socket is held by another user; not trusting it, using TCP"
            );
            return None;
        }
        s.write_all(&self.inner.preamble).ok()?;
        Sock::unix(s).ok().map(Conn::from)
    }

    async fn exchange(
        stream: &Conn,
        frame: &[u8],
        deadline: tokio::time::Instant,
    ) -> io::Result<Bytes> {
        stream.write_all_until(frame, Some(deadline)).await?;
        stream.read_frame_until(MAX_FRAME, Some(deadline)).await
    }

    /// Sends one request frame and returns the response frame. A pooled connection that
    /// turns out dead (the master restarted) is replaced once by a fresh one.
    async fn round_trip(&self, frame: &[u8]) -> io::Result<Bytes> {
        // A request is sent at most once: calls like `put_start` must not run twice. So a
        // pooled connection the master has closed (it restarted) is weeded out *before*
        // sending, and a failure after sending is reported, never retried.
        let pooled = loop {
            let next = self.inner.idle.lock().pop();
            match next {
                Some(s) if s.is_alive() => break Some(s),
                Some(_) => {
                    tracing::debug!(addr = %self.inner.addr, "dropping a pooled master connection the master closed");
                }
                None => break None,
            }
        };
        let deadline = tokio::time::Instant::now() + self.inner.rpc_timeout;
        let stream = match pooled {
            Some(s) => s,
            None => self.open().await?,
        };
        // A connection whose answer did not come is dropped, never pooled: its late answer
        // must not be read as the next call's.
        let answer = Self::exchange(&stream, frame, deadline).await?;
        let mut idle = self.inner.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
        Ok(answer)
    }
}

/// A response body: the message, then the trailers.
struct Reply {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

impl Service<http::Request<Body>> for Tunnel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await?.to_bytes();
            let answer = match this.round_trip(&encode_request(&path, &body)).await {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(tonic::Status::deadline_exceeded(e.to_string()).into())
                }
                Err(e) => return Err(e.into()),
            };
            let (headers, trailers, data) = decode_response(answer)?;
            let body = Reply {
                data: (!data.is_empty()).then_some(data),
                trailers: (!trailers.is_empty()).then_some(trailers),
            };
            let mut resp = http::Response::new(Body::new(body));
            *resp.headers_mut() = headers;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            Ok(resp)
        })
    }
}

// ---- server ----

/// The generated gRPC server, as the tunnel drives it.
pub(crate) trait TunnelService:
    Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<T> TunnelService for T where
    T: Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// Reads a new connection's [`MAGIC`] (or [`MAGIC_AUTH`] and a token), then serves it;
/// anything else is dropped. When `token` is set, a connection without it gets one
/// `UNAUTHENTICATED` answer and is closed.
pub(crate) async fn serve_new_connection<S: TunnelService>(
    conn: Conn,
    service: S,
    token: Option<Arc<AuthToken>>,
) {
    let mut magic = [0u8; 4];
    if conn.read_exact(&mut magic).await.is_err() {
        return;
    }
    let presented = match magic {
        MAGIC => None,
        MAGIC_AUTH => {
            let mut len = [0u8; 2];
            if conn.read_exact(&mut len).await.is_err() {
                return;
            }
            let len = usize::from(u16::from_le_bytes(len));
            if len > mooncake_metadata::MAX_TOKEN_LEN {
                return;
            }
            let mut presented = vec![0u8; len];
            if conn.read_exact(&mut presented).await.is_err() {
                return;
            }
            Some(presented)
        }
        _ => return,
    };
    if AuthToken::admits(token.as_deref(), presented.as_deref()) {
        serve_connection(conn, service).await;
    } else {
        tracing::warn!(
            token_presented = presented.is_some(),
            "refused a master connection: authentication failed"
        );
        refuse_unauthenticated(&conn).await;
    }
}

/// Answers the first request of an unauthenticated connection with `UNAUTHENTICATED`
/// (so the client can say why), without looking at it, and closes the connection.
async fn refuse_unauthenticated(conn: &Conn) {
    let first = tokio::time::timeout(Duration::from_secs(5), conn.read_frame(MAX_FRAME)).await;
    if let Ok(Ok(_)) = first {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("16"));
        trailers.insert("grpc-message", HeaderValue::from_static(AUTH_FAILED));
        let _ = conn
            .write_all(&encode_response(&HeaderMap::new(), &trailers, &[]))
            .await;
    }
}

/// Serves tunnel frames from one connection (whose [`MAGIC`] was already consumed) with a
/// gRPC service, one request at a time, until the peer closes or sends garbage. The next
/// request is polled for briefly, like the client's answer (see [`crate::conn::spin_window`]).
async fn serve_connection<S: TunnelService>(stream: Conn, mut service: S) {
    loop {
        let frame = match stream.next_request(MAX_FRAME).await {
            Ok(f) => f,
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "tunnel connection closed");
                }
                return;
            }
        };
        let Ok((path, body)) = decode_request(frame) else {
            tracing::debug!("malformed tunnel request; closing the connection");
            return;
        };
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body));
        let Ok(req) = req else {
            tracing::debug!("tunnel request with an invalid path; closing the connection");
            return;
        };
        if poll_fn(|cx| service.poll_ready(cx)).await.is_err() {
            return;
        }
        let Ok(resp) = service.call(req).await;
        let (parts, body) = resp.into_parts();
        let Ok(collected) = body.collect().await else {
            tracing::debug!("the gRPC service failed to produce a body");
            return;
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let data = collected.to_bytes();
        let mut headers = HeaderMap::new();
        for (k, v) in &parts.headers {
            if k.as_str().starts_with("grpc-") {
                headers.append(k.clone(), v.clone());
            }
        }
        if stream
            .write_all(&encode_response(&headers, &trailers, &data))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

    proptest::proptest! {
        /// Frames from the network: any bytes decode to a request or an error, never a
        /// panic, and a well-formed request comes back as it was sent.
        #[test]
        fn any_frame_decodes_or_is_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode_request(Bytes::from(bytes.clone()));
            let _ = decode_response(Bytes::from(bytes));
        }

        #[test]
        fn requests_round_trip(path in ".{0,80}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let frame = encode_request(&path, &body);
            let (p, b) = decode_request(Bytes::from(frame).slice(4..)).unwrap();
            proptest::prop_assert_eq!(p, path);
            proptest::prop_assert_eq!(&b[..], &body[..]);
        }
    }

    async fn read_frame<R: AsyncRead + Unpin>(stream: &mut R) -> io::Result<Bytes> {
        let len = stream.read_u32_le().await? as usize;
        if len > MAX_FRAME {
            return Err(invalid(&format!(
                "{len} bytes is over the {MAX_FRAME} limit"
            )));
        }
        let mut buf = vec![0; len];
        stream.read_exact(&mut buf).await?;
        Ok(buf.into())
    }

    #[test]
    fn frames_round_trip() {
        let req = encode_request("/svc/Method", b"\0\0\0\0\x03abc");
        let (path, body) = decode_request(Bytes::from(req[4..].to_vec())).unwrap();
        assert_eq!(
            (path.as_str(), &body[..]),
            ("/svc/Method", &b"\0\0\0\0\x03abc"[..])
        );
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("5"));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.append("grpc-message", HeaderValue::from_static("fine"));
        let resp = encode_response(&h, &t, b"data");
        assert_eq!(
            u32::from_le_bytes(resp[..4].try_into().unwrap()) as usize,
            resp.len() - 4
        );
        let (h2, t2, d2) = decode_response(Bytes::from(resp[4..].to_vec())).unwrap();
        assert_eq!((h2, t2, &d2[..]), (h, t, &b"data"[..]));
    }

    /// A master that answers the first request, then reads the second one and dies: the
    /// client must report the failure, not send the request again (it may have run).
    #[tokio::test]
    async fn a_request_is_never_sent_twice() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut magic = [0u8; 4];
                    s.read_exact(&mut magic).await.unwrap();
                    while read_frame(&mut s).await.is_ok() {
                        if counter.fetch_add(1, Ordering::SeqCst) > 0 {
                            return; // processed, then gone without an answer
                        }
                        let reply = encode_response(&HeaderMap::new(), &HeaderMap::new(), b"ok");
                        s.write_all(&reply).await.unwrap();
                    }
                });
            }
        });
        let t = Tunnel::connect(
            &addr,
            Duration::from_secs(2),
            Duration::from_secs(5),
            false,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            &t.round_trip(&encode_request("/a", b"1")).await.unwrap()[..],
            &{
                let r = encode_response(&HeaderMap::new(), &HeaderMap::new(), b"ok");
                r[4..].to_vec()
            }[..]
        );
        assert!(t.round_trip(&encode_request("/a", b"2")).await.is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            seen.load(Ordering::SeqCst),
            2,
            "the second request was sent once"
        );
    }

    /// Answers each request after `delay`, echoing its body, in pieces (length, then the
    /// rest a moment later), so the client's reads see partial frames.
    async fn slow_echo_server(delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut magic = [0u8; 4];
                    s.read_exact(&mut magic).await.unwrap();
                    while let Ok(frame) = read_frame(&mut s).await {
                        let (_, body) = decode_request(frame).unwrap();
                        tokio::time::sleep(delay).await;
                        let reply = encode_response(&HeaderMap::new(), &HeaderMap::new(), &body);
                        s.write_all(&reply[..2]).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        s.write_all(&reply[2..]).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    /// Answers that come after the polling window, in pieces, and callers that wait at
    /// the same time (only one of them polls; the others sleep on the reactor) all get
    /// their own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_and_concurrent_answers_arrive_whole() {
        let addr = slow_echo_server(crate::conn::spin_window() + Duration::from_millis(5)).await;
        let t = Tunnel::connect(
            &addr,
            Duration::from_secs(2),
            Duration::from_secs(5),
            false,
            None,
        )
        .await
        .unwrap();
        let calls = (0..6u8).map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                let body = vec![i; 1000 + i as usize];
                let answer = t.round_trip(&encode_request("/a", &body)).await.unwrap();
                let (_, _, data) = decode_response(answer).unwrap();
                assert_eq!(&data[..], &body[..], "caller {i}");
            })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.unwrap();
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let resp = encode_response(&HeaderMap::new(), &HeaderMap::new(), b"x");
        for cut in 0..resp.len() - 5 {
            let _ = decode_response(Bytes::from(resp[4..4 + cut].to_vec()));
        }
        assert!(decode_request(Bytes::from_static(b"\x01")).is_err());
        assert!(decode_request(Bytes::from_static(b"\xff\x00ab")).is_err());
        let mut bad = encode_response(&HeaderMap::new(), &HeaderMap::new(), b"");
        bad[4] = 9; // claims 9 headers that are not there
        assert!(decode_response(Bytes::from(bad[4..].to_vec())).is_err());
    }
}
