//! The server's read-ahead on one data connection: bytes read from the socket and not yet
//! consumed.
//!
//! Waiting for input goes through tokio (`Input::fill`), whose cached readiness spares an
//! idle connection a failing system call per wait. Asking "is more input here right now?"
//! (`Input::try_fill`) reads the socket directly instead, which never sleeps and does not
//! depend on tokio having seen the socket become readable: the answers of pipelined
//! requests then leave together only when nothing more is waiting.

use tokio::net::TcpStream;

/// Bytes read ahead at most: a batch of small WRITEs (32 values of 4 KiB and their
/// headers) arrives in one or two system calls instead of one per header (measured
/// between network namespaces: 4 KiB `put_batch[32]` 1.4x faster than with 32 KiB). The
/// start of a large WRITE's payload read this way is copied once more, from here into its
/// buffer, so after a large WRITE the reads take little ahead (`Input::saw_write`).
pub(super) const READ_AHEAD: usize = 256 * 1024;

/// Bytes read ahead after a large WRITE: enough for the next header, little of its
/// payload.
const AFTER_LARGE: usize = 4 * 1024;
/// WRITE payloads up to this size count as small.
const SMALL_PAYLOAD: u64 = 16 * 1024;

/// Read-ahead bytes `buf[start..end]`, read at most `window` at a time.
pub(super) struct Input {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// [`READ_AHEAD`] while WRITE payloads are small; [`AFTER_LARGE`] after a large one,
    /// whose successor's payload then lands in place instead of being copied from here.
    window: usize,
}

impl Input {
    pub(super) fn new() -> Self {
        Self {
            buf: vec![0u8; READ_AHEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            window: READ_AHEAD,
        }
    }

    /// A WRITE of `len` payload bytes arrived: sizes how much the next reads take ahead.
    pub(super) fn saw_write(&mut self, len: u64) {
        self.window = if len <= SMALL_PAYLOAD {
            READ_AHEAD
        } else {
            AFTER_LARGE
        };
    }

    /// The bytes read and not consumed.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks the first `n` buffered bytes consumed.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free space to read into, after moving a partial request to the front.
    fn space(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = (self.end + self.window).min(self.buf.len());
        &mut self.buf[self.end..end]
    }

    /// One non-blocking read: `Ok(true)` when bytes arrived, `Ok(false)` when none are
    /// waiting now (or the buffer is full); an end of stream reads as `false` too and is
    /// seen by the next [`Input::fill`].
    pub(super) fn try_fill(&mut self, stream: &TcpStream) -> std::io::Result<bool> {
        use std::io::Read;
        let sock = socket2::SockRef::from(stream);
        let space = self.space();
        if space.is_empty() {
            return Ok(false);
        }
        match (&*sock).read(space) {
            Ok(n) => {
                self.end += n;
                Ok(n > 0)
            }
            Err(e) if super::server::not_ready(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads more bytes, sleeping on the reactor when none are waiting; `Ok(0)` at the
    /// end of the stream (or with a full buffer, which a caller that consumes what it
    /// reads never has). Through tokio, whose cached readiness spares an idle connection
    /// a failing system call per wait. It does not poll: measured on two shared cores, a
    /// connection polling for its next request took the core from the transfers of the
    /// others (a 1 MiB write, striped over four connections, at half speed).
    pub(super) async fn fill(&mut self, stream: &TcpStream) -> std::io::Result<usize> {
        loop {
            let space = self.space();
            if space.is_empty() {
                return Ok(0);
            }
            match stream.try_read(space) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if super::server::not_ready(&e) => stream.readable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Fills `dst` from the buffered bytes first, then from the socket.
    pub(super) async fn read_exact(
        &mut self,
        stream: &TcpStream,
        dst: &mut [u8],
    ) -> std::io::Result<()> {
        let n = self.buffered().len().min(dst.len());
        dst[..n].copy_from_slice(&self.buffered()[..n]);
        self.consume(n);
        super::server::read_payload(stream, &mut dst[n..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consuming_everything_rewinds_and_a_full_buffer_compacts() {
        let mut i = Input::new();
        i.buf[..10].copy_from_slice(b"0123456789");
        i.end = 10;
        i.consume(4);
        assert_eq!(i.buffered(), b"456789");
        i.consume(100);
        assert_eq!((i.start, i.end), (0, 0));
        i.start = READ_AHEAD - 3;
        i.end = READ_AHEAD;
        i.buf[READ_AHEAD - 3..].copy_from_slice(b"abc");
        assert_eq!(i.space().len(), READ_AHEAD - 3);
        assert_eq!(i.buffered(), b"abc");
    }

    #[test]
    fn after_a_large_write_little_is_read_ahead() {
        let mut i = Input::new();
        assert_eq!(i.space().len(), READ_AHEAD);
        i.saw_write(1 << 20);
        assert_eq!(i.space().len(), AFTER_LARGE);
        i.end = 100;
        assert_eq!(i.space().len(), AFTER_LARGE);
        i.saw_write(4096);
        assert_eq!(i.space().len(), READ_AHEAD - 100);
    }
}
