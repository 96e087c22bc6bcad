//! Standalone mode (Mooncake's `setup_dummy`): a thin client inside each inference rank
//! forwards every store call to the node's store service, over a local Unix socket, and
//! shares a memory pool with it, so eight tensor-parallel ranks share one memory holder and
//! one set of connections.
//!
//! - The thin client ([`StandaloneClient`]) creates its pool as a `/dev/shm` file (mode
//!   0600: only this user's processes may map it) laid out as `[staging | pool]`: staging
//!   carries the bytes of `put`/`get`, the pool holds the caller's zero-copy buffers
//!   (`alloc_from_mem_pool`). It connects to the abstract socket
//!   `@mooncake_client_<port>.sock` (the C++ naming; `<port>` is the store service's
//!   `--port`) and says hello with the file's path.
//! - The store service ([`serve_standalone`]) maps the file, registers it with its engine
//!   and serves requests with its own [`Client`], moving value bytes straight between the
//!   pool and the segments. Offsets travel, never addresses.
//!
//! Frames are a little-endian `u32` length and a JSON body; one request at a time per
//! connection. The protocol is ours (the C++ one is not specified).

use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;

use std::sync::Arc;

use mooncake_metadata::AuthToken;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::conn::{Conn, Sock};

use crate::allocator::{AllocHandle, OffsetAllocator};
use crate::task::{TaskId, TaskInfo, TaskKind, TaskStatus};
use crate::types::{Pin, ReplicateConfig};
use crate::{Client, ErrorCode};

/// The abstract socket name of the store service whose `--port` is `port`.
pub fn socket_name(port: u16) -> String {
    format!("mooncake_client_{port}.sock")
}
mod client;
mod server;
mod wire;

pub use self::client::{StagedRange, StandaloneClient, StandaloneError};
pub use self::server::serve_standalone;
#[allow(clippy::wildcard_imports)]
use self::wire::*;

#[cfg(test)]
mod tests {
    #[allow(clippy::wildcard_imports)]
    use super::{server::*, *};

    #[test]
    fn pool_ranges_never_leave_the_pool() {
        assert_eq!(
            addresses(0x1000, 100, &[(0, 10), (90, 10)]),
            Some(vec![(0x1000, 10), (0x1000 + 90, 10)])
        );
        assert_eq!(addresses(0x1000, 100, &[(95, 10)]), None);
        assert_eq!(addresses(0x1000, 100, &[(u64::MAX, 2)]), None);
    }

    proptest::proptest! {
        /// A standalone frame from another process: any bytes parse to a request or an
        /// error, never a panic; a lying peer's reply shapes never panic the client side.
        #[test]
        fn any_frame_parses_or_is_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Request>(&bytes);
            let _ = serde_json::from_slice::<Reply>(&bytes);
        }

        #[test]
        fn any_task_reply_decodes_or_is_refused(codes in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..12)) {
            let _ = decode_task(&codes, String::new());
            let _ = task_id_of(Reply { codes, text: String::new() });
        }
    }

    #[test]
    fn tasks_survive_the_wire_bit_for_bit() {
        let t = TaskInfo {
            id: TaskId::from_halves(u64::MAX, 7),
            kind: TaskKind::Move,
            status: TaskStatus::Success,
            created_at_ms: 1,
            updated_at_ms: 2,
            assigned_client: crate::ClientId(u128::MAX - 5),
            message: "done".into(),
        };
        assert_eq!(decode_task(&encode_task(&t), "done".into()), Ok(t));
        assert_eq!(
            decode_task(&[-1400], String::new()),
            Err(ErrorCode::TaskNotFound)
        );
        let r = task_reply(Ok(TaskId::from_halves(u64::MAX, 1)));
        assert_eq!(task_id_of(r), Ok(TaskId::from_halves(u64::MAX, 1)));
        assert_eq!(
            task_id_of(task_reply(Err(ErrorCode::ObjectNotFound))),
            Err(ErrorCode::ObjectNotFound)
        );
    }

    #[test]
    fn configs_and_requests_survive_the_wire() {
        let c = ReplicateConfig {
            replica_num: 2,
            pin: Pin::Hard,
            preferred_segments: vec!["a:1".into()],
            prefer_alloc_in_same_node: false,
            soft_pin_ttl_ms: Some(5),
            ..ReplicateConfig::default()
        };
        let back = ReplicateConfig::from(WireConfig::from(&c));
        assert_eq!(back, c);
        let req = Request::GetInto {
            items: vec![("k".into(), 4096, 10)],
        };
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"op\":\"get_into\""), "{json}");
        assert!(matches!(
            serde_json::from_str::<Request>(&json).unwrap(),
            Request::GetInto { .. }
        ));
        assert!(serde_json::from_str::<Request>("{\"op\":\"format_disk\"}").is_err());
    }
}
