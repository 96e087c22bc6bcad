//! The standalone protocol: length-prefixed JSON frames, the requests and replies, and
//! how configs and tasks travel in them.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const MAX_FRAME: usize = 64 << 20;

/// `ReplicateConfig` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireConfig {
    replica_num: usize,
    /// 0 none, 1 soft, 2 hard.
    pin: u8,
    preferred: Vec<String>,
    same_node: bool,
    #[serde(default)]
    soft_pin_ttl_ms: Option<u64>,
}

impl From<&ReplicateConfig> for WireConfig {
    fn from(c: &ReplicateConfig) -> Self {
        Self {
            replica_num: c.replica_num,
            pin: match c.pin {
                Pin::None => 0,
                Pin::Soft => 1,
                Pin::Hard => 2,
            },
            preferred: c.preferred_segments.clone(),
            same_node: c.prefer_alloc_in_same_node,
            soft_pin_ttl_ms: c.soft_pin_ttl_ms,
        }
    }
}

impl From<WireConfig> for ReplicateConfig {
    fn from(w: WireConfig) -> Self {
        Self {
            replica_num: w.replica_num,
            pin: match w.pin {
                1 => Pin::Soft,
                2 => Pin::Hard,
                _ => Pin::None,
            },
            preferred_segments: w.preferred,
            prefer_alloc_in_same_node: w.same_node,
            excluded_segments: Vec::new(),
            soft_pin_ttl_ms: w.soft_pin_ttl_ms,
            // The store service's own client computes it when it has checksums on.
            checksum: None,
        }
    }
}

/// `(offset, len)` ranges of the pool.
pub(super) type Ranges = Vec<(u64, u64)>;

/// One request of a thin client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Hello {
        pool: PathBuf,
        size: u64,
        /// The cluster's token, when the client has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Put {
        items: Vec<(String, Ranges)>,
        upsert: bool,
        config: WireConfig,
    },
    GetInto {
        items: Vec<(String, u64, u64)>,
    },
    GetIntoParts {
        items: Vec<(String, Ranges)>,
    },
    IsExist {
        keys: Vec<String>,
    },
    GetSize {
        key: String,
    },
    Remove {
        keys: Vec<String>,
        force: bool,
    },
    RemoveAll {
        force: bool,
    },
    RemoveByRegex {
        pattern: String,
        force: bool,
    },
    /// `get_into_ranges`: per key, `(pool offset, len, object offset)` fragments.
    ReadRanges {
        items: Vec<(String, Vec<crate::Fragment>)>,
    },
    CreateCopyTask {
        key: String,
        targets: Vec<String>,
    },
    CreateMoveTask {
        key: String,
        source: String,
        target: String,
    },
    QueryTask {
        id_hi: u64,
        id_lo: u64,
    },
    Hostname,
}

/// One answer: a code (or count, or size) per item; `text` for `Hostname`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub(super) codes: Vec<i64>,
    pub(super) text: String,
}

pub(super) async fn read_frame(s: &Conn) -> std::io::Result<bytes::Bytes> {
    s.read_frame(MAX_FRAME).await
}

/// The server's read of a client's next request (see [`Conn::next_request`]).
pub(super) async fn read_request(s: &Conn) -> std::io::Result<bytes::Bytes> {
    s.next_request(MAX_FRAME).await
}

pub(super) async fn write_frame(s: &Conn, body: &[u8]) -> std::io::Result<()> {
    s.write_frame(body).await
}

/// A task id answer: `[0, hi, lo]` (u64 halves carried bit for bit) or `[code]`.
pub(super) fn task_reply(r: Result<TaskId, ErrorCode>) -> Reply {
    let codes = match r {
        Ok(id) => {
            let (hi, lo) = id.halves();
            vec![0, hi as i64, lo as i64]
        }
        Err(e) => vec![e.code().into()],
    };
    Reply {
        codes,
        text: String::new(),
    }
}

pub(super) fn task_id_of(r: Reply) -> Result<TaskId, ErrorCode> {
    match r.codes.as_slice() {
        [0, hi, lo] => Ok(TaskId::from_halves(*hi as u64, *lo as u64)),
        [c, ..] if *c != 0 => Err(ErrorCode::from_code(*c as i32)),
        _ => Err(ErrorCode::RpcFail),
    }
}

/// A task's numbers, each u64 carried bit for bit in an i64.
pub(super) fn encode_task(t: &TaskInfo) -> Vec<i64> {
    let (hi, lo) = t.id.halves();
    let c = t.assigned_client.0;
    [
        0,
        hi,
        lo,
        t.kind as u64,
        t.status as u64,
        t.created_at_ms,
        t.updated_at_ms,
        (c >> 64) as u64,
        c as u64,
    ]
    .iter()
    .map(|v| *v as i64)
    .collect()
}

pub(super) fn decode_task(codes: &[i64], message: String) -> Result<TaskInfo, ErrorCode> {
    let v: Vec<u64> = codes.iter().map(|c| *c as u64).collect();
    match v.as_slice() {
        [0, hi, lo, kind, status, created, updated, c_hi, c_lo] => Ok(TaskInfo {
            id: TaskId::from_halves(*hi, *lo),
            kind: if *kind == 1 {
                TaskKind::Move
            } else {
                TaskKind::Copy
            },
            status: TaskStatus::from_code(*status as i32),
            created_at_ms: *created,
            updated_at_ms: *updated,
            assigned_client: crate::ClientId((u128::from(*c_hi) << 64) | u128::from(*c_lo)),
            message,
        }),
        _ => Err(codes
            .first()
            .filter(|c| **c != 0)
            .map_or(ErrorCode::RpcFail, |c| ErrorCode::from_code(*c as i32))),
    }
}

pub(super) fn code<T>(r: &Result<T, ErrorCode>, ok: impl Fn(&T) -> i64) -> i64 {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.code().into(),
    }
}
