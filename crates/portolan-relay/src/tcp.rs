//! One TCP connection relayed both ways.
//!
//! Each direction moves bytes socket -> pipe -> socket with splice(2), so they never enter
//! user space (zero copy); a pipe pair per direction comes from a small pool and goes back
//! to it empty. Where the kernel refuses splice (EINVAL: a socket type without
//! splice_read), or no descriptor is left for a pipe (EMFILE, ENFILE), a direction falls back
//! to read/write through a buffer allocated at its first byte; `no_splice` copies from the
//! start (for comparison).
//!
//! Half-close is passed on: EOF read from one side becomes `shutdown(SHUT_WR)` on the other
//! once the pipe is empty, and the other direction goes on until its own EOF. An error on
//! either side ends both, with a reset (SO_LINGER 0), so neither peer waits for a FIN
//! that cannot come. A peer that never reads holds at most one pipe's worth (64 KiB) of our
//! memory per direction, then TCP's own flow control stops its counterpart.
//!
//! Readiness and splice: tokio's `try_io` clears a socket's readiness when the closure
//! says WouldBlock. A splice into a pipe can say EAGAIN because the *pipe* is full (its 16
//! slots hold small segments long before 64 KiB), which must not clear the socket's
//! readiness (the edge would be lost and the direction hang). So the socket's readiness is
//! consulted only when the pipe is empty (then EAGAIN is the socket's); with bytes in the
//! pipe we splice directly and drain on EAGAIN.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked of one splice into the pipe: the pipe's default capacity.
const PIPE_CHUNK: usize = 64 * 1024;
/// Empty pipes kept for the next connections.
const POOL_MAX: usize = 128;
/// The copy fallback's buffer (allocated at a direction's first byte).
const COPY_BUF: usize = 64 * 1024;

static POOL: Mutex<Vec<(OwnedFd, OwnedFd)>> = Mutex::new(Vec::new());

/// A pipe (read end, write end) from the pool, or a new one.
fn take_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    if let Some(p) = POOL.lock().ok().and_then(|mut v| v.pop()) {
        return Ok(p);
    }
    pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).map_err(io::Error::from)
}

/// Gives an empty pipe back to the pool (a pipe with bytes left in it is closed instead).
fn give_pipe(p: (OwnedFd, OwnedFd)) {
    if let Ok(mut v) = POOL.lock() {
        if v.len() < POOL_MAX {
            v.push(p);
        }
    }
}

/// Closes the pipes the pool keeps (when descriptors run out, sockets need them more);
/// how many it kept.
pub(crate) fn drop_pooled_pipes() -> usize {
    POOL.lock().map_or(0, |mut v| v.drain(..).count())
}

/// How a relayed connection ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bytes from the client to the target.
    pub up: u64,
    /// Bytes from the target to the client.
    pub down: u64,
    /// Closed by the idle timeout.
    pub idle: bool,
    /// The error that ended it, if one did (the other side was reset).
    pub error: Option<io::Error>,
}

/// Settings of one relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    pub idle_timeout: Option<Duration>,
    pub splice: bool,
}

/// Milliseconds since `epoch`, as a last-activity mark shared by both directions.
fn mark(epoch: Instant, last: &AtomicU64) {
    let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    last.store(ms, Ordering::Relaxed);
}

/// Counters a direction adds to as bytes cross (the rule's, live).
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    pub up: &'a AtomicU64,
    pub down: &'a AtomicU64,
}

/// Resets both sockets if dropped armed: a relay cut before its end (its task dropped, as
/// when the drain gives up) must not pass for a clean close to either peer.
struct ResetIfCut<'a>(&'a TcpStream, &'a TcpStream, bool);

impl Drop for ResetIfCut<'_> {
    fn drop(&mut self) {
        if self.2 {
            reset(self.0);
            reset(self.1);
        }
    }
}

/// Relays `client` <-> `target` until both directions have ended, an error, or the idle
/// timeout. Both sockets are closed when it returns (reset after an error or a timeout),
/// or when it is dropped before the end (reset).
pub async fn relay(
    client: TcpStream,
    target: TcpStream,
    opts: RelayOptions,
    counters: Counters<'_>,
) -> Outcome {
    let mut cut = ResetIfCut(&client, &target, true);
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let (up_n, down_n) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(
        &client,
        &target,
        opts.splice,
        counters.up,
        &up_n,
        epoch,
        &last,
    );
    let down = pump(
        &target,
        &client,
        opts.splice,
        counters.down,
        &down_n,
        epoch,
        &last,
    );
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let mut outcome = Outcome::default();
    while !(up_done && down_done) {
        let idle_at = opts.idle_timeout.map(|t| {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            tokio::time::Instant::from_std(epoch + since + t)
        });
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => { outcome.error = Some(e); break; }
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => { outcome.error = Some(e); break; }
            },
            () = sleep_until(idle_at), if idle_at.is_some() => {
                let t = opts.idle_timeout.unwrap_or_default();
                let since = Duration::from_millis(last.load(Ordering::Relaxed));
                if epoch.elapsed() >= since + t {
                    outcome.idle = true;
                    break;
                }
            }
        }
    }
    outcome.up = up_n.load(Ordering::Relaxed);
    outcome.down = down_n.load(Ordering::Relaxed);
    cut.2 = outcome.error.is_some() || outcome.idle;
    outcome
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Makes the next close send a reset (SO_LINGER 0).
pub fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// One direction: `src` -> `dst` until EOF (then half-close `dst`) or an error.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    use_splice: bool,
    counter: &AtomicU64,
    moved: &AtomicU64,
    epoch: Instant,
    last: &AtomicU64,
) -> io::Result<()> {
    if use_splice {
        match pump_splice(src, dst, counter, moved, epoch, last).await {
            Err(e) if copy_instead(&e) && moved.load(Ordering::Relaxed) == 0 => {}
            r => return r,
        }
    }
    pump_copy(src, dst, counter, moved, epoch, last).await
}

/// Whether a direction that failed to splice before its first byte copies instead: the
/// kernel refused splice (EINVAL), or no descriptor was left for the pipe (EMFILE,
/// ENFILE: a connection is not reset for the lack of an optimisation).
fn copy_instead(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::INVAL, Errno::MFILE, Errno::NFILE]
        .iter()
        .any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}

fn is_shortage(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let n = e.raw_os_error();
    [Errno::MFILE, Errno::NFILE, Errno::NOMEM]
        .iter()
        .any(|x| Some(x.raw_os_error()) == n)
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

async fn pump_splice(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &AtomicU64,
    moved: &AtomicU64,
    epoch: Instant,
    last: &AtomicU64,
) -> io::Result<()> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    // A pipe is held only while bytes move: taken from the pool when the socket turns
    // readable, given back empty when it has nothing more, so idle connections hold none.
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    let mut in_pipe = 0usize;
    let mut eof = false;
    loop {
        if !eof {
            if pipe.is_none() {
                src.readable().await?;
                match take_pipe() {
                    Ok(p) => pipe = Some(p),
                    // Out of descriptors or memory for a pipe: this direction copies
                    // instead (nothing is in flight: the pipe was empty), rather than
                    // resetting an established connection.
                    Err(e) if is_shortage(&e) => {
                        return pump_copy(src, dst, counter, moved, epoch, last).await
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some((_, pw)) = &pipe else { continue };
            let fill =
                || splice(src.as_fd(), None, pw, None, PIPE_CHUNK, flags).map_err(io::Error::from);
            let r = if in_pipe == 0 {
                src.try_io(Interest::READABLE, fill)
            } else {
                fill()
            };
            match r {
                Ok(0) => eof = true,
                Ok(n) => {
                    in_pipe += n;
                    mark(epoch, last);
                }
                Err(e) if would_block(&e) => {
                    if in_pipe == 0 {
                        // Nothing to read (its readiness is cleared): idle until it is.
                        if let Some(p) = pipe.take() {
                            give_pipe(p);
                        }
                        continue;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some((pr, _)) = &pipe {
            while in_pipe > 0 {
                match dst.try_io(Interest::WRITABLE, || {
                    splice(pr, None, dst.as_fd(), None, in_pipe, flags).map_err(io::Error::from)
                }) {
                    Ok(n) => {
                        in_pipe -= n;
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        mark(epoch, last);
                    }
                    Err(e) if would_block(&e) => dst.writable().await?,
                    Err(e) => return Err(e),
                }
            }
        }
        if eof {
            let _ = SockRef::from(dst).shutdown(Shutdown::Write);
            if let Some(p) = pipe.take() {
                give_pipe(p);
            }
            return Ok(());
        }
    }
}

/// Copy buffers kept for the next direction that has bytes (64 KiB each).
const BUF_POOL_MAX: usize = 64;
static BUF_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_buf() -> Vec<u8> {
    BUF_POOL
        .lock()
        .ok()
        .and_then(|mut v| v.pop())
        .unwrap_or_else(|| vec![0u8; COPY_BUF])
}

fn give_buf(b: Vec<u8>) {
    if let Ok(mut v) = BUF_POOL.lock() {
        if v.len() < BUF_POOL_MAX {
            v.push(b);
        }
    }
}

async fn pump_copy(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &AtomicU64,
    moved: &AtomicU64,
    epoch: Instant,
    last: &AtomicU64,
) -> io::Result<()> {
    // As with pipes: a buffer only while bytes move, so idle connections hold none.
    let mut held: Option<Vec<u8>> = None;
    loop {
        if held.is_none() {
            src.readable().await?;
            held = Some(take_buf());
        }
        let Some(buf) = &mut held else { continue };
        let n = match src.try_read(buf) {
            Ok(n) => n,
            Err(e) if would_block(&e) => {
                if let Some(b) = held.take() {
                    give_buf(b);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            let _ = SockRef::from(dst).shutdown(Shutdown::Write);
            if let Some(b) = held.take() {
                give_buf(b);
            }
            return Ok(());
        }
        mark(epoch, last);
        let mut off = 0;
        while off < n {
            match dst.try_write(&buf[off..n]) {
                Ok(w) => {
                    off += w;
                    moved.fetch_add(w as u64, Ordering::Relaxed);
                    counter.fetch_add(w as u64, Ordering::Relaxed);
                    mark(epoch, last);
                }
                Err(e) if would_block(&e) => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
}
