//! The arguments of `setup` (positional, or one config dict), `init_all` and
//! `setup_dummy`, turned into a [`ClientConfig`] or the code the call returns.

use mooncake_store::standalone::StandaloneError;
use mooncake_store::{ClientConfig, ErrorCode, SetupError};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::codes::INVALID;

/// The positional form of `setup` after `local_hostname`; every argument is required.
pub(super) struct Positional<'py> {
    pub(super) metadata_server: Option<Bound<'py, PyAny>>,
    pub(super) global_segment_size: Option<Bound<'py, PyAny>>,
    pub(super) local_buffer_size: Option<Bound<'py, PyAny>>,
    pub(super) protocol: Option<Bound<'py, PyAny>>,
    pub(super) rdma_devices: Option<Bound<'py, PyAny>>,
    pub(super) master_server_addr: Option<Bound<'py, PyAny>>,
}

impl Positional<'_> {
    /// The client config, or `TypeError` naming a missing or mistyped argument.
    pub(super) fn config(self, local_hostname: &Bound<'_, PyAny>) -> PyResult<ClientConfig> {
        Ok(ClientConfig {
            local_hostname: local_hostname
                .extract()
                .map_err(|_| PyTypeError::new_err("setup(): 'local_hostname' must be a str"))?,
            metadata_server: required(self.metadata_server, "metadata_server")?,
            global_segment_size: required(self.global_segment_size, "global_segment_size")?,
            local_buffer_size: required(self.local_buffer_size, "local_buffer_size")?,
            protocol: required(self.protocol, "protocol")?,
            device_name: required(self.rdma_devices, "rdma_devices")?,
            master_server_addr: required(self.master_server_addr, "master_server_addr")?,
            auth_token: mooncake_metadata::AuthToken::from_env(),
            cluster_id: mooncake_cli::env::store_cluster_id(),
            ..ClientConfig::default()
        })
    }
}

/// Required argument of the positional `setup` form.
fn required<'py, T: for<'a> FromPyObject<'a, 'py>>(
    v: Option<Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<T> {
    let v = v.ok_or_else(|| {
        PyTypeError::new_err(format!("setup(): missing required argument '{name}'"))
    })?;
    v.extract()
        .map_err(|_| PyTypeError::new_err(format!("setup(): '{name}' has the wrong type")))
}

fn dict_str(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<String>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.str()?.to_string())),
        _ => Ok(None),
    }
}

/// The client config of `setup(config: dict)`, or the code to return.
pub(super) fn config_from_dict(d: &Bound<'_, PyDict>) -> PyResult<Result<ClientConfig, i32>> {
    let (Some(local_hostname), Some(metadata_server)) = (
        dict_str(d, "local_hostname")?,
        dict_str(d, "metadata_server")?,
    ) else {
        tracing::error!("setup(config): 'local_hostname' and 'metadata_server' are required");
        return Ok(Err(INVALID));
    };
    let size = |key: &str, default: u64| -> PyResult<Result<u64, i32>> {
        Ok(match dict_str(d, key)? {
            None => Ok(default),
            Some(s) => mooncake_store::parse_size(&s).map_err(|e| {
                tracing::error!("setup(config): {key}: {e}");
                INVALID
            }),
        })
    };
    let global = match size("global_segment_size", 16 << 20)? {
        Ok(v) => v,
        Err(c) => return Ok(Err(c)),
    };
    let local = match size("local_buffer_size", 16 << 20)? {
        Ok(v) => v,
        Err(c) => return Ok(Err(c)),
    };
    // `auth_token` (this build's addition): the cluster's token; MOONCAKE_AUTH_TOKEN
    // otherwise.
    let auth_token = match dict_str(d, "auth_token")? {
        None => mooncake_metadata::AuthToken::from_env(),
        Some(t) => match mooncake_metadata::AuthToken::new(&t) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("setup(config): {e}");
                return Ok(Err(INVALID));
            }
        },
    };
    let offload = dict_str(d, "enable_ssd_offload")?.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on" | "enable"
        )
    });
    let path = dict_str(d, "ssd_offload_path")?.unwrap_or_default();
    let disk = match ssd_offload(offload, &path) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("setup(config): {e}");
            return Ok(Err(INVALID));
        }
    };
    if global != 0 && global < 1024 {
        tracing::error!("setup(config): global_segment_size must be 0 or at least 1 KiB");
        return Ok(Err(INVALID));
    }
    if local != 0 && !(1024..=1 << 40).contains(&local) {
        tracing::error!("setup(config): local_buffer_size must be 0 or between 1 KiB and 1 TiB");
        return Ok(Err(INVALID));
    }
    Ok(Ok(ClientConfig {
        local_hostname,
        metadata_server,
        global_segment_size: global,
        local_buffer_size: local,
        protocol: dict_str(d, "protocol")?.unwrap_or_else(|| "tcp".into()),
        device_name: dict_str(d, "rdma_devices")?.unwrap_or_default(),
        master_server_addr: dict_str(d, "master_server_addr")?
            .or(dict_str(d, "master_server_address")?)
            .unwrap_or_else(|| "127.0.0.1:50051".into()),
        auth_token,
        cluster_id: mooncake_cli::env::store_cluster_id(),
        verify_checksums: match dict_str(d, "verify_checksums")? {
            None => false,
            Some(v) => matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"),
        },
        disk,
        ..ClientConfig::default()
    }))
}

/// The disk tier of `enable_ssd_offload=True` (Mooncake's SSD offload): at
/// `ssd_offload_path`, else `MOONCAKE_OFFLOAD_FILE_STORAGE_PATH`, of
/// `MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES` bytes (default 80% of the free space).
/// `Err` names what is wrong (setup then returns -600).
pub(super) fn ssd_offload(
    enabled: bool,
    path: &str,
) -> Result<Option<mooncake_store::DiskConfig>, String> {
    if !enabled {
        return Ok(None);
    }
    let flags = mooncake_cli::store_service::DiskFlags {
        path: (!path.is_empty()).then(|| path.into()),
        capacity: None,
        io_threads: 8,
        fsync: false,
        enable_offload: true,
    };
    mooncake_cli::store_service::disk_config(flags, mooncake_cli::env::offload_settings(), |p| {
        mooncake_transfer_engine::free_bytes(p).ok()
    })
    .map_err(|e| e.to_string())
}

/// The config of Mooncake's older entry point `init_all`: etcd metadata on this host.
pub(super) fn init_all_config(
    protocol: String,
    device_name: String,
    mount_segment_size: u64,
) -> ClientConfig {
    ClientConfig {
        local_hostname: "localhost:12345".into(),
        metadata_server: "127.0.0.1:2379".into(),
        global_segment_size: mount_segment_size,
        local_buffer_size: 1 << 30,
        protocol,
        device_name,
        master_server_addr: "127.0.0.1:50051".into(),
        auth_token: mooncake_metadata::AuthToken::from_env(),
        cluster_id: mooncake_cli::env::store_cluster_id(),
        ..ClientConfig::default()
    }
}

/// The code `setup` returns for a failure (Mooncake: -600 with an explicit port, -1 after
/// the automatic port retries, the master's code for master errors).
pub(super) fn setup_code(e: &SetupError, explicit_port: bool) -> i32 {
    match e {
        SetupError::Master { code, .. } => code.code(),
        SetupError::Engine(_) if !explicit_port => ErrorCode::InternalError.code(),
        _ => INVALID,
    }
}

/// The code `setup_dummy` returns for a failure: -900 when the store service cannot be
/// reached or refuses us, -600 otherwise.
pub(super) fn setup_dummy_code(e: &StandaloneError) -> i32 {
    match e {
        StandaloneError::Connect { .. } | StandaloneError::Refused(_) => ErrorCode::RpcFail.code(),
        _ => INVALID,
    }
}
