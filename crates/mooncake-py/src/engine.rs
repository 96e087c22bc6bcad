//! `mooncake.engine.TransferEngine`: the C++ wheel's engine class (the part SGLang's
//! prefill/decode disaggregation uses) over [`mooncake_transfer_engine::TransferEngine`].
//!
//! Conventions (`transfer-engine-protocol.md` §9): `initialize` and the sync transfers
//! return 0 or -1; async submits return a batch id (0 = failure);
//! `transfer_check_status` returns 1 done, 0 pending, -1 failed, -2 timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use mooncake_transfer_engine::{
    ForeignMemory, LocalBuffer, Opcode, TransferEngine, TransferError, TransferRequest,
};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::task::JoinHandle;

use crate::addr::{address, addresses};
use crate::runtime::{block, runtime};

/// Outcome of an async transfer: done, failed, timed out.
type Job = JoinHandle<Result<(), TransferError>>;

/// A transfer engine: registers local memory and moves bytes to and from peer segments.
#[pyclass(module = "mooncake.engine", name = "TransferEngine", subclass)]
#[derive(Default)]
pub(crate) struct Engine {
    engine: Mutex<Option<TransferEngine>>,
    managed: Mutex<HashMap<u64, LocalBuffer>>,
    jobs: Mutex<HashMap<u64, Vec<Job>>>,
    next_job: AtomicU64,
}

fn status(r: &Result<(), TransferError>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            tracing::warn!("transfer failed: {e}");
            -1
        }
    }
}

impl Engine {
    fn engine(&self) -> PyResult<TransferEngine> {
        self.engine.lock().clone().ok_or_else(|| {
            PyValueError::new_err("the transfer engine is not initialized (call initialize())")
        })
    }

    /// Builds the requests of one call; one per `(local, peer, len)`.
    fn requests(
        &self,
        py: Python<'_>,
        opcode: Opcode,
        target: &str,
        triples: Vec<(u64, u64, u64)>,
    ) -> PyResult<Result<(TransferEngine, Vec<TransferRequest>), TransferError>> {
        let engine = self.engine()?;
        let handle = match block(py, engine.open_segment(target)) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let reqs = triples
            .into_iter()
            .map(|(source, target_offset, length)| TransferRequest {
                opcode,
                source,
                target: handle,
                target_offset,
                length,
            })
            .collect();
        Ok(Ok((engine, reqs)))
    }

    fn sync(
        &self,
        py: Python<'_>,
        opcode: Opcode,
        target: &str,
        triples: Vec<(u64, u64, u64)>,
    ) -> PyResult<i32> {
        Ok(match self.requests(py, opcode, target, triples)? {
            Ok((engine, reqs)) => status(&block(py, async move { engine.transfer(&reqs).await })),
            Err(e) => status(&Err(e)),
        })
    }

    fn submit(
        &self,
        py: Python<'_>,
        opcode: Opcode,
        target: &str,
        triples: Vec<(u64, u64, u64)>,
    ) -> PyResult<u64> {
        let (engine, reqs) = match self.requests(py, opcode, target, triples)? {
            Ok(x) => x,
            Err(e) => {
                status(&Err(e));
                return Ok(0);
            }
        };
        let jobs = reqs
            .into_iter()
            .map(|r| {
                let engine = engine.clone();
                runtime().spawn(async move { engine.transfer(&[r]).await })
            })
            .collect();
        let id = self.next_job.fetch_add(1, Ordering::Relaxed) + 1;
        self.jobs.lock().insert(id, jobs);
        Ok(id)
    }
}

fn triples(
    buffers: &[Bound<'_, PyAny>],
    peers: &[u64],
    lengths: &[u64],
) -> PyResult<Vec<(u64, u64, u64)>> {
    if buffers.len() != peers.len() || buffers.len() != lengths.len() {
        return Err(PyValueError::new_err(format!(
            "buffers ({}), peer_buffer_addresses ({}) and lengths ({}) differ in length",
            buffers.len(),
            peers.len(),
            lengths.len()
        )));
    }
    Ok(addresses(buffers)?
        .into_iter()
        .zip(peers.iter().zip(lengths))
        .map(|(a, (p, n))| (a, *p, *n))
        .collect())
}

fn opcode(op: i64) -> PyResult<Opcode> {
    match op {
        0 => Ok(Opcode::Read),
        1 => Ok(Opcode::Write),
        _ => Err(PyValueError::new_err(format!(
            "opcode must be TransferOpcode.Read (0) or Write (1), got {op}"
        ))),
    }
}

#[pymethods]
impl Engine {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Starts the engine as segment `local_hostname` (`host:port`) with the given metadata
    /// service; 0 or -1. `protocol` must be `tcp` here; `device_name` is ignored.
    #[pyo3(signature = (local_hostname, metadata_server, protocol="tcp", device_name=""))]
    #[allow(unused_variables)]
    fn initialize(
        &self,
        py: Python<'_>,
        local_hostname: &str,
        metadata_server: &str,
        protocol: &str,
        device_name: &str,
    ) -> i32 {
        if self.engine.lock().is_some() {
            tracing::warn!("initialize() called twice; the first engine stays in effect");
            return 0;
        }
        if !matches!(protocol, "tcp" | "rdma" | "") {
            tracing::error!("protocol {protocol:?} is not available in this build; use tcp");
            return -1;
        }
        let config = mooncake_examples::env::engine_config(local_hostname);
        runtime();
        match block(py, TransferEngine::start_uri(config, metadata_server)) {
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

    /// The handshake (RPC) port, as published in `rpc_meta`.
    fn get_rpc_port(&self) -> PyResult<u16> {
        Ok(self.engine()?.rpc_port())
    }

    /// This engine's segment name.
    fn get_local_segment_name(&self) -> PyResult<String> {
        Ok(self.engine()?.segment_name().to_owned())
    }

    /// Registers caller-owned memory; 0 or negative.
    #[pyo3(signature = (buffer_addr, capacity, location="*"))]
    fn register_memory(
        &self,
        py: Python<'_>,
        buffer_addr: Bound<'_, PyAny>,
        capacity: u64,
        location: &str,
    ) -> PyResult<i32> {
        let engine = self.engine()?;
        let addr = address(&buffer_addr)?;
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

    /// Unregisters memory (waits for transfers using it); 0 or negative.
    fn unregister_memory(&self, py: Python<'_>, buffer_addr: Bound<'_, PyAny>) -> PyResult<i32> {
        let engine = self.engine()?;
        let addr = address(&buffer_addr)?;
        Ok(match block(py, engine.unregister(addr)) {
            Ok(()) => 0,
            Err(e) => e.code(),
        })
    }

    /// Registers several ranges; 0, or the first failure's code.
    #[pyo3(signature = (buffer_addrs, capacities, location="*"))]
    fn batch_register_memory(
        &self,
        py: Python<'_>,
        buffer_addrs: Vec<Bound<'_, PyAny>>,
        capacities: Vec<u64>,
        location: &str,
    ) -> PyResult<i32> {
        if buffer_addrs.len() != capacities.len() {
            return Ok(-1);
        }
        for (a, c) in buffer_addrs.into_iter().zip(capacities) {
            let r = self.register_memory(py, a, c, location)?;
            if r != 0 {
                return Ok(r);
            }
        }
        Ok(0)
    }

    /// Unregisters several ranges; 0, or the first failure's code.
    fn batch_unregister_memory(
        &self,
        py: Python<'_>,
        buffer_addrs: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        let mut first = 0;
        for a in buffer_addrs {
            let r = self.unregister_memory(py, a)?;
            if first == 0 {
                first = r;
            }
        }
        Ok(first)
    }

    /// Writes `length` local bytes at `buffer` to `peer_buffer_address` of
    /// `target_hostname`'s segment; 0 or -1.
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
        let t = vec![(address(&buffer)?, peer_buffer_address, length)];
        self.sync(py, Opcode::Write, target_hostname, t)
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
        let t = vec![(address(&buffer)?, peer_buffer_address, length)];
        self.sync(py, Opcode::Read, target_hostname, t)
    }

    /// The generic form: `opcode` is `TransferOpcode.Read` (0) or `Write` (1).
    fn transfer_sync(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: Bound<'_, PyAny>,
        peer_buffer_address: u64,
        length: u64,
        opcode: i64,
    ) -> PyResult<i32> {
        let t = vec![(address(&buffer)?, peer_buffer_address, length)];
        self.sync(py, self::opcode(opcode)?, target_hostname, t)
    }

    /// Several writes to one peer, in parallel; 0 or -1.
    fn batch_transfer_sync_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
    ) -> PyResult<i32> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        self.sync(py, Opcode::Write, target_hostname, t)
    }

    /// Several reads from one peer, in parallel; 0 or -1.
    fn batch_transfer_sync_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
    ) -> PyResult<i32> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        self.sync(py, Opcode::Read, target_hostname, t)
    }

    /// Starts several writes; a batch id for `get_batch_transfer_status` (0 = failure).
    fn batch_transfer_async_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
    ) -> PyResult<u64> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        self.submit(py, Opcode::Write, target_hostname, t)
    }

    /// Starts several reads; a batch id (0 = failure).
    fn batch_transfer_async_read(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffers: Vec<Bound<'_, PyAny>>,
        peer_buffer_addresses: Vec<u64>,
        lengths: Vec<u64>,
    ) -> PyResult<u64> {
        let t = triples(&buffers, &peer_buffer_addresses, &lengths)?;
        self.submit(py, Opcode::Read, target_hostname, t)
    }

    /// Starts one write; an id for `transfer_check_status` (0 = failure).
    fn transfer_submit_write(
        &self,
        py: Python<'_>,
        target_hostname: &str,
        buffer: Bound<'_, PyAny>,
        peer_buffer_address: u64,
        length: u64,
    ) -> PyResult<u64> {
        let t = vec![(address(&buffer)?, peer_buffer_address, length)];
        self.submit(py, Opcode::Write, target_hostname, t)
    }

    /// Waits for the given batches; 0 when every transfer completed, else -1.
    fn get_batch_transfer_status(&self, py: Python<'_>, batch_ids: Vec<u64>) -> i32 {
        let jobs: Vec<Job> = {
            let mut table = self.jobs.lock();
            batch_ids
                .iter()
                .flat_map(|id| table.remove(id).unwrap_or_default())
                .collect()
        };
        let unknown = batch_ids.is_empty();
        let results = block(py, async move {
            let mut out = Vec::with_capacity(jobs.len());
            for j in jobs {
                out.push(j.await.unwrap_or(Err(TransferError::Shutdown)));
            }
            out
        });
        if unknown || results.iter().any(|r| status(r) != 0) {
            -1
        } else {
            0
        }
    }

    /// 1 completed, 0 pending, -1 failed (or unknown id), -2 timed out.
    fn transfer_check_status(&self, py: Python<'_>, batch_id: u64) -> i32 {
        let mut table = self.jobs.lock();
        let Some(jobs) = table.get(&batch_id) else {
            return -1;
        };
        if !jobs.iter().all(JoinHandle::is_finished) {
            return 0;
        }
        let jobs = table.remove(&batch_id).unwrap_or_default();
        drop(table);
        let results = block(py, async move {
            let mut out = Vec::with_capacity(jobs.len());
            for j in jobs {
                out.push(j.await.unwrap_or(Err(TransferError::Shutdown)));
            }
            out
        });
        if results
            .iter()
            .any(|r| matches!(r, Err(TransferError::Timeout { .. })))
        {
            -2
        } else if results.iter().all(Result::is_ok) {
            1
        } else {
            -1
        }
    }

    /// Allocates and registers `length` bytes owned by the engine; the address, or 0.
    fn allocate_managed_buffer(&self, py: Python<'_>, length: u64) -> PyResult<u64> {
        let engine = self.engine()?;
        Ok(match block(py, engine.allocate_buffer(length, "cpu:0")) {
            Ok(b) => {
                let addr = b.addr();
                self.managed.lock().insert(addr, b);
                addr
            }
            Err(e) => {
                tracing::warn!(length, "allocate_managed_buffer failed: {e}");
                0
            }
        })
    }

    /// Unregisters and frees a managed buffer; 0 or -1.
    #[pyo3(signature = (buffer_addr, length=0))]
    #[allow(unused_variables)]
    fn free_managed_buffer(&self, py: Python<'_>, buffer_addr: u64, length: u64) -> PyResult<i32> {
        let engine = self.engine()?;
        let Some(buffer) = self.managed.lock().remove(&buffer_addr) else {
            return Ok(-1);
        };
        Ok(status(&block(py, async move {
            let r = engine.unregister(buffer.addr()).await;
            drop(buffer);
            r
        })))
    }

    /// Copies `length` bytes out of a managed buffer.
    fn read_bytes_from_buffer<'py>(
        &self,
        py: Python<'py>,
        buffer_addr: u64,
        length: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (buffer, offset) = self.managed_range(buffer_addr, length as u64)?;
        crate::store::bytes_filled(py, length, |out| buffer.read_at_uninit(offset, out))
    }

    /// Copies `src_data[:length]` into a managed buffer; 0.
    #[pyo3(signature = (buffer_addr, src_data, length=None))]
    fn write_bytes_to_buffer(
        &self,
        buffer_addr: u64,
        src_data: &[u8],
        length: Option<usize>,
    ) -> PyResult<i32> {
        let n = length.unwrap_or(src_data.len()).min(src_data.len());
        let (buffer, offset) = self.managed_range(buffer_addr, n as u64)?;
        buffer.write_at(offset, &src_data[..n]);
        Ok(0)
    }

    /// The first buffer address a peer segment publishes (0 if it has none).
    fn get_first_buffer_address(&self, py: Python<'_>, segment_name: &str) -> PyResult<u64> {
        let engine = self.engine()?;
        Ok(match block(py, engine.fetch_descriptor(segment_name)) {
            Ok(d) => d.buffers.first().map_or(0, |b| b.addr),
            Err(e) => {
                tracing::warn!(segment = segment_name, "cannot fetch the descriptor: {e}");
                0
            }
        })
    }

    /// Drains received notifications as `(name, msg)` pairs.
    fn get_notifies_raw(&self) -> PyResult<Vec<(String, String)>> {
        Ok(self
            .engine()?
            .drain_notifications()
            .into_iter()
            .map(|n| (n.name, n.msg))
            .collect())
    }

    /// Stops the engine and removes its metadata; 0, also when called twice.
    fn shutdown(&self, py: Python<'_>) -> i32 {
        let Some(engine) = self.engine.lock().take() else {
            return 0;
        };
        status(&block(py, async move { engine.shutdown().await }))
    }
}

impl Engine {
    fn managed_range(&self, addr: u64, len: u64) -> PyResult<(LocalBuffer, u64)> {
        self.managed
            .lock()
            .values()
            .find(|b| addr >= b.addr() && addr + len <= b.addr() + b.len())
            .map(|b| (b.clone(), addr - b.addr()))
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "[{addr:#x}, +{len}) is not inside a buffer from allocate_managed_buffer"
                ))
            })
    }
}
