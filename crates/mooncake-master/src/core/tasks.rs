//! Copy and move tasks (`python-api-2.md` §3.1-3.2): queued here, fetched and executed by
//! the client owning the source segment, reported back. Target ranges are reserved at
//! fetch and become replicas only when the executor reports a successful copy.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mooncake_store::{
    ClientId, ErrorCode, ReplicaDescriptor, SegmentId, TaskAssignment, TaskId, TaskInfo, TaskKind,
    TaskStatus,
};

use super::{MasterCore, Slot, State};

/// Most tasks queued (`--max_total_pending_tasks`).
const MAX_PENDING: usize = 10_000;
/// Most finished tasks remembered (`--max_total_finished_tasks`); the oldest go first.
const MAX_FINISHED: usize = 10_000;
/// A task pending or processing longer than this fails (`--pending_task_timeout_sec`,
/// `--processing_task_timeout_sec`).
const TASK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub(super) struct Task {
    pub(super) info: TaskInfo,
    pub(super) key: String,
    /// The segment copied from (name).
    source: String,
    /// The segments copied to (names).
    targets: Vec<String>,
    updated: Instant,
    /// While processing: ranges reserved on the targets, and the object's version then.
    reserved: Vec<Slot>,
    version: u64,
}

/// Every task the master knows.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    pub(super) by_id: HashMap<TaskId, Task>,
    /// Finished ids, oldest first (for pruning).
    finished: VecDeque<TaskId>,
}

impl Tasks {
    /// Forgets every reserved range on a segment that is going away (its allocator goes
    /// with it; a remount of the same id starts a new one, where the old handles must never
    /// be freed).
    pub(super) fn forget_segment(&mut self, segment: SegmentId) {
        for t in self.by_id.values_mut() {
            t.reserved.retain(|s| s.segment != segment);
        }
    }
}

impl MasterCore {
    fn segment_by_name(&self, name: &str) -> Option<(SegmentId, bool)> {
        self.segments
            .iter()
            .find(|(_, m)| m.segment.name == name)
            .map(|(id, m)| (*id, !m.draining && !m.drained && m.detached_until.is_none()))
    }

    fn slot_segment_name(&self, slot: &Slot) -> Option<&str> {
        self.segments
            .get(&slot.segment)
            .map(|m| m.segment.name.as_str())
    }

    pub(super) fn queue_task(
        &mut self,
        kind: TaskKind,
        key: &str,
        source: String,
        targets: Vec<String>,
        now: Instant,
        wall_ms: u64,
    ) -> Result<TaskId, ErrorCode> {
        let (sid, _) = self
            .segment_by_name(&source)
            .ok_or(ErrorCode::InternalError)?;
        let owner = self
            .segments
            .get(&sid)
            .map(|m| m.client)
            .ok_or(ErrorCode::InternalError)?;
        let pending = self
            .tasks
            .by_id
            .values()
            .filter(|t| t.info.status == TaskStatus::Pending)
            .count();
        if pending >= MAX_PENDING {
            return Err(ErrorCode::TaskPendingLimitExceeded);
        }
        let id = TaskId::from_halves(self.rng.next_u64(), self.rng.next_u64());
        self.tasks.by_id.insert(
            id,
            Task {
                info: TaskInfo {
                    id,
                    kind,
                    status: TaskStatus::Pending,
                    created_at_ms: wall_ms,
                    updated_at_ms: wall_ms,
                    assigned_client: owner,
                    message: String::new(),
                },
                key: key.to_owned(),
                source,
                targets,
                updated: now,
                reserved: Vec::new(),
                version: 0,
            },
        );
        Ok(id)
    }

    /// Checks the targets of a task: each mounted (`InvalidParams`) and taking new objects
    /// (`UnavailableInCurrentStatus`).
    fn check_targets(&self, targets: &[String]) -> Result<(), ErrorCode> {
        let found: Vec<_> = targets.iter().map(|t| self.segment_by_name(t)).collect();
        if found.iter().any(Option::is_none) {
            return Err(ErrorCode::InvalidParams);
        }
        if found.iter().flatten().any(|(_, ok)| !ok) {
            return Err(ErrorCode::UnavailableInCurrentStatus);
        }
        Ok(())
    }

    /// Queues a copy of `key` to `targets`, executed by the owner of one of its replicas'
    /// segments, picked at random.
    pub fn create_copy_task(
        &mut self,
        key: &str,
        targets: &[String],
        now: Instant,
        wall_ms: u64,
    ) -> Result<TaskId, ErrorCode> {
        if targets.is_empty() {
            return Err(ErrorCode::InvalidParams);
        }
        let o = self.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        // Mooncake's code for a replica pinned by an offload: its demotion copies it now.
        if o.disk_busy {
            return Err(ErrorCode::ObjectReplicaBusy);
        }
        self.check_targets(targets)?;
        let sources: Vec<String> = o
            .slots
            .iter()
            .filter_map(|s| self.slot_segment_name(s).map(str::to_owned))
            .collect();
        if sources.is_empty() {
            return Err(ErrorCode::InternalError);
        }
        let source = sources[self.rng.below(sources.len())].clone();
        self.queue_task(TaskKind::Copy, key, source, targets.to_vec(), now, wall_ms)
    }

    /// Queues a move of `key`'s replica on `source` to `target`, executed by `source`'s owner.
    pub fn create_move_task(
        &mut self,
        key: &str,
        source: &str,
        target: &str,
        now: Instant,
        wall_ms: u64,
    ) -> Result<TaskId, ErrorCode> {
        let o = self.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        if o.disk_busy {
            return Err(ErrorCode::ObjectReplicaBusy);
        }
        if source == target {
            return Err(ErrorCode::InvalidParams);
        }
        self.check_targets(&[target.to_owned()])?;
        if !o
            .slots
            .iter()
            .any(|s| self.slot_segment_name(s) == Some(source))
        {
            return Err(ErrorCode::InvalidParams);
        }
        let targets = vec![target.to_owned()];
        self.queue_task(
            TaskKind::Move,
            key,
            source.to_owned(),
            targets,
            now,
            wall_ms,
        )
    }

    /// A task's state; `TaskNotFound` for an unknown or pruned id.
    pub fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        self.tasks
            .by_id
            .get(&id)
            .map(|t| t.info.clone())
            .ok_or(ErrorCode::TaskNotFound)
    }

    fn finish(
        &mut self,
        id: TaskId,
        status: TaskStatus,
        message: String,
        now: Instant,
        wall_ms: u64,
    ) {
        let Some(t) = self.tasks.by_id.get_mut(&id) else {
            return;
        };
        let reserved = std::mem::take(&mut t.reserved);
        t.info.status = status;
        t.info.message = message;
        t.info.updated_at_ms = wall_ms;
        t.updated = now;
        self.free_slots(&reserved);
        self.tasks.finished.push_back(id);
        while self.tasks.finished.len() > MAX_FINISHED {
            if let Some(old) = self.tasks.finished.pop_front() {
                self.tasks.by_id.remove(&old);
            }
        }
    }

    /// The pending tasks assigned to `client`, now processing, each with the ranges
    /// reserved for it on its targets (targets that already hold a replica get none).
    /// A task whose object is gone, or whose ranges cannot be reserved, fails at once.
    pub fn fetch_tasks(
        &mut self,
        client: ClientId,
        now: Instant,
        wall_ms: u64,
    ) -> Vec<TaskAssignment> {
        let mut ids: Vec<TaskId> = self
            .tasks
            .by_id
            .values()
            .filter(|t| t.info.status == TaskStatus::Pending && t.info.assigned_client == client)
            .map(|t| t.info.id)
            .collect();
        ids.sort_by_key(|id| self.tasks.by_id.get(id).map(|t| t.info.created_at_ms));
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.reserve(id) {
                Ok(a) => {
                    if let Some(t) = self.tasks.by_id.get_mut(&id) {
                        t.info.status = TaskStatus::Processing;
                        t.info.updated_at_ms = wall_ms;
                        t.updated = now;
                    }
                    out.push(a);
                }
                Err(e) => self.finish(id, TaskStatus::Failed, failure_message(e), now, wall_ms),
            }
        }
        out
    }

    /// Reserves the target ranges of a pending task.
    fn reserve(&mut self, id: TaskId) -> Result<TaskAssignment, ErrorCode> {
        let t = self.tasks.by_id.get(&id).ok_or(ErrorCode::TaskNotFound)?;
        let (key, source, targets, kind) = (
            t.key.clone(),
            t.source.clone(),
            t.targets.clone(),
            t.info.kind,
        );
        let o = self.objects.get(&key).ok_or(ErrorCode::ObjectNotFound)?;
        if o.state != State::Complete {
            return Err(ErrorCode::ReplicaIsNotReady);
        }
        let (size, version) = (o.size, o.version);
        let src = o
            .slots
            .iter()
            .find(|s| self.slot_segment_name(s) == Some(source.as_str()))
            .copied()
            .ok_or(ErrorCode::InvalidReplica)?;
        let held: Vec<String> = o
            .slots
            .iter()
            .filter_map(|s| self.slot_segment_name(s).map(str::to_owned))
            .collect();
        let mut reserved = Vec::new();
        let mut wanted: Vec<&String> = Vec::with_capacity(targets.len());
        for t in &targets {
            if !held.contains(t) && *t != source && !wanted.contains(&t) {
                wanted.push(t);
            }
        }
        for name in wanted {
            let slot = self.segment_by_name(name).and_then(|(sid, ok)| {
                let m = self.segments.get_mut(&sid).filter(|_| ok)?;
                let a = m.alloc.allocate(size)?;
                if let Some(j) = self.journal.as_mut() {
                    j.note_allocation();
                }
                let slot = Slot {
                    segment: sid,
                    handle: a.handle,
                    offset: a.offset,
                };
                Some((slot, a.size))
            });
            match slot {
                Some((s, bytes)) => {
                    self.allocated += bytes;
                    reserved.push(s);
                }
                None => {
                    self.free_slots(&reserved);
                    return Err(ErrorCode::NoAvailableHandle);
                }
            }
        }
        let source = self
            .describe(&src, size, version)
            .ok_or(ErrorCode::InvalidReplica)?;
        let target_descs: Vec<ReplicaDescriptor> = reserved
            .iter()
            .filter_map(|s| self.describe(s, size, version))
            .collect();
        if let Some(t) = self.tasks.by_id.get_mut(&id) {
            t.reserved = reserved;
            t.version = version;
        }
        Ok(TaskAssignment {
            id,
            kind,
            key,
            source,
            targets: target_descs,
        })
    }

    /// The executor's report. A successful copy of an object that is still the same
    /// incarnation adds the reserved ranges as replicas (a move then drops the source
    /// replica, freed once its read lease ends); anything else frees them and fails the task.
    pub fn finish_task(
        &mut self,
        client: ClientId,
        id: TaskId,
        copied: bool,
        message: &str,
        now: Instant,
        wall_ms: u64,
    ) -> Result<(), ErrorCode> {
        let t = self
            .tasks
            .by_id
            .get_mut(&id)
            .ok_or(ErrorCode::TaskNotFound)?;
        if t.info.assigned_client != client {
            return Err(ErrorCode::IllegalClient);
        }
        if t.info.status != TaskStatus::Processing {
            return Err(ErrorCode::InvalidParams);
        }
        if !copied {
            let msg = message.to_owned();
            self.finish(id, TaskStatus::Failed, msg, now, wall_ms);
            return Ok(());
        }
        let (key, source, kind, version) =
            (t.key.clone(), t.source.clone(), t.info.kind, t.version);
        let reserved = std::mem::take(&mut t.reserved);
        let same = self
            .objects
            .get(&key)
            .is_some_and(|o| o.version == version && o.state == State::Complete);
        if !same {
            self.free_slots(&reserved);
            let msg = failure_message(ErrorCode::ObjectNotFound);
            self.finish(id, TaskStatus::Failed, msg, now, wall_ms);
            return Ok(());
        }
        // A reserved range on a segment name the object already holds (a concurrent copy
        // got there first) is freed, not added: replicas keep distinct names.
        let mut names: Vec<String> = self
            .objects
            .get(&key)
            .map(|o| {
                o.slots
                    .iter()
                    .filter_map(|s| self.slot_segment_name(s).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut added = Vec::new();
        let mut dup = Vec::new();
        for slot in reserved {
            match self.slot_segment_name(&slot).map(str::to_owned) {
                Some(n) if !names.contains(&n) => {
                    names.push(n);
                    added.push(slot);
                }
                _ => dup.push(slot),
            }
        }
        self.free_slots(&dup);
        let source_slot = self.objects.get(&key).and_then(|o| {
            o.slots
                .iter()
                .position(|s| self.slot_segment_name(s) == Some(source.as_str()))
        });
        if let Some(o) = self.objects.get_mut(&key) {
            o.slots.extend(added);
            // A move drops its source only while another replica remains.
            if kind == TaskKind::Move && o.slots.len() > 1 {
                if let Some(i) = source_slot {
                    let s = o.slots.remove(i);
                    self.delayed_frees
                        .push((o.lease_until.max(now), s.segment, s.handle));
                }
            }
        }
        self.journal_key(&key);
        self.finish(
            id,
            TaskStatus::Success,
            "Task completed successfully".to_owned(),
            now,
            wall_ms,
        );
        Ok(())
    }

    /// Fails tasks pending or processing for longer than the task timeout.
    pub(super) fn expire_tasks(&mut self, now: Instant) {
        let stale: Vec<(TaskId, &'static str, u64)> = self
            .tasks
            .by_id
            .values()
            .filter(|t| now.saturating_duration_since(t.updated) > TASK_TIMEOUT)
            .filter_map(|t| {
                // The wall clock now, from the task's last change and the time since.
                let since = now.saturating_duration_since(t.updated).as_millis() as u64;
                let wall_ms = t.info.updated_at_ms + since;
                match t.info.status {
                    TaskStatus::Pending => Some((t.info.id, "pending timeout", wall_ms)),
                    TaskStatus::Processing => Some((t.info.id, "processing timeout", wall_ms)),
                    _ => None,
                }
            })
            .collect();
        let release_at = now + self.config.put_start_release_timeout;
        for (id, why, wall_ms) in stale {
            // The executor may still be writing into what it was given: those ranges are
            // reused only after the release timeout, as for an abandoned put.
            if let Some(t) = self.tasks.by_id.get_mut(&id) {
                for s in std::mem::take(&mut t.reserved) {
                    self.delayed_frees.push((release_at, s.segment, s.handle));
                }
            }
            self.finish(id, TaskStatus::Failed, why.to_owned(), now, wall_ms);
        }
    }
}

/// The message of a task that failed with `e`, as Mooncake's executor words it.
pub(crate) fn failure_message(e: ErrorCode) -> String {
    format!("{} (max retries reached: 0)", e.name())
}
