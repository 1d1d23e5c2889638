//! One `xdg-dbus-proxy` process: spawned with its ready/lifetime descriptor as fd 3, the
//! daemon holding the other end. The proxy writes a byte there once its sockets listen and
//! exits when the descriptor closes, so it never outlives the daemon, even a killed one.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncReadExt;

/// The proxy's end of the lifetime pipe.
const SYNC_FD: i32 = 3;

/// The program, looked up on `PATH` (Debian's package `xdg-dbus-proxy`).
pub const PROGRAM: &str = "xdg-dbus-proxy";

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("cannot run {PROGRAM} (the [dbus] table needs it: apt install xdg-dbus-proxy)")]
    Missing(#[source] io::Error),
    #[error("cannot start {PROGRAM}")]
    Io(#[source] io::Error),
    #[error("{PROGRAM} ended before its sockets were ready ({0}; its messages are in the daemon's journal)")]
    Ended(std::process::ExitStatus),
    #[error("{PROGRAM} was not ready within {0:?}")]
    Timeout(Duration),
}

/// A proxy that is ready: its sockets accept connections.
pub struct Running {
    pub child: tokio::process::Child,
    /// Closing it ends the proxy.
    _lifetime: tokio::net::unix::pipe::Receiver,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Starts the proxy with `args` and waits up to `within` until it is ready. Sockets it
/// creates are connectable by every user of the sandbox (umask 0): the directory they live
/// in is what keeps anyone else out.
pub async fn spawn(args: &[String], within: Duration) -> Result<Running, SpawnError> {
    let (ours, theirs) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Io(e.into()))?;
    let theirs_raw = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(PROGRAM);
    cmd.arg(format!("--fd={SYNC_FD}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (umask, fcntl, dup2, close_range) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(0);
            if theirs_raw == SYNC_FD {
                libc::fcntl(theirs_raw, libc::F_SETFD, 0);
            } else if libc::dup2(theirs_raw, SYNC_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            crate::fds::cloexec_above(SYNC_FD)
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SpawnError::Missing(e),
        _ => SpawnError::Io(e),
    })?;
    drop::<OwnedFd>(theirs);
    let mut lifetime =
        tokio::net::unix::pipe::Receiver::from_owned_fd(ours).map_err(SpawnError::Io)?;
    let mut byte = [0u8; 1];
    let ready = tokio::time::timeout(within, lifetime.read(&mut byte)).await;
    match ready {
        Ok(Ok(1)) => Ok(Running {
            child,
            _lifetime: lifetime,
        }),
        Ok(_) => {
            let status = child.wait().await.map_err(SpawnError::Io)?;
            Err(SpawnError::Ended(status))
        }
        Err(_) => Err(SpawnError::Timeout(within)),
    }
}
