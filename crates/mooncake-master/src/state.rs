//! The state directory (`--state_dir`): restart durability of the master.
//!
//! Files: `LOCK` (an exclusive `flock` while a master uses the directory), `snapshot` (the
//! full durable state at one point) and `log` (every change after it, one frame per master
//! call); the format is in `format.rs`. Each mutating call's changes are written to the
//! log with one `write` before the call is answered, so a killed master (SIGKILL
//! included) loses nothing it acknowledged: the page cache outlives the process. A
//! background fsync every `fsync_interval` bounds what a machine crash can lose (zero:
//! fsync before every answer). When the log grows past `compact_bytes`, at startup and on
//! a clean shutdown, the state is folded into a new snapshot (temp file, fsync, rename)
//! and a new, empty log begins.
//!
//! Ordering: the core's lock is held while a call's changes are queued here, so the queue
//! is in the core's order; whoever holds the writer lock next writes everything queued, in
//! order (group commit). A call returns only after its batch was written, by itself or by
//! the writer before it.

pub(crate) mod format;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use self::format::{encode, frames, FileKind, Header, Record, FORMAT_MAJOR, FORMAT_MINOR};
use crate::core::{Change, MasterCore};
use crate::StateConfig;

const LOCK: &str = "LOCK";
const SNAPSHOT: &str = "snapshot";
const LOG: &str = "log";
/// Changes per frame of a snapshot.
const SNAPSHOT_CHUNK: usize = 1024;

/// Errors opening or loading the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("state directory: {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another running master holds the directory.
    #[error("state directory {} is in use by another running master", .0.display())]
    Locked(PathBuf),
    /// A snapshot that does not read back, or a record that is intact but not understood.
    #[error("{} is corrupt at byte {offset}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// Written by a master of a newer, incompatible format.
    #[error(
        "{} has state format {major}.{minor}, newer than this master's {}.{}: run a newer master or move the state directory away",
        .path.display(),
        FORMAT_MAJOR,
        FORMAT_MINOR
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its major version.
        major: u32,
        /// Its minor version.
        minor: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What [`StateDir::open`] read back.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The snapshot's changes, then the log's.
    pub(crate) changes: Vec<Change>,
    /// Whether the log's torn or corrupt tail (a call cut short, never answered) was
    /// dropped.
    pub(crate) dropped_tail: bool,
}

/// The open state directory of a running master.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    config: StateConfig,
    /// Held for the master's lifetime: the kernel drops the `flock` when it dies.
    _lock: File,
    /// Batches queued under the core's lock, in the core's order, not yet written.
    queue: Mutex<Vec<Vec<Change>>>,
    /// Batches queued so far (a sequence number, bumped under the queue's lock).
    queued: AtomicU64,
    /// The last batch that freed space (or was queued when space was freed).
    last_free: AtomicU64,
    /// Every batch up to this number is in the log (or in a snapshot).
    written: AtomicU64,
    writer: Mutex<Writer>,
    /// Written since the last fsync.
    dirty: AtomicBool,
}

#[derive(Debug)]
struct Writer {
    log: Option<Arc<File>>,
    len: u64,
    log_id: u64,
    buf: Vec<u8>,
}

impl StateDir {
    /// Opens (creating if needed) and locks the directory and reads its state back.
    pub(crate) fn open(config: &StateConfig) -> Result<(Self, Loaded), StateError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        mooncake_transfer_engine::try_lock_exclusive(&lock, &lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                StateError::Locked(dir.clone())
            } else {
                io_err(&lock_path)(e)
            }
        })?;
        let (log_id, loaded) = load(&dir)?;
        let state = Self {
            dir,
            config: config.clone(),
            _lock: lock,
            queue: Mutex::new(Vec::new()),
            queued: AtomicU64::new(0),
            last_free: AtomicU64::new(0),
            written: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                log: None,
                len: 0,
                log_id,
                buf: Vec::new(),
            }),
            dirty: AtomicBool::new(false),
        };
        Ok((state, loaded))
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// How often the background syncer fsyncs the log (zero: before every answer).
    pub(crate) fn fsync_interval(&self) -> std::time::Duration {
        self.config.fsync_interval
    }

    /// Queues one call's changes; called under the core's lock so the queue keeps the
    /// core's order.
    /// Returns the batch's sequence number.
    pub(crate) fn enqueue(&self, batch: Vec<Change>) -> u64 {
        let mut queue = self.queue.lock();
        queue.push(batch);
        self.queued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Queues `batch`: the sequence number the caller must see written before it answers
    /// (see [`crate::master::must_wait_for`]). Under the core's lock.
    pub(crate) fn record(&self, batch: Vec<Change>, space: crate::SpaceUse) -> Option<u64> {
        let own = (!batch.is_empty()).then(|| self.enqueue(batch));
        crate::master::must_wait_for(own, self.last_queued(), space, &self.last_free, true)
    }

    /// The sequence number of the last batch queued; read under the core's lock, it
    /// covers every change the caller has seen.
    pub(crate) fn last_queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether every batch up to `seq` is on disk (in the log or a snapshot).
    pub(crate) fn is_written(&self, seq: u64) -> bool {
        self.written.load(Ordering::Acquire) >= seq
    }

    /// Writes every queued batch to the log (ours included), with one `write`; fsyncs too
    /// when the interval is zero; compacts a log grown too large. Called after the core's
    /// lock is released and before the call is answered. A failed write leaves no log to
    /// append to (a partial frame would hide every later one): the state is folded into
    /// a new snapshot at once, and by every later call until that succeeds.
    pub(crate) fn flush(&self, core: &Mutex<MasterCore>) {
        let mut w = self.writer.lock();
        let (batches, upto) = {
            let mut queue = self.queue.lock();
            (
                std::mem::take(&mut *queue),
                self.queued.load(Ordering::Acquire),
            )
        };
        if batches.is_empty() && w.log.is_some() {
            return;
        }
        let Some(log) = w.log.clone() else {
            // The last write or compaction failed: the snapshot holds these changes too,
            // so write it again.
            if let Err(e) = self.compact_locked(&mut w, core) {
                tracing::error!(error = %e, "cannot compact the state directory");
            }
            return;
        };
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        for batch in batches {
            encode(&Record::Changes(batch), &mut buf);
        }
        match (&*log).write_all(&buf) {
            Ok(()) => {
                w.len += buf.len() as u64;
                self.written.fetch_max(upto, Ordering::AcqRel);
                if self.config.fsync_interval.is_zero() {
                    if let Err(e) = log.sync_data() {
                        tracing::error!(error = %e, dir = %self.dir.display(), "cannot fsync the state log");
                    }
                } else {
                    self.dirty.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot write the state log; writing a snapshot instead");
                w.log = None;
                if let Err(e) = self.compact_locked(&mut w, core) {
                    tracing::error!(error = %e, "cannot compact the state directory");
                }
                return;
            }
        }
        // Keep a moderate buffer for the next write, not the largest batch ever.
        if buf.capacity() <= 1 << 20 {
            w.buf = buf;
        }
        if w.len > self.config.compact_bytes {
            if let Err(e) = self.compact_locked(&mut w, core) {
                tracing::error!(error = %e, "cannot compact the state directory");
            }
        }
    }

    /// Fsyncs the log if something was written since the last time (the background
    /// syncer's work; the fsync runs without holding the writer lock).
    pub(crate) fn sync(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let log = self.writer.lock().log.clone();
        if let Some(log) = log {
            if let Err(e) = log.sync_data() {
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot fsync the state log");
            }
        }
    }

    /// Folds the state into a new snapshot and starts a new log.
    pub(crate) fn compact(&self, core: &Mutex<MasterCore>) -> Result<(), StateError> {
        let mut w = self.writer.lock();
        self.compact_locked(&mut w, core)
    }

    fn compact_locked(&self, w: &mut Writer, core: &Mutex<MasterCore>) -> Result<(), StateError> {
        let started = Instant::now();
        let (changes, upto) = {
            let core = core.lock();
            // Queued batches are already part of the core's state, so of this snapshot.
            let mut queue = self.queue.lock();
            queue.clear();
            (core.snapshot(), self.queued.load(Ordering::Acquire))
        };
        let next = w.log_id + 1;
        let mut buf = Vec::new();
        encode(
            &Record::Header(Header::new(FileKind::Snapshot, next)),
            &mut buf,
        );
        let count = changes.len();
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let chunk: Vec<Change> = changes.by_ref().take(SNAPSHOT_CHUNK).collect();
            encode(&Record::Changes(chunk), &mut buf);
        }
        // From here on the old log no longer continues the snapshot on disk: appending to
        // it would lose changes, so no log is written to until a compaction succeeds.
        w.log = None;
        write_atomically(&self.dir, SNAPSHOT, &buf)?;
        // Until the new log replaces the old one, the old one's id no longer matches the
        // snapshot's, so a crash here replays nothing twice.
        let mut head = Vec::new();
        encode(&Record::Header(Header::new(FileKind::Log, next)), &mut head);
        write_atomically(&self.dir, LOG, &head)?;
        let path = self.dir.join(LOG);
        let log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        w.log = Some(Arc::new(log));
        w.len = head.len() as u64;
        w.log_id = next;
        self.written.fetch_max(upto, Ordering::AcqRel);
        self.dirty.store(false, Ordering::Release);
        tracing::info!(
            dir = %self.dir.display(),
            records = count,
            bytes = buf.len(),
            seconds = started.elapsed().as_secs_f64(),
            "state snapshot written"
        );
        Ok(())
    }
}

/// Writes `name` in `dir` through a temporary file, fsync and rename, then fsyncs `dir`.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Reads `snapshot` and `log`; returns the current log id and the changes to replay.
fn load(dir: &Path) -> Result<(u64, Loaded), StateError> {
    let mut changes = Vec::new();
    let snapshot = read(&dir.join(SNAPSHOT), FileKind::Snapshot, &mut changes)?;
    let log_path = dir.join(LOG);
    let mut log_changes = Vec::new();
    let log = read(&log_path, FileKind::Log, &mut log_changes)?;
    let mut dropped_tail = false;
    let mut log_id = snapshot.as_ref().map_or(0, |s| s.0);
    if let Some((id, tail)) = log {
        match snapshot {
            Some((want, _)) if want != id => tracing::info!(
                path = %log_path.display(),
                "the log predates the snapshot (a compaction was cut short); not replayed"
            ),
            _ => {
                changes.append(&mut log_changes);
                log_id = log_id.max(id);
                dropped_tail = tail;
            }
        }
    }
    Ok((
        log_id,
        Loaded {
            changes,
            dropped_tail,
        },
    ))
}

/// Reads one file's changes into `out`. `None` if it does not exist; else its log id and
/// whether a torn or corrupt tail was dropped (only a log may have one).
fn read(
    path: &Path,
    kind: FileKind,
    out: &mut Vec<Change>,
) -> Result<Option<(u64, bool)>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |offset: usize, reason: String| StateError::Corrupt {
        path: path.to_owned(),
        offset,
        reason,
    };
    let (bodies, tail) = frames(&bytes);
    if let Some((offset, why)) = tail {
        if kind == FileKind::Snapshot {
            return Err(corrupt(offset, why.to_string()));
        }
        tracing::warn!(
            path = %path.display(),
            offset,
            dropped_bytes = bytes.len() - offset,
            "dropped the log's tail: {why} (a call cut short by a crash, never answered)"
        );
    }
    let mut bodies = bodies.into_iter();
    let Some((_, first)) = bodies.next() else {
        if kind == FileKind::Snapshot {
            return Err(corrupt(0, "no header".into()));
        }
        // A log whose header never made it to disk holds nothing.
        return Ok(Some((0, tail.is_some())));
    };
    let header = match serde_json::from_slice::<Record>(first) {
        Ok(Record::Header(h)) => h,
        Ok(Record::Changes(_)) => {
            return Err(corrupt(0, "the first record is not a header".into()))
        }
        // A header we cannot parse may be a newer major format: say so if it is.
        Err(e) => return Err(newer(path, first).unwrap_or_else(|| corrupt(0, e.to_string()))),
    };
    if header.format_major > FORMAT_MAJOR {
        return Err(StateError::NewerFormat {
            path: path.to_owned(),
            major: header.format_major,
            minor: header.format_minor,
        });
    }
    if header.kind != kind {
        return Err(corrupt(0, format!("a {:?} header", header.kind)));
    }
    for (offset, body) in bodies {
        match serde_json::from_slice::<Record>(body) {
            Ok(Record::Changes(mut c)) => out.append(&mut c),
            Ok(Record::Header(_)) => return Err(corrupt(offset, "a second header".into())),
            // Intact (the checksum matched) but not understood: refuse rather than drop
            // acknowledged changes.
            Err(e) => return Err(corrupt(offset, e.to_string())),
        }
    }
    Ok(Some((header.log_id, tail.is_some())))
}

/// A `NewerFormat` error if `body` is a header of a newer major version.
fn newer(path: &Path, body: &[u8]) -> Option<StateError> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let h = v.get("header")?;
    let major = u32::try_from(h.get("format_major")?.as_u64()?).ok()?;
    let minor = h
        .get("format_minor")
        .and_then(serde_json::Value::as_u64)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0);
    (major > FORMAT_MAJOR).then(|| StateError::NewerFormat {
        path: path.to_owned(),
        major,
        minor,
    })
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
