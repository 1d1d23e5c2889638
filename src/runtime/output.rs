//! Where a sandbox's stdout and stderr go: straight into the journal through its stream
//! socket (so output survives a daemon restart), or, without a journal, through a pipe the
//! daemon reads and logs line by line, tagged with the sandbox's name.
//!
//! A pipe's read end must outlive a crashed daemon, or the sandbox's next write would kill
//! it with SIGPIPE. So each read end is also handed to systemd's file descriptor store
//! (sd_notify(3) `FDSTORE=1`, named `NAME/stdout` and `NAME/stderr`), which passes them
//! back to the next daemon (`LISTEN_FDS`) to read on.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use tokio::io::AsyncBufReadExt;

/// The journal's stream socket (systemd-journald.service(8), "Stream logging").
pub const JOURNAL_STREAM_SOCKET: &str = "/run/systemd/journal/stdout";

/// The two fds a sandbox's init inherits as stdout and stderr.
#[derive(Debug)]
pub struct Output {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Output {
    /// Journal streams identified as `sandbox/NAME` when journald runs, else pipes relayed
    /// to the daemon's log. Must be called inside a tokio runtime.
    pub fn for_sandbox(name: &str) -> std::io::Result<Self> {
        if Path::new(JOURNAL_STREAM_SOCKET).exists() {
            if let (Ok(stdout), Ok(stderr)) = (journal_stream(name, 6), journal_stream(name, 3)) {
                return Ok(Self { stdout, stderr });
            }
        }
        Ok(Self {
            stdout: relay(name, "stdout")?,
            stderr: relay(name, "stderr")?,
        })
    }
}

/// Read ends an earlier daemon stored with systemd, by name, until adoption claims them.
static RECOVERED: Mutex<Option<HashMap<String, OwnedFd>>> = Mutex::new(None);

fn store_name(sandbox: &str, stream: &str) -> String {
    format!("{sandbox}/{stream}")
}

/// Takes the fds systemd passed from its store. Call once, early in `main`, while the
/// process is single-threaded (it unsets `LISTEN_*`).
pub fn recover_stored_output() {
    let mut map = HashMap::new();
    if let Ok(fds) = sd_notify::listen_fds_with_names(true) {
        for (fd, name) in fds {
            // SAFETY: systemd passed this fd to us; nothing else in the process owns it.
            map.insert(name, unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    *RECOVERED.lock().unwrap_or_else(|p| p.into_inner()) = Some(map);
}

impl Output {
    /// Resumes logging the output of an adopted sandbox from the pipes an earlier daemon
    /// stored. Returns how many streams were resumed.
    pub fn reattach(sandbox: &str) -> usize {
        let mut recovered = RECOVERED.lock().unwrap_or_else(|p| p.into_inner());
        let Some(map) = recovered.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for stream in ["stdout", "stderr"] {
            if let Some(fd) = map.remove(&store_name(sandbox, stream)) {
                if spawn_reader(sandbox, stream, fd).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Drops a sandbox's pipes from systemd's store once the sandbox is gone.
    pub fn forget(sandbox: &str) {
        for stream in ["stdout", "stderr"] {
            let name = store_name(sandbox, stream);
            let _ = sd_notify::notify(
                false,
                &[
                    sd_notify::NotifyState::FdStoreRemove,
                    sd_notify::NotifyState::FdName(&name),
                ],
            );
        }
    }
}

/// Opens a journal stream with the header of the stream protocol: identifier, unit id,
/// priority, level prefix, and the syslog/kmsg/console forwarding flags.
fn journal_stream(name: &str, priority: u8) -> std::io::Result<OwnedFd> {
    let mut s = UnixStream::connect(JOURNAL_STREAM_SOCKET)?;
    s.shutdown(std::net::Shutdown::Read)?;
    write!(s, "sandbox/{name}\n\n{priority}\n0\n0\n0\n0\n")?;
    Ok(s.into())
}

/// A task that drains a pipe's read end into the log, one record per line.
fn spawn_reader(name: &str, stream: &'static str, read: OwnedFd) -> std::io::Result<()> {
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let name = name.to_string();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(SANDBOX = %name, stream, "{line}");
        }
    });
    Ok(())
}

/// A pipe whose read end a task drains into the log, one record per line.
fn relay(name: &str, stream: &'static str) -> std::io::Result<OwnedFd> {
    // O_CLOEXEC keeps the read end out of runc and the sandbox; the write end is handed
    // over explicitly as their stdout/stderr.
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // Outside systemd this does nothing.
    let name_in_store = store_name(name, stream);
    let _ = sd_notify::notify_with_fds(
        false,
        &[
            sd_notify::NotifyState::FdStore,
            sd_notify::NotifyState::FdName(&name_in_store),
        ],
        &[read.as_fd()],
    );
    spawn_reader(name, stream, read)?;
    Ok(write)
}
