//! Drain jobs (`python-api-2.md` §10): an operator drains segments through the master's
//! admin API; the master moves every object off them with move tasks (executed by each
//! source segment's owner), a few at a time, and marks the segments DRAINED when none is
//! left.

use std::collections::HashMap;
use std::time::Instant;

use mooncake_store::{ErrorCode, Pin, SegmentId, TaskId, TaskKind, TaskStatus};

use super::{MasterCore, State};

/// Failures after which a unit (key, source segment) is given up.
const UNIT_ATTEMPTS: u32 = 3;

/// Where a drain job is (Mooncake's `JobStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Accepted, not yet planned.
    Created = 0,
    /// Being planned.
    Planning = 1,
    /// Moving objects.
    Running = 2,
    /// Every object moved; the segments are DRAINED.
    Succeeded = 3,
    /// Only units that failed for good are left; the segments are back in service.
    Failed = 4,
    /// Canceled; the segments are back in service.
    Canceled = 5,
}

impl JobStatus {
    /// Mooncake's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Planning => "PLANNING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
        }
    }

    fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// Mooncake's `SegmentStatus` of a mounted segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentStatus {
    /// Takes new objects.
    Ok = 1,
    /// Being drained: readable, takes nothing new.
    Draining = 2,
    /// Drained: empty, takes nothing new.
    Drained = 3,
    /// Its owner went silent (a durable segment waiting for a restart).
    Unmounting = 5,
}

impl SegmentStatus {
    /// Mooncake's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Draining => "DRAINING",
            Self::Drained => "DRAINED",
            Self::Unmounting => "UNMOUNTING",
        }
    }
}

/// What the query route shows of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainJobView {
    /// The job's id.
    pub id: TaskId,
    /// Where it is.
    pub status: JobStatus,
    /// Creation, Unix ms.
    pub created_at_ms: u64,
    /// Last change, Unix ms.
    pub updated_at_ms: u64,
    /// The segments drained (names).
    pub segments: Vec<String>,
    /// Objects moved.
    pub succeeded_units: u64,
    /// Objects given up after repeated failures.
    pub failed_units: u64,
    /// Objects that could not be moved in the last round (pinned, leased, busy, no target).
    pub blocked_units: u64,
    /// Moves in flight.
    pub active_units: u64,
    /// Bytes moved.
    pub migrated_bytes: u64,
    /// A human-readable state.
    pub message: String,
}

#[derive(Debug)]
struct Job {
    view: DrainJobView,
    sources: Vec<SegmentId>,
    targets: Vec<String>,
    max_concurrency: u64,
    /// Move tasks in flight: (key, source, object size).
    active: HashMap<TaskId, (String, SegmentId, u64)>,
    /// Failures per unit.
    failures: HashMap<(String, SegmentId), u32>,
}

/// Every drain job the master knows.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    by_id: HashMap<TaskId, Job>,
}

impl Jobs {
    /// Every drain job kept, in no order.
    pub(crate) fn views(&self) -> impl Iterator<Item = &DrainJobView> {
        self.by_id.values().map(|j| &j.view)
    }
}

impl MasterCore {
    /// A mounted segment's status; `SegmentNotFound` for an unknown name.
    pub fn segment_status(&self, name: &str) -> Result<SegmentStatus, ErrorCode> {
        let m = self
            .segments
            .values()
            .find(|m| m.segment.name == name)
            .ok_or(ErrorCode::SegmentNotFound)?;
        Ok(if m.detached_until.is_some() {
            SegmentStatus::Unmounting
        } else if m.drained {
            SegmentStatus::Drained
        } else if m.draining {
            SegmentStatus::Draining
        } else {
            SegmentStatus::Ok
        })
    }

    fn segment_id(&self, name: &str) -> Option<SegmentId> {
        self.segments
            .iter()
            .find(|(_, m)| m.segment.name == name)
            .map(|(id, _)| *id)
    }

    /// Creates a drain job of `segments` (to `targets`, or to every segment in service when
    /// empty): the sources become DRAINING at once. `InvalidParams` for no source, a
    /// duplicate, a target that is also a source or a concurrency of 0; `SegmentNotFound`
    /// for a segment not mounted; `UnavailableInCurrentStatus` for a source not OK or a
    /// target that takes no new objects.
    pub fn create_drain_job(
        &mut self,
        segments: &[String],
        targets: &[String],
        max_concurrency: u64,
        wall_ms: u64,
    ) -> Result<TaskId, ErrorCode> {
        let mut seen = std::collections::HashSet::new();
        if segments.is_empty()
            || max_concurrency == 0
            || !segments.iter().all(|s| seen.insert(s))
            || targets.iter().any(|t| segments.contains(t))
        {
            return Err(ErrorCode::InvalidParams);
        }
        for s in segments.iter().chain(targets) {
            self.segment_status(s)?;
        }
        for s in segments.iter().chain(targets) {
            if self.segment_status(s)? != SegmentStatus::Ok {
                return Err(ErrorCode::UnavailableInCurrentStatus);
            }
        }
        let sources: Vec<SegmentId> = segments.iter().filter_map(|s| self.segment_id(s)).collect();
        for id in &sources {
            if let Some(m) = self.segments.get_mut(id) {
                m.draining = true;
            }
        }
        let id = TaskId::from_halves(self.rng.next_u64(), self.rng.next_u64());
        self.jobs.by_id.insert(
            id,
            Job {
                view: DrainJobView {
                    id,
                    status: JobStatus::Created,
                    created_at_ms: wall_ms,
                    updated_at_ms: wall_ms,
                    segments: segments.to_vec(),
                    succeeded_units: 0,
                    failed_units: 0,
                    blocked_units: 0,
                    active_units: 0,
                    migrated_bytes: 0,
                    message: "Drain job created".to_owned(),
                },
                sources,
                targets: targets.to_vec(),
                max_concurrency,
                active: HashMap::new(),
                failures: HashMap::new(),
            },
        );
        Ok(id)
    }

    /// A job's state; `JobNotFound` for an unknown id.
    pub fn query_drain_job(&self, id: TaskId) -> Result<DrainJobView, ErrorCode> {
        self.jobs
            .by_id
            .get(&id)
            .map(|j| j.view.clone())
            .ok_or(ErrorCode::JobNotFound)
    }

    /// Cancels an unfinished job with no move in flight; its segments go back in service.
    pub fn cancel_drain_job(&mut self, id: TaskId, wall_ms: u64) -> Result<(), ErrorCode> {
        let job = self.jobs.by_id.get(&id).ok_or(ErrorCode::JobNotFound)?;
        if job.view.status.finished() || !job.active.is_empty() {
            return Err(ErrorCode::UnavailableInCurrentStatus);
        }
        self.end_job(id, JobStatus::Canceled, "Drain job canceled", wall_ms);
        Ok(())
    }

    fn end_job(&mut self, id: TaskId, status: JobStatus, message: &str, wall_ms: u64) {
        let Some(job) = self.jobs.by_id.get_mut(&id) else {
            return;
        };
        job.view.status = status;
        job.view.message = message.to_owned();
        job.view.updated_at_ms = wall_ms;
        job.view.active_units = 0;
        let sources = job.sources.clone();
        for s in sources {
            if let Some(m) = self.segments.get_mut(&s) {
                m.draining = false;
                m.drained = status == JobStatus::Succeeded;
            }
        }
    }

    /// One scheduling round of every unfinished job (Mooncake runs it every 500 ms):
    /// collects the outcome of finished moves, starts new ones up to the job's concurrency
    /// and ends the job when nothing is left on its segments (or only units that failed
    /// for good).
    pub fn process_drain_jobs(&mut self, now: Instant, wall_ms: u64) {
        let ids: Vec<TaskId> = self
            .jobs
            .by_id
            .iter()
            .filter(|(_, j)| !j.view.status.finished())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.process_job(id, now, wall_ms);
        }
    }

    fn process_job(&mut self, id: TaskId, now: Instant, wall_ms: u64) {
        // Outcomes of the moves in flight.
        let Some(job) = self.jobs.by_id.get(&id) else {
            return;
        };
        let mut done = Vec::new();
        for (task, unit) in &job.active {
            match self.tasks.by_id.get(task).map(|t| t.info.status) {
                Some(TaskStatus::Success) => done.push((*task, unit.clone(), true)),
                Some(TaskStatus::Failed) | None => done.push((*task, unit.clone(), false)),
                _ => {}
            }
        }
        let Some(job) = self.jobs.by_id.get_mut(&id) else {
            return;
        };
        for (task, (key, seg, size), ok) in done {
            job.active.remove(&task);
            if ok {
                job.view.succeeded_units += 1;
                job.view.migrated_bytes += size;
            } else {
                let n = job.failures.entry((key, seg)).or_insert(0);
                *n += 1;
                if *n == UNIT_ATTEMPTS {
                    job.view.failed_units += 1;
                }
            }
        }
        if job.view.status == JobStatus::Created {
            job.view.status = JobStatus::Planning;
        }
        // Units left: every object with a replica on a source segment.
        let sources = job.sources.clone();
        let mut units: Vec<(String, SegmentId, u64)> = Vec::new();
        for (key, o) in &self.objects {
            for s in &o.slots {
                if sources.contains(&s.segment) {
                    units.push((key.clone(), s.segment, o.size));
                }
            }
        }
        units.sort();
        let busy: std::collections::HashSet<&str> = self
            .tasks
            .by_id
            .values()
            .filter(|t| !t.info.status.is_finished())
            .map(|t| t.key.as_str())
            .collect();
        let busy: std::collections::HashSet<String> = busy.into_iter().map(str::to_owned).collect();
        let Some(job) = self.jobs.by_id.get(&id) else {
            return;
        };
        let (targets, cap) = (job.targets.clone(), job.max_concurrency);
        let mut active = job.active.len() as u64;
        let in_flight: Vec<(String, SegmentId)> = job
            .active
            .values()
            .map(|(k, s, _)| (k.clone(), *s))
            .collect();
        let failures = job.failures.clone();
        let mut blocked = 0u64;
        let mut terminal = 0usize;
        let mut planned = Vec::new();
        for (key, seg, size) in &units {
            let unit = (key.clone(), *seg);
            if in_flight.contains(&unit) {
                continue;
            }
            if failures.get(&unit).copied().unwrap_or(0) >= UNIT_ATTEMPTS {
                terminal += 1;
                continue;
            }
            let Some(o) = self.objects.get(key) else {
                continue;
            };
            let target = self.drain_target(key, &sources, &targets);
            if o.pin == Pin::Hard
                || o.lease_until > now
                || o.state != State::Complete
                || busy.contains(key)
                || target.is_none()
            {
                blocked += 1;
                continue;
            }
            if active >= cap {
                continue;
            }
            if let (Some(t), Some(src)) = (target, self.segments.get(seg)) {
                planned.push((key.clone(), *seg, *size, src.segment.name.clone(), t));
                active += 1;
            }
        }
        let mut started = Vec::new();
        for (key, seg, size, src, target) in planned {
            match self.queue_task(TaskKind::Move, &key, src, vec![target], now, wall_ms) {
                Ok(task) => started.push((task, (key, seg, size))),
                Err(e) => tracing::debug!(key, error = %e, "drain: cannot queue a move"),
            }
        }
        let Some(job) = self.jobs.by_id.get_mut(&id) else {
            return;
        };
        job.active.extend(started);
        job.view.blocked_units = blocked;
        job.view.active_units = job.active.len() as u64;
        job.view.updated_at_ms = wall_ms;
        if job.active.is_empty() {
            if units.is_empty() {
                self.end_job(
                    id,
                    JobStatus::Succeeded,
                    "Drain job finished successfully",
                    wall_ms,
                );
                return;
            }
            if terminal == units.len() {
                let msg = "Drain job failed: unrecoverable units remain";
                self.end_job(id, JobStatus::Failed, msg, wall_ms);
                return;
            }
        }
        job.view.status = JobStatus::Running;
        job.view.message = "Drain job running".to_owned();
    }

    /// The target for moving `key` off `sources`: among `targets` (or every segment when
    /// empty), one in service, not a source and not already holding the key, least used
    /// first.
    fn drain_target(&self, key: &str, sources: &[SegmentId], targets: &[String]) -> Option<String> {
        let o = self.objects.get(key)?;
        // Replicas never share a segment name, and extra segments of one client share its
        // name: exclude by name, the sources' and the held ones.
        let taken: Vec<&str> = o
            .slots
            .iter()
            .map(|s| s.segment)
            .chain(sources.iter().copied())
            .filter_map(|id| self.segments.get(&id).map(|m| m.segment.name.as_str()))
            .collect();
        self.segments
            .iter()
            .filter(|(id, m)| {
                !sources.contains(id)
                    && !taken.contains(&m.segment.name.as_str())
                    && !m.draining
                    && !m.drained
                    && m.detached_until.is_none()
                    && (targets.is_empty() || targets.contains(&m.segment.name))
                    && m.alloc.free_bytes() >= o.size
            })
            .min_by(|(_, a), (_, b)| {
                let ratio = |m: &super::Mounted| {
                    m.alloc.allocated_bytes() as f64 / m.segment.size.max(1) as f64
                };
                ratio(a).total_cmp(&ratio(b))
            })
            .map(|(_, m)| m.segment.name.clone())
    }
}
