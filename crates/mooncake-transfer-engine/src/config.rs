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

/// Process-wide settings of the data path, shared by every connection of the process (the
/// engine's, and the master and store-service connections built on [`crate::conn`]), so
/// they are not per [`EngineConfig`]. The edge (the binaries, the Python package) reads
/// them once with [`Tunables::from_env`] and installs them with [`Tunables::install`]; a
/// process that installs nothing runs with [`Tunables::default`]. This module is the only
/// place in the crate that reads the environment (a tidy test holds it to that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// How long a caller polls its connection for the answer (and a server a connection
    /// for its next request) before sleeping until the reactor wakes it (`MC_RPC_SPIN_US`).
    /// Default 150 µs; zero turns polling off. See [`crate::conn::spin_window`].
    pub rpc_spin: Duration,
    /// Ask the kernel for transparent huge pages on large new read buffers
    /// (`MC_HUGE_PAGE_READS`, `0` turns it off). Default true.
    pub huge_page_reads: bool,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            rpc_spin: Duration::from_micros(DEFAULT_SPIN_US),
            huge_page_reads: true,
        }
    }
}

const DEFAULT_SPIN_US: u64 = 150;

static TUNABLES: std::sync::OnceLock<Tunables> = std::sync::OnceLock::new();

impl Tunables {
    /// The defaults with `MC_RPC_SPIN_US` and `MC_HUGE_PAGE_READS` applied; a spin value
    /// that is not a number of microseconds is reported (as a warning naming it) and the
    /// default used.
    pub fn from_env() -> Self {
        Self::from_values(
            std::env::var("MC_RPC_SPIN_US").ok().as_deref(),
            std::env::var("MC_HUGE_PAGE_READS").ok().as_deref(),
        )
    }

    fn from_values(spin_us: Option<&str>, huge_page_reads: Option<&str>) -> Self {
        Self {
            rpc_spin: Duration::from_micros(parse_spin(spin_us)),
            huge_page_reads: huge_page_reads.is_none_or(|v| v.trim() != "0"),
        }
    }

    /// Makes these the process's tunables. The first install (or first use) wins: returns
    /// false, changing nothing, once they are set.
    pub fn install(self) -> bool {
        TUNABLES.set(self).is_ok()
    }

    /// The process's tunables: the installed ones, else the defaults (fixed from then on).
    pub fn current() -> &'static Tunables {
        TUNABLES.get_or_init(Tunables::default)
    }
}

/// `MC_RPC_SPIN_US` in microseconds: the default when unset; a value that is not a number
/// is reported (as a warning naming it) and the default used.
fn parse_spin(value: Option<&str>) -> u64 {
    let Some(v) = value else {
        return DEFAULT_SPIN_US;
    };
    v.trim().parse().unwrap_or_else(|_| {
        tracing::warn!(
            value = v,
            "MC_RPC_SPIN_US is not a number of microseconds; using {DEFAULT_SPIN_US}"
        );
        DEFAULT_SPIN_US
    })
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
    use super::{host_part, parse_spin, Tunables};

    #[test]
    fn tunables_from_the_environment_values() {
        assert_eq!(parse_spin(None), 150);
        assert_eq!(parse_spin(Some(" 40 ")), 40);
        assert_eq!(parse_spin(Some("0")), 0);
        assert_eq!(parse_spin(Some("fast")), 150);
        assert_eq!(parse_spin(Some("-3")), 150);
        assert_eq!(Tunables::from_values(None, None), Tunables::default());
        let t = Tunables::from_values(Some("0"), Some(" 0"));
        assert!(t.rpc_spin.is_zero() && !t.huge_page_reads);
        assert!(Tunables::from_values(None, Some("1")).huge_page_reads);
    }

    #[test]
    fn host_part_of_segment_names() {
        assert_eq!(host_part("127.0.0.1:17101"), "127.0.0.1");
        assert_eq!(host_part("[::1]:17101"), "::1");
        assert_eq!(host_part("node01"), "node01");
        assert_eq!(host_part("::1"), "::1");
    }
}
