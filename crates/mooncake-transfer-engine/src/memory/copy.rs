//! Bulk copies between registered memory: the data path of the shared-memory transport and
//! of local transfers.
//!
//! A small copy is a plain `memmove`. A large one (at least [`BULK_MIN`] bytes) is cut into
//! [`CHUNK`]-byte chunks that the calling thread and the helper threads of a small process-wide
//! pool take in turn, each written with non-temporal (streaming) stores on x86_64: a bulk
//! copy's destination is not read back soon, so writing around the caches saves reading
//! every destination line first and evicting everything else. On this project's 2-core
//! machines one thread copies 16 MiB at ~6 GB/s with `memcpy`, ~17 GB/s streaming, and two
//! threads streaming reach ~24 GB/s.
//!
//! The caller never depends on a helper: it takes chunks itself until none are left, then
//! waits only for chunks a helper has already started. A helper that is busy or not
//! scheduled simply takes nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};

/// Copies of at least this many bytes stream and are shared with the helper threads.
pub(crate) const BULK_MIN: usize = 512 << 10;

/// The unit of work a thread takes from a bulk copy.
const CHUNK: usize = 128 << 10;

/// At most this many helper threads (besides the caller) work on one copy.
const MAX_HELPERS: usize = 3;

/// Fresh destinations of at least this many bytes ask for transparent huge pages.
pub(crate) const FRESH_HUGE_MIN: usize = 4 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `[dst, dst+len)`, memory about to
/// be written for the first time (a new vector or `bytes` of a large value), with
/// transparent huge pages (`MADV_HUGEPAGE`; honoured where THP is `always` or `madvise`,
/// the common default). First touch then costs one fault and one 2 MiB clear per huge
/// page instead of 512 faults: a fresh 16 MiB buffer fills ~3x faster here. Only ranges of
/// at least [`FRESH_HUGE_MIN`] bytes, and only the pages wholly inside the range (nothing
/// outside it gains memory); any failure just leaves the small pages.
/// [`Tunables::huge_page_reads`](crate::Tunables::huge_page_reads) false (`MC_HUGE_PAGE_READS=0`
/// at the edge) turns it off (each advised range can split the heap's mapping
/// in the kernel, and where THP `defrag` compacts synchronously a fault may wait for it).
pub(crate) fn advise_fresh(dst: *mut u8, len: usize) {
    if len < FRESH_HUGE_MIN || !crate::Tunables::current().huge_page_reads {
        return;
    }
    let start = (dst as usize).next_multiple_of(HUGE_PAGE);
    let end = (dst as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: advice on whole pages inside memory the caller owns and is about to
        // overwrite; MADV_HUGEPAGE changes no contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// Copies `len` bytes from `src` to `dst`; the ranges may overlap (then it is a plain
/// `memmove`).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes until this returns,
/// and no Rust reference may alias `dst`'s range meanwhile.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    let (d, s) = (dst as usize, src as usize);
    let overlap = d < s.wrapping_add(len) && s < d.wrapping_add(len);
    if len < BULK_MIN || overlap {
        // SAFETY: the caller's contract; `copy` allows overlapping ranges.
        unsafe { std::ptr::copy(src, dst, len) };
        return;
    }
    share(Job::new(Work::Copy {
        dst: d,
        src: s,
        len,
    }));
}

/// Fresh memory of at least this many bytes not yet backed is faulted in by several threads
/// before a network read fills it ([`prefault`]).
pub(crate) const PREFAULT_MIN: usize = BULK_MIN;

const PAGE: usize = 4096;

/// Faults in the pages of `ranges` (memory the caller owns and is about to overwrite, such
/// as new `bytes` a network read will fill) on the calling thread and the copy helpers
/// together. A socket read into unbacked memory faults it in one page at a time on the one
/// thread that reads (here ~2 µs per 4 KiB page: 32 fresh MiB cost 16 ms, twice the
/// transfer itself); two threads halve that. Only ranges with many unbacked pages
/// (`mincore`) are touched, and only if they add up to [`PREFAULT_MIN`]: memory the
/// allocator hands back warm costs one `mincore` call per value of 64 KiB or more, and
/// reads of less than [`PREFAULT_MIN`] in all none. Writes
/// one zero byte per page, inside the ranges only.
///
/// # Safety
/// Every range must be valid for writes until this returns, and no Rust reference may
/// read it meanwhile (its bytes are about to be overwritten anyway).
pub(crate) unsafe fn prefault(ranges: &[(*mut u8, usize)]) {
    let large = |len: usize| len >= PREFAULT_MIN / 8;
    // Too little to matter even if all of it were unbacked: no system call at all.
    let eligible: usize = ranges.iter().map(|r| r.1).filter(|&l| large(l)).sum();
    if eligible < PREFAULT_MIN {
        return;
    }
    let mut pieces = Vec::new();
    let mut total = 0usize;
    let mut residency = Vec::new();
    for &(p, len) in ranges {
        if !large(len) || unbacked_pages(p, len, &mut residency) < len / PAGE / 4 {
            continue;
        }
        let mut off = 0;
        while off < len {
            let n = CHUNK.min(len - off);
            pieces.push((p as usize + off, n));
            off += n;
        }
        total += len;
    }
    if total >= PREFAULT_MIN {
        share(Job::new(Work::Touch(pieces)));
    }
}

/// How many pages of `[p, p+len)` are not backed by memory (`mincore`, into `vec`, reused
/// between calls); 0 if unknown.
fn unbacked_pages(p: *mut u8, len: usize, vec: &mut Vec<u8>) -> usize {
    let start = p as usize / PAGE * PAGE;
    let end = (p as usize + len).next_multiple_of(PAGE);
    vec.clear();
    vec.resize((end - start) / PAGE, 0);
    // SAFETY: `mincore` only reads the page tables of `[start, end)`, which the caller's
    // range covers (rounded to whole pages), and writes one byte per page into `vec`.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    vec.iter().filter(|&&b| b & 1 == 0).count()
}

/// Runs `job` on the calling thread and, where helpers run, on them too; returns when every
/// chunk is done.
fn share(job: Job) {
    let job = Arc::new(job);
    let pool = pool();
    let shared = pool.helpers.load(Ordering::Relaxed) > 0;
    if shared {
        let mut slot = pool.job.lock();
        *slot = Some(job.clone());
        pool.posted.fetch_add(1, Ordering::Release);
        drop(slot);
        pool.wake.notify_all();
    }
    job.run();
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < job.chunks {
        // Only chunks a helper is working on right now remain; they end within
        // microseconds unless the helper was preempted, so spin briefly, then give the
        // core away.
        spins += 1;
        if spins < 1 << 12 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if shared {
        let mut slot = pool.job.lock();
        if slot.as_ref().is_some_and(|j| Arc::ptr_eq(j, &job)) {
            *slot = None;
        }
    }
}

/// What a shared job does, chunk by chunk.
enum Work {
    /// A bulk copy, [`CHUNK`] bytes per chunk.
    Copy { dst: usize, src: usize, len: usize },
    /// One zero byte per page of each `(address, length)` piece, one piece per chunk.
    Touch(Vec<(usize, usize)>),
}

/// One bulk copy (or prefault) being shared out by chunks.
struct Job {
    work: Work,
    chunks: usize,
    /// The next chunk to take (may run past `chunks`: nothing left).
    next: AtomicUsize,
    /// Chunks finished, their stores fenced.
    done: AtomicUsize,
}

impl Job {
    fn new(work: Work) -> Self {
        let chunks = match &work {
            Work::Copy { len, .. } => len.div_ceil(CHUNK),
            Work::Touch(pieces) => pieces.len(),
        };
        Self {
            work,
            chunks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    /// Takes and does chunks until none are left.
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.chunks {
                return;
            }
            match &self.work {
                Work::Copy { dst, src, len } => {
                    let off = i * CHUNK;
                    let n = CHUNK.min(len - off);
                    // SAFETY: chunk `i` lies inside the ranges the caller of `copy`
                    // vouched for, which stay valid until every chunk taken is done (the
                    // caller waits for `done`); the ranges do not overlap (checked before
                    // sharing) and chunks are disjoint.
                    unsafe { stream_copy((dst + off) as *mut u8, (src + off) as *const u8, n) };
                }
                Work::Touch(pieces) => {
                    let (at, n) = pieces[i];
                    let mut page = at;
                    while page < at + n {
                        // SAFETY: inside a range the caller of `prefault` vouched for
                        // (valid for writes, not read meanwhile) until every chunk is done.
                        unsafe { std::ptr::write_volatile(page as *mut u8, 0) };
                        page = (page / PAGE + 1) * PAGE;
                    }
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// The helper threads and the copy they may join.
struct Pool {
    job: Mutex<Option<Arc<Job>>>,
    wake: Condvar,
    /// Helper threads running.
    helpers: AtomicUsize,
    /// Copies posted so far (changed under the `job` lock).
    posted: AtomicU64,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            job: Mutex::new(None),
            wake: Condvar::new(),
            helpers: AtomicUsize::new(0),
            posted: AtomicU64::new(0),
        }));
        let started = (0..cores.saturating_sub(1).min(MAX_HELPERS))
            .filter(|i| {
                std::thread::Builder::new()
                    .name(format!("mooncake-copy-{i}"))
                    .spawn(move || helper(pool))
                    .is_ok()
            })
            .count();
        // With no helper running, callers copy alone and never post their jobs.
        pool.helpers.store(started, Ordering::Relaxed);
        pool
    })
}

/// A helper: sleeps until a copy is posted that it has not seen, and takes chunks of it.
/// (Watching for the next copy instead of sleeping made store calls slower: on two cores
/// the watcher competes with the caller's own polling and with the master.)
fn helper(pool: &'static Pool) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut slot = pool.job.lock();
            while pool.posted.load(Ordering::Acquire) == seen {
                pool.wake.wait(&mut slot);
            }
            seen = pool.posted.load(Ordering::Acquire);
            slot.clone()
        };
        if let Some(job) = job {
            job.run();
        }
    }
}

/// Copies `len` bytes between non-overlapping ranges with streaming stores, fenced before
/// returning (so a release store after it publishes the bytes).
///
/// # Safety
/// As for [`copy`], and the ranges must not overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    // Plain copy up to the first 16-byte-aligned destination address.
    let head = dst.align_offset(16).min(len);
    // SAFETY: inside the caller's ranges.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
    let mut i = head;
    while i + 64 <= len {
        // SAFETY: `[i, i+64)` lies inside both ranges; `dst + i` is 16-byte aligned, as the
        // streaming store requires; unaligned loads have no such requirement. SSE2 is part
        // of the x86_64 baseline.
        unsafe {
            let s = src.add(i) as *const __m128i;
            let d = dst.add(i) as *mut __m128i;
            let a = _mm_loadu_si128(s);
            let b = _mm_loadu_si128(s.add(1));
            let c = _mm_loadu_si128(s.add(2));
            let e = _mm_loadu_si128(s.add(3));
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
        i += 64;
    }
    // SAFETY: the tail lies inside both ranges; the fence orders the streaming stores
    // before anything this thread stores next.
    unsafe {
        std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i);
        _mm_sfence();
    }
}

/// Other architectures: a plain copy.
///
/// # Safety
/// As for [`copy`], and the ranges must not overlap.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
            .collect()
    }

    fn check(len: usize, src_off: usize, dst_off: usize) {
        let src = pattern(len + src_off, 7);
        let mut dst = vec![0xAAu8; len + dst_off + 64];
        // SAFETY: both ranges lie inside the vectors, which outlive the call.
        unsafe {
            copy(
                dst.as_mut_ptr().add(dst_off),
                src.as_ptr().add(src_off),
                len,
            )
        };
        assert!(
            dst[..dst_off].iter().all(|b| *b == 0xAA),
            "bytes before the target"
        );
        assert_eq!(&dst[dst_off..dst_off + len], &src[src_off..], "len {len}");
        assert!(
            dst[dst_off + len..].iter().all(|b| *b == 0xAA),
            "bytes after the target (len {len}, offsets {src_off}/{dst_off})"
        );
    }

    #[test]
    fn small_and_bulk_copies_at_every_alignment() {
        for len in [0, 1, 15, 16, 17, 63, 64, 65, 4096, BULK_MIN - 1] {
            check(len, 3, 5);
        }
        for len in [
            BULK_MIN,
            BULK_MIN + 1,
            (1 << 20) + 13,
            3 * CHUNK + 77,
            16 << 20,
        ] {
            for (s, d) in [(0, 0), (1, 0), (0, 7), (13, 9), (16, 32)] {
                check(len, s, d);
            }
        }
    }

    #[test]
    fn region_reads_into_fresh_and_existing_memory() {
        let len = (1 << 20) + 5;
        let region = crate::memory::Region::anonymous(2 << 20).expect("map");
        let data = pattern(len, 11);
        region.write(region.addr() + 3, &data);
        assert_eq!(region.to_vec(region.addr() + 3, len), data);
        let mut out = vec![0u8; len];
        region.read_uninit(region.addr() + 3, crate::memory::as_uninit(&mut out));
        assert_eq!(out, data);
    }

    #[test]
    fn prefault_backs_fresh_memory_and_writes_nothing_outside_its_ranges() {
        let len = 2 << 20;
        // SAFETY: a fresh private anonymous mapping, unmapped at the end of the test.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + 2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let p = base.cast::<u8>();
        // Guard pages on both sides, written first so that they are backed; the range
        // starts and ends mid-page.
        // SAFETY: all inside the mapping.
        unsafe {
            std::ptr::write_bytes(p, 0xAB, PAGE);
            std::ptr::write_bytes(p.add(len + PAGE), 0xCD, PAGE);
        }
        // SAFETY: inside the mapping.
        let (start, n) = (unsafe { p.add(PAGE - 100) }, len + 200);
        assert!(
            unbacked_pages(start, n, &mut Vec::new()) >= len / PAGE - 1,
            "fresh memory is unbacked"
        );
        // SAFETY: `[start, start+n)` lies inside the mapping and nothing reads it.
        unsafe { prefault(&[(start, n)]) };
        assert_eq!(
            unbacked_pages(start, n, &mut Vec::new()),
            0,
            "every page of the range is backed"
        );
        // SAFETY: the guard bytes just outside the range lie inside the mapping.
        let (before, after) = unsafe { (*start.sub(1), *start.add(n)) };
        assert_eq!(
            (before, after),
            (0xAB, 0xCD),
            "nothing outside the range is written"
        );
        // Too small a range is left to the socket read.
        // SAFETY: inside the mapping.
        let small = unsafe { p.add(len + PAGE) };
        // SAFETY: unmapping and remapping a page of our own mapping.
        unsafe {
            libc::madvise(small.cast(), PAGE, libc::MADV_DONTNEED);
            prefault(&[(small, PAGE)]);
            assert_eq!(
                unbacked_pages(small, PAGE, &mut Vec::new()),
                1,
                "a small range is not touched"
            );
            libc::munmap(base, len + 2 * PAGE);
        }
    }

    /// `VmFlags` of the mapping (in `/proc/self/smaps`) that contains `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_owned();
                }
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    #[test]
    fn large_fresh_reads_ask_for_huge_pages_inside_their_range_only() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            return; // a kernel without THP refuses the advice; nothing to check
        }
        let region = crate::memory::Region::anonymous(16 << 20).expect("map");
        let huge = |addr: u64| vm_flags(addr as usize).split(' ').any(|f| f == "hg");
        let base = region.addr();
        let first = (base + 100).next_multiple_of(HUGE_PAGE as u64);
        // Too small: no advice.
        let small = FRESH_HUGE_MIN - 1;
        advise_fresh((base + 100) as *mut u8, small);
        assert!(!huge(first), "a range under FRESH_HUGE_MIN is left alone");
        // Large: the whole huge pages inside the range, nothing before it.
        advise_fresh((base + 100) as *mut u8, 6 << 20);
        assert!(huge(first), "the first whole huge page of the range");
        assert!(!huge(base + 99), "memory before the range keeps its pages");
        assert!(
            !huge(base + (15 << 20)),
            "memory after the range keeps its pages"
        );
        // The read path advises its fresh destination.
        let data = pattern(8 << 20, 3);
        region.write(base, &data);
        let out = region.to_vec(base, 8 << 20);
        assert_eq!(out, data);
        let inside = (out.as_ptr() as u64).next_multiple_of(HUGE_PAGE as u64);
        assert!(huge(inside), "a new vector of a large value");
    }

    #[test]
    fn overlapping_bulk_copy_is_a_memmove() {
        let len = BULK_MIN * 2;
        let mut buf = pattern(len + 4096, 3);
        let want = buf[..len].to_vec();
        let p = buf.as_mut_ptr();
        // SAFETY: both ranges lie inside `buf`.
        unsafe { copy(p.add(4096), p, len) };
        assert_eq!(&buf[4096..], &want[..]);
    }

    #[test]
    fn concurrent_bulk_copies_do_not_mix() {
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..20usize {
                        let len = (1 << 20) + round * 4097;
                        let src = pattern(len, t.wrapping_mul(17).wrapping_add(round as u8));
                        let mut dst = vec![0u8; len];
                        // SAFETY: both ranges lie inside the vectors.
                        unsafe { copy(dst.as_mut_ptr(), src.as_ptr(), len) };
                        assert!(dst == src, "thread {t} round {round}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("copy thread");
        }
    }
}
/// Times bulk copies with a pause between them, as a store client makes them:
/// `cargo test --release -p mooncake-transfer-engine --lib time_bulk_copy -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    #[test]
    #[ignore = "prints timings; run by hand"]
    fn time_bulk_copy() {
        for size in [1usize << 20, 16 << 20] {
            let n = (256 << 20) / size;
            let src: Vec<Vec<u8>> = (0..n).map(|_| vec![1u8; size]).collect();
            let mut dst: Vec<Vec<u8>> = (0..n).map(|_| vec![2u8; size]).collect();
            for round in 0..3 {
                let mut total = std::time::Duration::ZERO;
                for i in 0..n {
                    let t = std::time::Instant::now();
                    // SAFETY: both vectors hold `size` bytes and outlive the call.
                    unsafe { super::copy(dst[i].as_mut_ptr(), src[i].as_ptr(), size) };
                    total += t.elapsed();
                    std::thread::sleep(std::time::Duration::from_micros(30));
                }
                let per = total.as_secs_f64() / n as f64;
                eprintln!(
                    "size {size} round {round}: {:.1} us/copy, {:.1} GB/s",
                    per * 1e6,
                    size as f64 / per / 1e9
                );
            }
        }
    }
}
