//! Publication: the segment descriptor and `rpc_meta` this engine writes to the metadata
//! service, and the loop that writes them again when the service lost them.

use std::sync::Weak;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mooncake_metadata::MetadataError;
use tokio::sync::watch;

use super::{lookup, Inner, TransferEngine};
use crate::descriptor::{timestamp, BufferDesc, RpcMeta, SegmentDescriptor};
use crate::handshake;
use crate::TransferError;

impl TransferEngine {
    /// The descriptor this engine publishes now.
    pub fn descriptor(&self) -> SegmentDescriptor {
        let name = &self.inner.config.local_server_name;
        let buffers = self
            .inner
            .registry
            .read()
            .iter_in_registration_order()
            .map(|e| BufferDesc {
                addr: e.addr,
                length: e.len,
                lkey: vec![],
                name: name.clone(),
                rkey: vec![],
                shm_path: e.value.shm_path().map(|p| p.display().to_string()),
            })
            .collect::<Vec<_>>();
        let shm_boot_id = buffers
            .iter()
            .any(|b| b.shm_path.is_some())
            .then(|| self.inner.boot_id.clone())
            .flatten();
        SegmentDescriptor {
            buffers,
            devices: vec![],
            name: name.clone(),
            priority_matrix: None,
            protocol: "tcp".into(),
            rdma_server_name: String::new(),
            shm_boot_id,
            tcp_data_host: Some(self.inner.config.advertised_host()),
            tcp_data_port: self.inner.data_addr.port(),
            tcp_proto_version: 2,
            timestamp: timestamp(SystemTime::now()),
        }
    }

    fn rpc_meta(&self) -> RpcMeta {
        RpcMeta {
            ip_or_host_name: self.inner.config.advertised_host(),
            rpc_port: self.rpc_port(),
        }
    }

    /// Publishes `rpc_meta`. A Mooncake metadata server refuses to replace an existing
    /// `rpc_meta` (HTTP 400), which makes an engine restarted after a crash unable to start
    /// under its old name. If the old owner no longer answers probes, its stale entry is
    /// removed and ours written; a live owner is reported as a name clash.
    pub(super) async fn publish_rpc_meta(&self) -> Result<(), TransferError> {
        let key = self.inner.config.key_space.rpc_meta(self.segment_name());
        let value = Bytes::from(self.rpc_meta().to_json());
        let err = match self.inner.metadata.put(&key, value.clone()).await {
            Ok(()) => return Ok(()),
            Err(e @ MetadataError::Status { status: 400, .. }) => e,
            Err(e) => return Err(e.into()),
        };
        let old = self.inner.metadata.get(&key).await?;
        let old = old.and_then(|b| RpcMeta::from_json(self.segment_name(), &b).ok());
        if let Some(old) = old {
            let alive = match lookup(&old.ip_or_host_name, old.rpc_port).await {
                Ok(addr) => handshake::probe(addr, Duration::from_secs(1)).await.is_ok(),
                Err(_) => false,
            };
            if alive {
                return Err(TransferError::InvalidArgument(format!(
                    "segment name {:?} is in use by a live engine at {}:{} ({err})",
                    self.segment_name(),
                    old.ip_or_host_name,
                    old.rpc_port
                )));
            }
            tracing::warn!(segment = %self.segment_name(), "replacing the stale rpc_meta of a dead engine");
        }
        self.inner.metadata.delete(&key).await?;
        self.inner.metadata.put(&key, value).await?;
        Ok(())
    }

    /// Publishes the current descriptor (whole document, as Mooncake does).
    pub async fn publish(&self) -> Result<(), TransferError> {
        let _serial = self.inner.publish_lock.lock().await;
        let key = self.inner.config.key_space.segment(self.segment_name());
        self.inner
            .metadata
            .put(&key, Bytes::from(self.descriptor().to_json()))
            .await?;
        Ok(())
    }

    /// Re-publishes whatever is missing or stale in the metadata service.
    pub async fn republish_if_missing(&self) -> Result<bool, TransferError> {
        let ks = &self.inner.config.key_space;
        let mut repaired = false;
        let rpc_key = ks.rpc_meta(self.segment_name());
        if self.inner.metadata.get(&rpc_key).await?.is_none() {
            self.publish_rpc_meta().await?;
            repaired = true;
        }
        let key = ks.segment(self.segment_name());
        let current = self.inner.metadata.get(&key).await?;
        let ours = self.descriptor();
        let stale = match current {
            None => true,
            Some(bytes) => SegmentDescriptor::from_json(self.segment_name(), &bytes)
                .map(|d| d.buffers != ours.buffers || d.tcp_data_port != ours.tcp_data_port)
                .unwrap_or(true),
        };
        if stale {
            self.publish().await?;
            repaired = true;
        }
        Ok(repaired)
    }
}

/// Every `republish_interval`, re-publishes whatever the metadata service lost, until
/// `stop` fires or the engine is gone (the loop holds it only weakly).
pub(super) async fn republish_loop(engine: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = match engine.upgrade() {
            Some(inner) => inner.config.republish_interval,
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let engine_ref = TransferEngine { inner };
        match engine_ref.republish_if_missing().await {
            Ok(true) => {
                tracing::info!(segment = %engine_ref.segment_name(), "re-published missing metadata")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "metadata check failed"),
        }
    }
}
