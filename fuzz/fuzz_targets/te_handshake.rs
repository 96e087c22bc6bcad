//! Transfer-engine handshake ("RPC port") frames: `handshake::decode_prefix` (the 9-byte
//! length + type prefix), `handshake::read_frame` over an in-memory reader (what the
//! handshake daemon and the client run on bytes from the network), and
//! `FrameType::from_byte`. The first byte of the input picks the reader's maximum frame
//! length; the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooncake_transfer_engine::handshake::{
    decode_prefix, encode_frame, read_frame, FrameType, HandshakeError, DEFAULT_MAX_FRAME,
    MAX_FRAME_LIMIT, PREFIX_LEN,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let max = match sel % 4 {
        0 => 100,
        1 => DEFAULT_MAX_FRAME,
        2 => MAX_FRAME_LIMIT,
        _ => u64::MAX,
    };
    let _ = FrameType::from_byte(sel);
    if stream.len() >= PREFIX_LEN {
        let mut p = [0u8; PREFIX_LEN];
        p.copy_from_slice(&stream[..PREFIX_LEN]);
        match decode_prefix(&p, max) {
            Ok(fp) => {
                let len = u64::from_le_bytes(p[..8].try_into().unwrap());
                assert!(len >= 1 && len <= max);
                assert_eq!(fp.remaining, len - 1);
                assert_eq!(fp.legacy_first_byte.is_some(), p[8] > 3);
            }
            Err(HandshakeError::EmptyFrame) => assert_eq!(&p[..8], &[0u8; 8]),
            Err(HandshakeError::FrameTooLarge { len, max: m }) => assert!(len > m),
            Err(e) => panic!("decode_prefix returned an unexpected error: {e}"),
        }
    }
    let mut reader = stream;
    let got = runtime().block_on(read_frame(&mut reader, max));
    if let Ok((ty, json)) = got {
        let consumed = stream.len() - reader.len();
        let legacy = stream[8] > 3;
        if legacy {
            assert_eq!(ty, FrameType::Connection);
            assert_eq!(json.len() + PREFIX_LEN - 1, consumed);
            assert_eq!(&json[..], &stream[8..consumed]);
        } else {
            assert_eq!(encode_frame(ty, &json), &stream[..consumed]);
        }
    }
});
