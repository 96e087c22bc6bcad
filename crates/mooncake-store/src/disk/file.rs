//! The disk tier's files: one record per file under `<dir>/objects`, written whole to
//! `<dir>/tmp` and renamed into place (so a record is either complete or absent, even if
//! the process is killed mid-write), read and written with direct I/O through aligned
//! buffers where the filesystem allows it.
//!
//! `O_DIRECT` is probed at start: a filesystem that refuses it (tmpfs, some overlays)
//! gets buffered I/O instead, with a warning; records are the same either way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mooncake_transfer_engine::LocalBuffer;
use parking_lot::Mutex;

use super::record::{align_up, file_name, RecordHeader, BLOCK};
use super::task::DiskRecord;
use super::DiskError;

/// A buffer whose start is aligned to [`BLOCK`] (direct I/O needs it), made safely by
/// over-allocating a vector and starting at the first aligned byte.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn with_capacity(len: usize) -> Self {
        let raw = vec![0u8; len + BLOCK as usize];
        let start = raw.as_ptr().align_offset(BLOCK as usize);
        Self { raw, start, len }
    }

    fn capacity(&self) -> usize {
        self.raw.len() - BLOCK as usize
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Aligned buffers kept for reuse: a fresh 1 MiB buffer costs page faults on every use.
#[derive(Debug, Default)]
struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
}

/// Buffers kept at most.
const POOL_MAX: usize = 16;

impl BufferPool {
    fn take(&self, len: usize) -> AlignedBuf {
        let mut free = self.free.lock();
        if let Some(i) = free.iter().position(|b| b.capacity() >= len) {
            let mut b = free.swap_remove(i);
            b.len = len;
            return b;
        }
        drop(free);
        AlignedBuf::with_capacity(len)
    }

    fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock();
        if free.len() < POOL_MAX {
            free.push(buf);
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// No such record file.
    #[error("record missing")]
    Missing,
    /// The file is short, its header is not this record's, or the value fails its CRC.
    #[error("record corrupt: {0}")]
    Corrupt(String),
    /// Any other I/O error.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// A record found by a scan that cannot be served (deleted and reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The file.
    pub path: PathBuf,
    /// Why it was dropped.
    pub reason: String,
}

/// Where one load spent its time (the store service's per-stage metrics).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LoadTimes {
    /// Opening the file and reading it.
    pub(crate) io: Duration,
    /// Checking the header and the value's CRC-32C.
    pub(crate) verify: Duration,
    /// Copying the value from a bounce buffer into the holder's memory (zero in place).
    pub(crate) copy: Duration,
    /// Whether the value was read straight into the holder's memory.
    pub(crate) in_place: bool,
}

/// The files of one tier, locked against a second process.
#[derive(Debug)]
pub(crate) struct Files {
    objects: PathBuf,
    tmp: PathBuf,
    direct: bool,
    /// Sync each record's data and the directory entry of its rename.
    fsync: bool,
    buffers: BufferPool,
    /// Held open with an exclusive `flock` while the tier is in use.
    _lock: File,
}

impl Files {
    /// Creates the directories, takes the lock and probes direct I/O.
    pub(crate) fn open(dir: &Path, fsync: bool) -> Result<Self, DiskError> {
        let io_err = |source: io::Error| DiskError::NotWritable {
            path: dir.to_owned(),
            source,
        };
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&objects).map_err(io_err)?;
        std::fs::create_dir_all(&tmp).map_err(io_err)?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err)?;
        mooncake_transfer_engine::try_lock_exclusive(&lock, &lock_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                DiskError::InUse {
                    path: dir.to_owned(),
                }
            } else {
                io_err(e)
            }
        })?;
        // Unfinished writes of a previous run.
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let direct = probe_direct(&tmp).map_err(io_err)?;
        if !direct {
            tracing::warn!(
                path = %dir.display(),
                "the filesystem refuses O_DIRECT; the disk tier uses buffered I/O (records are the same)"
            );
        }
        Ok(Self {
            objects,
            tmp,
            direct,
            fsync,
            buffers: BufferPool::default(),
            _lock: lock,
        })
    }

    /// Whether reads and writes bypass the page cache.
    pub(crate) fn direct(&self) -> bool {
        self.direct
    }

    fn open_opts(&self, opts: &mut OpenOptions) {
        if self.direct {
            opts.custom_flags(libc::O_DIRECT);
        }
    }

    /// Every complete record under `objects/` (header checked, length checked); files that
    /// are not are deleted and returned as bad.
    pub(crate) fn scan(&self) -> (Vec<DiskRecord>, Vec<BadRecord>) {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let Ok(rd) = std::fs::read_dir(&self.objects) else {
            return (good, bad);
        };
        for e in rd.flatten() {
            let path = e.path();
            match self.check_file(&path) {
                Ok(r) => good.push(r),
                Err(reason) => {
                    let _ = std::fs::remove_file(&path);
                    bad.push(BadRecord { path, reason });
                }
            }
        }
        (good, bad)
    }

    fn check_file(&self, path: &Path) -> Result<DiskRecord, String> {
        let f = File::open(path).map_err(|e| e.to_string())?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        let mut head = vec![0u8; 2 * BLOCK as usize];
        let n = read_full(&f, &mut head, 0).map_err(|e| e.to_string())?;
        let (h, hlen) = RecordHeader::decode(&head[..n]).map_err(|e| e.to_string())?;
        if len < hlen + h.value_len {
            return Err(format!(
                "truncated: {len} bytes, header says {}",
                hlen + h.value_len
            ));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name != file_name(&h.key, h.version) {
            return Err("file name does not match its header".into());
        }
        Ok(DiskRecord {
            key: h.key,
            version: h.version,
            size: h.value_len,
            checksum: h.value_crc,
        })
    }

    /// Writes a record whose value `fill` copies into the slice it is given; returns the
    /// value's CRC-32C. The record appears under its final name only once complete.
    pub(crate) fn write(
        &self,
        key: &str,
        version: u64,
        size: u64,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<u32, io::Error> {
        let probe = RecordHeader {
            key: key.to_owned(),
            version,
            value_len: size,
            value_crc: 0,
        };
        let hlen = super::record::header_len(key.len()) as usize;
        let total = hlen + align_up(size) as usize;
        let mut buf = self.buffers.take(total);
        let result = (|| {
            let b = buf.as_mut_slice();
            if !fill(&mut b[hlen..hlen + size as usize]) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the source range is not in this holder's segment",
                ));
            }
            b[hlen + size as usize..].fill(0);
            let crc = crc32c::crc32c(&b[hlen..hlen + size as usize]);
            let header = RecordHeader {
                value_crc: crc,
                ..probe
            }
            .encode();
            b[..hlen].copy_from_slice(&header);
            let name = file_name(key, version);
            let tmp = self.tmp.join(&name);
            let mut opts = OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            self.open_opts(&mut opts);
            let f = opts.open(&tmp)?;
            let written = f.write_all_at(buf.as_slice(), 0).and_then(|()| {
                if self.fsync {
                    f.sync_data()?;
                }
                Ok(())
            });
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            drop(f);
            std::fs::rename(&tmp, self.objects.join(&name))?;
            if self.fsync {
                // The rename is durable once the directory is.
                File::open(&self.objects)?.sync_all()?;
            }
            Ok(crc)
        })();
        self.buffers.give(buf);
        result
    }

    fn open_record(&self, key: &str, version: u64) -> Result<File, ReadError> {
        let path = self.objects.join(file_name(key, version));
        let mut opts = OpenOptions::new();
        opts.read(true);
        self.open_opts(&mut opts);
        match opts.open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ReadError::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the record of `key`/`version` (`size` value bytes) into
    /// `[offset, offset+size)` of `memory` and checks it completely (header, length,
    /// CRC-32C of the bytes where they landed). The value goes straight from the file into
    /// `memory` (one vectored read: header into a small buffer, the value's whole blocks in
    /// place, its last partial block into a small buffer) unless direct I/O is on and the
    /// destination is not block-aligned: then through a bounce buffer and one copy. On an
    /// error the range holds unspecified bytes (it is not served).
    pub(crate) fn read_into(
        &self,
        key: &str,
        version: u64,
        size: u64,
        memory: &LocalBuffer,
        offset: u64,
    ) -> Result<LoadTimes, ReadError> {
        let started = Instant::now();
        let aligned = (memory.addr() + offset).is_multiple_of(BLOCK);
        if self.direct && !aligned {
            let ((), times) = self.read(key, version, size, |value| {
                memory.write_at(offset, value);
            })?;
            return Ok(times);
        }
        let f = self.open_record(key, version)?;
        let hlen = super::record::header_len(key.len()) as usize;
        let body = size & !(BLOCK - 1);
        let rest = (size - body) as usize;
        let mut head = AlignedBuf::with_capacity(hlen);
        let mut tail = AlignedBuf::with_capacity((align_up(size) - body) as usize);
        let n = memory.read_file_into(
            &f,
            0,
            head.as_mut_slice(),
            offset,
            body as usize,
            tail.as_mut_slice(),
        )?;
        let io = started.elapsed();
        whole(n, hlen + size as usize)?;
        let t = Instant::now();
        let value_crc = check_header(head.as_slice(), key, version, size)?;
        let crc = memory.crc32c_append_at(0, offset, body as usize);
        check_crc(
            crc32c::crc32c_append(crc, &tail.as_slice()[..rest]),
            value_crc,
        )?;
        let verify = t.elapsed();
        let t = Instant::now();
        if rest > 0 {
            memory.write_at(offset + body, &tail.as_slice()[..rest]);
        }
        Ok(LoadTimes {
            io,
            verify,
            copy: t.elapsed(),
            in_place: true,
        })
    }

    /// Reads the record of `key`/`version` (`size` value bytes) through a bounce buffer,
    /// checks it completely (header, length, CRC-32C) and hands the value to `deliver`;
    /// its result and where the time went.
    pub(crate) fn read<R>(
        &self,
        key: &str,
        version: u64,
        size: u64,
        deliver: impl FnOnce(&[u8]) -> R,
    ) -> Result<(R, LoadTimes), ReadError> {
        let started = Instant::now();
        let f = self.open_record(key, version)?;
        let hlen = super::record::header_len(key.len()) as usize;
        let total = hlen + align_up(size) as usize;
        let mut buf = self.buffers.take(total);
        let result = (|| {
            let n = read_full(&f, buf.as_mut_slice(), 0)?;
            let io = started.elapsed();
            whole(n, hlen + size as usize)?;
            let t = Instant::now();
            let b = buf.as_slice();
            let value_crc = check_header(&b[..hlen], key, version, size)?;
            let value = &b[hlen..hlen + size as usize];
            check_crc(crc32c::crc32c(value), value_crc)?;
            let verify = t.elapsed();
            let t = Instant::now();
            let r = deliver(value);
            let times = LoadTimes {
                io,
                verify,
                copy: t.elapsed(),
                in_place: false,
            };
            Ok((r, times))
        })();
        self.buffers.give(buf);
        result
    }

    /// Deletes the record of `key`/`version` (absent is fine).
    pub(crate) fn delete(&self, key: &str, version: u64) {
        let _ = std::fs::remove_file(self.objects.join(file_name(key, version)));
    }
}

/// Checks that a record's header names `key`/`version` with `size` value bytes; the
/// value's CRC-32C it records.
fn check_header(head: &[u8], key: &str, version: u64, size: u64) -> Result<u32, ReadError> {
    let (h, _) = RecordHeader::decode(head).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    if h.key != key || h.version != version || h.value_len != size {
        return Err(ReadError::Corrupt("header names another object".into()));
    }
    Ok(h.value_crc)
}

fn check_crc(crc: u32, recorded: u32) -> Result<(), ReadError> {
    if crc != recorded {
        return Err(ReadError::Corrupt(format!(
            "value crc {crc:#010x}, header says {recorded:#010x}"
        )));
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Whether files in `dir` can be opened and written with `O_DIRECT`; an error when `dir`
/// cannot be written at all.
fn probe_direct(dir: &Path) -> io::Result<bool> {
    let path = dir.join(".probe");
    let direct = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .and_then(|f| {
            let b = AlignedBuf::with_capacity(BLOCK as usize);
            f.write_all_at(b.as_slice(), 0)
        });
    let ok = match direct {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            std::fs::write(&path, b"probe")?;
            false
        }
        Err(e) => return Err(e),
    };
    let _ = std::fs::remove_file(&path);
    Ok(ok)
}

/// A record read that returned `n` bytes where the header and value need `want`.
fn whole(n: usize, want: usize) -> Result<(), ReadError> {
    if n < want {
        return Err(ReadError::Corrupt(format!("{n} bytes, want {want}")));
    }
    Ok(())
}
