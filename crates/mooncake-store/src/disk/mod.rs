//! The disk tier of a holder (a store service or a client that contributes memory): the
//! objects the master evicts from its memory are demoted to its local disk instead of
//! dropped, and read back into its memory when someone asks for them.
//!
//! - [`record`]: the self-describing record (key, object version, length, CRC-32C);
//! - [`index`]: [`DiskIndex`], LRU capacity accounting (pure);
//! - `file`: one file per record, direct I/O through aligned buffers, scan at start;
//! - [`DiskTier`]: the three together, blocking calls the client runs on a bounded pool of
//!   threads (`spawn_blocking` under a semaphore of [`DiskConfig::io_threads`]).
//!
//! The protocol with the master is in `docs/disk-tier.md`.

mod file;
pub mod index;
pub mod record;
mod task;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use self::file::BadRecord;
pub use self::index::DiskIndex;
pub use self::task::{DiskOutcome, DiskRecord, DiskTask, DiskTaskKind, DiskTaskResult};

/// Settings of a disk tier (`--disk_path`, `--disk_capacity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The directory of the tier's records (created if missing; locked while in use).
    pub path: PathBuf,
    /// Bytes the records may take (LRU eviction beyond).
    pub capacity: u64,
    /// Disk requests in flight at most (threads of the I/O pool). Default 8: enough to
    /// keep an NVMe device's queue busy with 1 MiB requests.
    pub io_threads: usize,
    /// `fdatasync` every record, and its directory after the rename, before it counts as
    /// complete (`--disk_fsync`): records then survive a power loss, not only a killed
    /// process. Off by default (Mooncake's offload does not sync either).
    pub fsync: bool,
}

impl DiskConfig {
    /// A tier at `path` of `capacity` bytes, with the default pool.
    pub fn new(path: impl Into<PathBuf>, capacity: u64) -> Self {
        Self {
            path: path.into(),
            capacity,
            io_threads: 8,
            fsync: false,
        }
    }
}

/// Why a disk tier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The directory cannot be created or written.
    #[error("disk tier {path}: not writable: {source}")]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another running process uses the directory.
    #[error("disk tier {path} is in use by another running service")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// The capacity is larger than the free space of the filesystem.
    #[error("disk tier {path}: capacity {capacity} bytes is more than the {free} bytes free there (plus {held} held by existing records)")]
    CapacityOverFree {
        /// The directory.
        path: PathBuf,
        /// The capacity asked for.
        capacity: u64,
        /// Free bytes on the filesystem.
        free: u64,
        /// Bytes of the records already there.
        held: u64,
    },
    /// A capacity of zero.
    #[error("disk tier {path}: capacity must be positive")]
    ZeroCapacity {
        /// The directory.
        path: PathBuf,
    },
}

/// Counters of a tier (the store service's `/metrics`).
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Objects demoted from memory to disk.
    pub demotions: AtomicU64,
    /// Demotions refused because the device or the tier was full.
    pub demotions_full: AtomicU64,
    /// Records read back into memory.
    pub disk_hits: AtomicU64,
    /// Records evicted by the tier's LRU.
    pub evictions: AtomicU64,
    /// Records dropped because they were missing or failed their checksum.
    pub corrupt: AtomicU64,
    /// Bytes read from disk.
    pub read_bytes: AtomicU64,
    /// Total time of disk reads, in microseconds (`read_micros / disk_hits` is the mean).
    pub read_micros: AtomicU64,
    /// Bytes written to disk.
    pub write_bytes: AtomicU64,
    /// Of `read_micros`: opening and reading the record files.
    pub read_io_micros: AtomicU64,
    /// Of `read_micros`: checking headers and value checksums.
    pub read_verify_micros: AtomicU64,
    /// Of `read_micros`: copying values from a bounce buffer into memory.
    pub read_copy_micros: AtomicU64,
    /// Loads read straight into the holder's memory (no bounce buffer, no copy).
    pub loads_in_place: AtomicU64,
}

/// What opening a tier found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Complete records indexed.
    pub records: usize,
    /// Files dropped (torn, foreign or failing their header checksum).
    pub bad: Vec<BadRecord>,
    /// Records evicted because they exceeded the (new) capacity.
    pub over_capacity: usize,
}

/// A holder's disk tier: its files and index. Calls block; run them off the async runtime.
#[derive(Debug)]
pub struct DiskTier {
    config: DiskConfig,
    files: file::Files,
    index: Mutex<DiskIndex>,
    stats: DiskStats,
    /// After `ENOSPC`, demotions are refused until then (the device is full; trying every
    /// object would only add latency).
    full_until: Mutex<Option<Instant>>,
}

/// How long demotions stop after the device reported `ENOSPC`.
const FULL_BACKOFF: Duration = Duration::from_secs(5);

impl DiskTier {
    /// Opens (or creates) the tier: checks the directory is writable and not in use, that
    /// the capacity fits the free space, probes direct I/O, and rebuilds the index by
    /// scanning the records there.
    pub fn open(config: DiskConfig) -> Result<(Self, ScanReport), DiskError> {
        if config.capacity == 0 {
            return Err(DiskError::ZeroCapacity { path: config.path });
        }
        let files = file::Files::open(&config.path, config.fsync)?;
        let (records, bad) = files.scan();
        let mut index = DiskIndex::new(config.capacity);
        let mut report = ScanReport {
            records: records.len(),
            bad,
            over_capacity: 0,
        };
        for r in records {
            if let Some(old) = index.insert(r) {
                files.delete(&old.key, old.version);
            }
        }
        let held = index.used();
        let free = mooncake_transfer_engine::free_bytes(&config.path).map_err(|source| {
            DiskError::NotWritable {
                path: config.path.clone(),
                source,
            }
        })?;
        if config.capacity > free.saturating_add(held) {
            return Err(DiskError::CapacityOverFree {
                path: config.path,
                capacity: config.capacity,
                free,
                held,
            });
        }
        // A smaller capacity than last time: drop the least recently used records.
        if held > config.capacity {
            let (r, evicted) = index.reserve("", 0).unwrap_or((0, Vec::new()));
            index.release(r);
            for e in &evicted {
                files.delete(&e.key, e.version);
            }
            report.over_capacity = evicted.len();
        }
        report.records = index.len();
        tracing::info!(
            path = %config.path.display(),
            capacity = config.capacity,
            records = report.records,
            bytes = index.used(),
            bad = report.bad.len(),
            direct_io = files.direct(),
            "disk tier opened"
        );
        for b in &report.bad {
            tracing::warn!(file = %b.path.display(), reason = %b.reason, "dropped a damaged disk record");
        }
        Ok((
            Self {
                config,
                files,
                index: Mutex::new(index),
                stats: DiskStats::default(),
                full_until: Mutex::new(None),
            },
            report,
        ))
    }

    /// The settings.
    pub fn config(&self) -> &DiskConfig {
        &self.config
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Whether I/O bypasses the page cache (`O_DIRECT`).
    pub fn direct_io(&self) -> bool {
        self.files.direct()
    }

    /// The counters.
    pub fn stats(&self) -> &DiskStats {
        &self.stats
    }

    /// Bytes and number of records held.
    pub fn usage(&self) -> (u64, usize) {
        let ix = self.index.lock();
        (ix.used(), ix.len())
    }

    /// Every record held (for the master).
    pub fn records(&self) -> Vec<DiskRecord> {
        self.index.lock().records()
    }

    /// Writes a record of `key`/`version` whose `size` value bytes `fill` copies from the
    /// holder's memory. Returns the outcome and the records the LRU evicted to make room
    /// (already deleted; the master must be told).
    pub fn demote(
        &self,
        key: &str,
        version: u64,
        size: u64,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> (DiskOutcome, Vec<DiskRecord>) {
        if self.full_until.lock().is_some_and(|t| t > Instant::now()) {
            self.stats.demotions_full.fetch_add(1, Ordering::Relaxed);
            return (DiskOutcome::Full, Vec::new());
        }
        let (reserved, evicted) = match self.index.lock().reserve(key, size) {
            Ok(r) => r,
            Err(e) => {
                self.stats.demotions_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key, error = %e, "not demoted: the object is larger than the disk tier");
                return (DiskOutcome::Full, Vec::new());
            }
        };
        for e in &evicted {
            self.files.delete(&e.key, e.version);
        }
        self.stats
            .evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        match self.files.write(key, version, size, fill) {
            Ok(checksum) => {
                let replaced = self.index.lock().commit(
                    reserved,
                    DiskRecord {
                        key: key.to_owned(),
                        version,
                        size,
                        checksum,
                    },
                );
                if let Some(old) = replaced {
                    self.files.delete(&old.key, old.version);
                }
                self.stats.demotions.fetch_add(1, Ordering::Relaxed);
                self.stats.write_bytes.fetch_add(size, Ordering::Relaxed);
                (DiskOutcome::Done, evicted)
            }
            Err(e) => {
                self.index.lock().release(reserved);
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    *self.full_until.lock() = Some(Instant::now() + FULL_BACKOFF);
                    self.stats.demotions_full.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        path = %self.config.path.display(),
                        backoff_s = FULL_BACKOFF.as_secs(),
                        "disk full (ENOSPC): demotion stops for a while; evicted objects are dropped"
                    );
                    return (DiskOutcome::Full, evicted);
                }
                tracing::warn!(key, error = %e, "demotion failed");
                (DiskOutcome::Failed, evicted)
            }
        }
    }

    /// Reads the record of `key`/`version` (`size` value bytes), verifies it, and hands the
    /// value to `deliver` (which copies it into the holder's memory and says whether it
    /// could). A missing or corrupt record is dropped and reported.
    pub fn load(
        &self,
        key: &str,
        version: u64,
        size: u64,
        deliver: impl FnOnce(&[u8]) -> bool,
    ) -> DiskOutcome {
        let started = Instant::now();
        let r = self.files.read(key, version, size, deliver);
        match r {
            Ok((false, _)) => DiskOutcome::Failed,
            Ok((true, times)) => self.loaded(key, version, size, Ok(times), started),
            Err(e) => self.loaded(key, version, size, Err(e), started),
        }
    }

    /// Reads the record of `key`/`version` (`size` value bytes) into `[offset,
    /// offset+size)` of `memory` — straight from the file, without a copy, where direct
    /// I/O allows (see `Files::read_into`) — and verifies it there. A missing or corrupt
    /// record is dropped and reported; the range then holds unspecified bytes.
    pub fn load_into(
        &self,
        key: &str,
        version: u64,
        size: u64,
        memory: &mooncake_transfer_engine::LocalBuffer,
        offset: u64,
    ) -> DiskOutcome {
        let started = Instant::now();
        let r = self.files.read_into(key, version, size, memory, offset);
        self.loaded(key, version, size, r, started)
    }

    /// Counts a finished load; drops a record that is missing or corrupt.
    fn loaded(
        &self,
        key: &str,
        version: u64,
        size: u64,
        r: Result<file::LoadTimes, file::ReadError>,
        started: Instant,
    ) -> DiskOutcome {
        let s = &self.stats;
        let add = |a: &AtomicU64, d: Duration| a.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        match r {
            Ok(t) => {
                self.index.lock().touch(key);
                s.disk_hits.fetch_add(1, Ordering::Relaxed);
                s.read_bytes.fetch_add(size, Ordering::Relaxed);
                add(&s.read_micros, started.elapsed());
                add(&s.read_io_micros, t.io);
                add(&s.read_verify_micros, t.verify);
                add(&s.read_copy_micros, t.copy);
                if t.in_place {
                    s.loads_in_place.fetch_add(1, Ordering::Relaxed);
                }
                DiskOutcome::Done
            }
            Err(e @ (file::ReadError::Missing | file::ReadError::Corrupt(_))) => {
                tracing::error!(key, version, error = %e, "dropped a disk record: it is never served");
                s.corrupt.fetch_add(1, Ordering::Relaxed);
                self.delete(key, version);
                DiskOutcome::Corrupt
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "disk read failed");
                DiskOutcome::Failed
            }
        }
    }

    /// Deletes the record of `key`/`version`, if held.
    pub fn delete(&self, key: &str, version: u64) {
        self.index.lock().remove(key, version);
        self.files.delete(key, version);
    }
}

/// Appends the tier's Prometheus metrics (the store service's `/metrics`).
pub fn render_metrics(tier: &DiskTier, out: &mut String) {
    use std::fmt::Write;
    let (bytes, objects) = tier.usage();
    let s = tier.stats();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let hits = get(&s.disk_hits);
    let mean_us = get(&s.read_micros).checked_div(hits).unwrap_or(0);
    let gauges = [
        ("mooncake_disk_capacity_bytes", tier.config().capacity),
        ("mooncake_disk_bytes", bytes),
        ("mooncake_disk_objects", objects as u64),
        ("mooncake_disk_direct_io", u64::from(tier.direct_io())),
        ("mooncake_disk_read_latency_mean_us", mean_us),
    ];
    for (name, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
    }
    let counters = [
        ("mooncake_disk_demotions_total", get(&s.demotions)),
        ("mooncake_disk_demotions_full_total", get(&s.demotions_full)),
        ("mooncake_disk_hits_total", hits),
        ("mooncake_disk_evictions_total", get(&s.evictions)),
        ("mooncake_disk_corrupt_records_total", get(&s.corrupt)),
        ("mooncake_disk_read_bytes_total", get(&s.read_bytes)),
        ("mooncake_disk_read_micros_total", get(&s.read_micros)),
        ("mooncake_disk_write_bytes_total", get(&s.write_bytes)),
        ("mooncake_disk_read_io_micros_total", get(&s.read_io_micros)),
        (
            "mooncake_disk_read_verify_micros_total",
            get(&s.read_verify_micros),
        ),
        (
            "mooncake_disk_read_copy_micros_total",
            get(&s.read_copy_micros),
        ),
        ("mooncake_disk_loads_in_place_total", get(&s.loads_in_place)),
    ];
    for (name, v) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(dir: &Path, capacity: u64) -> DiskTier {
        DiskTier::open(DiskConfig::new(dir, capacity)).unwrap().0
    }

    fn value(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn records_survive_a_reopen_and_damage_is_never_served() {
        let dir = tempdir("survive");
        let t = tier(&dir, 64 << 20);
        for (i, len) in [(1u8, 1 << 20), (2, 5000), (3, 1)] {
            let v = value(i, len);
            let (o, ev) = t.demote(&format!("k{i}"), 7, len as u64, |b| {
                b.copy_from_slice(&v);
                true
            });
            assert_eq!((o, ev.len()), (DiskOutcome::Done, 0));
        }
        drop(t);
        // Damage one value byte of k2's record.
        let p = dir.join("objects").join(record::file_name("k2", 7));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[4096 + 10] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        // A torn file in objects/ (as if renamed half-written: cannot happen, but a scan
        // must not trust it) and a leftover in tmp/.
        std::fs::write(
            dir.join("objects").join(record::file_name("k9", 1)),
            b"MCDISK01",
        )
        .unwrap();
        std::fs::write(dir.join("tmp").join("x"), b"junk").unwrap();
        let (t, report) = DiskTier::open(DiskConfig::new(&*dir, 64 << 20)).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(report.bad.len(), 1);
        let mut got = Vec::new();
        assert_eq!(
            t.load("k1", 7, 1 << 20, |v| {
                got = v.to_vec();
                true
            }),
            DiskOutcome::Done
        );
        assert_eq!(got, value(1, 1 << 20));
        assert_eq!(t.load("k2", 7, 5000, |_| true), DiskOutcome::Corrupt);
        assert_eq!(
            t.load("k2", 7, 5000, |_| true),
            DiskOutcome::Corrupt,
            "dropped"
        );
        assert_eq!(t.usage().1, 2);
        assert_eq!(
            t.load("k3", 8, 1, |_| true),
            DiskOutcome::Corrupt,
            "wrong version"
        );
        assert!(std::fs::read_dir(dir.join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn a_second_process_is_refused_and_capacity_is_checked() {
        let dir = tempdir("lock");
        let _t = tier(&dir, 1 << 20);
        assert!(matches!(
            DiskTier::open(DiskConfig::new(&*dir, 1 << 20)),
            Err(DiskError::InUse { .. })
        ));
        let dir2 = tempdir("cap");
        let err = DiskTier::open(DiskConfig::new(&*dir2, u64::MAX / 2)).unwrap_err();
        assert!(matches!(err, DiskError::CapacityOverFree { .. }), "{err}");
        assert!(err.to_string().contains("free"), "{err}");
        assert!(matches!(
            DiskTier::open(DiskConfig::new("/proc/no-such-dir/x", 1 << 20)),
            Err(DiskError::NotWritable { .. })
        ));
    }

    #[test]
    fn the_lru_makes_room_and_reports_what_it_evicted() {
        let dir = tempdir("lru");
        // Room for three records of 1 MiB (each takes one more header block).
        let t = tier(&dir, 3 * ((1 << 20) + 4096));
        for i in 0..3u64 {
            assert_eq!(
                t.demote(&format!("k{i}"), i, 1 << 20, |_| true).0,
                DiskOutcome::Done
            );
        }
        assert_eq!(t.load("k0", 0, 1 << 20, |_| true), DiskOutcome::Done);
        let (o, evicted) = t.demote("k3", 3, 1 << 20, |_| true);
        assert_eq!(o, DiskOutcome::Done);
        assert_eq!(
            evicted.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["k1"]
        );
        assert_eq!(t.load("k1", 1, 1 << 20, |_| true), DiskOutcome::Corrupt);
        assert_eq!(t.demote("huge", 9, 10 << 20, |_| true).0, DiskOutcome::Full);
    }

    #[test]
    fn records_round_trip_on_tmpfs_with_or_without_direct_io() {
        // tmpfs refuses O_DIRECT on older kernels: the tier falls back to buffered I/O
        // and must behave the same.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = shm.join(format!("mooncake-disk-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = tier(&dir, 8 << 20);
        let v = value(5, 10_000);
        let (o, _) = t.demote("k", 1, v.len() as u64, |b| {
            b.copy_from_slice(&v);
            true
        });
        assert_eq!(o, DiskOutcome::Done, "direct_io={}", t.direct_io());
        let mut got = Vec::new();
        let o = t.load("k", 1, v.len() as u64, |b| {
            got = b.to_vec();
            true
        });
        assert_eq!((o, got == v), (DiskOutcome::Done, true));
        drop(t);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn loads_land_in_registered_memory_in_place_and_are_verified_there() {
        use mooncake_transfer_engine::{EngineConfig, TransferEngine};
        let engine = TransferEngine::start_p2p(EngineConfig::new("127.0.0.1"))
            .await
            .unwrap();
        let mem = engine.allocate_buffer(8 << 20, "cpu:0").await.unwrap();
        let dir = tempdir("in-place");
        let t = tier(&dir, 64 << 20);
        // A whole number of blocks, a value with a partial last block, one smaller than a
        // block; at an aligned offset, and (the last) at an unaligned one.
        let cases = [
            ("a", 1 << 20, 0u64),
            ("b", (1 << 20) + 1000, 2 << 20),
            ("c", 100, 4 << 20),
            ("d", 50_000, (5 << 20) + 8),
        ];
        for (i, &(key, len, _)) in cases.iter().enumerate() {
            let v = value(i as u8, len);
            let (o, _) = t.demote(key, 1, len as u64, |b| {
                b.copy_from_slice(&v);
                true
            });
            assert_eq!(o, DiskOutcome::Done);
        }
        for (i, &(key, len, at)) in cases.iter().enumerate() {
            assert_eq!(
                t.load_into(key, 1, len as u64, &mem, at),
                DiskOutcome::Done,
                "{key}"
            );
            let mut got = vec![0u8; len];
            mem.read_at(at, &mut got);
            assert!(got == value(i as u8, len), "{key}: wrong bytes in memory");
        }
        let in_place = t.stats().loads_in_place.load(Ordering::Relaxed);
        // With direct I/O the unaligned destination goes through a bounce buffer.
        assert_eq!(in_place, if t.direct_io() { 3 } else { 4 });
        // A damaged value is caught where it landed, dropped and never reported loaded.
        let p = dir.join("objects").join(record::file_name("a", 1));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[4096 + 5000] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(t.load_into("a", 1, 1 << 20, &mem, 0), DiskOutcome::Corrupt);
        assert_eq!(t.load_into("a", 1, 1 << 20, &mem, 0), DiskOutcome::Corrupt);
        assert_eq!(t.usage().1, 3);
    }

    /// A directory under the temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "mooncake-disk-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}
