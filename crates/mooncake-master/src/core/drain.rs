//! Draining a segment inside the core: `drain_start` gives each object whose only replica
//! lives on the segment a range elsewhere (the owner copies it), `drain_end` turns the
//! copied ranges into replicas. Jobs over many segments are in `jobs.rs`.

use super::*;

impl MasterCore {
    /// Starts draining `segment` (owned by `client`): nothing new is placed on it, and each
    /// complete object whose only replica lives there gets a range on another segment.
    /// Returns the copies the owner must make; objects that fit nowhere come back without a
    /// target (they are lost when the segment goes).
    pub fn drain_start(
        &mut self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<Vec<DrainMove>, ErrorCode> {
        let m = self
            .segments
            .get_mut(&segment)
            .ok_or(ErrorCode::SegmentNotFound)?;
        if m.client != client {
            return Err(ErrorCode::IllegalClient);
        }
        m.draining = true;
        let mut only_here: Vec<(String, u64, u64, Slot)> = self
            .objects
            .iter()
            .filter(|(k, o)| {
                o.state == State::Complete
                    && o.slots.len() == 1
                    && o.slots[0].segment == segment
                    && !self.moves.contains_key(*k)
            })
            .map(|(k, o)| (k.clone(), o.size, o.version, o.slots[0]))
            .collect();
        // Largest first: they are the hardest to place.
        only_here.sort_by_key(|o| std::cmp::Reverse(o.1));
        let mut out = Vec::with_capacity(only_here.len());
        let config = ReplicateConfig::default();
        for (key, size, version, from) in only_here {
            let Some(slot) = self.place(client, size, &config).into_iter().next() else {
                if let Some(source) = self.describe(&from, size, version) {
                    out.push(DrainMove {
                        key,
                        source,
                        target: None,
                    });
                }
                continue;
            };
            let (Some(source), Some(target)) = (
                self.describe(&from, size, version),
                self.describe(&slot, size, version),
            ) else {
                self.free_slot(slot.segment, slot.handle);
                continue;
            };
            self.moves.insert(
                key.clone(),
                PendingMove {
                    from: segment,
                    version,
                    slot,
                },
            );
            out.push(DrainMove {
                key,
                source,
                target: Some(target),
            });
        }
        Ok(out)
    }

    /// Ends copies started by [`MasterCore::drain_start`]: a copied object gains its new
    /// range as a replica (unless it was removed or rewritten meanwhile, which is
    /// `ObjectNotFound`); a failed copy's range is freed.
    pub fn drain_end(
        &mut self,
        client: ClientId,
        results: &[(String, bool)],
    ) -> Vec<Result<(), ErrorCode>> {
        results
            .iter()
            .map(|(key, copied)| {
                let Some(mv) = self.moves.get(key).copied() else {
                    return Err(ErrorCode::ObjectNotFound);
                };
                if self.segments.get(&mv.from).map(|m| m.client) != Some(client) {
                    return Err(ErrorCode::IllegalClient);
                }
                self.moves.remove(key);
                let current = self
                    .objects
                    .get_mut(key)
                    .filter(|o| o.version == mv.version && o.state == State::Complete);
                let gone = current.is_none();
                match (current, copied) {
                    (Some(o), true) => {
                        o.slots.push(mv.slot);
                        self.journal_key(key);
                        Ok(())
                    }
                    _ => {
                        self.free_slot(mv.slot.segment, mv.slot.handle);
                        Err(if gone {
                            ErrorCode::ObjectNotFound
                        } else {
                            ErrorCode::TransferFail
                        })
                    }
                }
            })
            .collect()
    }
}
