//! Extra segments of a full client (`python-api-2.md` §11): a file mapped and mounted
//! (`mount_segment`), or fresh memory (`allocate_and_mount_segment`), and their unmounting.
//! The standalone client has none: these calls read only the full client's slot.

use mooncake_store::{Client, ErrorCode, TaskId};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::Store;
use crate::runtime::block;

impl Store {
    /// `mount_segment`: `{'ret': 0, 'segment_ids': [id]}`, or `ret` -1 with nothing mounted.
    pub(super) fn mount_file<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        size: u64,
        offset: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("ret", -1)?;
        out.set_item("segment_ids", Vec::<String>::new())?;
        let Some(client) = self.client.lock().clone() else {
            return Ok(out);
        };
        match self.map_and_mount(py, &client, path, size, offset) {
            Ok(id) => {
                out.set_item("ret", 0)?;
                out.set_item("segment_ids", vec![mooncake_store::uuid_string(id)])?;
            }
            Err(e) => tracing::warn!(path, size, offset, "mount_segment failed: {e}"),
        }
        Ok(out)
    }

    /// `allocate_and_mount_segment`: `size` rounded up to 16 MiB, mounted;
    /// `{'ret': 0, 'segment_ids': [...], 'allocated_size': n}`, or `ret` -1.
    pub(super) fn mount_allocated<'py>(
        &self,
        py: Python<'py>,
        size: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        const SLAB: u64 = 16 << 20;
        let out = PyDict::new(py);
        out.set_item("ret", -1)?;
        out.set_item("segment_ids", Vec::<String>::new())?;
        out.set_item("allocated_size", 0)?;
        let Some(client) = self.client.lock().clone() else {
            return Ok(out);
        };
        let Some(rounded) = size.max(1).checked_next_multiple_of(SLAB) else {
            return Ok(out);
        };
        if let Ok(id) = block(py, client.allocate_and_mount(rounded)) {
            out.set_item("ret", 0)?;
            out.set_item("segment_ids", vec![mooncake_store::uuid_string(id.0)])?;
            out.set_item("allocated_size", rounded)?;
        }
        Ok(out)
    }

    fn map_and_mount(
        &self,
        py: Python<'_>,
        client: &Client,
        path: &str,
        size: u64,
        offset: u64,
    ) -> Result<u128, String> {
        let page = 4096;
        if size == 0 || !offset.is_multiple_of(page) {
            return Err("size must be positive and offset page-aligned".into());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(format!(
                "[{offset}, {offset}+{size}) is not inside the file ({len} bytes)"
            ));
        }
        let n = usize::try_from(size).map_err(|e| e.to_string())?;
        // SAFETY: a shared mapping of a file the caller named for this purpose; it stays
        // mapped (in `self.mapped`) until the segment is unmounted and unregistered.
        let mut map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(n)
                .map_mut(&file)
        }
        .map_err(|e| e.to_string())?;
        let addr = map.as_mut_ptr() as u64;
        // SAFETY: the mapping above, kept alive until after `unregister`.
        let memory = unsafe { mooncake_transfer_engine::ForeignMemory::new(addr, size) };
        block(py, client.engine().register_memory(memory, "cpu:0")).map_err(|e| e.to_string())?;
        match block(py, client.mount_registered(addr, size)) {
            Ok(id) => {
                self.mapped.lock().insert(id.0, map);
                Ok(id.0)
            }
            Err(e) => {
                let _ = block(py, client.engine().unregister(addr));
                Err(e.to_string())
            }
        }
    }

    /// `unmount_segment` / `unmount_and_free_segment`: 0, or the first error (-1 for an id
    /// that does not parse or that this client did not mount).
    pub(super) fn unmount_extras(&self, py: Python<'_>, ids: &[String]) -> i32 {
        let Some(client) = self.client.lock().clone() else {
            return -1;
        };
        let mut first = 0;
        for raw in ids {
            let parsed = raw
                .split_once('-')
                .and_then(|(hi, lo)| Some(TaskId::from_halves(hi.parse().ok()?, lo.parse().ok()?)));
            let code = match parsed {
                None => -1,
                Some(id) => {
                    match block(py, client.unmount_extra(mooncake_store::SegmentId(id.0))) {
                        Ok(()) => {
                            let map = self.mapped.lock().remove(&id.0);
                            if let Some(map) = map {
                                let _ = block(py, client.engine().unregister(map.as_ptr() as u64));
                            }
                            0
                        }
                        Err(ErrorCode::InvalidParams) => -1,
                        Err(e) => e.code(),
                    }
                }
            };
            if first == 0 {
                first = code;
            }
        }
        first
    }
}
