//! Calls to a peer's handshake (RPC) port by segment name, as the C++ engine's
//! `TransferMetadata::sendProbe` and `sendNotify` make them: first where the port is (a
//! `P2PHANDSHAKE` name carries it; central metadata publishes it under
//! `rpc_meta/<name>`), then one exchange on it: the liveness probe
//! ([`TransferEngine::send_probe`]) or a notification ([`TransferEngine::send_notify`]).
//!
//! [`PeerRpcError::code`] maps each failure to the C++ engine's code (`include/error.h`).

use std::collections::HashMap;
use std::net::SocketAddr;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::descriptor::RpcMeta;
use crate::handshake::{self, CallTimeouts, FrameType, HandshakeError, Notification};
use crate::TransferEngine;

/// Handshake port of a `P2PHANDSHAKE` name that has none (the C++ default, 12001).
pub const DEFAULT_HANDSHAKE_PORT: u16 = 12001;

/// Peers [`PeerDirectory`] remembers; when full it starts again empty, so names a
/// program invents cannot grow it without bound.
const MAX_KNOWN_PEERS: usize = 4096;

/// Errors of a call to a peer's handshake port.
#[derive(Debug, thiserror::Error)]
pub enum PeerRpcError {
    /// Central metadata has no usable `rpc_meta` entry for the peer (it is missing or
    /// malformed, or the metadata service failed); nothing was sent to the peer.
    #[error("no handshake address for peer {peer:?}: {reason}")]
    Metadata {
        /// The peer's segment name.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer's host does not resolve to an address.
    #[error("cannot resolve the peer's host {host:?}: {reason}")]
    Dns {
        /// The host that was looked up.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// Connecting failed or timed out, the exchange failed or timed out, or the reply
    /// frame had another type.
    #[error("handshake with {addr} failed: {source}")]
    Socket {
        /// The address tried last.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: HandshakeError,
    },
    /// The peer's reply is not JSON.
    #[error("peer {addr} sent a reply that is not json: {reason}")]
    MalformedReply {
        /// The peer's address.
        addr: SocketAddr,
        /// The parser's complaint.
        reason: String,
    },
    /// The peer answered a notification without acknowledging it (empty `notify_msg`).
    #[error("peer {addr} did not acknowledge the notification: {reply}")]
    Rejected {
        /// The peer's address.
        addr: SocketAddr,
        /// The reply.
        reply: String,
    },
}

impl PeerRpcError {
    /// The C++ engine's code for this failure, as `send_probe` returns it: `-200`
    /// (`ERR_METADATA`), `-101` (`ERR_DNS`), `-102` (`ERR_SOCKET`) or `-103`
    /// (`ERR_MALFORMED_JSON`).
    pub fn code(&self) -> i32 {
        match self {
            Self::Metadata { .. } | Self::Rejected { .. } => -200,
            Self::Dns { .. } => -101,
            Self::Socket { .. } => -102,
            Self::MalformedReply { .. } => -103,
        }
    }
}

/// Where a peer's handshake daemon listens, before the host is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeAddr {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// The handshake port.
    pub port: u16,
}

impl HandshakeAddr {
    /// Parses `host[:port]` (or `[v6]:port`) as the C++ `parseHostNameWithPort`: a
    /// missing, unparsable or zero port is [`DEFAULT_HANDSHAKE_PORT`]. A bare IPv6
    /// address is all host.
    pub fn parse(name: &str) -> Self {
        let (host, port) = match name.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => match name.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                _ => (name, None),
            },
        };
        let port = match port.map(str::parse::<u16>) {
            None => DEFAULT_HANDSHAKE_PORT,
            Some(Ok(p)) if p > 0 => p,
            Some(_) => {
                tracing::warn!(
                    name,
                    "illegal port number; using the default handshake port {DEFAULT_HANDSHAKE_PORT}"
                );
                DEFAULT_HANDSHAKE_PORT
            }
        };
        Self {
            host: host.to_owned(),
            port,
        }
    }
}

/// Handshake addresses of peers by name, remembered after the first successful lookup
/// (the C++ engine's `rpc_meta_map_`): a peer that restarts on another port under the
/// same name is still looked for at the old one.
#[derive(Debug, Default)]
pub(crate) struct PeerDirectory {
    known: Mutex<HashMap<String, HandshakeAddr>>,
}

impl PeerDirectory {
    fn get(&self, peer: &str) -> Option<HandshakeAddr> {
        self.known.lock().get(peer).cloned()
    }

    fn remember(&self, peer: &str, addr: HandshakeAddr) {
        let mut known = self.known.lock();
        if known.len() >= MAX_KNOWN_PEERS {
            known.clear();
        }
        known.insert(peer.to_owned(), addr);
    }
}

impl TransferEngine {
    /// Probes the handshake daemon of `peer` (a segment name): sends a Probe frame with
    /// `{}` and succeeds on any JSON reply, as the C++ engine's `sendProbe`. Connecting is
    /// bounded by [`crate::EngineConfig::handshake_connect_timeout`], the exchange by
    /// [`crate::EngineConfig::handshake_reply_timeout`]; each address of the host is tried
    /// in turn (IPv4 first).
    pub async fn send_probe(&self, peer: &str) -> Result<(), PeerRpcError> {
        self.call_peer(peer, FrameType::Probe, b"{}")
            .await
            .map(drop)
    }

    /// Sends `notification` to the handshake daemon of `peer`, which queues it for its
    /// [`TransferEngine::drain_notifications`]. The reply must acknowledge it with a
    /// non-empty `notify_msg`.
    pub async fn send_notify(
        &self,
        peer: &str,
        notification: &Notification,
    ) -> Result<(), PeerRpcError> {
        let body = json!({"name": notification.name, "notify_msg": notification.msg});
        let body = body.to_string();
        let (addr, reply) = self
            .call_peer(peer, FrameType::Notify, body.as_bytes())
            .await?;
        match reply.get("notify_msg").and_then(Value::as_str) {
            Some(ack) if !ack.is_empty() => Ok(()),
            _ => Err(PeerRpcError::Rejected {
                addr,
                reply: reply.to_string(),
            }),
        }
    }

    /// Where the handshake daemon of `peer` listens. In `P2PHANDSHAKE` mode the name says
    /// it ([`HandshakeAddr::parse`]); otherwise it is read from `rpc_meta/<peer>`. The
    /// answer is remembered per name once found.
    pub async fn handshake_addr(&self, peer: &str) -> Result<HandshakeAddr, PeerRpcError> {
        if let Some(known) = self.peers().get(peer) {
            return Ok(known);
        }
        let found = if self.is_p2p() {
            HandshakeAddr::parse(peer)
        } else {
            self.published_handshake_addr(peer).await?
        };
        self.peers().remember(peer, found.clone());
        Ok(found)
    }

    async fn published_handshake_addr(&self, peer: &str) -> Result<HandshakeAddr, PeerRpcError> {
        let key = self.config().key_space.rpc_meta(peer);
        let missing = |reason: String| PeerRpcError::Metadata {
            peer: peer.to_owned(),
            reason,
        };
        let bytes = self
            .metadata()
            .get(&key)
            .await
            .map_err(|e| missing(e.to_string()))?
            .ok_or_else(|| missing(format!("{key} is not published")))?;
        let meta = RpcMeta::from_json(peer, &bytes).map_err(|e| missing(e.to_string()))?;
        Ok(HandshakeAddr {
            host: meta.ip_or_host_name,
            port: meta.rpc_port,
        })
    }

    /// One exchange with `peer`'s handshake daemon; the address that answered and the
    /// reply. Addresses are tried in turn until one answers; a reply that is not JSON
    /// ends the attempt at once, as in the C++ client.
    async fn call_peer(
        &self,
        peer: &str,
        ty: FrameType,
        body: &[u8],
    ) -> Result<(SocketAddr, Value), PeerRpcError> {
        let target = self.handshake_addr(peer).await?;
        let timeouts = CallTimeouts {
            connect: self.config().handshake_connect_timeout,
            reply: self.config().handshake_reply_timeout,
        };
        let mut last = None;
        for addr in resolve(&target).await? {
            match handshake::exchange(addr, ty, body, timeouts).await {
                Ok(reply) => return Ok((addr, reply)),
                Err(HandshakeError::MalformedJson(reason)) => {
                    return Err(PeerRpcError::MalformedReply { addr, reason })
                }
                Err(source) => last = Some(PeerRpcError::Socket { addr, source }),
            }
        }
        Err(last.unwrap_or_else(|| no_address(&target)))
    }
}

fn no_address(target: &HandshakeAddr) -> PeerRpcError {
    PeerRpcError::Dns {
        host: target.host.clone(),
        reason: "it has no address".into(),
    }
}

/// The addresses of `target`, IPv4 first (the C++ client resolves IPv4 only, unless
/// `MC_USE_IPV6`); never empty.
async fn resolve(target: &HandshakeAddr) -> Result<Vec<SocketAddr>, PeerRpcError> {
    if target.host.is_empty() {
        return Err(PeerRpcError::Dns {
            host: String::new(),
            reason: "the host is empty".into(),
        });
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| PeerRpcError::Dns {
            host: target.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    if addrs.is_empty() {
        return Err(no_address(target));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use mooncake_metadata::{MemoryStore, MetadataStore};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::handshake::{encode_frame, read_frame, DEFAULT_MAX_FRAME};
    use crate::EngineConfig;

    fn addr(host: &str, port: u16) -> HandshakeAddr {
        HandshakeAddr {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn names_carry_host_and_port() {
        let d = DEFAULT_HANDSHAKE_PORT;
        assert_eq!(
            HandshakeAddr::parse("127.0.0.1:15001"),
            addr("127.0.0.1", 15001)
        );
        assert_eq!(HandshakeAddr::parse("127.0.0.1"), addr("127.0.0.1", d));
        assert_eq!(HandshakeAddr::parse("node01:abc"), addr("node01", d));
        assert_eq!(HandshakeAddr::parse("node01:0"), addr("node01", d));
        assert_eq!(HandshakeAddr::parse("node01:70000"), addr("node01", d));
        assert_eq!(HandshakeAddr::parse("[::1]:7"), addr("::1", 7));
        assert_eq!(HandshakeAddr::parse("[::1]"), addr("::1", d));
        assert_eq!(HandshakeAddr::parse("::1"), addr("::1", d));
        assert_eq!(HandshakeAddr::parse(""), addr("", d));
    }

    #[test]
    fn codes_are_the_cpp_engines() {
        let sock: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let metadata = PeerRpcError::Metadata {
            peer: "p".into(),
            reason: String::new(),
        };
        let dns = PeerRpcError::Dns {
            host: "h".into(),
            reason: String::new(),
        };
        let socket = PeerRpcError::Socket {
            addr: sock,
            source: HandshakeError::EmptyFrame,
        };
        let malformed = PeerRpcError::MalformedReply {
            addr: sock,
            reason: String::new(),
        };
        let codes = [metadata, dns, socket, malformed].map(|e| e.code());
        assert_eq!(codes, [-200, -101, -102, -103]);
    }

    async fn engine(meta: &Arc<MemoryStore>, reply_timeout: Duration) -> TransferEngine {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = EngineConfig::new(format!("127.0.0.1:{port}"));
        config.handshake_reply_timeout = reply_timeout;
        TransferEngine::start(config, meta.clone()).await.unwrap()
    }

    async fn publish(meta: &MemoryStore, name: &str, host: &str, port: u16) {
        let value = RpcMeta {
            ip_or_host_name: host.into(),
            rpc_port: port,
        };
        let key = mooncake_metadata::keys::KeySpace::default().rpc_meta(name);
        meta.put(&key, Bytes::from(value.to_json())).await.unwrap();
    }

    async fn refused_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    /// A handshake port that answers one request with `reply` (raw bytes), or with
    /// nothing when `reply` is `None`.
    async fn fake_peer(reply: Option<Vec<u8>>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = read_frame(&mut s, DEFAULT_MAX_FRAME).await;
            match reply {
                Some(bytes) => s.write_all(&bytes).await.unwrap(),
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
        });
        port
    }

    fn code(r: Result<(), PeerRpcError>) -> i32 {
        r.map_or_else(|e| e.code(), |()| 0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_through_central_metadata() {
        let meta = Arc::new(MemoryStore::new());
        let a = engine(&meta, Duration::from_secs(60)).await;
        let b = engine(&meta, Duration::from_secs(60)).await;
        assert_eq!(code(a.send_probe(b.segment_name()).await), 0);
        assert_eq!(code(a.send_probe(a.segment_name()).await), 0);
        // A name without rpc_meta is -200, and is not remembered as missing.
        assert_eq!(code(a.send_probe("late").await), -200);
        assert_eq!(code(a.send_probe("").await), -200);
        publish(&meta, "late", "127.0.0.1", b.rpc_port()).await;
        assert_eq!(code(a.send_probe("late").await), 0);
        // Once found, the address is remembered: b's entry going away changes nothing.
        let key = mooncake_metadata::keys::KeySpace::default().rpc_meta(b.segment_name());
        meta.delete(&key).await.unwrap();
        assert_eq!(code(a.send_probe(b.segment_name()).await), 0);
        let remembered = a.handshake_addr(b.segment_name()).await.unwrap();
        assert_eq!(remembered, addr("127.0.0.1", b.rpc_port()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_failure_has_its_code() {
        let meta = Arc::new(MemoryStore::new());
        let a = engine(&meta, Duration::from_millis(300)).await;
        publish(&meta, "refused", "127.0.0.1", refused_port().await).await;
        publish(&meta, "nowhere", "nonexistent.invalid", 15001).await;
        let garbage = encode_frame(FrameType::Probe, b"not json");
        publish(
            &meta,
            "garbage",
            "127.0.0.1",
            fake_peer(Some(garbage)).await,
        )
        .await;
        let other_type = encode_frame(FrameType::Notify, b"{}\n");
        publish(
            &meta,
            "other-type",
            "127.0.0.1",
            fake_peer(Some(other_type)).await,
        )
        .await;
        publish(&meta, "silent", "127.0.0.1", fake_peer(None).await).await;
        meta.put("mooncake/rpc_meta/bad-entry", Bytes::from_static(b"[1]"))
            .await
            .unwrap();
        assert_eq!(code(a.send_probe("refused").await), -102);
        assert_eq!(code(a.send_probe("nowhere").await), -101);
        assert_eq!(code(a.send_probe("garbage").await), -103);
        assert_eq!(code(a.send_probe("other-type").await), -102);
        let started = Instant::now();
        assert_eq!(code(a.send_probe("silent").await), -102);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the reply deadline held"
        );
        assert_eq!(code(a.send_probe("bad-entry").await), -200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn p2p_names_carry_the_port() {
        let a = TransferEngine::start_p2p(EngineConfig::new("127.0.0.1"))
            .await
            .unwrap();
        assert!(a.is_p2p());
        assert_eq!(code(a.send_probe(a.segment_name()).await), 0);
        let refused = format!("127.0.0.1:{}", refused_port().await);
        assert_eq!(code(a.send_probe(&refused).await), -102);
        assert_eq!(code(a.send_probe("nonexistent.invalid:1").await), -101);
        // Nothing is looked up in metadata: an unpublished name is just host:port.
        let default_port = a.handshake_addr("127.0.0.1").await.unwrap();
        assert_eq!(default_port, addr("127.0.0.1", DEFAULT_HANDSHAKE_PORT));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notifications_reach_the_peer() {
        let meta = Arc::new(MemoryStore::new());
        let a = engine(&meta, Duration::from_secs(60)).await;
        let b = engine(&meta, Duration::from_secs(60)).await;
        let n = Notification {
            name: "prefill-0".into(),
            msg: "kv ready".into(),
        };
        a.send_notify(b.segment_name(), &n).await.unwrap();
        assert_eq!(b.drain_notifications(), std::slice::from_ref(&n));
        assert!(a.drain_notifications().is_empty());
        let err = a.send_notify("unknown", &n).await.unwrap_err();
        assert_eq!(err.code(), -200);
        let unacknowledged = encode_frame(FrameType::Notify, b"{\"notify_msg\":\"\"}\n");
        publish(
            &meta,
            "mute",
            "127.0.0.1",
            fake_peer(Some(unacknowledged)).await,
        )
        .await;
        let err = a.send_notify("mute", &n).await.unwrap_err();
        assert!(matches!(err, PeerRpcError::Rejected { .. }), "{err}");
    }
}
