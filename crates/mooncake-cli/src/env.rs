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

/// Free heap bytes the Python package lets glibc keep by default (`MC_MALLOC_RETAIN`): a
/// `get_batch` of 32 values of 16 MiB.
pub const DEFAULT_MALLOC_RETAIN: u64 = 1 << 30;

/// How much freed heap the Python package and `store_bench` ask glibc to keep
/// ([`crate::retain_freed_memory`]; `MC_MALLOC_RETAIN`, default
/// [`DEFAULT_MALLOC_RETAIN`]): `Ok(None)` to leave the allocator alone (`0`, or the
/// process set glibc's own `MALLOC_TRIM_THRESHOLD_` or `MALLOC_MMAP_THRESHOLD_`), an error
/// naming the variable for a value that is no size.
pub fn malloc_retain() -> Result<Option<u64>, String> {
    let tuned = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    malloc_retain_from(setting("MC_MALLOC_RETAIN").as_deref(), tuned)
}

fn malloc_retain_from(value: Option<&str>, glibc_tuned: bool) -> Result<Option<u64>, String> {
    if glibc_tuned {
        return Ok(None);
    }
    let bytes = match value.map(str::trim) {
        None | Some("") => DEFAULT_MALLOC_RETAIN,
        Some(v) => {
            mooncake_store::parse_size(v).map_err(|e| format!("MC_MALLOC_RETAIN={v:?}: {e}"))?
        }
    };
    Ok((bytes > 0).then_some(bytes))
}

/// The environment variable `name`, if set and not empty.
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_retain_defaults_to_a_gigabyte_and_can_be_sized_or_turned_off() {
        assert_eq!(malloc_retain_from(None, false), Ok(Some(1 << 30)));
        assert_eq!(
            malloc_retain_from(Some("512MB"), false),
            Ok(Some(512 << 20))
        );
        assert_eq!(malloc_retain_from(Some("0"), false), Ok(None));
        assert_eq!(
            malloc_retain_from(None, true),
            Ok(None),
            "glibc's own variables win"
        );
        let err = malloc_retain_from(Some("lots"), false).unwrap_err();
        assert!(
            err.contains("MC_MALLOC_RETAIN") && err.contains("lots"),
            "{err}"
        );
    }

    #[test]
    fn timeouts_are_positive_whole_seconds() {
        assert_eq!(positive_seconds("7"), Some(Duration::from_secs(7)));
        assert_eq!(positive_seconds(" 2 "), Some(Duration::from_secs(2)));
        for bad in ["0", "-1", "1.5", "5s", ""] {
            assert_eq!(positive_seconds(bad), None, "{bad:?}");
        }
    }
}
