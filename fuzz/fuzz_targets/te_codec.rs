//! Transfer-engine data-path framing: `codec::Header::decode` (the 24-byte request header a
//! TCP data server reads from any peer) and `codec::Status::decode` (the 8-byte v2 status
//! frame a client reads back). Both must be total, and decode/encode must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooncake_transfer_engine::codec::{
    Header, Status, HEADER_LEN, STATUS_LEN, V2_FLAG,
};

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks(HEADER_LEN) {
        let mut h = [0u8; HEADER_LEN];
        h[..chunk.len()].copy_from_slice(chunk);
        let d = Header::decode(&h);
        let again = d.encode();
        // size and addr are carried verbatim, the version bit survives, padding is dropped.
        assert_eq!(&again[..16], &h[..16]);
        assert_eq!(again[16] & V2_FLAG, h[16] & V2_FLAG);
        assert_eq!(&again[17..], &[0u8; 7]);
        assert_eq!(Header::decode(&again), d);
    }
    for chunk in data.chunks(STATUS_LEN) {
        let mut s = [0u8; STATUS_LEN];
        s[..chunk.len()].copy_from_slice(chunk);
        if let Some(st) = Status::decode(&s) {
            // Every accepted frame re-encodes to the same bytes, except that the named
            // codes 0..=2 never come back as `Other`.
            assert_eq!(st.encode(), s);
            assert_eq!(Status::decode(&st.encode()), Some(st));
        }
    }
});
