//! Environment variables of the C++ engine, read in one place at the edge.

use std::time::Duration;

use mooncake_metadata::keys::KeySpace;
use mooncake_transfer_engine::codec::ProtoVersion;
use mooncake_transfer_engine::EngineConfig;

/// An [`EngineConfig`] for `local_server_name`, with Mooncake's environment applied:
/// `MC_TCP_BIND_ADDRESS` (advertised and bound host), `MC_METADATA_CLUSTER_ID` (key
/// prefix), `MC_TCP_PROTO=1` (speak v1 framing as initiator) and
/// `MC_HANDSHAKE_CONNECT_TIMEOUT` (seconds to connect to a peer's handshake port).
pub fn engine_config(local_server_name: &str) -> EngineConfig {
    let mut config = EngineConfig::new(local_server_name);
    if let Some(host) = setting("MC_TCP_BIND_ADDRESS") {
        config.advertise_host = Some(host);
    }
    if let Some(id) = setting("MC_METADATA_CLUSTER_ID") {
        config.key_space = KeySpace::with_cluster_id(&id);
    }
    config.auth_token = mooncake_metadata::AuthToken::from_env();
    if setting("MC_TCP_PROTO").as_deref() == Some("1") {
        config.max_proto_version = ProtoVersion::V1;
    }
    if let Some(value) = setting("MC_HANDSHAKE_CONNECT_TIMEOUT") {
        match positive_seconds(&value) {
            Some(timeout) => config.handshake_connect_timeout = timeout,
            None => tracing::warn!(
                %value,
                "MC_HANDSHAKE_CONNECT_TIMEOUT is not a positive number of seconds; using {:?}",
                config.handshake_connect_timeout
            ),
        }
    }
    config
}

/// A positive whole number of seconds, as the C++ engine reads its timeouts.
fn positive_seconds(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<u64>().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The HA cluster id a client follows (`MC_STORE_CLUSTER_ID`, default `mooncake_cluster`).
pub fn store_cluster_id() -> String {
    setting("MC_STORE_CLUSTER_ID")
        .unwrap_or_else(|| mooncake_store::grpc::DEFAULT_CLUSTER_ID.to_owned())
}

/// Mooncake's SSD-offload settings: `MOONCAKE_OFFLOAD_FILE_STORAGE_PATH` and
/// `MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES` (read when `--enable_offload` is given).
pub fn offload_settings() -> (Option<String>, Option<String>) {
    (
        setting("MOONCAKE_OFFLOAD_FILE_STORAGE_PATH"),
        setting("MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES"),
    )
}

/// The environment variable `name`, if set and not empty.
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_whole_seconds() {
        assert_eq!(positive_seconds("7"), Some(Duration::from_secs(7)));
        assert_eq!(positive_seconds(" 2 "), Some(Duration::from_secs(2)));
        for bad in ["0", "-1", "1.5", "5s", ""] {
            assert_eq!(positive_seconds(bad), None, "{bad:?}");
        }
    }
}
