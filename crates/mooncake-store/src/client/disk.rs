//! A holder's side of its disk tier: register the tier with the master (with the records
//! a scan found), long-poll for demote/load/delete tasks, run them on a bounded pool of
//! blocking threads, and report outcomes and LRU evictions as soon as they happen.
//!
//! Nothing here shares a task with the liveness ping: a slow disk delays only disk tasks.

use std::sync::Weak;

use tokio::sync::{mpsc, Semaphore};

use super::*;
use crate::disk::{DiskOutcome, DiskRecord, DiskTask, DiskTaskKind, DiskTaskResult, DiskTier};
use crate::master_api::BatchResult;

/// How long one poll may wait at the master for a task.
const POLL_WAIT: Duration = Duration::from_secs(1);

/// Finished tasks waiting to be reported, at most (the pool is much smaller).
const REPORT_QUEUE: usize = 4096;

impl Client {
    /// The disk tier, when this client has one ([`ClientConfig::disk`]).
    pub fn disk_tier(&self) -> Option<&Arc<DiskTier>> {
        self.inner.disk.as_ref()
    }
}

/// Keys of one batch read waiting for their disk loads, asked together.
const LOAD_GROUP: usize = 8;

/// Groups of a batch's keys whose lists arrive once their disk loads landed: the key
/// indices and the master's answer for them.
pub(super) type LoadGroups = tokio::task::JoinSet<(Vec<usize>, BatchResult<ReplicaList>)>;

impl Client {
    /// For a batch read whose lookup ([`MasterApi::batch_get_replica_list_or_load`])
    /// answered some keys `ReplicaIsNotReady` (their loads from a holder's disk are
    /// queued): asks again for those keys with the waiting call, [`LOAD_GROUP`] keys per
    /// call and every call at once, so that each group comes back as soon as its loads
    /// landed and the reader serves it while the next groups load. Dropping the set stops
    /// the calls.
    pub(super) fn await_loads(
        &self,
        keys: &[String],
        lists: &[Result<ReplicaList, ErrorCode>],
    ) -> LoadGroups {
        let pending: Vec<usize> = (0..keys.len())
            .filter(|&i| lists.get(i) == Some(&Err(ErrorCode::ReplicaIsNotReady)))
            .collect();
        let mut set = LoadGroups::new();
        for group in pending.chunks(LOAD_GROUP) {
            let master = self.inner.master.clone();
            let idx = group.to_vec();
            let ks: Vec<String> = group.iter().map(|&i| keys[i].clone()).collect();
            set.spawn(async move { (idx, master.batch_get_replica_list(&ks).await) });
        }
        set
    }
}

/// Registers the tier with the master; deletes the records it calls stale.
pub(super) async fn mount_tier(inner: &Inner, tier: &DiskTier) -> Result<(), ErrorCode> {
    let Some((seg, _)) = &inner.segment else {
        return Err(ErrorCode::InvalidParams);
    };
    let stale = inner
        .master
        .mount_disk_tier(inner.id, seg.id, tier.config().capacity, tier.records())
        .await?;
    for r in &stale {
        tier.delete(&r.key, r.version);
    }
    if !stale.is_empty() {
        tracing::info!(
            stale = stale.len(),
            "deleted disk records the master has newer versions of"
        );
    }
    Ok(())
}

/// Spawns the poller and the reporter of the tier (stopped with the client).
pub(super) fn spawn(inner: &Arc<Inner>, tier: Arc<DiskTier>) {
    let (tx, rx) = mpsc::channel(REPORT_QUEUE);
    let weak = Arc::downgrade(inner);
    tokio::spawn(poll_loop(weak.clone(), inner.stop.subscribe(), tier, tx));
    tokio::spawn(report_loop(weak, inner.stop.subscribe(), rx));
}

type Report = (Option<DiskTaskResult>, Vec<DiskRecord>);

async fn poll_loop(
    weak: Weak<Inner>,
    mut stop: watch::Receiver<bool>,
    tier: Arc<DiskTier>,
    tx: mpsc::Sender<Report>,
) {
    let pool = Arc::new(Semaphore::new(tier.config().io_threads.max(1)));
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let Some(seg) = inner.segment.as_ref().map(|(s, _)| s.id) else {
            return;
        };
        let polled = tokio::select! {
            r = inner.master.poll_disk_tasks(inner.id, seg, POLL_WAIT) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match polled {
            Ok(tasks) => {
                for task in tasks {
                    let Ok(permit) = pool.clone().acquire_owned().await else {
                        return;
                    };
                    let (inner, tier, tx) = (inner.clone(), tier.clone(), tx.clone());
                    tokio::spawn(async move {
                        let report = run(&inner, tier, task).await;
                        drop(permit);
                        let _ = tx.send(report).await;
                    });
                }
            }
            // A restarted master, or one that lost the tier with the segment: mount again.
            Err(ErrorCode::SegmentNotFound) => {
                if let Err(e) = mount_tier(&inner, &tier).await {
                    tracing::debug!(error = %e, "disk tier remount failed; retrying");
                    drop(inner);
                    pause(&mut stop).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "disk task poll failed");
                drop(inner);
                pause(&mut stop).await;
            }
        }
    }
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn report_loop(
    weak: Weak<Inner>,
    mut stop: watch::Receiver<bool>,
    mut rx: mpsc::Receiver<Report>,
) {
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(first) = first else { return };
        let (mut results, mut evicted) = (Vec::new(), Vec::new());
        let mut add = |(r, ev): Report| {
            results.extend(r);
            evicted.extend(ev);
        };
        add(first);
        while let Ok(more) = rx.try_recv() {
            add(more);
        }
        let Some(inner) = weak.upgrade() else { return };
        let Some(seg) = inner.segment.as_ref().map(|(s, _)| s.id) else {
            return;
        };
        if let Err(e) = inner
            .master
            .finish_disk_tasks(inner.id, seg, &results, &evicted)
            .await
        {
            // The master times the tasks out; the records stay and are reported again at
            // the next mount.
            tracing::warn!(error = %e, results = results.len(), "cannot report disk tasks");
        }
    }
}

/// Runs one task on the blocking pool.
async fn run(inner: &Inner, tier: Arc<DiskTier>, task: DiskTask) -> Report {
    let Some((seg, buffer)) = inner.segment.as_ref() else {
        return (None, Vec::new());
    };
    let in_segment = task.address >= seg.base
        && task
            .address
            .checked_add(task.size)
            .is_some_and(|end| end <= seg.base + seg.size);
    let offset = task.address.wrapping_sub(seg.base);
    let buffer = buffer.clone();
    let id = task.id;
    let outcome = tokio::task::spawn_blocking(move || match task.kind {
        DiskTaskKind::Delete => {
            tier.delete(&task.key, task.version);
            (DiskOutcome::Done, Vec::new())
        }
        DiskTaskKind::Demote => tier.demote(&task.key, task.version, task.size, |out| {
            if in_segment {
                buffer.read_at(offset, out);
            }
            in_segment
        }),
        DiskTaskKind::Load if in_segment => (
            tier.load_into(&task.key, task.version, task.size, &buffer, offset),
            Vec::new(),
        ),
        DiskTaskKind::Load => (DiskOutcome::Failed, Vec::new()),
    })
    .await
    .unwrap_or((DiskOutcome::Failed, Vec::new()));
    (
        Some(DiskTaskResult {
            id,
            outcome: outcome.0,
        }),
        outcome.1,
    )
}
