//! The on-disk format of the state directory's `snapshot` and `log`: a sequence of frames,
//! each `u32 LE body length | u32 LE CRC-32C of the body | body`, the body a JSON
//! [`Record`]. The first frame of a file is its [`Header`]; every other frame is a batch of
//! [`Change`]s (in the log, one batch per master call, so a call's changes are kept or
//! lost together).
//!
//! Compatibility: readers ignore fields they do not know, so a later minor version may add
//! fields. A new kind of record or any other incompatible change bumps the major version,
//! and a master refuses files of a newer major version than its own.

use serde::{Deserialize, Serialize};

use crate::core::Change;

/// The format version this master writes.
pub(crate) const FORMAT_MAJOR: u32 = 1;
/// Minor version: additions older readers may ignore.
pub(crate) const FORMAT_MINOR: u32 = 0;
/// Bytes before each body.
pub(crate) const FRAME_HEADER: usize = 8;

/// One frame's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Record {
    /// First frame of every file.
    Header(Header),
    /// Changes, applied in order.
    Changes(Vec<Change>),
}

/// What a file is and which log goes with which snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// Incompatible format changes.
    pub(crate) format_major: u32,
    /// Compatible additions.
    #[serde(default)]
    pub(crate) format_minor: u32,
    /// `snapshot` or `log`.
    pub(crate) kind: FileKind,
    /// A snapshot: the id of the log that continues it; a log: its own id. A log whose id
    /// is not its snapshot's is already folded into the snapshot and is not replayed.
    pub(crate) log_id: u64,
}

/// Which file a header opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileKind {
    /// The full state at one point.
    Snapshot,
    /// Changes after that point.
    Log,
}

impl Header {
    /// A header of the current format.
    pub(crate) fn new(kind: FileKind, log_id: u64) -> Self {
        Self {
            format_major: FORMAT_MAJOR,
            format_minor: FORMAT_MINOR,
            kind,
            log_id,
        }
    }
}

/// Why reading frames stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The bytes end inside a frame (a write cut short).
    Torn,
    /// The body does not match its checksum.
    BadChecksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Torn => "the file ends inside a record (torn write)",
            Self::BadChecksum => "a record does not match its CRC-32C",
        })
    }
}

/// A frame's offset in the file and its body.
pub(crate) type Frame<'a> = (usize, &'a [u8]);

/// Appends one frame holding `record` to `out`.
pub(crate) fn encode<T: Serialize>(record: &T, out: &mut Vec<u8>) {
    frame_with(out, |out| {
        // Serializing plain data into a Vec cannot fail: every map key is a string.
        serde_json::to_writer(&mut *out, record).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode a state record");
        });
    });
}

/// Appends one frame whose body `body` appends to `out`.
pub(crate) fn frame_with(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    body(out);
    let body = &out[start + FRAME_HEADER..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Splits `bytes` into frame bodies. Returns the bodies with their offsets and, if the
/// bytes do not end exactly after a frame, where and why reading stopped.
pub(crate) fn frames(bytes: &[u8]) -> (Vec<Frame<'_>>, Option<(usize, FrameError)>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(head) = bytes.get(pos..pos + FRAME_HEADER) else {
            return (out, Some((pos, FrameError::Torn)));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let start = pos + FRAME_HEADER;
        let Some(body) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            return (out, Some((pos, FrameError::Torn)));
        };
        if crc32c::crc32c(body) != crc {
            return (out, Some((pos, FrameError::BadChecksum)));
        }
        out.push((pos, body));
        pos = start + len;
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        Record::Changes(vec![Change::Erase { key: "k".into() }])
    }

    #[test]
    fn frames_round_trip_and_stop_at_a_torn_or_corrupt_tail() {
        let mut buf = Vec::new();
        encode(&Record::Header(Header::new(FileKind::Log, 7)), &mut buf);
        encode(&sample(), &mut buf);
        let whole = buf.len();
        let (got, tail) = frames(&buf);
        assert_eq!((got.len(), tail), (2, None));
        let second: Record = serde_json::from_slice(got[1].1).unwrap();
        assert_eq!(second, sample());
        // Torn: the last frame cut anywhere.
        for cut in got[1].0 + 1..whole {
            let (got, tail) = frames(&buf[..cut]);
            assert_eq!(got.len(), 1);
            assert_eq!(tail.map(|t| t.1), Some(FrameError::Torn));
        }
        // Corrupt: one body byte flipped.
        buf[whole - 2] ^= 0x20;
        let (got, tail) = frames(&buf);
        assert_eq!(got.len(), 1);
        assert_eq!(
            tail,
            Some((got[0].1.len() + FRAME_HEADER, FrameError::BadChecksum))
        );
    }

    #[test]
    fn unknown_fields_of_a_later_minor_version_are_ignored() {
        let json = r#"{"header":{"format_major":1,"format_minor":3,"kind":"log","log_id":2,"writer":"x"}}"#;
        let r: Record = serde_json::from_str(json).unwrap();
        assert_eq!(
            r,
            Record::Header(Header {
                format_major: 1,
                format_minor: 3,
                kind: FileKind::Log,
                log_id: 2
            })
        );
        let json = r#"{"changes":[{"erase":{"key":"a","why":"evicted"}}]}"#;
        let r: Record = serde_json::from_str(json).unwrap();
        assert_eq!(r, Record::Changes(vec![Change::Erase { key: "a".into() }]));
    }

    proptest! {
        /// Arbitrary bytes never panic the frame reader, and what it returns is in bounds.
        #[test]
        fn frames_of_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (got, tail) = frames(&bytes);
            let mut end = 0;
            for (pos, body) in &got {
                prop_assert_eq!(*pos, end);
                end = pos + FRAME_HEADER + body.len();
            }
            prop_assert_eq!(tail.is_none(), end == bytes.len());
        }
    }
}
