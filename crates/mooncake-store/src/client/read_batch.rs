//! Batch reads: one master call for many keys, the speculative reads of remembered keys
//! beside it, and the transfers of every value at once.

use super::*;

impl Client {
    /// The master's replica lists for `keys`, asked while the reads of `guesses` (per key,
    /// destination parts and the replica this client last saw it in) run. A guess is a
    /// hit when its read succeeded and the master lists the very same replica (same
    /// version: the bytes were not rewritten) and, with checksums on, the bytes verify;
    /// stale guesses are forgotten. The batch form of [`Client::get_into`]'s speculation.
    async fn batch_lookup(
        &self,
        keys: &[String],
        guesses: &[Option<Guess>],
    ) -> Result<(Vec<Result<ReplicaList, ErrorCode>>, Vec<bool>), ErrorCode> {
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        let mut hits: Vec<bool> = guesses.iter().map(Option::is_some).collect();
        for (i, guess) in guesses.iter().enumerate() {
            if let Some((dst, rep)) = guess {
                match self.requests(Opcode::Read, dst, rep).await {
                    Ok(r) => {
                        owner.extend(r.iter().map(|_| i));
                        reqs.extend(r);
                    }
                    Err(_) => hits[i] = false,
                }
            }
        }
        // Disk loads are only queued here: the caller serves the rest meanwhile and
        // waits for them with `await_loads`.
        let master = self.inner.master.batch_get_replica_list_or_load(keys);
        let (lists, reads) = if reqs.is_empty() {
            (master.await, Vec::new())
        } else {
            tokio::join!(master, self.inner.engine.transfer_each(&reqs))
        };
        let lists = lists?;
        for (k, r) in reads.iter().enumerate() {
            if r.is_err() {
                hits[owner[k]] = false;
            }
        }
        for (i, guess) in guesses.iter().enumerate() {
            let Some((dst, rep)) = guess else { continue };
            hits[i] = hits[i]
                && matches!(lists.get(i), Some(Ok(l)) if l.replicas.contains(rep)
                    && self.checksum_ok(&keys[i], l, || self.local_crc(dst).unwrap_or(0)));
            if !hits[i] {
                self.inner.locations.remove(&keys[i]);
            }
        }
        Ok((lists, hits))
    }

    /// Reads many objects: one pass over every object's preferred replica (copies inline,
    /// network reads concurrently), then the full failover path for the ones that failed.
    async fn pull_many(
        &self,
        jobs: &[(Vec<(u64, u64)>, ReplicaList)],
    ) -> Vec<Result<(), ErrorCode>> {
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        let mut out: Vec<Result<(), ErrorCode>> = vec![Ok(()); jobs.len()];
        for (j, (dst, list)) in jobs.iter().enumerate() {
            let Some(rep) = self.preferred(&list.replicas) else {
                out[j] = Err(ErrorCode::ReplicaIsNotReady);
                continue;
            };
            match self.requests(Opcode::Read, dst, rep).await {
                Ok(r) => {
                    owner.extend(r.iter().map(|_| j));
                    reqs.extend(r);
                }
                Err(e) => out[j] = Err(e),
            }
        }
        for (k, ok) in self.transfer_each(&reqs).await.into_iter().enumerate() {
            if !ok {
                out[owner[k]] = Err(ErrorCode::TransferFail);
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (j, (dst, list)) in jobs.iter().enumerate() {
            if out[j].is_err() && out[j] != Err(ErrorCode::ReplicaIsNotReady) {
                let (c, dst, list) = (self.clone(), dst.clone(), list.clone());
                set.spawn(async move { (j, c.pull(&dst, &list.replicas).await.map(|_| ())) });
            }
        }
        while let Some(Ok((j, r))) = set.join_next().await {
            out[j] = r;
        }
        // With checksums on, every value read is verified (the key is not known here:
        // reports name the object by its first replica).
        if self.inner.config.verify_checksums {
            for (j, (dst, list)) in jobs.iter().enumerate() {
                if out[j].is_ok() && list.checksum.is_some() {
                    let name = list
                        .replicas
                        .first()
                        .map(|r| format!("{}@{:#x}", r.segment_name, r.buffer_address))
                        .unwrap_or_default();
                    if !self.checksum_ok(&name, list, || self.local_crc(dst).unwrap_or(0)) {
                        out[j] = self.read_verified(&name, dst, list, false).await;
                    }
                }
            }
        }
        out
    }

    // ---- checksums ----

    /// The sizes [`Client::remembered_network_size`] gives, for many keys, as far as one
    /// lent exchange carries them together (at most
    /// [`TransferEngine::LENT_MAX_BYTES`](mooncake_transfer_engine::TransferEngine::LENT_MAX_BYTES)
    /// and [`LENT_MAX_RANGES`](mooncake_transfer_engine::TransferEngine::LENT_MAX_RANGES)
    /// in all); the keys past that get `None` and take the staged path, which spreads a
    /// large batch over every connection to its holders (32 x 16 MiB into new `bytes`,
    /// over loopback TCP, alternating: staged 1.6-2.2 GB/s, median 1.9; 16 lent exchanges
    /// one after the other 0.9-2.6 GB/s, median 1.2).
    pub async fn remembered_network_sizes(&self, keys: &[&str]) -> Vec<Option<u64>> {
        use mooncake_transfer_engine::TransferEngine as Engine;
        let mut out = Vec::with_capacity(keys.len());
        let (mut bytes, mut ranges) = (0u64, 0usize);
        for key in keys {
            let size = self.remembered_network_size(key).await.filter(|&s| {
                bytes + s <= Engine::LENT_MAX_BYTES && ranges < Engine::LENT_MAX_RANGES
            });
            if let Some(s) = size {
                bytes += s;
                ranges += 1;
            }
            out.push(size);
        }
        out
    }

    /// The batch form of [`Client::get_lent`]: reads each `(key, out)` of `items` straight
    /// into its `out` (each exactly the size [`Client::remembered_network_sizes`] gave)
    /// from the replica this client remembers, one exchange per holder, while one master
    /// call confirms the replicas. For each item, `true`: all of its `out` holds the value;
    /// `false`: nothing is known of its `out`, read it the usual way.
    pub async fn get_batch_lent(
        &self,
        items: &mut [(&str, &mut [std::mem::MaybeUninit<u8>])],
    ) -> Vec<bool> {
        let engine = &self.inner.engine;
        let mut served = vec![false; items.len()];
        // Per holder: its handle and the items read from it.
        let mut holders: Vec<(String, mooncake_transfer_engine::SegmentHandle, Vec<usize>)> =
            Vec::new();
        let mut reps = Vec::with_capacity(items.len());
        for (i, (key, out)) in items.iter().enumerate() {
            let rep = self
                .inner
                .locations
                .get(key)
                .filter(|r| r.size == out.len() as u64);
            if let Some(rep) = &rep {
                match holders.iter_mut().find(|h| h.0 == rep.transport_endpoint) {
                    Some(h) => h.2.push(i),
                    None => {
                        if let Ok(handle) = engine.open_segment(&rep.transport_endpoint).await {
                            holders.push((rep.transport_endpoint.clone(), handle, vec![i]));
                        }
                    }
                }
            }
            reps.push(rep);
        }
        let keys: Vec<String> = items.iter().map(|(k, _)| (*k).to_owned()).collect();
        // Split the outputs per holder (each item belongs to at most one).
        let mut outs: Vec<Option<&mut [std::mem::MaybeUninit<u8>]>> =
            items.iter_mut().map(|(_, out)| Some(&mut **out)).collect();
        let mut jobs = Vec::with_capacity(holders.len());
        for (_, handle, idx) in &holders {
            let job: Vec<(u64, &mut [std::mem::MaybeUninit<u8>])> = idx
                .iter()
                .filter_map(|&i| {
                    let at = reps[i].as_ref()?.buffer_address;
                    Some((at, outs[i].take()?))
                })
                .collect();
            jobs.push((*handle, job));
        }
        // Values on several holders: one exchange for all of them if it suits, else one
        // per holder, the holders at once.
        let reads = async {
            match engine.read_lent_uninit_spread(&mut jobs).await {
                Some(done) => done,
                None => {
                    join_all(
                        jobs.iter_mut()
                            .map(|(handle, job)| engine.read_lent_uninit_many(*handle, job))
                            .collect(),
                    )
                    .await
                }
            }
        };
        let (lists, reads) = tokio::join!(self.inner.master.batch_get_replica_list(&keys), reads);
        let Ok(lists) = lists else { return served };
        for ((_, _, idx), read) in holders.iter().zip(reads) {
            for &i in idx {
                let Some(rep) = &reps[i] else { continue };
                let confirmed = matches!(lists.get(i), Some(Ok(l)) if l.replicas.contains(rep)
                    && l.checksum.is_none_or(|_| !self.inner.config.verify_checksums));
                served[i] = read && confirmed;
                if !matches!(lists.get(i), Some(Ok(l)) if l.replicas.contains(rep)) {
                    self.inner.locations.remove(&keys[i]);
                }
            }
        }
        served
    }

    /// Batch form of [`Client::get_into_parts`]: one master call, parallel transfers.
    pub async fn batch_get_into_parts(
        &self,
        items: &[(&str, Vec<(u64, u64)>)],
    ) -> Vec<Result<u64, ErrorCode>> {
        let owned: Vec<String> = items.iter().map(|(k, _)| (*k).to_owned()).collect();
        let lists = match self.inner.master.batch_get_replica_list(&owned).await {
            Ok(l) => l,
            Err(e) => return items.iter().map(|_| Err(e)).collect(),
        };
        let mut out: Vec<Result<u64, ErrorCode>> = vec![Err(ErrorCode::InternalError); items.len()];
        let mut jobs = Vec::new();
        let mut idx = Vec::new();
        for (i, (l, (_, parts))) in lists.into_iter().zip(items).enumerate() {
            match l.map(|l| (total(parts).cmp(&l.size()), l)) {
                Ok((std::cmp::Ordering::Less, _)) => out[i] = Err(ErrorCode::InvalidParams),
                Ok((std::cmp::Ordering::Greater, _)) => out[i] = Err(ErrorCode::TransferFail),
                Ok((std::cmp::Ordering::Equal, l)) => {
                    jobs.push((parts.clone(), l));
                    idx.push(i);
                }
                Err(e) => out[i] = Err(e),
            }
        }
        self.pull_into(&jobs, &idx, |i| items[i].0, &mut out).await;
        out
    }

    /// Pulls `jobs` (job `j` is item `idx[j]`, whose key is `key(idx[j])`) and sets each
    /// item's size or error in `out`, remembering where the completed ones were read.
    async fn pull_into<'k>(
        &self,
        jobs: &[(Vec<(u64, u64)>, ReplicaList)],
        idx: &[usize],
        key: impl Fn(usize) -> &'k str,
        out: &mut [Result<u64, ErrorCode>],
    ) {
        let results = self.pull_many(jobs).await;
        for ((&i, (_, l)), r) in idx.iter().zip(jobs).zip(results) {
            if r.is_ok() {
                self.remember(key(i), &l.replicas);
            }
            out[i] = r.map(|()| l.size());
        }
    }

    /// Values of many keys (missing keys are `ObjectNotFound`).
    ///
    /// Values reached with a copy (as in [`Client::get`]) go straight into their vectors;
    /// the others are read through the staging buffer, where every value must fit at the
    /// same time.
    ///
    /// Every value is a new allocation. With glibc's defaults the memory a batch of large
    /// values frees goes back to the kernel and the next batch faults it in again (half
    /// the throughput of 32 values of 1 MiB between hosts here); a process that calls this
    /// in a loop should keep freed heap with
    /// [`keep_freed_heap`](mooncake_transfer_engine::keep_freed_heap), as the Python
    /// package and `store_bench` do, or read into registered memory with
    /// [`Client::batch_get_into`].
    pub async fn get_batch(&self, keys: &[&str]) -> Vec<Result<Vec<u8>, ErrorCode>> {
        self.batch_read(keys, true)
            .await
            .into_iter()
            .map(|r| {
                r.map(|v| match v {
                    Fetched::Copied(v) => v,
                    Fetched::Staged(s) => s.to_vec(),
                })
            })
            .collect()
    }

    /// Values of many keys, left in the staging buffer (see [`Client::get_staged`]); every
    /// value must fit in the staging buffer at the same time.
    pub async fn get_batch_staged(&self, keys: &[&str]) -> Vec<Result<StagedValue, ErrorCode>> {
        self.batch_read(keys, false)
            .await
            .into_iter()
            .map(|r| {
                r.and_then(|v| match v {
                    Fetched::Staged(s) => Ok(s),
                    Fetched::Copied(_) => Err(ErrorCode::InternalError),
                })
            })
            .collect()
    }

    /// One `batch_get_replica_list`, a staging slice reserved per value (all held until
    /// the end), then each value copied straight into a new vector if `copy_out` and this
    /// client reaches its preferred replica with a copy, else read into its slice (network
    /// reads concurrently, with failover).
    async fn batch_read(&self, keys: &[&str], copy_out: bool) -> Vec<Result<Fetched, ErrorCode>> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        // Keys read or written here before are read into the staging buffer while the
        // master answers, unless this client reaches their bytes with a plain copy.
        let mut staged_guesses = Vec::with_capacity(keys.len());
        for key in keys {
            let guess = match self.inner.locations.get(key) {
                Some(rep) if !copy_out || self.direct_range(&rep).await.is_none() => self
                    .inner
                    .staging
                    .as_ref()
                    .and_then(|st| st.take(rep.size))
                    .map(|s| (rep, s)),
                _ => None,
            };
            staged_guesses.push(guess);
        }
        let guesses: Vec<_> = staged_guesses
            .iter()
            .map(|g| {
                g.as_ref()
                    .map(|(rep, s)| (vec![(s.addr(), rep.size)], rep.clone()))
            })
            .collect();
        let (lists, hits) = match self.batch_lookup(&owned, &guesses).await {
            Ok(found) => found,
            Err(e) => return keys.iter().map(|_| Err(e)).collect(),
        };
        // What is in memory is served first, then each group of keys as its disk loads land.
        let mut loads = self.await_loads(&owned, &lists);
        let mut out: Vec<Result<Fetched, ErrorCode>> =
            keys.iter().map(|_| Err(ErrorCode::InternalError)).collect();
        let mut held = Vec::new();
        let mut group = Vec::with_capacity(keys.len());
        for (i, ((l, hit), guess)) in lists.into_iter().zip(hits).zip(staged_guesses).enumerate() {
            if let (true, Some((_, s))) = (hit, guess) {
                out[i] = Ok(Fetched::Staged(StagedValue(s)));
            } else if l != Err(ErrorCode::ReplicaIsNotReady) {
                group.push((i, l));
            }
        }
        loop {
            self.fetch_group(keys, group, copy_out, &mut out, &mut held)
                .await;
            let Some(Ok((idx, lists))) = loads.join_next().await else {
                break;
            };
            group = match lists {
                Ok(lists) => idx.into_iter().zip(lists).collect(),
                Err(e) => idx.into_iter().map(|i| (i, Err(e))).collect(),
            };
        }
        drop(held);
        out
    }

    /// Reads the values of one group of a batch (`(index, list)`) into `out`: a copy into
    /// a new vector if `copy_out` and this client reaches the preferred replica with one,
    /// else into a staging slice (network reads concurrently, with failover). Staging
    /// slices of copied values go into `held` (the batch keeps them to its end).
    async fn fetch_group(
        &self,
        keys: &[&str],
        group: Vec<(usize, Result<ReplicaList, ErrorCode>)>,
        copy_out: bool,
        out: &mut [Result<Fetched, ErrorCode>],
        held: &mut Vec<staging::Slice>,
    ) {
        let mut jobs = Vec::new();
        let mut slices = Vec::new();
        for (i, l) in group {
            let key = keys[i];
            let (l, s) = match l.and_then(|l| self.stage(l.size()).map(|s| (l, s))) {
                Ok(staged) => staged,
                Err(e) => {
                    out[i] = Err(e);
                    continue;
                }
            };
            let rep = self.preferred(&l.replicas).filter(|_| copy_out);
            let copied = match rep {
                Some(rep) => self.direct_range(rep).await.map(|r| r.to_vec()),
                None => None,
            };
            // A copy that fails its checksum is read again below, replica by replica.
            if let Some(v) = copied.filter(|v| self.checksum_ok(key, &l, || crc32c::crc32c(v))) {
                out[i] = Ok(Fetched::Copied(v));
                held.push(s);
                continue;
            }
            jobs.push((vec![(s.addr(), l.size())], l));
            slices.push((i, s));
        }
        let results = self.pull_many(&jobs).await;
        for (((i, s), r), (_, l)) in slices.into_iter().zip(results).zip(&jobs) {
            if r.is_ok() {
                self.remember(keys[i], &l.replicas);
            }
            out[i] = r.map(|()| Fetched::Staged(StagedValue(s)));
        }
    }

    /// Zero-copy batch get: `(key, addr, capacity)` per item; per-item size or error.
    pub async fn batch_get_into(&self, items: &[(&str, u64, u64)]) -> Vec<Result<u64, ErrorCode>> {
        let owned: Vec<String> = items.iter().map(|(k, _, _)| (*k).to_owned()).collect();
        let guesses: Vec<_> = items
            .iter()
            .map(|(key, addr, cap)| {
                let rep = self.inner.locations.get(key).filter(|r| r.size <= *cap)?;
                Some((vec![(*addr, rep.size)], rep))
            })
            .collect();
        let (lists, hits) = match self.batch_lookup(&owned, &guesses).await {
            Ok(found) => found,
            Err(e) => return items.iter().map(|_| Err(e)).collect(),
        };
        let mut loads = self.await_loads(&owned, &lists);
        let mut out: Vec<Result<u64, ErrorCode>> = vec![Err(ErrorCode::InternalError); items.len()];
        let mut group = Vec::new();
        for (i, l) in lists.into_iter().enumerate() {
            if hits[i] {
                out[i] = Ok(l.map(|l| l.size()).unwrap_or(0));
            } else if l != Err(ErrorCode::ReplicaIsNotReady) {
                group.push((i, l));
            }
        }
        // What is in memory first, then each group of keys as its disk loads land.
        loop {
            let mut jobs = Vec::new();
            let mut idx = Vec::new();
            for (i, l) in group {
                let (_, addr, cap) = items[i];
                match l {
                    Ok(l) if l.size() > cap => out[i] = Err(ErrorCode::InvalidParams),
                    Ok(l) => {
                        jobs.push((vec![(addr, l.size())], l));
                        idx.push(i);
                    }
                    Err(e) => out[i] = Err(e),
                }
            }
            self.pull_into(&jobs, &idx, |i| items[i].0, &mut out).await;
            let Some(Ok((idx, lists))) = loads.join_next().await else {
                break;
            };
            group = match lists {
                Ok(lists) => idx.into_iter().zip(lists).collect(),
                Err(e) => idx.into_iter().map(|i| (i, Err(e))).collect(),
            };
        }
        out
    }
}

/// A read started before the master answers: destination parts and the replica this
/// client last saw the key in.
type Guess = (Vec<(u64, u64)>, ReplicaDescriptor);

/// One value of a batch read: copied straight into a new vector, or in the staging buffer.
enum Fetched {
    Copied(Vec<u8>),
    Staged(StagedValue),
}

/// Runs `futures` concurrently in the calling task; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
