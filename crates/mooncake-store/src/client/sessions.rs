//! Batch get and put sessions (`python-api-2.md` §4): a get session caches one replica and
//! its lease per key, so ranged reads need no master call; a put session holds a put's
//! reserved replicas open for any number of ranged writes until it is ended (committed) or
//! revoked. Both live in this client only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mooncake_transfer_engine::{Opcode, TransferRequest};
use parking_lot::Mutex;

use super::Client;
use crate::types::{ReplicaDescriptor, ReplicateConfig};
use crate::ErrorCode;

/// One fragment: `(local address, length, offset in the object)`.
pub type Fragment = (u64, u64, u64);

#[derive(Debug)]
struct GetSession {
    replica: ReplicaDescriptor,
    lease_until: Instant,
}

#[derive(Debug)]
struct PutSession {
    replicas: Vec<ReplicaDescriptor>,
    size: u64,
    sealed: bool,
    /// Ranged writes in flight; end and revoke wait for them after sealing.
    writers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a ranged write in flight for as long as it lives.
struct Writing(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The open sessions of one client, by key.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    gets: Mutex<HashMap<String, GetSession>>,
    puts: Mutex<HashMap<String, PutSession>>,
}

impl Client {
    /// Opens a get session per key (one master call, which grants read leases): 0, or the
    /// master's code for that key (-704 missing). A failed start drops an older session.
    pub async fn batch_get_session_start(&self, keys: &[String]) -> Vec<i32> {
        if keys.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let lists = match self.inner.master.batch_get_replica_list(keys).await {
            Ok(l) if l.len() == keys.len() => l,
            Ok(_) => vec![Err(ErrorCode::RpcFail); keys.len()],
            Err(e) => vec![Err(e); keys.len()],
        };
        let mut gets = self.inner.sessions.gets.lock();
        keys.iter()
            .zip(lists)
            .map(|(key, list)| {
                let found = list.and_then(|l| {
                    let replica = self
                        .preferred(&l.replicas)
                        .cloned()
                        .ok_or(ErrorCode::InvalidReplica)?;
                    let lease = Duration::from_millis(l.lease_ttl_ms);
                    Ok(GetSession {
                        replica,
                        lease_until: now + lease,
                    })
                });
                match found {
                    Ok(s) => {
                        gets.insert(key.clone(), s);
                        0
                    }
                    Err(e) => {
                        gets.remove(key);
                        e.code()
                    }
                }
            })
            .collect()
    }

    /// Drops the get sessions of `keys` (no master call).
    pub fn batch_get_session_end(&self, keys: &[String]) {
        let mut gets = self.inner.sessions.gets.lock();
        for k in keys {
            gets.remove(k);
        }
    }

    /// Reads each key's fragments through its get session: per key the bytes read, -600
    /// without a session or for a fragment beyond the object, -707 when the cached lease
    /// has run out (the session is dropped), -800 when a transfer fails.
    pub async fn get_session_ranges(&self, items: &[(String, Vec<Fragment>)]) -> Vec<i64> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(items.len());
        for (key, frags) in items {
            let replica = {
                let mut gets = self.inner.sessions.gets.lock();
                match gets.get(key) {
                    None => Err(ErrorCode::InvalidParams),
                    Some(s) if s.lease_until <= now => {
                        gets.remove(key);
                        Err(ErrorCode::LeaseExpired)
                    }
                    Some(s) => Ok(s.replica.clone()),
                }
            };
            let r = match replica {
                Ok(rep) => self.ranged(Opcode::Read, &rep, rep.size, frags).await,
                Err(e) => Err(e),
            };
            out.push(match r {
                Ok(n) => n as i64,
                Err(e) => i64::from(e.code()),
            });
        }
        out
    }

    /// Moves `frags` between local memory and `rep` at the fragments' object offsets; the
    /// bytes moved, or -600 for a fragment beyond `limit`.
    async fn ranged(
        &self,
        opcode: Opcode,
        rep: &ReplicaDescriptor,
        limit: u64,
        frags: &[Fragment],
    ) -> Result<u64, ErrorCode> {
        let mut total = 0u64;
        for &(_, len, off) in frags {
            if off.checked_add(len).is_none_or(|end| end > limit) {
                return Err(ErrorCode::InvalidParams);
            }
            total += len;
        }
        let target = self
            .inner
            .engine
            .open_segment(&rep.transport_endpoint)
            .await
            .map_err(|_| ErrorCode::TransferFail)?;
        let reqs: Vec<TransferRequest> = frags
            .iter()
            .filter(|f| f.1 > 0)
            .map(|&(addr, len, off)| TransferRequest {
                opcode,
                source: addr,
                target,
                target_offset: rep.buffer_address + off,
                length: len,
            })
            .collect();
        self.inner
            .engine
            .transfer(&reqs)
            .await
            .map_err(|e| super::map_transfer(&e))?;
        Ok(total)
    }

    /// Mooncake's `get_into_ranges` core: for each key (one master call per distinct key,
    /// granting leases), reads every fragment into registered memory. Per key, per
    /// fragment: its length, -600 when it lies beyond the object, the master's code (-704
    /// missing) or -800 when the transfer fails.
    pub async fn read_ranges(&self, items: &[(String, Vec<Fragment>)]) -> Vec<Vec<i64>> {
        let mut distinct: Vec<String> = Vec::new();
        for (k, _) in items {
            if !distinct.contains(k) {
                distinct.push(k.clone());
            }
        }
        let lists = if distinct.is_empty() {
            Vec::new()
        } else {
            match self.inner.master.batch_get_replica_list(&distinct).await {
                Ok(l) if l.len() == distinct.len() => l,
                Ok(_) => vec![Err(ErrorCode::RpcFail); distinct.len()],
                Err(e) => vec![Err(e); distinct.len()],
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (key, frags) in items {
            let i = distinct.iter().position(|k| k == key).unwrap_or(0);
            let rep = match &lists[i] {
                Ok(l) => self
                    .preferred(&l.replicas)
                    .cloned()
                    .ok_or(ErrorCode::InvalidReplica),
                Err(e) => Err(*e),
            };
            let row = match &rep {
                Err(e) => vec![i64::from(e.code()); frags.len()],
                Ok(rep) => {
                    // Fragments beyond the object fail alone; the others move in one transfer.
                    let fits = |f: &Fragment| f.2.checked_add(f.1).is_some_and(|e| e <= rep.size);
                    let good: Vec<Fragment> = frags.iter().copied().filter(fits).collect();
                    let moved = self.ranged(Opcode::Read, rep, rep.size, &good).await;
                    frags
                        .iter()
                        .map(|f| match (&moved, fits(f)) {
                            (_, false) => i64::from(ErrorCode::InvalidParams.code()),
                            (Ok(_), true) => f.1 as i64,
                            (Err(e), true) => i64::from(e.code()),
                        })
                        .collect()
                }
            };
            out.push(row);
        }
        out
    }

    /// Reserves a put per `(key, size)` without writing it: 0, -600 for a key that already
    /// has a session here, or the master's code (-705 when the object exists).
    pub async fn batch_put_session_start(
        &self,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> Vec<i32> {
        let mut out = vec![0; items.len()];
        let mut ask = Vec::new();
        let mut idx = Vec::new();
        {
            let puts = self.inner.sessions.puts.lock();
            for (i, (k, n)) in items.iter().enumerate() {
                if puts.contains_key(k) || ask.iter().any(|(a, _): &(String, u64)| a == k) {
                    out[i] = ErrorCode::InvalidParams.code();
                } else {
                    ask.push((k.clone(), *n));
                    idx.push(i);
                }
            }
        }
        if ask.is_empty() {
            return out;
        }
        let started = match self
            .inner
            .master
            .batch_put_start(self.inner.id, &ask, config)
            .await
        {
            Ok(s) if s.len() == ask.len() => s,
            Ok(_) => vec![Err(ErrorCode::RpcFail); ask.len()],
            Err(e) => vec![Err(e); ask.len()],
        };
        let mut puts = self.inner.sessions.puts.lock();
        for ((i, (key, size)), r) in idx.into_iter().zip(ask).zip(started) {
            match r {
                Ok(replicas) => {
                    puts.insert(
                        key,
                        PutSession {
                            replicas,
                            size,
                            sealed: false,
                            writers: Default::default(),
                        },
                    );
                }
                Err(e) => out[i] = e.code(),
            }
        }
        out
    }

    /// Writes each key's fragments into every replica of its put session: per key the bytes
    /// written (counted once), -600 without an open session or for a fragment beyond the
    /// size declared at start, -800 when a transfer fails.
    pub async fn put_session_ranges(&self, items: &[(String, Vec<Fragment>)]) -> Vec<i64> {
        let mut out = Vec::with_capacity(items.len());
        for (key, frags) in items {
            let session = {
                let puts = self.inner.sessions.puts.lock();
                match puts.get(key) {
                    Some(s) if !s.sealed => {
                        s.writers.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        Ok((s.replicas.clone(), s.size, Writing(s.writers.clone())))
                    }
                    _ => Err(ErrorCode::InvalidParams),
                }
            };
            let r = match session {
                Ok((replicas, size, _writing)) => {
                    let mut r = Ok(0);
                    for rep in &replicas {
                        r = self.ranged(Opcode::Write, rep, size, frags).await;
                        if r.is_err() {
                            break;
                        }
                    }
                    r
                }
                Err(e) => Err(e),
            };
            out.push(match r {
                Ok(n) => n as i64,
                Err(e) => i64::from(e.code()),
            });
        }
        out
    }

    /// Ends (commits) or revokes put sessions: per key 0, -600 without a session, or the
    /// master's code (the session is then kept, so the call can be retried). A revoke of an
    /// object the master no longer has is 0.
    pub async fn batch_put_session_finish(&self, keys: &[String], commit: bool) -> Vec<i32> {
        let mut out = vec![0; keys.len()];
        let mut ask = Vec::new();
        let mut idx = Vec::new();
        let mut writers = Vec::new();
        {
            let mut puts = self.inner.sessions.puts.lock();
            for (i, k) in keys.iter().enumerate() {
                match puts.get_mut(k) {
                    Some(s) if !ask.contains(k) => {
                        s.sealed = true;
                        writers.push(s.writers.clone());
                        ask.push(k.clone());
                        idx.push(i);
                    }
                    _ => out[i] = ErrorCode::InvalidParams.code(),
                }
            }
        }
        if ask.is_empty() {
            return out;
        }
        // Sealed: no new write starts; wait for those already under way.
        for w in writers {
            while w.load(std::sync::atomic::Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let m = &self.inner.master;
        let r = if commit {
            m.batch_put_end(self.inner.id, &ask).await
        } else {
            m.batch_put_revoke(self.inner.id, &ask).await
        };
        let results = match r {
            Ok(r) if r.len() == ask.len() => r,
            Ok(_) => vec![Err(ErrorCode::RpcFail); ask.len()],
            Err(e) => vec![Err(e); ask.len()],
        };
        let mut puts = self.inner.sessions.puts.lock();
        for ((i, key), r) in idx.into_iter().zip(ask).zip(results) {
            match r {
                Ok(()) => {
                    puts.remove(&key);
                }
                Err(ErrorCode::ObjectNotFound) if !commit => {
                    puts.remove(&key);
                }
                Err(e) => {
                    out[i] = e.code();
                }
            }
        }
        out
    }
}
