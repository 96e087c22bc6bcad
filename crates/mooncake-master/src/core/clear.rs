//! Clearing replicas: `BatchReplicaClear` (an owner drops its objects, or their replicas on
//! one segment) and `RemoveByRegex`.

use std::time::Instant;

use mooncake_store::{ClientId, ErrorCode};

use super::{Event, MasterCore, State};

impl MasterCore {
    /// Mooncake's `BatchReplicaClear` (`python-api-2.md` §1): for each key, in order, that
    /// exists, was created by `client`, has no active read lease and is complete, removes
    /// the whole object (`segment` empty) or its replicas on `segment` (the object goes
    /// when none is left). Returns the keys cleared, each at most once; every other key is
    /// silently skipped. Pins are not checked.
    pub fn batch_replica_clear(
        &mut self,
        client: ClientId,
        keys: &[String],
        segment: &str,
        now: Instant,
    ) -> Vec<String> {
        let mut cleared = Vec::new();
        for key in keys {
            let Some(o) = self.objects.get(key.as_str()) else {
                continue;
            };
            if o.owner == client && o.state == State::Complete && o.lease_until > now {
                let (how, left) = ("batch_replica_clear", o.lease_until - now);
                self.record(key, Some(now), Event::LeaseConflict { how, left });
                continue;
            }
            // A demotion in flight is copying its memory: like a lease, it blocks clearing.
            if o.owner != client || o.lease_until > now || o.state != State::Complete || o.disk_busy
            {
                continue;
            }
            if segment.is_empty() {
                if let Some(o) = self.objects.remove(key.as_str()) {
                    let (how, reads) = ("batch_replica_clear", o.reads);
                    self.discard(key, o, now);
                    self.record(key, Some(now), Event::Removed { how, reads });
                }
            } else {
                let (gone, kept): (Vec<_>, Vec<_>) = o.slots.iter().partition(|s| {
                    self.segments
                        .get(&s.segment)
                        .is_some_and(|m| m.segment.name == segment)
                });
                if gone.is_empty() {
                    continue;
                }
                let on_disk = o.disk.is_some();
                self.free_slots(&gone);
                // A copy on its holder's disk is a replica too: the object survives on it.
                if kept.is_empty() && !on_disk {
                    if let Some(o) = self.objects.remove(key.as_str()) {
                        let (how, reads) = ("batch_replica_clear", o.reads);
                        self.record(key, Some(now), Event::Removed { how, reads });
                    }
                } else if let Some(o) = self.objects.get_mut(key.as_str()) {
                    o.slots = kept;
                }
            }
            self.journal_key(key);
            cleared.push(key.clone());
        }
        cleared
    }

    /// Removes every complete object whose key matches `pattern` anywhere (leased ones only
    /// with `force`); returns how many. A pattern that does not compile is `InvalidParams`.
    pub fn remove_by_regex(
        &mut self,
        pattern: &str,
        force: bool,
        now: Instant,
    ) -> Result<u64, ErrorCode> {
        let re = regex::Regex::new(pattern).map_err(|e| {
            tracing::warn!(pattern, error = %e, "remove_by_regex: invalid pattern");
            ErrorCode::InvalidParams
        })?;
        let keys: Vec<String> = self
            .objects
            .keys()
            .filter(|k| re.is_match(k))
            .cloned()
            .collect();
        self.supersede_offline_matching(|k| re.is_match(k));
        Ok(keys
            .iter()
            .filter(|k| self.remove(k, force, now).is_ok())
            .count() as u64)
    }
}
