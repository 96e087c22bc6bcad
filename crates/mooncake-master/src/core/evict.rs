//! Eviction: above the high watermark, least-recently-leased objects are dropped until
//! the eviction ratio is freed; leased, hard-pinned and unfinished objects never are, nor
//! objects on a segment waiting for its owner's remount.

use super::*;

impl MasterCore {
    /// Evicts when usage is above the high watermark (cheap when it is not; the shell calls
    /// it every 10 ms, as Mooncake's eviction thread runs). Returns the number evicted.
    pub fn evict_if_needed(&mut self, now: Instant) -> usize {
        self.saw(now);
        if self.capacity == 0 {
            return 0;
        }
        let used = self.allocated as f64 / self.capacity as f64;
        let hw = self.config.eviction_high_watermark_ratio;
        if used <= hw || hw >= 1.0 {
            return 0;
        }
        let ratio = self
            .config
            .eviction_ratio
            .max(used - hw + self.config.eviction_ratio);
        self.evict(((ratio * self.capacity as f64) as u64).max(1), now)
    }

    /// Evicts least-recently-leased objects until `target` bytes are freed or nothing
    /// evictable is left: never a leased, hard-pinned or unfinished object; soft-pinned
    /// ones only in a second pass. Returns the number evicted.
    pub fn evict(&mut self, target: u64, now: Instant) -> usize {
        self.stats.attempted_passes += 1;
        let allow_soft = self.config.allow_evict_soft_pinned_objects;
        let mut candidates: Vec<(bool, Instant, String)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.state == State::Complete
                    && o.lease_until <= now
                    && o.pin != Pin::Hard
                    && !o.disk_busy
                    && !o.slots.is_empty()
                    // Objects waiting for their owner's remount (a restored or detached
                    // segment) stay: its disk tier, once mounted again, may keep them.
                    && o.slots.iter().all(|s| {
                        self.segments
                            .get(&s.segment)
                            .is_some_and(|m| m.detached_until.is_none())
                    })
            })
            .map(|(k, o)| {
                let soft = o.pin == Pin::Soft && o.soft_pin_until.is_some_and(|t| t > now);
                (soft, o.lease_until, k.clone())
            })
            .filter(|(soft, _, _)| !soft || allow_soft)
            .collect();
        candidates.sort_unstable_by_key(|c| (c.0, c.1));
        // Memory whose demotion is in flight is as good as freed: it will be.
        let (mut freed, mut count) = (0u64, 0usize);
        let mut demoting = self.disk.demoting_bytes;
        for (_, _, key) in candidates {
            if freed + demoting >= target {
                break;
            }
            let has_disk_copy = self.objects.get(&key).is_some_and(|o| o.disk.is_some());
            if has_disk_copy {
                // Only the memory copy goes; the object stays readable from disk.
                if let Some(o) = self.objects.get_mut(&key) {
                    let slots = std::mem::take(&mut o.slots);
                    let before = self.allocated;
                    self.free_slots(&slots);
                    freed += before - self.allocated;
                    count += 1;
                    self.journal_key(&key);
                }
                continue;
            }
            if self.start_demote(&key, now) {
                demoting = self.disk.demoting_bytes;
                continue;
            }
            if let Some(o) = self.objects.remove(&key) {
                let before = self.allocated;
                self.free_slots(&o.slots);
                freed += before - self.allocated;
                count += 1;
                self.record(&key, Some(now), Event::Evicted { reads: o.reads });
                self.journal_key(&key);
            }
        }
        if count > 0 {
            self.stats.successful_passes += 1;
            self.stats.evicted_keys += count as u64;
            self.stats.evicted_bytes += freed;
        }
        count
    }
}
