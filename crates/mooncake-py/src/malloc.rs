//! Keeps memory freed by large values in the process instead of handing it back to the
//! kernel after every call, set once when a store client is set up (`setup`,
//! `setup_dummy`).
//!
//! Every `get` or `get_batch` returns new `bytes`, which CPython allocates with `malloc`.
//! glibc gives freed memory at the top of its heap back to the kernel once more than its
//! trim threshold is free (by default about twice the largest value freed so far), so a
//! `get_batch` of 32 values of 1 MiB frees 32 MiB that the next call must fault in again,
//! page by page: measured here (loopback TCP), 8,160 page faults and 16-22 ms per call
//! against 5-7 ms with the memory kept, 3x the throughput. With this, allocations of up to
//! 32 MiB come from the heap and up to `MC_MALLOC_RETAIN` bytes of free heap (default
//! 1 GiB, `mooncake_cli::env::malloc_retain`) are kept for the next call: never more
//! memory than the process's own peak. `0`, or glibc's own `MALLOC_TRIM_THRESHOLD_` or
//! `MALLOC_MMAP_THRESHOLD_`, leaves the allocator alone; so does a C library other than
//! glibc.

/// Applies `MC_MALLOC_RETAIN`, once per process.
pub(crate) fn retain_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match mooncake_cli::env::malloc_retain() {
        Ok(Some(bytes)) => {
            let ok = mooncake_transfer_engine::keep_freed_heap(bytes);
            tracing::debug!(bytes, ok, "malloc keeps freed memory for the next values");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; freed memory is handed back to the kernel as usual"),
    });
}
