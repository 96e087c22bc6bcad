//! Poll-friendly connections: the store's own small protocols (the master tunnel, the
//! standalone client's socket) and the TCP data path's small exchanges, read and written with direct non-blocking system calls so that a
//! caller waiting for an answer can poll for it instead of sleeping.
//!
//! Why: on a virtual machine whose idle core halts, waking a sleeping thread takes tens of
//! microseconds, which was most of a small call's latency. A caller polls its connection
//! for up to [`spin_window`] (one poller per process, yielding the core between polls),
//! then sleeps on the reactor as before.

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// A connection's socket (TCP, or a Unix socket on the same host), non-blocking and read
/// and written with direct system calls.
///
/// It is registered with the reactor only while a caller sleeps on it (`Sock::when_ready`)
/// and deregistered once it wakes. A socket left registered makes every arriving message
/// wake the runtime's driver thread (epoll reports each one), even while the caller is
/// polling for it itself: two thread wake-ups per call, on both ends, that took the cores
/// from the caller and the master. (For the same reason the reads do not go through a
/// tokio stream: its `try_read` skips the system call until the reactor has seen the
/// socket become readable, which defeats polling.)
#[derive(Debug)]
pub enum Sock {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix-socket connection (same host).
    Unix(std::os::unix::net::UnixStream),
}

impl Sock {
    /// A TCP socket, made non-blocking.
    pub fn tcp(s: std::net::TcpStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(Sock::Tcp(s))
    }

    /// A Unix socket, made non-blocking.
    pub fn unix(s: std::os::unix::net::UnixStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(Sock::Unix(s))
    }

    /// A non-blocking read system call.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }

    /// A non-blocking vectored read system call.
    fn read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Sock::Tcp(s) => (&*s).read_vectored(bufs),
            Sock::Unix(s) => (&*s).read_vectored(bufs),
        }
    }

    /// A non-blocking vectored write system call.
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Sock::Tcp(s) => (&*s).write_vectored(bufs),
            Sock::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    /// A non-blocking write system call.
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    /// Registers the socket with the reactor (a second descriptor of it, closed again on
    /// return, which ends the registration), sleeps until it is ready for `interest`, then
    /// runs `op` (a non-blocking system call), again after each `WouldBlock`; gives up with
    /// `TimedOut` at `deadline`. Readiness that came before the registration is not lost:
    /// registering reports the socket's current state. Only this path arms a timer:
    /// registering one from a thread that is not the runtime's driver wakes the driver, a
    /// thread hop per call.
    async fn when_ready<R>(
        &self,
        interest: Interest,
        op: impl FnMut() -> io::Result<R>,
        deadline: Option<Instant>,
    ) -> io::Result<R> {
        let ready = async {
            match self {
                Sock::Tcp(s) => {
                    TcpStream::from_std(s.try_clone()?)?
                        .async_io(interest, op)
                        .await
                }
                Sock::Unix(s) => {
                    UnixStream::from_std(s.try_clone()?)?
                        .async_io(interest, op)
                        .await
                }
            }
        };
        match deadline {
            None => ready.await,
            Some(d) => tokio::time::timeout_at(d, ready).await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer before the deadline",
                ))
            }),
        }
    }
}

/// Consumes `n` written bytes from `bufs[first..]`; the index of the first buffer with
/// bytes left.
pub(crate) fn advance(bufs: &mut [&[u8]], mut first: usize, mut n: usize) -> usize {
    while n > 0 && first < bufs.len() {
        let take = n.min(bufs[first].len());
        bufs[first] = &bufs[first][take..];
        n -= take;
        if bufs[first].is_empty() {
            first += 1;
        }
    }
    first
}

/// How long a caller polls its connection for the answer (and the master for a
/// connection's next request) before sleeping until the reactor wakes it: the process's
/// [`Tunables::rpc_spin`](crate::Tunables::rpc_spin) (150 µs unless the edge set
/// `MC_RPC_SPIN_US`; 0 turns polling off). A master on this host or the next rack answers
/// within this; polling saves a thread wake-up (tens of microseconds on a virtual machine
/// whose idle core halts), which is most of a small call's latency.
pub fn spin_window() -> Duration {
    crate::Tunables::current().rpc_spin
}

/// A yield that keeps a poller off its core this long means other threads want the cores:
/// the poller stops polling and sleeps.
const CONTENDED: Duration = Duration::from_micros(50);

/// Whether this thread may hold its core while it polls: not on a single-threaded runtime,
/// where the task that would answer (an in-process master, say) could never run meanwhile.
fn may_poll_here() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Whether a server's requests lately came on one connection or on several
/// ([`Conn::next_request`]). A server that serves one client at a time polls for its next
/// request at once; one whose requests come on several connections keeps the yield: its
/// workers run other connections' requests meanwhile (`master_bench --concurrency=8`:
/// polling at once there cost 10-40% of its calls per second).
#[derive(Debug)]
struct Requests {
    /// The connection of the last request (its socket's address).
    last: std::sync::atomic::AtomicUsize,
    /// Until when (µs since [`now_us`]'s epoch) requests count as coming on several
    /// connections: [`Requests::MIXED_FOR`] after two in a row came on different ones.
    mixed_until: std::sync::atomic::AtomicU64,
}

impl Requests {
    const MIXED_FOR: Duration = Duration::from_millis(2);

    const fn new() -> Self {
        Self {
            last: std::sync::atomic::AtomicUsize::new(0),
            mixed_until: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A request came on connection `conn`; `now` (µs) is asked only when the connection
    /// changed.
    fn came(&self, conn: usize, now: impl FnOnce() -> u64) {
        if self.last.swap(conn, Ordering::Relaxed) != conn {
            let until = now() + Self::MIXED_FOR.as_micros() as u64;
            self.mixed_until.store(until, Ordering::Relaxed);
        }
    }

    /// Whether the requests up to `now` (µs) came on one connection lately.
    fn alone(&self, now: u64) -> bool {
        now >= self.mixed_until.load(Ordering::Relaxed)
    }
}

/// This process's server requests.
static REQUESTS: Requests = Requests::new();

/// Microseconds since the first call, for [`Requests`].
fn now_us() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Whether a worker thread of the current runtime is parked (idle): tokio's count of a
/// worker's parks and unparks is odd while it is parked.
fn an_idle_worker() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        let m = h.metrics();
        (0..m.num_workers()).any(|i| m.worker_park_unpark_count(i) % 2 == 1)
    })
}

/// At most one caller per process polls at a time, so callers never take every core.
static SPINNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Permission to poll a socket for up to [`spin_window`]: at most one holder per process
/// and permission flag (so pollers never take every core), none on a single-threaded
/// runtime, and given up early when a yield shows that other threads want the core.
/// Released when dropped.
pub struct Spin {
    /// Until when this holder may poll; `None` once it may not (or never could).
    until: Option<std::time::Instant>,
    /// The permission it holds while `until` is set.
    flag: &'static std::sync::atomic::AtomicBool,
}

impl Spin {
    /// Claims the process's polling permission (the data and RPC paths') if it is free.
    pub fn claim() -> Self {
        Self::claim_from(&SPINNING)
    }

    /// Claims the polling permission `flag` if it is free: a component whose polling
    /// should not wait for the data path's (the master's replication acknowledgements,
    /// say) keeps a flag of its own, still one poller per flag.
    pub fn claim_from(flag: &'static std::sync::atomic::AtomicBool) -> Self {
        let mine =
            !spin_window().is_zero() && may_poll_here() && !flag.swap(true, Ordering::Acquire);
        Self {
            until: mine.then(|| std::time::Instant::now() + spin_window()),
            flag,
        }
    }

    /// Whether to poll once more (after yielding the core) instead of sleeping; once it
    /// says no, it says no for good and the permission is released.
    pub fn keep_polling(&mut self) -> bool {
        let Some(until) = self.until else {
            return false;
        };
        let before = std::time::Instant::now();
        if before < until {
            std::thread::yield_now();
            // A yield that took long let other work run: the cores are busy, and polling
            // would only take time from whoever has to answer.
            if before.elapsed() < CONTENDED {
                return true;
            }
        }
        self.release();
        false
    }

    /// Whether this holder may still poll.
    fn is_polling(&self) -> bool {
        self.until.is_some()
    }

    fn release(&mut self) {
        if self.until.take().is_some() {
            self.flag.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        self.release();
    }
}

/// What a read does the first time its answer is not there yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstWait {
    /// Yields once (to the task's other futures and the worker's other tasks), then polls.
    Yield,
    /// Polls at once.
    Poll,
    /// A server's read of its next request: polls at once if the last requests all came on
    /// one connection ([`Requests`]), a worker of the runtime is idle (a yield would wake it: an
    /// `eventfd` write and a thread wake-up) and it gets the permission to poll; else as
    /// `Yield`.
    YieldIfBusy,
}

/// One tunnel connection of the client. Reads and writes are direct non-blocking system
/// calls, so a caller can poll for its answer; the reactor is used only to sleep.
#[derive(Debug)]
pub struct Conn {
    sock: Sock,
}

impl From<Sock> for Conn {
    fn from(sock: Sock) -> Self {
        Self { sock }
    }
}

impl Conn {
    /// An accepted TCP connection (taken off the reactor).
    pub fn tcp(stream: TcpStream) -> io::Result<Self> {
        Sock::tcp(stream.into_std()?).map(Self::from)
    }

    /// An accepted Unix-socket connection (taken off the reactor).
    pub fn unix(stream: UnixStream) -> io::Result<Self> {
        Sock::unix(stream.into_std()?).map(Self::from)
    }

    /// Whether the connection is a Unix socket (a peer on this host).
    pub fn is_local(&self) -> bool {
        matches!(self.sock, Sock::Unix(_))
    }

    /// Whether an idle connection is still open: nothing may be waiting on it, so pending
    /// input (an end of stream, a reset) means the master closed it.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.sock.read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes every byte of `buf` (sleeping on the reactor while the socket is full).
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.write_all_until(buf, None).await
    }

    /// [`Conn::write_all`], failing with `TimedOut` if it has to wait past `deadline`.
    pub async fn write_all_until(
        &self,
        mut buf: &[u8],
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        while !buf.is_empty() {
            let n = match self.sock.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sock
                        .when_ready(Interest::WRITABLE, || self.sock.write(buf), deadline)
                        .await
                }
                other => other,
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes every byte of `bufs` with vectored writes (sleeping on the reactor while the
    /// socket is full), failing with `TimedOut` if it has to wait past `deadline`.
    pub async fn write_all_vectored_until(
        &self,
        bufs: &mut [&[u8]],
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        let mut first = 0;
        while first < bufs.len() {
            if bufs[first].is_empty() {
                first += 1;
                continue;
            }
            let slices: Vec<IoSlice<'_>> = bufs[first..].iter().map(|b| IoSlice::new(b)).collect();
            let n = match self.sock.write_vectored(&slices) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sock
                        .when_ready(
                            Interest::WRITABLE,
                            || self.sock.write_vectored(&slices),
                            deadline,
                        )
                        .await
                }
                other => other,
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => first = advance(bufs, first, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One non-blocking read system call: `WouldBlock` when nothing has arrived, `Ok(0)`
    /// at the end of the stream.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }

    /// One non-blocking vectored read system call (filling `bufs` in order): the count
    /// read, `WouldBlock` when nothing has arrived, `Ok(0)` at the end of the stream.
    pub fn try_read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        self.sock.read_vectored(bufs)
    }

    /// One non-blocking vectored write system call: the count written, or `WouldBlock`
    /// when the socket's buffer is full.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(bufs)
    }

    /// Sleeps until the connection can take more output, failing with `TimedOut` if that
    /// takes past `deadline`.
    pub async fn writable_until(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.sock
            .when_ready(Interest::WRITABLE, || Ok(()), deadline)
            .await
    }

    /// Sleeps until the connection has input (or its end), failing with `TimedOut` if that
    /// takes past `deadline`.
    pub async fn readable_until(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.sock
            .when_ready(Interest::READABLE, || Ok(()), deadline)
            .await
    }

    /// Fills `buf`, polling for up to [`spin_window`] (if no other caller is) before sleeping.
    pub async fn read_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_until(buf, None).await
    }

    /// [`Conn::read_exact`], failing with `TimedOut` if it has to wait past `deadline`.
    pub async fn read_exact_until(
        &self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        self.read_at_least(buf, buf.len(), deadline, FirstWait::Yield)
            .await
            .map(drop)
    }

    /// Reads what is there (at least one byte) into `buf`, polling and then sleeping as
    /// [`Conn::read_exact`] does; returns the count. An end of stream is `UnexpectedEof`.
    pub async fn read_some_until(
        &self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        // No yield here: this reads an exchange's answers chunk by chunk, and its request
        // left long before (see `read_at_least`).
        self.read_at_least(buf, 1.min(buf.len()), deadline, FirstWait::Poll)
            .await
    }

    /// Reads into `buf` until at least `min` bytes arrived; returns how many did. `first`
    /// says what the task does the first time the answer is not there yet.
    async fn read_at_least(
        &self,
        buf: &mut [u8],
        min: usize,
        deadline: Option<Instant>,
        first: FirstWait,
    ) -> io::Result<usize> {
        let mut got = 0;
        let mut spin: Option<Spin> = None;
        let mut yielded = first == FirstWait::Poll;
        let mut result = Ok(());
        while got < min {
            let mut r = self.sock.read(&mut buf[got..]);
            if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) && !yielded {
                // Once, before polling: let the task's other futures run, so that a read
                // started beside this call (`tokio::join!`, a speculative read beside a
                // master call) sends its own request now instead of after this answer,
                // and this worker's other tasks (a busy server's next request is often
                // there by then). A server that may poll skips it while a worker is idle:
                // the yield would wake that worker for nothing.
                yielded = true;
                if first == FirstWait::YieldIfBusy && REQUESTS.alone(now_us()) && an_idle_worker() {
                    let claimed = Spin::claim();
                    if claimed.is_polling() {
                        spin = Some(claimed);
                    }
                }
                if spin.is_none() {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                if spin.get_or_insert_with(Spin::claim).keep_polling() {
                    continue;
                }
                let rest = &mut buf[got..];
                r = self
                    .sock
                    .when_ready(Interest::READABLE, || self.sock.read(rest), deadline)
                    .await;
            }
            match r {
                Ok(0) => {
                    result = Err(io::ErrorKind::UnexpectedEof.into());
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        result.map(|()| got)
    }

    /// Reads one frame: a little-endian `u32` length, then that many bytes (at most `max`).
    pub async fn read_frame(&self, max: usize) -> io::Result<Bytes> {
        self.read_frame_until(max, None).await
    }

    /// [`Conn::read_frame`], failing with `TimedOut` if it has to wait past `deadline`.
    pub async fn read_frame_until(
        &self,
        max: usize,
        deadline: Option<Instant>,
    ) -> io::Result<Bytes> {
        self.frame(max, deadline, FirstWait::Yield).await
    }

    /// Reads a server's next request frame (as [`Conn::read_frame`]). A caller's read
    /// yields to its task's other futures first (a read started beside a master call sends
    /// its request); a server's connection task has none, and while another worker of a
    /// multi-threaded runtime is idle, that yield wakes it (an `eventfd` write and a thread
    /// wake-up per request, for nothing to do), so a server that may poll polls at once
    /// then. Otherwise it still yields first: that lets the worker's other connections
    /// run, and by then the next request is often there (a connection that has to sleep
    /// costs more).
    pub async fn next_request(&self, max: usize) -> io::Result<Bytes> {
        self.frame(max, None, FirstWait::YieldIfBusy).await
    }

    async fn frame(
        &self,
        max: usize,
        deadline: Option<Instant>,
        first: FirstWait,
    ) -> io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.read_at_least(&mut len, 4, deadline, first).await?;
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is over the {max} limit"),
            ));
        }
        let mut buf = vec![0; len];
        self.read_at_least(&mut buf, len, deadline, first).await?;
        if first == FirstWait::YieldIfBusy {
            REQUESTS.came(std::ptr::from_ref(&self.sock) as usize, now_us);
        }
        Ok(buf.into())
    }

    /// Writes one frame: `body`'s length as a little-endian `u32`, then `body`.
    pub async fn write_frame(&self, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        self.write_all(&out).await
    }
}

#[cfg(test)]
mod tests {
    use super::{may_poll_here, Conn, Sock};

    /// The inode of the socket behind descriptor `fd` (`socket:[N]`).
    fn socket_inode(fd: std::os::fd::RawFd) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let link = link.to_string_lossy();
        link.trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap()
    }

    /// Whether any epoll instance of this process watches the socket with inode `ino`.
    fn on_a_reactor(ino: u64) -> bool {
        let needle = format!("ino:{ino:x} ");
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|e| {
                let is_epoll = std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("eventpoll"));
                let info = format!("/proc/self/fdinfo/{}", e.file_name().to_string_lossy());
                is_epoll && std::fs::read_to_string(info).is_ok_and(|i| i.contains(&needle))
            })
    }

    /// A multi-threaded runtime of two workers, with I/O and timers.
    fn two_workers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_socket_is_on_the_reactor_only_while_a_caller_sleeps_on_it() {
        use std::os::fd::AsRawFd;
        let rt = two_workers();
        rt.block_on(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let ino = socket_inode(a.as_raw_fd());
            let (a, b) = (
                Conn::from(Sock::unix(a).unwrap()),
                Conn::from(Sock::unix(b).unwrap()),
            );
            // An answer that is already there: read without the reactor.
            b.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            assert!(!on_a_reactor(ino), "a polled socket must not be registered");
            // A reader that has to sleep (the answer comes long after any polling window).
            let reader = tokio::spawn(async move {
                let mut buf = [0u8; 4];
                a.read_exact(&mut buf).await.map(|_| buf)
            });
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(on_a_reactor(ino), "a sleeping reader waits on the reactor");
            b.write_all(b"pong").await.unwrap();
            assert_eq!(&reader.await.unwrap().unwrap(), b"pong");
            assert!(
                !on_a_reactor(ino),
                "the registration ends when the reader wakes"
            );
        });
    }

    #[test]
    fn a_server_is_alone_once_its_requests_came_on_one_connection_for_a_while() {
        let r = super::Requests::new();
        let window = super::Requests::MIXED_FOR.as_micros() as u64;
        r.came(1, || 1_000);
        assert!(!r.alone(1_000), "a first connection counts as a change");
        assert!(r.alone(1_000 + window));
        r.came(1, || 5_000);
        assert!(r.alone(5_000), "the same connection again");
        r.came(2, || 6_000);
        assert!(!r.alone(6_000), "another connection's request");
        r.came(1, || 6_100);
        assert!(!r.alone(6_100 + window - 1), "still within the window");
        assert!(r.alone(6_100 + window));
    }

    #[test]
    fn an_idle_worker_is_seen_from_a_busy_one() {
        assert!(!super::an_idle_worker(), "outside any runtime");
        let rt = two_workers();
        let seen = rt.block_on(async {
            tokio::spawn(async {
                // The other worker has long parked by now; this one is running this task.
                std::thread::sleep(std::time::Duration::from_millis(50));
                super::an_idle_worker()
            })
            .await
            .unwrap()
        });
        assert!(seen);
    }

    #[test]
    fn a_server_reads_requests_whole_and_refuses_oversized_ones() {
        let rt = two_workers();
        rt.block_on(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let (server, client) = (
                Conn::from(Sock::unix(a).unwrap()),
                Conn::from(Sock::unix(b).unwrap()),
            );
            // A request that arrives while the server waits for it, then one already there.
            let reader = tokio::spawn(async move {
                let first = server.next_request(16).await.unwrap();
                let second = server.next_request(16).await.unwrap();
                let over = server.next_request(16).await.unwrap_err();
                (first, second, over)
            });
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            client.write_frame(b"get k1").await.unwrap();
            client.write_frame(b"").await.unwrap();
            client.write_frame(&[7u8; 17]).await.unwrap();
            let (first, second, over) = reader.await.unwrap();
            assert_eq!(&first[..], b"get k1");
            assert!(second.is_empty());
            assert_eq!(over.kind(), std::io::ErrorKind::InvalidData);
            assert!(
                over.to_string().contains("17 bytes is over the 16 limit"),
                "{over}"
            );
        });
    }

    #[test]
    fn polling_only_where_the_answer_can_come_meanwhile() {
        assert!(!may_poll_here(), "outside any runtime");
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!single.block_on(async { may_poll_here() }), "one thread");
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        assert!(multi.block_on(async { may_poll_here() }), "worker threads");
    }
}
