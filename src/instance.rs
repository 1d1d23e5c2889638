//! One daemon per user: an exclusive `flock` on `$XDG_RUNTIME_DIR/sandboxd/daemon.lock`,
//! taken before anything else touches the runtime directory, runc's state or a sandbox.
//!
//! Two daemons on one runtime directory would adopt the same sandboxes, fight over their
//! networks and stop each other's sandboxes on exit. A lock held through an open file
//! description is released by the kernel however the holder ends (a crash, SIGKILL), so a
//! restarted daemon never finds a stale one. The file holds the holder's pid, so the one
//! that is refused can name it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file, in `$XDG_RUNTIME_DIR/sandboxd/`.
pub const LOCK_FILE: &str = "daemon.lock";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("sandboxd is already running for this user ({}); see its log with `journalctl --user -u sandboxd`; to run it in a terminal, stop the service first: `systemctl --user stop sandboxd`", holder(*.pid))]
    Held { pid: Option<u32> },
    #[error("cannot take the instance lock {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or("pid unknown".into(), |p| format!("pid {p}"))
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

/// Takes the lock in `base` (created 0700 if missing), or says who holds it. Never waits.
pub fn acquire(base: &Path) -> Result<InstanceLock, InstanceError> {
    let path = base.join(LOCK_FILE);
    let io = |source| InstanceError::Io {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .map_err(io)?;
    // Not truncated on open: a refused daemon must leave the holder's pid as it was.
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let pid = std::process::id();
            lock.set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| writeln!(lock, "{pid}"))
                .map_err(io)?;
            Ok(InstanceLock { _lock: lock })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Err(InstanceError::Held {
                pid: text.trim().parse().ok(),
            })
        }
        Err((_, e)) => Err(io(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_and_a_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("sandboxd");
        let first = acquire(&base).unwrap();
        let me = std::process::id();
        let content = std::fs::read_to_string(base.join(LOCK_FILE)).unwrap();
        assert_eq!(content, format!("{me}\n"));
        // flock is per open file description: a second open in this process conflicts too.
        match acquire(&base) {
            Err(InstanceError::Held { pid }) => assert_eq!(pid, Some(me)),
            other => panic!("{other:?}"),
        }
        let text = InstanceError::Held { pid: Some(me) }.to_string();
        assert!(text.contains(&format!("pid {me}")), "{text}");
        assert!(text.contains("journalctl --user -u sandboxd"), "{text}");
        // The refused attempt changed nothing.
        let after = std::fs::read_to_string(base.join(LOCK_FILE)).unwrap();
        assert_eq!(after, content);
        drop(first);
        acquire(&base).unwrap();
    }
}
