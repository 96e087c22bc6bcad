use std::time::Duration;

use mooncake_metadata::keys::KeySpace;
use mooncake_metadata::AuthToken;

use crate::codec::ProtoVersion;

/// Settings of a [`crate::TransferEngine`]. Defaults follow the C++ engine where it has one.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The segment name (`local_server_name`), unique in the cluster, e.g. `127.0.0.1:17101`.
    pub local_server_name: String,
    /// Host or IP that peers use to reach this engine (the C++ engine's
    /// `MC_TCP_BIND_ADDRESS`). Default: the host part of `local_server_name`.
    pub advertise_host: Option<String>,
    /// Address the data and handshake listeners bind. Default: `advertise_host`.
    /// Unlike the C++ engine, which binds every interface, we bind exactly this address.
    pub bind_host: Option<String>,
    /// Metadata key namespace (`MC_METADATA_CLUSTER_ID`).
    pub key_space: KeySpace,
    /// How often the descriptor is checked and re-published if it went missing (e.g. the
    /// metadata server restarted empty). Default 5 s.
    pub republish_interval: Duration,
    /// Time to establish a data connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time to connect to a peer's handshake (RPC) port for a probe or a notification
    /// (`MC_HANDSHAKE_CONNECT_TIMEOUT`). Default 5 s.
    pub handshake_connect_timeout: Duration,
    /// Time to send a handshake request and read its reply once connected. Default 60 s,
    /// the C++ client's receive timeout.
    pub handshake_reply_timeout: Duration,
    /// Time for a status frame or payload progress (`MC_TCP_STATUS_TIMEOUT_SEC`). Default 30 s.
    pub io_timeout: Duration,
    /// Pipelined data connections ("lanes") per peer. Default 4, as the C++ engine; on
    /// 2 cores, 2-4 lanes measured best (8 was 10-20% slower).
    pub max_connections_per_peer: usize,
    /// Requests longer than this are split into slices of this size and spread over the
    /// pooled connections. Default 4 MiB.
    pub slice_size: u64,
    /// Highest framing used as initiator; `V1` mirrors `MC_TCP_PROTO=1`. Default `V2`.
    pub max_proto_version: ProtoVersion,
    /// Concurrent inbound data connections served. Default 1024.
    pub max_inbound_connections: usize,
    /// Copy through the shared memory of same-host peers that publish it (same kernel boot
    /// id) instead of using TCP. Default true.
    pub shared_memory: bool,
    /// The cluster's token: every inbound data connection must present it first, and
    /// every outbound one presents it. C++ engines cannot, so set it only in clusters of
    /// our engines. Default none.
    pub auth_token: Option<AuthToken>,
    /// Longest wait of [`crate::TransferEngine::unregister`] for the transfers still using
    /// caller-owned memory. Default 60 s (twice `io_timeout`: every transfer ends by then).
    pub unregister_timeout: Duration,
    /// Cut large READs from peers on loopback addresses into stripes on several
    /// connections, as READs from other hosts are. Default false: on one machine the peer's
    /// sending tasks and the reader share the cores, and one connection measured faster.
    pub striped_loopback_reads: bool,
}

impl EngineConfig {
    /// Defaults for a segment name.
    pub fn new(local_server_name: impl Into<String>) -> Self {
        Self {
            local_server_name: local_server_name.into(),
            advertise_host: None,
            bind_host: None,
            key_space: KeySpace::default(),
            republish_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            handshake_connect_timeout: Duration::from_secs(5),
            handshake_reply_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
            max_connections_per_peer: 4,
            slice_size: 4 << 20,
            max_proto_version: ProtoVersion::V2,
            max_inbound_connections: 1024,
            shared_memory: true,
            auth_token: None,
            unregister_timeout: Duration::from_secs(60),
            striped_loopback_reads: false,
        }
    }

    /// The host peers should use: `advertise_host`, else the host part of the name.
    pub fn advertised_host(&self) -> String {
        if let Some(h) = &self.advertise_host {
            return h.clone();
        }
        host_part(&self.local_server_name).to_owned()
    }
}

/// `"127.0.0.1:17101"` -> `"127.0.0.1"`, `"[::1]:5"` -> `"::1"`, `"node01"` -> `"node01"`.
pub(crate) fn host_part(name: &str) -> &str {
    if let Some(rest) = name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match name.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::host_part;

    #[test]
    fn host_part_of_segment_names() {
        assert_eq!(host_part("127.0.0.1:17101"), "127.0.0.1");
        assert_eq!(host_part("[::1]:17101"), "::1");
        assert_eq!(host_part("node01"), "node01");
        assert_eq!(host_part("::1"), "::1");
    }
}
