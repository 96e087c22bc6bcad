//! Mooncake's TCP data-path framing (`spec/transfer-engine-protocol.md` §7), sans-io.
//!
//! A request is a 24-byte header: `size: u64 LE`, `addr: u64 LE` (absolute address in the
//! server), `opcode: u8` (bit 7 = v2, low bits 1 = WRITE, anything else READ), 7 padding
//! bytes that the C++ client leaves uninitialised. Under v2 the server answers with an
//! 8-byte status frame whose high 32 bits are `MCTV`.

/// Length of a request header.
pub const HEADER_LEN: usize = 24;
/// Length of a v2 status frame.
pub const STATUS_LEN: usize = 8;
/// The v2 flag of the opcode byte.
pub const V2_FLAG: u8 = 0x80;
/// High 32 bits of every v2 status frame: `"MCTV"`.
pub const STATUS_MAGIC: u64 = 0x4D43_5456;

/// `addr` of an authentication request: `size` bytes of token follow the header, and the
/// server answers with a status frame ([`Status::Ok`] or [`Status::Unauthenticated`]).
/// The address is non-canonical on every 64-bit machine, so it is never a registered
/// buffer: a C++ server rejects it as an out-of-range READ, never serves it.
pub const AUTH_ADDR: u64 = 0xFFFF_4D43_4155_5448;

/// The header of an authentication request carrying `token_len` bytes of token.
pub fn auth_header(token_len: usize) -> [u8; HEADER_LEN] {
    Header {
        size: token_len as u64,
        addr: AUTH_ADDR,
        opcode: Opcode::Read,
        version: ProtoVersion::V2,
    }
    .encode()
}

/// Direction of a transfer, seen from the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Remote memory -> local memory.
    Read,
    /// Local memory -> remote memory.
    Write,
}

impl Opcode {
    /// The numeric value of Mooncake's batch API (`READ=0`, `WRITE=1`).
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Read => 0,
            Opcode::Write => 1,
        }
    }
}

/// Version of the TCP framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtoVersion {
    /// No status frames: a WRITE completes when the payload leaves the socket.
    V1,
    /// Acknowledged framing: every request is answered with a status frame.
    V2,
}

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Payload length in bytes.
    pub size: u64,
    /// Absolute address in the server process.
    pub addr: u64,
    /// Direction.
    pub opcode: Opcode,
    /// Framing version.
    pub version: ProtoVersion,
}

impl Header {
    /// Encodes the header with zeroed padding.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.size.to_le_bytes());
        out[8..16].copy_from_slice(&self.addr.to_le_bytes());
        let op = match self.opcode {
            Opcode::Read => 0,
            Opcode::Write => 1,
        };
        out[16] = match self.version {
            ProtoVersion::V1 => op,
            ProtoVersion::V2 => op | V2_FLAG,
        };
        out
    }

    /// Decodes a header; total over all inputs (padding is ignored, unknown operations
    /// are READ, as the C++ server treats them).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[0..8]);
        let size = u64::from_le_bytes(word);
        word.copy_from_slice(&bytes[8..16]);
        let addr = u64::from_le_bytes(word);
        let op = bytes[16];
        let version = if op & V2_FLAG != 0 {
            ProtoVersion::V2
        } else {
            ProtoVersion::V1
        };
        let opcode = if op & !V2_FLAG == 1 {
            Opcode::Write
        } else {
            Opcode::Read
        };
        Self {
            size,
            addr,
            opcode,
            version,
        }
    }
}

/// A v2 status frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The request was served.
    Ok,
    /// The address range lies outside the server's registered buffers.
    Rejected,
    /// The server needs the cluster's token and the connection did not present it.
    Unauthenticated,
    /// A well-formed frame with a code this implementation does not know.
    Other(u32),
}

impl Status {
    /// Encodes the frame.
    pub fn encode(self) -> [u8; STATUS_LEN] {
        let code = match self {
            Status::Ok => 0,
            Status::Rejected => 1,
            Status::Unauthenticated => 2,
            Status::Other(c) => c,
        };
        ((STATUS_MAGIC << 32) | u64::from(code)).to_le_bytes()
    }

    /// Decodes a frame; `None` when the magic is wrong (a v1 peer or a stream out of sync).
    pub fn decode(bytes: &[u8; STATUS_LEN]) -> Option<Self> {
        let v = u64::from_le_bytes(*bytes);
        if v >> 32 != STATUS_MAGIC {
            return None;
        }
        Some(match v as u32 {
            0 => Status::Ok,
            1 => Status::Rejected,
            2 => Status::Unauthenticated,
            c => Status::Other(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_examples_of_the_spec() {
        let write = Header {
            size: 4096,
            addr: 0x7f00_0000_0040,
            opcode: Opcode::Write,
            version: ProtoVersion::V2,
        };
        assert_eq!(
            write.encode(),
            [0, 0x10, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0x7f, 0, 0, 0x81, 0, 0, 0, 0, 0, 0, 0]
        );
        let read = Header {
            size: 32,
            addr: 0x7f00_0000_0080,
            opcode: Opcode::Read,
            version: ProtoVersion::V2,
        };
        assert_eq!(
            read.encode(),
            [0x20, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0x7f, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Status::Ok.encode(), [0, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D]);
        assert_eq!(
            Status::Rejected.encode(),
            [1, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D]
        );
    }

    #[test]
    fn opcode_byte_is_read_unless_low_bits_are_one() {
        let mut h = [0u8; HEADER_LEN];
        for (byte, opcode, version) in [
            (0x00, Opcode::Read, ProtoVersion::V1),
            (0x01, Opcode::Write, ProtoVersion::V1),
            (0x02, Opcode::Read, ProtoVersion::V1),
            (0x80, Opcode::Read, ProtoVersion::V2),
            (0x81, Opcode::Write, ProtoVersion::V2),
            (0x82, Opcode::Read, ProtoVersion::V2),
            (0xff, Opcode::Read, ProtoVersion::V2),
        ] {
            h[16] = byte;
            let d = Header::decode(&h);
            assert_eq!(
                (d.opcode, d.version),
                (opcode, version),
                "opcode byte {byte:#x}"
            );
        }
    }

    #[test]
    fn padding_is_ignored() {
        let h = Header {
            size: 7,
            addr: 9,
            opcode: Opcode::Write,
            version: ProtoVersion::V2,
        };
        let mut bytes = h.encode();
        bytes[17..24].copy_from_slice(b"ey: str");
        assert_eq!(Header::decode(&bytes), h);
    }

    #[test]
    fn status_frames_need_the_magic() {
        assert_eq!(
            Status::decode(&[0, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D]),
            Some(Status::Ok)
        );
        assert_eq!(
            Status::decode(&[1, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D]),
            Some(Status::Rejected)
        );
        assert_eq!(
            Status::decode(&[2, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D]),
            Some(Status::Unauthenticated)
        );
        assert_eq!(
            Status::decode(&[7, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D]),
            Some(Status::Other(7))
        );
        assert_eq!(Status::decode(&[0; 8]), None);
        assert_eq!(Status::decode(b"garbage!"), None);
    }

    proptest! {
        #[test]
        fn header_round_trips(size: u64, addr: u64, write: bool, v2: bool) {
            let h = Header {
                size,
                addr,
                opcode: if write { Opcode::Write } else { Opcode::Read },
                version: if v2 { ProtoVersion::V2 } else { ProtoVersion::V1 },
            };
            prop_assert_eq!(Header::decode(&h.encode()), h);
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::array::uniform24(any::<u8>()), s: [u8; 8]) {
            let h = Header::decode(&bytes);
            let again = h.encode();
            prop_assert_eq!(&again[..16], &bytes[..16]);
            prop_assert_eq!(again[16] & V2_FLAG, bytes[16] & V2_FLAG);
            prop_assert_eq!(Header::decode(&again), h);
            let _ = Status::decode(&s);
        }
    }
}
