//! The server side of the TCP data path: serves READ and WRITE requests inside the
//! engine's registered buffers, refuses everything else, never panics on bad frames.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::input::Input;
use super::MAX_IOV;
use mooncake_metadata::AuthToken;

use crate::codec::{Header, Opcode, ProtoVersion, Status, AUTH_ADDR, HEADER_LEN};
use crate::engine::SharedRegistry;

/// Accepts data connections until `shutdown` turns true; at most `max_connections` are
/// served at once (further peers wait in the accept backlog).
pub(crate) async fn serve(
    listener: TcpListener,
    registry: SharedRegistry,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
    auth_token: Option<AuthToken>,
) {
    let auth_token = auth_token.map(Arc::new);
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let registry = registry.clone();
                let token = auth_token.clone();
                conns.spawn(async move {
                    if let Err(e) = serve_connection(stream, &registry, token.as_deref()).await {
                        tracing::debug!(%peer, error = %e, "data connection closed");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the data listener");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    conns.shutdown().await;
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("truncated header ({0} of 24 bytes)")]
    TruncatedHeader(usize),
    #[error("refused {0:?}: not inside one registered buffer")]
    Refused(Header),
    #[error("authentication failed: the connection did not present the cluster's token")]
    Unauthenticated,
}

/// Reads a header; `Ok(None)` on a clean end of stream at a header boundary.
async fn read_header(input: &mut Input, stream: &TcpStream) -> Result<Option<Header>, ConnError> {
    while input.buffered().len() < HEADER_LEN {
        if input.fill(stream).await? == 0 {
            let got = input.buffered().len();
            return if got == 0 {
                Ok(None)
            } else {
                Err(ConnError::TruncatedHeader(got))
            };
        }
    }
    let mut buf = [0u8; HEADER_LEN];
    buf.copy_from_slice(&input.buffered()[..HEADER_LEN]);
    input.consume(HEADER_LEN);
    Ok(Some(Header::decode(&buf)))
}

/// Answers held back to leave in one vectored write (at most this many, or this many
/// payload bytes); they are flushed before the server would wait for more input.
const COALESCE_ANSWERS: usize = 64;
const COALESCE_BYTES: usize = 1 << 20;

/// One answer: an optional status frame and an optional READ payload.
struct Answer {
    status: bool,
    data: Option<(std::sync::Arc<crate::memory::Region>, u64, usize)>,
}

async fn flush(stream: &TcpStream, answers: &mut Vec<Answer>) -> std::io::Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let ok = Status::Ok.encode();
    let mut bufs: Vec<&[u8]> = Vec::with_capacity(2 * answers.len());
    for a in answers.iter() {
        if a.status {
            bufs.push(&ok);
        }
        if let Some((region, addr, len)) = &a.data {
            bufs.push(region.slice(*addr, *len));
        }
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    write_payload(stream, &mut bufs, per_write(total)).await?;
    answers.clear();
    Ok(())
}

/// Answers of at most this many bytes in all (a batch of small READs) leave in system
/// calls of at most [`SMALL_ANSWERS_PER_WRITE`] bytes.
const SMALL_ANSWERS: usize = 256 * 1024;
const SMALL_ANSWERS_PER_WRITE: usize = 64 * 1024;

/// Bytes one system call may write of answers `total` bytes long. A batch of small
/// answers written whole (128 KiB for 32 READs of 4 KiB) reached a client on another
/// host (veth between network namespaces, MTU 1500) as one burst of ~90 packets, and in
/// about half the runs some batches then waited 4-14 ms with both CPUs idle until
/// `ksoftirqd` processed the receive queue (`perf sched`); written 64 KiB at a time, as
/// Redis writes its replies, they do not (`te-netns.sh BINDIR read 4096 32`: 0.62-0.66
/// against 1.57-1.70 GB/s, five runs alternating). Larger answers keep whole writes:
/// capped at 64 KiB, 1 MiB and 16 MiB READs lost a fifth.
fn per_write(total: usize) -> usize {
    if total <= SMALL_ANSWERS {
        SMALL_ANSWERS_PER_WRITE
    } else {
        usize::MAX
    }
}

/// Writes every byte of `bufs` with direct non-blocking vectored system calls, polling for
/// up to the spin window (one poller per process, `conn::Spin`) whenever the socket is
/// full, before sleeping on the reactor: the mirror of [`read_payload`]. A large READ
/// answer leaves in many socket buffers' worth; sleeping between them cost a reactor
/// wake-up each, which held a 16 MiB read over loopback to two thirds of a write.
async fn write_payload(
    stream: &TcpStream,
    bufs: &mut [&[u8]],
    per_write: usize,
) -> std::io::Result<()> {
    use std::io::Write;
    let sock = socket2::SockRef::from(stream);
    let mut first = 0;
    let mut spin: Option<crate::conn::Spin> = None;
    while first < bufs.len() {
        if bufs[first].is_empty() {
            first += 1;
            continue;
        }
        let slices = write_slices(&bufs[first..], per_write);
        let step = poll_step(stream, Interest::WRITABLE, &mut spin, |via_tokio| {
            if via_tokio {
                stream.try_write_vectored(&slices)
            } else {
                (&*sock).write_vectored(&slices)
            }
        });
        match step.await? {
            Some(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Some(n) => first = crate::conn::advance(bufs, first, n),
            None => {}
        }
    }
    Ok(())
}

/// The slices of one vectored write: at most [`MAX_IOV`] of `bufs`, `per_write` bytes in
/// all (the last one cut short).
fn write_slices<'a>(bufs: &[&'a [u8]], per_write: usize) -> Vec<std::io::IoSlice<'a>> {
    let mut room = per_write;
    bufs.iter()
        .take(MAX_IOV)
        .map_while(|b| {
            let n = b.len().min(room);
            room -= n;
            (n > 0 || b.is_empty()).then(|| std::io::IoSlice::new(&b[..n]))
        })
        .collect()
}

/// One non-blocking system call of a polling transfer (`io(false)`: directly on the
/// socket). When the socket is not ready it polls for up to the spin window (one poller
/// per process, `conn::Spin`), then sleeps on the reactor once and tries again through
/// tokio (`io(true)`), which clears its readiness on `WouldBlock` so that the next wait
/// sleeps until the socket is ready. `Some(n)`: the call moved `n` bytes (and the next
/// stall may poll again); `None`: nothing moved yet, call again.
async fn poll_step(
    stream: &TcpStream,
    interest: Interest,
    spin: &mut Option<crate::conn::Spin>,
    mut io: impl FnMut(bool) -> std::io::Result<usize>,
) -> std::io::Result<Option<usize>> {
    let done = match io(false) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            if spin
                .get_or_insert_with(crate::conn::Spin::claim)
                .keep_polling()
            {
                return Ok(None);
            }
            stream.ready(interest).await?;
            io(true)
        }
        other => other,
    };
    match done {
        Ok(n) => {
            *spin = None;
            Ok(Some(n))
        }
        Err(e) if not_ready(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a non-blocking system call failed only because the socket was not ready.
pub(super) fn not_ready(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// Reads the token of an authentication request whose header was read.
async fn read_token(
    input: &mut Input,
    stream: &TcpStream,
    header: &Header,
) -> Result<Vec<u8>, ConnError> {
    let len = usize::try_from(header.size)
        .ok()
        .filter(|&n| n <= mooncake_metadata::MAX_TOKEN_LEN)
        .ok_or(ConnError::Unauthenticated)?;
    let mut token = vec![0u8; len];
    input.read_exact(stream, &mut token).await?;
    Ok(token)
}

/// Closes a connection gracefully after a refusal: FIN after the answers, then discard
/// what the client had already pipelined. Closing with unread input would send a reset,
/// which can destroy answers still in flight to the client.
async fn close_after_refusal<W>(input: &mut Input, stream: &TcpStream, wr: &mut W)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let _ = wr.shutdown().await;
    let drain = async {
        loop {
            let n = input.buffered().len();
            input.consume(n);
            if !matches!(input.fill(stream).await, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Fills `dst` with a WRITE's payload, reading the socket with direct non-blocking system
/// calls and polling for up to the spin window (one poller per process, `conn::Spin`)
/// whenever it runs dry, before sleeping on the reactor. A large payload arrives in many
/// socket buffers' worth; sleeping between them cost a reactor wake-up each (tens of
/// microseconds on a virtual machine), which bounded a 1 MiB write between hosts to half
/// the speed of a read, whose receiving client polls.
pub(super) async fn read_payload(stream: &TcpStream, dst: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    let sock = socket2::SockRef::from(stream);
    let mut got = 0;
    let mut spin: Option<crate::conn::Spin> = None;
    while got < dst.len() {
        let rest = &mut dst[got..];
        let step = poll_step(stream, Interest::READABLE, &mut spin, |via_tokio| {
            if via_tokio {
                stream.try_read(rest)
            } else {
                (&*sock).read(rest)
            }
        });
        match step.await? {
            Some(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Some(n) => got += n,
            None => {}
        }
    }
    Ok(())
}

async fn serve_connection(
    mut stream: TcpStream,
    registry: &SharedRegistry,
    auth_token: Option<&AuthToken>,
) -> Result<(), ConnError> {
    let (rd, mut wr) = stream.split();
    let s: &TcpStream = rd.as_ref();
    let mut input = Input::new();
    let mut answers: Vec<Answer> = Vec::new();
    let mut held = 0usize;
    let mut after_write = false;
    // With a token, nothing is served before the connection presents it.
    if let Some(token) = auth_token {
        let presented = match read_header(&mut input, s).await? {
            Some(h) if h.addr == AUTH_ADDR => Some(read_token(&mut input, s, &h).await?),
            Some(_) => None,
            None => return Ok(()),
        };
        if !presented.as_deref().is_some_and(|p| token.matches(p)) {
            let _ = wr.write_all(&Status::Unauthenticated.encode()).await;
            close_after_refusal(&mut input, s, &mut wr).await;
            return Err(ConnError::Unauthenticated);
        }
        wr.write_all(&Status::Ok.encode()).await?;
    }
    loop {
        // Answer before we could block on input: requests already here (buffered, or
        // waiting in the socket now) are served first and their answers leave together.
        // Only after a WRITE is more input likely on its way (a batch's payloads stream
        // in); READ headers arrive together, and asking again after them is a wasted
        // system call on every read.
        if input.buffered().len() < HEADER_LEN && !answers.is_empty() && after_write {
            input.try_fill(s)?;
        }
        if input.buffered().len() < HEADER_LEN
            || answers.len() >= COALESCE_ANSWERS
            || held >= COALESCE_BYTES
        {
            flush(s, &mut answers).await?;
            held = 0;
        }
        let Some(header) = read_header(&mut input, s).await? else {
            flush(s, &mut answers).await?;
            return Ok(());
        };
        if header.addr == AUTH_ADDR {
            // A token where none is needed (or a second one): read and accepted.
            read_token(&mut input, s, &header).await?;
            answers.push(Answer {
                status: true,
                data: None,
            });
            continue;
        }
        let v2 = header.version == ProtoVersion::V2;
        after_write = header.opcode == Opcode::Write;
        let region = registry
            .read()
            .find(header.addr, header.size)
            .map(|e| e.value.clone());
        let (Some(region), Ok(len)) = (region, usize::try_from(header.size)) else {
            flush(s, &mut answers).await?;
            if v2 {
                wr.write_all(&Status::Rejected.encode()).await?;
            }
            close_after_refusal(&mut input, s, &mut wr).await;
            return Err(ConnError::Refused(header));
        };
        match header.opcode {
            Opcode::Write => {
                #[allow(unsafe_code)]
                // SAFETY: one writer per range (the store protocol); the slice lives for this
                // WRITE's payload only.
                let dst = unsafe { region.slice_mut(header.addr, len) };
                input.saw_write(header.size);
                input.read_exact(s, dst).await?;
                if v2 {
                    answers.push(Answer {
                        status: true,
                        data: None,
                    });
                }
            }
            Opcode::Read => {
                held += len;
                answers.push(Answer {
                    status: v2,
                    data: Some((region, header.addr, len)),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{per_write, write_slices, MAX_IOV, SMALL_ANSWERS, SMALL_ANSWERS_PER_WRITE};

    #[test]
    fn a_batch_of_small_answers_leaves_64_kib_at_a_time_and_large_ones_whole() {
        assert_eq!(per_write(32 * (4096 + 24)), SMALL_ANSWERS_PER_WRITE);
        assert_eq!(per_write(SMALL_ANSWERS), SMALL_ANSWERS_PER_WRITE);
        assert_eq!(per_write(SMALL_ANSWERS + 1), usize::MAX);
        let status = [0u8; 24];
        let value = vec![1u8; 4096];
        let bufs: Vec<&[u8]> = (0..32).flat_map(|_| [&status[..], &value[..]]).collect();
        let first = write_slices(&bufs, SMALL_ANSWERS_PER_WRITE);
        let bytes: usize = first.iter().map(|s| s.len()).sum();
        assert_eq!(
            bytes, SMALL_ANSWERS_PER_WRITE,
            "the last slice is cut short"
        );
        assert_eq!(first.last().map(|s| s.len()), Some(65536 - 15 * 4120 - 24));
        let whole = write_slices(&bufs, usize::MAX);
        assert_eq!(whole.len(), 64.min(MAX_IOV));
        assert!(whole.iter().zip(&bufs).all(|(a, b)| a.len() == b.len()));
    }
}
