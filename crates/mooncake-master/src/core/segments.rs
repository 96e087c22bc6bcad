//! Segments and liveness: mounting (with a durable or restored segment's owner coming
//! back), unmounting, heartbeats and the periodic tick.

use super::*;

impl MasterCore {
    /// Mounts a segment; idempotent for the same id and client.
    pub fn mount_segment(
        &mut self,
        client: ClientId,
        segment: Segment,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        if segment.size == 0
            || segment.name.is_empty()
            || segment.base.checked_add(segment.size).is_none()
        {
            return Err(ErrorCode::InvalidParams);
        }
        if let Some(m) = self.segments.get_mut(&segment.id) {
            if m.client == client {
                // A restored segment (or a durable one detached while its owner was cut
                // off) comes back when its owner remounts it with the same id and size.
                if m.detached_until.is_some() {
                    if segment.size != m.segment.size {
                        return Err(ErrorCode::InvalidParams);
                    }
                    let id = segment.id;
                    m.detached_until = None;
                    self.history.name_segment(id, &segment.name);
                    let changed = m.segment != segment;
                    m.segment = segment;
                    let state = self.clients.entry(client).or_default();
                    if !state.segments.contains(&id) {
                        state.segments.push(id);
                    }
                    if state.deadline.is_none() {
                        state.deadline = Some(now + self.config.client_ttl);
                    }
                    if changed {
                        self.journal_mount(id);
                    }
                }
                return Ok(());
            }
            // A restarted owner re-attached a durable segment (it holds the file's lock, so
            // the previous owner is dead even if its liveness has not expired yet): same id
            // and size; the new process may map it elsewhere and serve it under another name.
            if !m.segment.durable {
                return Err(ErrorCode::SegmentAlreadyExists);
            }
            if !segment.durable || segment.size != m.segment.size {
                return Err(ErrorCode::InvalidParams);
            }
            let id = segment.id;
            if let Some(old) = self.clients.get_mut(&m.client) {
                old.segments.retain(|s| *s != id);
            }
            self.history.name_segment(id, &segment.name);
            m.segment = segment;
            m.client = client;
            m.detached_until = None;
            let state = self.clients.entry(client).or_default();
            state.segments.push(id);
            if state.deadline.is_none() {
                state.deadline = Some(now + self.config.client_ttl);
            }
            self.journal_mount(id);
            return Ok(());
        }
        let id = segment.id;
        self.name_segment(id, &segment.name);
        // Crafted sizes must not overflow the pool's total.
        self.capacity = self
            .capacity
            .checked_add(segment.size)
            .ok_or(ErrorCode::InvalidParams)?;
        let alloc = OffsetAllocator::new(segment.size);
        self.segments.insert(
            id,
            Mounted {
                segment,
                client,
                alloc,
                draining: false,
                drained: false,
                detached_until: None,
            },
        );
        let state = self.clients.entry(client).or_default();
        state.segments.push(id);
        if state.deadline.is_none() {
            state.deadline = Some(now + self.config.client_ttl);
        }
        self.journal_mount(id);
        Ok(())
    }

    /// Journals a segment's current descriptor and owner.
    fn journal_mount(&mut self, id: SegmentId) {
        if self.journal.is_none() {
            return;
        }
        if let Some(m) = self.segments.get(&id) {
            let change = Change::Mount {
                segment: SegmentRecord::from(&m.segment),
                client: m.client,
            };
            self.journal_segment(change);
        }
    }

    /// Re-mounts every segment of a client and marks it alive.
    pub fn remount_segments(
        &mut self,
        client: ClientId,
        segments: Vec<Segment>,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        for s in segments {
            self.mount_segment(client, s, now)?;
        }
        let state = self.clients.entry(client).or_default();
        state.alive = true;
        state.deadline = Some(now + self.config.client_ttl);
        Ok(())
    }

    /// Unmounts a segment (idempotent): its replicas vanish; objects left without any
    /// replica are erased.
    pub fn unmount_segment(
        &mut self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<(), ErrorCode> {
        let Some(m) = self.segments.get(&segment) else {
            return Ok(());
        };
        if m.client != client {
            return Err(ErrorCode::IllegalClient);
        }
        self.drop_segment(segment);
        Ok(())
    }

    fn drop_segment(&mut self, id: SegmentId) {
        if let Some(j) = self.journal.as_mut() {
            j.note_free();
        }
        let Some(m) = self.segments.remove(&id) else {
            return;
        };
        self.capacity -= m.segment.size;
        self.allocated -= m.alloc.allocated_bytes();
        if let Some(c) = self.clients.get_mut(&m.client) {
            c.segments.retain(|s| *s != id);
        }
        self.delayed_frees.retain(|(_, s, _)| *s != id);
        self.forget_slots_on(id);
        self.tasks.forget_segment(id);
        // Copies off this segment that were never committed: free their new ranges; copies
        // onto it vanish with it.
        let abandoned: Vec<Slot> = self
            .moves
            .iter()
            .filter(|(_, m)| m.from == id || m.slot.segment == id)
            .map(|(_, m)| m.slot)
            .collect();
        self.moves
            .retain(|_, m| m.from != id && m.slot.segment != id);
        for slot in abandoned {
            self.free_slot(slot.segment, slot.handle);
        }
        // Replaying the unmount drops the same replicas and objects, so the objects it
        // touches need no records of their own.
        self.journal_segment(Change::Unmount { segment: id });
        // The holder's disk copies go with its segment (a restarted holder reports them
        // again when it mounts its tier).
        self.drop_disk_tier(id);
        let pending = &mut self.pending;
        let mut lost: Vec<(String, bool)> = Vec::new();
        self.objects.retain(|k, o| {
            let before = o.slots.len();
            o.slots.retain(|s| s.segment != id);
            let keep = !o.slots.is_empty() || o.disk.is_some() || o.disk_busy;
            if !keep {
                pending.remove(k);
            }
            if o.slots.len() != before {
                lost.push((k.clone(), !keep));
            }
            keep
        });
        for (key, last) in lost {
            let event = Event::HolderLost { segment: id, last };
            self.record(&key, None, event);
        }
    }

    /// Heartbeat: `Ok` keeps a live client alive; anyone else must remount.
    pub fn ping(&mut self, client: ClientId, now: Instant) -> PingReply {
        let status = match self.clients.get_mut(&client) {
            Some(c) if c.alive => {
                c.deadline = Some(now + self.config.client_ttl);
                ClientStatus::Ok
            }
            _ => ClientStatus::NeedRemount,
        };
        PingReply {
            view_version: self.view_version,
            status,
        }
    }

    /// Periodic work: expire silent clients, release delayed frees, discard abandoned puts,
    /// evict above the high watermark.
    pub fn tick(&mut self, now: Instant) -> TickReport {
        let mut report = TickReport::default();
        self.saw(now);
        let expired: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        let grace = self.config.durable_grace();
        for id in &expired {
            if let Some(state) = self.clients.remove(id) {
                for seg in state.segments {
                    match self.segments.get_mut(&seg) {
                        Some(m) if m.segment.durable => m.detached_until = Some(now + grace),
                        _ => self.drop_segment(seg),
                    }
                }
            }
        }
        report.expired_clients = expired;
        let gone: Vec<SegmentId> = self
            .segments
            .iter()
            .filter(|(_, m)| m.detached_until.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for seg in gone {
            self.drop_segment(seg);
        }
        let (due, later): (Vec<_>, Vec<_>) = self
            .delayed_frees
            .drain(..)
            .partition(|(t, _, _)| *t <= now);
        self.delayed_frees = later;
        for (_, seg, handle) in due {
            self.free_slot(seg, handle);
        }
        self.expire_tasks(now);
        self.expire_disk_tasks(now);
        self.expire_slots(now);
        let discard = self.config.put_start_discard_timeout;
        let abandoned: Vec<String> = self
            .pending
            .iter()
            .filter(|k| {
                self.objects.get(*k).is_some_and(|o| {
                    matches!(o.state, State::Processing { started, .. } if now.saturating_duration_since(started) >= discard)
                })
            })
            .cloned()
            .collect();
        for key in abandoned {
            self.preempt(&key, now);
            self.record(&key, Some(now), Event::Discarded);
            report.discarded_puts += 1;
        }
        report.evicted = self.evict_if_needed(now);
        report
    }
}
