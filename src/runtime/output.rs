//! Where a sandbox's stdout and stderr go: straight into the journal through its stream
//! socket (so output survives a daemon restart), or, without a journal, through a pipe the
//! daemon reads and logs line by line, tagged with the sandbox's name.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

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

/// Opens a journal stream with the header of the stream protocol: identifier, unit id,
/// priority, level prefix, and the syslog/kmsg/console forwarding flags.
fn journal_stream(name: &str, priority: u8) -> std::io::Result<OwnedFd> {
    let mut s = UnixStream::connect(JOURNAL_STREAM_SOCKET)?;
    s.shutdown(std::net::Shutdown::Read)?;
    write!(s, "sandbox/{name}\n\n{priority}\n0\n0\n0\n0\n")?;
    Ok(s.into())
}

/// A pipe whose read end a task drains into the log, one record per line.
fn relay(name: &str, stream: &'static str) -> std::io::Result<OwnedFd> {
    // O_CLOEXEC keeps the read end out of runc and the sandbox; the write end is handed
    // over explicitly as their stdout/stderr.
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let name = name.to_string();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(SANDBOX = %name, stream, "{line}");
        }
    });
    Ok(write)
}
