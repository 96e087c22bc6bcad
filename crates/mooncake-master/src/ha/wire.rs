//! The replication stream between a leader and a standby: over one TCP connection, frames
//! of the state directory's format (`u32 LE length | u32 LE CRC-32C | body`), the body JSON
//! or, for batches and snapshot chunks to a standby that reads it, the
//! [`crate::binary`] encoding.
//!
//! Standby -> leader: [`ToLeader::Hello`], then an [`ToLeader::Ack`] for every batch it
//! applied. Leader -> standby: [`ToStandby::Hello`], the snapshot in chunks, its end (with
//! the sequence number it covers), then each call's changes as a [`ToStandby::Batch`] and
//! a heartbeat when idle. The format version is the state directory's: a standby refuses
//! a leader of a newer major version, so a rolling upgrade starts with the standbys.

use std::io;
use std::time::Duration;

use mooncake_transfer_engine::conn::Conn;
use serde::{Deserialize, Serialize};
#[cfg(test)]
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::binary::{self, BatchKind};
use crate::state::format::{encode, frame_with, FORMAT_MAJOR, FORMAT_MINOR, FRAME_HEADER};
use crate::Change;

/// Largest frame either side accepts (a snapshot chunk is far smaller).
const MAX_FRAME: usize = 256 << 20;

/// How often an idle leader sends a heartbeat.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(100);

/// Leader -> standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ToStandby {
    /// First message: who leads, in which format.
    Hello {
        format_major: u32,
        #[serde(default)]
        format_minor: u32,
        leader: String,
        /// The leader counts a batch written into a same-host standby's socket as held
        /// (`replicator.rs`, `Follower::holds`), so such a standby may read lazily. Absent
        /// (false) from leaders before it, which wait for every acknowledgement: a
        /// standby upgraded first keeps answering them at once.
        #[serde(default)]
        holds_delivered: bool,
    },
    /// Part of the state when the standby joined.
    Snapshot(Vec<Change>),
    /// The snapshot is complete; it covers every batch up to `seq`.
    SnapshotEnd { seq: u64 },
    /// One call's changes.
    Batch { seq: u64, changes: Vec<Change> },
    /// Leading changes of call `seq`, whose changes are too many for one frame (a
    /// `remove_all` of millions of keys): the [`ToStandby::Batch`] with the same `seq`
    /// brings the rest, and the standby applies them all then. Sent only in the
    /// [`binary`] encoding (a standby of JSON gets the call as one frame).
    BatchPart { seq: u64, changes: Vec<Change> },
    /// The leader counts this standby in sync from now on (it waits for its
    /// acknowledgements): until then the standby may lack answered changes.
    InSync { seq: u64 },
    /// Nothing new; the leader's last batch is `seq`.
    Heartbeat { seq: u64 },
    /// The leader ends the stream: `resync` when it dropped this standby for lagging (it
    /// went on without it, so the standby no longer holds the whole state), not when its
    /// term ended.
    Bye { resync: bool },
}

/// Standby -> leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ToLeader {
    /// First message.
    Hello {
        format_major: u32,
        #[serde(default)]
        format_minor: u32,
        name: String,
        /// The highest [`binary`] encoding version this standby reads (0, absent from
        /// standbys before it: JSON only). The leader sends batches and snapshot chunks
        /// in that encoding (encoding a batch costs the leader 1/40 of its JSON, decoding
        /// it the standby 1/7).
        #[serde(default)]
        binary: u8,
    },
    /// Every batch up to `seq` is applied.
    Ack { seq: u64 },
}

impl ToStandby {
    pub(crate) fn hello(leader: &str) -> Self {
        Self::Hello {
            format_major: FORMAT_MAJOR,
            format_minor: FORMAT_MINOR,
            leader: leader.to_owned(),
            holds_delivered: true,
        }
    }
}

impl ToLeader {
    pub(crate) fn hello(name: &str) -> Self {
        Self::Hello {
            format_major: FORMAT_MAJOR,
            format_minor: FORMAT_MINOR,
            name: name.to_owned(),
            binary: binary::VERSION,
        }
    }
}

/// Whether a peer speaking `major` can be followed by / can follow this master.
pub(crate) fn compatible(major: u32) -> bool {
    major <= FORMAT_MAJOR
}

/// The abstract Unix socket a leader whose replication port is `port` also listens on:
/// standbys on the same host follow it without the TCP stack (a write and its
/// acknowledgement cost a few microseconds instead of tens).
fn local_socket_name(port: u16) -> String {
    format!("mooncake_master_replication_{port}.sock")
}

/// The abstract Unix socket beside the replication port (`None`, said once, if another
/// process holds the name: standbys then use TCP).
pub(crate) fn local_listener(port: u16) -> Option<tokio::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let name = local_socket_name(port);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    let l = match std::os::unix::net::UnixListener::bind_addr(&addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(socket = %format!("@{name}"), error = %e, "cannot serve replication on a local socket; standbys on this host use TCP");
            return None;
        }
    };
    l.set_nonblocking(true).ok()?;
    tokio::net::UnixListener::from_std(l).ok()
}

/// The leader's local socket when its replication address `addr` is on this host (a
/// loopback address) and the socket is held by a process of this user (anyone can bind an
/// abstract name: a socket of another user is not trusted with the state; TCP is used).
pub(crate) fn connect_local(addr: &str) -> Option<Conn> {
    use std::os::linux::net::SocketAddrExt;
    let (host, port) = addr.rsplit_once(':')?;
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        return None;
    }
    let name = local_socket_name(port.parse().ok()?);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    let s = std::os::unix::net::UnixStream::connect_addr(&addr).ok()?;
    let holder = mooncake_transfer_engine::peer_uid(std::os::fd::AsFd::as_fd(&s));
    if holder != Some(mooncake_transfer_engine::effective_uid()) {
        tracing::warn!(socket = %format!("@{name}"), holder_uid = ?holder, "the leader's local replication socket is held by another user; using TCP");
        return None;
    }
    mooncake_transfer_engine::conn::Sock::unix(s)
        .ok()
        .map(Conn::from)
}

/// Appends `msg` as one frame to `buf`.
pub(crate) fn put<T: Serialize>(msg: &T, buf: &mut Vec<u8>) {
    encode(msg, buf);
}

/// Appends a [`ToStandby::Batch`] (or, for [`BatchKind::Snapshot`], a
/// [`ToStandby::Snapshot`]) as one frame to `buf`, in the [`binary`] encoding.
pub(crate) fn put_binary(kind: BatchKind, seq: u64, changes: &[Change], buf: &mut Vec<u8>) {
    frame_with(buf, |out| binary::encode_changes(kind, seq, changes, out));
}

/// Changes per frame of a call's batch in the [`binary`] encoding: a frame stays far below
/// [`MAX_FRAME`] (a change is ~100 bytes) however many keys one call touched.
#[cfg(not(test))]
const BATCH_PART: usize = 65_536;
#[cfg(test)]
const BATCH_PART: usize = 100;

/// Appends call `seq`'s changes to `buf` in the [`binary`] encoding: one
/// [`ToStandby::Batch`] frame, preceded by [`ToStandby::BatchPart`] frames of
/// [`BATCH_PART`] changes each when there are more than that.
pub(crate) fn put_binary_batch(seq: u64, changes: &[Change], buf: &mut Vec<u8>) {
    let mut rest = changes;
    while rest.len() > BATCH_PART {
        let (part, tail) = rest.split_at(BATCH_PART);
        put_binary(BatchKind::BatchPart, seq, part, buf);
        rest = tail;
    }
    put_binary(BatchKind::Batch, seq, rest, buf);
}

/// A message as it is decoded from a frame's body.
pub(crate) trait Message: Sized {
    /// The message in `body`, or why it is not one.
    fn decode(body: &[u8]) -> Result<Self, String>;
}

impl Message for ToLeader {
    fn decode(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

impl Message for ToStandby {
    /// JSON, or a batch or snapshot chunk in the [`binary`] encoding (told apart by the
    /// first byte).
    fn decode(body: &[u8]) -> Result<Self, String> {
        if body.first() != Some(&binary::MAGIC) {
            return serde_json::from_slice(body).map_err(|e| e.to_string());
        }
        match binary::decode_changes(body).map_err(|e| e.to_string())? {
            (BatchKind::Batch, seq, changes) => Ok(Self::Batch { seq, changes }),
            (BatchKind::Snapshot, _, changes) => Ok(Self::Snapshot(changes)),
            (BatchKind::BatchPart, seq, changes) => Ok(Self::BatchPart { seq, changes }),
        }
    }
}

/// Frames arriving on a connection: bytes read and not yet taken as messages. Reads are
/// direct non-blocking system calls ([`Conn`]), so a waiter can poll for the next frame.
#[derive(Debug)]
pub(crate) struct FrameBuf {
    /// Read bytes live in `buf[start..end]`; `buf` beyond `end` is room for the next read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        Self {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }
}

/// The buffer's initial size (and its growth step).
const READ_CHUNK: usize = 64 << 10;
/// Room a read gets at least.
const MIN_ROOM: usize = 16 << 10;

impl FrameBuf {
    /// The next buffered message, if a whole frame is there; a frame that is too large,
    /// fails its CRC or does not decode is an error (the stream is unusable).
    pub(crate) fn next<T: Message>(&mut self) -> io::Result<Option<T>> {
        let avail = &self.buf[self.start..self.end];
        let Some(head) = avail.get(..FRAME_HEADER) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            return Err(invalid(format!(
                "a replication frame of {len} bytes (limit {MAX_FRAME})"
            )));
        }
        let Some(body) = avail.get(FRAME_HEADER..FRAME_HEADER + len) else {
            return Ok(None);
        };
        if crc32c::crc32c(body) != crc {
            return Err(invalid("a replication frame fails its CRC-32C".into()));
        }
        let msg = T::decode(body)
            .map_err(|e| invalid(format!("a replication frame is not understood: {e}")))?;
        self.start += FRAME_HEADER + len;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(Some(msg))
    }

    /// Bytes buffered and not yet taken as frames.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether the start of another frame is already buffered.
    pub(crate) fn has_more(&self) -> bool {
        self.end - self.start >= FRAME_HEADER
    }

    /// Reads what `conn` holds now, without waiting: whether any bytes came. The end of
    /// the stream is `UnexpectedEof`.
    pub(crate) fn try_fill(&mut self, conn: &Conn) -> io::Result<bool> {
        self.make_room();
        match conn.try_read(&mut self.buf[self.end..]) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for more bytes (polling briefly, then sleeping), failing with `TimedOut` at
    /// `deadline`.
    pub(crate) async fn fill(
        &mut self,
        conn: &Conn,
        deadline: Option<tokio::time::Instant>,
    ) -> io::Result<()> {
        self.make_room();
        let n = conn
            .read_some_until(&mut self.buf[self.end..], deadline)
            .await?;
        self.end += n;
        Ok(())
    }

    /// Room after the buffered bytes for a read, and for the whole frame being received.
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.buf.len() - self.end < MIN_ROOM && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let frame = self.buf[self.start..self.end]
            .get(..FRAME_HEADER)
            .map_or(0, |h| {
                FRAME_HEADER + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
            })
            .min(MAX_FRAME + FRAME_HEADER);
        let want = (self.start + frame).max(self.end + MIN_ROOM);
        if self.buf.len() < want {
            self.buf.resize(want.max(self.end + READ_CHUNK), 0);
        }
    }
}

/// Writes `msg` as one frame.
#[cfg(test)]
pub(crate) async fn send<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    encode(msg, &mut buf);
    w.write_all(&buf).await
}

/// Reads one frame; `None` at a clean end of stream.
#[cfg(test)]
pub(crate) async fn recv<R: AsyncRead + Unpin, T: Message>(
    r: &mut R,
) -> std::io::Result<Option<T>> {
    let Some(body) = recv_body(r).await? else {
        return Ok(None);
    };
    T::decode(&body)
        .map(Some)
        .map_err(|e| invalid(format!("a replication frame is not understood: {e}")))
}

/// Reads one frame's body, checked against its CRC; `None` at a clean end of stream.
#[cfg(test)]
pub(crate) async fn recv_body<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; FRAME_HEADER];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_FRAME {
        return Err(invalid(format!(
            "a replication frame of {len} bytes (limit {MAX_FRAME})"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if crc32c::crc32c(&body) != crc {
        return Err(invalid("a replication frame fails its CRC-32C".into()));
    }
    Ok(Some(body))
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_garbage_is_refused() {
        let msgs = vec![
            ToStandby::hello("10.0.0.1:50051"),
            ToStandby::Snapshot(vec![Change::Erase { key: "k".into() }]),
            ToStandby::SnapshotEnd { seq: 7 },
            ToStandby::Batch {
                seq: 8,
                changes: vec![],
            },
            ToStandby::Heartbeat { seq: 8 },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            put(m, &mut buf);
        }
        let mut r = &buf[..];
        for m in &msgs {
            assert_eq!(
                recv::<_, ToStandby>(&mut r).await.unwrap().as_ref(),
                Some(m)
            );
        }
        assert_eq!(recv::<_, ToStandby>(&mut r).await.unwrap(), None);
        // A flipped byte, a huge length, and JSON of the wrong shape are errors.
        let mut bad = buf.clone();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        let mut r = &bad[..];
        for _ in 0..msgs.len() - 1 {
            recv::<_, ToStandby>(&mut r).await.unwrap();
        }
        assert!(recv::<_, ToStandby>(&mut r).await.is_err());
        let huge = [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        assert!(recv::<_, ToStandby>(&mut &huge[..]).await.is_err());
        let mut wrong = Vec::new();
        put(&ToLeader::Ack { seq: 1 }, &mut wrong);
        assert!(recv::<_, ToStandby>(&mut &wrong[..]).await.is_err());
    }

    /// A leader of the previous release says nothing of same-host delivery: its standbys
    /// must keep acknowledging at once (it waits for them); this release's leader says so.
    #[test]
    fn a_hello_without_delivery_credit_decodes_as_none() {
        let old = r#"{"hello":{"format_major":1,"format_minor":0,"leader":"m1:50051"}}"#;
        match serde_json::from_str::<ToStandby>(old).unwrap() {
            ToStandby::Hello {
                holds_delivered, ..
            } => assert!(!holds_delivered),
            other => panic!("{other:?}"),
        }
        let new = serde_json::to_string(&ToStandby::hello("m2:50051")).unwrap();
        assert!(new.contains(r#""holds_delivered":true"#), "{new}");
    }

    /// Batches and snapshot chunks in the binary encoding come out as the same messages
    /// as their JSON; a standby of the previous release reads JSON only (no `binary` in
    /// its hello), this release's reads the binary encoding.
    #[tokio::test]
    async fn binary_frames_decode_as_their_json_and_old_standbys_read_json_only() {
        let changes = vec![
            Change::Erase { key: "k".into() },
            Change::Unmount {
                segment: mooncake_store::SegmentId(3),
            },
        ];
        let mut buf = Vec::new();
        put_binary(BatchKind::Batch, 9, &changes, &mut buf);
        put_binary(BatchKind::Snapshot, 0, &changes, &mut buf);
        put(
            &ToStandby::Batch {
                seq: 9,
                changes: changes.clone(),
            },
            &mut buf,
        );
        let mut r = &buf[..];
        let batch = ToStandby::Batch {
            seq: 9,
            changes: changes.clone(),
        };
        assert_eq!(
            recv::<_, ToStandby>(&mut r).await.unwrap(),
            Some(batch.clone())
        );
        assert_eq!(
            recv::<_, ToStandby>(&mut r).await.unwrap(),
            Some(ToStandby::Snapshot(changes))
        );
        assert_eq!(recv::<_, ToStandby>(&mut r).await.unwrap(), Some(batch));
        // A binary body of a later layout is refused by name.
        let mut newer = Vec::new();
        frame_with(&mut newer, |out| {
            out.extend_from_slice(&[binary::MAGIC, binary::VERSION + 1])
        });
        let err = recv::<_, ToStandby>(&mut &newer[..]).await.unwrap_err();
        assert!(err.to_string().contains("newer than this master"), "{err}");
        let old = r#"{"hello":{"format_major":1,"format_minor":0,"name":"s1"}}"#;
        match serde_json::from_str::<ToLeader>(old).unwrap() {
            ToLeader::Hello { binary, .. } => assert_eq!(binary, 0),
            other => panic!("{other:?}"),
        }
        match ToLeader::hello("s2") {
            ToLeader::Hello { binary, .. } => assert_eq!(binary, binary::VERSION),
            other => panic!("{other:?}"),
        }
    }

    /// A call's changes beyond [`BATCH_PART`] go in leading parts with its `seq`, then the
    /// batch that ends them.
    #[tokio::test]
    async fn a_large_batch_goes_in_parts_that_the_batch_ends() {
        let changes: Vec<Change> = (0..250)
            .map(|i| Change::Erase {
                key: format!("k{i}"),
            })
            .collect();
        let mut buf = Vec::new();
        put_binary_batch(7, &changes, &mut buf);
        let mut r = &buf[..];
        let mut got = Vec::new();
        while let Some(m) = recv::<_, ToStandby>(&mut r).await.unwrap() {
            got.push(m);
        }
        let want = vec![
            ToStandby::BatchPart {
                seq: 7,
                changes: changes[..100].to_vec(),
            },
            ToStandby::BatchPart {
                seq: 7,
                changes: changes[100..200].to_vec(),
            },
            ToStandby::Batch {
                seq: 7,
                changes: changes[200..].to_vec(),
            },
        ];
        assert_eq!(got, want);
        // A small batch is one frame.
        let mut one = Vec::new();
        put_binary_batch(8, &changes[..BATCH_PART], &mut one);
        let mut r = &one[..];
        assert!(matches!(
            recv::<_, ToStandby>(&mut r).await.unwrap(),
            Some(ToStandby::Batch { seq: 8, .. })
        ));
        assert!(r.is_empty());
    }

    /// Frames arriving in arbitrary pieces come out whole and in order; a frame that
    /// fails its CRC or is too large is an error, an incomplete one waits for more.
    #[test]
    fn frame_buffers_reassemble_pieces_and_refuse_garbage() {
        use std::io::Write;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let conn = Conn::from(mooncake_transfer_engine::conn::Sock::unix(b).unwrap());
        let msgs: Vec<ToStandby> = (0..200)
            .map(|i| ToStandby::Batch {
                seq: i,
                changes: vec![Change::Erase {
                    key: "k".repeat(i as usize * 7),
                }],
            })
            .collect();
        let mut bytes = Vec::new();
        for m in &msgs {
            put(m, &mut bytes);
        }
        let mut rx = FrameBuf::default();
        assert!(!rx.try_fill(&conn).unwrap());
        let mut got = Vec::new();
        for piece in bytes.chunks(997) {
            (&a).write_all(piece).unwrap();
            while rx.try_fill(&conn).unwrap() {}
            while let Some(m) = rx.next::<ToStandby>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert!(!rx.has_more());
        // A flipped body byte.
        let mut bad = Vec::new();
        put(&msgs[3], &mut bad);
        let last = bad.len() - 2;
        bad[last] ^= 1;
        (&a).write_all(&bad).unwrap();
        while rx.try_fill(&conn).unwrap() {}
        assert!(rx.next::<ToStandby>().is_err());
        // A huge length, and the end of the stream.
        let mut rx = FrameBuf::default();
        (&a).write_all(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0])
            .unwrap();
        while rx.try_fill(&conn).unwrap() {}
        assert!(rx.next::<ToStandby>().is_err());
        drop(a);
        let mut rx = FrameBuf::default();
        assert!(rx.try_fill(&conn).is_err());
    }
}
