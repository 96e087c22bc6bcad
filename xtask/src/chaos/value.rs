//! Values that carry their own checksum: whoever reads one can tell, without any other
//! state, whether it holds exactly what some writer wrote under that key.
//!
//! Layout: `"MCV1" | key_len u16 | key | version u64 | payload_len u32 | payload | crc32c`
//! (little endian), the CRC-32C covering every byte before it. The payload is a function
//! of `(key, version)`, so a reader also tells a stale version from a fresh one.

const MAGIC: &[u8; 4] = b"MCV1";

/// The payload bytes of `(key, version)`: cheap to make, different for every pair.
fn payload(key: &str, version: u64, len: usize) -> Vec<u8> {
    let mut x = crc32c::crc32c(key.as_bytes()) as u64 ^ version.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The value written as `version` of `key`, with `len` payload bytes.
pub(crate) fn encode(key: &str, version: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + key.len() + 22);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&(key.len() as u16).to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&payload(key, version, len));
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// The version `bytes` holds for `key`, or why it is not a value written under `key`.
pub(crate) fn verify(key: &str, bytes: &[u8]) -> Result<u64, String> {
    let n = bytes.len();
    if n < 22 + key.len() {
        return Err(format!("{n} bytes is too short for a value of {key:?}"));
    }
    let (body, crc) = bytes.split_at(n - 4);
    let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    if &body[..4] != MAGIC {
        return Err("bad magic".into());
    }
    let klen = u16::from_le_bytes([body[4], body[5]]) as usize;
    if body.get(6..6 + klen) != Some(key.as_bytes()) {
        return Err("the value belongs to another key".into());
    }
    let rest = &body[6 + klen..];
    let version = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default()) as usize;
    if rest.len() != 12 + len || rest[12..] != payload(key, version, len)[..] {
        return Err("payload is not the one of its version".into());
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_verify_and_every_corruption_is_caught() {
        let v = encode("k1", 7, 1000);
        assert_eq!(verify("k1", &v), Ok(7));
        assert!(verify("k2", &v).is_err(), "another key's value");
        for i in [0, 5, 10, 500, v.len() - 1] {
            let mut bad = v.clone();
            bad[i] ^= 1;
            assert!(verify("k1", &bad).is_err(), "flip at {i}");
        }
        assert!(verify("k1", &v[..v.len() - 1]).is_err());
        assert!(verify("k1", &[]).is_err());
        assert_ne!(encode("k1", 8, 1000), v);
    }
}
