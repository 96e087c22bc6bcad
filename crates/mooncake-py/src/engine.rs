//! `mooncake.engine.TransferEngine`: the C++ wheel's engine class (`python-api-2.md` §9)
//! over [`mooncake_transfer_engine::TransferEngine`].
//!
//! Conventions: `initialize` and the sync transfers return 0 or -1; async submits return
//! a batch id (0 = failure); `transfer_check_status` returns 1 done, 0 pending, -1 failed,
//! -2 timeout. The methods the wheel declares without argument names take positional
//! arguments only. Before `initialize` (where the C++ wheel crashes) every method returns
//! its failure value: -1, 0, `None`, `[]` or `b''`.

use std::collections::HashMap;

use mooncake_transfer_engine::handshake::Notification;
use mooncake_transfer_engine::{
    ForeignMemory, LocalBuffer, Opcode, SegmentHandle, Topology, TransferEngine, TransferRequest,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::addr::{address, addresses};
use crate::jobs::Jobs;
use crate::notify::TransferNotify;
use crate::runtime::{block, runtime};

/// Largest size class of the wheel's managed-buffer allocator (256 MiB); larger requests
/// get exactly their length.
const MAX_SIZE_CLASS: u64 = 256 << 20;
/// Smallest size class (8 KiB).
const MIN_SIZE_CLASS: u64 = 8 << 10;

/// A transfer engine: registers local memory and moves bytes to and from peer segments.
#[pyclass(module = "mooncake.engine", name = "TransferEngine", subclass)]
#[derive(Default)]
pub(crate) struct Engine {
    engine: Mutex<Option<TransferEngine>>,
    managed: Mutex<HashMap<u64, LocalBuffer>>,
    jobs: Jobs,
}

/// `get_engine()`: the engine itself, opaque to Python (it has no methods and no
/// constructor), to hand to `MooncakeDistributedStore.setup(..., engine=...)`.
#[pyclass(module = "mooncake.engine", name = "InnerTransferEngine", frozen)]
pub(crate) struct InnerEngine {
    #[allow(dead_code)] // held so the object keeps the engine it stands for alive
    engine: TransferEngine,
}

/// `(local address, peer address, length)` of one request.
type Triple = (u64, u64, u64);

impl Engine {
    /// The engine, or `None` (with a warning naming `method`) before `initialize`.
    fn live(&self, method: &str) -> Option<TransferEngine> {
        let engine = self.engine.lock().clone();
        if engine.is_none() {
            tracing::warn!("{method}: the transfer engine is not initialized (call initialize())");
        }
        engine
    }

    fn start(&self, py: Python<'_>, local_hostname: &str, metadata: &str, protocol: &str) -> i32 {
        if self.engine.lock().is_some() {
            tracing::warn!("initialize() called twice; the first engine stays in effect");
            return 0;
        }
        if protocol == "xgmi" {
            tracing::error!("protocol 'xgmi' is not exposed in the Python API; use 'hip' instead");
            return -1;
        }
        if !matches!(protocol, "tcp" | "rdma" | "") {
            tracing::warn!("protocol {protocol:?} is not available in this build; using tcp");
        }
        let config = mooncake_cli::env::engine_config(local_hostname);
        runtime();
        match block(py, TransferEngine::start_uri(config, metadata)) {
            Ok(e) => {
                *self.engine.lock() = Some(e);
                0
            }
            Err(e) => {
                tracing::error!("cannot start the transfer engine {local_hostname}: {e}");
                -1
            }
        }
    }

    /// Opens `target` and builds one request per triple; `None` (logged) on failure.
    async fn requests(
        engine: &TransferEngine,
        opcode: Opcode,
        target: &str,
        triples: Vec<Triple>,
    ) -> Option<Vec<TransferRequest>> {
        let handle = match engine.open_segment(target).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(segment = target, "cannot open the segment: {e}");
                return None;
            }
        };
        let requests = triples
            .into_iter()
            .map(|(source, target_offset, length)| TransferRequest {
                opcode,
                source,
                target: handle,
                target_offset,
                length,
            })
            .collect();
        Some(requests)
    }

    /// A synchronous transfer (then the notification, if any); 0 or -1.
    fn sync(
        &self,
        py: Python<'_>,
        opcode: Opcode,
        target: &str,
        triples: Option<Vec<Triple>>,
        notify: Option<Notification>,
    ) -> i32 {
        let Some(engine) = self.live("transfer") else {
            return -1;
        };
        let Some(triples) = triples else {
            return -1;
        };
        block(py, async move {
            let Some(reqs) = Self::requests(&engine, opcode, target, triples).await else {
                return -1;
            };
            if let Err(e) = engine.transfer(&reqs).await {
                tracing::warn!(segment = target, "transfer failed: {e}");
                return -1;
            }
            let Some(n) = notify else { return 0 };
            match engine.send_notify(target, &n).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(
                        segment = target,
                        "the transfer completed but the notification was not delivered: {e}"
                    );
                    -1
                }
            }
        })
    }

    /// Starts an asynchronous batch; its id, or 0 on failure.
    fn submit(
        &self,
        py: Python<'_>,
        opcode: Opcode,
        target: &str,
        triples: Option<Vec<Triple>>,
    ) -> u64 {
        let Some(engine) = self.live("transfer") else {
            return 0;
        };
        let Some(triples) = triples else {
            return 0;
        };
        let requests = block(py, Self::requests(&engine, opcode, target, triples));
        requests.map_or(0, |reqs| self.jobs.submit(&engine, reqs))
    }
}

/// The requests of a batch call; `None` (logged) when the lists differ in length.
fn triples(
    buffers: &[Bound<'_, PyAny>],
    peers: &[u64],
    lengths: &[u64],
) -> PyResult<Option<Vec<Triple>>> {
    if buffers.len() != peers.len() || buffers.len() != lengths.len() {
        tracing::error!(
            buffers = buffers.len(),
            peer_buffer_addresses = peers.len(),
            lengths = lengths.len(),
            "buffers, peer_buffer_addresses and lengths have different size"
        );
        return Ok(None);
    }
    Ok(Some(
        addresses(buffers)?
            .into_iter()
            .zip(peers.iter().zip(lengths))
            .map(|(a, (p, n))| (a, *p, *n))
            .collect(),
    ))
}

fn one(buffer: &Bound<'_, PyAny>, peer: u64, length: u64) -> PyResult<Option<Vec<Triple>>> {
    Ok(Some(vec![(address(buffer)?, peer, length)]))
}

/// `TransferOpcode.Read` / `Write` (or the ints 0 / 1).
fn opcode(op: &Bound<'_, PyAny>) -> PyResult<Opcode> {
    let n: i64 = op
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("opcode must be a TransferOpcode, not {op}")))?;
    match n {
        0 => Ok(Opcode::Read),
        1 => Ok(Opcode::Write),
        _ => Err(PyValueError::new_err(format!(
            "opcode must be TransferOpcode.Read (0) or Write (1), got {n}"
        ))),
    }
}

fn notification(notify: Option<PyRef<'_, TransferNotify>>) -> Option<Notification> {
    notify.map(|n| Notification::from(&*n))
}

/// `metadata_server` with `metadata_type://` added when it has no scheme (the wheel's
/// `buildConnString`); `P2PHANDSHAKE` stays as it is.
fn connection_string(metadata_server: &str, metadata_type: &str) -> String {
    if metadata_server == "P2PHANDSHAKE" || metadata_server.contains("://") {
        metadata_server.to_owned()
    } else {
        format!("{metadata_type}://{metadata_server}")
    }
}

/// The managed-buffer allocator's size for a request: the wheel's size class (a power of
/// two from 8 KiB to 256 MiB), or the length itself above 256 MiB.
fn size_class(length: u64) -> u64 {
    if length > MAX_SIZE_CLASS {
        length
    } else {
        length.next_power_of_two().max(MIN_SIZE_CLASS)
    }
}

#[pymethods]
impl Engine {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Starts the engine as segment `local_hostname` with the given metadata service
    /// (`P2PHANDSHAKE`, `http://...`; a value without a scheme means etcd); 0 or -1.
    /// Data moves over TCP whatever `protocol` names (but `xgmi`, which fails);
    /// `device_name` is ignored.
    #[pyo3(signature = (local_hostname, metadata_server, protocol, device_name, /))]
    #[allow(unused_variables)]
    fn initialize(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
    ) -> i32 {
        self.start(py, local_hostname, metadata_server, protocol)
    }

    /// Like `initialize`; `metadata_type` is the scheme added to a `metadata_server`
    /// without `://`.
    #[pyo3(signature = (local_hostname, metadata_server, protocol, device_name, metadata_type, /))]
    #[allow(unused_variables)]
    fn initialize_ext(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
        metadata_type: &str,
    ) -> i32 {
        let metadata = connection_string(metadata_server, metadata_type);
        self.start(py, local_hostname, &metadata, protocol)
    }

    /// The handshake (RPC) port, as published in `rpc_meta`; -1 before `initialize`.
    fn get_rpc_port(&self) -> i32 {
        self.live("get_rpc_port")
            .map_or(-1, |e| i32::from(e.rpc_port()))
    }

    /// The engine as an opaque `InnerTransferEngine`, or `None` before `initialize`.
    fn get_engine(&self) -> Option<InnerEngine> {
        let engine = self.engine.lock().clone()?;
        Some(InnerEngine { engine })
    }

    /// An int identifying the engine (its address in this process), 0 before `initialize`.
    fn get_engine_ptr(&self) -> usize {
        self.engine
            .lock()
            .as_ref()
            .map_or(0, TransferEngine::instance_addr)
    }

    /// This host's topology matrix as JSON text: one `cpu:<numa node>` entry per NUMA
    /// node, each `[preferred NICs, other NICs]`. This build drives no RDMA NIC, so the
    /// lists are empty and the `device_name` filter changes nothing.
    #[pyo3(signature = (device_name=None))]
    #[allow(unused_variables)]
    fn get_local_topology(&self, device_name: Option<&str>) -> String {
        Topology::discover().to_styled_json()
    }

    /// 0: there is no EFA transport to warm up in this build.
    #[pyo3(signature = (segment_name))]
    #[allow(unused_variables)]
    fn warmup_efa_segment(&self, segment_name: &str) -> i32 {
        0
    }

    /// Registers caller-owned memory; 0, or -1 (invalid, or not initialised) or -7
    /// (overlaps a registered range).
    #[pyo3(signature = (buffer_addr, capacity, location="*"))]
    fn register_memory(
        &self,
        py: Python<'_>,
        buffer_addr: Bound<'_, PyAny>,
        capacity: u64,
        location: &str,
    ) -> PyResult<i32> {
        let addr = address(&buffer_addr)?;
        let Some(engine) = self.live("register_memory") else {
            return Ok(-1);
        };
        // SAFETY: as with the C++ wheel, the caller vouches that the range is memory it
        // owns and keeps alive until `unregister_memory`; peers read and write it then.
        let memory = unsafe { ForeignMemory::new(addr, capacity) };
        Ok(match block(py, engine.register_memory(memory, location)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(addr, capacity, "register_memory failed: {e}");
                e.code()
            }
        })
    }

    /// Unregisters memory (waits for transfers using it); 0, or -3 when `buffer_addr`
    /// starts no registered range.
    #[pyo3(signature = (buffer_addr, /))]
    fn unregister_memory(&self, py: Python<'_>, buffer_addr: Bound<'_, PyAny>) -> PyResult<i32> {
        let addr = address(&buffer_addr)?;
        let Some(engine) = self.live("unregister_memory") else {
            return Ok(-1);
        };
        Ok(match block(py, engine.unregister(addr)) {
            Ok(()) => 0,
            Err(e) => e.code(),
        })
    }

    /// Registers several ranges; 0 (also for none), or the first failure's code.
    #[pyo3(signature = (buffer_addresses, capacities, location="*"))]
    fn batch_register_memory(
        &self,
        py: Python<'_>,
        buffer_addresses: Vec<Bound<'_, PyAny>>,
        capacities: Vec<u64>,
        location: &str,
    ) -> PyResult<i32> {
        if self.live("batch_register_memory").is_none() {
            return Ok(-1);
        }
        if buffer_addresses.len() != capacities.len() {
            tracing::error!("buffer_addresses and capacities have different size");
            return Ok(-1);
        }
        for (a, c) in buffer_addresses.into_iter().zip(capacities) {
            let r = self.register_memory(py, a, c, location)?;
            if r != 0 {
                return Ok(r);
            }
        }
        Ok(0)
    }

    /// Unregisters several ranges; 0 (also for none), or the first failure's code.
    #[pyo3(signature = (buffer_addresses, /))]
    fn batch_unregister_memory(
        &self,
        py: Python<'_>,
        buffer_addresses: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        if self.live("batch_unregister_memory").is_none() {
            return Ok(-1);
        }
        let mut first = 0;
        for a in buffer_addresses {
            let r = self.unregister_memory(py, a)?;
            if first == 0 {
                first = r;
            }
        }
        Ok(first)
    }

    /// Writes `length` local bytes at `buffer` to `peer_buffer_address` of
    /// `target_hostname`'s segment; 0 or -1. `transport_hint` is ignored.
    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, transport_hint=""))]
    #[allow(unused_variables)]
    fn transfer_sync_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: Bound<'_, PyAny>,
        peer_buffer_address: u64,
        length: u64,
        transport_hint: &str,
    ) -> PyResult<i32> {
        let t = one(&buffer, peer_buffer_address, length)?;
        Ok(self.sync(py, Opcode::Write, target_hostname, t, None))
    }

    /// Reads `length` bytes at `peer_buffer_address` of `target_hostname` into `buffer`.
    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, transport_hint=""))]
    #[allow(unused_variables)]
    fn transfer_sync_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: Bound<'_, PyAny>,
        peer_buffer_address: u64,
        length: u64,
        transport_hint: &str,
    ) -> PyResult<i32> {
        let t = one(&buffer, peer_buffer_address, length)?;
        Ok(self.sync(py, Opcode::Read, target_hostname, t, None))
    }

    /// The generic form: `opcode` is `TransferOpcode.Read` or `Write`. With `notify`, the
    /// peer queues `(notify.name, notify.msg)` for its `get_notifies()` once the
    /// transfer completed; -1 if it could not be delivered.
    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, opcode, notify=None, transport_hint=""))]
    #[allow(unused_variables, clippy::too_many_arguments)]
    fn transfer_sync(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: Bound<'_, PyAny>,
        peer_buffer_address: u64,
        length: u64,
        opcode: Bound<'_, PyAny>,
        notify: Option<PyRef<'_, TransferNotify>>,
        transport_hint: &str,
    ) -> PyResult<i32> {
        let op = self::opcode(&opcode)?;
        let t = one(&buffer, peer_buffer_address, length)?;
        Ok(self.sync(py, op, target_hostname, t, notification(notify)))
    }

    /// Several writes to one peer, in parallel; 0 or -1 (also for lists of different
    /// lengths).
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint=""))]
    #[allow(unused_variables)]
    fn batch_transfer_sync_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
        transport_hint: &str,
    ) -> PyResult<i32> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        Ok(self.sync(py, Opcode::Write, target_hostname, t, None))
    }

    /// Several reads from one peer, in parallel; 0 or -1.
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint=""))]
    #[allow(unused_variables)]
    fn batch_transfer_sync_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
        transport_hint: &str,
    ) -> PyResult<i32> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        Ok(self.sync(py, Opcode::Read, target_hostname, t, None))
    }

    /// The generic batch form, with an optional notification as `transfer_sync`.
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, opcode, notify=None, transport_hint=""))]
    #[allow(unused_variables, clippy::too_many_arguments)]
    fn batch_transfer_sync(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
        opcode: Bound<'_, PyAny>,
        notify: Option<PyRef<'_, TransferNotify>>,
        transport_hint: &str,
    ) -> PyResult<i32> {
        let op = self::opcode(&opcode)?;
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        Ok(self.sync(py, op, target_hostname, t, notification(notify)))
    }

    /// Starts several writes; a batch id for `get_batch_transfer_status` (0 = failure,
    /// also for lists of different lengths).
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint=""))]
    #[allow(unused_variables)]
    fn batch_transfer_async_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
        transport_hint: &str,
    ) -> PyResult<u64> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        Ok(self.submit(py, Opcode::Write, target_hostname, t))
    }

    /// Starts several reads; a batch id (0 = failure).
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, transport_hint=""))]
    #[allow(unused_variables)]
    fn batch_transfer_async_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
        transport_hint: &str,
    ) -> PyResult<u64> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        Ok(self.submit(py, Opcode::Read, target_hostname, t))
    }

    /// The generic async form; a batch id (0 = failure).
    #[pyo3(signature = (target_hostname, buffers, peer_buffer_addresses, lengths, opcode, transport_hint=""))]
    #[allow(unused_variables, clippy::too_many_arguments)]
    fn batch_transfer_async(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
        opcode: Bound<'_, PyAny>,
        transport_hint: &str,
    ) -> PyResult<u64> {
        let op = self::opcode(&opcode)?;
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        Ok(self.submit(py, op, target_hostname, t))
    }

    /// Starts one write; an id for `transfer_check_status` (0 = failure).
    #[pyo3(signature = (target_hostname, buffer, peer_buffer_address, length, transport_hint=""))]
    #[allow(unused_variables)]
    fn transfer_submit_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: Bound<'_, PyAny>,
        peer_buffer_address: u64,
        length: u64,
        transport_hint: &str,
    ) -> PyResult<u64> {
        let t = one(&buffer, peer_buffer_address, length)?;
        Ok(self.submit(py, Opcode::Write, target_hostname, t))
    }

    /// Waits for the given batches and forgets them; 0 when every transfer completed
    /// (also for none), -1 when one failed or an id is unknown.
    #[pyo3(signature = (batch_ids, /))]
    fn get_batch_transfer_status(&self, py: Python<'_>, batch_ids: Vec<u64>) -> i32 {
        self.jobs.wait_all(py, &batch_ids)
    }

    /// 1 completed, 0 pending, -1 failed (or unknown id), -2 timed out.
    #[pyo3(signature = (batch_id, /))]
    fn transfer_check_status(&self, py: Python<'_>, batch_id: u64) -> i32 {
        self.jobs.poll(py, batch_id)
    }

    /// Allocates and registers memory owned by the engine; the address, or 0. The buffer
    /// holds at least `length` bytes: the wheel's size class (a power of two from 8 KiB
    /// to 256 MiB), or exactly `length` above that.
    #[pyo3(signature = (length, /))]
    fn allocate_managed_buffer(&self, py: Python<'_>, length: u64) -> u64 {
        let Some(engine) = self.live("allocate_managed_buffer") else {
            return 0;
        };
        match block(py, engine.allocate_buffer(size_class(length), "cpu:0")) {
            Ok(b) => {
                let addr = b.addr();
                self.managed.lock().insert(addr, b);
                addr
            }
            Err(e) => {
                tracing::warn!(length, "allocate_managed_buffer failed: {e}");
                0
            }
        }
    }

    /// Unregisters and frees a managed buffer; always 0 (an address that is not one is
    /// logged and ignored).
    #[pyo3(signature = (buffer_addr, length, /))]
    fn free_managed_buffer(&self, py: Python<'_>, buffer_addr: u64, length: u64) -> i32 {
        let Some(buffer) = self.managed.lock().remove(&buffer_addr) else {
            tracing::warn!(
                buffer_addr,
                length,
                "free_managed_buffer: not a managed buffer"
            );
            return 0;
        };
        if let Some(engine) = self.live("free_managed_buffer") {
            if let Err(e) = block(py, engine.unregister(buffer.addr())) {
                tracing::warn!(buffer_addr, "free_managed_buffer: {e}");
            }
        }
        drop(buffer);
        0
    }

    /// Copies `length` bytes at `buffer_addr`, which must lie in memory registered with
    /// this engine (managed buffers included; `ValueError` otherwise); `b''` before
    /// `initialize`.
    #[pyo3(signature = (buffer_addr, length, /))]
    fn read_bytes_from_buffer<'py>(
        &self,
        py: Python<'py>,
        buffer_addr: u64,
        length: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let Some(engine) = self.live("read_bytes_from_buffer") else {
            return Ok(PyBytes::new(py, b""));
        };
        let range = engine
            .direct_range(SegmentHandle::LOCAL, buffer_addr, length)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .ok_or_else(|| PyValueError::new_err("the local segment is not reachable"))?;
        crate::pybytes::bytes_filled(py, length, |out| range.read_into_uninit(out))
    }

    /// Copies the first `length` bytes of `src_data` (`bytes`, or a `str` as UTF-8) to
    /// `buffer_addr`, which must lie in registered memory; 0. `ValueError` when the range
    /// is not registered or `src_data` is shorter than `length`; -1 before `initialize`.
    #[pyo3(signature = (buffer_addr, src_data, length, /))]
    fn write_bytes_to_buffer(
        &self,
        buffer_addr: u64,
        src_data: Bound<'_, PyAny>,
        length: usize,
    ) -> PyResult<i32> {
        let text;
        let data: &[u8] = if let Ok(s) = src_data.cast::<PyString>() {
            text = s.to_cow()?;
            text.as_bytes()
        } else if let Ok(b) = src_data.cast::<PyBytes>() {
            b.as_bytes()
        } else {
            return Err(PyTypeError::new_err(format!(
                "src_data must be bytes or str, not {}",
                src_data.get_type().name()?
            )));
        };
        let Some(data) = data.get(..length) else {
            return Err(PyValueError::new_err(format!(
                "length {length} exceeds the {} bytes of src_data",
                data.len()
            )));
        };
        let Some(engine) = self.live("write_bytes_to_buffer") else {
            return Ok(-1);
        };
        match engine.write_direct(SegmentHandle::LOCAL, buffer_addr, data) {
            Ok(true) => Ok(0),
            Ok(false) => Err(PyValueError::new_err("the local segment is not reachable")),
            Err(e) => Err(PyValueError::new_err(e.to_string())),
        }
    }

    /// The first buffer address a segment publishes; 0 if it is unknown or has none.
    #[pyo3(signature = (segment_name, /))]
    fn get_first_buffer_address(&self, py: Python<'_>, segment_name: &str) -> u64 {
        let Some(engine) = self.live("get_first_buffer_address") else {
            return 0;
        };
        match block(py, engine.fetch_descriptor(segment_name)) {
            Ok(d) => d.buffers.first().map_or(0, |b| b.addr),
            Err(e) => {
                tracing::warn!(segment = segment_name, "cannot fetch the descriptor: {e}");
                0
            }
        }
    }

    /// Drains the received notifications, oldest first; `[]` if none.
    fn get_notifies(&self) -> Vec<TransferNotify> {
        let Some(engine) = self.live("get_notifies") else {
            return Vec::new();
        };
        engine
            .drain_notifications()
            .into_iter()
            .map(TransferNotify::from)
            .collect()
    }

    /// Sends a JSON-RPC probe to peer to verify reachability. Returns 0 on success,
    /// non-zero on failure: -1 not initialised, -200 no `rpc_meta` for the peer (central
    /// metadata), -101 its host does not resolve, -102 connect or exchange failed, -103
    /// the reply is not JSON.
    #[pyo3(signature = (peer_server_name))]
    fn send_probe(&self, py: Python<'_>, peer_server_name: &str) -> i32 {
        let Some(engine) = self.live("send_probe") else {
            return -1;
        };
        match block(py, engine.send_probe(peer_server_name)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(peer = peer_server_name, "send_probe: {e}");
                e.code()
            }
        }
    }

    /// Stops the engine and removes its metadata; 0, also when called twice.
    fn shutdown(&self, py: Python<'_>) -> i32 {
        let Some(engine) = self.engine.lock().take() else {
            return 0;
        };
        match block(py, async move { engine.shutdown().await }) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!("shutdown: {e}");
                -1
            }
        }
    }
}
