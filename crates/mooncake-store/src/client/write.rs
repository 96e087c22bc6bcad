//! Writes: `put` and its zero-copy, multi-part and batch forms, and `upsert`.

use super::*;

impl Client {
    /// Stores `value` under `key` through the staging buffer. A key that already exists
    /// keeps its value and the call succeeds (Mooncake's semantics).
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        config: &ReplicateConfig,
    ) -> Result<(), ErrorCode> {
        self.write_value(key, value, config, false).await
    }

    /// Stores `size` bytes at `addr` (inside a buffer registered with the engine) without
    /// copying. `size == 0` stores nothing and succeeds, as in Mooncake.
    pub async fn put_from(
        &self,
        key: &str,
        addr: u64,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<(), ErrorCode> {
        self.put_parts_from(key, &[(addr, size)], config, false)
            .await
    }

    /// Stores the concatenation of `parts` (`(addr, len)` ranges of registered memory, in
    /// order) as one object without copying; `upsert` replaces an existing value, otherwise
    /// an existing key keeps its value and the call succeeds. A zero total stores nothing.
    pub async fn put_parts_from(
        &self,
        key: &str,
        parts: &[(u64, u64)],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        if total(parts) == 0 {
            return if key.is_empty() {
                Err(ErrorCode::InvalidParams)
            } else {
                Ok(())
            };
        }
        self.write(key, parts, config, upsert).await
    }

    /// Stores the concatenation of byte slices as one object, through the staging buffer.
    pub async fn put_parts(
        &self,
        key: &str,
        parts: &[&[u8]],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 {
            return Err(ErrorCode::InvalidParams);
        }
        self.write_bytes(key, parts, config, upsert).await
    }

    /// Puts (or upserts) byte slices as one object. Replicas this client reaches without the
    /// network (same-host shared memory) get the bytes copied straight in; the others get
    /// them through the staging buffer, which is reserved first either way (a value larger
    /// than the free staging buffer is `InvalidParams`, as in Mooncake).
    async fn write_bytes(
        &self,
        key: &str,
        parts: &[&[u8]],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 {
            return Err(ErrorCode::InvalidParams);
        }
        let slice = self.stage(len)?;
        let mut config = std::borrow::Cow::Borrowed(config);
        if self.inner.config.verify_checksums {
            let crc = parts.iter().fold(0, |c, p| crc32c::crc32c_append(c, p));
            config.to_mut().checksum = Some(crc);
        }
        let mut filled = false;
        let fill = |filled: &mut bool| {
            if !std::mem::replace(filled, true) {
                let mut off = 0;
                for p in parts {
                    slice.fill_at(off, p);
                    off += p.len() as u64;
                }
            }
        };
        let src = [(slice.addr(), len)];
        if let Some(taken) = self.take_slot(len, &config, upsert).await {
            // One master round trip (`slots.rs`).
            let rep = taken.replica().clone();
            let mut written =
                self.copy_direct(&rep, parts).await || self.send_lent(&rep, parts).await;
            if !written {
                fill(&mut filled);
                written = self.push(&src, std::slice::from_ref(&rep)).await.is_ok();
            }
            if let Some(done) = self.commit_slot(key, taken, len, &config, written).await {
                return done;
            }
        }
        let mut attempt = 1;
        loop {
            let replicas = match self.start(key, len, &config, upsert).await {
                Err(ErrorCode::ObjectAlreadyExists) => return Ok(()),
                other => other?,
            };
            let mut remote = Vec::new();
            for rep in &replicas {
                if !self.copy_direct(rep, parts).await && !self.send_lent(rep, parts).await {
                    remote.push(rep.clone());
                }
            }
            let pushed = if remote.is_empty() {
                Ok(())
            } else {
                fill(&mut filled);
                self.push(&src, &remote).await
            };
            if pushed == Err(ErrorCode::TransferFail) && attempt < PLACEMENT_ATTEMPTS {
                if let Some(dead) = self.unreachable(key, &src, &remote).await {
                    config.to_mut().excluded_segments.extend(dead);
                    attempt += 1;
                    continue;
                }
            }
            return self.finish(key, &replicas, pushed).await;
        }
    }

    /// Copies `parts`, end to end, straight into `rep` if it needs no network.
    async fn copy_direct(&self, rep: &ReplicaDescriptor, parts: &[&[u8]]) -> bool {
        let Ok(target) = self
            .inner
            .engine
            .open_segment(&rep.transport_endpoint)
            .await
        else {
            return false;
        };
        let mut off = rep.buffer_address;
        for p in parts {
            // Parts of one replica all go the same way; a later part that cannot (it should
            // not happen) sends the whole value through the staging buffer instead.
            match self.inner.engine.write_direct(target, off, p) {
                Ok(true) => off += p.len() as u64,
                _ => return false,
            }
        }
        true
    }

    /// Sends `parts`, end to end, to `rep` over the network straight from the caller's
    /// memory (no staging copy); `false` if that path did not apply or did not complete,
    /// and the staging path (with its retries and error reports) must run.
    async fn send_lent(&self, rep: &ReplicaDescriptor, parts: &[&[u8]]) -> bool {
        let engine = &self.inner.engine;
        let Ok(target) = engine.open_segment(&rep.transport_endpoint).await else {
            return false;
        };
        let mut at = rep.buffer_address;
        let items: Vec<(u64, &[u8])> = parts
            .iter()
            .map(|p| {
                let item = (at, *p);
                at += p.len() as u64;
                item
            })
            .collect();
        engine.write_lent(target, &items).await
    }

    /// Sends `(item, replica, value)` writes straight from the caller's memory, one
    /// exchange per holder. Each group comes back with `true` if its exchange wrote all
    /// of it, `false` if it must go through the staging buffer.
    async fn send_lent_groups<'a>(
        &self,
        lent: &[LentWrite<'a>],
    ) -> Vec<(bool, Vec<LentWrite<'a>>)> {
        let mut groups: Vec<(&str, Vec<LentWrite<'a>>)> = Vec::new();
        for &(j, rep, value) in lent {
            match groups.iter_mut().find(|g| g.0 == rep.transport_endpoint) {
                Some(g) => g.1.push((j, rep, value)),
                None => groups.push((&rep.transport_endpoint, vec![(j, rep, value)])),
            }
        }
        let engine = &self.inner.engine;
        let mut targets = Vec::with_capacity(groups.len());
        for (endpoint, group) in &groups {
            let items: Vec<(u64, &[u8])> = group
                .iter()
                .map(|(_, r, v)| (r.buffer_address, *v))
                .collect();
            targets.push((engine.open_segment(endpoint).await.ok(), items));
        }
        // Several holders: one exchange for all of them if it suits (one round trip for
        // the batch), else one per holder.
        let opened: Option<Vec<_>> = targets
            .iter()
            .map(|(t, items)| t.map(|t| (t, items.clone())))
            .collect();
        if let Some(sent) = match opened {
            Some(holders) if holders.len() > 1 => engine.write_lent_spread(&holders).await,
            _ => None,
        } {
            return sent
                .into_iter()
                .zip(groups)
                .map(|(s, (_, g))| (s, g))
                .collect();
        }
        let mut out = Vec::with_capacity(groups.len());
        for ((target, items), (_, group)) in targets.into_iter().zip(groups) {
            let sent = match target {
                Some(target) => engine.write_lent(target, &items).await,
                None => false,
            };
            out.push((sent, group));
        }
        out
    }

    /// `put_start` or `upsert_start`.
    async fn start(
        &self,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let m = &self.inner.master;
        if upsert {
            m.upsert_start(self.inner.id, key, size, config).await
        } else {
            m.put_start(self.inner.id, key, size, config).await
        }
    }

    /// Commits a written object (and remembers where it is), or revokes a failed one so
    /// nothing half-written is ever visible.
    async fn finish(
        &self,
        key: &str,
        replicas: &[ReplicaDescriptor],
        written: Result<(), ErrorCode>,
    ) -> Result<(), ErrorCode> {
        let m = &self.inner.master;
        match written {
            Ok(()) => {
                m.put_end(self.inner.id, key).await?;
                self.remember(key, replicas);
                Ok(())
            }
            Err(e) => {
                let _ = m.put_revoke(self.inner.id, key).await;
                Err(e)
            }
        }
    }

    /// Stores `value`, replacing any existing value.
    pub async fn upsert(
        &self,
        key: &str,
        value: &[u8],
        config: &ReplicateConfig,
    ) -> Result<(), ErrorCode> {
        self.write_value(key, value, config, true).await
    }

    /// Stores many values (one `batch_put_start`, parallel transfers, one `batch_put_end`).
    /// Per-key results; existing keys succeed and keep their value.
    pub async fn put_batch(
        &self,
        items: &[(&str, &[u8])],
        config: &ReplicateConfig,
    ) -> Vec<Result<(), ErrorCode>> {
        self.write_values(items, config, false).await
    }

    /// Like [`Client::put_batch`], replacing existing values.
    pub async fn upsert_batch(
        &self,
        items: &[(&str, &[u8])],
        config: &ReplicateConfig,
    ) -> Vec<Result<(), ErrorCode>> {
        self.write_values(items, config, true).await
    }

    async fn write_values(
        &self,
        items: &[(&str, &[u8])],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<Result<(), ErrorCode>> {
        let mut slices = Vec::with_capacity(items.len());
        for (_, v) in items {
            if v.is_empty() {
                slices.push(Err(ErrorCode::InvalidParams));
                continue;
            }
            slices.push(self.stage(v.len() as u64));
        }
        let sources: Vec<Result<Source, ErrorCode>> = slices
            .into_iter()
            .zip(items)
            .map(|(s, (_, v))| s.map(|slice| Source::Bytes(v, slice)))
            .collect();
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        self.write_batch(&keys, &sources, config, upsert).await
    }

    /// Zero-copy batch put from registered memory: `(key, addr, size)` per item.
    pub async fn batch_put_from(
        &self,
        items: &[(&str, u64, u64)],
        config: &ReplicateConfig,
    ) -> Vec<Result<(), ErrorCode>> {
        let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
        let sources: Vec<Result<Source, ErrorCode>> = items
            .iter()
            .map(|(_, a, n)| Ok(Source::Registered(vec![(*a, *n)])))
            .collect();
        self.write_batch(&keys, &sources, config, false).await
    }

    /// Zero-copy batch put where each object is the concatenation of several registered
    /// ranges (Mooncake's `batch_put_from_multi_buffers`); `upsert` replaces existing values.
    pub async fn batch_put_parts_from(
        &self,
        items: &[(&str, Vec<(u64, u64)>)],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<Result<(), ErrorCode>> {
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        let sources: Vec<Result<Source, ErrorCode>> = items
            .iter()
            .map(|(_, p)| Ok(Source::Registered(p.clone())))
            .collect();
        self.write_batch(&keys, &sources, config, upsert).await
    }

    /// Copies `value` into the staging buffer and writes it (put or upsert).
    async fn write_value(
        &self,
        key: &str,
        value: &[u8],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        self.write_bytes(key, &[value], config, upsert).await
    }

    async fn write(
        &self,
        key: &str,
        src: &[(u64, u64)],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        let mut config = std::borrow::Cow::Borrowed(config);
        if self.inner.config.verify_checksums {
            config.to_mut().checksum = Some(self.local_crc(src)?);
        }
        if let Some(taken) = self.take_slot(total(src), &config, upsert).await {
            // One master round trip (`slots.rs`).
            let rep = std::slice::from_ref(taken.replica());
            let written = self.push(src, rep).await.is_ok();
            if let Some(done) = self
                .commit_slot(key, taken, total(src), &config, written)
                .await
            {
                return done;
            }
        }
        let mut attempt = 1;
        loop {
            let replicas = match self.start(key, total(src), &config, upsert).await {
                Err(ErrorCode::ObjectAlreadyExists) => return Ok(()),
                other => other?,
            };
            let pushed = self.push(src, &replicas).await;
            if pushed == Err(ErrorCode::TransferFail) && attempt < PLACEMENT_ATTEMPTS {
                if let Some(dead) = self.unreachable(key, src, &replicas).await {
                    config.to_mut().excluded_segments.extend(dead);
                    attempt += 1;
                    continue;
                }
            }
            return self.finish(key, &replicas, pushed).await;
        }
    }

    /// After a write to `replicas` that failed in transit: the segments among them that
    /// cannot be written (each tried on its own; a local error such as unregistered source
    /// memory blames no holder). When there are some, the put is revoked so that it can be
    /// placed again without them; `None` (nothing revoked) when every holder answers.
    async fn unreachable(
        &self,
        key: &str,
        src: &[(u64, u64)],
        replicas: &[ReplicaDescriptor],
    ) -> Option<Vec<String>> {
        let mut dead = Vec::new();
        for rep in replicas {
            if self.push(src, std::slice::from_ref(rep)).await == Err(ErrorCode::TransferFail) {
                dead.push(rep.segment_name.clone());
            }
        }
        if dead.is_empty() {
            return None;
        }
        // Placing again needs the first reservation gone: if the revoke fails, a new
        // put_start would meet this very put (-705) and report a success that never was.
        if let Err(e) = self.inner.master.put_revoke(self.inner.id, key).await {
            tracing::warn!(key, error = %e, "cannot revoke the put; not placing it again");
            return None;
        }
        tracing::warn!(key, segments = ?dead, "replica holders unreachable; placed the put elsewhere");
        Some(dead)
    }

    /// A batch of new keys, each into a slot reserved ahead (`slots.rs`): the writes, then
    /// one `batch_put_reserved` instead of `batch_put_start` and `batch_put_end`. `None`
    /// (the usual path then) for a batch that does not qualify (duplicate or empty keys,
    /// values above the slots' size, an upsert, a config with placement wishes) or whose
    /// writes or commit did not complete; keys that did commit meet `ObjectAlreadyExists`
    /// there, a success. An item the commit refused for its slot goes the usual way alone.
    async fn write_batch_slots(
        &self,
        keys: &[&str],
        sources: &[Result<Source<'_>, ErrorCode>],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Option<Vec<Result<(), ErrorCode>>> {
        let sizes: Vec<u64> = sources
            .iter()
            .map(|s| s.as_ref().ok().map(Source::len))
            .collect::<Option<_>>()?;
        let distinct: std::collections::HashSet<&&str> = keys.iter().collect();
        if distinct.len() != keys.len() || keys.len() > crate::MAX_BATCH_SIZE {
            return None;
        }
        let taken = self.take_slots(&sizes, config, upsert).await?;
        let mut queued = Queued::default();
        let mut lent: Vec<LentWrite<'_>> = Vec::new();
        for (j, (src, t)) in sources.iter().zip(&taken).enumerate() {
            match src {
                Ok(Source::Registered(parts)) => {
                    queued.add(self, j, parts, t.replica()).await.ok()?
                }
                Ok(Source::Bytes(value, _)) => {
                    if !self.copy_direct(t.replica(), &[value]).await {
                        lent.push((j, t.replica(), *value));
                    }
                }
                Err(_) => return None,
            }
        }
        for (sent, group) in self.send_lent_groups(&lent).await {
            if sent {
                continue;
            }
            for (j, rep, value) in group {
                let Ok(Source::Bytes(_, slice)) = &sources[j] else {
                    return None;
                };
                slice.fill(value);
                let staged = [(slice.addr(), value.len() as u64)];
                queued.add(self, j, &staged, rep).await.ok()?;
            }
        }
        if !self
            .transfer_each(&queued.requests)
            .await
            .iter()
            .all(|ok| *ok)
        {
            return None;
        }
        drop((queued, lent));
        let items: Vec<(String, u64, u64)> = keys
            .iter()
            .zip(&taken)
            .zip(&sizes)
            .map(|((k, t), n)| ((*k).to_owned(), t.id(), *n))
            .collect();
        let m = &self.inner.master;
        let answer = m.batch_put_reserved(self.inner.id, &items, config).await;
        let settled = self.settle_batch(keys, taken, &sizes, answer)?;
        let mut out = Vec::with_capacity(keys.len());
        for (i, done) in settled.into_iter().enumerate() {
            out.push(match (done, &sources[i]) {
                (Some(r), _) => r,
                (None, Ok(Source::Registered(parts))) => {
                    self.write(keys[i], parts, config, upsert).await
                }
                (None, Ok(Source::Bytes(value, slice))) => {
                    slice.fill(value);
                    let src = [(slice.addr(), value.len() as u64)];
                    self.write(keys[i], &src, config, upsert).await
                }
                (None, Err(e)) => Err(*e),
            });
        }
        Some(out)
    }

    async fn write_batch(
        &self,
        keys: &[&str],
        sources: &[Result<Source<'_>, ErrorCode>],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<Result<(), ErrorCode>> {
        if let Some(out) = self.write_batch_slots(keys, sources, config, upsert).await {
            return out;
        }
        let mut out: Vec<Result<(), ErrorCode>> = sources
            .iter()
            .map(|s| s.as_ref().map(|_| ()).map_err(|e| *e))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut idx = Vec::new();
        let mut items = Vec::new();
        for (i, (k, s)) in keys.iter().zip(sources).enumerate() {
            match s.as_ref().map(Source::len) {
                Ok(0) => {}
                Ok(n) if seen.insert(*k) => {
                    idx.push(i);
                    items.push(((*k).to_owned(), n));
                }
                _ => {}
            }
        }
        if items.is_empty() {
            return out;
        }
        let m = &self.inner.master;
        let started = if upsert {
            m.batch_upsert_start(self.inner.id, &items, config).await
        } else {
            m.batch_put_start(self.inner.id, &items, config).await
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                idx.iter().for_each(|i| out[*i] = Err(e));
                return out;
            }
        };
        let mut queued = Queued::default();
        let mut dead: Vec<Vec<String>> = vec![Vec::new(); started.len()];
        let mut lent: Vec<LentWrite<'_>> = Vec::new();
        for (j, r) in started.iter().enumerate() {
            let i = idx[j];
            match r {
                Ok(replicas) => {
                    let Ok(src) = &sources[i] else { continue };
                    for rep in replicas {
                        let parts: std::borrow::Cow<'_, [(u64, u64)]> = match src {
                            Source::Registered(parts) => parts.into(),
                            Source::Bytes(value, _) => {
                                if !self.copy_direct(rep, &[value]).await {
                                    lent.push((j, rep, *value));
                                }
                                continue;
                            }
                        };
                        if let Err(e) = queued.add(self, j, &parts, rep).await {
                            out[i] = Err(e);
                            dead[j].push(rep.segment_name.clone());
                        }
                    }
                }
                Err(ErrorCode::ObjectAlreadyExists) => {}
                Err(e) => out[i] = Err(*e),
            }
        }
        // Values in ordinary memory go to each holder straight from the caller's memory,
        // one exchange per holder; a holder that exchange does not complete gets them
        // through the staging buffer with the registered sources.
        for (sent, group) in self.send_lent_groups(&lent).await {
            if sent {
                continue;
            }
            for (j, rep, value) in group {
                let i = idx[j];
                let Ok(Source::Bytes(_, slice)) = &sources[i] else {
                    continue;
                };
                slice.fill(value);
                let staged = [(slice.addr(), value.len() as u64)];
                if let Err(e) = queued.add(self, j, &staged, rep).await {
                    out[i] = Err(e);
                    dead[j].push(rep.segment_name.clone());
                }
            }
        }
        let failed = self.transfer_each(&queued.requests).await;
        for (k, ok) in failed.iter().enumerate() {
            if !ok {
                let j = queued.owners[k];
                out[idx[j]] = Err(ErrorCode::TransferFail);
                dead[j].push(queued.holders[k].clone());
            }
        }
        let (mut end, mut revoke) = (Vec::new(), Vec::new());
        for (j, r) in started.iter().enumerate() {
            if r.is_ok() {
                let i = idx[j];
                if out[i].is_ok() {
                    end.push(items[j].0.clone())
                } else {
                    revoke.push(items[j].0.clone())
                }
            }
        }
        // Keys whose revoke failed must not be placed again (see `unreachable`).
        let mut unrevoked = std::collections::HashSet::new();
        if !revoke.is_empty() {
            match self
                .inner
                .master
                .batch_put_revoke(self.inner.id, &revoke)
                .await
            {
                Ok(rs) => {
                    for (key, r) in revoke.iter().zip(rs) {
                        if r.is_err() {
                            unrevoked.insert(key.clone());
                        }
                    }
                }
                Err(_) => unrevoked.extend(revoke.iter().cloned()),
            }
        }
        if !end.is_empty() {
            // A commit that fails as a whole fails every key it carried: the master would
            // discard those objects, so none of them may be reported stored.
            let ends = match self.inner.master.batch_put_end(self.inner.id, &end).await {
                Ok(ends) if ends.len() == end.len() => ends,
                Ok(_) => vec![Err(ErrorCode::RpcFail); end.len()],
                Err(e) => vec![Err(e); end.len()],
            };
            for (key, r) in end.iter().zip(ends) {
                if let (Err(e), Some(i)) = (r, keys.iter().position(|k| k == key)) {
                    out[i] = Err(e);
                }
            }
        }
        for (j, r) in started.iter().enumerate() {
            if let (Ok(replicas), Ok(())) = (r, &out[idx[j]]) {
                self.remember(&items[j].0, replicas);
            }
        }
        // A key whose holder could not be reached is placed again without it, on its own.
        for (j, segs) in dead.iter().enumerate() {
            let i = idx[j];
            if segs.is_empty()
                || out[i] != Err(ErrorCode::TransferFail)
                || unrevoked.contains(keys[i])
            {
                continue;
            }
            let mut again = config.clone();
            again.excluded_segments.extend(segs.iter().cloned());
            out[i] = match &sources[i] {
                Ok(Source::Registered(parts)) => self.write(keys[i], parts, &again, upsert).await,
                Ok(Source::Bytes(value, slice)) => {
                    slice.fill(value);
                    let src = [(slice.addr(), value.len() as u64)];
                    self.write(keys[i], &src, &again, upsert).await
                }
                Err(e) => Err(*e),
            };
        }
        // Duplicates of a key within the batch share its result.
        for (i, k) in keys.iter().enumerate() {
            if !idx.contains(&i) && sources[i].as_ref().is_ok_and(|p| p.len() > 0) {
                if let Some(first) = keys.iter().position(|x| x == k) {
                    out[i] = out[first];
                }
            }
        }
        out
    }
}

/// The replica writes of a batch put that go through registered memory: requests, the
/// batch item each belongs to, and its holder.
#[derive(Default)]
struct Queued<'r> {
    requests: Vec<TransferRequest>,
    owners: Vec<usize>,
    holders: Vec<&'r String>,
}

impl<'r> Queued<'r> {
    /// Queues item `j`'s write of `parts` (registered memory) into `rep`.
    async fn add(
        &mut self,
        client: &Client,
        j: usize,
        parts: &[(u64, u64)],
        rep: &'r ReplicaDescriptor,
    ) -> Result<(), ErrorCode> {
        let reqs = client.requests(Opcode::Write, parts, rep).await?;
        self.owners.extend(reqs.iter().map(|_| j));
        self.holders.extend(reqs.iter().map(|_| &rep.segment_name));
        self.requests.extend(reqs);
        Ok(())
    }
}

/// A batch item's value bound for one holder, sent from the caller's memory.
type LentWrite<'a> = (usize, &'a ReplicaDescriptor, &'a [u8]);

/// Where the bytes of one object of a batch put come from.
enum Source<'a> {
    /// Ranges of registered memory, laid end to end.
    Registered(Vec<(u64, u64)>),
    /// A value in ordinary memory and the staging slice reserved for it: copied straight
    /// into the replicas this client reaches without the network, staged (once) for the
    /// others.
    Bytes(&'a [u8], staging::Slice),
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Registered(parts) => total(parts),
            Source::Bytes(value, _) => value.len() as u64,
        }
    }
}
