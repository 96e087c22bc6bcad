//! Environment variables of the C++ engine, read in one place at the edge.

use mooncake_metadata::keys::KeySpace;
use mooncake_transfer_engine::codec::ProtoVersion;
use mooncake_transfer_engine::EngineConfig;

/// An [`EngineConfig`] for `local_server_name`, with Mooncake's environment applied:
/// `MC_TCP_BIND_ADDRESS` (advertised and bound host), `MC_METADATA_CLUSTER_ID` (key
/// prefix) and `MC_TCP_PROTO=1` (speak v1 framing as initiator).
pub fn engine_config(local_server_name: &str) -> EngineConfig {
    let mut config = EngineConfig::new(local_server_name);
    if let Some(host) = var("MC_TCP_BIND_ADDRESS") {
        config.advertise_host = Some(host);
    }
    if let Some(id) = var("MC_METADATA_CLUSTER_ID") {
        config.key_space = KeySpace::with_cluster_id(&id);
    }
    if var("MC_TCP_PROTO").as_deref() == Some("1") {
        config.max_proto_version = ProtoVersion::V1;
    }
    config
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
