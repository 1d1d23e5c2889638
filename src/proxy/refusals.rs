//! Reads the refusals the sandbox's nf_tables verdict rules log (one per SYN they reset)
//! and records each like any other: the denial log, the counter, `ConnectionDenied`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::{Denial, Shared};

/// Serves until `stop`; ends early only if the socket cannot be polled.
pub async fn serve(fd: OwnedFd, shared: Arc<Shared>, stop: CancellationToken) {
    if let Err(e) = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        tracing::warn!(SANDBOX = shared.name.as_str(), "refusal log: {e}");
        return;
    }
    // SAFETY: an OwnedFd always reports the same, open fd; it lives inside the AsyncFd.
    let fd = match unsafe { AsyncFd::register(fd) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(SANDBOX = shared.name.as_str(), "refusal log: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let ready = tokio::select! {
            _ = stop.cancelled() => return,
            r = fd.readable() => r,
        };
        let Ok(mut guard) = ready else { return };
        let got = guard.try_io(|fd| {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match got {
            Ok(Ok(n)) => record(&shared, &buf[..n]),
            // More refusals came than the socket could hold: the counter falls short.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!(
                    SANDBOX = shared.name.as_str(),
                    "refusals lost: the log overflowed"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(SANDBOX = shared.name.as_str(), "refusal log: {e}");
                return;
            }
            Err(_would_block) => {}
        }
    }
}

fn record(shared: &Shared, datagram: &[u8]) {
    for l in crate::netns::parse_log(datagram) {
        let reason = Denial::from_code(&l.code)
            .map(|d| d.as_str())
            .unwrap_or("refused by the sandbox's address rules");
        shared.deny(shared.shown(l.dst.ip()), l.dst.port(), reason);
    }
}
