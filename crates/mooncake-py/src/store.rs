//! `MooncakeDistributedStore`: the C++ wheel's store class over [`mooncake_store::Client`].
//!
//! Return conventions (`python-api.md` §1): `0` or a negative Mooncake code for status,
//! sizes or a negative code for reads, `b''` for a failed `get`, per-key lists in input
//! order for batches.

use std::time::Duration;

use mooncake_store::{to_code, Client, ClientConfig, ErrorCode, SetupError, TaskId};
use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use std::sync::Arc;

use mooncake_store::standalone::StandaloneClient;

use crate::addr::{address, addresses, value};
use crate::config::{store_config_for, PyReplicateConfig};
use crate::dummy;
use crate::runtime::block;

const INVALID: i32 = ErrorCode::InvalidParams as i32;

/// A store client: `setup(...)`, then put/get by key. Safe to share between threads.
#[pyclass(module = "mooncake.store", name = "MooncakeDistributedStore", subclass)]
#[derive(Default)]
pub(crate) struct Store {
    client: Mutex<Option<Client>>,
    /// Set by `setup_dummy`: every call goes to the node's store service instead.
    dummy: Mutex<Option<Arc<StandaloneClient>>>,
    /// The file mappings behind `mount_segment`, by segment id.
    mapped: Mutex<std::collections::HashMap<u128, memmap2::MmapMut>>,
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
fn config_from_dict(d: &Bound<'_, PyDict>) -> PyResult<Result<ClientConfig, i32>> {
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
        verify_checksums: match dict_str(d, "verify_checksums")? {
            None => false,
            Some(v) => matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"),
        },
        ..ClientConfig::default()
    }))
}

/// The code `setup` returns for a failure (Mooncake: -600 with an explicit port, -1 after
/// the automatic port retries, the master's code for master errors).
fn setup_code(e: &SetupError, explicit_port: bool) -> i32 {
    match e {
        SetupError::Master { code, .. } => code.code(),
        SetupError::Engine(_) if !explicit_port => ErrorCode::InternalError.code(),
        _ => INVALID,
    }
}

/// Dropping the last reference (`del store`, garbage collection, interpreter exit) tears
/// the client down as `close()` does: its segment is drained and unmounted at once, so no
/// other client's put is placed on memory that is about to disappear (`python-api-2.md`
/// §12). Other Python threads keep running meanwhile (the GIL is released for the drain),
/// except while the interpreter shuts down, when the GIL stays held.
impl Drop for Store {
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        let closed = Python::try_attach(|py| block(py, client.close()))
            .unwrap_or_else(|| crate::runtime::runtime().block_on(client.close()));
        if let Err(e) = closed {
            tracing::warn!("closing a dropped store failed: {e}");
        }
        self.mapped.get_mut().clear();
    }
}

impl Store {
    fn dummy(&self) -> Option<Arc<StandaloneClient>> {
        self.dummy.lock().clone()
    }

    fn client(&self) -> Result<Client, ErrorCode> {
        self.client.lock().clone().ok_or_else(|| {
            tracing::warn!("the store is not set up (call setup() first)");
            ErrorCode::InvalidParams
        })
    }

    fn do_setup(&self, py: Python<'_>, config: ClientConfig) -> i32 {
        // As with the C++ wheel, setting up again replaces the client: the old one is torn
        // down first (its segment unmounted), so nothing it mounted is left behind.
        let old = self.client.lock().take();
        if let Some(old) = old {
            tracing::info!("setup() called again; closing the previous client first");
            let _ = block(py, old.close());
            self.mapped.lock().clear();
        }
        let explicit = config.local_hostname.contains(':');
        match block(py, Client::setup(config)) {
            Ok(c) => {
                // Another thread's setup may have finished meanwhile: the last one wins
                // and the one it replaces is closed, never leaked.
                let replaced = self.client.lock().replace(c);
                if let Some(replaced) = replaced {
                    let _ = block(py, replaced.close());
                }
                0
            }
            Err(e) => {
                tracing::error!("setup failed: {e}");
                setup_code(&e, explicit)
            }
        }
    }

    /// Puts (or upserts) one value given as bytes parts.
    fn write_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[Bound<'_, PyAny>],
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i32> {
        let values = parts.iter().map(value).collect::<PyResult<Vec<_>>>()?;
        let slices: Vec<&[u8]> = values.iter().map(|v| v.as_ref()).collect();
        if let Some(d) = self.dummy() {
            return Ok(match store_config_for(config, 1) {
                Ok(cfg) => dummy::put_one(py, &d, key, slices, &cfg, upsert),
                Err(e) => e.code(),
            });
        }
        let (client, cfg) = match (self.client(), store_config_for(config, 1)) {
            (Ok(c), Ok(cfg)) => (c, cfg),
            (Err(e), _) | (_, Err(e)) => return Ok(e.code()),
        };
        if key.is_empty() {
            return Ok(INVALID);
        }
        Ok(to_code(&block(py, async {
            match slices.as_slice() {
                [one] if !upsert => client.put(key, one, &cfg).await,
                [one] => client.upsert(key, one, &cfg).await,
                many => client.put_parts(key, many, &cfg, upsert).await,
            }
        })))
    }

    fn write_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i32> {
        let vals = values.iter().map(value).collect::<PyResult<Vec<_>>>()?;
        if keys.len() != vals.len() || keys.iter().any(String::is_empty) {
            return Ok(INVALID);
        }
        if let Some(d) = self.dummy() {
            let cfg = match store_config_for(config, keys.len()) {
                Ok(c) => c,
                Err(e) => return Ok(e.code()),
            };
            let items: Vec<(String, Vec<&[u8]>)> = keys
                .iter()
                .cloned()
                .zip(vals.iter().map(|v| vec![v.as_ref()]))
                .collect();
            return Ok(dummy::first_error(&dummy::put_values(
                py, &d, &items, &cfg, upsert,
            )));
        }
        let (client, cfg) = match (self.client(), store_config_for(config, keys.len())) {
            (Ok(c), Ok(cfg)) => (c, cfg),
            (Err(e), _) | (_, Err(e)) => return Ok(e.code()),
        };
        let items: Vec<(&str, &[u8])> = keys
            .iter()
            .map(String::as_str)
            .zip(vals.iter().map(|v| v.as_ref()))
            .collect();
        let out = block(py, async {
            if upsert {
                client.upsert_batch(&items, &cfg).await
            } else {
                client.put_batch(&items, &cfg).await
            }
        });
        Ok(out.iter().map(to_code).find(|c| *c != 0).unwrap_or(0))
    }

    fn batch_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<Vec<i32>> {
        if keys.len() != ptrs.len() || keys.len() != sizes.len() {
            return Ok(vec![INVALID; keys.len()]);
        }
        let ptrs = addresses(&ptrs)?;
        let parts: Vec<Vec<(u64, u64)>> = ptrs
            .iter()
            .zip(&sizes)
            .map(|(a, n)| vec![(*a, *n)])
            .collect();
        self.batch_parts_from(py, keys, parts, sizes.len(), config, upsert, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_parts_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        parts: Vec<Vec<(u64, u64)>>,
        sizes_len: usize,
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
        co_locate_allowed: bool,
    ) -> PyResult<Vec<i32>> {
        if keys.len() != parts.len() || keys.len() != sizes_len {
            return Ok(vec![INVALID; keys.len()]);
        }
        if let Some(d) = self.dummy() {
            let mut cfg = match store_config_for(config, keys.len()) {
                Ok(c) => c,
                Err(e) => return Ok(vec![e.code(); keys.len()]),
            };
            if co_locate_allowed {
                cfg.prefer_alloc_in_same_node = false;
            }
            if cfg.prefer_alloc_in_same_node {
                return Ok(vec![INVALID; keys.len()]);
            }
            let items = keys.into_iter().zip(parts).collect();
            return Ok(dummy::put_from(py, &d, items, &cfg, upsert)
                .into_iter()
                .map(|c| c as i32)
                .collect());
        }
        let cfg = match (self.client(), store_config_for(config, keys.len())) {
            (Ok(c), Ok(mut cfg)) => {
                if co_locate_allowed {
                    // A placement hint for the multi-buffer batch: accepted, not needed.
                    cfg.prefer_alloc_in_same_node = false;
                }
                (c, cfg)
            }
            (Err(e), _) | (_, Err(e)) => return Ok(vec![e.code(); keys.len()]),
        };
        let (client, cfg) = cfg;
        let items: Vec<(&str, Vec<(u64, u64)>)> =
            keys.iter().map(String::as_str).zip(parts).collect();
        let out = block(py, async {
            if cfg.prefer_alloc_in_same_node {
                return items
                    .iter()
                    .map(|_| Err(ErrorCode::InvalidParams))
                    .collect();
            }
            client.batch_put_parts_from(&items, &cfg, upsert).await
        });
        Ok(out.iter().map(to_code).collect())
    }
}

/// Each object's `(addr, len)` ranges, in order.
type Parts = Vec<Vec<(u64, u64)>>;

/// `(ptrs, sizes)` list-of-lists into parts; `None` when the shapes differ.
fn multi_parts(
    all_ptrs: &[Vec<Bound<'_, PyAny>>],
    all_sizes: &[Vec<u64>],
) -> PyResult<Option<Parts>> {
    if all_ptrs.len() != all_sizes.len() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(all_ptrs.len());
    for (p, s) in all_ptrs.iter().zip(all_sizes) {
        if p.len() != s.len() {
            return Ok(None);
        }
        out.push(addresses(p)?.into_iter().zip(s.iter().copied()).collect());
    }
    Ok(Some(out))
}

#[pymethods]
impl Store {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// `setup(local_hostname, metadata_server, global_segment_size, local_buffer_size,
    /// protocol, rdma_devices, master_server_addr, ...)` or `setup(config: dict)`.
    #[pyo3(signature = (local_hostname, metadata_server=None, global_segment_size=None,
        local_buffer_size=None, protocol=None, rdma_devices=None, master_server_addr=None,
        engine=None, enable_ssd_offload=false, ssd_offload_path=String::new(),
        tenant_id=String::from("default"), enable_client_http_server=false,
        client_http_port=9300))]
    #[allow(clippy::too_many_arguments, unused_variables)]
    fn setup(
        &self,
        py: Python<'_>,
        local_hostname: Bound<'_, PyAny>,
        metadata_server: Option<Bound<'_, PyAny>>,
        global_segment_size: Option<Bound<'_, PyAny>>,
        local_buffer_size: Option<Bound<'_, PyAny>>,
        protocol: Option<Bound<'_, PyAny>>,
        rdma_devices: Option<Bound<'_, PyAny>>,
        master_server_addr: Option<Bound<'_, PyAny>>,
        engine: Option<Bound<'_, PyAny>>,
        enable_ssd_offload: bool,
        ssd_offload_path: String,
        tenant_id: String,
        enable_client_http_server: bool,
        client_http_port: u16,
    ) -> PyResult<i32> {
        if let Ok(d) = local_hostname.cast::<PyDict>() {
            return Ok(match config_from_dict(d)? {
                Ok(c) => self.do_setup(py, c),
                Err(code) => code,
            });
        }
        if enable_ssd_offload {
            tracing::warn!("enable_ssd_offload is not supported by this build; ignoring it");
        }
        let config = ClientConfig {
            local_hostname: local_hostname
                .extract()
                .map_err(|_| PyTypeError::new_err("setup(): 'local_hostname' must be a str"))?,
            metadata_server: required(metadata_server, "metadata_server")?,
            global_segment_size: required(global_segment_size, "global_segment_size")?,
            local_buffer_size: required(local_buffer_size, "local_buffer_size")?,
            protocol: required(protocol, "protocol")?,
            device_name: required(rdma_devices, "rdma_devices")?,
            master_server_addr: required(master_server_addr, "master_server_addr")?,
            auth_token: mooncake_metadata::AuthToken::from_env(),
            ..ClientConfig::default()
        };
        Ok(self.do_setup(py, config))
    }

    /// Mooncake's older entry point: `setup("localhost:12345", "127.0.0.1:2379",
    /// mount_segment_size, 1 GiB, protocol, device_name, "127.0.0.1:50051")`, i.e. etcd
    /// metadata on this host (refused with a clear error by a build without etcd). -600 if
    /// the store is already set up.
    #[pyo3(signature = (protocol, device_name, mount_segment_size=16 << 20))]
    fn init_all(
        &self,
        py: Python<'_>,
        protocol: String,
        device_name: String,
        mount_segment_size: u64,
    ) -> i32 {
        if self.client.lock().is_some() || self.dummy.lock().is_some() {
            tracing::error!("Client is already initialized");
            return INVALID;
        }
        self.do_setup(
            py,
            ClientConfig {
                local_hostname: "localhost:12345".into(),
                metadata_server: "127.0.0.1:2379".into(),
                global_segment_size: mount_segment_size,
                local_buffer_size: 1 << 30,
                protocol,
                device_name,
                master_server_addr: "127.0.0.1:50051".into(),
                auth_token: mooncake_metadata::AuthToken::from_env(),
                ..ClientConfig::default()
            },
        )
    }

    /// Standalone mode: a thin client forwarding every call to the store service on this
    /// host whose `--port` is the port of `server_address`, sharing a memory pool of
    /// `mem_pool_size` bytes with it (plus `local_buffer_size` of staging). 0, or a negative
    /// code with the reason in the log (e.g. -900 when the store service is unreachable).
    fn setup_dummy(
        &self,
        py: Python<'_>,
        mem_pool_size: u64,
        local_buffer_size: u64,
        server_address: &str,
    ) -> i32 {
        if self.client.lock().is_some() || self.dummy.lock().is_some() {
            tracing::warn!("setup called twice; the first setup stays in effect");
            return 0;
        }
        crate::runtime::runtime();
        let connected = block(
            py,
            StandaloneClient::connect(
                mem_pool_size,
                local_buffer_size,
                server_address,
                mooncake_metadata::AuthToken::from_env(),
            ),
        );
        match connected {
            Ok(d) => {
                *self.dummy.lock() = Some(Arc::new(d));
                0
            }
            Err(e) => {
                tracing::error!("setup_dummy failed: {e}");
                match e {
                    mooncake_store::standalone::StandaloneError::Connect { .. }
                    | mooncake_store::standalone::StandaloneError::Refused(_) => {
                        ErrorCode::RpcFail.code()
                    }
                    _ => INVALID,
                }
            }
        }
    }

    /// Whether `setup`/`setup_dummy` succeeded and `close` has not been called since.
    fn _is_set_up(&self) -> bool {
        self.client.lock().is_some() || self.dummy.lock().is_some()
    }

    /// The setup-time local (staging) buffer's size; 0 when not set up or set up without one.
    fn _local_buffer_size(&self) -> u64 {
        if let Some(d) = self.dummy() {
            return d.local_buffer_size();
        }
        self.client
            .lock()
            .as_ref()
            .map_or(0, |c| c.config().local_buffer_size)
    }

    /// In standalone mode, `size` bytes of the shared pool for zero-copy calls (an address);
    /// 0 when the pool is full or not in standalone mode.
    fn alloc_from_mem_pool(&self, size: u64) -> u64 {
        self.dummy()
            .and_then(|d| d.alloc_from_mem_pool(size))
            .unwrap_or(0)
    }

    /// Unmounts the contributed segment and stops the engine; 0, also when called twice.
    fn close(&self, py: Python<'_>) -> i32 {
        if self.dummy.lock().take().is_some() {
            return 0;
        }
        let Some(client) = self.client.lock().take() else {
            return 0;
        };
        let closed = to_code(&block(py, client.close()));
        self.mapped.lock().clear();
        closed
    }

    /// 0 healthy, 1 not set up or closed, 2 master unreachable.
    fn health_check(&self, py: Python<'_>) -> i32 {
        if let Some(d) = self.dummy() {
            return if block(py, d.healthy()) { 0 } else { 2 };
        }
        let Some(client) = self.client.lock().clone() else {
            return 1;
        };
        let probe = block(py, async {
            tokio::time::timeout(
                Duration::from_secs(2),
                client.master().exist_key("__mooncake_health_check__"),
            )
            .await
        });
        match probe {
            Ok(Ok(_)) => 0,
            _ => 2,
        }
    }

    /// The `host:port` segment name of this client.
    fn get_hostname(&self) -> String {
        if let Some(d) = self.dummy() {
            return d.hostname().to_owned();
        }
        self.client
            .lock()
            .as_ref()
            .map(|c| c.engine().segment_name().to_owned())
            .unwrap_or_default()
    }

    // ---- bytes API ----

    /// Stores `value`; an existing key keeps its value and 0 is returned.
    #[pyo3(signature = (key, value, config=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_parts(py, key, &[value], config, false)
    }

    /// Stores `value`, replacing an existing one.
    #[pyo3(signature = (key, value, config=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        key: &str,
        value: Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_parts(py, key, &[value], config, true)
    }

    /// Stores the concatenation of `parts` as one object.
    #[pyo3(signature = (key, *parts, config=None))]
    fn put_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: Bound<'_, PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts: Vec<_> = parts.iter().collect();
        if parts_empty(&parts)? && self._is_set_up() {
            // The wheel stores nothing and reports success for no bytes at all.
            return Ok(0);
        }
        self.write_parts(py, key, &parts, config, false)
    }

    /// `put_parts`, replacing an existing value.
    #[pyo3(signature = (key, *parts, config=None))]
    fn upsert_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: Bound<'_, PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts: Vec<_> = parts.iter().collect();
        if parts_empty(&parts)? && self._is_set_up() {
            // The wheel stores nothing and reports success for no bytes at all.
            return Ok(0);
        }
        self.write_parts(py, key, &parts, config, true)
    }

    /// Stores many values; one int: 0, or the first per-key error.
    #[pyo3(signature = (keys, values, config=None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_batch(py, keys, values, config, false)
    }

    /// `put_batch`, replacing existing values.
    #[pyo3(signature = (keys, values, config=None))]
    fn upsert_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        self.write_batch(py, keys, values, config, true)
    }

    /// The value, or `b''` on any failure.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyBytes>> {
        Ok(self
            .get_or_none(py, key)?
            .unwrap_or_else(|| PyBytes::new(py, b"")))
    }

    /// The value, or `None` on any failure (backs `get_buffer`).
    fn get_or_none<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if let Some(d) = self.dummy() {
            return dummy::get(py, &d, key);
        }
        let Ok(client) = self.client() else {
            return Ok(None);
        };
        // A value this client knows to be on another machine is read straight into the
        // new `bytes` (no staging copy); when that does not pan out, the usual path runs.
        if let Some(size) = block(py, client.remembered_network_size(key))
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s > 0)
        {
            let mut got = false;
            let bytes = bytes_filled(py, size, |out| {
                got = block(py, client.get_lent(key, out)) == Ok(true);
                if !got {
                    out.fill(std::mem::MaybeUninit::new(0));
                }
            })?;
            if got {
                return Ok(Some(bytes));
            }
        }
        match block(py, client.get_value(key)) {
            Ok(v) => Ok(Some(bytes_filled(py, v.len(), |out| {
                v.read_into_uninit(out)
            })?)),
            Err(e) => {
                tracing::debug!(key, code = e.code(), "get failed");
                Ok(None)
            }
        }
    }

    /// One `bytes` per key (`b''` for failures); `[b'']` when the whole call fails.
    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        if let Some(d) = self.dummy() {
            return keys
                .iter()
                .map(|k| Ok(dummy::get(py, &d, k)?.unwrap_or_else(|| PyBytes::new(py, b""))))
                .collect();
        }
        let Ok(client) = self.client() else {
            return Ok(vec![PyBytes::new(py, b"")]);
        };
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Values this client knows to be on other machines are read straight into their
        // new `bytes` (no staging copy), one exchange per holder; the rest, and any that
        // do not pan out, take the staged path.
        let sizes = block(py, client.remembered_network_sizes(&refs));
        let lent: Vec<usize> = (0..refs.len())
            .filter(|&i| sizes[i].is_some_and(|s| s > 0))
            .collect();
        let mut done: Vec<Option<Bound<'py, PyBytes>>> = refs.iter().map(|_| None).collect();
        if !lent.is_empty() {
            let lens: Vec<usize> = lent
                .iter()
                .map(|&i| usize::try_from(sizes[i].unwrap_or(0)).unwrap_or(0))
                .collect();
            let mut served = Vec::new();
            let filled = bytes_many_filled(py, &lens, |outs| {
                let mut items: Vec<(&str, &mut [std::mem::MaybeUninit<u8>])> = lent
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(&i, out)| (refs[i], &mut **out))
                    .collect();
                served = block(py, client.get_batch_lent(&mut items));
                for ((_, out), ok) in items.iter_mut().zip(&served) {
                    if !ok {
                        out.fill(std::mem::MaybeUninit::new(0));
                    }
                }
            })?;
            for ((&i, bytes), ok) in lent.iter().zip(filled).zip(served) {
                if ok {
                    done[i] = Some(bytes);
                }
            }
        }
        let rest: Vec<&str> = (0..refs.len())
            .filter(|&i| done[i].is_none())
            .map(|i| refs[i])
            .collect();
        let mut staged = if rest.is_empty() {
            Vec::new()
        } else {
            block(py, client.get_batch_staged(&rest))
        }
        .into_iter();
        done.into_iter()
            .map(|d| match d {
                Some(bytes) => Ok(bytes),
                None => match staged.next() {
                    Some(Ok(v)) => bytes_filled(py, v.len(), |buf| v.read_into_uninit(buf)),
                    _ => Ok(PyBytes::new(py, b"")),
                },
            })
            .collect()
    }

    // ---- zero-copy API ----

    /// Registers `[buffer_ptr, buffer_ptr+size)` for zero-copy calls; 0 or negative.
    fn register_buffer(
        &self,
        py: Python<'_>,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
    ) -> PyResult<i32> {
        let addr = address(&buffer_ptr)?;
        if let Some(d) = self.dummy() {
            if d.offset_of(addr, size).is_some() {
                return Ok(0);
            }
            tracing::warn!(
                addr,
                size,
                "in standalone mode buffers must come from alloc_from_mem_pool"
            );
            return Ok(INVALID);
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Ok(e.code()),
        };
        // SAFETY: as with the C++ wheel, the caller vouches that the range is memory it
        // owns and keeps alive until `unregister_buffer`; peers read and write it then.
        let memory = unsafe { mooncake_transfer_engine::ForeignMemory::new(addr, size) };
        Ok(
            match block(py, client.engine().register_memory(memory, "cpu:0")) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(addr, size, "register_buffer failed: {e}");
                    INVALID
                }
            },
        )
    }

    /// Unregisters a buffer (waits for transfers using it); -600 for an unknown pointer.
    fn unregister_buffer(&self, py: Python<'_>, buffer_ptr: Bound<'_, PyAny>) -> PyResult<i32> {
        let addr = address(&buffer_ptr)?;
        if let Some(d) = self.dummy() {
            return Ok(if d.offset_of(addr, 1).is_some() {
                0
            } else {
                INVALID
            });
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Ok(e.code()),
        };
        Ok(match block(py, client.engine().unregister(addr)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(addr, "unregister_buffer failed: {e}");
                INVALID
            }
        })
    }

    /// Stores `size` bytes at `buffer_ptr` without copying; existing keys return 0.
    #[pyo3(signature = (key, buffer_ptr, size, config=None))]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts = [(address(&buffer_ptr)?, size)];
        self.one_from(py, key, &parts, config, false)
    }

    /// `put_from`, replacing an existing value (which may change size).
    #[pyo3(signature = (key, buffer_ptr, size, config=None))]
    fn upsert_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts = [(address(&buffer_ptr)?, size)];
        self.one_from(py, key, &parts, config, true)
    }

    /// Stores metadata followed by data as one object.
    #[pyo3(signature = (key, buffer_ptr, metadata_buffer_ptr, size, metadata_size, config=None))]
    #[allow(clippy::too_many_arguments)]
    fn put_from_with_metadata(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        metadata_buffer_ptr: Bound<'_, PyAny>,
        size: u64,
        metadata_size: u64,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i32> {
        let parts = [
            (address(&metadata_buffer_ptr)?, metadata_size),
            (address(&buffer_ptr)?, size),
        ];
        if !self._is_set_up() {
            return Ok(INVALID);
        }
        // The wheel stores nothing for an empty value, whatever the metadata, and refuses
        // a same-node placement with -1 here.
        if size == 0 {
            return Ok(0);
        }
        if config.as_ref().is_some_and(|c| c.same_node()) {
            return Ok(ErrorCode::InternalError.code());
        }
        self.one_from(py, key, &parts, config, false)
    }

    /// Reads `key` into `[buffer_ptr, buffer_ptr+size)`; the object's size, or -704
    /// missing, -600 buffer too small (untouched), -800 transfer failure.
    fn get_into(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: Bound<'_, PyAny>,
        size: u64,
    ) -> PyResult<i64> {
        let addr = address(&buffer_ptr)?;
        if let Some(d) = self.dummy() {
            return Ok(dummy::get_into(py, &d, vec![(key.to_owned(), addr, size)])[0]);
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Ok(e.code().into()),
        };
        Ok(size_code(block(py, client.get_into(key, addr, size))))
    }

    /// Zero-copy batch put; per-key 0 or negative code.
    #[pyo3(signature = (keys, buffer_ptrs, sizes, config=None))]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<Vec<i32>> {
        self.batch_from(py, keys, buffer_ptrs, sizes, config, false)
    }

    /// `batch_put_from`, replacing existing values.
    #[pyo3(signature = (keys, buffer_ptrs, sizes, config=None))]
    fn batch_upsert_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<Vec<i32>> {
        self.batch_from(py, keys, buffer_ptrs, sizes, config, true)
    }

    /// Zero-copy batch get; per-key size or negative code.
    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<Bound<'_, PyAny>>,
        sizes: Vec<u64>,
    ) -> PyResult<Vec<i64>> {
        if keys.len() != buffer_ptrs.len() || keys.len() != sizes.len() {
            return Ok(vec![INVALID.into(); keys.len()]);
        }
        let ptrs = addresses(&buffer_ptrs)?;
        if let Some(d) = self.dummy() {
            let items = keys
                .into_iter()
                .zip(ptrs.into_iter().zip(sizes))
                .map(|(k, (a, n))| (k, a, n))
                .collect();
            return Ok(dummy::get_into(py, &d, items));
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Ok(vec![e.code().into(); keys.len()]),
        };
        let items: Vec<(&str, u64, u64)> = keys
            .iter()
            .zip(ptrs.iter().zip(&sizes))
            .map(|(k, (a, n))| (k.as_str(), *a, *n))
            .collect();
        let out = block(py, client.batch_get_into(&items));
        Ok(out.into_iter().map(size_code).collect())
    }

    /// Each object is the concatenation of its buffers, in order; per-key 0 or negative.
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, config=None))]
    fn batch_put_from_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<Bound<'_, PyAny>>>,
        all_sizes: Vec<Vec<u64>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<Vec<i32>> {
        if !self._is_set_up() {
            return Ok(Vec::new());
        }
        let Some(parts) = multi_parts(&all_buffer_ptrs, &all_sizes)? else {
            return Ok(vec![INVALID; keys.len()]);
        };
        let n = all_sizes.len();
        self.batch_parts_from(py, keys, parts, n, config, false, true)
    }

    /// Scatters each object over its buffers; per-key total bytes, -704 missing, -600 if
    /// the buffers are too small, -800 if they exceed the object (exact fit).
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, prefer_alloc_in_same_node=false))]
    #[allow(unused_variables)]
    fn batch_get_into_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<Bound<'_, PyAny>>>,
        all_sizes: Vec<Vec<u64>>,
        prefer_alloc_in_same_node: bool,
    ) -> PyResult<Vec<i64>> {
        let parts = match multi_parts(&all_buffer_ptrs, &all_sizes)? {
            Some(p) if p.len() == keys.len() => p,
            _ => return Ok(vec![INVALID.into(); keys.len()]),
        };
        if let Some(d) = self.dummy() {
            return Ok(dummy::get_into_parts(
                py,
                &d,
                keys.into_iter().zip(parts).collect(),
            ));
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Ok(vec![e.code().into(); keys.len()]),
        };
        let items: Vec<(&str, Vec<(u64, u64)>)> =
            keys.iter().map(String::as_str).zip(parts).collect();
        let out = block(py, client.batch_get_into_parts(&items));
        Ok(out.into_iter().map(size_code).collect())
    }

    // ---- existence, size, removal ----

    /// 1 exists, 0 does not, negative on error; grants a read lease when 1.
    fn is_exist(&self, py: Python<'_>, key: &str) -> i32 {
        if let Some(d) = self.dummy() {
            return block(py, d.is_exist(vec![key.to_owned()]))[0] as i32;
        }
        match self.client() {
            Ok(c) => exist_code(block(py, c.is_exist(key))),
            Err(e) => e.code(),
        }
    }

    /// Per-key 1, 0 or negative; `[]` for `[]`.
    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        if keys.is_empty() {
            return Vec::new();
        }
        if let Some(d) = self.dummy() {
            return block(py, d.is_exist(keys))
                .into_iter()
                .map(|c| c as i32)
                .collect();
        }
        match self.client() {
            Ok(c) => block(py, c.batch_is_exist(&keys))
                .into_iter()
                .map(exist_code)
                .collect(),
            Err(e) => vec![e.code(); keys.len()],
        }
    }

    /// The object's size, or a negative code (-704 missing).
    fn get_size(&self, py: Python<'_>, key: &str) -> i64 {
        if let Some(d) = self.dummy() {
            return block(py, d.get_size(key.to_owned()));
        }
        match self.client() {
            Ok(c) => size_code(block(py, c.get_size(key))),
            Err(e) => e.code().into(),
        }
    }

    /// 0; -704 missing; -706 while leased unless `force`.
    #[pyo3(signature = (key, force=false))]
    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i32 {
        if let Some(d) = self.dummy() {
            return block(py, d.remove(vec![key.to_owned()], force))[0] as i32;
        }
        match self.client() {
            Ok(c) => to_code(&block(py, c.remove(key, force))),
            Err(e) => e.code(),
        }
    }

    /// Per-key results of `remove`.
    #[pyo3(signature = (keys, force=false))]
    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i32> {
        if let Some(d) = self.dummy() {
            return block(py, d.remove(keys, force))
                .into_iter()
                .map(|c| c as i32)
                .collect();
        }
        match self.client() {
            Ok(c) => block(py, c.batch_remove(&keys, force))
                .iter()
                .map(to_code)
                .collect(),
            Err(e) => vec![e.code(); keys.len()],
        }
    }

    /// Removes every object (leased ones only with `force`); the count, or negative.
    #[pyo3(signature = (force=false))]
    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        if let Some(d) = self.dummy() {
            return block(py, d.remove_all(force));
        }
        match self.client() {
            Ok(c) => size_code(block(py, c.remove_all(force))),
            Err(e) => e.code().into(),
        }
    }

    // ---- sessions and ranged reads/writes (python-api-2.md §2, §4) ----

    /// Opens a get session per key: 0 or the master's code; `[]` when not set up.
    fn batch_get_session_start(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        if self.dummy().is_some() {
            return vec![INVALID; keys.len()];
        }
        // Bound first: a guard in the match scrutinee would be held across `block`,
        // which releases the GIL (another thread could then wait on the lock with it).
        let client = self.client.lock().clone();
        match client {
            Some(c) => block(py, c.batch_get_session_start(&keys)),
            None => Vec::new(),
        }
    }

    /// Drops get sessions: 0 (-1 when not set up).
    fn batch_get_session_end(&self, keys: Vec<String>) -> i32 {
        if self.dummy().is_some() {
            return INVALID;
        }
        // Bound first: a guard in the match scrutinee would be held across `block`,
        // which releases the GIL (another thread could then wait on the lock with it).
        let client = self.client.lock().clone();
        match client {
            Some(c) => {
                c.batch_get_session_end(&keys);
                0
            }
            None => -1,
        }
    }

    /// Reads fragments through get sessions: per key the bytes read, or a negative code.
    fn batch_get_into_multi_buffer_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Bound<'_, PyAny>,
        all_sizes: Bound<'_, PyAny>,
        all_src_offsets: Bound<'_, PyAny>,
    ) -> PyResult<Vec<i64>> {
        self.session_ranges(
            py,
            keys,
            &all_buffer_ptrs,
            &all_sizes,
            &all_src_offsets,
            false,
        )
    }

    /// Reserves puts without writing them: 0 or the master's code (-705 when the object
    /// exists); `[]` when not set up.
    #[pyo3(signature = (keys, sizes, config=None))]
    fn batch_put_session_start(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i32> {
        if self.dummy().is_some() {
            return vec![INVALID; keys.len()];
        }
        let Some(c) = self.client.lock().clone() else {
            return Vec::new();
        };
        let cfg = match store_config_for(config, keys.len()) {
            Ok(cfg) if keys.len() == sizes.len() => cfg,
            _ => return vec![INVALID; keys.len()],
        };
        let items: Vec<(String, u64)> = keys.into_iter().zip(sizes).collect();
        block(py, c.batch_put_session_start(&items, &cfg))
    }

    /// Writes fragments into put sessions: per key the bytes written, or a negative code.
    fn batch_put_from_multi_buffer_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Bound<'_, PyAny>,
        all_sizes: Bound<'_, PyAny>,
        all_dst_offsets: Bound<'_, PyAny>,
    ) -> PyResult<Vec<i64>> {
        self.session_ranges(
            py,
            keys,
            &all_buffer_ptrs,
            &all_sizes,
            &all_dst_offsets,
            true,
        )
    }

    /// Commits put sessions: per key 0, -600 without a session, or the master's code.
    fn batch_put_session_end(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        self.finish_sessions(py, keys, true)
    }

    /// Abandons put sessions: per key 0, -600 without a session, or the master's code.
    fn batch_put_session_revoke(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i32> {
        self.finish_sessions(py, keys, false)
    }

    /// Reads `all_sizes[i][j][k]` bytes of `all_keys[i][j]` at object offset
    /// `all_src_offsets[i][j][k]` into `buffer_ptrs[i] + all_dst_offsets[i][j][k]`: per
    /// fragment its length or a negative code, shaped like the request (-600 throughout for
    /// a malformed request or a buffer that is not registered).
    fn get_into_ranges(
        &self,
        py: Python<'_>,
        buffer_ptrs: Bound<'_, PyAny>,
        all_keys: Vec<Vec<String>>,
        all_dst_offsets: Bound<'_, PyAny>,
        all_src_offsets: Bound<'_, PyAny>,
        all_sizes: Bound<'_, PyAny>,
    ) -> PyResult<Vec<Vec<Vec<i64>>>> {
        let ptrs: Vec<u64> = u64s(&buffer_ptrs)?;
        let dst: Vec<Vec<Vec<u64>>> = u64s(&all_dst_offsets)?;
        let src: Vec<Vec<Vec<u64>>> = u64s(&all_src_offsets)?;
        let sizes: Vec<Vec<Vec<u64>>> = u64s(&all_sizes)?;
        let mut out: Vec<Vec<Vec<i64>>> = (0..ptrs.len())
            .map(|i| {
                let n = all_keys.get(i).map_or(1, Vec::len);
                (0..n)
                    .map(|j| {
                        let f = dst.get(i).and_then(|r| r.get(j)).map_or(1, Vec::len);
                        vec![i64::from(INVALID); f]
                    })
                    .collect()
            })
            .collect();
        let n = ptrs.len();
        // In standalone mode the buffers are in the shared pool and the node's store
        // service reads into it; otherwise they must be registered with this engine.
        let dummy = self.dummy();
        let client = self.client.lock().clone();
        let capacity = |ptr: u64| match (&dummy, &client) {
            (Some(d), _) => d.offset_of(ptr, 1).map(|off| d.pool_len() - off),
            (None, Some(c)) => c.engine().registered_capacity(ptr),
            (None, None) => None,
        };
        if (dummy.is_none() && client.is_none())
            || [all_keys.len(), dst.len(), src.len(), sizes.len()] != [n; 4]
        {
            return Ok(out);
        }
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for i in 0..n {
            let nk = all_keys[i].len();
            let Some(cap) = capacity(ptrs[i]) else {
                continue;
            };
            if ptrs[i] == 0 || [dst[i].len(), src[i].len(), sizes[i].len()] != [nk; 3] {
                continue;
            }
            for j in 0..nk {
                let (d, s, z) = (&dst[i][j], &src[i][j], &sizes[i][j]);
                if s.len() != d.len() || z.len() != d.len() {
                    continue;
                }
                let mut frags = Vec::new();
                for k in 0..d.len() {
                    if d[k].checked_add(z[k]).is_some_and(|end| end <= cap) {
                        frags.push((ptrs[i] + d[k], z[k], s[k]));
                        slots.push((i, j, k));
                    }
                }
                items.push((all_keys[i][j].clone(), frags));
            }
        }
        let results = match (&dummy, &client) {
            (Some(d), _) => {
                let in_pool = items
                    .into_iter()
                    .map(|(k, frags)| {
                        let frags = frags
                            .into_iter()
                            .map(|(a, len, src)| (d.offset_of(a, 0).unwrap_or(u64::MAX), len, src))
                            .collect();
                        (k, frags)
                    })
                    .collect();
                block(py, d.read_ranges(in_pool))
            }
            (None, Some(c)) => block(py, c.read_ranges(&items)),
            (None, None) => Vec::new(),
        };
        let mut it = slots.into_iter();
        for row in results {
            for r in row {
                if let Some((i, j, k)) = it.next() {
                    out[i][j][k] = r;
                }
            }
        }
        Ok(out)
    }

    // ---- extra segments (python-api-2.md §11) ----

    /// Maps `[offset, offset+size)` of the file at `path` (offset page-aligned, the range
    /// inside the file) and mounts it as a segment of this client:
    /// `{'ret': 0, 'segment_ids': ['<hi>-<lo>']}`, or `ret` -1 with nothing mounted.
    #[pyo3(signature = (path, size, offset=0, protocol=String::from("tcp"), location=String::new()))]
    #[allow(unused_variables)]
    fn mount_segment<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        size: u64,
        offset: u64,
        protocol: String,
        location: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("ret", -1)?;
        out.set_item("segment_ids", Vec::<String>::new())?;
        let Some(client) = self.client.lock().clone() else {
            return Ok(out);
        };
        match self.map_and_mount(py, &client, path, size, offset) {
            Ok(id) => {
                out.set_item("ret", 0)?;
                out.set_item("segment_ids", vec![mooncake_store::uuid_string(id)])?;
            }
            Err(e) => tracing::warn!(path, size, offset, "mount_segment failed: {e}"),
        }
        Ok(out)
    }

    /// Allocates `size` bytes (rounded up to 16 MiB) and mounts them as a segment of this
    /// client: `{'ret': 0, 'segment_ids': [...], 'allocated_size': n}`, or `ret` -1.
    #[pyo3(signature = (size, protocol=String::from("tcp"), location=String::new()))]
    #[allow(unused_variables)]
    fn allocate_and_mount_segment<'py>(
        &self,
        py: Python<'py>,
        size: u64,
        protocol: String,
        location: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        const SLAB: u64 = 16 << 20;
        let out = PyDict::new(py);
        out.set_item("ret", -1)?;
        out.set_item("segment_ids", Vec::<String>::new())?;
        out.set_item("allocated_size", 0)?;
        let Some(client) = self.client.lock().clone() else {
            return Ok(out);
        };
        let Some(rounded) = size.max(1).checked_next_multiple_of(SLAB) else {
            return Ok(out);
        };
        if let Ok(id) = block(py, client.allocate_and_mount(rounded)) {
            out.set_item("ret", 0)?;
            out.set_item("segment_ids", vec![mooncake_store::uuid_string(id.0)])?;
            out.set_item("allocated_size", rounded)?;
        }
        Ok(out)
    }

    /// Unmounts segments from `mount_segment`: 0, or the first error (-1 for an id that
    /// does not parse or that this client did not mount).
    #[pyo3(signature = (segment_ids, grace_period_seconds=0))]
    #[allow(unused_variables)]
    fn unmount_segment(
        &self,
        py: Python<'_>,
        segment_ids: Vec<String>,
        grace_period_seconds: u64,
    ) -> i32 {
        self.unmount_extras(py, &segment_ids)
    }

    /// Unmounts segments from `allocate_and_mount_segment` and frees their memory.
    #[pyo3(signature = (segment_ids, grace_period_seconds=0))]
    #[allow(unused_variables)]
    fn unmount_and_free_segment(
        &self,
        py: Python<'_>,
        segment_ids: Vec<String>,
        grace_period_seconds: u64,
    ) -> i32 {
        self.unmount_extras(py, &segment_ids)
    }

    /// This build has no local-disk (SSD offload) segment: 0 when set up, -1 otherwise.
    #[pyo3(signature = (grace_period_seconds=0))]
    #[allow(unused_variables)]
    fn unmount_local_disk_segment(&self, grace_period_seconds: u64) -> i32 {
        if self.client.lock().is_some() {
            0
        } else {
            -1
        }
    }

    // ---- replica clear, regex removal, replica descriptors, copy and move tasks ----

    /// The keys (of `keys`) this client created that nobody holds a lease on, cleared: the
    /// whole object, or only its replicas on `segment_name` when given. Never an error
    /// code: skipped keys (and every key, when the call fails) are simply left out.
    #[pyo3(signature = (keys, segment_name=String::new()))]
    fn batch_replica_clear(
        &self,
        py: Python<'_>,
        keys: Bound<'_, PyAny>,
        segment_name: String,
    ) -> PyResult<Vec<String>> {
        let keys = keys_arg(&keys)?;
        Ok(match self.client() {
            Ok(c) if self.dummy().is_none() => {
                block(py, c.batch_replica_clear(&keys, &segment_name))
            }
            _ => Vec::new(),
        })
    }

    /// Removes every object whose key matches the (ECMAScript-like) regular expression;
    /// the count, or a negative code (-600 for a pattern that does not compile).
    #[pyo3(signature = (regex_pattern, force=false))]
    fn remove_by_regex(&self, py: Python<'_>, regex_pattern: &str, force: bool) -> i64 {
        if let Some(d) = self.dummy() {
            return block(py, d.remove_by_regex(regex_pattern, force));
        }
        match self.client() {
            Ok(c) => size_code(block(py, c.remove_by_regex(regex_pattern, force))),
            Err(e) => e.code().into(),
        }
    }

    /// Queues a copy of `key` to the `targets` segments: `((hi, lo), 0)` or `((0, 0), code)`.
    fn create_copy_task(&self, py: Python<'_>, key: &str, targets: Vec<String>) -> (PyTaskId, i32) {
        if let Some(d) = self.dummy() {
            return task_id_result(block(py, d.create_copy_task(key, &targets)));
        }
        match self.client() {
            Ok(c) => task_id_result(block(py, c.create_copy_task(key, &targets))),
            Err(e) => ((0, 0), e.code()),
        }
    }

    /// Queues a move of `key`'s replica on `source` to `target`.
    fn create_move_task(
        &self,
        py: Python<'_>,
        key: &str,
        source: &str,
        target: &str,
    ) -> (PyTaskId, i32) {
        if let Some(d) = self.dummy() {
            return task_id_result(block(py, d.create_move_task(key, source, target)));
        }
        match self.client() {
            Ok(c) => task_id_result(block(py, c.create_move_task(key, source, target))),
            Err(e) => ((0, 0), e.code()),
        }
    }

    /// `(QueryTaskResponse, 0)`, or `(None, code)` (-1400 for an unknown id).
    fn query_task(
        &self,
        py: Python<'_>,
        task_id: Bound<'_, PyAny>,
    ) -> PyResult<(Option<crate::task::QueryTaskResponse>, i32)> {
        let id = crate::task::task_id_arg(&task_id)?;
        if let Some(d) = self.dummy() {
            return Ok(match block(py, d.query_task(id)) {
                Ok(info) => (Some(info.into()), 0),
                Err(e) => (None, e.code()),
            });
        }
        Ok(match self.client() {
            Ok(c) => match block(py, c.query_task(id)) {
                Ok(info) => (Some(info.into()), 0),
                Err(e) => (None, e.code()),
            },
            Err(e) => (None, e.code()),
        })
    }

    /// Per key, its replicas (grants a read lease), or `None` when it has none readable.
    fn _replicas(&self, py: Python<'_>, keys: Vec<String>) -> Vec<Option<Vec<PyReplica>>> {
        let Ok(c) = self.client() else {
            return vec![None; keys.len()];
        };
        block(py, c.replica_lists(&keys))
            .into_iter()
            .map(|r| {
                r.ok().map(|list| {
                    list.replicas
                        .into_iter()
                        .map(|d| {
                            (
                                d.buffer_address,
                                d.size,
                                d.transport_endpoint,
                                d.segment_name,
                            )
                        })
                        .collect()
                })
            })
            .collect()
    }

    /// Reads served through the SSD-offload RPC path: always 0 (no SSD offload here).
    fn get_offload_rpc_read_count(&self) -> u64 {
        0
    }
}

/// A task id as the wheel shows it: `(hi, lo)`.
type PyTaskId = (u64, u64);

/// `(task_id, 0)` or `((0, 0), code)`.
fn task_id_result(r: Result<TaskId, ErrorCode>) -> (PyTaskId, i32) {
    match r {
        Ok(id) => (id.halves(), 0),
        Err(e) => ((0, 0), e.code()),
    }
}

/// A replica as `(buffer_address, size, transport_endpoint, segment_name)`.
type PyReplica = (u64, u64, String, String);

impl Store {
    fn map_and_mount(
        &self,
        py: Python<'_>,
        client: &Client,
        path: &str,
        size: u64,
        offset: u64,
    ) -> Result<u128, String> {
        let page = 4096;
        if size == 0 || !offset.is_multiple_of(page) {
            return Err("size must be positive and offset page-aligned".into());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(format!(
                "[{offset}, {offset}+{size}) is not inside the file ({len} bytes)"
            ));
        }
        let n = usize::try_from(size).map_err(|e| e.to_string())?;
        // SAFETY: a shared mapping of a file the caller named for this purpose; it stays
        // mapped (in `self.mapped`) until the segment is unmounted and unregistered.
        let mut map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(n)
                .map_mut(&file)
        }
        .map_err(|e| e.to_string())?;
        let addr = map.as_mut_ptr() as u64;
        // SAFETY: the mapping above, kept alive until after `unregister`.
        let memory = unsafe { mooncake_transfer_engine::ForeignMemory::new(addr, size) };
        block(py, client.engine().register_memory(memory, "cpu:0")).map_err(|e| e.to_string())?;
        match block(py, client.mount_registered(addr, size)) {
            Ok(id) => {
                self.mapped.lock().insert(id.0, map);
                Ok(id.0)
            }
            Err(e) => {
                let _ = block(py, client.engine().unregister(addr));
                Err(e.to_string())
            }
        }
    }

    fn unmount_extras(&self, py: Python<'_>, ids: &[String]) -> i32 {
        let Some(client) = self.client.lock().clone() else {
            return -1;
        };
        let mut first = 0;
        for raw in ids {
            let parsed = raw
                .split_once('-')
                .and_then(|(hi, lo)| Some(TaskId::from_halves(hi.parse().ok()?, lo.parse().ok()?)));
            let code = match parsed {
                None => -1,
                Some(id) => {
                    match block(py, client.unmount_extra(mooncake_store::SegmentId(id.0))) {
                        Ok(()) => {
                            let map = self.mapped.lock().remove(&id.0);
                            if let Some(map) = map {
                                let _ = block(py, client.engine().unregister(map.as_ptr() as u64));
                            }
                            0
                        }
                        Err(ErrorCode::InvalidParams) => -1,
                        Err(e) => e.code(),
                    }
                }
            };
            if first == 0 {
                first = code;
            }
        }
        first
    }

    /// The ranged calls on sessions: per key the bytes moved, or a negative code.
    fn session_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_ptrs: &Bound<'_, PyAny>,
        all_sizes: &Bound<'_, PyAny>,
        all_offsets: &Bound<'_, PyAny>,
        write: bool,
    ) -> PyResult<Vec<i64>> {
        let ptrs: Vec<Vec<u64>> = u64s(all_ptrs)?;
        let sizes: Vec<Vec<u64>> = u64s(all_sizes)?;
        let offs: Vec<Vec<u64>> = u64s(all_offsets)?;
        let invalid = i64::from(INVALID);
        if self.dummy().is_some() {
            return Ok(vec![invalid; keys.len()]);
        }
        let Some(client) = self.client.lock().clone() else {
            return Ok(Vec::new());
        };
        let n = keys.len();
        if [ptrs.len(), sizes.len(), offs.len()] != [n; 3] {
            return Ok(vec![invalid; n]);
        }
        let mut out = vec![invalid; n];
        let mut items = Vec::new();
        let mut idx = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let (p, z, o) = (&ptrs[i], &sizes[i], &offs[i]);
            if z.len() != p.len() || o.len() != p.len() {
                continue;
            }
            let frags = (0..p.len()).map(|k| (p[k], z[k], o[k])).collect();
            items.push((key, frags));
            idx.push(i);
        }
        let results = block(py, async {
            if write {
                client.put_session_ranges(&items).await
            } else {
                client.get_session_ranges(&items).await
            }
        });
        for (i, r) in idx.into_iter().zip(results) {
            out[i] = r;
        }
        Ok(out)
    }

    fn finish_sessions(&self, py: Python<'_>, keys: Vec<String>, commit: bool) -> Vec<i32> {
        if self.dummy().is_some() {
            return vec![INVALID; keys.len()];
        }
        // Bound first: a guard in the match scrutinee would be held across `block`,
        // which releases the GIL (another thread could then wait on the lock with it).
        let client = self.client.lock().clone();
        match client {
            Some(c) => block(py, c.batch_put_session_finish(&keys, commit)),
            None => Vec::new(),
        }
    }

    fn one_from(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &[(u64, u64)],
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i32> {
        if let Some(d) = self.dummy() {
            if parts.iter().map(|p| p.1).sum::<u64>() == 0 {
                return Ok(if key.is_empty() { INVALID } else { 0 });
            }
            return Ok(match store_config_for(config, 1) {
                Ok(cfg) => {
                    let items = vec![(key.to_owned(), parts.to_vec())];
                    dummy::put_from(py, &d, items, &cfg, upsert)[0] as i32
                }
                Err(e) => e.code(),
            });
        }
        let (client, cfg) = match (self.client(), store_config_for(config, 1)) {
            (Ok(c), Ok(cfg)) => (c, cfg),
            (Err(e), _) | (_, Err(e)) => return Ok(e.code()),
        };
        Ok(to_code(&block(
            py,
            client.put_parts_from(key, parts, &cfg, upsert),
        )))
    }
}

/// Whether every part is empty (also true for no parts).
fn parts_empty(parts: &[Bound<'_, PyAny>]) -> PyResult<bool> {
    for p in parts {
        // `len()` of bytes-like objects, without copying them; anything else is converted.
        let empty = match p.len() {
            Ok(n) => n == 0,
            Err(_) => value(p)?.as_ref().is_empty(),
        };
        if !empty {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Keys given as `str` or `bytes` (UTF-8) in any non-`str` sequence.
fn keys_arg(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let bad = || PyTypeError::new_err("keys must be a list of str or bytes");
    if v.is_instance_of::<pyo3::types::PyString>() {
        return Err(bad());
    }
    let mut out = Vec::new();
    for item in v.try_iter().map_err(|_| bad())? {
        let item = item?;
        out.push(match item.extract::<String>() {
            Ok(s) => s,
            Err(_) => {
                let b: Vec<u8> = item
                    .cast::<PyBytes>()
                    .map_err(|_| bad())?
                    .as_bytes()
                    .to_vec();
                String::from_utf8(b).map_err(|_| bad())?
            }
        });
    }
    Ok(out)
}

/// Unsigned 64-bit ints (nested in lists); a negative, a float or `None` is `TypeError`.
fn u64s<'py, T: for<'a> FromPyObject<'a, 'py>>(v: &Bound<'py, PyAny>) -> PyResult<T> {
    v.extract::<T>().map_err(|_| {
        PyTypeError::new_err("incompatible function arguments: expected unsigned 64-bit ints")
    })
}

fn size_code(r: Result<u64, ErrorCode>) -> i64 {
    match r {
        Ok(n) => n as i64,
        Err(e) => e.code().into(),
    }
}

fn exist_code(r: Result<bool, ErrorCode>) -> i32 {
    match r {
        Ok(b) => i32::from(b),
        Err(e) => e.code(),
    }
}

/// New `bytes` objects, one per entry of `lens`, all written by one call of `fill` (as
/// [`bytes_filled`]: `fill` must write every byte of every buffer).
pub(crate) fn bytes_many_filled<'py>(
    py: Python<'py>,
    lens: &[usize],
    fill: impl FnOnce(&mut [&mut [std::mem::MaybeUninit<u8>]]),
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let mut objs = Vec::with_capacity(lens.len());
    let mut bufs = Vec::with_capacity(lens.len());
    for &len in lens {
        let n = pyo3::ffi::Py_ssize_t::try_from(len)
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too large"))?;
        // SAFETY: as in `bytes_filled`: a new, uninitialised `bytes` that nobody else
        // sees until we return it; its buffer lives as long as the object, which `objs`
        // holds until after `fill` returns.
        unsafe {
            let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n);
            let obj = Bound::from_owned_ptr_or_err(py, obj)?;
            let buf = pyo3::ffi::PyBytes_AsString(obj.as_ptr()).cast::<std::mem::MaybeUninit<u8>>();
            bufs.push(std::slice::from_raw_parts_mut(buf, len));
            objs.push(obj.cast_into_unchecked::<PyBytes>());
        }
    }
    fill(&mut bufs);
    Ok(objs)
}

/// A new `bytes` of `len` bytes written by `fill`, without zeroing it first as
/// `PyBytes::new_with` does: zeroing a fresh megabyte costs as much as copying into it, on
/// one thread, while the engine's bulk copy splits the copy and its page faults.
pub(crate) fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]),
) -> PyResult<Bound<'py, PyBytes>> {
    let n = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too large"))?;
    // SAFETY: a NULL source asks CPython for a new, uninitialised `bytes` of `n` bytes (a
    // new reference, or NULL with an exception set, which `from_owned_ptr_or_err` turns
    // into an error). Nobody else sees the object until we return it, so its buffer is
    // ours to fill; `fill` only writes it (through `MaybeUninit`), all `len` bytes.
    unsafe {
        let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n);
        let obj = Bound::from_owned_ptr_or_err(py, obj)?;
        let buf = pyo3::ffi::PyBytes_AsString(obj.as_ptr()).cast::<std::mem::MaybeUninit<u8>>();
        fill(std::slice::from_raw_parts_mut(buf, len));
        Ok(obj.cast_into_unchecked())
    }
}
