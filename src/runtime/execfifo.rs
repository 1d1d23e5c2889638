//! Starting a created container without a `runc start` process.
//!
//! In runc, `start` is one thing: open the container's `exec.fifo` (in runc's state
//! folder) for reading. The container's init, blocked opening the other end since
//! `runc create`, then writes one byte and execs the command, which closes its end; runc
//! reads to that end of file and removes the fifo (a container without one is "running").
//! Doing the same here spares a runc process, about 5 ms of every start. `runc start`
//! stays the fallback for whatever this does not recognise.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// How long the init may take to open its end before `runc start` is asked instead.
pub const INIT_WAIT: Duration = Duration::from_secs(2);

/// What became of the attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The init wrote its byte and exec'd (or died trying): what `runc start` reports
    /// as success.
    Started,
    /// Nothing was read within `init_wait`, so nothing changed: let `runc start` do it.
    Fallback,
    /// The fifo was there but gave no byte: the container already started once.
    AlreadyRunning,
}

/// Starts the created container whose runc state folder is `dir`: waits `init_wait` for
/// the init's byte, then at most `limit` for its exec.
pub async fn start(dir: &Path, init_wait: Duration, limit: Duration) -> Outcome {
    let fifo = dir.join("exec.fifo");
    // Non-blocking: no writer yet is fine; epoll reports the byte when it comes.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
    {
        Ok(f)
            if f.metadata().is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_fifo()
            }) =>
        {
            f
        }
        _ => return Outcome::Fallback,
    };
    // SAFETY: a File reports the same open fd for as long as it lives inside the AsyncFd.
    let Ok(fd) = (unsafe { AsyncFd::register(file) }) else {
        return Outcome::Fallback;
    };
    let mut got = 0usize;
    let deadline = tokio::time::Instant::now() + init_wait;
    loop {
        let wait = if got == 0 {
            deadline
        } else {
            tokio::time::Instant::now() + limit
        };
        let Ok(Ok(mut guard)) = tokio::time::timeout_at(wait, fd.readable()).await else {
            // No byte yet: nothing happened, runc can still do it. A byte but no exec
            // within the limit: the command is starting all the same.
            return if got == 0 {
                Outcome::Fallback
            } else {
                finish(&fifo)
            };
        };
        let mut buf = [0u8; 16];
        match guard.try_io(|f| f.get_ref().read(&mut buf)) {
            Ok(Ok(0)) if got > 0 => return finish(&fifo),
            // End of file without a byte: a writer came and went having written nothing.
            Ok(Ok(0)) => return Outcome::AlreadyRunning,
            Ok(Ok(n)) => got += n,
            Ok(Err(_)) => {
                return if got == 0 {
                    Outcome::Fallback
                } else {
                    finish(&fifo)
                }
            }
            Err(_would_block) => continue,
        }
    }
}

/// What runc does after reading: without the fifo the container counts as running.
fn finish(fifo: &Path) -> Outcome {
    let _ = std::fs::remove_file(fifo);
    Outcome::Started
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short wait for the init, so a fifo nobody opens falls back quickly.
    async fn try_start(dir: &Path) -> Outcome {
        start(dir, Duration::from_millis(200), Duration::from_secs(5)).await
    }

    /// The init's side: a blocking open for writing, `bytes`, then close (its exec).
    fn init_writes(fifo: &Path, bytes: &'static [u8]) -> std::thread::JoinHandle<()> {
        let fifo = fifo.to_path_buf();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            std::io::Write::write_all(&mut f, bytes).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        })
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[tokio::test]
    async fn a_writer_that_writes_then_closes_starts() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("exec.fifo");
        mkfifo(&fifo);
        let writer = init_writes(&fifo, b"0");
        assert_eq!(try_start(dir.path()).await, Outcome::Started);
        writer.join().unwrap();
        assert!(!fifo.exists(), "the fifo is removed, as runc start does");
    }

    #[tokio::test]
    async fn no_fifo_or_no_writer_falls_back_to_runc() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(try_start(dir.path()).await, Outcome::Fallback);
        // A plain file where the fifo should be is not ours to read.
        std::fs::write(dir.path().join("exec.fifo"), "0").unwrap();
        assert_eq!(try_start(dir.path()).await, Outcome::Fallback);
        // A fifo nobody opens: after the wait, runc is asked, and the fifo is left alone.
        std::fs::remove_file(dir.path().join("exec.fifo")).unwrap();
        mkfifo(&dir.path().join("exec.fifo"));
        assert_eq!(try_start(dir.path()).await, Outcome::Fallback);
        assert!(dir.path().join("exec.fifo").exists());
    }

    #[tokio::test]
    async fn a_writer_that_writes_nothing_means_already_started() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("exec.fifo");
        mkfifo(&fifo);
        let writer = init_writes(&fifo, b"");
        assert_eq!(try_start(dir.path()).await, Outcome::AlreadyRunning);
        writer.join().unwrap();
    }
}
