//! Segments a client mounts besides the one `setup` contributes (Mooncake's
//! `mount_segment` / `allocate_and_mount_segment`): each is registered memory described to
//! the master as a segment of this client. They are unmounted one by one, or all at once
//! by `close`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mooncake_transfer_engine::LocalBuffer;

use super::{every_period, ping, random_u64, Client};
use crate::types::{Segment, SegmentId};
use crate::ErrorCode;

/// One extra segment, and the memory the client owns for it (none when the caller owns it).
#[derive(Debug)]
pub(super) struct Extra {
    pub(super) segment: Segment,
    memory: Option<LocalBuffer>,
}

impl Client {
    /// Mounts `[base, base+size)`, memory already registered with this client's engine, as
    /// a segment of this client; returns its id.
    pub async fn mount_registered(&self, base: u64, size: u64) -> Result<SegmentId, ErrorCode> {
        self.mount_extra(base, size, None).await
    }

    /// Allocates `size` bytes of registered memory and mounts them as a segment of this
    /// client; returns its id. The memory is freed when the segment is unmounted.
    pub async fn allocate_and_mount(&self, size: u64) -> Result<SegmentId, ErrorCode> {
        let buffer = self
            .inner
            .engine
            .allocate_buffer(size, "cpu:0")
            .await
            .map_err(|e| {
                tracing::warn!(size, error = %e, "cannot allocate a segment");
                ErrorCode::NoAvailableHandle
            })?;
        let (base, len) = (buffer.addr(), buffer.len());
        self.mount_extra(base, len, Some(buffer)).await
    }

    async fn mount_extra(
        &self,
        base: u64,
        size: u64,
        memory: Option<LocalBuffer>,
    ) -> Result<SegmentId, ErrorCode> {
        let name = self.inner.engine.segment_name().to_owned();
        let segment = Segment {
            id: SegmentId((u128::from(random_u64()) << 64) | u128::from(random_u64())),
            name: name.clone(),
            base,
            size,
            te_endpoint: name.clone(),
            protocol: "tcp".into(),
            host_id: name.split(':').next().unwrap_or_default().to_owned(),
            durable: false,
        };
        let id = segment.id;
        self.inner.extras.lock().push(Extra { segment, memory });
        // Remounting every segment mounts the new one and marks this client alive.
        if let Err(e) = self
            .inner
            .master
            .remount_segments(self.inner.id, self.all_segments())
            .await
        {
            self.inner.extras.lock().retain(|x| x.segment.id != id);
            return Err(e);
        }
        // A client without a setup-time segment starts its heartbeat and task polling now.
        if self.inner.segment.is_none() && !self.inner.loops.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(&self.inner);
            let stop = &self.inner.stop;
            tokio::spawn(every_period(weak.clone(), stop.subscribe(), ping));
            tokio::spawn(every_period(weak, stop.subscribe(), |inner| async move {
                Client { inner }.run_tasks().await
            }));
        }
        Ok(id)
    }

    /// Unmounts an extra segment; `InvalidParams` for an id this client did not mount (or
    /// already unmounted), otherwise the master's answer. Its memory, if the client
    /// allocated it, is unregistered and freed.
    pub async fn unmount_extra(&self, id: SegmentId) -> Result<(), ErrorCode> {
        let extra = {
            let mut extras = self.inner.extras.lock();
            let i = extras
                .iter()
                .position(|x| x.segment.id == id)
                .ok_or(ErrorCode::InvalidParams)?;
            extras.remove(i)
        };
        let r = self.inner.master.unmount_segment(self.inner.id, id).await;
        if let Some(buffer) = extra.memory {
            let _ = self.inner.engine.unregister(buffer.addr()).await;
        }
        r
    }

    /// The setup-time segment, if any, and every extra one.
    pub(super) fn all_segments(&self) -> Vec<Segment> {
        let mut all: Vec<Segment> = self.segment().into_iter().cloned().collect();
        all.extend(self.inner.extras.lock().iter().map(|x| x.segment.clone()));
        all
    }

    /// Unmounts every extra segment (at close).
    pub(super) async fn unmount_extras(&self) {
        let ids: Vec<SegmentId> = self
            .inner
            .extras
            .lock()
            .iter()
            .map(|x| x.segment.id)
            .collect();
        for id in ids {
            if let Err(e) = self.unmount_extra(id).await {
                tracing::warn!(error = %e, "cannot unmount a segment");
            }
        }
    }
}
