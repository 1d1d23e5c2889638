//! Where a sandbox's stdout and stderr go: through a pipe the daemon reads into the
//! sandbox's own log ([`crate::logbook`]), and, where journald runs, on into the journal
//! through its stream socket as `sandbox/NAME`.
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

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::logbook::{Logbook, Stream, MAX_TEXT};

/// The journal's stream socket (systemd-journald.service(8), "Stream logging").
pub const JOURNAL_STREAM_SOCKET: &str = "/run/systemd/journal/stdout";

/// The two fds a sandbox's init inherits as stdout and stderr.
#[derive(Debug)]
pub struct Output {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Output {
    /// Pipes whose read ends tasks drain into `log`. Must be called inside a tokio runtime.
    pub fn for_sandbox(name: &str, log: &Logbook) -> std::io::Result<Self> {
        Ok(Self {
            stdout: relay(name, Stream::Out, log)?,
            stderr: relay(name, Stream::Err, log)?,
        })
    }
}

/// Per sandbox, how many of its output streams are still being read.
static OPEN: Mutex<Option<HashMap<String, tokio::sync::watch::Sender<usize>>>> = Mutex::new(None);

fn open_streams<T>(
    f: impl FnOnce(&mut HashMap<String, tokio::sync::watch::Sender<usize>>) -> T,
) -> T {
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    f(open.get_or_insert_with(HashMap::new))
}

fn stream_opened(name: &str) {
    open_streams(|m| {
        m.entry(name.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .send_modify(|n| *n += 1);
    });
}

fn stream_closed(name: &str) {
    open_streams(|m| {
        if let Some(tx) = m.get(name) {
            tx.send_modify(|n| *n = n.saturating_sub(1));
            if *tx.borrow() == 0 {
                m.remove(name);
            }
        }
    });
}

impl Output {
    /// Waits (at most `limit`) until everything sandbox `name` wrote is in its log: once
    /// its pid 1 is gone, the pipes reach their end as soon as the daemon has read them.
    /// So the daemon's line about the exit comes after the sandbox's last lines.
    pub async fn drained(name: &str, limit: std::time::Duration) {
        let Some(mut rx) = open_streams(|m| m.get(name).map(|tx| tx.subscribe())) else {
            return;
        };
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }
}

/// Read ends an earlier daemon stored with systemd, by name, until adoption claims them.
static RECOVERED: Mutex<Option<HashMap<String, OwnedFd>>> = Mutex::new(None);

fn store_name(sandbox: &str, stream: Stream) -> String {
    let stream = match stream {
        Stream::Out => "stdout",
        _ => "stderr",
    };
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
    pub fn reattach(sandbox: &str, log: &Logbook) -> usize {
        let mut recovered = RECOVERED.lock().unwrap_or_else(|p| p.into_inner());
        let Some(map) = recovered.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for stream in [Stream::Out, Stream::Err] {
            if let Some(fd) = map.remove(&store_name(sandbox, stream)) {
                if spawn_reader(sandbox, stream, fd, log).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Drops a sandbox's pipes from systemd's store once the sandbox is gone.
    pub fn forget(sandbox: &str) {
        for stream in [Stream::Out, Stream::Err] {
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

/// A task that drains a pipe's read end into the log, a line at a time (a line longer
/// than [`MAX_TEXT`] in pieces, so a stream without newlines cannot grow the daemon), and
/// copies the bytes to the journal where one runs.
fn spawn_reader(name: &str, stream: Stream, read: OwnedFd, log: &Logbook) -> std::io::Result<()> {
    let mut read = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let name = name.to_string();
    let log = log.clone();
    let mut journal = journal_stream(&name, stream);
    stream_opened(&name);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(j) = journal.as_mut() {
                if j.write_all(&buf[..n]).await.is_err() {
                    journal = None;
                }
            }
            carry.extend_from_slice(&buf[..n]);
            let complete = match carry.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if carry.len() >= MAX_TEXT => carry.len(),
                None => 0,
            };
            if complete > 0 {
                let rest = carry.split_off(complete);
                let lines = std::mem::replace(&mut carry, rest);
                let log = log.clone();
                let name = name.clone();
                // File writes block: off the runtime's worker threads.
                let _ =
                    tokio::task::spawn_blocking(move || log.append(&name, stream, &lines)).await;
            }
        }
        if !carry.is_empty() {
            log.append(&name, stream, &carry);
        }
        stream_closed(&name);
    });
    Ok(())
}

/// Opens a journal stream with the header of the stream protocol (identifier, unit id,
/// priority, level prefix, the syslog/kmsg/console forwarding flags); `None` without
/// journald.
fn journal_stream(name: &str, stream: Stream) -> Option<tokio::net::UnixStream> {
    if !Path::new(JOURNAL_STREAM_SOCKET).exists() {
        return None;
    }
    let priority = if stream == Stream::Err { 3 } else { 6 };
    let mut s = UnixStream::connect(JOURNAL_STREAM_SOCKET).ok()?;
    s.shutdown(std::net::Shutdown::Read).ok()?;
    write!(s, "sandbox/{name}\n\n{priority}\n0\n0\n0\n0\n").ok()?;
    s.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(s).ok()
}

/// A pipe whose read end a task drains into the log.
fn relay(name: &str, stream: Stream, log: &Logbook) -> std::io::Result<OwnedFd> {
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
    spawn_reader(name, stream, read, log)?;
    Ok(write)
}
