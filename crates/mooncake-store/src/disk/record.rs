//! The self-describing record of one object on disk (pure: no I/O).
//!
//! A record is one file: a header block, then the value, padded to the block size so that
//! direct I/O can read and write it whole. The header says everything needed to rebuild
//! the index by scanning (key, object version, length, CRC-32C of the value) and carries
//! its own CRC-32C, so a torn or foreign file is recognised and skipped.
//!
//! Header (little endian), padded with zeros to [`header_len`]:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `MCDISK01` (the format version is its last two digits) |
//! | 4 | header length (a multiple of [`BLOCK`]) |
//! | 4 | key length |
//! | 8 | object version |
//! | 8 | value length |
//! | 4 | CRC-32C of the value |
//! | 4 | CRC-32C of the header's first `40 + key length` bytes, this field taken as 0 |
//! | n | key (UTF-8) |

/// The alignment of direct I/O: offsets and lengths are multiples of it.
pub const BLOCK: u64 = 4096;

/// The first bytes of every record.
pub const MAGIC: [u8; 8] = *b"MCDISK01";

/// Bytes of the fixed part of the header, before the key.
const FIXED: usize = 40;

/// The parsed header of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// The object key.
    pub key: String,
    /// The object version.
    pub version: u64,
    /// Value bytes.
    pub value_len: u64,
    /// CRC-32C of the value.
    pub value_crc: u32,
}

/// Why a header is not a valid record header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header says it has.
    #[error("record header truncated")]
    Truncated,
    /// Not a record of this format.
    #[error("not a disk record (bad magic)")]
    BadMagic,
    /// The header's own checksum does not match.
    #[error("record header fails its checksum")]
    BadChecksum,
    /// Lengths that cannot be right.
    #[error("record header is malformed")]
    Malformed,
}

/// `n` rounded up to a multiple of [`BLOCK`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Header bytes of a record for a key of `key_len` bytes.
pub fn header_len(key_len: usize) -> u64 {
    align_up((FIXED + key_len) as u64)
}

/// Bytes a record takes on disk (header, value, padding).
pub fn footprint(key_len: usize, value_len: u64) -> u64 {
    header_len(key_len) + align_up(value_len)
}

impl RecordHeader {
    /// The header block: exactly [`header_len`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let key = self.key.as_bytes();
        let len = header_len(key.len()) as usize;
        let mut out = vec![0u8; len];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        out[12..16].copy_from_slice(&(key.len() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.version.to_le_bytes());
        out[24..32].copy_from_slice(&self.value_len.to_le_bytes());
        out[32..36].copy_from_slice(&self.value_crc.to_le_bytes());
        out[FIXED..FIXED + key.len()].copy_from_slice(key);
        let crc = crc32c::crc32c(&out[..FIXED + key.len()]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses the start of a record; `buf` may be longer than the header. Never panics.
    pub fn decode(buf: &[u8]) -> Result<(Self, u64), RecordError> {
        if buf.len() < FIXED {
            return Err(RecordError::Truncated);
        }
        if buf[0..8] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let hlen = u64::from(u32_at(8));
        let key_len = u32_at(12) as usize;
        if key_len == 0 || key_len > crate::MAX_KEY_LEN || hlen != header_len(key_len) {
            return Err(RecordError::Malformed);
        }
        if buf.len() < FIXED + key_len {
            return Err(RecordError::Truncated);
        }
        let mut check = buf[..FIXED + key_len].to_vec();
        check[36..40].fill(0);
        if crc32c::crc32c(&check) != u32_at(36) {
            return Err(RecordError::BadChecksum);
        }
        let key = std::str::from_utf8(&buf[FIXED..FIXED + key_len])
            .map_err(|_| RecordError::Malformed)?
            .to_owned();
        Ok((
            Self {
                key,
                version: u64_at(16),
                value_len: u64_at(24),
                value_crc: u32_at(32),
            },
            hlen,
        ))
    }
}

/// The file name of a record: a hash of the key and the version, so two versions of one
/// key never share a file (the key itself is in the header; a hash collision between keys
/// is told apart there).
pub fn file_name(key: &str, version: u64) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}-{version:016x}.rec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(key: &str) -> RecordHeader {
        RecordHeader {
            key: key.into(),
            version: 42,
            value_len: 1 << 20,
            value_crc: 0xdead_beef,
        }
    }

    #[test]
    fn a_header_round_trips_and_fills_whole_blocks() {
        let h = header("prefix/0001");
        let bytes = h.encode();
        assert_eq!(bytes.len() as u64, BLOCK);
        assert_eq!(RecordHeader::decode(&bytes), Ok((h, BLOCK)));
        let long = header(&"k".repeat(crate::MAX_KEY_LEN));
        assert_eq!(long.encode().len() as u64, 2 * BLOCK);
        assert_eq!(footprint(11, (1 << 20) + 1), BLOCK + (1 << 20) + BLOCK);
    }

    #[test]
    fn damaged_headers_are_refused() {
        let mut bytes = header("k").encode();
        bytes[20] ^= 1; // the version
        assert_eq!(RecordHeader::decode(&bytes), Err(RecordError::BadChecksum));
        let mut bytes = header("k").encode();
        bytes[0] = b'X';
        assert_eq!(RecordHeader::decode(&bytes), Err(RecordError::BadMagic));
        assert_eq!(
            RecordHeader::decode(&header("key").encode()[..41]),
            Err(RecordError::Truncated)
        );
        assert_eq!(RecordHeader::decode(&[]), Err(RecordError::Truncated));
    }

    #[test]
    fn names_differ_by_version_and_key() {
        assert_ne!(file_name("a", 1), file_name("a", 2));
        assert_ne!(file_name("a", 1), file_name("b", 1));
        assert_eq!(file_name("a", 1), file_name("a", 1));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RecordHeader::decode(&bytes);
        }

        #[test]
        fn any_header_round_trips(key in "[a-z0-9/_]{1,300}", version: u64, len: u64, crc: u32) {
            let h = RecordHeader { key, version, value_len: len, value_crc: crc };
            let (back, hlen) = RecordHeader::decode(&h.encode()).unwrap();
            prop_assert_eq!(back, h.clone());
            prop_assert_eq!(hlen, header_len(h.key.len()));
        }
    }
}
