//! Durable segments: a contributed segment kept in a named shared-memory file, with a
//! small JSON file beside it (`<path>.mooncake.json`) recording which segment it is, so a
//! restarted store service re-attaches the same memory and remounts the same segment id.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::SegmentId;

/// What the side file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// The segment id the master knows (hex).
    pub(crate) segment_id: String,
    /// The transfer-engine name it was last served under (`host:port`).
    pub(crate) name: String,
    /// Bytes.
    pub(crate) size: u64,
    /// The master it belongs to.
    pub(crate) master: String,
}

impl Identity {
    pub(crate) fn id(&self) -> Option<SegmentId> {
        u128::from_str_radix(&self.segment_id, 16)
            .ok()
            .map(SegmentId)
    }
}

/// The side file of a segment file.
pub(crate) fn side_file(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".mooncake.json");
    PathBuf::from(s)
}

/// The identity recorded for an existing segment file, after checking it belongs to this
/// cluster and has this size; `None` when the segment file does not exist yet. Any
/// mismatch is an error naming the file, and nothing is changed.
pub(crate) fn existing(path: &Path, size: u64, master: &str) -> Result<Option<Identity>, String> {
    if !path.exists() {
        return Ok(None);
    }
    let side = side_file(path);
    let text = std::fs::read_to_string(&side).map_err(|e| {
        format!(
            "{} exists but {} cannot be read ({e}): it is not a Mooncake segment; nothing was changed",
            path.display(),
            side.display()
        )
    })?;
    let id: Identity = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a segment record ({e}); nothing was changed",
            side.display()
        )
    })?;
    if id.id().is_none() {
        return Err(format!(
            "{} has a bad segment_id; nothing was changed",
            side.display()
        ));
    }
    if id.size != size {
        return Err(format!(
            "{} holds a segment of {} bytes, not {size}; nothing was changed (delete it to start afresh)",
            path.display(),
            id.size
        ));
    }
    if id.master != master {
        return Err(format!(
            "{} belongs to the cluster of master {}, not {master}; nothing was changed",
            path.display(),
            id.master
        ));
    }
    Ok(Some(id))
}

/// Records `id` beside `path` (written to a temporary file, then renamed).
pub(crate) fn record(path: &Path, id: &Identity) -> std::io::Result<()> {
    let side = side_file(path);
    let tmp = side.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(id).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_checked_before_anything_is_reused() {
        let dir = std::env::temp_dir().join(format!("mc-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seg");
        assert_eq!(existing(&path, 10, "m:1"), Ok(None));
        std::fs::write(&path, b"0123456789").unwrap();
        let err = existing(&path, 10, "m:1").unwrap_err();
        assert!(err.contains("not a Mooncake segment"), "{err}");
        let id = Identity {
            segment_id: format!("{:x}", 0xabcdu128),
            name: "127.0.0.1:12345".into(),
            size: 10,
            master: "m:1".into(),
        };
        record(&path, &id).unwrap();
        assert_eq!(existing(&path, 10, "m:1"), Ok(Some(id.clone())));
        assert_eq!(id.id(), Some(SegmentId(0xabcd)));
        assert!(existing(&path, 11, "m:1").unwrap_err().contains("not 11"));
        assert!(existing(&path, 10, "m:2")
            .unwrap_err()
            .contains("cluster of master m:1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
