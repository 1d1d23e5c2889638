//! Moving bytes between two TCP sockets, each direction on its own, with its own
//! backpressure: a direction waits only for its own reader, so a stalled peer never slows
//! another connection. End of stream becomes `shutdown(SHUT_WR)` on the other side
//! (half-close passes through).
//!
//! Small exchanges (requests, replies, end of stream) are copied with `recv`/`send`
//! through one buffer per thread: three syscalls, where a pipe costs six and two more
//! files. A read that fills the buffer switches the direction to `splice` through a pipe
//! (the data never enters user space) until it is drained again.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// A tokio stream socket the relay can splice: TCP, or a unix socket to an upstream.
pub trait Socket: AsRawFd + std::os::fd::AsFd + Sync {
    fn wait(&self, interest: Interest) -> impl Future<Output = io::Result<()>> + Send;
    fn attempt<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            async fn wait(&self, interest: Interest) -> io::Result<()> {
                self.ready(interest).await.map(|_| ())
            }

            fn attempt<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                self.try_io(interest, f)
            }
        }
    };
}

socket!(TcpStream);
socket!(UnixStream);

/// Bytes moved per splice call; also the pipe's capacity (the kernel default).
const CHUNK: usize = 64 * 1024;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        Ok(Self { r, w })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain splice(2) between two fds this process owns; null offsets (sockets and
    // pipes have none).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

thread_local! {
    /// The copy buffer of small exchanges: used only between a `recv` and the `send` right
    /// after it, never across an await, so one per thread serves every connection.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
}

/// What one small copy did.
enum Copied {
    /// End of stream from `from`.
    End,
    /// All of a read went out; `full` when the read filled the buffer (bulk is coming).
    Sent { full: bool },
    /// Part of a read is still to be written (the reader is slow).
    Rest(Vec<u8>, bool),
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable buffer of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable buffer of its length.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `recv` from `from` and, at once, a `send` of what came to `to`.
fn copy_small(from: &impl Socket, to: &impl Socket, count: &AtomicU64) -> io::Result<Copied> {
    from.attempt(Interest::READABLE, || {
        BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            let n = recv(from.as_raw_fd(), &mut b)?;
            if n == 0 {
                return Ok(Copied::End);
            }
            let sent = match to.attempt(Interest::WRITABLE, || send(to.as_raw_fd(), &b[..n])) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            count.fetch_add(sent as u64, Ordering::Relaxed);
            let full = n == b.len();
            Ok(if sent == n {
                Copied::Sent { full }
            } else {
                Copied::Rest(b[sent..n].to_vec(), full)
            })
        })
    })
}

/// Writes all of `rest` to `to`, waiting for it to take more.
async fn write_rest(to: &impl Socket, mut rest: &[u8], count: &AtomicU64) -> io::Result<()> {
    while !rest.is_empty() {
        to.wait(Interest::WRITABLE).await?;
        match to.attempt(Interest::WRITABLE, || send(to.as_raw_fd(), rest)) {
            Ok(m) => {
                rest = &rest[m..];
                count.fetch_add(m as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn shut_write(to: &impl Socket) -> io::Result<()> {
    nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .or_else(|e| {
            if e == nix::Error::ENOTCONN {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(io::Error::from)
}

/// Copies `from` to `to` until end of stream, then shuts `to` down for writing. A pipe
/// exists only while bulk data moves: made after a full read, given back once drained.
async fn pump(from: &impl Socket, to: &impl Socket, count: &AtomicU64) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    let mut bulk = false;
    loop {
        from.wait(Interest::READABLE).await?;
        if !bulk {
            match copy_small(from, to, count) {
                Ok(Copied::End) => return shut_write(to),
                Ok(Copied::Sent { full }) => bulk = full,
                Ok(Copied::Rest(rest, full)) => {
                    write_rest(to, &rest, count).await?;
                    bulk = full;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if pipe.is_none() {
            pipe = Some(Pipe::new()?);
        }
        let Some(p) = pipe.as_ref() else {
            continue;
        };
        let n = match from.attempt(Interest::READABLE, || {
            splice(from.as_raw_fd(), p.w.as_raw_fd(), CHUNK)
        }) {
            Ok(0) => return shut_write(to),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Drained: an idle connection gives its pipe back (two fds and a ring),
                // so thousands of idle connections cost two sockets each.
                pipe = None;
                bulk = false;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.wait(Interest::WRITABLE).await?;
            match to.attempt(Interest::WRITABLE, || {
                splice(p.r.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(m) => {
                    left -= m;
                    count.fetch_add(m as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Relays `inside` ⇄ `outside` until both directions ended. An error in one direction
/// (a reset) ends both, and both sockets are then closed with a reset too: a reset passes
/// through, and the daemon's side keeps no TIME_WAIT socket for it.
pub async fn relay(
    inside: &TcpStream,
    outside: &impl Socket,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> io::Result<()> {
    let kill = || {
        let abort = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        for fd in [inside.as_raw_fd(), outside.as_raw_fd()] {
            // SAFETY: both fds stay open for the whole relay (borrowed from the callers).
            let s = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &abort);
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    };
    let up = async {
        let r = pump(inside, outside, sent).await;
        if r.is_err() {
            kill();
        }
        r
    };
    let down = async {
        let r = pump(outside, inside, received).await;
        if r.is_err() {
            kill();
        }
        r
    };
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}
