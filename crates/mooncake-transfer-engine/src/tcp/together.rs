//! Sending and reading the stripes of a large job on all their connections at once.
//!
//! A large job is cut into stripes on several connections so that the peer receives (or
//! sends) them in parallel. Written or read one stripe after the other, only one connection
//! moves at a time once the socket buffers fill (between hosts a 4 MiB stripe does not fit
//! in them), and each stalled peer task must be woken again; here the caller writes to, or
//! pulls from, every connection in turn with non-blocking system calls, straight from or
//! into each request's memory, so every connection keeps moving. It polls while bytes keep
//! moving and sleeps on the reactor only when none have for a spin window.

use std::io::IoSlice;
use std::sync::Arc;

use tokio::time::Instant;

use super::client::{TcpClientConfig, WireOp};
use super::direct::status_outcome;
use super::MAX_IOV;
use crate::codec::{Opcode, HEADER_LEN, STATUS_LEN};
use crate::conn::{advance, Conn, Spin};
use crate::memory::Region;
use crate::TransferError;

/// A stripe sent on a connection of its own: the connection, the stripe's requests and its
/// deadline.
pub(super) type StripeView<'a> = (&'a Conn, &'a [(WireOp, Arc<Region>)], Instant);

/// One stripe being sent: what is left of its headers and payloads.
struct Send<'a> {
    conn: &'a Conn,
    bufs: Vec<&'a [u8]>,
    /// The first buffer with bytes left.
    first: usize,
    deadline: Instant,
    /// `Some(sent)` once the stripe ended.
    ended: Option<bool>,
}

impl Send<'_> {
    /// Writes what the socket takes; whether it took any byte.
    fn pump(&mut self) -> bool {
        let mut progress = false;
        while self.ended.is_none() {
            while self.first < self.bufs.len() && self.bufs[self.first].is_empty() {
                self.first += 1;
            }
            if self.first == self.bufs.len() {
                self.ended = Some(true);
                break;
            }
            let slices: Vec<IoSlice<'_>> = self.bufs[self.first..]
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            match self.conn.try_write_vectored(&slices) {
                Ok(0) => self.ended = Some(false),
                Ok(n) => {
                    progress = true;
                    self.first = advance(&mut self.bufs, self.first, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.ended = Some(false),
            }
        }
        progress
    }
}

/// Sends the headers (and WRITE payloads) of every stripe, each on its own connection,
/// together; for each stripe whether all of it left.
pub(super) async fn send_together(stripes: &[StripeView<'_>]) -> Vec<bool> {
    let headers: Vec<Vec<[u8; HEADER_LEN]>> = stripes
        .iter()
        .map(|(_, ops, _)| super::headers(ops))
        .collect();
    let mut sends: Vec<Send<'_>> = stripes
        .iter()
        .zip(&headers)
        .map(|(&(conn, ops, deadline), headers)| {
            let mut bufs: Vec<&[u8]> = Vec::with_capacity(2 * ops.len());
            for ((op, local), header) in ops.iter().zip(headers) {
                bufs.push(header);
                if op.opcode == Opcode::Write {
                    bufs.push(local.slice(op.local_addr, op.len as usize));
                }
            }
            Send {
                conn,
                bufs,
                first: 0,
                deadline,
                ended: None,
            }
        })
        .collect();
    let mut pace = Pace::new();
    loop {
        let progress = sends.iter_mut().fold(false, |p, s| s.pump() | p);
        let Some(waiting) = sends.iter_mut().find(|s| s.ended.is_none()) else {
            break;
        };
        if pace.keep_polling(progress).await {
            continue;
        }
        if waiting
            .conn
            .writable_until(Some(waiting.deadline))
            .await
            .is_err()
        {
            waiting.ended = Some(false);
        }
        pace.woke();
    }
    sends.iter().map(|s| s.ended == Some(true)).collect()
}

/// When a loop over several connections polls and when it sleeps: it yields to the task's
/// other futures once, then polls while bytes move and, when they stop, for as long as a
/// [`Spin`] allows (one poller per process, none while other threads want the cores),
/// then sleeps.
struct Pace {
    spin: Option<Spin>,
    yielded: bool,
}

impl Pace {
    fn new() -> Self {
        Self {
            spin: None,
            yielded: false,
        }
    }

    /// Whether to go round again instead of sleeping, after a round that moved bytes or not.
    async fn keep_polling(&mut self, progress: bool) -> bool {
        if progress {
            // Bytes moved: a fresh spin window for the next time they stop.
            self.spin = None;
            return true;
        }
        if !self.yielded {
            // Once, before polling: let the task's other futures (a master call beside a
            // speculative read) send their requests before this one holds the thread.
            self.yielded = true;
            tokio::task::yield_now().await;
            return true;
        }
        self.spin.get_or_insert_with(Spin::claim).keep_polling()
    }

    /// After a sleep: poll again next time.
    fn woke(&mut self) {
        self.spin = None;
    }
}

/// The outcome of each request of one stripe (`None`: unknown, its connection failed
/// first) and whether the connection may be reused.
pub(super) type StripeAnswers = (Vec<Option<Result<(), TransferError>>>, bool);

/// Answers pulled per system call at most: status frames and payloads laid end to end.
const READ_IOVS: usize = 64;

/// One stripe being read: where its answers stand.
struct Drain<'a> {
    conn: &'a Conn,
    ops: &'a [(WireOp, Arc<Region>)],
    deadline: Instant,
    /// The request whose answer is being read.
    next: usize,
    /// Each request's status frame (later ones may arrive with an earlier payload).
    frames: Vec<[u8; STATUS_LEN]>,
    /// Bytes of the status frame (or, once it is whole, of the payload) read.
    got: usize,
    /// Whether the status frame was read and the payload is arriving.
    payload: bool,
    out: Vec<Option<Result<(), TransferError>>>,
    /// `Some(reusable)` once the stripe ended.
    ended: Option<bool>,
}

impl Drain<'_> {
    fn end(&mut self, reusable: bool) {
        self.ended = Some(reusable);
    }

    /// Reads what has arrived; whether any byte did.
    ///
    /// Each system call reads the rest of the current answer and the answers after it
    /// (status frame, payload, status frame, ...) in one vectored read, instead of a call
    /// for each frame and each payload: a batch of 32 values of 64 KiB took twice as many
    /// calls. A payload may land before its frame is checked; a refused request ends the
    /// connection right after its frame (the protocol), so nothing lands after that, and a
    /// request that fails leaves its destination unspecified anyway.
    fn pump(&mut self) -> bool {
        let mut progress = false;
        while self.ended.is_none() {
            if self.next == self.ops.len() {
                self.end(true);
                break;
            }
            let read = {
                let mut iovs: Vec<std::io::IoSliceMut<'_>> = Vec::with_capacity(READ_IOVS);
                let (payload, got) = (self.payload, self.got);
                for (k, ((op, local), frame)) in self.ops[self.next..]
                    .iter()
                    .zip(self.frames[self.next..].iter_mut())
                    .enumerate()
                {
                    if iovs.len() + 2 > READ_IOVS {
                        break;
                    }
                    let first = k == 0;
                    if !(first && payload) {
                        let from = if first { got } else { 0 };
                        iovs.push(std::io::IoSliceMut::new(&mut frame[from..]));
                    }
                    let from = if first && payload { got } else { 0 };
                    let len = op.len as usize - from;
                    if len > 0 {
                        #[allow(unsafe_code)]
                        // SAFETY: one writer per range (the store protocol), and the slice
                        // lives for this read.
                        let dst = unsafe { local.slice_mut(op.local_addr + from as u64, len) };
                        iovs.push(std::io::IoSliceMut::new(dst));
                    }
                }
                self.conn.try_read_vectored(&mut iovs)
            };
            match read {
                Ok(0) => self.end(false),
                Ok(n) => {
                    progress = true;
                    self.consume(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.end(false),
            }
        }
        progress
    }

    /// Moves past `n` bytes just read: completes payloads and checks status frames.
    fn consume(&mut self, mut n: usize) {
        while self.ended.is_none() && self.next < self.ops.len() {
            let op = &self.ops[self.next].0;
            if !self.payload {
                let take = n.min(STATUS_LEN - self.got);
                (self.got, n) = (self.got + take, n - take);
                if self.got < STATUS_LEN {
                    return;
                }
                if let Err(e) = status_outcome(&self.frames[self.next], op) {
                    // A refused request closes the connection after its answer.
                    self.out[self.next] = Some(Err(e));
                    self.end(false);
                    return;
                }
                (self.got, self.payload) = (0, true);
            }
            let take = n.min(op.len as usize - self.got);
            (self.got, n) = (self.got + take, n - take);
            if self.got < op.len as usize {
                return;
            }
            self.out[self.next] = Some(Ok(()));
            (self.next, self.got, self.payload) = (self.next + 1, 0, false);
        }
    }
}

/// Reads the answers of READ stripes (each sent on its own connection) together; for each
/// stripe, its requests' outcomes and whether its connection may be reused.
pub(super) async fn read_together(
    stripes: &[StripeView<'_>],
    config: &TcpClientConfig,
) -> Vec<StripeAnswers> {
    let mut drains: Vec<Drain<'_>> = stripes
        .iter()
        .map(|&(conn, ops, deadline)| Drain {
            conn,
            ops,
            deadline,
            next: 0,
            frames: vec![[0; STATUS_LEN]; ops.len()],
            got: 0,
            payload: false,
            out: ops.iter().map(|_| None).collect(),
            ended: None,
        })
        .collect();
    let mut pace = Pace::new();
    loop {
        let progress = drains.iter_mut().fold(false, |p, d| d.pump() | p);
        let Some(waiting) = drains.iter_mut().find(|d| d.ended.is_none()) else {
            break;
        };
        if pace.keep_polling(progress).await {
            continue;
        }
        // Nothing for a while: sleep until the first unfinished stripe has input (any
        // other's input is read on the next round too).
        match waiting.conn.readable_until(Some(waiting.deadline)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if let Some((op, _)) = waiting.ops.get(waiting.next) {
                    waiting.out[waiting.next] = Some(Err(TransferError::Timeout {
                        peer: op.peer,
                        timeout: config.io_timeout,
                    }));
                }
                waiting.end(false);
            }
            Err(_) => waiting.end(false),
        }
        pace.woke();
    }
    drains
        .into_iter()
        .map(|d| (d.out, d.ended == Some(true)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ProtoVersion, Status};
    use std::io::Write;
    use std::time::Duration;

    fn config() -> TcpClientConfig {
        TcpClientConfig {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
            lanes_per_peer: 1,
            auth_token: None,
        }
    }

    /// READs of `lens` into one region, laid end to end.
    fn reads(lens: &[u64]) -> Vec<(WireOp, Arc<Region>)> {
        let region = Arc::new(Region::anonymous(lens.iter().sum::<u64>().max(1)).unwrap());
        let mut at = region.addr();
        lens.iter()
            .map(|&len| {
                let op = WireOp {
                    peer: "127.0.0.1:1".parse().unwrap(),
                    version: ProtoVersion::V2,
                    opcode: Opcode::Read,
                    local_addr: at,
                    remote_addr: 1 << 40,
                    len,
                };
                at += len;
                (op, region.clone())
            })
            .collect()
    }

    /// A connected pair: our `Conn` and the peer's blocking stream.
    fn pair() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (Conn::from(crate::conn::Sock::tcp(ours).unwrap()), theirs)
    }

    /// The peer's answers written in `chunk`-byte writes (pauses after the first ones, so
    /// that reads end inside frames and payloads), then `close` or not.
    fn answer(mut peer: std::net::TcpStream, bytes: Vec<u8>, chunk: usize, close: bool) {
        std::thread::spawn(move || {
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                peer.write_all(piece).unwrap();
                if i < 64 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            if !close {
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    }

    fn payload(len: u64, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn answers_read_together_fill_every_destination() {
        let lens = [5u64, 70_000, 3, 0, 9];
        for chunk in [1 << 20, 3, 4099] {
            let ops = reads(&lens);
            let (conn, peer) = pair();
            let mut wire = Vec::new();
            for (i, &len) in lens.iter().enumerate() {
                wire.extend(Status::Ok.encode());
                wire.extend(payload(len, i as u8));
            }
            answer(peer, wire, chunk, false);
            let deadline = Instant::now() + Duration::from_secs(5);
            let got = read_together(&[(&conn, &ops, deadline)], &config()).await;
            let (outcomes, reusable) = &got[0];
            assert!(
                outcomes.iter().all(|o| matches!(o, Some(Ok(())))),
                "{outcomes:?}"
            );
            assert!(reusable, "chunk {chunk}: every byte consumed, none beyond");
            for (i, (op, region)) in ops.iter().enumerate() {
                let want = payload(op.len, i as u8);
                assert_eq!(region.slice(op.local_addr, op.len as usize), &want[..]);
            }
        }
    }

    #[tokio::test]
    async fn a_refused_request_ends_the_stripe_with_its_own_error() {
        let ops = reads(&[4, 4, 4]);
        let (conn, peer) = pair();
        let mut wire = Status::Ok.encode().to_vec();
        wire.extend([1, 2, 3, 4]);
        wire.extend(Status::Rejected.encode());
        answer(peer, wire, 1 << 20, true);
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = read_together(&[(&conn, &ops, deadline)], &config()).await;
        let (outcomes, reusable) = &got[0];
        assert!(matches!(outcomes[0], Some(Ok(()))));
        assert!(matches!(
            outcomes[1],
            Some(Err(TransferError::Rejected { .. }))
        ));
        assert!(outcomes[2].is_none());
        assert!(!reusable);
    }
}
