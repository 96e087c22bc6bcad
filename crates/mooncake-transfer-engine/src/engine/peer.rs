//! Peers: opening a segment by name, fetching its descriptor, and picking the transports
//! that reach it (the one place that names the [`Transport`] implementations).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{lookup, SegmentHandle, TransferEngine};
use crate::codec::ProtoVersion;
use crate::descriptor::{RpcMeta, SegmentDescriptor};
use crate::memory::Region;
use crate::transport::{Route, ShmTransport, TcpTransport, Transport};
use crate::TransferError;

/// An opened peer segment and the transports that reach it.
#[derive(Debug)]
pub(super) struct PeerSegment {
    pub(super) name: String,
    /// Transports that reach part of the peer's memory with a copy, asked in order for
    /// every request before the carrier (same-host shared memory).
    copiers: RwLock<Vec<Box<dyn Transport>>>,
    /// The transport that carries every request no copier reaches.
    carrier: RwLock<Arc<dyn Transport>>,
}

impl PeerSegment {
    fn new(name: &str, transports: Transports) -> Self {
        Self {
            name: name.to_owned(),
            copiers: RwLock::new(transports.copiers),
            carrier: RwLock::new(transports.carrier),
        }
    }

    /// The mapped region and local address of `[remote, remote+len)`, from the first copy
    /// transport that reaches it (see [`Transport::mapped`]); `None`: use the carrier.
    pub(super) fn mapped(&self, remote: u64, len: u64, write: bool) -> Option<(Arc<Region>, u64)> {
        self.copiers
            .read()
            .iter()
            .find_map(|t| t.mapped(remote, len, write))
    }

    /// The current carrier.
    pub(super) fn carrier(&self) -> Arc<dyn Transport> {
        self.carrier.read().clone()
    }

    pub(super) fn set_carrier(&self, carrier: Arc<dyn Transport>) {
        *self.carrier.write() = carrier;
    }

    pub(super) fn set_copiers(&self, copiers: Vec<Box<dyn Transport>>) {
        *self.copiers.write() = copiers;
    }
}

/// The transports that reach one peer, picked from its descriptor by
/// [`TransferEngine::connect`].
pub(super) struct Transports {
    /// Copy transports, in order of preference (possibly none).
    pub(super) copiers: Vec<Box<dyn Transport>>,
    /// The carrier.
    pub(super) carrier: Arc<dyn Transport>,
}

impl TransferEngine {
    /// Opens a peer segment by name: fetches and validates its descriptor, caches it.
    /// A leading `/` is stripped. Opening the same name twice returns the same handle.
    pub async fn open_segment(&self, name: &str) -> Result<SegmentHandle, TransferError> {
        let name = name.strip_prefix('/').unwrap_or(name);
        if name.is_empty() {
            return Err(TransferError::InvalidArgument(
                "segment name is empty".into(),
            ));
        }
        if name == self.segment_name() {
            return Ok(SegmentHandle::LOCAL);
        }
        if let Some(h) = self.inner.names.lock().get(name) {
            return Ok(*h);
        }
        let transports = self.connect(name).await?;
        let mut names = self.inner.names.lock();
        if let Some(h) = names.get(name) {
            return Ok(*h);
        }
        let handle = SegmentHandle(self.inner.next_segment.fetch_add(1, Ordering::Relaxed));
        let seg = Arc::new(PeerSegment::new(name, transports));
        self.inner.segments.write().insert(handle.0, seg);
        names.insert(name.to_owned(), handle);
        Ok(handle)
    }

    /// Fetches and validates the current descriptor of a segment by name.
    pub async fn fetch_descriptor(&self, name: &str) -> Result<SegmentDescriptor, TransferError> {
        let name = name.strip_prefix('/').unwrap_or(name);
        let key = self.inner.config.key_space.segment(name);
        let bytes = self
            .inner
            .metadata
            .get(&key)
            .await?
            .ok_or_else(|| TransferError::SegmentNotFound(name.to_owned()))?;
        SegmentDescriptor::from_json(name, &bytes)
    }

    /// Fetches a segment's descriptor and picks the transports that reach it: the carrier
    /// its `protocol` names, and, for a peer on this host (same boot id), the copy path
    /// through its shared-memory buffers. A new transport is one more arm here.
    pub(super) async fn connect(&self, name: &str) -> Result<Transports, TransferError> {
        let desc = self.fetch_descriptor(name).await?;
        let carrier: Arc<dyn Transport> = match desc.protocol.as_str() {
            "tcp" => Arc::new(TcpTransport::new(
                self.inner.tcp.clone(),
                self.tcp_route(name, &desc).await?,
                self.inner.config.slice_size,
            )),
            _ => {
                return Err(TransferError::NotSupportedTransport {
                    segment: name.to_owned(),
                    protocol: desc.protocol,
                })
            }
        };
        let same_host = self.inner.config.shared_memory
            && self.inner.boot_id.is_some()
            && desc.shm_boot_id == self.inner.boot_id;
        let mut copiers: Vec<Box<dyn Transport>> = Vec::new();
        if same_host {
            copiers.extend(ShmTransport::map(name, &desc).map(|t| Box::new(t) as _));
        }
        Ok(Transports { copiers, carrier })
    }

    /// Where a TCP peer's data listener is (its descriptor's host, else its `rpc_meta`
    /// host) and the framing both sides speak.
    async fn tcp_route(
        &self,
        name: &str,
        desc: &SegmentDescriptor,
    ) -> Result<Route, TransferError> {
        let host = match desc.tcp_data_host.clone().filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => {
                let ks = &self.inner.config.key_space;
                let meta = self
                    .inner
                    .metadata
                    .get(&ks.rpc_meta(name))
                    .await?
                    .ok_or_else(|| TransferError::SegmentNotFound(format!("{name} (rpc_meta)")))?;
                RpcMeta::from_json(name, &meta)?.ip_or_host_name
            }
        };
        let data = lookup(&host, desc.tcp_data_port).await.map_err(|reason| {
            TransferError::InvalidDescriptor {
                segment: name.to_owned(),
                reason,
            }
        })?;
        let version = if desc.tcp_proto_version >= 2
            && self.inner.config.max_proto_version == ProtoVersion::V2
        {
            ProtoVersion::V2
        } else {
            ProtoVersion::V1
        };
        Ok(Route { data, version })
    }
}
