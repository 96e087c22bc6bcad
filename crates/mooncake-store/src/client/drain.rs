//! Leaving: `close` (unmount, or hand the segment to the master's grace period) and
//! `drain` (move every object off this client's segment first).

use super::*;

impl Client {
    /// Stops pinging, unmounts the contributed segment and stops the engine. A contributing
    /// client first drains its segment (see [`Client::drain`]) for up to
    /// [`ClientConfig::drain_timeout`], so the objects only it holds survive its exit. A
    /// durable segment ([`ClientConfig::segment_path`]) is neither drained nor unmounted:
    /// it stays for a restarted client to re-attach.
    pub async fn close(&self) -> Result<(), ErrorCode> {
        if *self.inner.stop.borrow() {
            return Ok(());
        }
        let timeout = self.inner.config.drain_timeout;
        let durable = self.inner.config.segment_path.is_some();
        if self.inner.segment.is_some() && !timeout.is_zero() && !durable {
            match self.drain(timeout).await {
                Ok(r) if r.lost.is_empty() => {
                    tracing::info!(moved = r.moved, "segment drained");
                }
                Ok(r) => tracing::warn!(
                    moved = r.moved,
                    lost = r.lost.len(),
                    first = ?r.lost.iter().take(10).collect::<Vec<_>>(),
                    "segment drained; some objects could not be moved and are lost"
                ),
                Err(ErrorCode::NotSupported) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drain the segment; its objects are lost")
                }
            }
        }
        if self.inner.stop.send_replace(true) {
            return Ok(());
        }
        // Stop the engine first: copies cut short by the drain timeout must not land after
        // the master reuses their ranges (it frees them when the segment is unmounted).
        let stopped = self
            .inner
            .engine
            .shutdown()
            .await
            .map_err(|e| map_transfer(&e));
        self.unmount_extras().await;
        if let Some((seg, _)) = &self.inner.segment {
            self.inner
                .master
                .unmount_segment(self.inner.id, seg.id)
                .await?;
        }
        stopped
    }

    /// Copies every object whose only replica is on this client's segment to other
    /// segments (the master picks the ranges and stops placing new objects here), for up to
    /// `timeout`. Reads keep working throughout; afterwards the copied objects have a
    /// replica elsewhere. A client without a segment has nothing to drain.
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, ErrorCode> {
        let Some((seg, _)) = &self.inner.segment else {
            return Ok(DrainReport::default());
        };
        let m = &self.inner.master;
        let moves = m.drain_segment_start(self.inner.id, seg.id).await?;
        let mut report = DrainReport::default();
        let mut reqs = Vec::with_capacity(moves.len());
        let mut keys = Vec::with_capacity(moves.len());
        for mv in moves {
            let Some(target) = &mv.target else {
                report.lost.push(mv.key);
                continue;
            };
            let src = [(mv.source.buffer_address, mv.source.size)];
            match self.requests(Opcode::Write, &src, target).await {
                Ok(r) => {
                    reqs.extend(r);
                    keys.push(mv.key);
                }
                Err(_) => report.lost.push(mv.key),
            }
        }
        tracing::info!(
            objects = keys.len(),
            "draining: copying objects to other segments"
        );
        let copied = match tokio::time::timeout(timeout, self.transfer_each(&reqs)).await {
            Ok(ok) => ok,
            Err(_) => {
                tracing::warn!(?timeout, "drain timed out");
                vec![false; reqs.len()]
            }
        };
        // Only successful copies are reported: a copy cut short keeps its range reserved
        // until the segment is unmounted, after the engine has stopped.
        let mut done = Vec::new();
        for (key, ok) in keys.into_iter().zip(copied) {
            if ok {
                done.push((key, true));
            } else {
                report.lost.push(key);
            }
        }
        if !done.is_empty() {
            let results = m.drain_segment_end(self.inner.id, &done).await?;
            for ((key, _), r) in done.into_iter().zip(results) {
                match r {
                    Ok(()) => report.moved += 1,
                    // Removed or rewritten during the drain: nothing was lost.
                    Err(ErrorCode::ObjectNotFound) => {}
                    Err(_) => report.lost.push(key),
                }
            }
        }
        Ok(report)
    }
}
