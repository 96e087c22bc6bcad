//! Reads: `get` and its zero-copy and batch forms, the speculative read beside the master
//! call, checksums, and the values handed out (`Value`).

use super::*;

impl Client {
    /// CRC-32C of registered local memory laid end to end (`InvalidParams` when a part is
    /// not registered).
    pub(super) fn local_crc(&self, parts: &[(u64, u64)]) -> Result<u32, ErrorCode> {
        parts.iter().try_fold(0, |crc, &(addr, len)| {
            self.inner
                .engine
                .crc32c_append(crc, addr, len)
                .ok_or(ErrorCode::InvalidParams)
        })
    }

    /// Whether `crc` (of what was read) is what the writer recorded for `key`; counts and
    /// reports a mismatch. Always true when checksums are off or none was recorded.
    pub(super) fn checksum_ok(
        &self,
        key: &str,
        list: &ReplicaList,
        crc: impl FnOnce() -> u32,
    ) -> bool {
        let Some(want) = list.checksum.filter(|_| self.inner.config.verify_checksums) else {
            return true;
        };
        let got = crc();
        if got != want {
            self.inner
                .checksum_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                key,
                want = format_args!("{want:#010x}"),
                got = format_args!("{got:#010x}"),
                "a replica failed its checksum; trying the others"
            );
        }
        got == want
    }

    /// [`Client::read_and_remember`], then the checksum check (with the replica-by-replica
    /// fallback on a mismatch).
    async fn read_checked(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        list: &ReplicaList,
    ) -> Result<(), ErrorCode> {
        self.read_and_remember(key, dst, &list.replicas).await?;
        if self.checksum_ok(key, list, || self.local_crc(dst).unwrap_or(0)) {
            return Ok(());
        }
        self.read_verified(key, dst, list, true).await
    }

    /// Reads `key` into `dst` replica by replica until one passes its checksum; the
    /// fallback after a read that failed it. `TransferFail` when none does.
    pub(super) async fn read_verified(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        list: &ReplicaList,
        remember: bool,
    ) -> Result<(), ErrorCode> {
        for rep in &list.replicas {
            let Ok(reqs) = self.requests(Opcode::Read, dst, rep).await else {
                continue;
            };
            if self.inner.engine.transfer(&reqs).await.is_err() {
                continue;
            }
            if self.checksum_ok(key, list, || self.local_crc(dst).unwrap_or(0)) {
                if remember {
                    self.inner.locations.insert(key, rep);
                }
                return Ok(());
            }
        }
        if remember {
            self.inner.locations.remove(key);
        }
        tracing::error!(
            key,
            replicas = list.replicas.len(),
            "no replica passed its checksum"
        );
        Err(ErrorCode::TransferFail)
    }

    /// Reads that missed because no replica the master named could be transferred: the
    /// master found the key, so only the client can count this miss (its store service
    /// exports it as `mooncake_client_read_misses_total{cause="transfer_failed"}`).
    pub fn read_transfer_failures(&self) -> u64 {
        self.inner
            .read_transfer_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads that found a replica failing its checksum (each is also logged).
    pub fn checksum_failures(&self) -> u64 {
        self.inner
            .checksum_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    // ---- reads ----

    /// The value of `key`, copied through the staging buffer.
    ///
    /// A replica this client reaches with a copy (its own segment, or a same-host peer's
    /// shared memory) is copied straight into the new vector; others are read through the
    /// staging buffer. Either way the value must fit in the staging buffer (Mooncake's
    /// rule: larger values need [`Client::get_into`]).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ErrorCode> {
        let list = match self.inner.locations.get(key) {
            Some(rep) => {
                let Some(range) = self.direct_range(&rep).await else {
                    return Ok(self.get_staged(key).await?.to_vec());
                };
                let _room = self.stage(rep.size)?;
                let master = self.inner.master.get_replica_list(key);
                let (list, v) = tokio::join!(master, async { range.to_vec() });
                let list = list.inspect_err(|_| self.inner.locations.remove(key))?;
                if list.replicas.contains(&rep) {
                    if self.checksum_ok(key, &list, || crc32c::crc32c(&v)) {
                        return Ok(v);
                    }
                    return Ok(self.reread(key, &list).await?.to_vec());
                }
                self.inner.locations.remove(key);
                list
            }
            None => self.inner.master.get_replica_list(key).await?,
        };
        Ok(self.read_listed(key, &list, None).await?.to_vec())
    }

    /// `key`'s value read again into the staging buffer, replica by replica, verified.
    async fn reread(&self, key: &str, list: &ReplicaList) -> Result<Value, ErrorCode> {
        let slice = self.stage(list.size())?;
        self.read_verified(key, &[(slice.addr(), list.size())], list, true)
            .await?;
        Ok(Value::Staged(StagedValue(slice)))
    }

    /// The value of `key`, to be copied out once by the caller ([`Value::read_into_uninit`],
    /// e.g. straight into a Python `bytes`): the range itself if this client reaches the
    /// replica with a copy (no copy made yet), else the value read into the staging buffer
    /// (as [`Client::get_staged`], including its read from a cached location started
    /// alongside the master call). The value must fit in the staging buffer either way.
    pub async fn get_value(&self, key: &str) -> Result<Value, ErrorCode> {
        let mut known = None;
        if let Some(rep) = self.inner.locations.get(key) {
            match self.direct_range(&rep).await {
                Some(range) => known = Some((rep, range)),
                None => return self.get_staged(key).await.map(Value::Staged),
            }
        }
        let list = self.inner.master.get_replica_list(key).await?;
        self.read_listed(key, &list, known).await
    }

    /// `key`'s value from the replicas the master listed: the preferred replica's range if
    /// this client reaches it with a copy (`known` is one already found for a replica), else
    /// read into the staging buffer with failover. Either way the value must fit in the
    /// staging buffer, and the replica used is remembered.
    async fn read_listed(
        &self,
        key: &str,
        list: &ReplicaList,
        known: Option<(ReplicaDescriptor, DirectRange)>,
    ) -> Result<Value, ErrorCode> {
        let slice = self.stage(list.size())?;
        if let Some(rep) = self.preferred(&list.replicas) {
            let range = match known {
                Some((cached, range)) if cached == *rep => Some(range),
                _ => self.direct_range(rep).await,
            };
            if let Some(range) = range {
                if self.checksum_ok(key, list, || range.crc32c()) {
                    self.inner.locations.insert(key, rep);
                    return Ok(Value::Mapped(range));
                }
                drop(slice);
                return self.reread(key, list).await;
            }
        }
        self.read_checked(key, &[(slice.addr(), list.size())], list)
            .await?;
        Ok(Value::Staged(StagedValue(slice)))
    }

    /// `rep`'s bytes as a range this client reaches with a copy, if it does (a segment
    /// that cannot be opened is left to the transfer path, which reports the problem).
    pub(super) async fn direct_range(&self, rep: &ReplicaDescriptor) -> Option<DirectRange> {
        let engine = &self.inner.engine;
        let target = engine.open_segment(&rep.transport_endpoint).await.ok()?;
        let len = usize::try_from(rep.size).ok()?;
        let found = engine.direct_range(target, rep.buffer_address, len);
        found.ok().flatten()
    }

    /// The value of `key`, left in the staging buffer: copy it out with
    /// [`StagedValue::read_into`] (one copy, e.g. straight into a Python `bytes`).
    pub async fn get_staged(&self, key: &str) -> Result<StagedValue, ErrorCode> {
        let cached = self.inner.locations.get(key);
        let guess = cached
            .as_ref()
            .and_then(|r| Some((r, self.stage(r.size).ok()?)));
        let list = match guess {
            Some((rep, slice)) => {
                let dst = [(slice.addr(), rep.size)];
                match self.speculate(key, &dst, rep).await? {
                    (_, true) => return Ok(StagedValue(slice)),
                    (list, false) => list,
                }
            }
            None => self.inner.master.get_replica_list(key).await?,
        };
        let size = list.size();
        let slice = self.stage(size)?;
        self.read_checked(key, &[(slice.addr(), size)], &list)
            .await?;
        Ok(StagedValue(slice))
    }

    /// Reads `rep` into `dst` while asking the master for `key`'s replicas. `(list, true)`:
    /// the master confirmed the cached replica (same address, size, segment and version)
    /// and `dst` holds the value (verified, when checksums are on). `(list, false)`: the
    /// guess was stale, its read failed or its bytes failed their checksum; `dst` must be
    /// written again from `list`.
    async fn speculate(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        rep: &ReplicaDescriptor,
    ) -> Result<(ReplicaList, bool), ErrorCode> {
        let read = async {
            let reqs = self.requests(Opcode::Read, dst, rep).await?;
            self.inner
                .engine
                .transfer(&reqs)
                .await
                .map_err(|e| map_transfer(&e))
        };
        let (list, read) = tokio::join!(self.inner.master.get_replica_list(key), read);
        let list = list.inspect_err(|_| self.inner.locations.remove(key))?;
        if read.is_ok()
            && list.replicas.contains(rep)
            && self.checksum_ok(key, &list, || self.local_crc(dst).unwrap_or(0))
        {
            return Ok((list, true));
        }
        self.inner.locations.remove(key);
        Ok((list, false))
    }

    /// The size of `key`'s value if this client remembers a replica of it that it reads
    /// over the network: the size to allocate for [`Client::get_lent`].
    /// `None` too for a value larger than one lent exchange carries
    /// ([`TransferEngine::LENT_MAX_BYTES`](mooncake_transfer_engine::TransferEngine::LENT_MAX_BYTES)).
    pub async fn remembered_network_size(&self, key: &str) -> Option<u64> {
        let rep = self.inner.locations.get(key)?;
        let fits = rep.size <= mooncake_transfer_engine::TransferEngine::LENT_MAX_BYTES;
        (fits && self.direct_range(&rep).await.is_none()).then_some(rep.size)
    }

    /// Reads `key` straight into `out` (ordinary memory, not registered; exactly the size
    /// [`Client::remembered_network_size`] gave) from the replica this client remembers,
    /// while the master confirms that replica, as [`Client::get_into`]'s speculative read
    /// does, but without the staging copy. `Ok(true)`: all of `out` holds the value.
    /// `Ok(false)`: nothing is known of `out`; read the value the usual way.
    pub async fn get_lent(
        &self,
        key: &str,
        out: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<bool, ErrorCode> {
        let Some(rep) = self
            .inner
            .locations
            .get(key)
            .filter(|r| r.size == out.len() as u64)
        else {
            return Ok(false);
        };
        let engine = &self.inner.engine;
        let Ok(target) = engine.open_segment(&rep.transport_endpoint).await else {
            return Ok(false);
        };
        let (list, read) = tokio::join!(
            self.inner.master.get_replica_list(key),
            engine.read_lent_uninit(target, rep.buffer_address, out)
        );
        let list = list.inspect_err(|_| self.inner.locations.remove(key))?;
        // Checksums are verified on the staged path; with them on, only that path serves.
        if read
            && list.replicas.contains(&rep)
            && list
                .checksum
                .is_none_or(|_| !self.inner.config.verify_checksums)
        {
            return Ok(true);
        }
        if !list.replicas.contains(&rep) {
            self.inner.locations.remove(key);
        }
        Ok(false)
    }

    /// [`Client::pull`], then remembers the replica that served the read.
    async fn read_and_remember(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        replicas: &[ReplicaDescriptor],
    ) -> Result<(), ErrorCode> {
        let served = self.pull(dst, replicas).await?;
        self.inner.locations.insert(key, served);
        Ok(())
    }

    /// Reads `key` into `[addr, addr+capacity)` (inside a registered buffer) without
    /// copying; returns the value's size. A buffer smaller than the value is
    /// `InvalidParams` and is left untouched.
    ///
    /// A read from the replica this client last used for `key` may start before the master
    /// answers; if the master names another replica, the buffer is written again from it.
    pub async fn get_into(&self, key: &str, addr: u64, capacity: u64) -> Result<u64, ErrorCode> {
        let list = match self.inner.locations.get(key) {
            Some(rep) if rep.size <= capacity => {
                match self.speculate(key, &[(addr, rep.size)], &rep).await? {
                    (_, true) => return Ok(rep.size),
                    (list, false) => list,
                }
            }
            _ => self.inner.master.get_replica_list(key).await?,
        };
        let size = list.size();
        if size > capacity {
            return Err(ErrorCode::InvalidParams);
        }
        self.read_checked(key, &[(addr, size)], &list).await?;
        Ok(size)
    }

    /// Reads `key` scattered over `parts` (`(addr, len)` ranges of registered memory, in
    /// order); returns the value's size. Mooncake's exact-fit rule: ranges shorter than the
    /// value are `InvalidParams`, longer are `TransferFail`; either way nothing is written.
    pub async fn get_into_parts(&self, key: &str, parts: &[(u64, u64)]) -> Result<u64, ErrorCode> {
        let list = self.inner.master.get_replica_list(key).await?;
        self.pull_exact(parts, &list).await
    }

    async fn pull_exact(&self, parts: &[(u64, u64)], list: &ReplicaList) -> Result<u64, ErrorCode> {
        let size = list.size();
        match total(parts).cmp(&size) {
            std::cmp::Ordering::Less => Err(ErrorCode::InvalidParams),
            std::cmp::Ordering::Greater => Err(ErrorCode::TransferFail),
            std::cmp::Ordering::Equal => {
                self.pull(parts, &list.replicas).await?;
                Ok(size)
            }
        }
    }

    /// Reads one object, trying the local replica first and failing over to the others.
    pub(super) async fn pull<'a>(
        &self,
        dst: &[(u64, u64)],
        replicas: &'a [ReplicaDescriptor],
    ) -> Result<&'a ReplicaDescriptor, ErrorCode> {
        let me = self.inner.engine.segment_name();
        let mut order: Vec<&ReplicaDescriptor> = replicas.iter().collect();
        order.sort_by_key(|r| r.transport_endpoint != me);
        let mut last = ErrorCode::ReplicaIsNotReady;
        let mut transferred = false;
        for r in order {
            let reqs = match self.requests(Opcode::Read, dst, r).await {
                Ok(reqs) => reqs,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match self.inner.engine.transfer(&reqs).await {
                Ok(()) => return Ok(r),
                Err(e) => {
                    tracing::warn!(segment = %r.transport_endpoint, error = %e, "read from a replica failed; trying the next");
                    last = map_transfer(&e);
                    transferred = true;
                }
            }
        }
        if transferred {
            self.inner
                .read_transfer_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(last)
    }

    // ---- metadata-only calls ----
}

/// A value found by [`Client::get_value`], not yet copied out.
#[derive(Debug)]
pub enum Value {
    /// The replica's own bytes, in memory this client maps (its segment, or a same-host
    /// peer's shared memory).
    Mapped(DirectRange),
    /// A copy in the staging buffer.
    Staged(StagedValue),
}

impl Value {
    /// The value's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Value::Mapped(r) => r.len(),
            Value::Staged(s) => s.len(),
        }
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the value into `out` (exactly [`Value::len`] bytes, possibly uninitialised).
    pub fn read_into_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        match self {
            Value::Mapped(r) => r.read_into_uninit(out),
            Value::Staged(s) => s.read_into_uninit(out),
        }
    }

    /// The value as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Value::Mapped(r) => r.to_vec(),
            Value::Staged(s) => s.to_vec(),
        }
    }
}
