//! The second lock on nested user namespaces, independent of the seccomp filter: the
//! limit `user.max_user_namespaces` of a sandbox's own user namespace set to 0.
//!
//! The limit is per user namespace and charged to every ancestor, so a sandbox whose
//! namespace allows none cannot create one at any depth (`ENOSPC`), and cannot raise it:
//! writing needs CAP_SYS_RESOURCE there, and its `/proc/sys` is read-only. The sysctl
//! acts on the writer's own user namespace, so the write is made by a fresh,
//! single-threaded exec of this binary that first joins the sandbox's user namespace
//! (and nothing else); the host's limit is never touched.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The argv[1] that selects this mode in the `sandboxd` binary.
pub const LOCK_ARG: &str = "userns-lock";

/// The sysctl, as the joined namespace sees it.
const LIMIT: &str = "/proc/sys/user/max_user_namespaces";

/// Bound on one lock process: it makes three syscalls.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Joins the user namespace of process `pid` and sets its limit of nested user
/// namespaces to 0, checking it reads back as 0. Must run single-threaded.
pub fn lock_in(pid: u32) -> Result<(), String> {
    use nix::sched::{setns, CloneFlags};
    let path = format!("/proc/{pid}/ns/user");
    let ns = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("cannot join the sandbox's user namespace: {e}"))?;
    write_zero(Path::new(LIMIT))
}

/// Writes 0 to the limit file and reads it back.
fn write_zero(path: &Path) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    // As `echo 0 >` does: procfs ignores the truncation, a plain file (the tests) needs it.
    File::options()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"0\n"))
        .map_err(|e| fail("cannot write", e))?;
    let mut now = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut now))
        .map_err(|e| fail("cannot read", e))?;
    match now.trim() {
        "0" => Ok(()),
        other => Err(format!("{} reads {other} after writing 0", path.display())),
    }
}

/// Entry of lock mode (`sandboxd userns-lock PID`); must run before any other thread
/// exists. Exits 0 when locked, else 1 with the reason on stderr.
pub fn lock_main(args: &[String]) -> ! {
    let result = match args {
        [pid] => pid
            .parse::<u32>()
            .map_err(|_| format!("not a pid: {pid:?}"))
            .and_then(lock_in),
        _ => Err(format!("usage: sandboxd {LOCK_ARG} PID")),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

/// Runs `program userns-lock PID` (a fresh exec of the daemon binary) to lock the
/// namespace of the container whose init is `pid`.
pub async fn lock(program: &Path, pid: u32) -> Result<(), LockError> {
    let child = tokio::process::Command::new(program)
        .arg(LOCK_ARG)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LockError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let out = tokio::time::timeout(LOCK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| LockError::Timeout(LOCK_TIMEOUT))?
        .map_err(|source| LockError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(LockError::Failed(if msg.is_empty() {
            format!("the lock process ended with {}", out.status)
        } else {
            msg
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_zero_checks_what_it_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("limit");
        std::fs::write(&f, "100\n").unwrap();
        write_zero(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "0\n");
        let missing = write_zero(&dir.path().join("absent")).unwrap_err();
        assert!(missing.contains("cannot write"), "{missing}");
    }
}
